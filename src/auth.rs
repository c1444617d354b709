//! Session tokens, their cookie, and the two ways a request is authenticated: the
//! [`Session`](crate::auth::Session) extractor for the `/api/auth` routes, and the
//! [`Claim`](crate::auth::Claim) that every route under `/api/users/{user_id}` goes
//! through, which fixes the order of 401, 403 and everything else in one place and lets
//! the hot message routes check the session in the same storage step as their work.
//!
//! A token is 32 bytes from the OS random source, URL-safe base64 without padding. Only
//! its SHA-256 is stored. Tokens never appear in logs: [`SessionToken`](crate::auth::SessionToken)'s `Debug` is
//! redacted, and rejections are logged by reason only.

use std::fmt;

use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::http::Method;
use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::{FromRequest, HttpRequest, web};
use sha2::{Digest, Sha256};

use crate::config::SessionSettings;
use crate::db::{self, Db};
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

/// Finds the live session named by the request's cookie. Every failure is the same
/// opaque 401; the reason is logged at debug level only.
pub async fn authenticate(req: &HttpRequest) -> Result<Session, ApiError> {
    let db = db_of(req)?;
    for token_hash in presented_token_hashes(req)? {
        if let Some(user_id) = db.session_user(token_hash).await? {
            return Ok(Session {
                user_id,
                token_hash,
            });
        }
    }
    log::debug!("401: unknown or expired session");
    Err(ApiError::Unauthorized)
}

/// Where a route's storage step stands to the session check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The storage step checks the [`SessionClaim`] itself, in the same step as its work
    /// (the hot message routes): no separate lookup in the common case.
    InStorage,
    /// The storage step trusts the user id it is given, so the session is checked
    /// before it.
    First,
}

/// Bodies up to this size are read before the session is checked (it is checked with
/// the work, in one storage step). Above it, or when the size is not announced, the
/// session is checked first, so that a bogus cookie buys no large read or parse.
pub const CHECK_SESSION_BEFORE_BODIES_OVER: usize = 16 * 1024;

/// The way into every route under `/api/users/{user_id}`: the request's claim to act
/// for the user of its path, made by its session cookie, and not checked yet.
///
/// [`Claim::run`] is the only way to the route's inputs and its storage step, and it
/// settles the claim in the one order every such route answers in: 401 (no valid
/// session), 403 (a session of another user), then what is wrong with the inputs (400,
/// 408, 413, 415), then 429 (the user's write limit: a request that could not write
/// anyway does not use up the allowance), then what the work says (404, 503, ...).
/// Handlers take their path and body as [`Unsettled`] extractors, which only the
/// [`InputKey`] that [`Claim::run`] hands to the route's inputs opens, so an input error
/// cannot be answered before the claim is settled (and the body is not read before).
///
/// Taking a `Claim` (or an [`Unsettled`] input) never fails, so actix's order of
/// extractors does not matter.
pub struct Claim {
    req: HttpRequest,
    state: ClaimState,
}

enum ClaimState {
    /// No well-formed session cookie: 401 without a lookup.
    NoCookie,
    /// Not checked yet. `user_id` is `None` when the path's user id cannot be decoded
    /// (that names no user of any session: 403 once the session is found live).
    Unchecked {
        user_id: Option<String>,
        token_hashes: Vec<[u8; 32]>,
    },
    /// Checked: the session is live and the path's user's.
    Checked(SessionClaim),
}

/// The `{user_id}` segment of the scope's path.
#[derive(serde::Deserialize)]
struct UserPath {
    user_id: String,
}

impl FromRequest for Claim {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Claim, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = match presented_token_hashes(req) {
            Err(_) => ClaimState::NoCookie,
            Ok(token_hashes) => ClaimState::Unchecked {
                // `web::Path` decodes the segment fully (`%2B` too), as handlers see it.
                user_id: web::Path::<UserPath>::extract(req)
                    .into_inner()
                    .ok()
                    .map(|path| path.into_inner().user_id),
                token_hashes,
            },
        };
        std::future::ready(Ok(Claim {
            req: req.clone(),
            state,
        }))
    }
}

