//! The writer thread: the one connection that writes, and the bounded queue in front of it.
//!
//! # Design
//! SQLite allows one writer at a time. Rather than letting request threads race for the
//! write lock (and fail with `SQLITE_BUSY` under load), a single thread owns the write
//! connection and runs the jobs sent to it over a channel. A caller awaits a oneshot
//! reply, so no async worker thread ever blocks on SQLite.
//!
//! **Group commit.** One commit costs one sync of the WAL (with `synchronous=FULL`),
//! which caps one-transaction-per-request at the disk's sync rate. So the writer takes
//! every job waiting in the queue (up to [`MAX_GROUP`]), runs each in its own
//! `SAVEPOINT` inside one IMMEDIATE transaction — a job that fails rolls back to its
//! savepoint and affects no other — commits once, and only then answers each job. A
//! job's writes stay together and in order; nothing is acknowledged before the commit
//! that holds it. If the group's transaction cannot begin (another connection held the
//! lock past the busy timeout), a savepoint fails, SQLite rolls the transaction back or
//! the commit fails, every job of the group gets that error, with SQLite's as its
//! source, and the writer goes on with the next group. A job that panics fails alone.
//!
//! **Back-pressure.** The queue holds at most `capacity` jobs. When it is full, `call`
//! fails at once with [`Error::Overloaded`] (the API answers 503 with `Retry-After`)
//! instead of letting memory grow without bound.
//!
//! **Checkpoints off the writer.** SQLite's automatic checkpoint runs inside the commit
//! that crosses the threshold: on the writer, holding every write behind it, with the
//! file syncs that a checkpoint makes. Instead, a WAL hook notes the WAL's size after
//! each commit, and once it reaches [`CHECKPOINT_PAGES`] the writer asks a checkpointer
//! thread, with its own connection, for a `PASSIVE` checkpoint, which runs alongside new
//! commits.
//!
//! A passive checkpoint alone does not keep the WAL small. SQLite only starts the WAL
//! over from its beginning when a write begins while every frame has been copied and
//! no reader still reads from the WAL; under steady reads and writes that moment never
//! comes, and the WAL grew past 270 MB in ten seconds of the W5 benchmark. So once the
//! WAL holds [`RESTART_CHECKPOINT_PAGES`], the writer itself runs a `RESTART`
//! checkpoint between two groups: no write can come in meanwhile, readers that start
//! meanwhile read the database file, and the checkpoint waits (at most
//! [`RESTART_WAIT`]) for the reads already running to end. The next write then starts
//! the WAL over. A read that runs longer than that wait (a whole, huge chat) only
//! postpones this to the next try.
//!
//! **Background work between groups.** Work that may take long but need not be done at
//! once (purging a deleted chat's messages) is given to the writer as a [`Background`]
//! job: while it says more is left, the writer runs one short step of it, in a
//! transaction of its own, after each group, and after each step waits as long as the
//! step took for a write to come in, so the work takes at most about half of the
//! writer's time. A write that arrives meanwhile waits for one step at most, not for all
//! of the work. The writer also runs it once at start, to finish work a restart cut
//! short.
//!
//! The thread stops after a [`Writer::close`] (checkpointing the WAL first), or when the
//! last handle is dropped.

use std::cell::Cell;
use std::ffi::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::thread;
use std::time::{Duration, Instant};

use metrics::gauge;
use rusqlite::Connection;
use rusqlite::hooks::Wal;
use tokio::sync::oneshot;

use super::{Error, Result, Step};
use crate::metric_names::WRITE_QUEUE_DEPTH;

/// Most jobs committed together. Bounds the time the first job of a group waits for
/// the others, and the size of one transaction.
pub(super) const MAX_GROUP: usize = 256;

/// WAL size, in pages, at which the writer asks the checkpointer for a checkpoint
/// (SQLite's own default threshold for its automatic checkpoint).
pub(super) const CHECKPOINT_PAGES: c_int = 1000;

/// WAL size, in pages, at which the writer runs a `RESTART` checkpoint itself, so that
/// the WAL starts over: 16 MiB with 4 KiB pages.
pub(super) const RESTART_CHECKPOINT_PAGES: c_int = 4 * CHECKPOINT_PAGES;

