//! The SQLite backend: one database file, the embedded default. This module and its
//! children own every SQLite statement of the program.
//!
//! # Design
//! Reads take a connection from an r2d2 pool on a blocking thread. Every write goes to
//! one dedicated writer thread that owns the only write connection (the `writer` module), so
//! concurrent requests queue in memory instead of failing with `SQLITE_BUSY`. The admin
//! commands write from another process while the server runs; both sides use IMMEDIATE
//! transactions and a busy timeout, so they wait for each other instead of failing.
//!
//! **Whole chats in slices.** A read of a whole chat (no `limit`) may be huge: 100,000
//! messages make 22 MB of JSON. It is read in slices of a few hundred messages
//! (`SLICE_BUDGET`), each in a short read transaction of its own, and each handed on
//! only when the one before has been taken ([`ChatRest`](crate::db::ChatRest)), so
//! memory does not grow with the chat, no connection or WAL snapshot is held while a
//! slow client reads, and the reads of pages queue behind one slice at most, not
//! behind whole chats. Whole-chat slices also take turns for a
//! quarter of the read connections (at least one), so pages always find the rest free.
//!
//! The answer is still one consistent state of the chat, as one transaction would give:
//! the read stops at the newest message when it began, messages are never changed, and
//! only deleting the last turn removes messages, always the newest. So while the last
//! message already read is still stored, nothing before it changed, and the slices add
//! up to the chat as it was at the last slice, without the messages added after the
//! read began: a state the chat was in (right after the latest delete of a last turn
//! that reached that far back, or when the read began). When that message is gone (its
//! turn was deleted) or the chat is deleted, the rest could not fit what was already
//! sent, so the read ends with an error instead (the client sees the answer cut short).

mod admin;
mod changes;
mod chats;
pub(super) mod copy;
mod error;
mod export;
mod idempotency;
mod import;
mod messages;
mod schema;
mod search;
mod sessions;
mod users;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;
use rusqlite::config::DbConfig;
use tokio::sync::{Semaphore, mpsc};

pub(super) use admin::Admin;
use schema::SCHEMA_VERSION;

use super::export::{ExportRest, ExportRow, Slicer};
use super::{
    Appended, BoxError, ChatRest, DeletedUser, Durability, Entity, Error, Options, PrefixMatch,
    Quota, Result, SessionInfo, Step, Taken, Unavailable, cut_short,
};

use crate::domain::{
    ChangeLog, Chat, ChatOrder, IDEMPOTENCY_WINDOW, IdempotencyKey, MessageRef, MessageWindow,
    NewMessage, SearchFilter, SearchPage, SearchPosition, SessionClaim, Timestamp, User,
};
use messages::SliceBudget;
use writer::{Background, Writer};

type Pool = r2d2::Pool<SqliteConnectionManager>;

/// How much one slice of a whole-chat read holds: about 100 KB of JSON for messages of
/// a few hundred bytes, read in about a millisecond.
const SLICE_BUDGET: SliceBudget = SliceBudget {
    rows: 256,
    text_bytes: 64 * 1024,
};

/// The server's handle on the database: a read pool and the writer. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Db {
    pool: Pool,
    writer: Writer,
    quota: Quota,
    /// How long recorded changes are kept for the events stream's replays.
    change_window: std::time::Duration,
    /// Turns for reading one slice of a whole chat (see the module docs).
    slice_turns: Arc<Semaphore>,
    /// Set by every write that deletes: the writer then purges what deleted chats left
    /// behind and gives the freed pages back, a step at a time between other writes.
    purge_pending: Arc<AtomicBool>,
}

