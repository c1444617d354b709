//! The `users` table.

use rusqlite::{Connection, OptionalExtension, params};

use super::{DeletedUser, Entity, Error, Result, Taken, chats};
use crate::domain::{Timestamp, User};

/// The condition, on a row of `users`, that the user is not being deleted (see
/// [`delete_user`]): every lookup of a user asks it.
macro_rules! live {
    () => {
        "NOT EXISTS (SELECT 1 FROM users_deleted WHERE users_deleted.id = users.id)"
    };
}

/// Inserts a user. [`Error::Conflict`] naming the value taken if the id or the email
/// is; any other constraint the row breaks is a failure, not a conflict.
pub(super) fn insert_user(
    conn: &Connection,
    id: &str,
    email: Option<&str>,
    password_hash: Option<&str>,
    now: &Timestamp,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO users (id, primary_email, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![id, email, password_hash, now.as_str()])
    .map_err(|err| match taken(&err) {
        Some(taken) => Error::Conflict(taken),
        None => Error::from(err),
    })?;
    Ok(())
}

/// Which unique column of `users` a failed insert found taken, if that is why it failed.
/// SQLite names the column only in the message ("UNIQUE constraint failed:
/// users.primary_email"); the extended code tells a uniqueness failure from a CHECK,
/// NOT NULL or foreign-key one.
fn taken(err: &rusqlite::Error) -> Option<Taken> {
    let rusqlite::Error::SqliteFailure(failure, Some(message)) = err else {
        return None;
    };
    let unique = [
        rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE,
        rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY,
    ]
    .contains(&failure.extended_code);
    match message.rsplit(": ").next() {
        Some("users.id") if unique => Some(Taken::UserId),
        Some("users.primary_email") if unique => Some(Taken::UserEmail),
        _ => None,
    }
}

/// Adds `messages` stored messages holding `bytes` bytes of text to `id`'s storage
/// counts. Every insert of messages calls this once per batch; deletes are counted by
/// the `chat_messages_uncount` trigger (see `schema.sql`).
pub(super) fn add_stored(conn: &Connection, id: &str, messages: i64, bytes: i64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE users SET stored_messages = stored_messages + ?2, \
         stored_bytes = stored_bytes + ?3 WHERE id = ?1",
    )?
    .execute(params![id, messages, bytes])?;
    Ok(())
}

/// How many messages `id` keeps, and how many bytes of text they hold.
pub(super) fn find_stored(conn: &Connection, id: &str) -> Result<(i64, i64)> {
    Ok(conn
        .prepare_cached("SELECT stored_messages, stored_bytes FROM users WHERE id = ?1")?
        .query_row([id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?
        .unwrap_or_default())
}

/// Whether a user with this id exists.
pub(super) fn user_exists(conn: &Connection, id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(concat!("SELECT 1 FROM users WHERE id = ?1 AND ", live!()))?
        .query_row([id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Fails with [`Error::NotFound`] unless the user exists.
pub(super) fn require_user(conn: &Connection, id: &str) -> Result<()> {
    if user_exists(conn, id)? {
        Ok(())
    } else {
        Err(Error::NotFound(Entity::User))
    }
}

fn user_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        primary_email: row.get(1)?,
        created_at: Timestamp::from_stored(row.get(2)?),
    })
}

/// The user with this id.
pub(super) fn find_user(conn: &Connection, id: &str) -> Result<Option<User>> {
    Ok(conn
        .prepare_cached(concat!(
            "SELECT id, primary_email, created_at FROM users WHERE id = ?1 AND ",
            live!()
        ))?
        .query_row([id], user_from_row)
        .optional()?)
}

/// The user with this (already lower-cased) email, and their password hash if they have one.
pub(super) fn find_user_by_email(
    conn: &Connection,
    email: &str,
) -> Result<Option<(User, Option<String>)>> {
    Ok(conn
        .prepare_cached(
            "SELECT id, primary_email, created_at, password_hash FROM users WHERE primary_email = ?1",
        )?
        .query_row([email], |row| Ok((user_from_row(row)?, row.get(3)?)))
        .optional()?)
}

/// The user with this id, and their password hash if they have one.
pub(super) fn find_user_with_password(
    conn: &Connection,
    id: &str,
) -> Result<Option<(User, Option<String>)>> {
    Ok(conn
        .prepare_cached(concat!(
            "SELECT id, primary_email, created_at, password_hash FROM users WHERE id = ?1 AND ",
            live!()
        ))?
        .query_row([id], |row| Ok((user_from_row(row)?, row.get(3)?)))
        .optional()?)
}

/// Every user, oldest first (ties by id).
pub(super) fn list_users(conn: &Connection) -> Result<Vec<User>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT id, primary_email, created_at FROM users WHERE ",
        live!(),
        " ORDER BY created_at, id"
    ))?;
    let users = stmt
        .query_map([], user_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(users)
}

