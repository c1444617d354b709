//! What both backends share to export a user: [`ExportRow`], what the caller renders;
//! the slicer that cuts the rendered rows into slices of bounded size; and
//! [`ExportRest`], the slices on their way to the caller.
//!
//! An export reads one snapshot from start to end (one read transaction), so it is
//! the state of one instant, whatever is written meanwhile. It is read a slice at a
//! time, each once the caller has taken the one before, so memory holds at most a few
//! slices whatever the user's size. A caller that stops taking slices for
//! a minute ends the export (and with it the snapshot it holds), and so does one still
//! reading after a quarter of an hour: a snapshot held open keeps SQLite's WAL from
//! being checkpointed and PostgreSQL's vacuum from reclaiming rows.

use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;

use super::{BoxError, Error, Result, Step};
use crate::domain::{Chat, MessageRef, User};

/// One piece of a user's data, in the order an export gives them: the user, then each
/// chat (in id order) followed by its messages (in id order), then the end.
#[derive(Debug, Clone, Copy)]
pub enum ExportRow<'a> {
    /// The user, first.
    User(&'a User),
    /// A chat; its messages follow it.
    Chat(&'a Chat),
    /// A message of the chat before it.
    Message(MessageRef<'a>),
    /// The last row: how many chats and messages came before it. An export without it
    /// was cut short.
    End {
        /// Chats exported.
        chats: u64,
        /// Messages exported.
        messages: u64,
    },
}

/// Longest an export waits for its caller to take a slice before giving up.
pub(super) const STALL_LIMIT: Duration = Duration::from_secs(60);

/// Longest an export may take, however steadily its caller reads.
const TIME_LIMIT: Duration = Duration::from_secs(15 * 60);

/// Most rows in one slice.
const SLICE_ROWS: usize = 256;

/// Most bytes of message text in one slice (the last message may go past it).
const SLICE_TEXT_BYTES: usize = 64 * 1024;

/// A slice of an export, and whether it is the last.
pub(super) struct Slice<S> {
    out: S,
    last: bool,
}

/// The sending end of an export's slices, for its backend.
pub(super) type SliceSender<S> = mpsc::Sender<Result<Slice<S>>>;

/// Renders rows into the current slice with the caller's `each`, counts them, and hands
/// over a full slice when it has reached its size.
pub(super) struct Slicer<S, F> {
    out: S,
    each: F,
    rows: usize,
    text_bytes: usize,
    chats: u64,
    messages: u64,
    started: std::time::Instant,
}

impl<S, F> Slicer<S, F>
where
    S: Default,
    F: FnMut(&mut S, ExportRow<'_>) -> Result<(), BoxError>,
{
    /// A slicer rendering with `each`.
    pub(super) fn new(each: F) -> Self {
        Slicer {
            out: S::default(),
            each,
            rows: 0,
            text_bytes: 0,
            chats: 0,
            messages: 0,
            started: std::time::Instant::now(),
        }
    }

    /// Renders `row`; returns the slice if it is now full.
    pub(super) fn push(&mut self, row: ExportRow<'_>) -> Result<Option<Slice<S>>> {
        match row {
            ExportRow::Chat(_) => self.chats += 1,
            ExportRow::Message(message) => {
                self.messages += 1;
                self.text_bytes += message.message.len();
            }
            ExportRow::User(_) | ExportRow::End { .. } => {}
        }
        (self.each)(&mut self.out, row).map_err(Error::Render)?;
        self.rows += 1;
        if self.rows < SLICE_ROWS && self.text_bytes < SLICE_TEXT_BYTES {
            return Ok(None);
        }
        if self.started.elapsed() > TIME_LIMIT {
            return Err(Error::described(
                Step::Read,
                format!("the export took over {} s", TIME_LIMIT.as_secs()),
            ));
        }
        self.rows = 0;
        self.text_bytes = 0;
        Ok(Some(Slice {
            out: std::mem::take(&mut self.out),
            last: false,
        }))
    }

    /// Renders the end row; returns the last slice.
    pub(super) fn finish(mut self) -> Result<Slice<S>> {
        let end = ExportRow::End {
            chats: self.chats,
            messages: self.messages,
        };
        (self.each)(&mut self.out, end).map_err(Error::Render)?;
        Ok(Slice {
            out: self.out,
            last: true,
        })
    }
}

/// The slices of an export (see [`crate::db::Db::export`]), in order.
pub struct ExportRest<S> {
    rest: mpsc::Receiver<Result<Slice<S>>>,
    /// The first slice, read by [`ExportRest::start`] and not taken yet.
    first: Option<S>,
    ended: bool,
}

impl<S> ExportRest<S> {
    /// A channel for an export's slices: the sender for the backend, the receiving end
    /// for the caller. One slice waits while the next is read.
    pub(super) fn channel() -> (SliceSender<S>, ExportRest<S>) {
        let (slices, rest) = mpsc::channel(1);
        (
            slices,
            ExportRest {
                rest,
                first: None,
                ended: false,
            },
        )
    }

    /// Waits for the first slice, so that an error there (the database is unavailable,
    /// the user unknown) comes before anything was sent.
    pub(super) async fn start(&mut self) -> Result<()> {
        match self.rest.recv().await {
            Some(Ok(slice)) => {
                self.ended = slice.last;
                self.first = Some(slice.out);
                Ok(())
            }
            Some(Err(err)) => Err(err),
            None => Err(cut_short()),
        }
    }

    /// The next slice, or `None` after the last. An error ends the export: the database
    /// failed, or the export stopped before its end row.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<S>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rest.poll_recv(cx) {
            Poll::Ready(Some(Ok(slice))) => {
                self.ended = slice.last;
                Poll::Ready(Some(Ok(slice.out)))
            }
            Poll::Ready(Some(Err(err))) => {
                self.ended = true;
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(Some(Err(cut_short())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// The next slice, or `None` after the last (see [`ExportRest::poll_next`]).
    pub async fn next(&mut self) -> Option<Result<S>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }
}

/// Hands `slice` to the caller, waiting at most [`STALL_LIMIT`] for it to take the one
/// before. An error if the caller went away or stalled: the export ends there.
pub(super) async fn hand_over<S>(
    slices: &mpsc::Sender<Result<Slice<S>>>,
    slice: Slice<S>,
) -> Result<()> {
    match tokio::time::timeout(STALL_LIMIT, slices.send(Ok(slice))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Error::described(
            Step::Read,
            "the export's reader went away".to_owned(),
        )),
        Err(_) => Err(Error::described(
            Step::Read,
            format!(
                "the export's reader took nothing for {} s",
                STALL_LIMIT.as_secs()
            ),
        )),
    }
}

/// Ends an export with `err`, which its caller gets instead of the next slice (if it
/// is still there to get it).
pub(super) fn fail<S>(slices: &mpsc::Sender<Result<Slice<S>>>, user: &str, err: Error) {
    log::warn!("the export of user {user} stopped: {err}");
    let _ = slices.try_send(Err(err));
}

/// The error of an export whose backend stopped before the end row.
fn cut_short() -> Error {
    Error::described(Step::Read, "the export stopped before its end".to_owned())
}
