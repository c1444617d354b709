//! `/api/auth`: sign-up, login, logout, and the current session. Sign-up and login set
//! the `neptun-session` cookie; logout deletes the session and clears it. Logins and
//! sign-ups pass the [`Throttle`](crate::throttle::Throttle) before any password is
//! hashed, and hash on the [`Hasher`](crate::password::Hasher)'s threads.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{
    SESSION_COOKIE, Session, SessionToken, cleared_session_cookie, hash_token, session_cookie,
};
use crate::client_ip::ClientIp;
use crate::config::SessionSettings;
use crate::db::Db;
use crate::domain::{Timestamp, User};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::password::{HashError, Hasher};
use crate::random::random_url_safe;
use crate::routes::schema::{CredentialsBody, ErrorBody, HashingBusy, JsonBodyErrors, Overloaded};
use crate::throttle::Throttle;
use crate::validation;
use crate::validation::Credentials;

/// What sign-up and login bodies hold, for error messages.
const FIELDS: &str = "email, password";

/// `{"user": User}`
#[derive(Serialize, ToSchema)]
pub(super) struct UserBody {
    user: User,
}

/// `{"ok": true}`
#[derive(Serialize, ToSchema)]
pub(super) struct LoggedOut {
    /// Always true.
    ok: bool,
}

/// `POST /api/auth/sign-up`: creates a user with a generated id, and signs them in.
#[utoipa::path(
    post,
    path = "/api/auth/sign-up",
    operation_id = "sign_up",
    tag = "auth",
    request_body = CredentialsBody,
    responses(
        (status = 200, description = "Signed up and in; sets the neptun-session cookie", body = UserBody),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 409, description = "The email is taken", body = ErrorBody),
        (status = 429, description = "Too many sign-ups from this address; retry after Retry-After seconds", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        JsonBodyErrors,
        HashingBusy,
    )
)]
pub(super) async fn sign_up(
    db: web::Data<Db>,
    settings: web::Data<SessionSettings>,
    hasher: web::Data<Hasher>,
    throttle: web::Data<Throttle>,
    ClientIp(client): ClientIp,
    body: Result<JsonBody, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let credentials = credentials(body)?;
    let attempt = throttle
        .into_inner()
        .begin_sign_up(client)
        .map_err(too_many_attempts)?;
    let password_hash = hasher
        .hash(client, credentials.password)
        .await
        .map_err(hash_error)?;
    let token = SessionToken::generate().map_err(ApiError::internal)?;
    // 128 random bits: unguessable, and unique without a round trip to check.
    let user_id = random_url_safe::<16>().map_err(ApiError::internal)?;
    let signed_up = db
        .sign_up(
            user_id,
            credentials.email,
            password_hash,
            token.hash(),
            expiry(&settings),
        )
        .await;
    // A taken email counts too: sign-up must not be a free way to test emails.
    if matches!(&signed_up, Ok(_) | Err(crate::db::Error::Conflict(_))) {
        attempt.counted();
    }
    Ok(signed_in(signed_up?, &token, &settings))
}

/// `POST /api/auth/login`: a new session for the right email and password. A wrong
/// email and a wrong password get the same answer after about the same time.
#[utoipa::path(
    post,
    path = "/api/auth/login",
    operation_id = "login",
    tag = "auth",
    request_body = CredentialsBody,
    responses(
        (status = 200, description = "Signed in; sets the neptun-session cookie", body = UserBody),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 401, description = "Wrong email or password", body = ErrorBody),
        (status = 429, description = "Too many failed logins for this account or from this address; retry after Retry-After seconds", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        JsonBodyErrors,
        HashingBusy,
    )
)]
pub(super) async fn login(
    db: web::Data<Db>,
    settings: web::Data<SessionSettings>,
    hasher: web::Data<Hasher>,
    throttle: web::Data<Throttle>,
    ClientIp(client): ClientIp,
    body: Result<JsonBody, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let credentials = credentials(body)?;
    let attempt = throttle
        .into_inner()
        .begin_login(&credentials.email, client)
        .map_err(|wait| {
            log::debug!("login throttled for {} s", wait.as_secs());
            too_many_attempts(wait)
        })?;
    let found = db.user_by_email(credentials.email).await?;
    let (user, stored_hash) = match found {
        Some((user, hash)) => (Some(user), hash),
        None => (None, None),
    };
    let verified = hasher
        .verify(client, credentials.password, stored_hash)
        .await
        .map_err(hash_error)?;
    let Some(user) = user.filter(|_| verified) else {
        log::debug!("login refused");
        attempt.failed();
        return Err(ApiError::InvalidCredentials);
    };
    attempt.succeeded();
    let token = SessionToken::generate().map_err(ApiError::internal)?;
    db.create_session(user.id.clone(), token.hash(), expiry(&settings))
        .await?;
    Ok(signed_in(user, &token, &settings))
}

