//! The SQLite side of [`Admin`](crate::db::Admin). It writes to the same file as a running
//! server; IMMEDIATE transactions and the busy timeout make the two take turns.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::{
    DeletedUser, Durability, Entity, Error, PrefixMatch, Result, SessionInfo, chats,
    open_for_writing, sessions, users,
};
use crate::db::Compacted;
use crate::domain::{Timestamp, User};

/// A read-write connection for one-off administrative changes.
pub(crate) struct Admin {
    conn: Connection,
}

impl Admin {
    /// Opens the database at `path` (creating it and applying the schema if needed).
    /// Admin writes are rare, so they are always fully durable.
    pub(in crate::db) fn open(path: &Path) -> Result<Admin> {
        Ok(Admin {
            conn: open_for_writing(path, Durability::Full)?,
        })
    }

    fn transaction<T>(&mut self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// Creates a user. `Conflict(User)` if the id or email is taken.
    pub(in crate::db) fn create_user(
        &mut self,
        id: &str,
        email: Option<&str>,
        password_hash: Option<&str>,
    ) -> Result<()> {
        self.transaction(|tx| users::insert_user(tx, id, email, password_hash, &Timestamp::now()))
    }

    /// Stores a session (by its token hash) for an existing user. `NotFound(User)` otherwise.
    pub(in crate::db) fn create_session(
        &mut self,
        user_id: &str,
        token_hash: &[u8; 32],
        expires_at: &Timestamp,
    ) -> Result<()> {
        self.transaction(|tx| {
            users::require_user(tx, user_id)?;
            sessions::insert_session(tx, token_hash, user_id, &Timestamp::now(), expires_at)
        })
    }

    /// Creates a chat for an existing user and returns its id. `NotFound(User)` otherwise.
    pub(in crate::db) fn create_chat(
        &mut self,
        owner: &str,
        name: &str,
        model: &str,
    ) -> Result<i64> {
        self.transaction(|tx| {
            users::require_user(tx, owner)?;
            Ok(chats::insert_chat(tx, owner, name, model, &Timestamp::now())?.id)
        })
    }
}

impl Admin {
    /// The sessions of a user, newest first. `NotFound(User)` for an unknown user.
    pub(in crate::db) fn list_sessions(&mut self, user_id: &str) -> Result<Vec<SessionInfo>> {
        self.transaction(|tx| {
            users::require_user(tx, user_id)?;
            sessions::list_sessions(tx, user_id)
        })
    }

    /// Deletes the session with this token hash; whether there was one.
    pub(in crate::db) fn revoke_session(&mut self, token_hash: &[u8; 32]) -> Result<bool> {
        self.transaction(|tx| sessions::delete_session(tx, token_hash))
    }

    /// Deletes every session of a user; how many there were.
    pub(in crate::db) fn revoke_all_sessions(&mut self, user_id: &str) -> Result<usize> {
        self.transaction(|tx| {
            users::require_user(tx, user_id)?;
            sessions::delete_user_sessions(tx, user_id)
        })
    }

    /// Revokes the one session whose token hash starts with `hex_prefix` (hex digits,
    /// either case, as `session list` shows them). Revokes nothing unless exactly one
    /// session matches: a prefix that fits two sessions says which to revoke no better
    /// than a typo.
    pub(in crate::db) fn revoke_session_by_prefix(
        &mut self,
        hex_prefix: &str,
    ) -> Result<PrefixMatch> {
        self.transaction(|tx| {
            let found = sessions::find_sessions_by_hash_prefix(tx, hex_prefix)?;
            match found.as_slice() {
                [] => Ok(PrefixMatch::None),
                [hash] => {
                    sessions::delete_session(tx, hash)?;
                    Ok(PrefixMatch::Revoked)
                }
                many => Ok(PrefixMatch::Ambiguous(many.len())),
            }
        })
    }

    /// The user with this id, if any.
    pub(in crate::db) fn find_user(&mut self, user_id: &str) -> Result<Option<User>> {
        users::find_user(&self.conn, user_id)
    }

    /// Every user, oldest first.
    pub(in crate::db) fn list_users(&mut self) -> Result<Vec<User>> {
        users::list_users(&self.conn)
    }

    /// Deletes a user with all their sessions, chats, messages and idempotency answers,
    /// in one transaction; what was deleted. `NotFound(User)` for an unknown user.
    pub(in crate::db) fn delete_user(&mut self, user_id: &str) -> Result<DeletedUser> {
        let (deleted, mut pending) = self.transaction(|tx| {
            users::delete_user(tx, user_id, &Timestamp::now())?.ok_or(Error::NotFound(Entity::User))
        })?;
        // The rest of a large account, a slice per transaction, so that a server on the
        // same file goes on writing in between.
        while pending {
            pending = self.transaction(chats::purge_deleted_chats)?;
        }
        Ok(deleted)
    }

