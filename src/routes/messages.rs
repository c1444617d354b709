//! `/api/users/{user_id}/chats/{chat_id}/messages`: append one message or an ordered
//! batch to a chat, read it back, delete the last turn.
//!
//! Every handler goes through [`Claim::run`](crate::auth::Claim::run). The two hot
//! routes, create and read, let storage check the session in the same step as their
//! work ([`Check::InStorage`](crate::auth::Check::InStorage)), saving a separate lookup
//! per request; 401 and then 403 still come before every other answer.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::header::{ContentType, HeaderName};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use metrics::counter;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::auth::{Check, Claim, Unsettled};
use crate::config::Limits;
use crate::db::{self, Appended, BoxError, ChatRest, Db};
use crate::domain::{ChatMessage, IdempotencyKey, MessageRef, MessageWindow, NewMessage};
use crate::error::ApiError;
use crate::extract::{self, JsonBody, PARSE_OFF_WORKER_OVER};
use crate::metric_names::{BATCHES_STORED, MESSAGES_STORED};
use crate::routes::chats::{ChatPath, chat_id};
use crate::routes::schema::{
    ChatPathParams, CreateMessagesBody, ErrorBody, JsonBodyErrors, Overloaded, RateLimited,
    SessionErrors,
};
use crate::validation::{self, CreateMessages, Issue, MessageLimits};

/// `{"chatMessages": [...], "next": id | null}`. Pages are written straight from the
/// rows by [`list`]; this type describes them for the API document and the tests.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Page {
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
pub(super) enum CreatedMessages {
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

impl CreatedMessages {
    /// The answer for `stored`: the single form's if the request was single.
    fn new(mut stored: Vec<ChatMessage>, single: bool) -> CreatedMessages {
        match stored.pop() {
            Some(chat_message) if single => CreatedMessages::One { chat_message },
            last => {
                stored.extend(last);
                CreatedMessages::Many {
                    chat_messages: stored,
                }
            }
        }
    }
}

/// `{"deleted": [message ids]}`
#[derive(Serialize, ToSchema)]
pub(super) struct DeletedMessages {
    /// The ids of the deleted messages, oldest first.
    deleted: Vec<i64>,
}

/// The header that makes a create-messages request safe to retry.
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// What a create-messages body holds, for error messages.
const FIELDS: &str = "message | messages";

/// Validates the path and body, then stores the messages in one transaction.
#[utoipa::path(
    post,
    path = "/api/users/{user_id}/chats/{chat_id}/messages",
    operation_id = "create_messages",
    tag = "messages",
    security(("session_cookie" = [])),
    params(
        ChatPathParams,
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255,
         pattern = r"^[\x20-\x7E]+$",
         description = "Makes the request safe to retry: the same key and body within 24 hours get the first answer again, without storing twice"),
    ),
    request_body = CreateMessagesBody,
    responses(
        (status = 200, description = "Stored: `chatMessage` for the single form, `chatMessages` (in array order) for a batch", body = CreatedMessages),
        (status = 400, description = "Invalid chat id or body", body = ErrorBody),
        (status = 404, description = "No such chat of this user", body = ErrorBody),
        (status = 409, description = "The messages this Idempotency-Key stored were deleted since", body = ErrorBody),
        (status = 422, description = "The Idempotency-Key was used with a different request", body = ErrorBody),
        SessionErrors,
        // After SessionErrors, whose 403 this one replaces.
        (status = 403, description = "The session is another user's, or the user's storage quota is used up", body = ErrorBody),
        JsonBodyErrors,
        RateLimited,
        Overloaded,
    )
)]
pub(super) async fn create(
    db: web::Data<Db>,
    limits: web::Data<Limits>,
    claim: Claim,
    path: Unsettled<web::Path<ChatPath>>,
    req: HttpRequest,
    payload: Unsettled<web::Payload>,
) -> Result<HttpResponse, ApiError> {
    // In the order the errors are reported: chat id, `Idempotency-Key`, then the body.
    let inputs = |input_key| async move {
        let chat_id = chat_id(path.open(&input_key))?;
        let key = idempotency_key(&req)?;
        let mut payload = payload
            .open(&input_key)
            .map_err(|_| ApiError::UnreadableBody)?
            .into_inner();
        let bytes = extract::read_body(&req, &mut payload)
            .await
            .map_err(|err| err.in_body(FIELDS))?;
        let message_limits = limits.messages();
        let large = bytes.len() > PARSE_OFF_WORKER_OVER;
        let parse = move || parse_create_body(chat_id, key, &bytes, &message_limits);
        let (idempotency, input) = if large {
            web::block(parse).await.map_err(ApiError::internal)??
        } else {
            parse()?
        };
        Ok((chat_id, idempotency, input))
    };
    let (appended, single) = claim
        .run(
            Check::InStorage,
            inputs,
            |claim, (chat_id, idempotency, input)| async move {
                let (messages, single) = match input {
                    CreateMessages::Single(message) => (vec![message], true),
                    CreateMessages::Batch(messages) => (messages, false),
                };
                let appended = db
                    .append_messages(claim, chat_id, messages, idempotency)
                    .await?;
                Ok((appended, single))
            },
        )
        .await?;
    // A replay renders the messages the key stored: the same bytes as the first answer.
    let (messages, stored) = match appended {
        Appended::Stored(messages) => {
            let count = messages.len();
            (messages, count)
        }
        Appended::Replayed(messages) => (messages, 0),
    };
    let response = serde_json::to_string(&CreatedMessages::new(messages, single))
        .map_err(ApiError::internal)?;
    if stored > 0 {
        counter!(MESSAGES_STORED).increment(stored as u64);
        if !single {
            counter!(BATCHES_STORED).increment(1);
        }
    }
    Ok(HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(response))
}

