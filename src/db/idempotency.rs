//! The `idempotency_keys` table: answers kept for retries of create-messages requests.

use rusqlite::{Connection, OptionalExtension, params};

use super::Result;
use crate::domain::Timestamp;

/// The kept answer for `user_id`'s `key` if it was stored after `not_before`: the
/// request's hash and the response body.
pub fn find_key(
    conn: &Connection,
    user_id: &str,
    key: &str,
    not_before: &Timestamp,
) -> Result<Option<([u8; 32], String)>> {
    let found: Option<(Vec<u8>, String)> = conn
        .prepare_cached(
            "SELECT request_hash, response FROM idempotency_keys \
             WHERE user_id = ?1 AND key = ?2 AND created_at > ?3",
        )?
        .query_row(params![user_id, key, not_before.as_str()], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    Ok(found.map(|(hash, response)| {
        let mut request_hash = [0u8; 32];
        if hash.len() == 32 {
            request_hash.copy_from_slice(&hash);
        }
        (request_hash, response)
    }))
}

/// Keeps `response` as the answer to `user_id`'s `key` (replacing an expired entry).
pub fn store_key(
    conn: &Connection,
    user_id: &str,
    key: &str,
    request_hash: &[u8; 32],
    response: &str,
    now: &Timestamp,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys (user_id, key, request_hash, response, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![user_id, key, &request_hash[..], response, now.as_str()])?;
    Ok(())
}

/// Deletes the answers stored at or before `before`; how many there were.
pub fn delete_expired_keys(conn: &Connection, before: &Timestamp) -> Result<usize> {
    Ok(conn
        .prepare_cached("DELETE FROM idempotency_keys WHERE created_at <= ?1")?
        .execute([before.as_str()])?)
}
