//! [`copy_database`]: moves a whole database into an empty one, SQLite or PostgreSQL either way
//! round (or into another database of the same backend), keeping every id, timestamp,
//! password hash, session and idempotency answer, then checks the copy against what was
//! read.
//!
//! # Design
//! This module is the backend-neutral driver; each backend reads and writes its own
//! rows (`sqlite/copy.rs`, `postgres/copy.rs`) behind [`Side`], in the row types below.
//!
//! - **One snapshot.** The source is read in one read transaction (PostgreSQL:
//!   `REPEATABLE READ READ ONLY`), so a server that keeps writing to it meanwhile does
//!   not tear the copy; what it writes after the snapshot is not copied.
//! - **One transaction.** Everything is written to the target in one write transaction
//!   that first checks the target is empty, so a failure at any point leaves it as it
//!   was (a new SQLite file is removed again), and a server started on it meanwhile waits for the copy (SQLite: `BEGIN
//!   IMMEDIATE`; PostgreSQL: the tables locked against writes).
//! - **Constant memory.** Every table is read in chunks of [`CHUNK`] rows, by key
//!   (keyset paging, which walks an index), and each chunk is written before the next
//!   is read. Messages are read by chat, then id (the `(chat, id)` index both backends
//!   have), so each chat's checksum is finished as soon as its last message has passed;
//!   only one 48-byte digest per chat is kept for the check.
//! - **Ids.** Ids are copied as they are; afterwards the target's id sequences are set
//!   past both the largest copied id and the source's own high-water mark, so new rows
//!   get fresh ids and an id deleted in the source is never handed out again.
//! - **The check.** After the commit, the target is read back in a snapshot of its own
//!   the same way: the row count of every table, and per chat a SHA-256 over every
//!   message's id, author, actor, creation time and text in id order, must equal what
//!   was read from the source.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::{Error, Location, Result, postgres, sqlite};
use crate::domain::Timestamp;

/// Rows per chunk: big enough that a round trip per chunk costs little, small enough
/// that a chunk of long messages stays a few megabytes.
pub(super) const CHUNK: usize = 2000;

/// How many rows each table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableCounts {
    /// Users.
    pub users: u64,
    /// Sessions (live or expired).
    pub sessions: u64,
    /// Chats.
    pub chats: u64,
    /// Messages.
    pub messages: u64,
    /// Kept idempotency answers.
    pub idempotency_keys: u64,
}

impl TableCounts {
    /// Each table's name and count, in the order they are copied.
    pub fn tables(&self) -> [(&'static str, u64); 5] {
        [
            ("users", self.users),
            ("sessions", self.sessions),
            ("chats", self.chats),
            ("messages", self.messages),
            ("idempotency_keys", self.idempotency_keys),
        ]
    }
}

/// What [`copy_database`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// The rows read from the source's snapshot and written to the target.
    pub counts: TableCounts,
    /// How many chats' message checksums were compared.
    pub checked_chats: usize,
    /// Every difference the check found between the committed target and what was read
    /// from the source (none: the copy is exact).
    pub problems: Vec<String>,
}

/// A user, with their password hash and storage counts.
pub(super) struct UserRow {
    pub(super) id: String,
    pub(super) primary_email: Option<String>,
    pub(super) password_hash: Option<String>,
    pub(super) created_at: Timestamp,
    pub(super) stored_messages: i64,
    pub(super) stored_bytes: i64,
    /// The number of their newest change. The change feed itself is not copied: a
    /// client resuming with an older event id gets a `reset`, then carries on, with the
    /// numbers going on from here.
    pub(super) last_change: i64,
}

/// A session, by its token's hash.
pub(super) struct SessionRow {
    pub(super) token_hash: Vec<u8>,
    pub(super) user_id: String,
    pub(super) created_at: Timestamp,
    pub(super) expires_at: Timestamp,
}

/// A chat.
pub(super) struct ChatRow {
    pub(super) id: i64,
    pub(super) user_id: String,
    pub(super) name: String,
    pub(super) model: String,
    pub(super) created_at: Timestamp,
    pub(super) updated_at: Timestamp,
}

