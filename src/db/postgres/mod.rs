//! The PostgreSQL backend: one database that several instances of the server share.
//! This module and its children own every PostgreSQL statement of the program.
//!
//! # Design
//! A pool of connections (deadpool), each with its prepared statements cached. Every
//! write is one transaction of its own; PostgreSQL already commits concurrent
//! transactions together, so there is no writer thread in front of it. A request's
//! statements are sent together where the answer of one is not needed to send the next
//! (pipelining). The common append (no idempotency key, no quota) is a single statement
//! that checks, locks, stores and counts, its own transaction, in one round trip; an
//! append with a key or under a quota is two round trips: the checks, then the insert
//! with the commit.
//!
//! **Order.** Message ids come from one sequence, which hands out values as rows are
//! inserted, not as transactions commit: without care, a reader at cursor N could miss a
//! message with a smaller id that commits later. So an append first locks its chat (its
//! turn lock, then its row: an `UPDATE` of `updated_at`, which also checks that the chat
//! is the user's), and only then takes ids. The next append to that chat waits for the
//! lock, so it takes its ids after this one has committed: within a chat, id order is
//! commit order, and a batch's ids are consecutive in the chat with nothing between
//! them. Locks are always taken in the same order (idempotency key, chat, user) so that
//! writes never deadlock each other.
//!
//! **The turn lock** is a transaction-scoped advisory lock on the chat's id (its two
//! 32-bit halves, the two-key form, apart from the one-key form of idempotency keys),
//! taken before the chat's row. It is for speed, not for order: waiters on an advisory
//! lock queue and are woken one at a time, while waiters on a row updated by another
//! transaction all wake at its commit and race for the row again, which on a busy chat
//! cost more than the appends themselves (see BENCHMARKS.md).
//!
//! **Idempotency.** A request with an `Idempotency-Key` first takes a transaction-scoped
//! advisory lock on the user and key, so two instances given the same key at once answer
//! one after the other: the second sees what the first stored.
//!
//! **Failures.** A connection that breaks, or a request that is cancelled half-way
//! through a transaction, is dropped from the pool instead of being reused, so
//! PostgreSQL rolls its transaction back; the pool opens new connections as needed, so
//! the server recovers by itself when the database is back.

mod admin;
pub(super) mod copy;
mod error;
mod export;
mod schema;
mod search;
mod tls;

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::join;
use tokio::sync::mpsc;
use tokio_postgres::Row;

pub(crate) use admin::Admin;

use super::{
    Appended, BoxError, ChatRest, DeletedUser, Durability, Entity, Error, Options, PostgresUrl,
    Quota, Result, Step, Taken, Unavailable, cut_short,
};
use crate::domain::{
    Change, ChangeKind, ChangeLog, Chat, ChatMessage, ChatOrder, ChatSortField, IDEMPOTENCY_WINDOW,
    IdempotencyKey, MessageRef, MessageWindow, NewMessage, Role, SessionClaim, Timestamp, User,
};

/// Most messages in one slice of a whole-chat read, and the text bytes after which a
/// slice ends early (as the SQLite backend reads them).
const SLICE_ROWS: i64 = 256;
const SLICE_TEXT_BYTES: usize = 64 * 1024;

/// The server's handle on the database. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Db {
    pool: Pool,
    /// How to open the connection that listens for changes (see [`Db::follow_changes`]).
    listen: Arc<(
        tokio_postgres::Config,
        tokio_postgres_rustls::MakeRustlsConnect,
    )>,
    quota: Quota,
    /// How long recorded changes are kept for the events stream's replays.
    change_window: Duration,
    commits: Arc<AtomicU64>,
}

/// A thread of its own that drives every pooled connection: its socket and its
/// messages. A connection made and driven on an HTTP worker's runtime would break when
/// that worker stops (an idle worker stops first in a graceful shutdown) while another
/// worker still uses it from the pool. The thread ends when the last handle is dropped.
struct IoThread {
    handle: tokio::runtime::Handle,
    /// Dropped with the last handle, which lets the thread end.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl IoThread {
    fn start() -> std::io::Result<Arc<IoThread>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("neptun-postgres".to_owned())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Arc::new(IoThread {
            handle,
            _stop: stop,
        }))
    }
}

/// Makes connections on the [`IoThread`], and drives them there.
struct ConnectOnIoThread {
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    io: Arc<IoThread>,
}

impl deadpool_postgres::Connect for ConnectOnIoThread {
    fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<
                        (tokio_postgres::Client, tokio::task::JoinHandle<()>),
                        tokio_postgres::Error,
                    >,
                > + Send
                + '_,
        >,
    > {
        let (tls, config) = (self.tls.clone(), config.clone());
        let on_thread = self.io.handle.spawn({
            let (tls, config) = (tls.clone(), config.clone());
            async move {
                let (client, connection) = config.connect(tls).await?;
                let driver = tokio::spawn(async move {
                    // The client sees a closed connection; its error is the request's.
                    let _ = connection.await;
                });
                Ok((client, driver))
            }
        });
        Box::pin(async move {
            match on_thread.await {
                Ok(made) => made,
                // The thread is gone (the pool outlived it): connect here instead.
                Err(_) => {
                    let (client, connection) = config.connect(tls).await?;
                    let driver = tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    Ok((client, driver))
                }
            }
        })
    }
}

/// The settings every connection of `url` gets: a name in `pg_stat_activity`, the
/// durability of its commits, how long it waits for a lock, and a bounded connect.
fn connection_config(
    url: &PostgresUrl,
    durability: Durability,
    busy_timeout: Duration,
) -> tokio_postgres::Config {
    let mut config = url.config.clone();
    if config.get_application_name().is_none() {
        config.application_name("neptun-chat");
    }
    let synchronous_commit = match durability {
        Durability::Full => "on",
        Durability::Normal => "off",
    };
    let mut options = config.get_options().unwrap_or_default().to_owned();
    options.push_str(&format!(
        " -c synchronous_commit={synchronous_commit} -c lock_timeout={}",
        busy_timeout.as_millis().max(1)
    ));
    config.options(options.trim());
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(busy_timeout.max(Duration::from_millis(100)));
    }
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    config
}

