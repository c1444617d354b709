//! Password hashing with Argon2id (random salt, PHC string). Hashing is deliberately
//! slow and memory-hungry, so each hash runs on a thread of its own, at most a few at a
//! time: never on the async workers, and never on the few blocking threads that serve
//! reads, so a burst of logins cannot hold up reading messages. (Starting a thread
//! costs microseconds; a hash costs tens of milliseconds.) Passwords are never stored
//! or logged in clear.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use tokio::sync::Semaphore;

/// Each hash takes ~19 MiB; this bounds the memory a burst of logins can use.
static HASHING_SLOTS: Semaphore = Semaphore::const_new(4);

/// Why hashing failed. Always a server-side problem.
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed")]
pub struct HashError(#[source] Box<dyn std::error::Error + Send + Sync>);

/// Hashes `password` with Argon2id and a random salt, on a thread of its own; returns
/// the PHC string.
pub async fn hash(password: String) -> Result<String, HashError> {
    run_blocking(move || hash_now(&password)).await
}

/// Hashes `password` on the calling thread: for the command line, never for a request.
pub fn hash_now(password: &str) -> Result<String, HashError> {
    let mut salt_bytes = [0u8; 16];
    getrandom::fill(&mut salt_bytes).map_err(|err| HashError(err.into()))?;
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|err| HashError(err.to_string().into()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| HashError(err.to_string().into()))
}

/// Whether `password` matches the stored PHC string. With no stored hash (unknown
/// email, or a user without a password) it verifies against a fixed dummy hash and
/// answers false, so both cases take about as long as a real check.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, HashError> {
    run_blocking(move || {
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| DUMMY_HASH.to_owned());
        let parsed = PasswordHash::new(&phc).map_err(|err| HashError(err.to_string().into()))?;
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(known && matches)
    })
    .await
}

/// Runs `work` on a new thread once a hashing slot is free, and waits for it.
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
) -> Result<T, HashError> {
    let slot = HASHING_SLOTS
        .acquire()
        .await
        .map_err(|err| HashError(err.into()))?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("neptun-password".to_owned())
        .spawn(move || {
            // The thread holds the slot, so a caller that goes away (a client that
            // disconnects) does not free it while the hash still runs.
            let _slot = slot;
            let _ = reply.send(work());
        })
        .map_err(|err| HashError(err.into()))?;
    answer
        .await
        .map_err(|_| HashError("the hashing thread stopped".into()))?
}

/// An Argon2id hash (default parameters) of a random password nobody knows.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$x6fH8hS3hDq6mPq2fa9T8Q0b1dJ7t0o0r8cY9xYk0aE";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let phc = hash("correct horse".to_owned()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(!phc.contains("correct horse"));
        assert!(
            verify("correct horse".to_owned(), Some(phc.clone()))
                .await
                .unwrap()
        );
        assert!(!verify("wrong horse".to_owned(), Some(phc)).await.unwrap());
    }

    #[tokio::test]
    async fn an_unknown_user_never_verifies() {
        assert!(!verify("anything".to_owned(), None).await.unwrap());
    }
}
