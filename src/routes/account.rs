//! The user's account as a whole: `GET /api/users/{user_id}/export` (everything of
//! theirs as one NDJSON file, see [`crate::archive::format`]) and
//! `DELETE /api/users/{user_id}` (the account and every trace of it).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::archive::format;
use crate::auth::{Check, Claim, Unsettled};
use crate::client_ip::ClientIp;
use crate::config::SessionSettings;
use crate::db::{self, BoxError, Db, ExportRest};
use crate::domain::Timestamp;
use crate::error::ApiError;
use crate::password::Hasher;
use crate::routes::auth::{hash_error, too_many_attempts};
use crate::routes::chats::json_body;
use crate::routes::schema::{
    ErrorBody, HashingBusy, JsonBodyErrors, Overloaded, SessionErrors, UserPathParams,
};
use crate::throttle::Throttle;
use crate::validation::{self, AccountConfirmation};

/// `GET .../export`: everything of the user, streamed from one snapshot.
#[utoipa::path(
    get,
    path = "/api/users/{user_id}/export",
    operation_id = "export",
    tag = "account",
    security(("session_cookie" = [])),
    params(UserPathParams),
    responses(
        (status = 200, description = "The user's data as NDJSON, version 1 of the export format: a header line with the user, each chat followed by its messages (both in id order), and an end line with the counts. A file without its end line was cut short.", content_type = "application/x-ndjson", body = String),
        SessionErrors,
        Overloaded,
    )
)]
pub(super) async fn export(db: web::Data<Db>, claim: Claim) -> Result<HttpResponse, ApiError> {
    let (user, rest) = claim
        .run(
            Check::First,
            |_key| async { Ok(()) },
            |claim, ()| async move {
                let exported_at = Timestamp::now();
                let rest = db
                    .export(claim.user_id.clone(), move |out: &mut Vec<u8>, row| {
                        format::write_row(out, row, &exported_at).map_err(BoxError::from)
                    })
                    .await?;
                Ok((claim.user_id, rest))
            },
        )
        .await?;
    let file = format!(
        "neptun-chat-export-{}.ndjson",
        Timestamp::now().as_str().get(..10).unwrap_or("now")
    );
    log::info!("exporting user {user}");
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file}\""),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(ExportBody { rest }))
}

/// An export's slices as a response body. If the export stops half-way, the connection
/// is closed, and the file lacks its end line: the client cannot mistake it for whole.
struct ExportBody {
    rest: ExportRest<Vec<u8>>,
}

impl MessageBody for ExportBody {
    type Error = db::Error;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, db::Error>>> {
        let slice = ready!(self.get_mut().rest.poll_next(cx));
        Poll::Ready(slice.map(|slice| slice.map(Bytes::from)))
    }
}

/// `{"password"}` or, for an account made without a password, `{"confirm": user id}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct DeleteAccountBody {
    /// The account's password (8 to 1024 characters); required if it has one.
    #[schema(min_length = 8, max_length = 1024)]
    password: Option<String>,
    /// The account's id, for an account without a password (made by the CLI).
    #[schema(min_length = 1, max_length = 128)]
    confirm: Option<String>,
}

/// `{"deleted": {...}}`
#[derive(Serialize, ToSchema)]
pub(super) struct AccountDeleted {
    deleted: DeletedCounts,
}

/// What deleting the account deleted.
#[derive(Serialize, ToSchema)]
pub(super) struct DeletedCounts {
    /// Sessions, this one among them.
    sessions: usize,
    /// Chats.
    chats: usize,
    /// Messages, in all of the chats.
    messages: usize,
    /// Stored idempotency answers.
    idempotency_keys: usize,
}

/// `DELETE /api/users/{user_id}`: the account and every trace of it, after the
/// password is checked again.
#[utoipa::path(
    delete,
    path = "/api/users/{user_id}",
    operation_id = "delete_account",
    tag = "account",
    security(("session_cookie" = [])),
    params(UserPathParams),
    request_body = DeleteAccountBody,
    responses(
        (status = 200, description = "The account is deleted with its sessions, chats, messages, idempotency answers, search index entries and recorded changes; the cookie is cleared", body = AccountDeleted),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 403, description = "The session is another user's, or the password (or confirm) does not match", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords for this account or from this address; retry after Retry-After seconds", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        SessionErrors,
        JsonBodyErrors,
        HashingBusy,
        Overloaded,
    )
)]
#[allow(clippy::too_many_arguments)]
pub(super) async fn delete(
    db: web::Data<Db>,
    settings: web::Data<SessionSettings>,
    hasher: web::Data<Hasher>,
    throttle: web::Data<Throttle>,
    ClientIp(client): ClientIp,
    claim: Claim,
    req: HttpRequest,
    payload: Unsettled<web::Payload>,
) -> Result<HttpResponse, ApiError> {
    const FIELDS: &str = "password, confirm";
    let inputs = |key| async move {
        let body = json_body(&req, payload.open(&key))
            .await
            .map_err(|err| err.in_body(FIELDS))?;
        validation::parse_account_confirmation(body.0).map_err(ApiError::invalid_body(FIELDS))
    };
    let (user_id, confirmation) = claim
        .run(Check::First, inputs, |claim, confirmation| async move {
            Ok((claim.user_id, confirmation))
        })
        .await?;
    let (user, stored_hash) = db
        .user_with_password(user_id.clone())
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let confirmed = match (confirmation, stored_hash) {
        (AccountConfirmation::Password(password), Some(stored)) => {
            // The same throttle as logins: a stolen session cannot guess the password
            // faster here than at the login form.
            let attempt = match &user.primary_email {
                Some(email) => Some(
                    throttle
                        .into_inner()
                        .begin_login(email, client)
                        .map_err(too_many_attempts)?,
                ),
                None => None,
            };
            let verified = hasher
                .verify(client, password, Some(stored))
                .await
                .map_err(hash_error)?;
            if let Some(attempt) = attempt {
                if verified {
                    attempt.succeeded();
                } else {
                    attempt.failed();
                }
            }
            verified
        }
        (AccountConfirmation::UserId(confirm), None) => confirm == user_id,
        // A password for an account without one, or the other way round.
        _ => false,
    };
    if !confirmed {
        log::debug!("deleting user {user_id} refused: the confirmation does not match");
        return Err(ApiError::WrongConfirmation);
    }
    let deleted = db.delete_user(user_id.clone()).await?;
    log::info!(
        "deleted user {user_id} with {} chats and {} messages",
        deleted.chats,
        deleted.messages
    );
    Ok(HttpResponse::Ok()
        .cookie(crate::auth::cleared_session_cookie(&settings))
        .json(AccountDeleted {
            deleted: DeletedCounts {
                sessions: deleted.sessions,
                chats: deleted.chats,
                messages: deleted.messages,
                idempotency_keys: deleted.idempotency_keys,
            },
        }))
}