impl Db {
    /// Connects to the database at `url`, brings its schema up to date (see the
    /// `schema` module) and sets up the pool.
    pub(super) async fn open(url: &PostgresUrl, options: Options) -> Result<Db> {
        let Options {
            durability,
            pool_size,
            busy_timeout,
            quota,
            change_window,
            write_queue: _,
        } = options;
        let tls = tls::connector(url)?;
        let config = connection_config(url, durability, busy_timeout);
        // Migrate on a connection of its own, so that every pooled connection is made
        // later, on the runtime of the worker that uses it.
        let (mut client, connection) = config.connect(tls.clone()).await?;
        let driver = tokio::spawn(connection);
        schema::migrate(&mut client).await?;
        drop(client);
        let _ = driver.await;
        let io = IoThread::start().map_err(|err| Error::Unusable {
            what: format!("start the connection thread for the database {url}"),
            reason: err.to_string(),
        })?;
        let listen = Arc::new((config.clone(), tls.clone()));
        let manager = Manager::from_connect(
            config,
            ConnectOnIoThread {
                tls,
                io: Arc::clone(&io),
            },
            ManagerConfig {
                // A closed connection is noticed without a query; a broken one fails its
                // next statement, and is then dropped (see `Conn`).
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let wait = busy_timeout.max(Duration::from_millis(1));
        let pool = Pool::builder(manager)
            .max_size(usize::try_from(pool_size.max(1)).unwrap_or(16))
            .wait_timeout(Some(wait))
            .create_timeout(Some(wait))
            .recycle_timeout(Some(wait))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|err| Error::Unusable {
                what: format!("set up the connection pool for the database {url}"),
                reason: err.to_string(),
            })?;
        Ok(Db {
            pool,
            listen,
            quota,
            change_window,
            commits: Arc::new(AtomicU64::new(0)),
        })
    }

    /// A pooled connection, waiting at most the busy timeout for one.
    async fn conn(&self) -> Result<Conn> {
        let client = self.pool.get().await.map_err(Error::from)?;
        Ok(Conn {
            client: Some(client),
            clean: true,
        })
    }

    /// Whether requests are waiting for a connection: every one is in use.
    pub(super) fn writes_backlogged(&self) -> bool {
        self.pool.status().waiting > 0
    }

    /// How many write transactions this instance has committed.
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn committed(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
    }

    /// Answers whether the database takes queries and has the schema this program
    /// expects.
    pub(super) async fn ready(&self) -> Result<()> {
        let conn = self.conn().await?;
        let version = conn.guard(schema::stored_version(&conn).await)?;
        if version != schema::SCHEMA_VERSION {
            return Err(Error::Incompatible(format!(
                "schema version {version}, expected {}",
                schema::SCHEMA_VERSION
            )));
        }
        Ok(())
    }

    /// Closes the pool: requests in flight keep their connections and finish; new
    /// ones fail with [`Unavailable::WriterGone`].
    pub(super) async fn close(&self) -> Result<()> {
        self.pool.close();
        Ok(())
    }

    /// Deletes expired sessions and idempotency answers older than 24 hours.
    pub(super) async fn purge_expired(&self) -> Result<usize> {
        let conn = self.conn().await?;
        let now = Utc::now();
        let keys_before = now - IDEMPOTENCY_WINDOW;
        let sessions = conn
            .execute("DELETE FROM sessions WHERE expires_at <= $1", &[&now])
            .await;
        let sessions = conn.guard(sessions)?;
        let keys = conn
            .execute(
                "DELETE FROM idempotency_keys WHERE created_at <= $1",
                &[&keys_before],
            )
            .await;
        let keys = conn.guard(keys)?;
        let window =
            chrono::Duration::from_std(self.change_window).unwrap_or(chrono::Duration::MAX);
        let changes = match now.checked_sub_signed(window) {
            Some(before) => {
                let deleted = conn
                    .execute("DELETE FROM changes WHERE created_at < $1", &[&before])
                    .await;
                conn.guard(deleted)?
            }
            None => 0,
        };
        Ok(usize::try_from(sessions + keys + changes).unwrap_or(usize::MAX))
    }

    /// Answers whether the database can be read.
    pub(super) async fn ping(&self) -> Result<()> {
        let conn = self.conn().await?;
        let answer = conn.simple_query("SELECT 1").await;
        conn.guard(answer).map(drop)
    }

    /// Calls `wake` with the user of every change any instance commits, as PostgreSQL
    /// notifies them on [`NOTIFY`], over one connection of its own; `wake(None)` each
    /// time that connection is (re)established, since changes made while it was down
    /// were not notified, and whenever notifications came faster than they were taken.
    /// Reconnects after a second when the connection fails. Runs until `wake` says
    /// to stop (returns false).
    pub(super) async fn follow_changes(&self, wake: impl Fn(Option<&str>) -> bool) {
        use futures_util::StreamExt;
        let (config, tls) = &*self.listen;
        loop {
            match config.connect(tls.clone()).await {
                Ok((client, mut connection)) => {
                    let (heard, mut notes) = mpsc::channel::<Option<String>>(1024);
                    let driver = tokio::spawn(async move {
                        let mut messages =
                            futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                        let mut lost = false;
                        while let Some(Ok(message)) = messages.next().await {
                            let tokio_postgres::AsyncMessage::Notification(note) = message else {
                                continue;
                            };
                            if lost && heard.try_send(None).is_ok() {
                                lost = false;
                            }
                            if heard.try_send(Some(note.payload().to_owned())).is_err() {
                                lost = true;
                            }
                        }
                    });
                    match client.batch_execute(&format!("LISTEN {NOTIFY}")).await {
                        Ok(()) => {
                            if !wake(None) {
                                driver.abort();
                                return;
                            }
                            while let Some(user) = notes.recv().await {
                                if !wake(user.as_deref()) {
                                    driver.abort();
                                    return;
                                }
                            }
                            log::warn!("the connection that listens for changes was lost");
                        }
                        Err(err) => log::warn!("listening for changes failed: {err}"),
                    }
                    driver.abort();
                }
                Err(err) => log::warn!("connecting to listen for changes failed: {err}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            if !wake(None) {
                return;
            }
        }
    }

    /// See [`crate::db::Db::read_changes`]: the feed's state and the changes in one
    /// snapshot, in one round trip.
    pub(super) async fn read_changes(
        &self,
        user: String,
        after: i64,
        limit: usize,
    ) -> Result<ChangeLog> {
        let mut conn = self.conn().await?;
        let state = conn.stmt(FEED_STATE).await?;
        let read = conn.stmt(READ_CHANGES).await?;
        let limit = sql_count(limit);
        conn.clean = false;
        let (begun, state, rows, ended) = join!(
            conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
            async { conn.query_opt(&state, &[&user]).await },
            async { conn.query(&read, &[&user, &after, &limit]).await },
            conn.batch_execute("COMMIT"),
        );
        conn.guard(begun.and(ended))?;
        conn.clean = true;
        let Some(state) = conn.guard(state)? else {
            return Err(Error::NotFound(Entity::User));
        };
        let mut changes: Vec<Change> = Vec::new();
        for row in conn.guard(rows)? {
            let seq: i64 = row.try_get(0)?;
            if changes.last().is_none_or(|change| change.seq != seq) {
                let kind: &str = row.try_get(1)?;
                let kind = ChangeKind::parse(kind).ok_or_else(|| {
                    Error::described(
                        Step::Statement,
                        format!("a change of an unknown kind: {kind}"),
                    )
                })?;
                let chat = match row.try_get::<_, Option<i64>>(9)? {
                    Some(_) => Some(chat_from_columns(&row, 9)?),
                    None => None,
                };
                changes.push(Change {
                    seq,
                    kind,
                    chat_id: row.try_get(2)?,
                    detail: row.try_get(3)?,
                    chat,
                    messages: Vec::new(),
                    created_at: Timestamp::from_datetime(row.try_get(4)?),
                });
            }
            let Some(id) = row.try_get::<_, Option<i64>>(5)? else {
                continue;
            };
            if let Some(change) = changes.last_mut() {
                let chat_id = change.chat_id.unwrap_or_default();
                change.messages.push(ChatMessage {
                    id,
                    chat_conversation_id: chat_id,
                    neptun_user_id: user.clone(),
                    message: text(&row, 6)?.to_owned(),
                    actor: actor(row.try_get(7)?)?,
                    created_at: Timestamp::from_datetime(row.try_get(8)?),
                });
            }
        }
        Ok(ChangeLog {
            changes,
            last: state.try_get(0)?,
            oldest: state.try_get(1)?,
        })
    }

    /// See [`crate::db::Db::session`].
    pub(super) async fn session(
        &self,
        token_hash: [u8; 32],
    ) -> Result<Option<(String, Timestamp)>> {
        let conn = self.conn().await?;
        let stmt = conn.stmt(LIVE_SESSION).await?;
        let row = conn
            .query_opt(&stmt, &[&&token_hash[..], &Utc::now()])
            .await;
        match conn.guard(row)? {
            Some(row) => Ok(Some((
                row.try_get(0)?,
                Timestamp::from_datetime(row.try_get(1)?),
            ))),
            None => Ok(None),
        }
    }

    /// The user a live session token hash belongs to.
    pub(super) async fn session_user(&self, token_hash: [u8; 32]) -> Result<Option<String>> {
        let conn = self.conn().await?;
        let stmt = conn.stmt(LIVE_SESSION_USER).await?;
        let row = conn
            .query_opt(&stmt, &[&&token_hash[..], &Utc::now()])
            .await;
        conn.guard(row)?
            .map(|row| row.try_get(0))
            .transpose()
            .map_err(Error::from)
    }
}

/// How a write wakes the events streams of every instance (see `crate::events`): each
/// statement that records a change in `changes` (numbered by moving the user's
/// `last_change`, which locks the user's row until the commit, so numbers follow commit
/// order) also calls `pg_notify` on this channel with the user's id, which PostgreSQL
/// delivers at the commit, and only if it commits. The payload is only a wake-up: a
/// listener reads what is new from `changes`, so a notification lost or merged with
/// another loses nothing.
pub(crate) const NOTIFY: &str = "neptun_changes";

/// Where user `$1`'s change feed stands: their newest change's number and the oldest one
/// kept (NULL if none is); no row if there is no such user.
const FEED_STATE: &str = "SELECT last_change, \
     (SELECT min(seq) FROM changes WHERE user_id = $1) FROM users WHERE id = $1";

/// Up to `$3` of user `$1`'s changes after number `$2`, oldest first, each with the
/// messages it stored that are still there (a row per message, NULLs if none) and the
/// chat it created or renamed as it is now (NULLs if it is gone).
const READ_CHANGES: &str = "SELECT c.seq, c.kind, c.chat_id, c.detail, c.created_at, \
         m.id, m.message, m.actor, m.created_at, \
         ch.id, ch.name, ch.model, ch.neptun_user_id, ch.created_at, ch.updated_at \
     FROM (SELECT * FROM changes WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3) AS c \
     LEFT JOIN chat_messages AS m ON c.kind = 'messages_added' \
         AND m.chat_conversation_id = c.chat_id AND m.id BETWEEN c.first_id AND c.last_id \
     LEFT JOIN chat_conversations AS ch \
         ON c.kind IN ('chat_created', 'chat_renamed') AND ch.id = c.chat_id \
     ORDER BY c.seq, m.id";

/// The user of a live session: `$1` token hash, `$2` now.
const LIVE_SESSION_USER: &str =
    "SELECT user_id FROM sessions WHERE token_hash = $1 AND expires_at > $2";

/// The user and expiry of a live session: `$1` token hash, `$2` now.
const LIVE_SESSION: &str =
    "SELECT user_id, expires_at FROM sessions WHERE token_hash = $1 AND expires_at > $2";

/// Ends the session with token hash `$1`, or every session of user `$2` (either may be
/// NULL), recording each end at `$3` as a change of its user; one row: how many ended,
/// and how many wake-ups were sent.
const END_SESSIONS: &str = "WITH gone AS ( \
         DELETE FROM sessions WHERE token_hash = $1 OR user_id = $2 \
         RETURNING user_id, token_hash), \
     numbered AS ( \
         SELECT user_id, token_hash, \
             row_number() OVER (PARTITION BY user_id ORDER BY token_hash) AS n, \
             count(*) OVER (PARTITION BY user_id) AS total \
         FROM gone), \
     counted AS ( \
         UPDATE users SET last_change = last_change + ended.total \
         FROM (SELECT user_id, count(*) AS total FROM gone GROUP BY user_id) AS ended \
         WHERE users.id = ended.user_id RETURNING users.id, users.last_change), \
     logged AS ( \
         INSERT INTO changes (user_id, seq, kind, detail, created_at) \
         SELECT numbered.user_id, counted.last_change - numbered.total + numbered.n, \
             'session_ended', encode(numbered.token_hash, 'hex'), $3 \
         FROM numbered JOIN counted ON counted.id = numbered.user_id \
         RETURNING user_id) \
     SELECT (SELECT count(*) FROM gone), \
         (SELECT count(*) FROM (SELECT DISTINCT user_id FROM logged) AS woken, \
             pg_notify('neptun_changes', woken.user_id))";

/// Creates a chat for user `$1` named `$2` with model `$3` at `$4`, recording the change;
/// its id.
const CREATE_CHAT: &str = "WITH chat AS ( \
         INSERT INTO chat_conversations (neptun_user_id, name, model, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $4) RETURNING id), \
     counted AS ( \
         UPDATE users SET last_change = last_change + 1 WHERE id = $1 \
         RETURNING last_change), \
     logged AS ( \
         INSERT INTO changes (user_id, seq, kind, chat_id, created_at) \
         SELECT $1, counted.last_change, 'chat_created', chat.id, $4 FROM counted, chat \
         RETURNING user_id) \
     SELECT chat.id, \
         (SELECT count(*) FROM logged, pg_notify('neptun_changes', logged.user_id)) \
     FROM chat";

/// Renames chat `$1` of user `$2` to `$3` at `$4`, recording the change; the chat, or
/// no row if it is not the user's.
const RENAME_CHAT: &str = "WITH renamed AS ( \
         UPDATE chat_conversations SET name = $3, updated_at = $4 \
         WHERE id = $1 AND neptun_user_id = $2 \
         RETURNING id, name, model, neptun_user_id, created_at, updated_at), \
     counted AS ( \
         UPDATE users SET last_change = last_change + 1 \
         WHERE id = $2 AND EXISTS (SELECT 1 FROM renamed) RETURNING last_change), \
     logged AS ( \
         INSERT INTO changes (user_id, seq, kind, chat_id, created_at) \
         SELECT $2, counted.last_change, 'chat_renamed', $1, $4 FROM counted \
         RETURNING user_id) \
     SELECT renamed.*, \
         (SELECT count(*) FROM logged, pg_notify('neptun_changes', logged.user_id)) \
     FROM renamed";

/// Deletes those of chats `$1` that are user `$2`'s, with their messages (by the foreign
/// key's cascade), recording each deletion at `$3`; the ids deleted.
const DELETE_CHATS: &str = "WITH gone AS ( \
         DELETE FROM chat_conversations WHERE id = ANY($1) AND neptun_user_id = $2 \
         RETURNING id), \
     numbered AS ( \
         SELECT id, row_number() OVER (ORDER BY id) AS n, count(*) OVER () AS total \
         FROM gone), \
     counted AS ( \
         UPDATE users SET last_change = last_change + (SELECT count(*) FROM gone) \
         WHERE id = $2 AND EXISTS (SELECT 1 FROM gone) RETURNING last_change), \
     logged AS ( \
         INSERT INTO changes (user_id, seq, kind, chat_id, created_at) \
         SELECT $2, counted.last_change - numbered.total + numbered.n, 'chat_deleted', \
             numbered.id, $3 \
         FROM counted, numbered RETURNING user_id) \
     SELECT gone.id, \
         (SELECT count(*) FROM (SELECT DISTINCT user_id FROM logged) AS woken, \
             pg_notify('neptun_changes', woken.user_id)) \
     FROM gone";

/// Deletes up to `$2` chats of any user with no activity since `$1` (their
/// `updated_at`), oldest first, with their messages (by the foreign key's cascade),
/// recording each deletion at `$3` as a change of its user; the owner and id of each.
/// Chats locked by a write in flight are skipped: that write is activity. One instance
/// at a time does this (a transaction-scoped advisory lock, not waited for): two would
/// update the same users' feed numbers in orders of their own and could deadlock.
const EXPIRE_CHATS: &str = "WITH turn AS ( \
         SELECT pg_try_advisory_xact_lock(hashtextextended('neptun-chat retention', 0)) \
             AS mine), \
     candidates AS ( \
         SELECT id FROM chat_conversations \
         WHERE updated_at < $1 AND (SELECT mine FROM turn) \
         ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED), \
     gone AS ( \
         DELETE FROM chat_conversations AS c USING candidates \
         WHERE c.id = candidates.id AND c.updated_at < $1 \
         RETURNING c.id, c.neptun_user_id), \
     numbered AS ( \
         SELECT id, neptun_user_id, \
             row_number() OVER (PARTITION BY neptun_user_id ORDER BY id) AS n, \
             count(*) OVER (PARTITION BY neptun_user_id) AS total \
         FROM gone), \
     counted AS ( \
         UPDATE users SET last_change = last_change + ended.total \
         FROM (SELECT neptun_user_id, count(*) AS total FROM gone GROUP BY neptun_user_id) \
             AS ended \
         WHERE users.id = ended.neptun_user_id RETURNING users.id, users.last_change), \
     logged AS ( \
         INSERT INTO changes (user_id, seq, kind, chat_id, created_at) \
         SELECT numbered.neptun_user_id, counted.last_change - numbered.total + numbered.n, \
             'chat_deleted', numbered.id, $3 \
         FROM numbered JOIN counted ON counted.id = numbered.neptun_user_id \
         RETURNING user_id) \
     SELECT gone.neptun_user_id, gone.id, \
         (SELECT count(*) FROM (SELECT DISTINCT user_id FROM logged) AS woken, \
             pg_notify('neptun_changes', woken.user_id)) \
     FROM gone ORDER BY gone.neptun_user_id, gone.id";

/// Locks idempotency key `$1` (the user and the key) until the transaction ends.
const LOCK_KEY: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))";