/// A create body: the idempotency key with the hash of what the request asks for,
/// and the messages. Called on a blocking thread for a large body.
fn parse_create_body(
    chat_id: i64,
    key: Option<String>,
    bytes: &[u8],
    limits: &MessageLimits,
) -> Result<(Option<IdempotencyKey>, CreateMessages), ApiError> {
    let body = JsonBody::parse(bytes).map_err(|err| err.in_body(FIELDS))?;
    let input = validation::parse_create_messages(body.0, limits)
        .map_err(ApiError::invalid_body(FIELDS))?;
    let idempotency = key.map(|key| IdempotencyKey {
        request_hash: request_hash(chat_id, &input),
        key,
    });
    Ok((idempotency, input))
}

/// The `Idempotency-Key` header, if sent: 1 to 255 printable ASCII characters.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(validation::parse_idempotency_key)
        .map(Some)
        .ok_or(ApiError::InvalidHeader {
            name: "Idempotency-Key",
            message: "Idempotency-Key must be 1 to 255 printable ASCII characters",
        })
}

/// What a request asked for, so a retry with the same key can be told from a different
/// request: the chat, the form, and each message's role and exact text.
fn request_hash(chat_id: i64, input: &CreateMessages) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(chat_id.to_le_bytes());
    let (form, messages): (u8, &[NewMessage]) = match input {
        CreateMessages::Single(message) => (1, std::slice::from_ref(message)),
        CreateMessages::Batch(messages) => (2, messages),
    };
    hasher.update([form]);
    for message in messages {
        hasher.update(message.role.as_str().as_bytes());
        hasher.update((message.content.len() as u64).to_le_bytes());
        hasher.update(message.content.as_bytes());
    }
    hasher.finalize().into()
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
        ChatPathParams,
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000,
         description = "Page size; without limit, after and before the whole chat is returned"),
        ("after" = Option<i64>, Query, minimum = 0,
         description = "Return messages with ids above this one, oldest first; not with `before`"),
        ("before" = Option<i64>, Query, minimum = 1,
         description = "Return the newest messages with ids below this one, oldest first; not with `after`"),
    ),
    responses(
        (status = 200, description = "Messages in id order, and the cursor for the next page", body = Page),
        (status = 400, description = "Invalid chat id or query", body = ErrorBody),
        (status = 404, description = "No such chat of this user", body = ErrorBody),
        SessionErrors,
    )
)]
pub(super) async fn list(
    db: web::Data<Db>,
    claim: Claim,
    path: Unsettled<web::Path<ChatPath>>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let inputs = |key| async move { parse_list(path.open(&key), &req) };
    let read = claim
        .run(
            Check::InStorage,
            inputs,
            |claim, (chat_id, window)| async move {
                let mut body = Vec::with_capacity(PAGE_BUFFER);
                body.extend_from_slice(PAGE_OPEN);
                if window == MessageWindow::All {
                    let (first, rest) = db
                        .read_whole_chat(claim, chat_id, body, page_entries())
                        .await?;
                    return Ok(match rest {
                        Some(rest) => Answer::Whole(first, rest),
                        None => Answer::Page(first, None),
                    });
                }
                let (body, next) = db
                    .read_messages(claim, chat_id, window, body, page_entries())
                    .await?;
                Ok(Answer::Page(body, next))
            },
        )
        .await?;
    let mut response = HttpResponse::Ok();
    response.content_type(ContentType::json());
    Ok(match read {
        Answer::Page(mut body, next) => {
            write_page_close(&mut body, next);
            response.body(body)
        }
        Answer::Whole(first, rest) => response.body(WholeChatBody {
            first: Some(first),
            rest,
            ended: false,
        }),
    })
}

