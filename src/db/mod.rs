//! Storage. The rest of the crate sees [`Db`](crate::db::Db) (for the server) and
//! [`Admin`](crate::db::Admin) (for the command line), which speak domain types only and
//! fail with one backend-neutral [`Error`](crate::db::Error). Behind them sit two
//! backends, each in its own module with its own SQL and migrations, and each owning
//! every statement it runs:
//!
//! - `sqlite`: the embedded default, one file. Reads on a pool of connections on
//!   blocking threads; every write through one writer thread that commits groups of
//!   writes together.
//! - `postgres`: one PostgreSQL database that several instances of the server share.
//!   A pool of connections; each write is one transaction of its own, and the ordering
//!   guarantees the API makes are kept by row locks (see that module).
//!
//! [`Location`](crate::db::Location) says which one, from `--database`: a file path or a
//! `postgresql://` URL.

mod admin;
mod copy;
mod error;
pub mod export;
mod location;
mod postgres;
mod quota;
mod sqlite;

use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;

pub use admin::{Admin, Compacted, DeletedUser, PrefixMatch, SessionInfo};
pub use copy::{Copied, TableCounts, copy_database};
pub use error::{Error, QuotaExceeded, Source, Step, Taken, Unavailable};
pub use export::{ExportRest, ExportRow};
pub use location::{Location, PostgresUrl};
pub use quota::Quota;

use crate::domain::{
    ChangeLog, Chat, ChatMessage, ChatOrder, IdempotencyKey, MessageRef, MessageWindow, NewMessage,
    SearchFilter, SearchPage, SearchPosition, SessionClaim, Timestamp, User,
};
use crate::search;

/// What a [`Error::NotFound`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    /// A user.
    User,
    /// A chat conversation.
    Chat,
    /// A chat message.
    Message,
    /// A live session (unknown or expired ones are not found).
    Session,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Entity::User => "user",
            Entity::Chat => "chat",
            Entity::Message => "message",
            Entity::Session => "session",
        })
    }
}

/// Any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The `Result` of this layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a committed write survives (`--sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// SQLite: `synchronous=FULL`, the WAL is synced at every commit. PostgreSQL:
    /// `synchronous_commit=on`, the commit waits for the WAL flush. Either way an
    /// acknowledged write survives power loss and an operating-system crash.
    #[default]
    Full,
    /// SQLite: `synchronous=NORMAL`, the WAL is synced at checkpoints only, so an
    /// acknowledged write survives a crash of the process. PostgreSQL:
    /// `synchronous_commit=off`, the commit returns before its WAL is flushed (within
    /// three times `wal_writer_delay`, 600 ms by default), so it survives a crash of this
    /// server but not one of PostgreSQL or of its machine. Either way the last commits
    /// may be lost, never half-applied.
    Normal,
}

impl Durability {
    /// The level as `--sync` spells it, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Durability::Full => "full",
            Durability::Normal => "normal",
        }
    }
}

/// Writes that may wait for the SQLite writer by default.
pub const DEFAULT_WRITE_QUEUE: usize = 512;

/// How many connections the pool keeps by default: SQLite's read connections (writes
/// have one connection of their own), or all of PostgreSQL's.
pub const DEFAULT_POOL_SIZE: u32 = 16;

/// How [`Db::open_with`] sets the database up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// What an acknowledged write survives.
    pub durability: Durability,
    /// Most writes waiting for the SQLite writer; more fail at once with
    /// [`Error::Overloaded`]. (PostgreSQL writes wait for a pooled connection instead.)
    pub write_queue: usize,
    /// Pooled connections: SQLite's read connections, or PostgreSQL's connections.
    pub pool_size: u32,
    /// How long a statement waits for a lock another connection holds, and a request
    /// for a pooled connection, before failing with [`Error::Unavailable`].
    pub busy_timeout: Duration,
    /// Per-user storage limits.
    pub quota: Quota,
    /// How long recorded changes are kept, for the events stream to replay them.
    pub change_window: Duration,
}

/// How long recorded changes are kept by default.
pub const DEFAULT_CHANGE_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::default(),
            write_queue: DEFAULT_WRITE_QUEUE,
            pool_size: DEFAULT_POOL_SIZE,
            busy_timeout: Duration::from_secs(5),
            quota: Quota::default(),
            change_window: DEFAULT_CHANGE_WINDOW,
        }
    }
}

