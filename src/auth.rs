//! Session tokens, their cookie, and the three ways a request is authenticated: the
//! middleware in front of `/api/users/{user_id}`, the [`Session`](crate::auth::Session) extractor for the
//! `/api/auth` routes, and, on the hot message routes, a [`SessionClaim`](crate::domain::SessionClaim) that storage
//! checks in the same step as the work it guards (see [`claim`](crate::auth::claim)).
//!
//! A token is 32 bytes from the OS random source, URL-safe base64 without padding. Only
//! its SHA-256 is stored. Tokens never appear in logs: [`SessionToken`](crate::auth::SessionToken)'s `Debug` is
//! redacted, and rejections are logged by reason only.

use std::fmt;

use std::future::Future;
use std::pin::Pin;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use sha2::{Digest, Sha256};

use crate::config::SessionSettings;
use crate::db::Db;
use crate::domain::SessionClaim;
use crate::error::ApiError;
use crate::random::random_url_safe;
use crate::rate_limit::RateLimiter;

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "neptun-session";

/// Longer cookie values cannot be tokens we issued; they are refused without a lookup.
const MAX_TOKEN_LEN: usize = 256;

/// A raw session token, as handed to the client once.
pub struct SessionToken(String);

impl SessionToken {
    /// A new token: 256 bits from the OS random source.
    pub fn generate() -> Result<SessionToken, getrandom::Error> {
        random_url_safe::<32>().map(SessionToken)
    }

    /// The token text, for the one place that hands it out.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 that is stored and looked up.
    pub fn hash(&self) -> [u8; 32] {
        hash_token(&self.0)
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

/// SHA-256 of a token as presented by a client.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The session that authenticated a request: whose it is, and its token hash (for
/// logging out). Taken directly as an extractor by the `/api/auth` routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The user the session belongs to.
    pub user_id: String,
    /// The SHA-256 of the presented token.
    pub token_hash: [u8; 32],
}

/// The user whose session authenticated the request, and who owns the `{user_id}` of
/// its path. Handlers behind [`require_session`] take it as `web::ReqData<AuthenticatedUser>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    /// The user's id.
    pub user_id: String,
}

/// The `{user_id}` segment of the scope's path.
#[derive(serde::Deserialize)]
struct UserPath {
    user_id: String,
}

/// Middleware for the `/api/users/{user_id}` scope. It runs before any extractor, so
/// 401 (no valid session) and then 403 (session of another user) come before every
/// other answer, whatever else is wrong with the request.
pub async fn require_session(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let checked = match authenticate(req.request()).await {
        // `web::Path` decodes the segment fully (`%2B` too), as handlers would see it.
        Ok(session) => match web::Path::<UserPath>::extract(req.request()).await {
            Ok(path) if path.user_id == session.user_id => {
                limit_writes(&req, &session).map(|()| AuthenticatedUser {
                    user_id: session.user_id,
                })
            }
            _ => {
                log::debug!("403: session of another user");
                Err(ApiError::Forbidden)
            }
        },
        Err(err) => Err(err),
    };
    match checked {
        Ok(user) => {
            req.extensions_mut().insert(user);
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Err(err) => Ok(req.error_response(err).map_into_right_body()),
    }
}

/// Applies the per-session write limit, if one is configured, to requests that change
/// something (anything but GET and HEAD).
fn limit_writes(req: &ServiceRequest, session: &Session) -> Result<(), ApiError> {
    let Some(limiter) = req.app_data::<web::Data<RateLimiter>>() else {
        return Ok(());
    };
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return Ok(());
    }
    check_write_limit(limiter, &session.token_hash)
}

/// Takes one write from the session's allowance, or says how long to wait (429).
fn check_write_limit(limiter: &RateLimiter, token_hash: &[u8; 32]) -> Result<(), ApiError> {
    limiter.check(token_hash).map_err(|wait| {
        log::debug!("429: write rate limit");
        ApiError::TooManyRequests {
            retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        }
    })
}

