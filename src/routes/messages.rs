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
use crate::validation::{self, CreateMessages};

/// The route parameters, as text: a malformed chat id is this handler's 400, not the
/// framework's.
#[derive(Deserialize)]
pub struct ChatPath {
    chat_id: String,
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

/// Validates the path and body, then stores the messages in one transaction.
pub async fn create(
    db: web::Data<Db>,
    limits: web::Data<Limits>,
    user: web::ReqData<AuthenticatedUser>,
    path: web::Path<ChatPath>,
    body: Result<JsonBody, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let chat_id = validation::parse_chat_id(&path.chat_id).ok_or(ApiError::InvalidRouteParams)?;
    let input = validation::parse_create_messages(body?.0, &limits.messages())
        .map_err(ApiError::InvalidBody)?;
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
