//! `GET /api/users/{user_id}/events`: the user's changes as Server-Sent Events (see
//! [`crate::events`]).

use actix_web::http::header::{self, HeaderValue};
use actix_web::web::{Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};

use crate::auth::{Check, Claim};
use crate::db::{self, Db, Entity};
use crate::error::ApiError;
use crate::events::{FeedState, Hub, Position, Refused};
use crate::routes::schema::{ErrorBody, SessionErrors};
use crate::validation::{self, Issue};

/// Most bytes of frames joined into one chunk of the answer.
const COALESCE_BYTES: usize = 16 * 1024;

/// Query parameters of the events stream.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(super) struct EventsQuery {
    /// Only the events of this chat (and the stream ends after its deletion).
    chat_id: Option<i64>,
    /// Start after this event id, as `Last-Event-ID` does (which wins when both are
    /// given).
    after: Option<String>,
}

/// `GET .../events`: a `text/event-stream` of the user's changes.
#[utoipa::path(
    get,
    path = "/api/users/{user_id}/events",
    operation_id = "events",
    tag = "events",
    security(("session_cookie" = [])),
    params(
        ("user_id" = String, Path, description = "The user's id"),
        EventsQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received: the stream replays what came after it"),
    ),
    responses(
        (status = 200, description = "The events, until the session ends or the client goes away. \
            `message` (data: `{\"message\": ChatMessage}`), `messages_deleted` (`{\"chat_id\", \"ids\"}`), \
            `chat_created` and `chat_renamed` (`{\"chat\": Chat}`), `chat_deleted` (`{\"chat_id\"}`), \
            and `reset` when the changes after the given id are no longer kept", content_type = "text/event-stream", body = String),
        (status = 400, description = "Invalid chat_id or after", body = ErrorBody),
        (status = 404, description = "No such chat of this user", body = ErrorBody),
        (status = 429, description = "Too many streams open for this user; see Retry-After", body = ErrorBody),
        (status = 503, description = "Too many streams open, or the database is unavailable; see Retry-After", body = ErrorBody),
        SessionErrors,
    )
)]
pub(super) async fn stream(
    db: web::Data<Db>,
    hub: web::Data<Hub>,
    claim: Claim,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let inputs = |_key| async move { parse(&req) };
    let (user, token_hash, expires_at, chat, start, state) = claim
        // The session is looked up here, once, for its expiry too; its answer settles
        // the claim (401, 403) before the chat's 404.
        .run(
            Check::InStorage,
            inputs,
            |claim, (chat, start)| async move {
                let expires_at = match db.session(claim.token_hash).await? {
                    Some((user, expires_at)) if user == claim.user_id => expires_at,
                    Some(_) => return Err(db::Error::WrongUser),
                    None => return Err(db::Error::NotFound(Entity::Session)),
                };
                if let Some(chat) = chat {
                    db.chat(claim.user_id.clone(), chat).await?;
                }
                let expires_at = DateTime::parse_from_rfc3339(expires_at.as_str())
                    .map(|at| at.with_timezone(&Utc))
                    .unwrap_or_else(|_| Utc::now());
                // Where the feed stands, read before the answer's head goes out: a change
                // the client makes once it has the head comes after the stream's start.
                let after = start.map_or(i64::MAX, Position::read_after);
                let log = db.read_changes(claim.user_id.clone(), after, 0).await?;
                let state = FeedState {
                    last: log.last,
                    oldest: log.oldest,
                };
                Ok((
                    claim.user_id,
                    claim.token_hash,
                    expires_at,
                    chat,
                    start,
                    state,
                ))
            },
        )
        .await?;
    let frames = hub
        .open(user, chat, token_hash, expires_at, start, state)
        .map_err(|refused| match refused {
            Refused::PerUser => ApiError::TooManyStreams,
            Refused::Total => ApiError::StreamsFull,
        })?;
    // Frames waiting together go out as one chunk: one write for many events when a
    // burst comes, instead of one each.
    let body = futures_util::stream::unfold(frames, |mut frames| async move {
        let first = frames.recv().await?;
        let Ok(second) = frames.try_recv() else {
            return Some((Ok::<Bytes, std::convert::Infallible>(first), frames));
        };
        let mut chunk = BytesMut::with_capacity(COALESCE_BYTES);
        chunk.extend_from_slice(&first);
        chunk.extend_from_slice(&second);
        while chunk.len() < COALESCE_BYTES {
            match frames.try_recv() {
                Ok(frame) => chunk.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        Some((
            Ok::<Bytes, std::convert::Infallible>(chunk.freeze()),
            frames,
        ))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        // Not compressed: the compressor would hold events back to fill its blocks.
        .insert_header((
            header::CONTENT_ENCODING,
            HeaderValue::from_static("identity"),
        ))
        // nginx and others: pass each event on as it comes.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// The chat to narrow to and where to start: `Last-Event-ID` wins over `?after=`; a
/// `Last-Event-ID` that is no event id of this server starts with a `reset`.
fn parse(req: &HttpRequest) -> Result<(Option<i64>, Option<Position>), ApiError> {
    let invalid = |issues| ApiError::InvalidQuery {
        fields: "chat_id, after",
        issues,
    };
    let query = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|err| invalid(vec![Issue::unparsable_query(&err)]))?;
    let (chat, after) = validation::single_params(&query, &["chat_id", "after"])
        .and_then(|params| {
            validation::parse_events_query(params[0], params[1], |id| Position::parse(id).is_some())
        })
        .map_err(invalid)?;
    let header = req
        .headers()
        .get("last-event-id")
        .map(|value| value.to_str().ok().and_then(Position::parse));
    let start = match header {
        Some(Some(position)) => Some(position),
        // Not ours: too new for any feed, so it gets a reset.
        Some(None) => Some(Position {
            seq: i64::MAX,
            message: None,
        }),
        None => after.as_deref().and_then(Position::parse),
    };
    Ok((chat, start))
}
