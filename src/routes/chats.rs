//! `/api/users/{user_id}/chats[/{chat_id}]`: list, create, read, rename and delete a
//! user's chats. Each handler goes through [`Claim::run`](crate::auth::Claim::run),
//! which checks the session before the handler's inputs are looked at.

use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Check, Claim, Unsettled};
use crate::db::Db;
use crate::domain::Chat;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::routes::schema::{
    ChatIdsBody, ChatPathParams, ErrorBody, JsonBodyErrors, NewChatBody, Overloaded, RateLimited,
    RenameChatBody, SessionErrors, UserPathParams,
};
use crate::validation;

/// `{"chat": Chat}`
#[derive(Serialize, ToSchema)]
pub(super) struct ChatBody {
    chat: Chat,
}

/// `{"chats": [Chat]}`
#[derive(Serialize, ToSchema)]
pub(super) struct ChatList {
    chats: Vec<Chat>,
}

/// `{"deleted": [chat ids]}` (and, for a bulk delete, the ids that were not found).
#[derive(Serialize, ToSchema)]
pub(super) struct Deleted {
    /// The ids of the chats deleted.
    deleted: Vec<i64>,
    /// For a bulk delete: the ids given that are not this user's chats.
    #[serde(skip_serializing_if = "Option::is_none")]
    not_found: Option<Vec<i64>>,
}

/// The path of a single chat, as text: a malformed id is this handler's 400.
#[derive(Deserialize)]
pub(super) struct ChatPath {
    chat_id: String,
}

/// The chat id of a route about one chat, or the route-parameter 400.
pub(super) fn chat_id(
    path: Result<web::Path<ChatPath>, actix_web::Error>,
) -> Result<i64, ApiError> {
    path.ok()
        .and_then(|path| validation::parse_chat_id(&path.chat_id))
        .ok_or(ApiError::InvalidRouteParams)
}

/// The JSON body of `req`, read only when [`Claim::run`] asks for it.
pub(super) async fn json_body(
    req: &HttpRequest,
    payload: Result<web::Payload, actix_web::Error>,
) -> Result<JsonBody, ApiError> {
    let mut payload = payload.map_err(|_| ApiError::UnreadableBody)?.into_inner();
    JsonBody::from_request(req, &mut payload).await
}

/// `GET .../chats[?order_by=updated_at:desc]`: `{"chats": [Chat]}`.
#[utoipa::path(
    get,
    path = "/api/users/{user_id}/chats",
    operation_id = "list_chats",
    tag = "chats",
    security(("session_cookie" = [])),
    params(
        UserPathParams,
        ("order_by" = Option<String>, Query, pattern = "^(created_at|updated_at|name)(:(asc|desc))?$",
         description = "Sort order, `field` or `field:asc|desc`; default `updated_at:desc`"),
    ),
    responses(
        (status = 200, description = "The user's chats", body = ChatList),
        (status = 400, description = "Invalid order_by", body = ErrorBody),
        SessionErrors,
    )
)]
pub(super) async fn list(
    db: web::Data<Db>,
    claim: Claim,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let order =
        |_key| async {
            let query = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
                .map_err(|err| ApiError::InvalidQuery {
                    fields: "query string",
                    issues: vec![validation::Issue::unparsable_query(&err)],
                })?;
            validation::single_params(&query, &["order_by"])
                .and_then(|params| validation::parse_chat_order(params[0]))
                .map_err(|issues| ApiError::InvalidQuery {
                    fields: "order_by",
                    issues,
                })
        };
    let chats = claim
        .run(Check::First, order, |claim, order| {
            db.list_chats(claim.user_id, order)
        })
        .await?;
    Ok(HttpResponse::Ok().json(ChatList { chats }))
}

/// `POST .../chats` `{"name", "model"}`: `{"chat": Chat}`.
#[utoipa::path(
    post,
    path = "/api/users/{user_id}/chats",
    operation_id = "create_chat",
    tag = "chats",
    security(("session_cookie" = [])),
    params(UserPathParams),
    request_body = NewChatBody,
    responses(
        (status = 200, description = "The new chat", body = ChatBody),
        (status = 400, description = "Invalid body", body = ErrorBody),
        SessionErrors,
        JsonBodyErrors,
        RateLimited,
        Overloaded,
    )
)]
pub(super) async fn create(
    db: web::Data<Db>,
    claim: Claim,
    req: HttpRequest,
    payload: Unsettled<web::Payload>,
) -> Result<HttpResponse, ApiError> {
    const FIELDS: &str = "name, model";
    let new = |key| async move {
        let body = json_body(&req, payload.open(&key))
            .await
            .map_err(|err| err.in_body(FIELDS))?;
        validation::parse_new_chat(body.0).map_err(ApiError::invalid_body(FIELDS))
    };
    let chat = claim
        .run(Check::First, new, |claim, new| {
            db.create_chat(claim.user_id, new.name, new.model)
        })
        .await?;
    Ok(HttpResponse::Ok().json(ChatBody { chat }))
}