/// A message.
pub(super) struct MessageRow {
    pub(super) id: i64,
    pub(super) chat_id: i64,
    pub(super) user_id: String,
    pub(super) text: String,
    pub(super) actor: String,
    pub(super) created_at: Timestamp,
}

/// A kept idempotency answer.
pub(super) struct KeyRow {
    pub(super) user_id: String,
    pub(super) key: String,
    pub(super) request_hash: Vec<u8>,
    pub(super) first_message_id: i64,
    pub(super) last_message_id: i64,
    pub(super) message_count: i64,
    pub(super) created_at: Timestamp,
}

/// The least id a new chat and a new message may get: past every id in use and every
/// id ever handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NextIds {
    pub(super) chats: i64,
    pub(super) messages: i64,
}

/// One database as a copy sees it, on one connection of its own. A read method returns
/// the next at most `limit` rows in key order after the row `after` (from the start
/// when `None`): users by id, sessions by token hash, chats by id, messages by chat and
/// id, idempotency answers by user and key. Chats that are deleted but not yet purged,
/// and their messages, are not there: they are gone for their users already.
pub(super) trait Side {
    /// Begins the read transaction whose snapshot every read until [`Side::end`] sees.
    fn begin_snapshot(&mut self) -> Result<()>;
    /// Begins the write transaction, which keeps every other writer out until it ends.
    fn begin_write(&mut self) -> Result<()>;
    /// Commits the write transaction.
    fn commit(&mut self) -> Result<()>;
    /// Ends the open transaction without keeping anything.
    fn end(&mut self) -> Result<()>;

    /// How many rows each table holds.
    fn counts(&mut self) -> Result<TableCounts>;
    /// The least ids new rows may get.
    fn next_ids(&mut self) -> Result<NextIds>;
    /// Users, by id.
    fn users(&mut self, after: Option<&UserRow>, limit: usize) -> Result<Vec<UserRow>>;
    /// Sessions, by token hash.
    fn sessions(&mut self, after: Option<&SessionRow>, limit: usize) -> Result<Vec<SessionRow>>;
    /// Chats, by id.
    fn chats(&mut self, after: Option<&ChatRow>, limit: usize) -> Result<Vec<ChatRow>>;
    /// Messages, by chat, then id.
    fn messages(&mut self, after: Option<&MessageRow>, limit: usize) -> Result<Vec<MessageRow>>;
    /// Idempotency answers, by user and key.
    fn keys(&mut self, after: Option<&KeyRow>, limit: usize) -> Result<Vec<KeyRow>>;

    /// Inserts users as they are.
    fn insert_users(&mut self, rows: &[UserRow]) -> Result<()>;
    /// Inserts sessions as they are.
    fn insert_sessions(&mut self, rows: &[SessionRow]) -> Result<()>;
    /// Inserts chats, with their ids.
    fn insert_chats(&mut self, rows: &[ChatRow]) -> Result<()>;
    /// Inserts messages, with their ids.
    fn insert_messages(&mut self, rows: &[MessageRow]) -> Result<()>;
    /// Inserts idempotency answers as they are.
    fn insert_keys(&mut self, rows: &[KeyRow]) -> Result<()>;
    /// Makes new rows get ids from `next` on (or past the largest id stored, if higher).
    fn set_next_ids(&mut self, next: NextIds) -> Result<()>;
}

/// Opens `location` for a copy: an SQLite file must exist when `must_exist`; a new one,
/// or an empty PostgreSQL database, gets the schema.
fn open(location: &Location, must_exist: bool) -> Result<Box<dyn Side>> {
    match location {
        Location::Sqlite(path) => {
            if must_exist && !path.is_file() {
                return Err(Error::Unusable {
                    what: format!("copy from {}", path.display()),
                    reason: "there is no database file there".to_owned(),
                });
            }
            Ok(Box::new(sqlite::copy::Side::open(path)?))
        }
        Location::Postgres(url) => Ok(Box::new(postgres::copy::Side::open(url)?)),
    }
}

