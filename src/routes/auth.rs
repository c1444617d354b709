//! `/api/auth`: sign-up, login, logout, and the current session. Sign-up and login set
//! the `neptun-session` cookie; logout deletes the session and clears it.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{
    SESSION_COOKIE, Session, SessionToken, cleared_session_cookie, hash_token, session_cookie,
};
use crate::config::SessionSettings;
use crate::db::Db;
use crate::domain::{Timestamp, User};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::random::random_url_safe;
use crate::routes::schema::{CredentialsBody, ErrorBody, JsonBodyErrors, Overloaded};
use crate::validation::Credentials;
use crate::{password, validation};

/// What sign-up and login bodies hold, for error messages.
const FIELDS: &str = "email, password";

/// `{"user": User}`
#[derive(Serialize, ToSchema)]
pub struct UserBody {
    user: User,
}

/// `{"ok": true}`
#[derive(Serialize, ToSchema)]
pub struct LoggedOut {
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
        JsonBodyErrors,
        Overloaded,
    )
)]
pub async fn sign_up(
    db: web::Data<Db>,
    settings: web::Data<SessionSettings>,
    body: Result<JsonBody, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let credentials = credentials(body)?;
    let password_hash = password::hash(credentials.password)
        .await
        .map_err(ApiError::internal)?;
    let token = SessionToken::generate().map_err(ApiError::internal)?;
    // 128 random bits: unguessable, and unique without a round trip to check.
    let user_id = random_url_safe::<16>().map_err(ApiError::internal)?;
    let user = db
        .sign_up(
            user_id,
            credentials.email,
            password_hash,
            token.hash(),
            expiry(&settings),
        )
        .await?;
    Ok(signed_in(user, &token, &settings))
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
        JsonBodyErrors,
        Overloaded,
    )
)]
pub async fn login(
    db: web::Data<Db>,
    settings: web::Data<SessionSettings>,
    body: Result<JsonBody, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let credentials = credentials(body)?;
    let found = db.user_by_email(credentials.email).await?;
    let (user, stored_hash) = match found {
        Some((user, hash)) => (Some(user), hash),
        None => (None, None),
    };
    let verified = password::verify(credentials.password, stored_hash)
        .await
        .map_err(ApiError::internal)?;
    let Some(user) = user.filter(|_| verified) else {
        log::debug!("login refused");
        return Err(ApiError::InvalidCredentials);
    };
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
pub async fn logout(
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
pub async fn current_session(
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
pub async fn check(_session: Session) -> HttpResponse {
    HttpResponse::Ok().finish()
}

/// The credentials of a sign-up or login body.
fn credentials(body: Result<JsonBody, ApiError>) -> Result<Credentials, ApiError> {
    let body = body.map_err(|err| err.in_body(FIELDS))?;
    validation::parse_credentials(body.0).map_err(ApiError::invalid_body(FIELDS))
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