/// Locks chat `$1` of user `$2` for an append or a delete of its last turn (its turn
/// lock, then its row), moving its `updated_at` to `$3`; no row if the chat is not the
/// user's.
const LOCK_CHAT: &str = "WITH turn AS ( \
         SELECT pg_advisory_xact_lock(($1::bigint >> 32)::int, $1::bigint::bit(32)::int)) \
     UPDATE chat_conversations SET updated_at = $3 \
     WHERE id = $1 AND neptun_user_id = $2 AND EXISTS (SELECT 1 FROM turn) RETURNING id";

/// Appends message `$5` (text) / `$6` (actor) of `$7` bytes, with its words `$8` (a
/// `tsvector`, see [`crate::search`]), to chat `$1` of user `$2` at `$4`, if session `$3` is live and the user's, in one statement: the whole append
/// when there is no idempotency key and no quota. Checks the session, takes the chat's
/// turn lock, locks the chat's row (moving its `updated_at`, and checking that the chat
/// is the user's), then stores the message, counts it and records the change (see
/// [`NOTIFY`]). Each step runs only if the one before it passed, so a failed check
/// changes nothing. One row: the session's user (NULL if the session is unknown or
/// expired), the new id (NULL if nothing was stored: the chat is not the user's), and
/// how many wake-ups were sent.
const APPEND_ONE: &str = "WITH claimed AS ( \
         SELECT user_id FROM sessions WHERE token_hash = $3 AND expires_at > $4), \
     turn AS ( \
         SELECT pg_advisory_xact_lock(($1::bigint >> 32)::int, $1::bigint::bit(32)::int) \
         FROM claimed WHERE user_id = $2), \
     locked AS ( \
         UPDATE chat_conversations SET updated_at = $4 \
         WHERE id = $1 AND neptun_user_id = $2 AND EXISTS (SELECT 1 FROM turn) \
         RETURNING id), \
     stored AS ( \
         INSERT INTO chat_messages \
             (chat_conversation_id, neptun_user_id, message, actor, created_at, search) \
         SELECT $1, $2, $5::bytea, $6::text, $4, $8::text::tsvector FROM locked \
         RETURNING id), \
     counted AS ( \
         UPDATE users SET stored_messages = stored_messages + 1, \
             stored_bytes = stored_bytes + $7, last_change = last_change + 1 \
         WHERE id = $2 AND EXISTS (SELECT 1 FROM locked) RETURNING last_change), \
     logged AS ( \
         INSERT INTO changes (user_id, seq, kind, chat_id, first_id, last_id, created_at) \
         SELECT $2, counted.last_change, 'messages_added', $1, stored.id, stored.id, $4 \
         FROM counted, stored RETURNING user_id) \
     SELECT (SELECT user_id FROM claimed), stored.id, \
         (SELECT count(*) FROM logged, pg_notify('neptun_changes', logged.user_id)) \
     FROM (VALUES (1)) AS one LEFT JOIN stored ON true";

/// [`APPEND_ONE`] for the messages `$5` (texts) / `$6` (actors) / `$8` (words): one row per stored
/// message, ids ascending, or one row with a NULL id if nothing was stored. The ids are
/// taken after the chat's row is locked, and matched to the array positions by rank
/// (as in [`STORE_MESSAGES`]).
const APPEND_MANY: &str = "WITH claimed AS ( \
         SELECT user_id FROM sessions WHERE token_hash = $3 AND expires_at > $4), \
     turn AS ( \
         SELECT pg_advisory_xact_lock(($1::bigint >> 32)::int, $1::bigint::bit(32)::int) \
         FROM claimed WHERE user_id = $2), \
     locked AS ( \
         UPDATE chat_conversations SET updated_at = $4 \
         WHERE id = $1 AND neptun_user_id = $2 AND EXISTS (SELECT 1 FROM turn) \
         RETURNING id), \
     taken AS ( \
         SELECT id, row_number() OVER (ORDER BY id) AS n FROM ( \
             SELECT nextval('chat_messages_id_seq'::regclass) AS id \
             FROM locked, generate_series(1, cardinality($5::bytea[]))) AS ids), \
     stored AS ( \
         INSERT INTO chat_messages \
             (id, chat_conversation_id, neptun_user_id, message, actor, created_at, search) \
         SELECT taken.id, $1, $2, given.message, given.actor, $4, given.words::tsvector \
         FROM taken JOIN unnest($5::bytea[], $6::text[], $8::text[]) WITH ORDINALITY \
             AS given (message, actor, words, n) USING (n) \
         RETURNING id), \
     counted AS ( \
         UPDATE users SET stored_messages = stored_messages + cardinality($5::bytea[]), \
             stored_bytes = stored_bytes + $7, last_change = last_change + 1 \
         WHERE id = $2 AND EXISTS (SELECT 1 FROM locked) RETURNING last_change), \
     logged AS ( \
         INSERT INTO changes (user_id, seq, kind, chat_id, first_id, last_id, created_at) \
         SELECT $2, counted.last_change, 'messages_added', $1, min(stored.id), max(stored.id), \
             $4 \
         FROM counted, stored GROUP BY counted.last_change RETURNING user_id) \
     SELECT (SELECT user_id FROM claimed), stored.id, \
         (SELECT count(*) FROM logged, pg_notify('neptun_changes', logged.user_id)) \
     FROM (VALUES (1)) AS one LEFT JOIN stored ON true ORDER BY stored.id";

