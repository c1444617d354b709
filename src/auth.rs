//! Session tokens and the middleware that authenticates requests under
//! `/api/users/{user_id}`.
//!
//! A token is 32 bytes from the OS random source, URL-safe base64 without padding. Only
//! its SHA-256 is stored. Tokens never appear in logs: [`SessionToken`]'s `Debug` is
//! redacted, and rejections are logged by reason only.

use std::fmt;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::db::Db;
use crate::error::ApiError;

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "neptun-session";

/// Longer cookie values cannot be tokens we issued; they are refused without a lookup.
const MAX_TOKEN_LEN: usize = 256;

/// A raw session token, as handed to the client once.
pub struct SessionToken(String);

impl SessionToken {
    /// A new token: 256 bits from the OS random source.
    pub fn generate() -> Result<SessionToken, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(SessionToken(URL_SAFE_NO_PAD.encode(bytes)))
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

/// The user whose session authenticated the request, and who owns the `{user_id}` of
/// its path. Handlers under `/api/users/{user_id}` take it as `web::ReqData<AuthenticatedUser>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    /// The user's id.
    pub user_id: String,
}

/// Middleware for the `/api/users/{user_id}` scope. It runs before any extractor, so
/// 401 (no valid session) and then 403 (session of another user) come before every
/// other answer, whatever else is wrong with the request.
pub async fn require_session(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    match authenticate(&req).await {
        Ok(user) => {
            req.extensions_mut().insert(user);
            next.call(req).await.map(ServiceResponse::map_into_left_body)
        }
        Err(err) => Ok(req.error_response(err).map_into_right_body()),
    }
}

async fn authenticate(req: &ServiceRequest) -> Result<AuthenticatedUser, ApiError> {
    let Some(cookie) = req.cookie(SESSION_COOKIE) else {
        log::debug!("401: no {SESSION_COOKIE} cookie");
        return Err(ApiError::Unauthorized);
    };
    if cookie.value().is_empty() || cookie.value().len() > MAX_TOKEN_LEN {
        log::debug!("401: malformed session token");
        return Err(ApiError::Unauthorized);
    }
    let db = req
        .app_data::<web::Data<Db>>()
        .ok_or_else(|| ApiError::internal("BUG: Db is not registered as app data"))?;
    let Some(user_id) = db.session_user(hash_token(cookie.value())).await? else {
        log::debug!("401: unknown or expired session");
        return Err(ApiError::Unauthorized);
    };
    if req.match_info().get("user_id") != Some(user_id.as_str()) {
        log::debug!("403: session of another user");
        return Err(ApiError::Forbidden);
    }
    Ok(AuthenticatedUser { user_id })
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