/// `GET .../chats/{chat_id}`: `{"chat": Chat}`.
#[utoipa::path(
    get,
    path = "/api/users/{user_id}/chats/{chat_id}",
    operation_id = "get_chat",
    tag = "chats",
    security(("session_cookie" = [])),
    params(ChatPathParams),
    responses(
        (status = 200, description = "The chat", body = ChatBody),
        (status = 400, description = "Invalid chat id", body = ErrorBody),
        (status = 404, description = "No such chat of this user", body = ErrorBody),
        SessionErrors,
    )
)]
pub(super) async fn get_one(
    db: web::Data<Db>,
    claim: Claim,
    path: Unsettled<web::Path<ChatPath>>,
) -> Result<HttpResponse, ApiError> {
    let chat = claim
        .run(
            Check::First,
            |key| async move { chat_id(path.open(&key)) },
            |claim, chat_id| db.chat(claim.user_id, chat_id),
        )
        .await?;
    Ok(HttpResponse::Ok().json(ChatBody { chat }))
}

/// `PATCH .../chats/{chat_id}` `{"name"}`: `{"chat": Chat}`.
#[utoipa::path(
    patch,
    path = "/api/users/{user_id}/chats/{chat_id}",
    operation_id = "rename_chat",
    tag = "chats",
    security(("session_cookie" = [])),
    params(ChatPathParams),
    request_body = RenameChatBody,
    responses(
        (status = 200, description = "The renamed chat", body = ChatBody),
        (status = 400, description = "Invalid chat id or body", body = ErrorBody),
        (status = 404, description = "No such chat of this user", body = ErrorBody),
        SessionErrors,
        JsonBodyErrors,
        RateLimited,
        Overloaded,
    )
)]
pub(super) async fn rename(
    db: web::Data<Db>,
    claim: Claim,
    path: Unsettled<web::Path<ChatPath>>,
    req: HttpRequest,
    payload: Unsettled<web::Payload>,
) -> Result<HttpResponse, ApiError> {
    const FIELDS: &str = "name";
    let inputs = |key| async move {
        let chat_id = chat_id(path.open(&key))?;
        let body = json_body(&req, payload.open(&key))
            .await
            .map_err(|err| err.in_body(FIELDS))?;
        let name = validation::parse_chat_rename(body.0).map_err(ApiError::invalid_body(FIELDS))?;
        Ok((chat_id, name))
    };
    let chat = claim
        .run(Check::First, inputs, |claim, (chat_id, name)| {
            db.rename_chat(claim.user_id, chat_id, name)
        })
        .await?;
    Ok(HttpResponse::Ok().json(ChatBody { chat }))
}

/// `DELETE .../chats/{chat_id}`: `{"deleted": [chat_id]}`; its messages go with it.
#[utoipa::path(
    delete,
    path = "/api/users/{user_id}/chats/{chat_id}",
    operation_id = "delete_chat",
    tag = "chats",
    security(("session_cookie" = [])),
    params(ChatPathParams),
    responses(
        (status = 200, description = "The chat and its messages are deleted", body = Deleted),
        (status = 400, description = "Invalid chat id", body = ErrorBody),
        (status = 404, description = "No such chat of this user", body = ErrorBody),
        SessionErrors,
        RateLimited,
        Overloaded,
    )
)]
pub(super) async fn delete_one(
    db: web::Data<Db>,
    claim: Claim,
    path: Unsettled<web::Path<ChatPath>>,
) -> Result<HttpResponse, ApiError> {
    let deleted = claim
        .run(
            Check::First,
            |key| async move { chat_id(path.open(&key)) },
            |claim, chat_id| db.delete_chats(claim.user_id, vec![chat_id]),
        )
        .await?;
    if deleted.is_empty() {
        return Err(ApiError::NotFound("Chat not found"));
    }
    Ok(HttpResponse::Ok().json(Deleted {
        deleted,
        not_found: None,
    }))
}

/// `DELETE .../chats` `{"chat_ids": [...]}`: deletes those that are the user's in one
/// transaction; the rest (missing, or other users') are listed as `not_found`.
#[utoipa::path(
    delete,
    path = "/api/users/{user_id}/chats",
    operation_id = "delete_chats",
    tag = "chats",
    security(("session_cookie" = [])),
    params(UserPathParams),
    request_body = ChatIdsBody,
    responses(
        (status = 200, description = "The user's chats among the ids are deleted; the rest are listed as not_found", body = Deleted),
        (status = 400, description = "Invalid body", body = ErrorBody),
        SessionErrors,
        JsonBodyErrors,
        RateLimited,
        Overloaded,
    )
)]
pub(super) async fn delete_many(
    db: web::Data<Db>,
    claim: Claim,
    req: HttpRequest,
    payload: Unsettled<web::Payload>,
) -> Result<HttpResponse, ApiError> {
    const FIELDS: &str = "chat_ids";
    let inputs = |key| async move {
        let body = json_body(&req, payload.open(&key))
            .await
            .map_err(|err| err.in_body(FIELDS))?;
        let mut chat_ids =
            validation::parse_chat_ids(body.0).map_err(ApiError::invalid_body(FIELDS))?;
        let mut seen = std::collections::HashSet::new();
        chat_ids.retain(|id| seen.insert(*id));
        Ok(chat_ids)
    };
    let (chat_ids, deleted) = claim
        .run(
            Check::First,
            inputs,
            |claim, chat_ids: Vec<i64>| async move {
                let deleted = db.delete_chats(claim.user_id, chat_ids.clone()).await?;
                Ok((chat_ids, deleted))
            },
        )
        .await?;
    let not_found = chat_ids
        .into_iter()
        .filter(|id| !deleted.contains(id))
        .collect();
    Ok(HttpResponse::Ok().json(Deleted {
        deleted,
        not_found: Some(not_found),
    }))
}