impl Db {
    /// Opens (creating if needed) the database at `path`, applies the schema and starts
    /// the writer thread. Fails on a file that is not this program's database.
    pub(super) fn open_with(path: &Path, options: Options) -> Result<Db> {
        let Options {
            durability,
            write_queue,
            pool_size: read_connections,
            busy_timeout,
            quota,
            change_window,
        } = options;
        let conn = open_for_writing(path, durability)?;
        conn.busy_timeout(busy_timeout)?;
        let manager = SqliteConnectionManager::file(path).with_init(move |conn| {
            configure_connection(conn, durability)?;
            conn.busy_timeout(busy_timeout)?;
            // Keep the plans of cached statements across new bindings: without this,
            // binding a new LIMIT re-prepares the page query on every request.
            conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
            // Pooled connections only read; all writes go through the writer.
            conn.pragma_update(None, "query_only", true)
        });
        let pool = r2d2::Pool::builder()
            .max_size(read_connections.max(1))
            // A local file does not go stale: skip r2d2's check query on every checkout.
            .test_on_check_out(false)
            // There is a connection per blocking thread, so a read waits for one only
            // when something is wrong; then it should be a prompt 503, not r2d2's 30 s.
            .connection_timeout(busy_timeout.max(std::time::Duration::from_millis(1)))
            .build(manager)?;
        let mut checkpoints = Connection::open(path)?;
        configure_connection(&mut checkpoints, durability)?;
        checkpoints.busy_timeout(busy_timeout)?;
        // Set at start: a purge that a restart cut short carries on.
        let purge_pending = Arc::new(AtomicBool::new(true));
        let purge = Background {
            pending: Arc::clone(&purge_pending),
            step: Box::new(chats::purge_deleted_chats),
        };
        let writer = Writer::spawn(conn, checkpoints, write_queue, purge)
            .map_err(|_| Error::writer_gone())?;
        let slice_turns = Arc::new(Semaphore::new((read_connections as usize / 4).max(1)));
        Ok(Db {
            pool,
            writer,
            quota,
            change_window,
            slice_turns,
            purge_pending,
        })
    }