    /// Sets a user's password hash and revokes all of the user's sessions, in one
    /// transaction; how many sessions were revoked. `NotFound(User)` for an unknown user.
    pub(in crate::db) fn set_password(
        &mut self,
        user_id: &str,
        password_hash: &str,
    ) -> Result<usize> {
        self.transaction(|tx| {
            if !users::update_password_hash(tx, user_id, password_hash)? {
                return Err(Error::NotFound(Entity::User));
            }
            sessions::delete_user_sessions(tx, user_id)
        })
    }

    /// Merges the search index into one segment and rewrites the database without its
    /// free pages (`VACUUM`), switching it to
    /// incremental auto-vacuum on the way, so that from then on the server gives freed
    /// pages back by itself; the file's size before and after.
    pub(in crate::db) fn compact(&mut self) -> Result<Compacted> {
        let size = |conn: &Connection| -> Result<u64> {
            let pages: i64 = conn.pragma_query_value(None, "page_count", |row| row.get(0))?;
            let page: i64 = conn.pragma_query_value(None, "page_size", |row| row.get(0))?;
            Ok(pages.saturating_mul(page).unsigned_abs())
        };
        let before = size(&self.conn)?;
        // Merged into one segment, the search index drops the words of deleted
        // messages for good (until then FTS5 only marks them deleted).
        self.conn
            .execute_batch("INSERT INTO message_words (message_words) VALUES ('optimize')")?;
        self.conn
            .pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        self.conn.execute_batch("VACUUM")?;
        // The rewrite went through the WAL: fold it back into the file and empty it.
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(Compacted {
            before,
            after: size(&self.conn)?,
        })
    }

    /// Runs SQLite's full `integrity_check` and `foreign_key_check`; returns every
    /// problem found (none: the database is sound).
    pub(in crate::db) fn check(&mut self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
        let mut rows = stmt.query([])?;
        // The check can itself stop on damage it cannot step over (checking the search
        // index's tables, among others): one more problem, after the ones it listed.
        loop {
            match rows.next() {
                Ok(Some(row)) => {
                    let line: String = row.get(0)?;
                    if line != "ok" {
                        problems.push(line);
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    problems.push(format!("the integrity check stopped: {err}"));
                    break;
                }
            }
        }
        drop(rows);
        drop(stmt);
        // A damaged file can make the foreign-key check itself fail; that is one more
        // problem to report, not a reason to lose the ones already found.
        match self.foreign_key_problems() {
            Ok(broken_links) => problems.extend(broken_links),
            Err(err) => problems.push(format!("the foreign-key check failed: {err}")),
        }
        Ok(problems)
    }

    fn foreign_key_problems(&self) -> Result<Vec<String>> {
        Ok(self
            .conn
            .prepare("PRAGMA foreign_key_check")?
            .query_map([], |row| {
                Ok(format!(
                    "row {} of {} refers to a missing row of {}",
                    row.get::<_, Option<i64>>(1)?.unwrap_or_default(),
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(2)?
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Whether `path` names the database file or one of its companion files, however
    /// it is spelled.
    fn is_own_file(&self, path: &Path) -> bool {
        let Some(database) = self.conn.path().and_then(|p| std::fs::canonicalize(p).ok()) else {
            return false;
        };
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return false;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let Ok(dir) = std::fs::canonicalize(dir) else {
            return false;
        };
        let target = dir.join(name);
        ["", "-wal", "-shm", "-journal"].iter().any(|suffix| {
            let mut own = database.clone().into_os_string();
            own.push(suffix);
            target == Path::new(&own)
        })
    }

    /// Writes a consistent copy of the database to `dest` (creating its folder) while
    /// other connections keep writing: `VACUUM INTO` a temporary file beside `dest` (one read transaction, so
    /// one point in time), sync it, then rename it into place.
    pub(in crate::db) fn backup(&mut self, dest: &Path) -> Result<()> {
        let file_name = dest
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "backup".to_owned());
        let tmp = dest.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
        let io = |source| Error::Backup {
            path: dest.to_path_buf(),
            source,
        };
        if self.is_own_file(dest) {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "that is the live database (or its -wal / -shm file)",
            )));
        }
        if let Some(dir) = dest.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            // A backup holds everything the database does: only its owner may read it.
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        if tmp.exists() {
            std::fs::remove_file(&tmp).map_err(io)?;
        }
        // SQLite would create the copy 0644; `VACUUM INTO` fills an empty file as it
        // finds it, so the copy starts out 0600 (and the rename keeps that).
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        let written = self
            .conn
            .execute("VACUUM INTO ?1", [tmp.to_string_lossy()])
            .map_err(Error::from)
            .and_then(|_| {
                std::fs::File::open(&tmp)
                    .and_then(|file| file.sync_all())
                    .and_then(|()| std::fs::rename(&tmp, dest))
                    .map_err(io)
            });
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        // Make the rename itself durable.
        if let Some(dir) = dest.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|dir| dir.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }
}