/// Replaces the user's password hash; whether the user exists.
pub(super) fn update_password_hash(
    conn: &Connection,
    id: &str,
    password_hash: &str,
) -> Result<bool> {
    Ok(conn
        .prepare_cached(concat!(
            "UPDATE users SET password_hash = ?2 WHERE id = ?1 AND ",
            live!()
        ))?
        .execute(params![id, password_hash])?
        > 0)
}

/// Deletes a user and everything of theirs; `None` if there is no such user (or one
/// already being deleted). Their sessions, idempotency answers and changes go at once,
/// their email and password are cleared, their chats are marked deleted and the user is
/// listed in `users_deleted`, so that every query treats them as gone; then as many of
/// their messages as one purge slice allows are purged, and the user's row too if that
/// was all. Whether the rest is left for [`chats::purge_deleted_chats`], which deletes
/// the row once the chats are gone. Run it in one transaction.
pub(super) fn delete_user(
    conn: &Connection,
    id: &str,
    now: &Timestamp,
) -> Result<Option<(DeletedUser, bool)>> {
    if !user_exists(conn, id)? {
        return Ok(None);
    }
    let delete = |sql: &str| -> Result<usize> { Ok(conn.prepare_cached(sql)?.execute([id])?) };
    let (messages, _) = find_stored(conn, id)?;
    let deleted = DeletedUser {
        messages: usize::try_from(messages).unwrap_or_default(),
        chats: conn
            .prepare_cached("SELECT count(*) FROM chat_conversations WHERE neptun_user_id = ?1")?
            .query_row([id], |row| row.get::<_, i64>(0))?
            .try_into()
            .unwrap_or_default(),
        idempotency_keys: delete("DELETE FROM idempotency_keys WHERE user_id = ?1")?,
        sessions: delete("DELETE FROM sessions WHERE user_id = ?1")?,
    };
    delete("DELETE FROM changes WHERE user_id = ?1")?;
    conn.prepare_cached(
        "UPDATE chat_conversations SET deleted_at = ?2 \
         WHERE neptun_user_id = ?1 AND deleted_at IS NULL",
    )?
    .execute(params![id, now.as_str()])?;
    delete("UPDATE users SET primary_email = NULL, password_hash = NULL WHERE id = ?1")?;
    delete("INSERT INTO users_deleted (id) VALUES (?1)")?;
    let purge_pending = chats::purge_user_chats(conn, id)?;
    if !purge_pending {
        delete("DELETE FROM users WHERE id = ?1")?;
    }
    Ok(Some((deleted, purge_pending)))
}

/// Deletes the rows of users being deleted whose chats are all purged; how many.
pub(super) fn delete_purged_users(conn: &Connection) -> Result<usize> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM users WHERE id IN (SELECT id FROM users_deleted) \
             AND NOT EXISTS (SELECT 1 FROM chat_conversations WHERE neptun_user_id = users.id)",
        )?
        .execute([])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::db::sqlite::schema::migrate(&mut conn).unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        insert_user(
            &conn,
            "ada",
            Some("ada@example.org"),
            None,
            &Timestamp::now(),
        )
        .unwrap();
        conn
    }

    #[test]
    fn a_taken_id_or_email_is_a_conflict_that_names_it() {
        let conn = database();
        let now = Timestamp::now();
        let cases = [
            ("ada", Some("other@example.org"), Taken::UserId),
            ("bob", Some("ada@example.org"), Taken::UserEmail),
        ];
        for (id, email, expected) in cases {
            let err = insert_user(&conn, id, email, None, &now).unwrap_err();
            assert!(
                matches!(err, Error::Conflict(taken) if taken == expected),
                "{id} {email:?}: {err:?}"
            );
        }
    }

    #[test]
    fn other_constraint_failures_are_failures_not_conflicts() {
        let conn = database();
        conn.execute_batch(
            "CREATE TABLE probe (v TEXT NOT NULL CHECK (v <> 'no'), \
                                 u TEXT REFERENCES users (id));",
        )
        .unwrap();
        for sql in [
            "INSERT INTO probe (v) VALUES ('no')",
            "INSERT INTO probe (v) VALUES (NULL)",
            "INSERT INTO probe (v, u) VALUES ('yes', 'nobody')",
        ] {
            let err = conn.execute(sql, []).unwrap_err();
            assert_eq!(taken(&err), None, "{sql}: {err}");
        }
        // The users table itself: created_at is NOT NULL.
        let err = conn
            .execute(
                "INSERT INTO users (id, created_at) VALUES ('eve', NULL)",
                [],
            )
            .unwrap_err();
        assert_eq!(taken(&err), None, "{err}");
    }
}