    /// Runs `f` with a pooled read connection on a blocking thread.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        count_busy(tokio::task::spawn_blocking(move || f(&*pool.get()?)).await?)
    }

    /// Runs `f` on the writer thread in the next group commit (see [`writer`]): inside
    /// its own savepoint, so if `f` fails, everything it wrote is rolled back; the
    /// result comes back once the commit is durable.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        count_busy(self.writer.call(f).await)
    }

    /// Whether writes are backlogged: the writer's queue is at least half full.
    pub(super) fn writes_backlogged(&self) -> bool {
        self.writer.backlogged()
    }

    /// How many transactions the writer has committed; with group commit, fewer than
    /// the writes it has run.
    pub(super) fn commits(&self) -> u64 {
        self.writer.commits()
    }

    /// Answers whether the database is ready for writes: the writer, inside a write
    /// transaction (so holding the write lock), sees the schema version this program
    /// expects.
    pub(super) async fn ready(&self) -> Result<()> {
        self.writer
            .call(|conn| {
                let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
                if version != SCHEMA_VERSION {
                    return Err(Error::Incompatible(format!(
                        "schema version {version}, expected {SCHEMA_VERSION}"
                    )));
                }
                Ok(())
            })
            .await
    }

    /// Lets the writes already queued finish, checkpoints the WAL into the database
    /// file and closes the write connection. Writes sent after this fail with
    /// [`Unavailable::WriterGone`].
    pub(super) async fn close(&self) -> Result<()> {
        self.writer.close().await
    }

    /// Deletes expired sessions, idempotency answers older than 24 hours and changes
    /// older than the change window; how many rows there were.
    pub(super) async fn purge_expired(&self) -> Result<usize> {
        let change_window =
            chrono::Duration::from_std(self.change_window).unwrap_or(chrono::Duration::MAX);
        let purge_pending = Arc::clone(&self.purge_pending);
        self.write(move |tx| {
            let now = chrono::Utc::now();
            let sessions = sessions::delete_expired_sessions(tx, &Timestamp::now())?;
            let keys_before = Timestamp::from_datetime(now - IDEMPOTENCY_WINDOW);
            let keys = idempotency::delete_expired_keys(tx, &keys_before)?;
            let changes = match now.checked_sub_signed(change_window) {
                Some(before) => changes::delete_older(tx, &Timestamp::from_datetime(before))?,
                None => 0,
            };
            let purged = sessions + keys + changes;
            if purged > 0 {
                purge_pending.store(true, Ordering::Relaxed);
            }
            Ok(purged)
        })
        .await
    }

    /// Deletes a user (see `users::delete_user`): gone at once, with the messages of a
    /// large account purged afterwards by the writer, a slice at a time, and the pages
    /// freed given back to the file system.
    pub(super) async fn delete_user(&self, id: String) -> Result<DeletedUser> {
        let purge_pending = Arc::clone(&self.purge_pending);
        self.write(move |tx| {
            let (deleted, _) = users::delete_user(tx, &id, &Timestamp::now())?
                .ok_or(Error::NotFound(Entity::User))?;
            // Set inside the write, where the writer looks for it after the commit. Also
            // after a small account: the writer then gives the freed pages back.
            purge_pending.store(true, Ordering::Relaxed);
            Ok(deleted)
        })
        .await
    }

    /// Up to `limit` of `user`'s changes after number `after`, and where their feed
    /// stands, from one snapshot.
    pub(super) async fn read_changes(
        &self,
        user: String,
        after: i64,
        limit: usize,
    ) -> Result<ChangeLog> {
        self.read(move |conn| {
            in_read_transaction(conn, || changes::read(conn, &user, after, limit))
        })
        .await
    }

    /// See [`crate::db::Db::search`].
    pub(super) async fn search(
        &self,
        user: String,
        query: crate::search::Query,
        filter: SearchFilter,
        newest: Option<i64>,
        position: Option<SearchPosition>,
        limit: usize,
    ) -> Result<SearchPage> {
        self.read(move |conn| {
            in_read_transaction(conn, || {
                let newest = match newest {
                    Some(newest) => newest,
                    None => search::newest_message(conn)?,
                };
                let hits = search::find(conn, &user, &query, &filter, newest, position, limit)?;
                Ok(SearchPage {
                    hits,
                    newest,
                    complete: search::complete(conn)?,
                })
            })
        })
        .await
    }

    /// See [`crate::db::Db::index_backlog`].
    pub(super) async fn index_backlog(&self, batch: usize) -> Result<Option<(usize, i64)>> {
        self.write(move |tx| search::backfill(tx, batch)).await
    }

    /// The user and expiry of a live session token hash; `None` if the session is
    /// unknown or expired.
    pub(super) async fn session(
        &self,
        token_hash: [u8; 32],
    ) -> Result<Option<(String, Timestamp)>> {
        self.read(move |conn| sessions::find_session(conn, &token_hash, &Timestamp::now()))
            .await
    }

    /// Answers whether the database can be read.
    pub(super) async fn ping(&self) -> Result<()> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    /// The user a live session token hash belongs to; `None` if the session is unknown
    /// or expired.
    pub(super) async fn session_user(&self, token_hash: [u8; 32]) -> Result<Option<String>> {
        self.read(move |conn| sessions::find_session_user(conn, &token_hash, &Timestamp::now()))
            .await
    }

    /// Appends `messages` to the claimed user's chat `chat_id` in one transaction, in
    /// order, after checking `claim` in that same transaction (an unknown or expired session is [`Error::NotFound`]`(Session)`, one of another user [`Error::WrongUser`])
    /// and, then, that the user's storage quota leaves room for them
    /// ([`Error::QuotaExceeded`] otherwise).
    ///
    /// With an idempotency key, the same transaction first looks for what that key
    /// stored in the last 24 hours: the same request gets those messages again and
    /// stores nothing ([`Appended::Replayed`]; [`Error::KeyAnswerGone`] if some were
    /// deleted since); a different request fails with [`Error::KeyReused`]. Otherwise
    /// the messages are stored and the key is kept with their ids, in the same
    /// transaction. All writes go through the one writer, so two racing retries are
    /// answered one after the other, never both stored.
    /// [`Error::NotFound`] if the chat does not exist or belongs to someone else.
    pub(super) async fn append_messages(
        &self,
        claim: SessionClaim,
        chat_id: i64,
        messages: Vec<NewMessage>,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<Appended> {
        let quota = self.quota;
        self.write(move |tx| {
            let now = Timestamp::now();
            sessions::check_claim(tx, &claim, &now)?;
            let owner = claim.user_id;
            let not_before = Timestamp::from_datetime(chrono::Utc::now() - IDEMPOTENCY_WINDOW);
            if let Some(key) = &idempotency {
                if let Some(kept) = idempotency::find_key(tx, &owner, &key.key, &not_before)? {
                    if kept.request_hash != key.request_hash {
                        return Err(Error::KeyReused);
                    }
                    let again = messages::find_message_range(
                        tx,
                        chat_id,
                        kept.first_message_id,
                        kept.last_message_id,
                    )?;
                    if i64::try_from(again.len()) != Ok(kept.message_count) {
                        return Err(Error::KeyAnswerGone);
                    }
                    return Ok(Appended::Replayed(again));
                }
            }
            if quota.is_set() {
                let bytes = messages.iter().map(|m| m.content.len()).sum();
                quota.admits(users::find_stored(tx, &owner)?, (messages.len(), bytes))?;
            }
            let stored = messages::insert_messages(tx, &owner, chat_id, messages, &now)?;
            if let (Some(key), Some(first), Some(last)) =
                (&idempotency, stored.first(), stored.last())
            {
                let kept = idempotency::KeptKey {
                    request_hash: key.request_hash,
                    first_message_id: first.id,
                    last_message_id: last.id,
                    message_count: i64::try_from(stored.len()).unwrap_or(i64::MAX),
                };
                idempotency::store_key(tx, &owner, &key.key, &kept, &now)?;
            }
            Ok(Appended::Stored(stored))
        })
        .await
    }
}