/// How long the writer's `RESTART` checkpoint waits for running reads to end.
pub(super) const RESTART_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

thread_local! {
    /// Pages in the WAL after the last commit on this thread's connection, as told by
    /// the WAL hook. Only the writer thread's connection has the hook.
    static WAL_PAGES: Cell<c_int> = const { Cell::new(0) };
}

/// The writer connection's WAL hook. Registering it also turns SQLite's automatic
/// checkpoint off (that is a WAL hook too).
fn note_wal_pages(_: &Wal, pages: c_int) -> rusqlite::Result<()> {
    WAL_PAGES.set(pages);
    Ok(())
}

/// Delivers a job's result once its group's fate is known: `None` once it is committed,
/// else why the group failed.
type Reply = Box<dyn FnOnce(Option<&Error>) + Send>;

/// A write waiting for its turn.
trait Work: Send {
    /// Runs the write (its savepoint is already open). Returns its own error, if it
    /// failed, for the rest of its group in case SQLite rolled the whole transaction
    /// back because of it, and how to answer its caller.
    fn run(self: Box<Self>, conn: &Connection) -> (Option<Error>, Reply);

    /// Tells the caller that the write could not be run, and why.
    fn refuse(self: Box<Self>, why: Error);
}

/// The one kind of [`Work`]: a closure and the channel its caller waits on.
struct Call<F, T> {
    f: F,
    reply: oneshot::Sender<Result<T>>,
}

impl<F, T> Work for Call<F, T>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> (Option<Error>, Reply) {
        let Call { f, reply } = *self;
        // A panicking write is a bug in that write, not a stopped writer: its caller
        // gets a failure, and the rest of the group goes on.
        let result = catch_unwind(AssertUnwindSafe(|| f(conn))).unwrap_or_else(|_| {
            log::error!("a database write panicked; it was rolled back");
            Err(Error::described(
                Step::Write,
                "the write panicked".to_owned(),
            ))
        });
        let own_error = result.as_ref().err().map(Error::shared);
        let deliver: Reply = Box::new(move |failed| {
            let outcome = match (failed, result) {
                (None, result) => result,
                // Its own error says more than the group's.
                (Some(_), Err(own)) => Err(own),
                (Some(why), Ok(_)) => Err(why.shared()),
            };
            // The caller may have gone away (client disconnected); the write stands.
            let _ = reply.send(outcome);
        });
        (own_error, deliver)
    }

    fn refuse(self: Box<Self>, why: Error) {
        let _ = self.reply.send(Err(why));
    }
}

/// A queued write.
type Job = Box<dyn Work>;

/// What the writer thread is asked to do.
enum Message {
    /// Run a job in the next group.
    Run(Job),
    /// Checkpoint, close the connection and stop; answer when done.
    Close(oneshot::Sender<Result<()>>),
}

/// One step of [`Background`] work; whether more is left.
pub(super) type BackgroundStep = Box<dyn FnMut(&Connection) -> Result<bool> + Send>;

/// Work the writer does a step at a time between groups (see the module docs).
pub(super) struct Background {
    /// Set (by anyone) when there may be work; cleared by the writer when a step says
    /// none is left. Start it set, so that work a restart cut short is finished.
    pub pending: Arc<AtomicBool>,
    /// One short step of the work, run inside its own transaction; whether more is left.
    /// A step must leave the work in a state from which it can go on after any step,
    /// even one lost to a crash: the writer does not sync its commit.
    pub step: BackgroundStep,
}

/// A handle for sending work to the writer thread. Cheap to clone.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: SyncSender<Message>,
    counters: Arc<Counters>,
    capacity: usize,
}

/// What the writer thread and its handles both count. The thread holds these, not a
/// `Writer`, so that it sees its queue close when the last handle is dropped.
#[derive(Default)]
struct Counters {
    queued: AtomicUsize,
    commits: AtomicU64,
}

