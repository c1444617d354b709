//! The writer thread: the one connection that writes, and the queue in front of it.
//!
//! # Design
//! SQLite allows one writer at a time. Rather than letting request threads race for the
//! write lock (and fail with `SQLITE_BUSY` under load), a single thread owns the write
//! connection and runs closures sent to it over a channel, one after another. A caller
//! awaits a oneshot reply, so no async worker thread ever blocks on SQLite. The thread
//! ends when the last [`Writer`] handle is dropped, closing the connection.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::thread;

use metrics::gauge;
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{Error, Result};
use crate::telemetry::WRITE_QUEUE_DEPTH;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// What the writer thread is asked to do.
enum Message {
    /// Run a job.
    Run(Job),
    /// Checkpoint, close the connection and stop; answer when done.
    Close(oneshot::Sender<Result<()>>),
}

/// A handle for sending work to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Message>,
}

impl Writer {
    /// Starts the writer thread, which takes ownership of `conn`.
    pub fn spawn(mut conn: Connection) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel::<Message>();
        thread::Builder::new()
            .name("neptun-db-writer".to_owned())
            .spawn(move || {
                for message in queue {
                    match message {
                        Message::Run(job) => {
                            // A panicking job loses its reply (the caller sees
                            // WriterGone); the thread carries on with the next one.
                            if catch_unwind(AssertUnwindSafe(|| job(&mut conn))).is_err() {
                                log::error!("a database write panicked; it was rolled back");
                            }
                        }
                        Message::Close(reply) => {
                            let _ = reply.send(checkpoint_and_close(conn));
                            return;
                        }
                    }
                }
            })?;
        Ok(Writer { jobs })
    }

    /// Stops the writer after the jobs already queued: checkpoints the WAL into the
    /// database file and closes the connection.
    pub async fn close(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Message::Close(reply))
            .map_err(|_| Error::WriterGone)?;
        answer.await.map_err(|_| Error::WriterGone)?
    }

    /// Runs `f` on the writer thread and returns its result.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = f(conn);
            gauge!(WRITE_QUEUE_DEPTH).decrement(1.0);
            // The caller may have gone away (client disconnected); the write still stands.
            let _ = reply.send(result);
        });
        gauge!(WRITE_QUEUE_DEPTH).increment(1.0);
        if self.jobs.send(Message::Run(job)).is_err() {
            gauge!(WRITE_QUEUE_DEPTH).decrement(1.0);
            return Err(Error::WriterGone);
        }
        answer.await.map_err(|_| Error::WriterGone)?
    }
}

/// Moves everything in the WAL into the database file and truncates the WAL, so the
/// file alone is a complete copy; then closes the connection.
fn checkpoint_and_close(conn: Connection) -> Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    conn.close().map_err(|(_, err)| Error::Sqlite(err))
}