impl Db {
    /// Signs a user up: creates the user, who logs in with `email` and a password (given
    /// as its Argon2 PHC string), and their first session, in one transaction.
    /// [`Error::Conflict`] if the email (or, improbably, the id) is taken.
    pub(super) async fn sign_up(
        &self,
        id: String,
        email: String,
        password_hash: String,
        token_hash: [u8; 32],
        expires_at: Timestamp,
    ) -> Result<User> {
        self.write(move |tx| {
            let now = Timestamp::now();
            users::insert_user(tx, &id, Some(&email), Some(&password_hash), &now)?;
            sessions::insert_session(tx, &token_hash, &id, &now, &expires_at)?;
            Ok(User {
                id,
                primary_email: Some(email),
                created_at: now,
            })
        })
        .await
    }

    /// The user with this id.
    pub(super) async fn user(&self, id: String) -> Result<Option<User>> {
        self.read(move |conn| users::find_user(conn, &id)).await
    }

    /// The user with this lower-cased email and their password hash, for logging in.
    pub(super) async fn user_by_email(
        &self,
        email: String,
    ) -> Result<Option<(User, Option<String>)>> {
        self.read(move |conn| users::find_user_by_email(conn, &email))
            .await
    }

    /// The user with this id and their password hash, for re-checking the password.
    pub(super) async fn user_with_password(
        &self,
        id: String,
    ) -> Result<Option<(User, Option<String>)>> {
        self.read(move |conn| users::find_user_with_password(conn, &id))
            .await
    }

    /// See [`crate::db::Db::import`]: one write, through the writer.
    pub(super) async fn import(
        &self,
        user: String,
        chats: Vec<crate::archive::ImportChat>,
    ) -> Result<crate::db::Imported> {
        self.write(move |tx| import::store(tx, &user, chats, &Timestamp::now()))
            .await
    }

    /// Stores a session for `user_id` (by its token hash) until `expires_at`.
    pub(super) async fn create_session(
        &self,
        user_id: String,
        token_hash: [u8; 32],
        expires_at: Timestamp,
    ) -> Result<()> {
        self.write(move |tx| {
            sessions::insert_session(tx, &token_hash, &user_id, &Timestamp::now(), &expires_at)
        })
        .await
    }