impl Writer {
    /// Starts the writer thread, which takes ownership of `conn`, with a queue of at
    /// most `capacity` waiting jobs and `background` to do between groups, and the
    /// checkpointer thread, which takes `checkpoints`, a second connection to the same
    /// database.
    pub(super) fn spawn(
        conn: Connection,
        checkpoints: Connection,
        capacity: usize,
        background: Background,
    ) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::sync_channel::<Message>(capacity);
        let writer = Writer {
            jobs,
            counters: Arc::default(),
            capacity,
        };
        // The writer's own busy timeout, to go back to after a `RESTART` checkpoint.
        let busy_timeout = conn
            .pragma_query_value(None, "busy_timeout", |row| row.get::<_, u32>(0))
            .map(|ms| std::time::Duration::from_millis(u64::from(ms)))
            .map_err(std::io::Error::other)?;
        // The writer's durability, which background steps lower for their own commits.
        let synchronous = conn
            .pragma_query_value(None, "synchronous", |row| row.get::<_, i64>(0))
            .map_err(std::io::Error::other)?;
        let (ask, asked) = mpsc::sync_channel::<()>(1);
        let checkpointer = thread::Builder::new()
            .name("neptun-db-checkpointer".to_owned())
            .spawn(move || checkpoint_when_asked(&checkpoints, &asked))?;
        let checkpointer = Checkpointer {
            ask,
            asked_at: Cell::new(0),
            busy_timeout,
            thread: checkpointer,
        };
        let counters = Arc::clone(&writer.counters);
        thread::Builder::new()
            .name("neptun-db-writer".to_owned())
            .spawn(move || {
                run(
                    conn,
                    &queue,
                    &counters,
                    checkpointer,
                    background,
                    synchronous,
                )
            })?;
        Ok(writer)
    }

    /// Runs `f` in the next group commit and returns its result once that commit is
    /// durable. [`Error::Overloaded`] at once if the queue is full.
    pub(super) async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(Call { f, reply });
        // Counted before sending, so the writer never takes more than was counted.
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        if let Err(refused) = self.jobs.try_send(Message::Run(job)) {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(match refused {
                TrySendError::Full(_) => Error::Overloaded,
                TrySendError::Disconnected(_) => Error::writer_gone(),
            });
        }
        gauge!(WRITE_QUEUE_DEPTH).set(self.queued() as f64);
        // Every job is answered, run or refused; only a writer thread that died drops one.
        answer.await.map_err(|_| Error::writer_gone())?
    }

    /// How many writes are waiting in the queue.
    pub(super) fn queued(&self) -> usize {
        self.counters.queued.load(Ordering::Relaxed)
    }

    /// Whether the queue is at least half full.
    pub(super) fn backlogged(&self) -> bool {
        self.queued() >= self.capacity / 2
    }

    /// How many transactions the writer has committed (each holds one or more jobs).
    pub(super) fn commits(&self) -> u64 {
        self.counters.commits.load(Ordering::Relaxed)
    }

    /// Stops the writer after the jobs already queued: checkpoints the WAL into the
    /// database file and closes the connection.
    pub(super) async fn close(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        // Blocking here is fine: close runs once, at shutdown, after the server stopped.
        self.jobs
            .send(Message::Close(reply))
            .map_err(|_| Error::writer_gone())?;
        answer.await.map_err(|_| Error::writer_gone())?
    }
}

/// The writer's side of the checkpointer thread.
struct Checkpointer {
    /// Asks for a checkpoint; a full channel means one is already asked for.
    ask: SyncSender<()>,
    /// The WAL's size when a checkpoint was last asked for or made (0 once the WAL
    /// restarted).
    asked_at: Cell<c_int>,
    /// The writer connection's busy timeout, which a `RESTART` checkpoint shortens.
    busy_timeout: std::time::Duration,
    thread: thread::JoinHandle<()>,
}

impl Checkpointer {
    /// Reacts to the WAL's size after a commit. Each time it has grown by
    /// [`CHECKPOINT_PAGES`], asks the checkpointer for a `PASSIVE` checkpoint; or, once
    /// it holds [`RESTART_CHECKPOINT_PAGES`], runs a `RESTART` checkpoint on `conn`
    /// itself, holding the writes, so that the next write starts the WAL over.
    ///
    /// Not after every commit past a threshold: every checkpoint sorts the whole WAL's
    /// index, however little is left to copy.
    fn after_commit(&self, conn: &Connection) {
        let pages = WAL_PAGES.get();
        if pages < self.asked_at.get() {
            self.asked_at.set(0);
        }
        if pages < self.asked_at.get() + CHECKPOINT_PAGES {
            return;
        }
        self.asked_at.set(pages);
        if pages >= RESTART_CHECKPOINT_PAGES {
            restart_wal(conn, pages, self.busy_timeout);
        } else {
            let _ = self.ask.try_send(());
        }
    }

