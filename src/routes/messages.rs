//! `POST /api/users/{user_id}/chats/{chat_id}/messages`: append one message or an
//! ordered batch to a chat. Authentication and the 403 check have already run in
//! [`auth::require_session`](crate::auth::require_session).

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::auth::AuthenticatedUser;
use crate::config::Limits;
use crate::db::Db;
use crate::domain::ChatMessage;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::routes::chats::ChatPath;
use crate::validation::{self, CreateMessages};

/// The query of `GET .../messages`, as text: parsed by [`validation::parse_message_window`].
#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    after: Option<String>,
    before: Option<String>,
}

/// `{"chatMessages": [...], "next": id | null}`
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    chat_messages: Vec<ChatMessage>,
    #[serde(rename = "next")]
    next: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatedOne {
    chat_message: ChatMessage,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatedMany {
    chat_messages: Vec<ChatMessage>,
}

/// What a create-messages body holds, for error messages.
const FIELDS: &str = "message | messages";

/// Validates the path and body, then stores the messages in one transaction.
pub async fn create(
    db: web::Data<Db>,
    limits: web::Data<Limits>,
    user: web::ReqData<AuthenticatedUser>,
    path: web::Path<ChatPath>,
    body: Result<JsonBody, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let chat_id = path.chat_id()?;
    let body = body.map_err(|err| err.in_body(FIELDS))?;
    let input = validation::parse_create_messages(body.0, &limits.messages())
        .map_err(ApiError::invalid_body(FIELDS))?;
    let user_id = user.into_inner().user_id;
    Ok(match input {
        CreateMessages::Single(message) => {
            let stored = db.append_messages(user_id, chat_id, vec![message]).await?;
            let chat_message = stored
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::internal("BUG: one message in, none stored"))?;
            HttpResponse::Ok().json(CreatedOne { chat_message })
        }
        CreateMessages::Batch(messages) => {
            let chat_messages = db.append_messages(user_id, chat_id, messages).await?;
            HttpResponse::Ok().json(CreatedMany { chat_messages })
        }
    })
}

/// `GET .../messages[?limit=N&after=ID | before=ID]`: the whole chat, or one page and
/// the cursor for the next.
pub async fn list(
    db: web::Data<Db>,
    user: web::ReqData<AuthenticatedUser>,
    path: web::Path<ChatPath>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let chat_id = path.chat_id()?;
    let window = validation::parse_message_window(
        query.limit.as_deref(),
        query.after.as_deref(),
        query.before.as_deref(),
    )
    .map_err(|issues| ApiError::InvalidQuery {
        fields: "limit, after, before",
        issues,
    })?;
    let page = db
        .list_messages(user.into_inner().user_id, chat_id, window)
        .await?;
    Ok(HttpResponse::Ok().json(Page {
        chat_messages: page.messages,
        next: page.next,
    }))
}

/// `DELETE .../messages/last`: removes the last turn (see
/// [`Db::delete_last_turn`]) so a client can regenerate an answer.
pub async fn delete_last(
    db: web::Data<Db>,
    user: web::ReqData<AuthenticatedUser>,
    path: web::Path<ChatPath>,
) -> Result<HttpResponse, ApiError> {
    let chat_id = path.chat_id()?;
    let deleted = db
        .delete_last_turn(user.into_inner().user_id, chat_id)
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "deleted": deleted })))
}