/// Copies the whole database at `from` into the empty database at `to` (set up if new),
/// in one transaction on `to`, then checks the copy (see the module docs). `progress`
/// gets the messages copied so far and the messages to copy, after every chunk.
///
/// Fails, writing nothing, when `to` already holds a user, chat or message. A check
/// that finds a difference is not an error here: it is in [`Copied::problems`].
pub fn copy_database(
    from: &Location,
    to: &Location,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Copied> {
    let mut source = open(from, true)?;
    // A new SQLite file that the copy did not fill is removed again, so that a failed
    // copy leaves no empty database behind to be mistaken for a copy.
    let new_file = to
        .sqlite_path()
        .filter(|path| !path.exists())
        .map(Path::to_path_buf);
    let filled = fill(&mut *source, to, progress);
    let ended = source.end();
    let (mut target, counts, digests) = match filled {
        Ok(filled) => filled,
        Err(err) => {
            if let Some(path) = new_file {
                remove_database_file(&path);
            }
            return Err(err);
        }
    };
    ended?;

    target.begin_snapshot()?;
    let landed = target.counts()?;
    let mut landed_digests = ChatDigests::default();
    stream(
        |after| target.messages(after, CHUNK),
        |rows| {
            rows.iter().for_each(|row| landed_digests.add(row));
            Ok(())
        },
    )?;
    target.end()?;

    let mut problems = compare_counts(&counts, &landed);
    let digests = digests.finish();
    problems.extend(compare_digests(&digests, &landed_digests.finish()));
    Ok(Copied {
        counts,
        checked_chats: digests.len(),
        problems,
    })
}

/// Opens `to`, copies the source into it in one transaction and commits; the target,
/// what was copied and the source's chat digests. On failure the target's transaction is
/// rolled back and its connection closed.
fn fill(
    source: &mut dyn Side,
    to: &Location,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Box<dyn Side>, TableCounts, ChatDigests)> {
    let mut target = open(to, false)?;
    source.begin_snapshot()?;
    let total = source.counts()?;
    target.begin_write()?;
    match copy_rows(source, &mut *target, to, total.messages, progress).and_then(|written| {
        target.commit()?;
        Ok(written)
    }) {
        Ok((counts, digests)) => Ok((target, counts, digests)),
        Err(err) => {
            // Keeps the first error: a failed rollback only means the connection is gone,
            // which rolls back too.
            let _ = target.end();
            Err(err)
        }
    }
}

/// Removes the SQLite database at `path` with its `-wal` and `-shm` files, as far as
/// they exist.
fn remove_database_file(path: &Path) {
    let mut paths = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut beside = path.as_os_str().to_owned();
        beside.push(suffix);
        paths.push(beside.into());
    }
    for path in paths {
        if let Err(err) = std::fs::remove_file(&path) {
            if err.kind() != std::io::ErrorKind::NotFound {
                log::warn!(
                    "cannot remove {} after the failed copy: {err}",
                    path.display()
                );
            }
        }
    }
}