    /// Deletes the session with this token hash, if it exists.
    pub(super) async fn delete_session(&self, token_hash: [u8; 32]) -> Result<()> {
        self.write(move |tx| sessions::delete_session(tx, &token_hash).map(drop))
            .await
    }

    /// `owner`'s chats in the given order.
    pub(super) async fn list_chats(&self, owner: String, order: ChatOrder) -> Result<Vec<Chat>> {
        self.read(move |conn| chats::list_chats(conn, &owner, order))
            .await
    }

    /// `owner`'s chat `chat_id`. [`Error::NotFound`] if it is not theirs.
    pub(super) async fn chat(&self, owner: String, chat_id: i64) -> Result<Chat> {
        self.read(move |conn| chats::find_owned_chat(conn, &owner, chat_id))
            .await
    }

    /// Creates a chat for `owner`.
    pub(super) async fn create_chat(
        &self,
        owner: String,
        name: String,
        model: String,
    ) -> Result<Chat> {
        self.write(move |tx| chats::insert_chat(tx, &owner, &name, &model, &Timestamp::now()))
            .await
    }

    /// Renames `owner`'s chat. [`Error::NotFound`] if it is not theirs.
    pub(super) async fn rename_chat(
        &self,
        owner: String,
        chat_id: i64,
        name: String,
    ) -> Result<Chat> {
        self.write(move |tx| chats::rename_chat(tx, &owner, chat_id, &name, &Timestamp::now()))
            .await
    }

    /// Deletes those of `chat_ids` that are `owner`'s, with their messages, in one
    /// transaction; returns the ids deleted. They are gone at once; the messages of
    /// large ones are purged afterwards, a slice at a time, by the writer between other
    /// writes (see the `chats` module).
    pub(super) async fn delete_chats(&self, owner: String, chat_ids: Vec<i64>) -> Result<Vec<i64>> {
        let purge_pending = Arc::clone(&self.purge_pending);
        self.write(move |tx| {
            let deleted = chats::delete_chats(tx, &owner, &chat_ids, &Timestamp::now())?;
            // Also when all is purged already: the writer gives the freed pages back.
            if !deleted.is_empty() {
                purge_pending.store(true, Ordering::Relaxed);
            }
            Ok(deleted)
        })
        .await
    }