/// What a read found: a page and its cursor (a whole chat that fits in one slice is
/// such a page), or the first slice of a larger whole chat and the rest.
enum Answer {
    Page(Vec<u8>, Option<i64>),
    Whole(Vec<u8>, ChatRest<Vec<u8>>),
}

/// The body of a whole chat too large for one slice: the first slice, then each of the
/// rest as it is read (so the answer never sits in memory whole), then the page's end.
/// If the read is cut short, the connection is closed, so the client cannot mistake
/// the part it got for the whole chat.
struct WholeChatBody {
    first: Option<Vec<u8>>,
    rest: ChatRest<Vec<u8>>,
    ended: bool,
}

impl MessageBody for WholeChatBody {
    type Error = db::Error;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, db::Error>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Bytes::from(first))));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        Poll::Ready(match ready!(this.rest.poll_next(cx)) {
            Some(Ok(slice)) => Some(Ok(Bytes::from(slice))),
            Some(Err(err)) => {
                this.ended = true;
                Some(Err(err))
            }
            None => {
                this.ended = true;
                let mut end = Vec::new();
                write_page_close(&mut end, None);
                Some(Ok(Bytes::from(end)))
            }
        })
    }
}

/// The chat id and the window a read asks for.
fn parse_list(
    path: Result<web::Path<ChatPath>, actix_web::Error>,
    req: &HttpRequest,
) -> Result<(i64, MessageWindow), ApiError> {
    let chat_id = chat_id(path)?;
    let invalid = |issues| ApiError::InvalidQuery {
        fields: "limit, after, before",
        issues,
    };
    let query = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|err| invalid(vec![Issue::unparsable_query(&err)]))?;
    let window = validation::single_params(&query, &["limit", "after", "before"])
        .and_then(|params| validation::parse_message_window(params[0], params[1], params[2]))
        .map_err(invalid)?;
    Ok((chat_id, window))
}

/// How a [`Page`] starts: its messages are written one by one as they are read.
const PAGE_OPEN: &[u8] = b"{\"chatMessages\":[";

/// A page body's starting capacity: a page of 100 short messages fits.
const PAGE_BUFFER: usize = 32 * 1024;