/// Copies every table in the order the foreign keys need, inside the open transactions,
/// and sets the target's id sequences. Returns what was copied and the source's chat
/// digests.
fn copy_rows(
    source: &mut dyn Side,
    target: &mut dyn Side,
    to: &Location,
    total_messages: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(TableCounts, ChatDigests)> {
    let held = target.counts()?;
    if held.users > 0 || held.chats > 0 || held.messages > 0 {
        return Err(Error::Unusable {
            what: format!("copy into {to}"),
            reason: format!(
                "it is not empty: it holds {} users, {} chats and {} messages; copy into a \
                 new SQLite file or an empty PostgreSQL database",
                held.users, held.chats, held.messages
            ),
        });
    }
    let mut counts = TableCounts {
        users: stream(
            |after| source.users(after, CHUNK),
            |rows| target.insert_users(rows),
        )?,
        sessions: stream(
            |after| source.sessions(after, CHUNK),
            |rows| target.insert_sessions(rows),
        )?,
        chats: stream(
            |after| source.chats(after, CHUNK),
            |rows| target.insert_chats(rows),
        )?,
        ..TableCounts::default()
    };
    let mut digests = ChatDigests::default();
    let mut copied = 0;
    counts.messages = stream(
        |after| source.messages(after, CHUNK),
        |rows| {
            target.insert_messages(rows)?;
            rows.iter().for_each(|row| digests.add(row));
            copied += rows.len() as u64;
            progress(copied, total_messages);
            Ok(())
        },
    )?;
    counts.idempotency_keys = stream(
        |after| source.keys(after, CHUNK),
        |rows| target.insert_keys(rows),
    )?;
    target.set_next_ids(source.next_ids()?)?;
    Ok((counts, digests))
}

/// Reads chunks with `read` (given the last row of the chunk before) until one comes
/// back short, handing each to `each`; how many rows there were.
fn stream<R>(
    mut read: impl FnMut(Option<&R>) -> Result<Vec<R>>,
    mut each: impl FnMut(&[R]) -> Result<()>,
) -> Result<u64> {
    let mut rows = 0;
    let mut last: Option<R> = None;
    loop {
        let chunk = read(last.as_ref())?;
        if chunk.is_empty() {
            return Ok(rows);
        }
        each(&chunk)?;
        rows += chunk.len() as u64;
        if chunk.len() < CHUNK {
            return Ok(rows);
        }
        last = chunk.into_iter().next_back();
    }
}

/// One chat's messages, summed up.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChatDigest {
    chat_id: i64,
    messages: u64,
    sha256: [u8; 32],
}

/// The digests of chats whose messages come in chat, then id, order.
#[derive(Default)]
struct ChatDigests {
    done: Vec<ChatDigest>,
    current: Option<(i64, u64, Sha256)>,
}

impl ChatDigests {
    /// Adds the next message. Every field goes in with its length first, so that no two
    /// different messages can hash alike by moving bytes from one field to the next.
    fn add(&mut self, row: &MessageRow) {
        if self
            .current
            .as_ref()
            .is_none_or(|(id, ..)| *id != row.chat_id)
        {
            self.close();
            self.current = Some((row.chat_id, 0, Sha256::new()));
        }
        if let Some((_, messages, hasher)) = &mut self.current {
            *messages += 1;
            hasher.update(row.id.to_be_bytes());
            for field in [
                row.user_id.as_str(),
                row.actor.as_str(),
                row.created_at.as_str(),
                row.text.as_str(),
            ] {
                hasher.update((field.len() as u64).to_be_bytes());
                hasher.update(field.as_bytes());
            }
        }
    }

    fn close(&mut self) {
        if let Some((chat_id, messages, hasher)) = self.current.take() {
            self.done.push(ChatDigest {
                chat_id,
                messages,
                sha256: hasher.finalize().into(),
            });
        }
    }

    /// The digests, by chat id.
    fn finish(mut self) -> Vec<ChatDigest> {
        self.close();
        self.done
    }
}

/// A problem for every table whose count differs between the two sides.
fn compare_counts(source: &TableCounts, target: &TableCounts) -> Vec<String> {
    source
        .tables()
        .into_iter()
        .zip(target.tables())
        .filter(|((_, read), (_, landed))| read != landed)
        .map(|((table, read), (_, landed))| {
            format!("{table}: {read} rows read from the source, but {landed} in the copy")
        })
        .collect()
}