    /// See [`crate::db::Db::expire_chats`]: one write; the messages of large chats are
    /// purged afterwards, a slice at a time, as for any deleted chat.
    pub(super) async fn expire_chats(
        &self,
        inactive_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<(String, i64)>> {
        let purge_pending = Arc::clone(&self.purge_pending);
        self.write(move |tx| {
            let expired = chats::expire_chats(tx, &inactive_before, limit, &Timestamp::now())?;
            if !expired.is_empty() {
                purge_pending.store(true, Ordering::Relaxed);
            }
            Ok(expired)
        })
        .await
    }

    /// Reads a window of the claimed user's chat `chat_id`, oldest first, after checking
    /// `claim` (an unknown or expired session is [`Error::NotFound`]`(Session)`, one of another user [`Error::WrongUser`]), all in one step on a blocking thread: `each`
    /// gets `out` and every message, borrowed, in order. Returns `out` and the cursor
    /// for the next page (`None` when there is none). [`Error::NotFound`] if the chat is
    /// not theirs.
    pub(super) async fn read_messages<S, F>(
        &self,
        claim: SessionClaim,
        chat_id: i64,
        window: MessageWindow,
        mut out: S,
        mut each: F,
    ) -> Result<(S, Option<i64>)>
    where
        S: Send + 'static,
        F: FnMut(&mut S, MessageRef<'_>) -> Result<(), BoxError> + Send + 'static,
    {
        self.read(move |conn| {
            in_read_transaction(conn, || {
                chats::require_claimed_chat(conn, &claim, chat_id, &Timestamp::now())?;
                messages::visit_messages(conn, chat_id, window, |m| each(&mut out, m))
            })
            .map(|next| (out, next))
        })
        .await
    }

    /// Reads the claimed user's whole chat `chat_id`, oldest first, after checking `claim`
    /// (an unknown or expired session is [`Error::NotFound`]`(Session)`, one of another user [`Error::WrongUser`]), in slices (see the module docs): `each` gets `first`
    /// and the messages of the first slice, then a new `S` per slice for the rest.
    /// Returns the first slice, and the rest if there is more, read as it is taken.
    /// [`Error::NotFound`] if the chat is not theirs.
    pub(super) async fn read_whole_chat<S, F>(
        &self,
        claim: SessionClaim,
        chat_id: i64,
        mut first: S,
        mut each: F,
    ) -> Result<(S, Option<ChatRest<S>>)>
    where
        S: Default + Send + 'static,
        F: FnMut(&mut S, MessageRef<'_>) -> Result<(), BoxError> + Send + 'static,
    {
        let turn = self.slice_turn().await?;
        let (first, each, cursor) = self
            .read(move |conn| {
                let cursor = in_read_transaction(conn, || {
                    chats::require_claimed_chat(conn, &claim, chat_id, &Timestamp::now())?;
                    let Some(through) = messages::last_message_id(conn, chat_id)? else {
                        return Ok(None);
                    };
                    let after =
                        messages::visit_slice(conn, chat_id, 0, through, SLICE_BUDGET, |m| {
                            each(&mut first, m)
                        })?;
                    Ok(after.map(|after| (after, through)))
                })?;
                Ok((first, each, cursor))
            })
            .await?;
        drop(turn);
        let Some((after, through)) = cursor else {
            return Ok((first, None));
        };
        // One slice waits while the next is read: enough to keep the client busy.
        let (slices, rest) = mpsc::channel(1);
        tokio::spawn(
            self.clone()
                .read_slices(chat_id, after, through, each, slices),
        );
        Ok((first, Some(ChatRest { rest })))
    }

    /// Reads chat `chat_id` after message `after`, through message `through`, a slice at
    /// a time, and sends each slice to `slices` until the chat is read, a slice fails, or
    /// the receiver is gone (the client went away).
    async fn read_slices<S, F>(
        self,
        chat_id: i64,
        mut after: i64,
        through: i64,
        mut each: F,
        slices: mpsc::Sender<Result<S>>,
    ) where
        S: Default + Send + 'static,
        F: FnMut(&mut S, MessageRef<'_>) -> Result<(), BoxError> + Send + 'static,
    {
        loop {
            let turn = match self.slice_turn().await {
                Ok(turn) => turn,
                Err(err) => return cut_short(&slices, chat_id, err).await,
            };
            let read = self
                .read(move |conn| {
                    let mut out = S::default();
                    let next = in_read_transaction(conn, || {
                        if !chats::chat_is_live(conn, chat_id)? {
                            return Err(Error::NotFound(Entity::Chat));
                        }
                        // Its turn was deleted: the rest would not fit the part sent.
                        if !messages::message_exists(conn, after)? {
                            return Err(Error::NotFound(Entity::Message));
                        }
                        messages::visit_slice(conn, chat_id, after, through, SLICE_BUDGET, |m| {
                            each(&mut out, m)
                        })
                    });
                    Ok((next.map(|next| (out, next)), each))
                })
                .await;
            drop(turn);
            let (out, next) = match read {
                Ok((Ok(slice), returned)) => {
                    each = returned;
                    slice
                }
                Ok((Err(err), _)) | Err(err) => return cut_short(&slices, chat_id, err).await,
            };
            if slices.send(Ok(out)).await.is_err() {
                return;
            }
            match next {
                Some(next) => after = next,
                None => return,
            }
        }
    }

    /// Waits for a turn to read a slice of a whole chat.
    async fn slice_turn(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        // The semaphore is never closed, so this cannot fail; if it ever did, no
        // connection could be had.
        Arc::clone(&self.slice_turns)
            .acquire_owned()
            .await
            .map_err(|_| Error::Unavailable {
                reason: Unavailable::NoConnection,
                source: None,
            })
    }

    /// See [`crate::db::Db::export`]: one read transaction on a pooled connection, on a
    /// blocking thread, holding `turn` until it ends.
    pub(super) async fn export<S, F>(
        &self,
        user: String,
        each: F,
        turn: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<ExportRest<S>>
    where
        S: Default + Send + 'static,
        F: FnMut(&mut S, ExportRow<'_>) -> Result<(), BoxError> + Send + 'static,
    {
        let pool = self.pool.clone();
        let (slices, rest) = ExportRest::channel();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let result = pool
                .get()
                .map_err(Error::from)
                .and_then(|conn| export::run(&conn, &user, Slicer::new(each), &slices, &runtime));
            drop(turn);
            if let Err(err) = count_busy(result) {
                crate::db::export::fail(&slices, &user, err);
            }
        });
        Ok(rest)
    }

    /// Deletes the last turn of `owner`'s chat; returns the deleted ids.
    pub(super) async fn delete_last_turn(&self, owner: String, chat_id: i64) -> Result<Vec<i64>> {
        self.write(move |tx| messages::delete_last_turn(tx, &owner, chat_id, &Timestamp::now()))
            .await
    }
}

/// Runs `f`'s statements in one read transaction, so that they all see the same
/// snapshot of the database (a backward page is found by two queries). The statements
/// come from the cache: this runs for every page read.
fn in_read_transaction<T>(conn: &Connection, f: impl FnOnce() -> Result<T>) -> Result<T> {
    if !conn.is_autocommit() {
        // Left inside a transaction by a read that panicked half-way.
        conn.prepare_cached("ROLLBACK")?.execute([])?;
    }
    conn.prepare_cached("BEGIN")?.execute([])?;
    let result = f();
    // A read transaction has nothing to keep: end it the same way either way.
    conn.prepare_cached("ROLLBACK")?.execute([])?;
    result
}

/// Gives up to `pages` free pages (left by deletes) back to the file system, inside the
/// caller's transaction; how many it gave. Only a database with incremental
/// auto-vacuum can: new ones, and older ones after the `compact` command.
fn give_back_pages(conn: &Connection, pages: u32) -> Result<u64> {
    let mode: i64 = conn.pragma_query_value(None, "auto_vacuum", |row| row.get(0))?;
    // 2: INCREMENTAL.
    if mode != 2 {
        return Ok(0);
    }
    let free = || -> Result<u64> {
        let pages: i64 = conn.pragma_query_value(None, "freelist_count", |row| row.get(0))?;
        Ok(pages.unsigned_abs())
    };
    let before = free()?;
    if before == 0 {
        return Ok(0);
    }
    // Each step of the statement gives back one page: step it to the end.
    let mut stmt = conn.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    Ok(before.saturating_sub(free()?))
}

/// Counts SQLITE_BUSY failures (the busy timeout ran out) for the metrics.
fn count_busy<T>(result: Result<T>) -> Result<T> {
    if let Err(Error::Unavailable {
        reason: Unavailable::Busy,
        ..
    }) = &result
    {
        metrics::counter!(crate::metric_names::DB_BUSY).increment(1);
    }
    result
}

/// Opens a read-write connection to `path` (creating the file and its folder), switches
/// the file to WAL and brings its schema up to date. Used by the writer and by [`Admin`].
fn open_for_writing(path: &Path, durability: Durability) -> Result<Connection> {
    prepare_database_file(path)?;
    let mut conn = Connection::open(path)?;
    configure_connection(&mut conn, durability)?;
    // SQLite falls back to read-only when it cannot open the file for writing; the
    // checks above catch the usual reasons in words, this one any other.
    if conn.is_readonly(rusqlite::MAIN_DB)? {
        return Err(unusable(
            "write the database",
            path,
            "SQLite could only open it read-only".to_owned(),
        ));
    }
    // A new file gives the pages that deletes free back to the file system, a few at a
    // time (see `give_back_pages`); SQLite takes this only before the first table.
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))?;
    if tables == 0 {
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    }
    // Refuse a foreign file before changing anything about it, journal mode included.
    schema::migrate(&mut conn)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
        row.get::<_, String>(0)
    })?;
    Ok(conn)
}