/// Writes a page's messages, one by one, into the buffers the reads hand it: the first
/// starts with [`PAGE_OPEN`], and every message but the first of the page is preceded
/// by a comma, whichever buffer it lands in.
fn page_entries()
-> impl FnMut(&mut Vec<u8>, MessageRef<'_>) -> Result<(), BoxError> + Send + 'static {
    let mut first = true;
    move |body, message| {
        if !std::mem::take(&mut first) {
            body.push(b',');
        }
        write_page_entry(body, message)
    }
}

/// Appends one message to a page body: serde's JSON of the [`MessageRef`], the same as
/// that of a [`ChatMessage`]. (Writing the keys by hand measured no faster in W4; see
/// BENCHMARKS.md.)
fn write_page_entry(body: &mut Vec<u8>, message: MessageRef<'_>) -> Result<(), BoxError> {
    serde_json::to_writer(body, &message)?;
    Ok(())
}

/// Ends a page body: the message array, then the cursor.
fn write_page_close(body: &mut Vec<u8>, next: Option<i64>) {
    body.extend_from_slice(b"],\"next\":");
    match next {
        Some(id) => body.extend_from_slice(id.to_string().as_bytes()),
        None => body.extend_from_slice(b"null"),
    }
    body.push(b'}');
}

/// `DELETE .../messages/last`: removes the last turn so a client can regenerate an answer.
///
/// That is the last assistant message with the user messages directly before it; or,
/// if nobody answered yet, the trailing user messages; or a trailing system message.
#[utoipa::path(
    delete,
    path = "/api/users/{user_id}/chats/{chat_id}/messages/last",
    operation_id = "delete_last_turn",
    tag = "messages",
    security(("session_cookie" = [])),
    params(ChatPathParams),
    responses(
        (status = 200, description = "The ids of the deleted messages, oldest first", body = DeletedMessages),
        (status = 400, description = "Invalid chat id", body = ErrorBody),
        (status = 404, description = "No such chat of this user, or no messages in it", body = ErrorBody),
        SessionErrors,
        RateLimited,
        Overloaded,
    )
)]
pub(super) async fn delete_last(
    db: web::Data<Db>,
    claim: Claim,
    path: Unsettled<web::Path<ChatPath>>,
) -> Result<HttpResponse, ApiError> {
    let deleted = claim
        .run(
            Check::First,
            |key| async move { chat_id(path.open(&key)) },
            |claim, chat_id| db.delete_last_turn(claim.user_id, chat_id),
        )
        .await?;
    Ok(HttpResponse::Ok().json(DeletedMessages { deleted }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Role, Timestamp};

    fn message(id: i64, text: &str) -> ChatMessage {
        ChatMessage {
            id,
            chat_conversation_id: 4,
            neptun_user_id: "ada".to_owned(),
            message: text.to_owned(),
            actor: Role::User,
            created_at: Timestamp::from_stored("2026-11-24T18:43:05.123Z".to_owned()),
        }
    }

    /// The page as [`list`] writes it, message by message.
    fn written(messages: &[ChatMessage], next: Option<i64>) -> String {
        let mut body = PAGE_OPEN.to_vec();
        let mut entries = page_entries();
        for m in messages {
            entries(&mut body, MessageRef::from(m)).unwrap();
        }
        write_page_close(&mut body, next);
        String::from_utf8(body).unwrap()
    }

    #[test]
    fn a_page_written_row_by_row_is_exactly_the_serialised_page() {
        let cases = [
            (vec![], None),
            (vec![message(1, "one")], None),
            (
                vec![message(1, "a \"quoted\"\n"), message(9, "ü 😀")],
                Some(9),
            ),
            (vec![message(i64::MAX - 1, "")], Some(-1)),
        ];
        for (messages, next) in cases {
            let expected = serde_json::to_string(&Page {
                chat_messages: messages.clone(),
                next,
            })
            .unwrap();
            assert_eq!(written(&messages, next), expected);
        }
    }
}