/// A problem, naming the chat, for every chat whose messages differ between the two
/// sides (both lists by chat id).
fn compare_digests(source: &[ChatDigest], target: &[ChatDigest]) -> Vec<String> {
    let mut problems = Vec::new();
    let (mut read, mut landed) = (source.iter().peekable(), target.iter().peekable());
    loop {
        match (read.peek(), landed.peek()) {
            (None, None) => return problems,
            (Some(a), Some(b)) if a.chat_id == b.chat_id => {
                if a.messages != b.messages {
                    problems.push(format!(
                        "chat {}: {} messages read from the source, but {} in the copy",
                        a.chat_id, a.messages, b.messages
                    ));
                } else if a.sha256 != b.sha256 {
                    problems.push(format!(
                        "chat {}: the messages in the copy differ from the source's \
                         (checksum of ids, authors, actors, times and texts)",
                        a.chat_id
                    ));
                }
                read.next();
                landed.next();
            }
            (Some(a), b) if b.is_none_or(|b| a.chat_id < b.chat_id) => {
                problems.push(format!(
                    "chat {}: {} messages read from the source, but none in the copy",
                    a.chat_id, a.messages
                ));
                read.next();
            }
            (_, b) => {
                // (None, None) and (Some, None) are matched above.
                let Some(b) = b else { return problems };
                problems.push(format!(
                    "chat {}: {} messages in the copy, but none read from the source",
                    b.chat_id, b.messages
                ));
                landed.next();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(chat_id: i64, id: i64, text: &str) -> MessageRow {
        MessageRow {
            id,
            chat_id,
            user_id: "u".to_owned(),
            text: text.to_owned(),
            actor: "user".to_owned(),
            created_at: Timestamp::from_stored("2026-01-02T03:04:05.006Z".to_owned()),
        }
    }

    fn digests(rows: &[MessageRow]) -> Vec<ChatDigest> {
        let mut digests = ChatDigests::default();
        rows.iter().for_each(|row| digests.add(row));
        digests.finish()
    }

    #[test]
    fn equal_messages_give_equal_digests_and_no_problems() {
        let rows = [message(1, 1, "a"), message(1, 2, "b"), message(2, 3, "c")];
        let (a, b) = (digests(&rows), digests(&rows));
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].messages, 2);
        assert!(compare_digests(&a, &b).is_empty());
    }

    #[test]
    fn a_changed_text_a_missing_message_or_a_missing_chat_is_named_by_its_chat() {
        let source = digests(&[
            message(1, 1, "a"),
            message(2, 2, "b"),
            message(3, 3, "c"),
            message(3, 4, "d"),
        ]);
        let cases = [
            (
                vec![
                    message(1, 1, "a"),
                    message(2, 2, "B"),
                    message(3, 3, "c"),
                    message(3, 4, "d"),
                ],
                "chat 2: the messages in the copy differ",
            ),
            (
                vec![message(1, 1, "a"), message(2, 2, "b"), message(3, 3, "c")],
                "chat 3: 2 messages read from the source, but 1 in the copy",
            ),
            (
                vec![message(2, 2, "b"), message(3, 3, "c"), message(3, 4, "d")],
                "chat 1: 1 messages read from the source, but none in the copy",
            ),
            (
                vec![
                    message(1, 1, "a"),
                    message(2, 2, "b"),
                    message(3, 3, "c"),
                    message(3, 4, "d"),
                    message(4, 5, "e"),
                ],
                "chat 4: 1 messages in the copy, but none read from the source",
            ),
        ];
        for (landed, expected) in cases {
            let problems = compare_digests(&source, &digests(&landed));
            assert_eq!(problems.len(), 1, "{expected}: {problems:?}");
            assert!(
                problems[0].starts_with(expected),
                "{expected}: {problems:?}"
            );
        }
    }

    #[test]
    fn moving_bytes_between_fields_changes_the_digest() {
        let mut moved = message(1, 1, "xa");
        moved.user_id = "u".to_owned();
        let mut other = message(1, 1, "a");
        other.user_id = "ux".to_owned();
        assert_ne!(digests(&[moved])[0].sha256, digests(&[other])[0].sha256);
    }

    #[test]
    fn only_tables_whose_counts_differ_are_problems() {
        let read = TableCounts {
            users: 2,
            messages: 5,
            ..TableCounts::default()
        };
        let landed = TableCounts {
            messages: 4,
            ..read
        };
        assert_eq!(
            compare_counts(&read, &landed),
            ["messages: 5 rows read from the source, but 4 in the copy"]
        );
    }
}