/// What `$1`'s key `$2` stored after `$3`.
const FIND_KEY: &str = "SELECT request_hash, first_message_id, last_message_id, message_count \
     FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND created_at > $3";

/// User `$1`'s storage counts, locked until the append commits, so that two appends of
/// one user cannot both pass the quota.
const LOCK_STORED: &str =
    "SELECT stored_messages, stored_bytes FROM users WHERE id = $1 FOR NO KEY UPDATE";

/// Stores the messages `$3` (texts) / `$4` (actors) / `$9` (words) in chat `$1` of user `$2` at `$5`,
/// adds them to the user's counts (`$6` bytes), records the change (see [`NOTIFY`]), keeps idempotency key `$7` with
/// request hash `$8` when `$7` is not NULL; returns the new ids, ascending. The ids are
/// taken first and matched to the array positions by rank, so whatever order the
/// sequence hands them out in, the i-th message gets the i-th smallest id.
const STORE_MESSAGES: &str = "WITH taken AS ( \
         SELECT id, row_number() OVER (ORDER BY id) AS n FROM ( \
             SELECT nextval('chat_messages_id_seq'::regclass) AS id \
             FROM generate_series(1, cardinality($3::bytea[]))) AS ids), \
     stored AS ( \
         INSERT INTO chat_messages \
             (id, chat_conversation_id, neptun_user_id, message, actor, created_at, search) \
         SELECT taken.id, $1, $2, given.message, given.actor, $5, given.words::tsvector \
         FROM taken JOIN unnest($3::bytea[], $4::text[], $9::text[]) WITH ORDINALITY \
             AS given (message, actor, words, n) USING (n) \
         RETURNING id), \
     counted AS ( \
         UPDATE users SET stored_messages = stored_messages + cardinality($3::bytea[]), \
             stored_bytes = stored_bytes + $6, last_change = last_change + 1 \
         WHERE id = $2 RETURNING last_change), \
     logged AS ( \
         INSERT INTO changes (user_id, seq, kind, chat_id, first_id, last_id, created_at) \
         SELECT $2, counted.last_change, 'messages_added', $1, min(stored.id), max(stored.id), \
             $5 \
         FROM counted, stored GROUP BY counted.last_change RETURNING user_id), \
     kept AS ( \
         INSERT INTO idempotency_keys (user_id, key, request_hash, first_message_id, \
             last_message_id, message_count, created_at) \
         SELECT $2, $7, $8, min(id), max(id), count(*), $5 FROM stored \
         HAVING $7::text IS NOT NULL \
         ON CONFLICT (user_id, key) DO UPDATE SET request_hash = excluded.request_hash, \
             first_message_id = excluded.first_message_id, \
             last_message_id = excluded.last_message_id, \
             message_count = excluded.message_count, created_at = excluded.created_at) \
     SELECT id, (SELECT count(*) FROM logged, pg_notify('neptun_changes', logged.user_id)) \
     FROM stored ORDER BY id";

/// The messages of chat `$1` with ids `$2` to `$3`: an idempotency key's answer.
const MESSAGE_RANGE: &str = "SELECT id, neptun_user_id, message, actor, created_at \
     FROM chat_messages WHERE chat_conversation_id = $1 AND id BETWEEN $2 AND $3 ORDER BY id";

impl Db {
    /// See [`crate::db::Db::append_messages`], and the module docs for the locks.
    pub(super) async fn append_messages(
        &self,
        claim: SessionClaim,
        chat_id: i64,
        messages: Vec<NewMessage>,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<Appended> {
        if idempotency.is_none() && !self.quota.is_set() {
            return self.append_at_once(claim, chat_id, messages).await;
        }
        // The words are made before any lock is taken.
        let words: Vec<String> = messages
            .iter()
            .map(|m| crate::search::tsvector(&m.content))
            .collect();
        let mut conn = self.conn().await?;
        let now_text = Timestamp::now();
        let now = instant(&now_text)?;
        let not_before = now - IDEMPOTENCY_WINDOW;
        let owner = claim.user_id.as_str();
        // Every statement of the first round trip is prepared beforehand, so that each
        // is sent when `join!` first polls it, in the order written, and so runs in that
        // order: a statement given as text would be prepared first, and run only after
        // the ones behind it, taking the key's lock after the chat's (a deadlock with an
        // append holding the key and waiting for the chat).
        let (lock_key, session, lock_chat, find_key, lock_stored) = (
            conn.stmt(LOCK_KEY).await?,
            conn.stmt(LIVE_SESSION_USER).await?,
            conn.stmt(LOCK_CHAT).await?,
            conn.stmt(FIND_KEY).await?,
            conn.stmt(LOCK_STORED).await?,
        );
        let key_lock = idempotency
            .as_ref()
            .map(|key| format!("{}\n{}", claim.user_id, key.key));
        conn.clean = false;
        let quota_set = self.quota.is_set();
        // One round trip: the transaction, the locks and the checks.
        let (begun, locked_key, session, chat, kept, stored) = join!(
            conn.batch_execute("BEGIN"),
            async {
                match &key_lock {
                    Some(lock) => conn.execute(&lock_key, &[lock]).await.map(drop),
                    None => Ok(()),
                }
            },
            async {
                conn.query_opt(&session, &[&&claim.token_hash[..], &now])
                    .await
            },
            async { conn.query_opt(&lock_chat, &[&chat_id, &owner, &now]).await },
            async {
                match &idempotency {
                    Some(key) => {
                        conn.query_opt(&find_key, &[&owner, &key.key, &not_before])
                            .await
                    }
                    None => Ok(None),
                }
            },
            async {
                if quota_set {
                    conn.query_opt(&lock_stored, &[&owner]).await
                } else {
                    Ok(None)
                }
            },
        );
        let checked = (|| {
            begun?;
            locked_key?;
            check_claim(session?, &claim)?;
            // A key's answer comes before the chat's check, as on SQLite: the retry of a
            // request whose chat was deleted since is told that the answer is gone.
            let kept = kept?;
            if kept.is_none() && chat?.is_none() {
                return Err(Error::NotFound(Entity::Chat));
            }
            Ok((kept, stored?))
        })();
        let (kept, stored) = match checked {
            Ok(found) => found,
            Err(err) => return Err(conn.rollback(err).await),
        };
        if let (Some(key), Some(kept)) = (&idempotency, kept) {
            let replayed = self.replay(&conn, chat_id, key, &kept).await;
            // A replay stores nothing, and must not move the chat's `updated_at` either.
            return match replayed {
                Ok(again) => {
                    conn.end("ROLLBACK").await?;
                    Ok(Appended::Replayed(again))
                }
                Err(err) => Err(conn.rollback(err).await),
            };
        }
        let bytes: usize = messages.iter().map(|m| m.content.len()).sum();
        if quota_set {
            let counts = match stored {
                Some(row) => (row.try_get(0)?, row.try_get(1)?),
                None => (0, 0),
            };
            if let Err(err) = self.quota.admits(counts, (messages.len(), bytes)) {
                return Err(conn.rollback(err).await);
            }
        }
        let texts: Vec<&[u8]> = messages.iter().map(|m| m.content.as_bytes()).collect();
        let actors: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let key = idempotency.as_ref().map(|key| key.key.as_str());
        let hash = idempotency.as_ref().map(|key| &key.request_hash[..]);
        let store = conn.stmt(STORE_MESSAGES).await?;
        // One round trip: the insert and the commit.
        let (ids, committed) = join!(
            async {
                conn.query(
                    &store,
                    &[
                        &chat_id, &owner, &texts, &actors, &now, &bytes, &key, &hash, &words,
                    ],
                )
                .await
            },
            conn.batch_execute("COMMIT"),
        );
        let ids = match (ids, committed) {
            (Ok(ids), Ok(())) => ids,
            (Err(err), _) | (_, Err(err)) => {
                let err = Error::from(err);
                return Err(conn.rollback(err).await);
            }
        };
        conn.clean = true;
        self.committed();
        let ids = ids
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<Vec<i64>, _>>()?;
        appended(ids, &claim, chat_id, messages, now_text)
    }

    /// An append without an idempotency key or a quota: one statement, its own
    /// transaction, in one round trip ([`APPEND_ONE`] or [`APPEND_MANY`]). The chat's
    /// locks are held only while PostgreSQL runs it, never while an answer travels to
    /// this process and the next statement back.
    async fn append_at_once(
        &self,
        claim: SessionClaim,
        chat_id: i64,
        messages: Vec<NewMessage>,
    ) -> Result<Appended> {
        let conn = self.conn().await?;
        let now_text = Timestamp::now();
        let now = instant(&now_text)?;
        let owner = claim.user_id.as_str();
        let token_hash = &claim.token_hash[..];
        let bytes: usize = messages.iter().map(|m| m.content.len()).sum();
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let rows = match messages.as_slice() {
            [one] => {
                let stmt = conn.stmt(APPEND_ONE).await?;
                let (text, actor) = (one.content.as_bytes(), one.role.as_str());
                let words = crate::search::tsvector(&one.content);
                conn.query(
                    &stmt,
                    &[
                        &chat_id,
                        &owner,
                        &token_hash,
                        &now,
                        &text,
                        &actor,
                        &bytes,
                        &words,
                    ],
                )
                .await
            }
            _ => {
                let stmt = conn.stmt(APPEND_MANY).await?;
                let texts: Vec<&[u8]> = messages.iter().map(|m| m.content.as_bytes()).collect();
                let actors: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
                let words: Vec<String> = messages
                    .iter()
                    .map(|m| crate::search::tsvector(&m.content))
                    .collect();
                conn.query(
                    &stmt,
                    &[
                        &chat_id,
                        &owner,
                        &token_hash,
                        &now,
                        &texts,
                        &actors,
                        &bytes,
                        &words,
                    ],
                )
                .await
            }
        };
        let rows = conn.guard(rows)?;
        let Some(first) = rows.first() else {
            return Err(Error::described(
                Step::Statement,
                "an append answered no row".to_owned(),
            ));
        };
        let user: Option<&str> = first.try_get(0)?;
        match user {
            None => return Err(Error::NotFound(Entity::Session)),
            Some(user) if user != claim.user_id => return Err(Error::WrongUser),
            Some(_) => {}
        }
        let ids = rows
            .iter()
            .filter_map(|row| row.try_get::<_, Option<i64>>(1).transpose())
            .collect::<Result<Vec<i64>, _>>()?;
        if ids.is_empty() {
            return Err(Error::NotFound(Entity::Chat));
        }
        self.committed();
        appended(ids, &claim, chat_id, messages, now_text)
    }

    /// The messages an idempotency key stored, for its retry, after checking that the
    /// retry asks for the same thing.
    async fn replay(
        &self,
        conn: &Conn,
        chat_id: i64,
        key: &IdempotencyKey,
        kept: &Row,
    ) -> Result<Vec<ChatMessage>> {
        let hash: &[u8] = kept.try_get(0)?;
        // A stored hash of another length is a damaged row, not another request.
        if hash.len() != key.request_hash.len() {
            return Err(Error::described(
                Step::Statement,
                format!("a stored request hash is {} bytes long, not 32", hash.len()),
            ));
        }
        if hash != key.request_hash {
            return Err(Error::KeyReused);
        }
        let (first, last, count): (i64, i64, i64) =
            (kept.try_get(1)?, kept.try_get(2)?, kept.try_get(3)?);
        let stmt = conn.stmt(MESSAGE_RANGE).await?;
        let rows = conn.query(&stmt, &[&chat_id, &first, &last]).await?;
        if i64::try_from(rows.len()) != Ok(count) {
            return Err(Error::KeyAnswerGone);
        }
        rows.iter()
            .map(|row| {
                let message = owned_message(row, chat_id)?;
                Ok(message)
            })
            .collect()
    }
}

/// The answer to an append that stored `messages` as `ids` (ascending, one per message).
fn appended(
    ids: Vec<i64>,
    claim: &SessionClaim,
    chat_id: i64,
    messages: Vec<NewMessage>,
    created_at: Timestamp,
) -> Result<Appended> {
    if ids.len() != messages.len() {
        return Err(Error::described(
            Step::Write,
            format!("stored {} of {} messages", ids.len(), messages.len()),
        ));
    }
    let stored = ids
        .into_iter()
        .zip(messages)
        .map(|(id, message)| ChatMessage {
            id,
            chat_conversation_id: chat_id,
            neptun_user_id: claim.user_id.clone(),
            message: message.content,
            actor: message.role,
            created_at: created_at.clone(),
        })
        .collect();
    Ok(Appended::Stored(stored))
}

/// Checks that the session row found is the claimed user's.
fn check_claim(session: Option<Row>, claim: &SessionClaim) -> Result<()> {
    let Some(session) = session else {
        return Err(Error::NotFound(Entity::Session));
    };
    let user: &str = session.try_get(0)?;
    if user == claim.user_id {
        Ok(())
    } else {
        Err(Error::WrongUser)
    }
}

impl Db {
    /// See [`crate::db::Db::sign_up`].
    pub(super) async fn sign_up(
        &self,
        id: String,
        email: String,
        password_hash: String,
        token_hash: [u8; 32],
        expires_at: Timestamp,
    ) -> Result<User> {
        let mut conn = self.conn().await?;
        let now_text = Timestamp::now();
        let (now, expires) = (instant(&now_text)?, instant(&expires_at)?);
        let insert_user = conn.stmt(INSERT_USER).await?;
        let insert_session = conn.stmt(INSERT_SESSION).await?;
        conn.clean = false;
        let (begun, user, session, committed) = join!(
            conn.batch_execute("BEGIN"),
            async {
                conn.execute(
                    &insert_user,
                    &[&id, &Some(&email), &Some(&password_hash), &now],
                )
                .await
            },
            async {
                conn.execute(&insert_session, &[&&token_hash[..], &id, &now, &expires])
                    .await
            },
            // After a failed statement this ends the transaction with a rollback.
            conn.batch_execute("COMMIT"),
        );
        if let Err(err) = begun.and(user).and(session).and(committed) {
            return Err(conn.rollback(Error::from(err)).await);
        }
        conn.clean = true;
        self.committed();
        Ok(User {
            id,
            primary_email: Some(email),
            created_at: now_text,
        })
    }

