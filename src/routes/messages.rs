//! `POST /api/users/{user_id}/chats/{chat_id}/messages`: append one message or an
//! ordered batch to a chat. Authentication and the 403 check have already run in
//! [`auth::require_session`](crate::auth::require_session).

use actix_web::{HttpResponse, web};
use metrics::counter;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AuthenticatedUser;
use crate::config::Limits;
use crate::db::Db;
use crate::domain::ChatMessage;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::routes::chats::ChatPath;
use crate::routes::docs::{CreateMessagesBody, ErrorBody};
use crate::telemetry::{BATCHES_STORED, MESSAGES_STORED};
use crate::validation::{self, CreateMessages};

/// The query of `GET .../messages`, as text: parsed by [`validation::parse_message_window`].
#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    after: Option<String>,
    before: Option<String>,
}

/// `{"chatMessages": [...], "next": id | null}`
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    /// The messages, in id order.
    chat_messages: Vec<ChatMessage>,
    /// Pass as `after` (or, when paging with `before`, as `before`) for the next page;
    /// null when there is none.
    next: Option<i64>,
}

/// The answer to a create: `{"chatMessage"}` for the single form, `{"chatMessages"}`
/// (in array order) for a batch.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum CreatedMessages {
    /// The single form's answer.
    One {
        /// The stored message.
        #[serde(rename = "chatMessage")]
        chat_message: ChatMessage,
    },
    /// A batch's answer.
    Many {
        /// The stored messages, in array order.
        #[serde(rename = "chatMessages")]
        chat_messages: Vec<ChatMessage>,
    },
}

/// `{"deleted": [message ids]}`
#[derive(Serialize, ToSchema)]
pub struct DeletedMessages {
    /// The ids of the deleted messages, oldest first.
    deleted: Vec<i64>,
}

/// What a create-messages body holds, for error messages.
const FIELDS: &str = "message | messages";

/// Validates the path and body, then stores the messages in one transaction.
#[utoipa::path(
    post,
    path = "/api/users/{user_id}/chats/{chat_id}/messages",
    operation_id = "create_messages",
    tag = "messages",
    security(("session_cookie" = [])),
    params(("user_id" = String, Path, description = "The id of the user whose session is presented"), ("chat_id" = i64, Path, minimum = 1, description = "The chat's id")),
    request_body = CreateMessagesBody,
    responses(
        (status = 200, description = "Stored: `chatMessage` for the single form, `chatMessages` (in array order) for a batch", body = CreatedMessages),
        (status = 400, description = "Invalid chat id or body", body = ErrorBody),
        (status = 401, description = "No valid session", body = ErrorBody),
        (status = 403, description = "The session is another user's", body = ErrorBody),
        (status = 404, description = "No such chat of this user", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
    )
)]
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
            counter!(MESSAGES_STORED).increment(1);
            let chat_message = stored
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::internal("BUG: one message in, none stored"))?;
            HttpResponse::Ok().json(CreatedMessages::One { chat_message })
        }
        CreateMessages::Batch(messages) => {
            let chat_messages = db.append_messages(user_id, chat_id, messages).await?;
            counter!(MESSAGES_STORED).increment(chat_messages.len() as u64);
            counter!(BATCHES_STORED).increment(1);
            HttpResponse::Ok().json(CreatedMessages::Many { chat_messages })
        }
    })
}

/// `GET .../messages[?limit=N&after=ID | before=ID]`: the whole chat, or one page and
/// the cursor for the next.
#[utoipa::path(
    get,
    path = "/api/users/{user_id}/chats/{chat_id}/messages",
    operation_id = "list_messages",
    tag = "messages",
    security(("session_cookie" = [])),
    params(
        ("user_id" = String, Path, description = "The id of the user whose session is presented"), ("chat_id" = i64, Path, minimum = 1, description = "The chat's id"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000,
         description = "Page size; without limit, after and before the whole chat is returned"),
        ("after" = Option<i64>, Query, minimum = 0,
         description = "Return messages with ids above this one, oldest first"),
        ("before" = Option<i64>, Query, minimum = 1,
         description = "Return the newest messages with ids below this one, oldest first"),
    ),
    responses(
        (status = 200, description = "Messages in id order, and the cursor for the next page", body = Page),
        (status = 400, description = "Invalid chat id or query", body = ErrorBody),
        (status = 401, description = "No valid session", body = ErrorBody),
        (status = 403, description = "The session is another user's", body = ErrorBody),
        (status = 404, description = "No such chat of this user", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    delete,
    path = "/api/users/{user_id}/chats/{chat_id}/messages/last",
    operation_id = "delete_last_turn",
    tag = "messages",
    security(("session_cookie" = [])),
    params(("user_id" = String, Path, description = "The id of the user whose session is presented"), ("chat_id" = i64, Path, minimum = 1, description = "The chat's id")),
    responses(
        (status = 200, description = "The ids of the deleted messages, oldest first", body = DeletedMessages),
        (status = 400, description = "Invalid chat id", body = ErrorBody),
        (status = 401, description = "No valid session", body = ErrorBody),
        (status = 403, description = "The session is another user's", body = ErrorBody),
        (status = 404, description = "No such chat of this user, or no messages in it", body = ErrorBody),
    )
)]
pub async fn delete_last(
    db: web::Data<Db>,
    user: web::ReqData<AuthenticatedUser>,
    path: web::Path<ChatPath>,
) -> Result<HttpResponse, ApiError> {
    let chat_id = path.chat_id()?;
    let deleted = db
        .delete_last_turn(user.into_inner().user_id, chat_id)
        .await?;
    Ok(HttpResponse::Ok().json(DeletedMessages { deleted }))
}