/// Finds the live session named by the request's cookie. Every failure is the same
/// opaque 401; the reason is logged at debug level only.
pub async fn authenticate(req: &HttpRequest) -> Result<Session, ApiError> {
    let token_hash = presented_token_hash(req)?;
    match db_of(req)?.session_user(token_hash).await? {
        Some(user_id) => Ok(Session {
            user_id,
            token_hash,
        }),
        None => {
            log::debug!("401: unknown or expired session");
            Err(ApiError::Unauthorized)
        }
    }
}

/// The request's claim to act for `user_id` (the user of its path), from its session
/// cookie. Only a missing or malformed cookie fails here (401); the session itself is
/// checked by the storage call the claim is handed to, in the same step as its work,
/// which saves the separate lookup [`require_session`] makes.
///
/// 401 and 403 must still come before any other error. A handler that finds something
/// else wrong before its storage call therefore answers with [`claim_first`].
pub fn claim(req: &HttpRequest, user_id: String) -> Result<SessionClaim, ApiError> {
    Ok(SessionClaim {
        user_id,
        token_hash: presented_token_hash(req)?,
    })
}

/// `err`, unless `claim` does not hold: then the 401 or 403 that takes precedence.
pub async fn claim_first(req: &HttpRequest, claim: SessionClaim, err: ApiError) -> ApiError {
    let checked = match db_of(req) {
        Ok(db) => db.check_claim(claim).await.map_err(ApiError::from),
        Err(bug) => Err(bug),
    };
    checked.err().unwrap_or(err)
}

/// Lets a claimed write go on to the writer. The claim is checked there, in the write's
/// own transaction; it is checked here first, on a read, only when something must
/// happen before the write: the per-session rate limit, if one is configured (401 and
/// 403 still come before 429), or a backlog in the writer's queue, so that requests
/// without a live session do not take places in it from real ones.
pub async fn admit_claimed_write(req: &HttpRequest, claim: &SessionClaim) -> Result<(), ApiError> {
    let db = db_of(req)?;
    let limiter = req.app_data::<web::Data<RateLimiter>>();
    if limiter.is_none() && !db.writes_backlogged() {
        return Ok(());
    }
    db.check_claim(claim.clone()).await?;
    match limiter {
        Some(limiter) => check_write_limit(limiter, &claim.token_hash),
        None => Ok(()),
    }
}

/// The SHA-256 of the request's session token; 401 without a well-formed cookie.
fn presented_token_hash(req: &HttpRequest) -> Result<[u8; 32], ApiError> {
    let Some(cookie) = req.cookie(SESSION_COOKIE) else {
        log::debug!("401: no {SESSION_COOKIE} cookie");
        return Err(ApiError::Unauthorized);
    };
    if cookie.value().is_empty() || cookie.value().len() > MAX_TOKEN_LEN {
        log::debug!("401: malformed session token");
        return Err(ApiError::Unauthorized);
    }
    Ok(hash_token(cookie.value()))
}

/// The database handle registered with the app.
fn db_of(req: &HttpRequest) -> Result<&web::Data<Db>, ApiError> {
    req.app_data::<web::Data<Db>>()
        .ok_or_else(|| ApiError::internal("BUG: Db is not registered as app data"))
}

impl FromRequest for Session {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Session, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate(&req).await })
    }
}

/// The `Set-Cookie` for a new session token.
pub fn session_cookie(token: &SessionToken, settings: &SessionSettings) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, token.expose().to_owned())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(settings.cookie_secure)
        .max_age(CookieDuration::days(i64::from(settings.ttl_days)))
        .finish()
}

/// The `Set-Cookie` that makes a browser forget its session cookie.
pub fn cleared_session_cookie(settings: &SessionSettings) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, "")
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(settings.cookie_secure)
        .max_age(CookieDuration::ZERO)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_url_safe_and_distinct() {
        let a = SessionToken::generate().unwrap();
        let b = SessionToken::generate().unwrap();
        assert_eq!(a.expose().len(), 43);
        assert!(
            a.expose()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.hash(), hash_token(a.expose()));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let token = SessionToken::generate().unwrap();
        assert!(!format!("{token:?}").contains(token.expose()));
    }
}