/// What [`Db::append_messages`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored these messages.
    Stored(Vec<ChatMessage>),
    /// Stored nothing: the request repeats an earlier one with the same idempotency
    /// key, which stored these messages.
    Replayed(Vec<ChatMessage>),
}

/// What [`Db::import`] stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Imported {
    /// Chats.
    pub chats: usize,
    /// Messages, in all of them.
    pub messages: usize,
}

/// The rest of a whole-chat read after its first slice (see [`Db::read_whole_chat`]):
/// each slice is read once the one before it has been taken.
pub struct ChatRest<S> {
    rest: mpsc::Receiver<Result<S>>,
}

impl<S> ChatRest<S> {
    /// The next slice, or `None` once the chat has been read to the end. An error ends
    /// the read: the chat, or its last turn back past the part already read, was deleted
    /// meanwhile, or the database failed.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<S>>> {
        self.rest.poll_recv(cx)
    }
}

/// Ends a whole-chat read with `err`, which its receiver gets instead of the next slice.
async fn cut_short<S>(slices: &mpsc::Sender<Result<S>>, chat_id: i64, err: Error) {
    log::warn!("reading the whole of chat {chat_id} was cut short: {err}");
    let _ = slices.send(Err(err)).await;
}

/// The server's handle on the database, whichever backend holds it. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    backend: Backend,
    /// The user of every committed write that recorded a change, for the events
    /// streams of this process (see [`Db::changes`]).
    changed: tokio::sync::broadcast::Sender<std::sync::Arc<str>>,
    /// Turns for exports, each of which holds a connection (and its snapshot) while it
    /// runs; a quarter of the pool, at least one, so requests always find the rest.
    export_turns: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Writes told to [`Db::changes`] listeners that have not taken them yet; one that falls
/// further behind is told so (and then wakes every stream).
const CHANGED_BUFFER: usize = 1024;

#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::Db),
    Postgres(postgres::Db),
}

/// Calls the same method on whichever backend `$db` is.
macro_rules! dispatch {
    ($self:expr, $db:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($db) => $call,
            Backend::Postgres($db) => $call,
        }
    };
}

impl Db {
    /// Opens the database at `location` with default [`Options`] but `durability`.
    pub async fn open(location: &Location, durability: Durability) -> Result<Db> {
        Db::open_with(
            location,
            Options {
                durability,
                ..Options::default()
            },
        )
        .await
    }

    /// Opens (creating if needed) the database at `location` and brings its schema up to
    /// date. Fails on a database that is not this program's, or has a newer schema.
    pub async fn open_with(location: &Location, options: Options) -> Result<Db> {
        let backend = match location {
            Location::Sqlite(path) => {
                let path = path.clone();
                let opened =
                    tokio::task::spawn_blocking(move || sqlite::Db::open_with(&path, options))
                        .await??;
                Backend::Sqlite(opened)
            }
            Location::Postgres(url) => Backend::Postgres(postgres::Db::open(url, options).await?),
        };
        let (changed, _) = tokio::sync::broadcast::channel(CHANGED_BUFFER);
        let export_turns = (options.pool_size as usize / 4).max(1);
        Ok(Db {
            backend,
            changed,
            export_turns: std::sync::Arc::new(tokio::sync::Semaphore::new(export_turns)),
        })
    }