    /// The user with this id.
    pub(super) async fn user(&self, id: String) -> Result<Option<User>> {
        let conn = self.conn().await?;
        let found = find_user(&conn, &id).await;
        conn.guard(found)
    }

    /// The user with this email and their password hash.
    pub(super) async fn user_by_email(
        &self,
        email: String,
    ) -> Result<Option<(User, Option<String>)>> {
        let conn = self.conn().await?;
        let stmt = conn
            .stmt("SELECT id, primary_email, created_at, password_hash FROM users WHERE primary_email = $1")
            .await?;
        let row = conn.query_opt(&stmt, &[&email]).await;
        match conn.guard(row)? {
            Some(row) => Ok(Some((user_from_row(&row)?, row.try_get(3)?))),
            None => Ok(None),
        }
    }

    /// See [`crate::db::Db::import`]: one transaction.
    pub(super) async fn import(
        &self,
        user: String,
        chats: Vec<crate::archive::ImportChat>,
    ) -> Result<crate::db::Imported> {
        let mut conn = self.conn().await?;
        conn.clean = false;
        let tx = conn.transaction().await?;
        let imported = import_chats(&tx, &user, chats).await?;
        tx.commit().await?;
        conn.clean = true;
        self.committed();
        Ok(imported)
    }

    /// The user with this id and their password hash, for re-checking the password.
    pub(super) async fn user_with_password(
        &self,
        id: String,
    ) -> Result<Option<(User, Option<String>)>> {
        let conn = self.conn().await?;
        let stmt = conn
            .stmt("SELECT id, primary_email, created_at, password_hash FROM users WHERE id = $1")
            .await?;
        let row = conn.query_opt(&stmt, &[&id]).await;
        match conn.guard(row)? {
            Some(row) => Ok(Some((user_from_row(&row)?, row.try_get(3)?))),
            None => Ok(None),
        }
    }

    /// Deletes a user and everything of theirs, in one transaction (see [`delete_user`]).
    pub(super) async fn delete_user(&self, id: String) -> Result<DeletedUser> {
        let mut conn = self.conn().await?;
        conn.clean = false;
        let tx = conn.transaction().await?;
        let deleted = delete_user(&tx, &id).await?;
        tx.commit().await?;
        conn.clean = true;
        self.committed();
        deleted.ok_or(Error::NotFound(Entity::User))
    }

    /// Stores a session.
    pub(super) async fn create_session(
        &self,
        user_id: String,
        token_hash: [u8; 32],
        expires_at: Timestamp,
    ) -> Result<()> {
        let conn = self.conn().await?;
        let done = insert_session(&conn, &token_hash, &user_id, &expires_at).await;
        conn.guard(done)?;
        self.committed();
        Ok(())
    }

    /// Deletes a session.
    pub(super) async fn delete_session(&self, token_hash: [u8; 32]) -> Result<()> {
        let conn = self.conn().await?;
        let done = delete_session(&conn, &token_hash).await;
        conn.guard(done)?;
        self.committed();
        Ok(())
    }

    /// `owner`'s chats in the given order.
    pub(super) async fn list_chats(&self, owner: String, order: ChatOrder) -> Result<Vec<Chat>> {
        let conn = self.conn().await?;
        let column = match order.field {
            ChatSortField::CreatedAt => "created_at",
            ChatSortField::UpdatedAt => "updated_at",
            // Sorted below: names are bytes here (see `text`).
            ChatSortField::Name => "id",
        };
        let direction = if order.descending { "DESC" } else { "ASC" };
        let stmt = conn
            .stmt(&format!(
                "SELECT {CHAT_COLUMNS} FROM chat_conversations WHERE neptun_user_id = $1 \
                 ORDER BY {column} {direction}, id {direction}"
            ))
            .await?;
        let rows = conn.query(&stmt, &[&owner]).await;
        let mut chats = conn
            .guard(rows)?
            .iter()
            .map(chat_from_row)
            .collect::<Result<Vec<_>>>()?;
        if order.field == ChatSortField::Name {
            // As SQLite's NOCASE collation sorts: ASCII letters folded, then byte order;
            // ties by id in the same direction (the rows came in id order).
            chats.sort_by(|a, b| {
                let by_name = a
                    .name
                    .bytes()
                    .map(|b| b.to_ascii_lowercase())
                    .cmp(b.name.bytes().map(|b| b.to_ascii_lowercase()));
                if order.descending {
                    by_name.reverse()
                } else {
                    by_name
                }
            });
        }
        Ok(chats)
    }