    /// Stops the checkpointer thread and waits for it (and its connection) to end.
    fn stop(self) {
        drop(self.ask);
        if self.thread.join().is_err() {
            log::error!("the checkpointer thread panicked");
        }
    }
}

/// Copies the whole WAL into the database file and waits, briefly, until no reader
/// uses the WAL any more, so that the next write starts it over (see the module docs);
/// then gives `conn` its `busy_timeout` back.
fn restart_wal(conn: &Connection, pages: c_int, busy_timeout: std::time::Duration) {
    log::debug!("the WAL holds {pages} pages; restarting it");
    let restarted = conn
        .busy_timeout(RESTART_WAIT)
        .and_then(|()| {
            conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| {
                row.get::<_, i64>(0)
            })
        })
        .map(|busy| busy == 0);
    match restarted {
        Ok(true) => {}
        Ok(false) => log::debug!("reads kept the WAL from starting over; trying again later"),
        Err(err) => log::warn!("checkpoint failed: {err}"),
    }
    if let Err(err) = conn.busy_timeout(busy_timeout) {
        log::error!("cannot restore the writer's busy timeout: {err}");
    }
}

/// The checkpointer thread's loop: a `PASSIVE` checkpoint each time it is asked, until
/// the writer hangs up. A passive checkpoint copies what it can without waiting for
/// readers or the writer, so it never holds up a request.
fn checkpoint_when_asked(conn: &Connection, asked: &Receiver<()>) {
    while asked.recv().is_ok() {
        if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            log::warn!("checkpoint failed: {err}");
        }
    }
}

