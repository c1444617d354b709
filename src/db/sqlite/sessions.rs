//! The `sessions` table. Rows hold the SHA-256 of a token, never the token.

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params};

use super::{Entity, Error, Result, SessionInfo, changes};
use crate::domain::{ChangeKind, SessionClaim, Timestamp, hex};

/// The user of the session whose token hashes to ?1, if it is still live at ?2.
const LIVE_SESSION_USER: &str =
    "SELECT user_id FROM sessions WHERE token_hash = ?1 AND expires_at > ?2";

/// Stores a session for `user_id`, valid until `expires_at`.
pub(super) fn insert_session(
    conn: &Connection,
    token_hash: &[u8; 32],
    user_id: &str,
    created_at: &Timestamp,
    expires_at: &Timestamp,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        &token_hash[..],
        user_id,
        created_at.as_str(),
        expires_at.as_str()
    ])?;
    Ok(())
}

/// The user of the session with this token hash, if it exists and has not expired at `now`.
pub(super) fn find_session_user(
    conn: &Connection,
    token_hash: &[u8; 32],
    now: &Timestamp,
) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(LIVE_SESSION_USER)?
        .query_row(params![&token_hash[..], now.as_str()], |row| row.get(0))
        .optional()?)
}

/// Checks that `claim`'s session is live at `now` and belongs to the claimed user:
/// [`Error::NotFound`]`(Session)` if it is unknown or expired, [`Error::WrongUser`] if it
/// is another user's.
pub(super) fn check_claim(conn: &Connection, claim: &SessionClaim, now: &Timestamp) -> Result<()> {
    let mut stmt = conn.prepare_cached(LIVE_SESSION_USER)?;
    let mut rows = stmt.query(params![&claim.token_hash[..], now.as_str()])?;
    match rows.next()? {
        Some(row) => check_claimed_user(row.get_ref(0)?, claim),
        None => Err(Error::NotFound(Entity::Session)),
    }
}

/// Checks that a live session's `user_id`, as read, is the user `claim` acts for:
/// [`Error::WrongUser`] if not. Compared without copying the stored id.
pub(super) fn check_claimed_user(user_id: ValueRef<'_>, claim: &SessionClaim) -> Result<()> {
    if matches!(user_id, ValueRef::Text(user) if user == claim.user_id.as_bytes()) {
        Ok(())
    } else {
        Err(Error::WrongUser)
    }
}

/// The user and expiry of the session whose token hashes to `token_hash`, if it is still
/// live at `now`.
pub(super) fn find_session(
    conn: &Connection,
    token_hash: &[u8; 32],
    now: &Timestamp,
) -> Result<Option<(String, Timestamp)>> {
    Ok(conn
        .prepare_cached(
            "SELECT user_id, expires_at FROM sessions WHERE token_hash = ?1 AND expires_at > ?2",
        )?
        .query_row(params![&token_hash[..], now.as_str()], |row| {
            Ok((row.get(0)?, Timestamp::from_stored(row.get(1)?)))
        })
        .optional()?)
}

/// Deletes the session with this token hash, and records its end in its user's change
/// feed; whether there was one.
pub(super) fn delete_session(conn: &Connection, token_hash: &[u8; 32]) -> Result<bool> {
    let user: Option<String> = conn
        .prepare_cached("DELETE FROM sessions WHERE token_hash = ?1 RETURNING user_id")?
        .query_row([&token_hash[..]], |row| row.get(0))
        .optional()?;
    match user {
        Some(user) => {
            record_end(conn, &user, token_hash)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Deletes every session of a user, recording each one's end; how many there were.
pub(super) fn delete_user_sessions(conn: &Connection, user_id: &str) -> Result<usize> {
    let hashes = conn
        .prepare_cached("DELETE FROM sessions WHERE user_id = ?1 RETURNING token_hash")?
        .query_map([user_id], |row| row.get::<_, Vec<u8>>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for hash in &hashes {
        record_end(conn, user_id, hash)?;
    }
    Ok(hashes.len())
}

/// Records the end of `user`'s session `token_hash`, so that its events streams end.
fn record_end(conn: &Connection, user: &str, token_hash: &[u8]) -> Result<()> {
    let kind = ChangeKind::SessionEnded;
    let hex = hex(token_hash);
    changes::record(conn, user, kind, None, None, Some(&hex), &Timestamp::now())?;
    Ok(())
}

/// Deletes the sessions that expired before `now`; how many there were.
pub(super) fn delete_expired_sessions(conn: &Connection, now: &Timestamp) -> Result<usize> {
    Ok(conn
        .prepare_cached("DELETE FROM sessions WHERE expires_at <= ?1")?
        .execute([now.as_str()])?)
}

/// The sessions of a user, newest first.
pub(super) fn list_sessions(conn: &Connection, user_id: &str) -> Result<Vec<SessionInfo>> {
    let mut stmt = conn.prepare_cached(
        "SELECT token_hash, created_at, expires_at FROM sessions WHERE user_id = ?1 \
         ORDER BY created_at DESC",
    )?;
    let sessions = stmt
        .query_map([user_id], |row| {
            let hash: Vec<u8> = row.get(0)?;
            Ok(SessionInfo {
                hash_prefix: hex(&hash[..hash.len().min(6)]),
                created_at: Timestamp::from_stored(row.get(1)?),
                expires_at: Timestamp::from_stored(row.get(2)?),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(sessions)
}

/// The token hashes of the sessions whose hash, in lower-case hex, starts with
/// `hex_prefix` (itself lower-case hex). Scans the table: only the admin command asks.
pub(super) fn find_sessions_by_hash_prefix(
    conn: &Connection,
    hex_prefix: &str,
) -> Result<Vec<[u8; 32]>> {
    let mut stmt = conn.prepare_cached(
        "SELECT token_hash FROM sessions \
         WHERE substr(lower(hex(token_hash)), 1, length(?1)) = ?1",
    )?;
    let hashes = stmt
        .query_map([hex_prefix], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(hashes)
}