/// Makes sure the database at `path` can be written before SQLite opens it: creates
/// its folder (0700) and the file (0600) when they are missing, so that only the
/// account running the server can read the password hashes and chats (SQLite gives the
/// `-wal` and `-shm` files the main file's permissions), and checks that an existing
/// file and its folder are writable.
///
/// A server on a database it cannot write would start, answer every write with a 500
/// and still look healthy; refusing to start puts the reason in front of whoever
/// started it, once and in words, instead of in every failed request. The check asks
/// the kernel (`open` for writing, `access(W_OK)`), so it holds for root too: a
/// read-only mount or an immutable file is refused even though root ignores file modes.
fn prepare_database_file(path: &Path) -> Result<()> {
    use std::fs::{DirBuilder, OpenOptions};
    use std::io::ErrorKind;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|err| {
                let reason = match err.kind() {
                    ErrorKind::PermissionDenied => "a folder above it is not writable".to_owned(),
                    ErrorKind::AlreadyExists | ErrorKind::NotADirectory => {
                        "a part of the path is a file, not a folder".to_owned()
                    }
                    _ => in_words(&err),
                };
                Error::Unusable {
                    what: format!(
                        "create the folder {} for the database {}",
                        dir.display(),
                        path.display()
                    ),
                    reason,
                }
            })?;
    }
    let created = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(_) => {}
        Err(err) if err.kind() == ErrorKind::AlreadyExists => {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|err| {
                    let reason = match err.kind() {
                        ErrorKind::PermissionDenied => {
                            "the file is read-only (for this user)".to_owned()
                        }
                        ErrorKind::IsADirectory => "it is a folder".to_owned(),
                        _ => in_words(&err),
                    };
                    unusable("write the database", path, reason)
                })?;
        }
        Err(err) => {
            let reason = match err.kind() {
                ErrorKind::PermissionDenied => "the folder is not writable".to_owned(),
                _ => in_words(&err),
            };
            return Err(unusable("create the database", path, reason));
        }
    }
    // SQLite creates the -wal and -shm files beside the database when it opens it.
    rustix::fs::access(
        dir,
        rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
    )
    .map_err(|errno| {
        let err = std::io::Error::from(errno);
        let reason = match err.kind() {
            ErrorKind::PermissionDenied => "the folder is not writable".to_owned(),
            _ => in_words(&err),
        };
        unusable(
            "write the database",
            path,
            format!("{reason}, and SQLite keeps its -wal and -shm files in it"),
        )
    })?;
    Ok(())
}