/// The writer thread's loop: wait for a job, gather the others waiting, commit them as
/// one group, answer them, do one step of background work if there is some, repeat.
fn run(
    conn: Connection,
    queue: &Receiver<Message>,
    counters: &Counters,
    checkpointer: Checkpointer,
    mut background: Background,
    synchronous: i64,
) {
    conn.wal_hook(Some(note_wal_pages));
    let mut group: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    let mut closing = None;
    // How long the last background step took: the writer then waits as long for a job
    // before the next step, so background work takes at most about half of its time
    // and leaves the CPU to the requests in between.
    let mut pause = Duration::ZERO;
    loop {
        // With background work to do, wait for a job only briefly.
        let first = if background.pending.load(Ordering::Relaxed) {
            match queue.recv_timeout(pause) {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match queue.recv() {
                Ok(message) => Some(message),
                Err(_) => break,
            }
        };
        match first {
            Some(Message::Run(job)) => group.push(job),
            Some(Message::Close(reply)) => closing = Some(reply),
            None => {}
        }
        while !group.is_empty() && closing.is_none() && group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(Message::Run(job)) => group.push(job),
                Ok(Message::Close(reply)) => closing = Some(reply),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if !group.is_empty() {
            counters.queued.fetch_sub(group.len(), Ordering::Relaxed);
            gauge!(WRITE_QUEUE_DEPTH).set(counters.queued.load(Ordering::Relaxed) as f64);
            commit_group(&conn, group.drain(..), &counters.commits);
            checkpointer.after_commit(&conn);
        }
        if let Some(reply) = closing {
            // Background work left over is finished after the next start.
            checkpointer.stop();
            let _ = reply.send(checkpoint_and_close(conn));
            return;
        }
        if background.pending.load(Ordering::Relaxed) {
            let started = Instant::now();
            run_background_step(&conn, &mut background, synchronous);
            checkpointer.after_commit(&conn);
            pause = started.elapsed();
        }
    }
    checkpointer.stop();
}

/// Runs one step of `background` in a transaction of its own; clears its `pending` flag
/// when it says it is done, or when it fails (so that a failing step is not retried in
/// a busy loop; it is tried again when more work is flagged, or at the next start).
///
/// The step's commit is not synced (`synchronous=NORMAL`): a step that a power cut
/// undoes is simply done again after the restart (see [`Background::step`]), and the
/// next write's synced commit makes it durable anyway. This saves the writes waiting
/// behind it a disk sync per step.
/// `synchronous` is the writer's own level, read once at start; only a level above
/// NORMAL needs lowering and restoring.
fn run_background_step(conn: &Connection, background: &mut Background, synchronous: i64) {
    let lowered = synchronous > 1;
    let outcome = (|| {
        if lowered {
            conn.pragma_update(None, "synchronous", 1)?;
        }
        let more = background_step(conn, background);
        if !conn.is_autocommit() {
            let _ = run_statement(conn, "ROLLBACK");
        }
        if lowered {
            conn.pragma_update(None, "synchronous", synchronous)?;
        }
        more
    })();
    let more = outcome.unwrap_or_else(|err| {
        log::error!("background work on the database failed: {err}");
        false
    });
    if !more {
        background.pending.store(false, Ordering::Relaxed);
    }
}

/// One step of `background` between `BEGIN IMMEDIATE` and `COMMIT`; whether more is left.
fn background_step(conn: &Connection, background: &mut Background) -> Result<bool> {
    run_statement(conn, "BEGIN IMMEDIATE")?;
    match catch_unwind(AssertUnwindSafe(|| (background.step)(conn))) {
        Ok(more) => {
            let more = more?;
            run_statement(conn, "COMMIT")?;
            Ok(more)
        }
        Err(_) => {
            log::error!("background work on the database panicked; it was rolled back");
            Ok(false)
        }
    }
}

/// Runs `jobs` in one transaction, each in its own savepoint, commits, and answers them.
/// When the transaction cannot begin, or fails part-way, every job gets the error that
/// stopped it: those that ran are rolled back, the rest are not run.
fn commit_group(conn: &Connection, mut jobs: impl Iterator<Item = Job>, commits: &AtomicU64) {
    if let Err(err) = run_statement(conn, "BEGIN IMMEDIATE") {
        let why = Error::backend(Step::Begin, err);
        log::error!("cannot begin a write transaction: {why:?}");
        for job in jobs {
            job.refuse(why.shared());
        }
        return;
    }
    let mut replies: Vec<Reply> = Vec::new();
    let mut failed = None;
    for job in jobs.by_ref() {
        match run_in_savepoint(conn, job) {
            Ok(reply) => replies.push(reply),
            Err(why) => {
                failed = Some(why);
                break;
            }
        }
    }
    let why = match failed {
        None => match run_statement(conn, "COMMIT") {
            Ok(()) => {
                commits.fetch_add(1, Ordering::Relaxed);
                for reply in replies {
                    reply(None);
                }
                return;
            }
            Err(err) => Error::backend(Step::Commit, err),
        },
        Some(why) => why,
    };
    log::error!("a group of {} writes failed: {why:?}", replies.len());
    if !conn.is_autocommit() {
        if let Err(err) = run_statement(conn, "ROLLBACK") {
            log::error!("cannot roll the failed group back: {err}");
        }
    }
    for reply in replies {
        reply(Some(&why));
    }
    for job in jobs {
        job.refuse(why.shared());
    }
}

/// Runs one job between `SAVEPOINT` and `RELEASE`, rolling back to the savepoint if it
/// fails, so the rest of the group is unaffected. `Err` when the group's transaction
/// cannot go on: the savepoint itself failed (the job is answered with that error), or
/// SQLite rolled the whole transaction back (disk full, I/O error, ...), so that every
/// write of the group so far is gone.
fn run_in_savepoint(conn: &Connection, job: Job) -> Result<Reply> {
    if let Err(err) = run_statement(conn, "SAVEPOINT job") {
        let why = Error::backend(Step::Savepoint, err);
        job.refuse(why.shared());
        return Err(why);
    }
    let (own_error, reply) = job.run(conn);
    if conn.is_autocommit() {
        let why = own_error.map_or_else(
            || Error::described(Step::Group, "SQLite rolled the transaction back".to_owned()),
            |own| match own {
                Error::Failed { source, .. } => Error::Failed {
                    step: Step::Group,
                    source,
                },
                other => other,
            },
        );
        reply(Some(&why));
        return Err(why);
    }
    let ended = if own_error.is_some() {
        run_statement(conn, "ROLLBACK TO job").and_then(|()| run_statement(conn, "RELEASE job"))
    } else {
        run_statement(conn, "RELEASE job")
    };
    match ended {
        Ok(()) => Ok(reply),
        Err(err) => {
            // A write that may not have been rolled back must not be committed with the
            // others: the whole group fails.
            let why = Error::backend(Step::Savepoint, err);
            reply(Some(&why));
            Err(why)
        }
    }
}

/// Runs one of the writer's own statements from the statement cache: they run for every
/// write, and parsing them anew each time showed in profiles.
fn run_statement(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Moves everything in the WAL into the database file and truncates the WAL, so the
/// file alone is a complete copy; then closes the connection.
fn checkpoint_and_close(conn: Connection) -> Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    conn.close().map_err(|(_, err)| Error::from(err))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn no_background() -> Background {
        Background {
            pending: Arc::default(),
            step: Box::new(|_| Ok(false)),
        }
    }

    fn writer_on_a_fresh_table(capacity: usize) -> (tempfile::TempDir, Writer) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v INTEGER NOT NULL)")
            .unwrap();
        let checkpoints = Connection::open(&path).unwrap();
        (
            dir,
            Writer::spawn(conn, checkpoints, capacity, no_background()).unwrap(),
        )
    }

    /// Waits (bounded) until `n` writes are queued behind the one running.
    async fn until_queued(writer: &Writer, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while writer.queued() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} queued",
                writer.queued()
            );
            tokio::task::yield_now().await;
        }
    }

    /// Keeps the writer busy until the returned sender is dropped or sent to.
    async fn hold_the_writer(
        writer: &Writer,
    ) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, is_running) = oneshot::channel();
        let writer = writer.clone();
        let task = tokio::spawn(async move {
            writer
                .call(move |_| {
                    let _ = started.send(());
                    let _ = held.recv_timeout(Duration::from_secs(10));
                    Ok(())
                })
                .await
                .unwrap();
        });
        is_running.await.unwrap();
        (release, task)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_commits_and_each_gets_its_own_answer() {
        // Arrange: the writer is busy, so 64 writes queue up behind it.
        let (_dir, writer) = writer_on_a_fresh_table(1024);
        let (release, holder) = hold_the_writer(&writer).await;
        let mut tasks = Vec::new();
        for v in 0..64_i64 {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                writer
                    .call(move |conn| {
                        conn.execute("INSERT INTO t (v) VALUES (?1)", [v])?;
                        Ok((v, conn.last_insert_rowid()))
                    })
                    .await
            }));
        }
        until_queued(&writer, 64).await;
        release.send(()).unwrap();
        holder.await.unwrap();

        // Act
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap().unwrap());
        }

        // Assert: far fewer commits than writes, and each write saw its own row.
        assert!(
            writer.commits() < 10,
            "{} commits for 65 writes",
            writer.commits()
        );
        let check = writer
            .call(|conn| {
                let mut stmt = conn.prepare("SELECT rowid, v FROM t")?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await
            .unwrap();
        let mut expected: Vec<(i64, i64)> = answers.iter().map(|(v, rowid)| (*rowid, *v)).collect();
        expected.sort_unstable();
        assert_eq!(check, expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_rolls_back_alone_within_its_group() {
        let (_dir, writer) = writer_on_a_fresh_table(16);
        let (release, holder) = hold_the_writer(&writer).await;
        let insert = |v: i64, fail: bool| {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .call(move |conn| {
                        conn.execute("INSERT INTO t (v) VALUES (?1)", [v])?;
                        if fail {
                            return Err(Error::KeyReused);
                        }
                        Ok(v)
                    })
                    .await
            })
        };
        let (a, b, c) = (insert(1, false), insert(2, true), insert(3, false));
        until_queued(&writer, 3).await;
        release.send(()).unwrap();
        holder.await.unwrap();

        assert_eq!(a.await.unwrap().unwrap(), 1);
        assert!(matches!(b.await.unwrap(), Err(Error::KeyReused)));
        assert_eq!(c.await.unwrap().unwrap(), 3);
        let stored = writer
            .call(|conn| {
                let mut stmt = conn.prepare("SELECT v FROM t ORDER BY v")?;
                let rows = stmt
                    .query_map([], |r| r.get::<_, i64>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await
            .unwrap();
        assert_eq!(stored, [1, 3]);
    }

    /// The error and its whole cause chain, as the log shows it.
    fn chain(err: &Error) -> String {
        let mut text = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            text.push_str(&format!(" <- {cause}"));
            source = cause.source();
        }
        text
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_that_cannot_begin_tells_each_write_the_real_reason() {
        // Arrange: another connection holds the write lock past the writer's (short)
        // busy timeout.
        let (dir, writer) = writer_on_a_fresh_table(16);
        writer
            .call(|conn| Ok(conn.busy_timeout(Duration::from_millis(20))?))
            .await
            .unwrap();
        let other = Connection::open(dir.path().join("t.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();

        // Act
        let refused = writer
            .call(|conn| {
                conn.execute("INSERT INTO t (v) VALUES (1)", [])?;
                Ok(())
            })
            .await
            .unwrap_err();

        // Assert: busy, not "the writer is not running", and the writer goes on.
        assert!(
            matches!(
                refused,
                Error::Unavailable {
                    reason: super::super::Unavailable::Busy,
                    ..
                }
            ),
            "{refused:?}"
        );
        assert!(
            chain(&refused).contains("database is locked"),
            "{}",
            chain(&refused)
        );
        other.execute_batch("ROLLBACK").unwrap();
        writer
            .call(|conn| {
                conn.execute("INSERT INTO t (v) VALUES (2)", [])?;
                Ok(())
            })
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_fails_every_write_of_its_group_with_sqlites_reason() {
        // Arrange: a deferred foreign key (the bundled SQLite enforces foreign keys by
        // default) fails only at COMMIT; one write breaks it, two others are grouped
        // with it behind a busy writer.
        let (_dir, writer) = writer_on_a_fresh_table(16);
        writer
            .call(|conn| {
                conn.execute_batch(
                    "CREATE TABLE parent (id INTEGER PRIMARY KEY);
                     CREATE TABLE child (p INTEGER REFERENCES parent (id)
                                         DEFERRABLE INITIALLY DEFERRED);",
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let (release, holder) = hold_the_writer(&writer).await;
        let write = |sql: &'static str| {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .call(move |conn| {
                        conn.execute(sql, [])?;
                        Ok(())
                    })
                    .await
            })
        };
        let writes = [
            write("INSERT INTO t (v) VALUES (1)"),
            write("INSERT INTO child (p) VALUES (42)"),
            write("INSERT INTO t (v) VALUES (3)"),
        ];
        until_queued(&writer, 3).await;
        release.send(()).unwrap();
        holder.await.unwrap();

        // Act + Assert: each write is told the commit failed, and why.
        for write in writes {
            let err = write.await.unwrap().unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Failed {
                        step: Step::Commit,
                        ..
                    }
                ),
                "{err:?}"
            );
            assert!(
                chain(&err).contains("FOREIGN KEY constraint failed"),
                "{}",
                chain(&err)
            );
        }
        let stored: i64 = writer
            .call(|conn| Ok(conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(stored, 0, "the failed group was rolled back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_write_fails_alone_and_the_writer_keeps_running() {
        let (_dir, writer) = writer_on_a_fresh_table(16);

        let panicked = writer
            .call(|conn| -> Result<()> {
                conn.execute("INSERT INTO t (v) VALUES (1)", [])?;
                panic!("a bug in a write");
            })
            .await
            .unwrap_err();

        assert!(
            matches!(
                panicked,
                Error::Failed {
                    step: Step::Write,
                    ..
                }
            ),
            "{panicked:?}"
        );
        let stored: i64 = writer
            .call(|conn| Ok(conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(stored, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_at_once_instead_of_growing() {
        let (_dir, writer) = writer_on_a_fresh_table(2);
        let (release, holder) = hold_the_writer(&writer).await;
        // Each polled once: a call is counted before it is sent, so waiting for the count
        // alone could let the refused call below take a place not yet sent to.
        let mut queued: Vec<_> = (0..2).map(|_| Box::pin(writer.call(|_| Ok(())))).collect();
        for call in &mut queued {
            assert!(futures_util::poll!(call.as_mut()).is_pending());
        }
        assert_eq!(writer.queued(), 2);

        let refused = writer.call(|_| Ok(())).await;

        assert!(matches!(refused, Err(Error::Overloaded)), "{refused:?}");
        release.send(()).unwrap();
        holder.await.unwrap();
        for call in queued {
            call.await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_wal_is_checkpointed_by_the_checkpointer_while_the_writer_is_busy() {
        // The checkpointer's connection counts the checkpoints prepared on it, so a
        // checkpoint made anywhere else (SQLite's automatic one, inside the writer's
        // commit) does not pass for the checkpointer's.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.db");
        let conn = Connection::open(&file).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v INTEGER NOT NULL)")
            .unwrap();
        let checkpoints = Connection::open(&file).unwrap();
        let prepared = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&prepared);
        checkpoints
            .authorizer(Some(move |ctx: rusqlite::hooks::AuthContext<'_>| {
                if let rusqlite::hooks::AuthAction::Pragma { pragma_name, .. } = ctx.action {
                    if pragma_name.eq_ignore_ascii_case("wal_checkpoint") {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                }
                rusqlite::hooks::Authorization::Allow
            }))
            .unwrap();
        let writer = Writer::spawn(conn, checkpoints, 16, no_background()).unwrap();
        let before = std::fs::metadata(&file).unwrap().len();
        // Each write adds a 4 KiB value: past the threshold after about 1000 writes.
        for _ in 0..(CHECKPOINT_PAGES + 100) {
            writer
                .call(|conn| {
                    conn.execute("INSERT INTO t (v) VALUES (zeroblob(4000))", [])?;
                    Ok(())
                })
                .await
                .unwrap();
        }
        let (release, holder) = hold_the_writer(&writer).await;

        // The checkpoint copies the WAL into the database file, which grows; the
        // writer is held in a job meanwhile, so the checkpointer did it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let grown = loop {
            let size = std::fs::metadata(&file).unwrap().len();
            if size > before + 1000 * 4096 || std::time::Instant::now() > deadline {
                break size;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };

        let checkpointed_by_the_checkpointer = prepared.load(Ordering::SeqCst);

        release.send(()).unwrap();
        holder.await.unwrap();
        assert!(
            grown > before + 1000 * 4096,
            "database file {before} -> {grown} bytes"
        );
        assert!(
            checkpointed_by_the_checkpointer >= 1,
            "the checkpointer's connection ran no checkpoint"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_while_reads_keep_running() {
        let (dir, writer) = writer_on_a_fresh_table(16);
        let path = dir.path().join("t.db");
        // A reader that never pauses for long, like a busy server's read pool.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (stop, path) = (Arc::clone(&stop), path.clone());
            thread::spawn(move || {
                let conn = Connection::open(path).unwrap();
                let mut stmt = conn
                    .prepare("SELECT v FROM t ORDER BY rowid DESC LIMIT 1")
                    .unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let _ = stmt.query_map([], |_| Ok(())).unwrap().count();
                }
            })
        };

        // 2.5 times the restart threshold in 4 KiB values.
        let writes = 5 * RESTART_CHECKPOINT_PAGES / 2;
        for _ in 0..writes {
            writer
                .call(|conn| {
                    conn.execute("INSERT INTO t (v) VALUES (zeroblob(4000))", [])?;
                    Ok(())
                })
                .await
                .unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();

        // Every write added at least one page; a WAL that never started over would
        // hold them all (2.5 times the threshold). One that started over holds what came
        // after its last restart: below the threshold, plus the frames written while the
        // restart waited for a read, which a loaded machine makes longer.
        let wal = std::fs::metadata(dir.path().join("t.db-wal"))
            .unwrap()
            .len();
        let limit = 2 * 4096 * u64::try_from(RESTART_CHECKPOINT_PAGES).unwrap();
        assert!(wal < limit, "the WAL is {wal} bytes after {writes} writes");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_and_the_checkpointer_stop_when_the_last_handle_is_dropped() {
        let (dir, writer) = writer_on_a_fresh_table(16);
        writer
            .call(|conn| {
                conn.execute("INSERT INTO t (v) VALUES (1)", [])?;
                Ok(())
            })
            .await
            .unwrap();
        let wal = dir.path().join("t.db-wal");
        assert!(wal.exists());

        drop(writer);

        // SQLite removes the WAL when the last connection to the database closes: the
        // writer's and the checkpointer's connections both closed, so both threads ended.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while wal.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the WAL is still open"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
