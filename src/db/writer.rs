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

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{Error, Result};

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A handle for sending work to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread, which takes ownership of `conn`.
    pub fn spawn(mut conn: Connection) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("neptun-db-writer".to_owned())
            .spawn(move || {
                for job in queue {
                    // A panicking job loses its reply (the caller sees WriterGone); the
                    // thread carries on with the next one.
                    if catch_unwind(AssertUnwindSafe(|| job(&mut conn))).is_err() {
                        log::error!("a database write panicked; it was rolled back");
                    }
                }
            })?;
        Ok(Writer { jobs })
    }

    /// Runs `f` on the writer thread and returns its result.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // The caller may have gone away (client disconnected); the write still stands.
            let _ = reply.send(f(conn));
        });
        self.jobs.send(job).map_err(|_| Error::WriterGone)?;
        answer.await.map_err(|_| Error::WriterGone)?
    }
}