    /// `owner`'s chat `chat_id`.
    pub(super) async fn chat(&self, owner: String, chat_id: i64) -> Result<Chat> {
        let conn = self.conn().await?;
        let stmt = conn
            .stmt(&format!(
                "SELECT {CHAT_COLUMNS} FROM chat_conversations WHERE id = $1 AND neptun_user_id = $2"
            ))
            .await?;
        let row = conn.query_opt(&stmt, &[&chat_id, &owner]).await;
        match conn.guard(row)? {
            Some(row) => chat_from_row(&row),
            None => Err(Error::NotFound(Entity::Chat)),
        }
    }

    /// Creates a chat for `owner`.
    pub(super) async fn create_chat(
        &self,
        owner: String,
        name: String,
        model: String,
    ) -> Result<Chat> {
        let conn = self.conn().await?;
        let chat = insert_chat(&conn, &owner, &name, &model).await;
        let chat = conn.guard(chat)?;
        self.committed();
        Ok(chat)
    }

    /// Renames `owner`'s chat.
    pub(super) async fn rename_chat(
        &self,
        owner: String,
        chat_id: i64,
        name: String,
    ) -> Result<Chat> {
        let conn = self.conn().await?;
        let stmt = conn.stmt(RENAME_CHAT).await?;
        let now = instant(&Timestamp::now())?;
        let row = conn
            .query_opt(&stmt, &[&chat_id, &owner, &name.as_bytes(), &now])
            .await;
        let row = conn.guard(row)?;
        self.committed();
        match row {
            Some(row) => chat_from_row(&row),
            None => Err(Error::NotFound(Entity::Chat)),
        }
    }

    /// Deletes those of `chat_ids` that are `owner`'s, with their messages (by the
    /// foreign key's cascade), in one transaction. The chats are locked in id order
    /// first, so that two deletes of overlapping sets cannot deadlock.
    pub(super) async fn delete_chats(&self, owner: String, chat_ids: Vec<i64>) -> Result<Vec<i64>> {
        let mut conn = self.conn().await?;
        let lock = conn
            .stmt(
                "SELECT id FROM chat_conversations WHERE id = ANY($1) AND neptun_user_id = $2 \
                 ORDER BY id FOR UPDATE",
            )
            .await?;
        let delete = conn.stmt(DELETE_CHATS).await?;
        let now = instant(&Timestamp::now())?;
        conn.clean = false;
        let (begun, locked, deleted, committed) = join!(
            conn.batch_execute("BEGIN"),
            async { conn.query(&lock, &[&chat_ids, &owner]).await },
            async { conn.query(&delete, &[&chat_ids, &owner, &now]).await },
            conn.batch_execute("COMMIT"),
        );
        let deleted = match (begun, locked, deleted, committed) {
            (Ok(()), Ok(_), Ok(rows), Ok(())) => rows,
            (Err(err), ..) | (_, Err(err), ..) | (_, _, Err(err), _) | (.., Err(err)) => {
                return Err(conn.rollback(Error::from(err)).await);
            }
        };
        conn.clean = true;
        self.committed();
        let gone: std::collections::HashSet<i64> = deleted
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        // In the order given, each once.
        let mut seen = std::collections::HashSet::new();
        Ok(chat_ids
            .into_iter()
            .filter(|id| gone.contains(id) && seen.insert(*id))
            .collect())
    }

    /// See [`crate::db::Db::expire_chats`]: one statement, its own transaction.
    pub(super) async fn expire_chats(
        &self,
        inactive_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<(String, i64)>> {
        let conn = self.conn().await?;
        let stmt = conn.stmt(EXPIRE_CHATS).await?;
        let before = instant(&inactive_before)?;
        let now = instant(&Timestamp::now())?;
        let rows = conn.query(&stmt, &[&before, &sql_count(limit), &now]).await;
        let rows = conn.guard(rows)?;
        self.committed();
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    /// Deletes the last turn of `owner`'s chat (as the SQLite backend defines it):
    /// the last message alone if it is a system message; else it and the user messages
    /// right before it.
    pub(super) async fn delete_last_turn(&self, owner: String, chat_id: i64) -> Result<Vec<i64>> {
        let mut conn = self.conn().await?;
        let lock_chat = conn.stmt(LOCK_CHAT).await?;
        let delete = conn.stmt(DELETE_LAST_TURN).await?;
        let now = instant(&Timestamp::now())?;
        conn.clean = false;
        let (begun, chat, deleted) = join!(
            conn.batch_execute("BEGIN"),
            async { conn.query_opt(&lock_chat, &[&chat_id, &owner, &now]).await },
            async { conn.query(&delete, &[&chat_id, &owner, &now]).await },
        );
        let checked = (|| {
            begun?;
            if chat?.is_none() {
                return Err(Error::NotFound(Entity::Chat));
            }
            let mut ids = deleted?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<Vec<i64>, _>>()?;
            if ids.is_empty() {
                return Err(Error::NotFound(Entity::Message));
            }
            ids.sort_unstable();
            Ok(ids)
        })();
        match checked {
            Ok(ids) => {
                conn.end("COMMIT").await?;
                self.committed();
                Ok(ids)
            }
            Err(err) => Err(conn.rollback(err).await),
        }
    }
}

/// Deletes the last turn of chat `$1` if it is user `$2`'s: every message after the
/// turn's bound, recording the change at `$3`. The bound is the message before the last one when that is a system
/// message, else the newest message before the last one that is not the user's.
const DELETE_LAST_TURN: &str = "WITH last AS ( \
         SELECT id, actor FROM chat_messages WHERE chat_conversation_id = $1 \
         ORDER BY id DESC LIMIT 1), \
     bound AS ( \
         SELECT CASE WHEN last.actor = 'system' THEN last.id - 1 \
             ELSE coalesce((SELECT max(m.id) FROM chat_messages m \
                 WHERE m.chat_conversation_id = $1 AND m.actor <> 'user' AND m.id < last.id), 0) \
             END AS after FROM last), \
     gone AS ( \
         DELETE FROM chat_messages WHERE chat_conversation_id = $1 \
             AND id > (SELECT after FROM bound) \
             AND EXISTS (SELECT 1 FROM chat_conversations \
                 WHERE id = $1 AND neptun_user_id = $2) \
         RETURNING id), \
     counted AS ( \
         UPDATE users SET last_change = last_change + 1 \
         WHERE id = $2 AND EXISTS (SELECT 1 FROM gone) RETURNING last_change), \
     logged AS ( \
         INSERT INTO changes (user_id, seq, kind, chat_id, detail, created_at) \
         SELECT $2, counted.last_change, 'messages_deleted', $1, \
             (SELECT json_agg(id ORDER BY id)::text FROM gone), $3 \
         FROM counted RETURNING user_id) \
     SELECT gone.id, \
         (SELECT count(*) FROM logged, pg_notify('neptun_changes', logged.user_id)) \
     FROM gone";

/// Checks session `$1` at `$2` and whether chat `$3` is its user's: one row (the
/// session's user, whether the chat is theirs), or none for an unknown or expired
/// session.
const CLAIMED_CHAT: &str = "SELECT s.user_id, EXISTS (SELECT 1 FROM chat_conversations c \
     WHERE c.id = $3 AND c.neptun_user_id = s.user_id) \
     FROM sessions s WHERE s.token_hash = $1 AND s.expires_at > $2";

/// Up to `$3` messages (NULL: all) of chat `$1` with ids above `$2`, oldest first.
const PAGE_AFTER: &str = "SELECT id, neptun_user_id, message, actor, created_at FROM chat_messages \
     WHERE chat_conversation_id = $1 AND id > $2 ORDER BY id LIMIT $3";

/// The newest `$3` messages of chat `$1` with ids below `$2`, oldest first.
const PAGE_BEFORE: &str = "SELECT id, neptun_user_id, message, actor, created_at FROM ( \
         SELECT id, neptun_user_id, message, actor, created_at FROM chat_messages \
         WHERE chat_conversation_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3) AS page \
     ORDER BY id";

/// A slice of chat `$1`: up to `$4` messages with ids above `$2` and up to `$3` (NULL:
/// the newest message when the statement runs, given back in the last column).
const SLICE: &str = "WITH newest AS ( \
         SELECT coalesce($3::bigint, max(id)) AS through FROM chat_messages \
         WHERE chat_conversation_id = $1) \
     SELECT m.id, m.neptun_user_id, m.message, m.actor, m.created_at, newest.through \
     FROM chat_messages m, newest \
     WHERE m.chat_conversation_id = $1 AND m.id > $2 AND m.id <= newest.through \
     ORDER BY m.id LIMIT $4";

/// Whether chat `$1` still exists, and message `$2` is still stored.
const SLICE_CHECK: &str = "SELECT EXISTS (SELECT 1 FROM chat_conversations WHERE id = $1), \
     EXISTS (SELECT 1 FROM chat_messages WHERE id = $2)";

impl Db {
    /// See [`crate::db::Db::read_messages`]. The claim and the page are asked for in one
    /// round trip; each is one statement, so a page is one snapshot.
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
        let conn = self.conn().await?;
        let now = Utc::now();
        let claimed = conn.stmt(CLAIMED_CHAT).await?;
        let (page, bound, fetch, limit) = match window {
            MessageWindow::All => (PAGE_AFTER, 0, None, None),
            MessageWindow::After { after, limit } => {
                (PAGE_AFTER, after, Some(sql_count(limit) + 1), Some(limit))
            }
            MessageWindow::Before { before, limit } => (
                PAGE_BEFORE,
                before.unwrap_or(i64::MAX),
                Some(sql_count(limit) + 1),
                Some(limit),
            ),
        };
        let page_stmt = conn.stmt(page).await?;
        let (claim_row, rows) = join!(
            async {
                conn.query_opt(&claimed, &[&&claim.token_hash[..], &now, &chat_id])
                    .await
            },
            async { conn.query(&page_stmt, &[&chat_id, &bound, &fetch]).await },
        );
        let claim_row = conn.guard(claim_row)?;
        let chat_is_theirs = match claim_row {
            Some(row) => {
                let user: &str = row.try_get(0)?;
                if user != claim.user_id {
                    return Err(Error::WrongUser);
                }
                row.try_get::<_, bool>(1)?
            }
            None => return Err(Error::NotFound(Entity::Session)),
        };
        if !chat_is_theirs {
            return Err(Error::NotFound(Entity::Chat));
        }
        let rows = conn.guard(rows)?;
        let more = limit.is_some_and(|limit| rows.len() > limit);
        let shown: &[Row] = match (window, more) {
            // Backward: the extra row is the oldest, before the page.
            (MessageWindow::Before { .. }, true) => &rows[1..],
            (_, true) => &rows[..rows.len() - 1],
            (_, false) => &rows,
        };
        for row in shown {
            visit(row, chat_id, |m| each(&mut out, m))?;
        }
        let cursor = match (window, more) {
            (_, false) => None,
            (MessageWindow::Before { .. }, true) => shown.first(),
            (_, true) => shown.last(),
        };
        let next = cursor.map(|row| row.try_get(0)).transpose()?;
        Ok((out, next))
    }

    /// See [`crate::db::Db::read_whole_chat`]: slices as the SQLite backend reads them,
    /// each one statement on a pooled connection taken for that slice only.
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
        let conn = self.conn().await?;
        let claimed = conn.stmt(CLAIMED_CHAT).await?;
        let slice = conn.stmt(SLICE).await?;
        let (claim_row, rows) = join!(
            async {
                conn.query_opt(&claimed, &[&&claim.token_hash[..], &Utc::now(), &chat_id])
                    .await
            },
            async {
                conn.query(&slice, &[&chat_id, &0_i64, &None::<i64>, &SLICE_ROWS])
                    .await
            },
        );
        match conn.guard(claim_row)? {
            Some(row) => {
                let user: &str = row.try_get(0)?;
                if user != claim.user_id {
                    return Err(Error::WrongUser);
                }
                if !row.try_get::<_, bool>(1)? {
                    return Err(Error::NotFound(Entity::Chat));
                }
            }
            None => return Err(Error::NotFound(Entity::Session)),
        }
        let rows = conn.guard(rows)?;
        drop(conn);
        let Some(through) = rows
            .first()
            .map(|row| row.try_get::<_, i64>(5))
            .transpose()?
        else {
            return Ok((first, None));
        };
        let after = visit_slice(&rows, chat_id, through, |m| each(&mut first, m))?;
        let Some(after) = after else {
            return Ok((first, None));
        };
        let (slices, rest) = mpsc::channel(1);
        tokio::spawn(
            self.clone()
                .read_slices(chat_id, after, through, each, slices),
        );
        Ok((first, Some(ChatRest { rest })))
    }