    /// The users whose data this handle changes, one per committed write that recorded
    /// a change (the change feed itself is read with [`Db::read_changes`]). Changes made
    /// by other processes are not told here.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<std::sync::Arc<str>> {
        self.changed.subscribe()
    }

    /// Calls `wake` with the user of every change another process commits, as the
    /// backend learns of them (PostgreSQL: `LISTEN` / `NOTIFY`), and with `None` when it
    /// may have missed some; returns when `wake` returns false. SQLite tells nothing
    /// (another process's writes are found by polling) and returns at once.
    pub async fn follow_changes(&self, wake: impl Fn(Option<&str>) -> bool) {
        match &self.backend {
            Backend::Sqlite(_) => {}
            Backend::Postgres(db) => db.follow_changes(wake).await,
        }
    }

    /// Tells [`Db::changes`] listeners that `user`'s data changed.
    fn changed(&self, user: &str) {
        // No listener is fine: no events stream is open.
        let _ = self.changed.send(std::sync::Arc::from(user));
    }

    /// Which backend this is, for logs and metrics: `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Whether writes are backlogged: SQLite's writer queue is at least half full, or
    /// every PostgreSQL connection is in use with requests waiting.
    pub fn writes_backlogged(&self) -> bool {
        dispatch!(self, db => db.writes_backlogged())
    }

    /// How many write transactions have been committed; with SQLite's group commit,
    /// fewer than the writes.
    pub fn commits(&self) -> u64 {
        dispatch!(self, db => db.commits())
    }

    /// Answers whether the database is ready for writes, with the schema this program
    /// expects.
    pub async fn ready(&self) -> Result<()> {
        dispatch!(self, db => db.ready().await)
    }

    /// Lets the writes in flight finish and closes the database. Writes after this fail
    /// with [`Unavailable::WriterGone`].
    pub async fn close(&self) -> Result<()> {
        dispatch!(self, db => db.close().await)
    }

    /// Deletes expired sessions and idempotency answers older than 24 hours; how many
    /// rows there were.
    pub async fn purge_expired(&self) -> Result<usize> {
        dispatch!(self, db => db.purge_expired().await)
    }

    /// Up to `limit` of `user`'s recorded changes after number `after`, oldest first,
    /// with the messages each append stored (those still there), and where the user's
    /// change feed stands, all from one snapshot. [`Error::NotFound`] if there is no
    /// such user.
    pub async fn read_changes(&self, user: String, after: i64, limit: usize) -> Result<ChangeLog> {
        dispatch!(self, db => db.read_changes(user, after, limit).await)
    }

    /// The user and expiry of a live session token hash; `None` if the session is
    /// unknown or expired.
    pub async fn session(&self, token_hash: [u8; 32]) -> Result<Option<(String, Timestamp)>> {
        dispatch!(self, db => db.session(token_hash).await)
    }

    /// Answers whether the database can be read.
    pub async fn ping(&self) -> Result<()> {
        dispatch!(self, db => db.ping().await)
    }

    /// The user a live session token hash belongs to; `None` if the session is unknown
    /// or expired.
    pub async fn session_user(&self, token_hash: [u8; 32]) -> Result<Option<String>> {
        dispatch!(self, db => db.session_user(token_hash).await)
    }

    /// Appends `messages` to the claimed user's chat `chat_id` in one transaction, in
    /// order, with strictly increasing ids and nothing else of that chat between them,
    /// after checking `claim` in that same transaction (an unknown or expired session is
    /// [`Error::NotFound`]`(Session)`, one of another user [`Error::WrongUser`]) and,
    /// then, that the user's storage quota leaves room for them
    /// ([`Error::QuotaExceeded`] otherwise).
    ///
    /// With an idempotency key, the same transaction first looks for what that key
    /// stored in the last 24 hours: the same request gets those messages again and
    /// stores nothing ([`Appended::Replayed`]; [`Error::KeyAnswerGone`] if some were
    /// deleted since); a different request fails with [`Error::KeyReused`]. Otherwise
    /// the messages are stored and the key is kept with their ids, in the same
    /// transaction; two racing requests with one key are answered one after the other,
    /// never both stored. [`Error::NotFound`] if the chat does not exist or belongs to
    /// someone else.
    pub async fn append_messages(
        &self,
        claim: SessionClaim,
        chat_id: i64,
        messages: Vec<NewMessage>,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<Appended> {
        let owner = claim.user_id.clone();
        let appended =
            dispatch!(self, db => db.append_messages(claim, chat_id, messages, idempotency).await)?;
        if matches!(appended, Appended::Stored(_)) {
            self.changed(&owner);
        }
        Ok(appended)
    }

    /// Signs a user up: creates the user, who logs in with `email` and a password (given
    /// as its Argon2 PHC string), and their first session, in one transaction.
    /// [`Error::Conflict`] if the email (or, improbably, the id) is taken.
    pub async fn sign_up(
        &self,
        id: String,
        email: String,
        password_hash: String,
        token_hash: [u8; 32],
        expires_at: Timestamp,
    ) -> Result<User> {
        dispatch!(self, db => db.sign_up(id, email, password_hash, token_hash, expires_at).await)
    }

    /// The user with this id.
    pub async fn user(&self, id: String) -> Result<Option<User>> {
        dispatch!(self, db => db.user(id).await)
    }

    /// The user with this lower-cased email and their password hash, for logging in.
    pub async fn user_by_email(&self, email: String) -> Result<Option<(User, Option<String>)>> {
        dispatch!(self, db => db.user_by_email(email).await)
    }

    /// Stores `chats` (read from an export or another program's, see
    /// [`crate::archive`]) for `user` in one transaction, keeping their order and
    /// times: all of them or, on any error, none. Each chat and its messages are
    /// recorded in the change feed as created now, and the messages are indexed for
    /// search and counted for the quota (which an import does not check).
    /// [`Error::NotFound`] if there is no such user.
    pub async fn import(
        &self,
        user: String,
        chats: Vec<crate::archive::ImportChat>,
    ) -> Result<Imported> {
        let imported = dispatch!(self, db => db.import(user.clone(), chats).await)?;
        self.changed(&user);
        Ok(imported)
    }

    /// The user with this id and their password hash (`None` for a user without a
    /// password), for re-checking the password.
    pub async fn user_with_password(&self, id: String) -> Result<Option<(User, Option<String>)>> {
        dispatch!(self, db => db.user_with_password(id).await)
    }

    /// Deletes a user and every trace of them: sessions, chats, messages (and their
    /// search words), idempotency answers and recorded changes; what was deleted. The
    /// user is gone for every request when this returns; SQLite's writer purges a large
    /// account's messages afterwards, a slice at a time. Their events streams end. [`Error::NotFound`] if there is no
    /// such user.
    pub async fn delete_user(&self, id: String) -> Result<DeletedUser> {
        let deleted = dispatch!(self, db => db.delete_user(id.clone()).await)?;
        self.changed(&id);
        Ok(deleted)
    }

    /// Stores a session for `user_id` (by its token hash) until `expires_at`.
    pub async fn create_session(
        &self,
        user_id: String,
        token_hash: [u8; 32],
        expires_at: Timestamp,
    ) -> Result<()> {
        dispatch!(self, db => db.create_session(user_id, token_hash, expires_at).await)
    }

    /// Deletes the session with this token hash, if it exists.
    pub async fn delete_session(&self, token_hash: [u8; 32]) -> Result<()> {
        dispatch!(self, db => db.delete_session(token_hash).await)
    }

    /// `owner`'s chats in the given order.
    pub async fn list_chats(&self, owner: String, order: ChatOrder) -> Result<Vec<Chat>> {
        dispatch!(self, db => db.list_chats(owner, order).await)
    }

    /// `owner`'s chat `chat_id`. [`Error::NotFound`] if it is not theirs.
    pub async fn chat(&self, owner: String, chat_id: i64) -> Result<Chat> {
        dispatch!(self, db => db.chat(owner, chat_id).await)
    }

    /// Creates a chat for `owner`.
    pub async fn create_chat(&self, owner: String, name: String, model: String) -> Result<Chat> {
        let chat = dispatch!(self, db => db.create_chat(owner.clone(), name, model).await)?;
        self.changed(&owner);
        Ok(chat)
    }

    /// Renames `owner`'s chat. [`Error::NotFound`] if it is not theirs.
    pub async fn rename_chat(&self, owner: String, chat_id: i64, name: String) -> Result<Chat> {
        let chat = dispatch!(self, db => db.rename_chat(owner.clone(), chat_id, name).await)?;
        self.changed(&owner);
        Ok(chat)
    }

    /// Deletes those of `chat_ids` that are `owner`'s, with their messages, in one
    /// transaction; returns the ids deleted. They are gone at once; the messages of
    /// large ones may be purged afterwards, a slice at a time.
    pub async fn delete_chats(&self, owner: String, chat_ids: Vec<i64>) -> Result<Vec<i64>> {
        let deleted = dispatch!(self, db => db.delete_chats(owner.clone(), chat_ids).await)?;
        if !deleted.is_empty() {
            self.changed(&owner);
        }
        Ok(deleted)
    }

    /// Deletes up to `limit` chats, of any user, with no activity since
    /// `inactive_before` (created, renamed, a message appended or a last turn deleted:
    /// their `updated_at`), oldest first, with their messages, in one transaction,
    /// recording each deletion in its user's change feed; how many. A chat being
    /// written to meanwhile is kept.
    pub async fn expire_chats(&self, inactive_before: Timestamp, limit: usize) -> Result<usize> {
        let expired = dispatch!(self, db => db.expire_chats(inactive_before, limit).await)?;
        let mut owners: Vec<&str> = expired.iter().map(|(owner, _)| owner.as_str()).collect();
        owners.dedup();
        for owner in owners {
            self.changed(owner);
        }
        Ok(expired.len())
    }

    /// Reads a window of the claimed user's chat `chat_id`, oldest first, after checking
    /// `claim` (an unknown or expired session is [`Error::NotFound`]`(Session)`, one of
    /// another user [`Error::WrongUser`]), all from one snapshot: `each` gets `out` and
    /// every message, borrowed, in order. Returns `out` and the cursor for the next page
    /// (`None` when there is none). [`Error::NotFound`] if the chat is not theirs.
    pub async fn read_messages<S, F>(
        &self,
        claim: SessionClaim,
        chat_id: i64,
        window: MessageWindow,
        out: S,
        each: F,
    ) -> Result<(S, Option<i64>)>
    where
        S: Send + 'static,
        F: FnMut(&mut S, MessageRef<'_>) -> Result<(), BoxError> + Send + 'static,
    {
        dispatch!(self, db => db.read_messages(claim, chat_id, window, out, each).await)
    }

    /// Reads the claimed user's whole chat `chat_id`, oldest first, after checking
    /// `claim` (as [`Db::read_messages`] does), in slices, so that memory does not grow
    /// with the chat: `each` gets `first` and the messages of the first slice, then a new
    /// `S` per slice for the rest. Returns the first slice, and the rest if there is
    /// more, read as it is taken. The slices add up to one state the chat was in (see
    /// the `sqlite` module). [`Error::NotFound`] if the chat is not theirs.
    pub async fn read_whole_chat<S, F>(
        &self,
        claim: SessionClaim,
        chat_id: i64,
        first: S,
        each: F,
    ) -> Result<(S, Option<ChatRest<S>>)>
    where
        S: Default + Send + 'static,
        F: FnMut(&mut S, MessageRef<'_>) -> Result<(), BoxError> + Send + 'static,
    {
        dispatch!(self, db => db.read_whole_chat(claim, chat_id, first, each).await)
    }

    /// Deletes the last turn of `owner`'s chat; returns the deleted ids.
    pub async fn delete_last_turn(&self, owner: String, chat_id: i64) -> Result<Vec<i64>> {
        let deleted = dispatch!(self, db => db.delete_last_turn(owner.clone(), chat_id).await)?;
        self.changed(&owner);
        Ok(deleted)
    }

    /// Exports `user`'s data (see [`export`]) from one snapshot: `each` renders every
    /// [`ExportRow`] into the slice it is given, and the slices come out of the
    /// returned [`ExportRest`] one at a time, each read once the caller has taken the one
    /// before, so memory does not grow with the user's data. [`Error::NotFound`] if
    /// there is no such user; [`Error::Overloaded`] if all of the export turns are
    /// taken (each export holds a connection while it runs).
    pub async fn export<S, F>(&self, user: String, each: F) -> Result<ExportRest<S>>
    where
        S: Default + Send + 'static,
        F: FnMut(&mut S, ExportRow<'_>) -> Result<(), BoxError> + Send + 'static,
    {
        let turn = std::sync::Arc::clone(&self.export_turns)
            .try_acquire_owned()
            .map_err(|_| Error::Overloaded)?;
        let mut rest = dispatch!(self, db => db.export(user, each, turn).await)?;
        rest.start().await?;
        Ok(rest)
    }

    /// Up to `limit` of `user`'s messages (in chats not deleted) that match `query` and
    /// `filter`, best first, then newest first; after `position` when given (the last
    /// hit of the page before), among the messages up to id `newest` (`None`: up to the
    /// newest now, which the page then gives for the next one).
    pub async fn search(
        &self,
        user: String,
        query: search::Query,
        filter: SearchFilter,
        newest: Option<i64>,
        position: Option<SearchPosition>,
        limit: usize,
    ) -> Result<SearchPage> {
        dispatch!(self, db => db.search(user, query, filter, newest, position, limit).await)
    }

    /// Indexes up to `batch` of the messages stored before search existed, newest first:
    /// how many, and the id below which messages are left (0 once none are), or `None`
    /// when none were left.
    pub async fn index_backlog(&self, batch: usize) -> Result<Option<(usize, i64)>> {
        dispatch!(self, db => db.index_backlog(batch).await)
    }
}
