//! The `idempotency_keys` table: what a create-messages request sent with an
//! `Idempotency-Key` stored, so that a retry gets the same answer. A key keeps only the
//! request's hash and the ids of the stored messages (a few dozen bytes), never a copy
//! of the answer; the answer is rendered again from the messages.

use rusqlite::{Connection, OptionalExtension, params};

use super::Result;
use crate::domain::Timestamp;

/// What a key's first request stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KeptKey {
    /// The SHA-256 of the request.
    pub request_hash: [u8; 32],
    /// The first stored message's id.
    pub first_message_id: i64,
    /// The last stored message's id.
    pub last_message_id: i64,
    /// How many messages were stored.
    pub message_count: i64,
}

/// What `user_id`'s `key` stored, if it was stored after `not_before`. A stored hash
/// that is not 32 bytes long is a damaged row: an error, never a hash of zeros that
/// would call the retry a different request.
pub(super) fn find_key(
    conn: &Connection,
    user_id: &str,
    key: &str,
    not_before: &Timestamp,
) -> Result<Option<KeptKey>> {
    Ok(conn
        .prepare_cached(
            "SELECT request_hash, first_message_id, last_message_id, message_count \
             FROM idempotency_keys WHERE user_id = ?1 AND key = ?2 AND created_at > ?3",
        )?
        .query_row(params![user_id, key, not_before.as_str()], |row| {
            Ok(KeptKey {
                request_hash: row.get(0)?,
                first_message_id: row.get(1)?,
                last_message_id: row.get(2)?,
                message_count: row.get(3)?,
            })
        })
        .optional()?)
}

/// Keeps what `user_id`'s `key` stored (replacing an expired entry).
pub(super) fn store_key(
    conn: &Connection,
    user_id: &str,
    key: &str,
    kept: &KeptKey,
    now: &Timestamp,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys \
         (user_id, key, request_hash, first_message_id, last_message_id, message_count, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        user_id,
        key,
        &kept.request_hash[..],
        kept.first_message_id,
        kept.last_message_id,
        kept.message_count,
        now.as_str()
    ])?;
    Ok(())
}

/// Deletes the keys stored at or before `before`; how many there were.
pub(super) fn delete_expired_keys(conn: &Connection, before: &Timestamp) -> Result<usize> {
    Ok(conn
        .prepare_cached("DELETE FROM idempotency_keys WHERE created_at <= ?1")?
        .execute([before.as_str()])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_hash_of_the_wrong_length_is_an_error_not_zeros() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::db::sqlite::schema::migrate(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO users (id, created_at) VALUES ('ada', 'now');
             INSERT INTO idempotency_keys VALUES ('ada', 'k', zeroblob(16), 1, 1, 1, 'now');",
        )
        .unwrap();

        let found = find_key(&conn, "ada", "k", &Timestamp::from_stored(String::new()));

        let err = found.unwrap_err();
        assert!(matches!(err, crate::db::Error::Failed { .. }), "{err:?}");
    }
}