/// `POST /api/auth/logout`: deletes the presented session (if any) and clears the
/// cookie. Idempotent: logging out twice, or without a session, also answers 200.
#[utoipa::path(
    post,
    path = "/api/auth/logout",
    operation_id = "logout",
    tag = "auth",
    responses(
        (status = 200, description = "The session (if any) is deleted and the cookie cleared", body = LoggedOut),
        Overloaded,
    )
)]
pub(super) async fn logout(
    db: web::Data<Db>,
    settings: web::Data<SessionSettings>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if let Some(cookie) = req.cookie(SESSION_COOKIE) {
        db.delete_session(hash_token(cookie.value())).await?;
    }
    Ok(HttpResponse::Ok()
        .cookie(cleared_session_cookie(&settings))
        .json(LoggedOut { ok: true }))
}

/// `GET /api/auth/session`: the signed-in user, or 401.
#[utoipa::path(
    get,
    path = "/api/auth/session",
    operation_id = "get_session",
    tag = "auth",
    security(("session_cookie" = [])),
    responses(
        (status = 200, description = "The signed-in user", body = UserBody),
        (status = 401, description = "No valid session", body = ErrorBody),
    )
)]
pub(super) async fn current_session(
    db: web::Data<Db>,
    session: Session,
) -> Result<HttpResponse, ApiError> {
    let user = db
        .user(session.user_id)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    Ok(HttpResponse::Ok().json(UserBody { user }))
}

/// `HEAD /api/auth/check`: 200 with a live session, 401 without; no body either way.
#[utoipa::path(
    head,
    path = "/api/auth/check",
    operation_id = "check_session",
    tag = "auth",
    security(("session_cookie" = [])),
    responses(
        (status = 200, description = "The session is valid"),
        (status = 401, description = "No valid session"),
    )
)]
pub(super) async fn check(_session: Session) -> HttpResponse {
    HttpResponse::Ok().finish()
}

/// The credentials of a sign-up or login body.
fn credentials(body: Result<JsonBody, ApiError>) -> Result<Credentials, ApiError> {
    let body = body.map_err(|err| err.in_body(FIELDS))?;
    validation::parse_credentials(body.0).map_err(ApiError::invalid_body(FIELDS))
}

/// The 429 for a throttled attempt.
pub(super) fn too_many_attempts(wait: std::time::Duration) -> ApiError {
    ApiError::TooManyAttempts {
        retry_after_secs: crate::error::retry_after_secs(wait),
    }
}

pub(super) fn hash_error(err: HashError) -> ApiError {
    match err {
        HashError::Busy => ApiError::HashingBusy,
        failed @ HashError::Failed(_) => ApiError::internal(failed),
    }
}

/// The answer to a successful sign-up or login: the user, and the new session's cookie.
fn signed_in(user: User, token: &SessionToken, settings: &SessionSettings) -> HttpResponse {
    HttpResponse::Ok()
        .cookie(session_cookie(token, settings))
        .json(UserBody { user })
}

fn expiry(settings: &SessionSettings) -> Timestamp {
    Timestamp::from_datetime(
        chrono::Utc::now() + chrono::Duration::days(i64::from(settings.ttl_days)),
    )
}