impl Claim {
    /// Settles the claim, reads the route's `inputs` (given the key that opens its
    /// [`Unsettled`] extractors) and runs its storage step, `work`,
    /// answering in the order described on [`Claim`]. `work` gets the claim; with
    /// [`Check::First`] it has been checked, with [`Check::InStorage`] `work` must
    /// hand it to a storage call that checks it.
    ///
    /// `inputs` (path, query, body: whatever can be wrong with the request) is awaited
    /// only after the session has been checked when the route checks it first or the
    /// body may be large; otherwise before, and an input error is then answered only
    /// once the session has been found live and the path's user's.
    pub async fn run<T, R, Read, Inputs, Work, Done>(
        mut self,
        check: Check,
        inputs: Read,
        work: Work,
    ) -> Result<R, ApiError>
    where
        Read: FnOnce(InputKey) -> Inputs,
        Inputs: Future<Output = Result<T, ApiError>>,
        Work: FnOnce(SessionClaim, T) -> Done,
        Done: Future<Output = Result<R, db::Error>>,
    {
        if matches!(self.state, ClaimState::NoCookie) {
            log::debug!("401: no well-formed {SESSION_COOKIE} cookie");
            return Err(ApiError::Unauthorized);
        }
        if check == Check::First || !self.checkable_in_storage() || body_may_be_large(&self.req) {
            self.settle().await?;
        }
        let inputs = match inputs(InputKey(())).await {
            Ok(inputs) => inputs,
            Err(err) => return Err(self.settled_or(err).await),
        };
        if !matches!(*self.req.method(), Method::GET | Method::HEAD) {
            self.admit_write().await?;
        }
        let claim = match &self.state {
            ClaimState::Checked(claim) => claim.clone(),
            ClaimState::Unchecked {
                user_id: Some(user_id),
                token_hashes,
            } if token_hashes.len() == 1 => SessionClaim {
                user_id: user_id.clone(),
                token_hash: token_hashes[0],
            },
            // Settled above: one cookie and a decodable path, or checked.
            _ => {
                return Err(ApiError::internal(
                    "BUG: an unsettled claim reached its work",
                ));
            }
        };
        match work(claim, inputs).await {
            Ok(done) => Ok(done),
            Err(err) if settles_the_claim(&err) => Err(err.into()),
            // Refused before storage looked at the claim (an overloaded writer, say):
            // 401 and 403 still come first.
            Err(err) => Err(self.settled_or(err.into()).await),
        }
    }

    /// `err`, the answer of a route that has nothing to do (a method it does not serve,
    /// say), once the claim is settled: 401 or 403 if it does not hold.
    pub async fn refuse(mut self, err: ApiError) -> ApiError {
        self.settled_or(err).await
    }

    /// Checks the claim now, unless it has been: `Err` with the 401 or 403 that it
    /// comes to.
    async fn settle(&mut self) -> Result<(), ApiError> {
        let (user_id, token_hashes) = match &self.state {
            ClaimState::NoCookie => return Err(ApiError::Unauthorized),
            ClaimState::Checked(_) => return Ok(()),
            ClaimState::Unchecked {
                user_id,
                token_hashes,
            } => (user_id.clone(), token_hashes.clone()),
        };
        let db = db_of(&self.req)?.clone();
        let mut live = false;
        for token_hash in token_hashes {
            match (db.session_user(token_hash).await?, &user_id) {
                (Some(owner), Some(user_id)) if owner == *user_id => {
                    self.state = ClaimState::Checked(SessionClaim {
                        user_id: owner,
                        token_hash,
                    });
                    return Ok(());
                }
                (Some(_), _) => live = true,
                (None, _) => {}
            }
        }
        if live {
            log::debug!("403: session of another user");
            Err(ApiError::Forbidden)
        } else {
            log::debug!("401: unknown or expired session");
            Err(ApiError::Unauthorized)
        }
    }

    /// `err`, unless the claim does not hold: then the 401 or 403 that comes first.
    async fn settled_or(&mut self, err: ApiError) -> ApiError {
        self.settle().await.err().unwrap_or(err)
    }

    /// Lets a write go on to storage. The claim is checked here first, on a read, only
    /// when something must happen before the write: the user's write limit, if one is
    /// configured (401 and 403 come before 429), or a backlog in the writer's queue, so
    /// that requests without a live session do not take places in it from real ones.
    async fn admit_write(&mut self) -> Result<(), ApiError> {
        let limiter = self.req.app_data::<web::Data<RateLimiter>>().cloned();
        let unchecked = matches!(self.state, ClaimState::Unchecked { .. });
        if limiter.is_none() && !(unchecked && db_of(&self.req)?.writes_backlogged()) {
            return Ok(());
        }
        self.settle().await?;
        match (limiter, &self.state) {
            (Some(limiter), ClaimState::Checked(claim)) => {
                check_write_limit(&limiter, &claim.user_id)
            }
            _ => Ok(()),
        }
    }