    /// Reads the slices after the first and sends them on, each once the one before was
    /// taken, until the chat is read, a slice fails, or the receiver is gone.
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
            let read = async {
                let mut conn = self.conn().await?;
                let check = conn.stmt(SLICE_CHECK).await?;
                let slice = conn.stmt(SLICE).await?;
                // The check and the slice in one snapshot: otherwise a chat deleted
                // between them would pass the check and give an empty slice, read as the
                // chat's end.
                conn.clean = false;
                let (begun, checked, rows, ended) = join!(
                    conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
                    async { conn.query_one(&check, &[&chat_id, &after]).await },
                    async {
                        conn.query(&slice, &[&chat_id, &after, &Some(through), &SLICE_ROWS])
                            .await
                    },
                    conn.batch_execute("COMMIT"),
                );
                conn.guard(begun.and(ended))?;
                conn.clean = true;
                let checked = conn.guard(checked)?;
                if !checked.try_get::<_, bool>(0)? {
                    return Err(Error::NotFound(Entity::Chat));
                }
                // Its turn was deleted: the rest would not fit the part sent.
                if !checked.try_get::<_, bool>(1)? {
                    return Err(Error::NotFound(Entity::Message));
                }
                let rows = conn.guard(rows)?;
                drop(conn);
                let mut out = S::default();
                let next = visit_slice(&rows, chat_id, through, |m| each(&mut out, m))?;
                Ok((out, next))
            };
            let (out, next) = match read.await {
                Ok(slice) => slice,
                Err(err) => return cut_short(&slices, chat_id, err).await,
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
}

/// Hands the rows of one slice to `each` until the text budget is spent; the id of the
/// last message handed on if more may follow, `None` once `through` is reached.
fn visit_slice(
    rows: &[Row],
    chat_id: i64,
    through: i64,
    mut each: impl FnMut(MessageRef<'_>) -> Result<(), BoxError>,
) -> Result<Option<i64>> {
    let mut text_bytes = 0;
    for (seen, row) in rows.iter().enumerate() {
        let id: i64 = row.try_get(0)?;
        text_bytes += visit(row, chat_id, &mut each)?;
        if id >= through {
            return Ok(None);
        }
        if seen + 1 == rows.len() || text_bytes >= SLICE_TEXT_BYTES {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// Hands the message in `row` to `each`, borrowed; the bytes of its text.
fn visit(
    row: &Row,
    chat_id: i64,
    mut each: impl FnMut(MessageRef<'_>) -> Result<(), BoxError>,
) -> Result<usize> {
    let created_at: DateTime<Utc> = row.try_get(4)?;
    let created_at = Timestamp::from_datetime(created_at);
    let message = text(row, 2)?;
    each(MessageRef {
        id: row.try_get(0)?,
        chat_conversation_id: chat_id,
        neptun_user_id: row.try_get(1)?,
        message,
        actor: actor(row.try_get(3)?)?,
        created_at: created_at.as_str(),
    })
    .map_err(Error::Render)?;
    Ok(message.len())
}

/// The message in `row` (id, user, text, actor, created_at), owned.
fn owned_message(row: &Row, chat_id: i64) -> Result<ChatMessage> {
    Ok(ChatMessage {
        id: row.try_get(0)?,
        chat_conversation_id: chat_id,
        neptun_user_id: row.try_get(1)?,
        message: text(row, 2)?.to_owned(),
        actor: actor(row.try_get(3)?)?,
        created_at: Timestamp::from_datetime(row.try_get(4)?),
    })
}

/// Column `index` of `row`: text the program stored as UTF-8 bytes (`bytea`, because
/// PostgreSQL's `text` cannot hold U+0000, which messages and names may contain).
fn text(row: &Row, index: usize) -> Result<&str> {
    let bytes: &[u8] = row.try_get(index)?;
    std::str::from_utf8(bytes).map_err(|err| {
        Error::described(Step::Statement, format!("stored text is not UTF-8: {err}"))
    })
}

fn actor(text: &str) -> Result<Role> {
    Role::parse(text)
        .ok_or_else(|| Error::described(Step::Statement, format!("unknown actor {text:?}")))
}

/// A count as PostgreSQL's LIMIT takes it.
fn sql_count(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX - 1)
}

/// The instant `timestamp` names (every stored timestamp was written by this program).
fn instant(timestamp: &Timestamp) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(timestamp.as_str())
        .map(|instant| instant.with_timezone(&Utc))
        .map_err(|err| {
            Error::described(
                Step::Statement,
                format!("invalid timestamp {:?}: {err}", timestamp.as_str()),
            )
        })
}

const CHAT_COLUMNS: &str = "id, name, model, neptun_user_id, created_at, updated_at";

fn chat_from_row(row: &Row) -> Result<Chat> {
    chat_from_columns(row, 0)
}

/// The chat in `row`'s columns from `at` on, in [`CHAT_COLUMNS`]' order.
fn chat_from_columns(row: &Row, at: usize) -> Result<Chat> {
    Ok(Chat {
        id: row.try_get(at)?,
        name: text(row, at + 1)?.to_owned(),
        model: text(row, at + 2)?.to_owned(),
        neptun_user_id: row.try_get(at + 3)?,
        created_at: Timestamp::from_datetime(row.try_get(at + 4)?),
        updated_at: Timestamp::from_datetime(row.try_get(at + 5)?),
    })
}

fn user_from_row(row: &Row) -> Result<User> {
    Ok(User {
        id: row.try_get(0)?,
        primary_email: row.try_get(1)?,
        created_at: Timestamp::from_datetime(row.try_get(2)?),
    })
}

const INSERT_USER: &str = "INSERT INTO users (id, primary_email, password_hash, created_at) \
     VALUES ($1, $2, $3, $4)";

const INSERT_SESSION: &str =
    "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)";

/// The user with this id.
async fn find_user(conn: &deadpool_postgres::ClientWrapper, id: &str) -> Result<Option<User>> {
    let stmt = conn
        .prepare_cached("SELECT id, primary_email, created_at FROM users WHERE id = $1")
        .await?;
    conn.query_opt(&stmt, &[&id])
        .await?
        .map(|row| user_from_row(&row))
        .transpose()
}

/// Inserts a session for `user_id`.
async fn insert_session(
    conn: &deadpool_postgres::ClientWrapper,
    token_hash: &[u8; 32],
    user_id: &str,
    expires_at: &Timestamp,
) -> Result<()> {
    let stmt = conn.prepare_cached(INSERT_SESSION).await?;
    // Stored to the millisecond, as every timestamp the program writes.
    let (now, expires) = (instant(&Timestamp::now())?, instant(expires_at)?);
    conn.execute(&stmt, &[&&token_hash[..], &user_id, &now, &expires])
        .await?;
    Ok(())
}

/// Deletes a session; whether there was one.
async fn delete_session(
    conn: &deadpool_postgres::ClientWrapper,
    token_hash: &[u8; 32],
) -> Result<bool> {
    Ok(end_sessions(&**conn, Some(&token_hash[..]), None).await? > 0)
}

/// Ends the session with `token_hash`, or every session of `user` ([`END_SESSIONS`]);
/// how many ended.
pub(super) async fn end_sessions(
    conn: &impl tokio_postgres::GenericClient,
    token_hash: Option<&[u8]>,
    user: Option<&str>,
) -> Result<usize> {
    let stmt = conn.prepare(END_SESSIONS).await?;
    let now = Utc::now();
    let ended: i64 = conn
        .query_one(&stmt, &[&token_hash, &user, &now])
        .await?
        .try_get(0)?;
    Ok(usize::try_from(ended).unwrap_or_default())
}

/// Inserts a chat for `owner`; a foreign-key failure (no such user) is
/// [`Error::NotFound`]`(User)`.
async fn insert_chat(
    conn: &deadpool_postgres::ClientWrapper,
    owner: &str,
    name: &str,
    model: &str,
) -> Result<Chat> {
    let now_text = Timestamp::now();
    let now = instant(&now_text)?;
    let stmt = conn.prepare_cached(CREATE_CHAT).await?;
    let row = conn
        .query_one(&stmt, &[&owner, &name.as_bytes(), &model.as_bytes(), &now])
        .await
        .map_err(|err| {
            if err.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) {
                Error::NotFound(Entity::User)
            } else {
                Error::from(err)
            }
        })?;
    Ok(Chat {
        id: row.try_get(0)?,
        name: name.to_owned(),
        model: model.to_owned(),
        neptun_user_id: owner.to_owned(),
        created_at: now_text.clone(),
        updated_at: now_text,
    })
}

/// Stores chat `$2` (name) / `$3` (model), created `$4` and updated `$5`, for user `$1`
/// with the messages `$6` (texts) / `$7` (actors) / `$8` (times) / `$9` (words) of `$10`
/// bytes, counting them and recording the chat's creation and the messages' addition
/// at `$11`; the chat's id. The message ids are matched to the array positions by rank,
/// as in [`STORE_MESSAGES`].
const IMPORT_CHAT: &str = "WITH chat AS ( \
         INSERT INTO chat_conversations (neptun_user_id, name, model, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id), \
     taken AS ( \
         SELECT id, row_number() OVER (ORDER BY id) AS n FROM ( \
             SELECT nextval('chat_messages_id_seq'::regclass) AS id \
             FROM generate_series(1, cardinality($6::bytea[]))) AS ids), \
     stored AS ( \
         INSERT INTO chat_messages \
             (id, chat_conversation_id, neptun_user_id, message, actor, created_at, search) \
         SELECT taken.id, chat.id, $1, given.message, given.actor, given.created_at, \
             given.words::tsvector \
         FROM chat, taken JOIN unnest($6::bytea[], $7::text[], $8::timestamptz[], $9::text[]) \
             WITH ORDINALITY AS given (message, actor, created_at, words, n) USING (n) \
         RETURNING id), \
     counted AS ( \
         UPDATE users SET stored_messages = stored_messages + cardinality($6::bytea[]), \
             stored_bytes = stored_bytes + $10, \
             last_change = last_change + 1 + sign(cardinality($6::bytea[]))::bigint \
         WHERE id = $1 RETURNING last_change), \
     logged AS ( \
         INSERT INTO changes (user_id, seq, kind, chat_id, first_id, last_id, created_at) \
         SELECT $1, counted.last_change - sign(cardinality($6::bytea[]))::bigint, \
             'chat_created', chat.id, NULL::bigint, NULL::bigint, $11::timestamptz FROM counted, chat \
         UNION ALL \
         SELECT $1, counted.last_change, 'messages_added', chat.id, min(stored.id), \
             max(stored.id), $11::timestamptz \
         FROM counted, chat, stored GROUP BY counted.last_change, chat.id) \
     SELECT chat.id FROM chat";

/// Stores imported `chats` for `user` inside `tx` (see [`crate::db::Db::import`]).
async fn import_chats(
    tx: &deadpool_postgres::Transaction<'_>,
    user: &str,
    chats: Vec<crate::archive::ImportChat>,
) -> Result<crate::db::Imported> {
    let exists = tx
        .query_opt(
            "SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE",
            &[&user],
        )
        .await?
        .is_some();
    if !exists {
        return Err(Error::NotFound(Entity::User));
    }
    let now = Utc::now();
    let stmt = tx.prepare_cached(IMPORT_CHAT).await?;
    let mut imported = crate::db::Imported::default();
    for chat in chats {
        let texts: Vec<&[u8]> = chat.messages.iter().map(|m| m.content.as_bytes()).collect();
        let actors: Vec<&str> = chat.messages.iter().map(|m| m.actor.as_str()).collect();
        let times = chat
            .messages
            .iter()
            .map(|m| instant(&m.created_at))
            .collect::<Result<Vec<_>>>()?;
        let words: Vec<String> = chat
            .messages
            .iter()
            .map(|m| crate::search::tsvector(&m.content))
            .collect();
        let bytes: usize = texts.iter().map(|text| text.len()).sum();
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        tx.query_one(
            &stmt,
            &[
                &user,
                &chat.name.as_bytes(),
                &chat.model.as_bytes(),
                &instant(&chat.created_at)?,
                &instant(&chat.updated_at)?,
                &texts,
                &actors,
                &times,
                &words,
                &bytes,
                &now,
            ],
        )
        .await?;
        imported.chats += 1;
        imported.messages += texts.len();
    }
    tx.execute("SELECT pg_notify('neptun_changes', $1)", &[&user])
        .await?;
    Ok(imported)
}

/// Deletes user `user_id` and everything of theirs (their chats and messages, whose
/// search words go with them, sessions, idempotency answers, recorded changes) inside
/// `tx`, and wakes the user's events streams on every instance; what was deleted, or
/// `None` if there is no such user. The user's chats are locked first, in id order,
/// and the user's row only by the deletes after them: the order appends take them
/// (chat, then user; see the module docs), so an append meanwhile waits instead of
/// deadlocking.
async fn delete_user(
    tx: &deadpool_postgres::Transaction<'_>,
    user_id: &str,
) -> Result<Option<DeletedUser>> {
    let exists = tx
        .query_opt("SELECT 1 FROM users WHERE id = $1", &[&user_id])
        .await?
        .is_some();
    if !exists {
        return Ok(None);
    }
    tx.execute(
        "SELECT id FROM chat_conversations WHERE neptun_user_id = $1 ORDER BY id FOR UPDATE",
        &[&user_id],
    )
    .await?;
    let delete = async |sql: &str| -> Result<usize> {
        Ok(usize::try_from(tx.execute(sql, &[&user_id]).await?).unwrap_or(usize::MAX))
    };
    let deleted = DeletedUser {
        messages: delete("DELETE FROM chat_messages WHERE neptun_user_id = $1").await?,
        chats: delete("DELETE FROM chat_conversations WHERE neptun_user_id = $1").await?,
        idempotency_keys: delete("DELETE FROM idempotency_keys WHERE user_id = $1").await?,
        sessions: delete("DELETE FROM sessions WHERE user_id = $1").await?,
    };
    delete("DELETE FROM changes WHERE user_id = $1").await?;
    delete("DELETE FROM users WHERE id = $1").await?;
    tx.execute("SELECT pg_notify('neptun_changes', $1)", &[&user_id])
        .await?;
    Ok(Some(deleted))
}

/// A pooled connection that is dropped from the pool, not reused, when it may be left
/// inside a transaction: a request cancelled half-way, or a failed rollback. Closing it
/// makes PostgreSQL roll the transaction back.
struct Conn {
    client: Option<Object>,
    /// False while a transaction is open.
    clean: bool,
}

impl Conn {
    /// A prepared statement from this connection's cache.
    async fn stmt(&self, sql: &str) -> Result<tokio_postgres::Statement> {
        Ok(self.prepare_cached(sql).await?)
    }

    /// `result` as this layer's result. (A connection that broke is closed, and the pool
    /// drops it when it comes back.)
    fn guard<T, E: Into<Error>>(&self, result: Result<T, E>) -> Result<T> {
        result.map_err(Into::into)
    }

    /// Ends the open transaction with `sql` (`COMMIT` or `ROLLBACK`).
    async fn end(&mut self, sql: &str) -> Result<()> {
        self.batch_execute(sql).await?;
        self.clean = true;
        Ok(())
    }

    /// Rolls the open transaction back after `err`, and returns `err`. If the rollback
    /// fails too, the connection is dropped when this guard is.
    async fn rollback(&mut self, err: Error) -> Error {
        if self.end("ROLLBACK").await.is_err() {
            self.clean = false;
        }
        err
    }
}

impl Deref for Conn {
    type Target = deadpool_postgres::ClientWrapper;

    fn deref(&self) -> &Self::Target {
        match &self.client {
            Some(client) => client,
            // Taken only in `drop`.
            None => unreachable!("a connection is used after it was dropped"),
        }
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match &mut self.client {
            Some(client) => client,
            None => unreachable!("a connection is used after it was dropped"),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if !self.clean || client.is_closed() {
                // Out of the pool, and closed as it drops.
                drop(Object::take(client));
            }
        }
    }
}