fn unusable(action: &str, path: &Path, reason: String) -> Error {
    Error::Unusable {
        what: format!("{action} {}", path.display()),
        reason,
    }
}

/// The reason of a file-system error as a phrase, without the `(os error N)` suffix.
fn in_words(err: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match err.kind() {
        ErrorKind::PermissionDenied => "permission denied".to_owned(),
        ErrorKind::ReadOnlyFilesystem => "the file system is mounted read-only".to_owned(),
        ErrorKind::NotFound => "a folder on the path does not exist".to_owned(),
        ErrorKind::NotADirectory => "a part of the path is a file, not a folder".to_owned(),
        ErrorKind::StorageFull => "the disk is full".to_owned(),
        _ => err.to_string(),
    }
}

/// How long a connection waits for a lock another connection holds (the writer for the
/// admin commands' writes, and the other way round) before failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The pragmas every connection gets, pooled or not.
fn configure_connection(conn: &mut Connection, durability: Durability) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // After a checkpoint lets the WAL start over, cut a WAL file that grew past 64 MiB.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    conn.pragma_update(
        None,
        "synchronous",
        match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        },
    )?;
    // Fails with SQLITE_NOTADB here, not on first use, when the file is not a database.
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
    search::register_score(conn)?;
    Ok(())
}