    /// Whether storage can check the claim as it stands: it names one session and a
    /// user. Several session cookies are sorted out by looking them up first, and a path
    /// whose user id cannot be decoded is 403 once the session is found live.
    fn checkable_in_storage(&self) -> bool {
        matches!(
            &self.state,
            ClaimState::Unchecked { user_id: Some(_), token_hashes } if token_hashes.len() == 1
        )
    }
}

/// A fallible input of a route under `/api/users/{user_id}` (its path, its body),
/// extracted but sealed: only the [`InputKey`] that [`Claim::run`] hands to the route's
/// inputs opens it, so nothing can be answered from it before the claim is settled.
pub struct Unsettled<T: FromRequest>(Result<T, T::Error>);

impl<T: FromRequest> Unsettled<T> {
    /// The extracted input, or why it could not be extracted.
    pub fn open(self, _key: &InputKey) -> Result<T, T::Error> {
        self.0
    }
}

impl<T> FromRequest for Unsettled<T>
where
    T: FromRequest + 'static,
{
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let input = T::from_request(req, payload);
        Box::pin(async move { Ok(Unsettled(input.await)) })
    }
}

/// Opens [`Unsettled`] inputs. Only [`Claim::run`] makes one, and hands it to the
/// route's inputs.
pub struct InputKey(());

/// Whether storage returns `err` only after checking the claim (so it is the answer),
/// rather than refusing the work before looking at the claim.
fn settles_the_claim(err: &db::Error) -> bool {
    matches!(
        err,
        db::Error::NotFound(_)
            | db::Error::WrongUser
            | db::Error::KeyReused
            | db::Error::KeyAnswerGone
            | db::Error::QuotaExceeded(_)
            | db::Error::Conflict(_)
            | db::Error::Render(_)
    )
}

/// Whether the request's body may be larger than
/// [`CHECK_SESSION_BEFORE_BODIES_OVER`]: it says so, or does not say its size.
fn body_may_be_large(req: &HttpRequest) -> bool {
    let headers = req.headers();
    match headers.get(CONTENT_LENGTH) {
        Some(length) => length
            .to_str()
            .ok()
            .and_then(|length| length.parse::<usize>().ok())
            .is_none_or(|length| length > CHECK_SESSION_BEFORE_BODIES_OVER),
        None => headers.contains_key(TRANSFER_ENCODING),
    }
}

/// Takes one write from the user's allowance, or says how long to wait (429).
fn check_write_limit(limiter: &RateLimiter, user_id: &str) -> Result<(), ApiError> {
    limiter.check(user_id).map_err(|wait| {
        log::debug!("429: write rate limit");
        ApiError::TooManyRequests {
            retry_after_secs: crate::error::retry_after_secs(wait),
        }
    })
}

/// At most this many session cookies of one request are looked at.
const MAX_SESSION_COOKIES: usize = 4;

/// The SHA-256 of each well-formed session token the request presents, in the order
/// sent; 401 without any.
///
/// A browser can hold two cookies of this name, for example one left by a deployment
/// under another path or a parent domain, and sends both (the longer path first); the
/// client cannot choose which comes first. Taking the first would lock such a user out
/// although they present a live session, so each is tried, in order, and the first
/// that is live (and, under `/api/users/{user_id}`, the path's user's) wins. That costs
/// a lookup per cookie only when several are sent; a single cookie keeps the hot
/// routes' one storage step.
fn presented_token_hashes(req: &HttpRequest) -> Result<Vec<[u8; 32]>, ApiError> {
    let cookies = req.cookies().map_err(|_| {
        log::debug!("401: unparsable Cookie header");
        ApiError::Unauthorized
    })?;
    let hashes: Vec<[u8; 32]> = cookies
        .iter()
        .filter(|cookie| cookie.name() == SESSION_COOKIE)
        .filter(|cookie| !cookie.value().is_empty() && cookie.value().len() <= MAX_TOKEN_LEN)
        .take(MAX_SESSION_COOKIES)
        .map(|cookie| hash_token(cookie.value()))
        .collect();
    if hashes.is_empty() {
        log::debug!("401: no well-formed {SESSION_COOKIE} cookie");
        return Err(ApiError::Unauthorized);
    }
    Ok(hashes)
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
