//! Live events: every change to a user's data, pushed over Server-Sent Events
//! (`GET /api/users/{user_id}/events`), resumable by event id.
//!
//! # Design
//! **The change feed is the database.** Every write that changes a user's chats or
//! messages, and every end of one of their sessions, records a row in `changes` in its
//! own transaction, numbered 1, 2, 3, ... per user in commit order (see the backends).
//! A stream sends what it reads there, so an event is sent if and only if its write
//! committed, and a client that comes back with the id of the last event it saw gets
//! exactly what came after it.
//!
//! **Event ids.** A change with one event has the id `N` (its number); a message of a
//! stored batch has `N.M`, `M` being the message's id, so a client cut off half-way
//! through a batch resumes after the last message it got. Messages deleted since are
//! left out of a replay (their deletion follows); a chat is sent as it is now.
//!
//! **Fan-out.** Per user with open streams, one feed: a task that reads the user's new
//! changes once, renders each event once, and hands them to the user's streams through
//! a bounded broadcast channel, in batches of the changes read together. A stream that
//! stands right before a batch takes its frames as one piece of bytes, joined once for
//! all the streams of the same narrowing: a write becomes one buffer shared by every
//! stream and one socket write per stream, not one per event. While writes keep
//! coming, a feed reads at most once every 10 ms, so a busy chat's streams get one
//! batch per 10 ms, whatever the rate of writes. The feed wakes when this process
//! writes for the user
//! (one channel send per write, whatever the number of streams), when PostgreSQL
//! notifies a change made by another instance, and every [`poll interval`](crate::events::Hub::new),
//! which catches changes made by another process on the same SQLite file (the CLI).
//! The wake-up carries no data: the feed reads what is new from the database, so a
//! lost or merged wake-up loses nothing.
//!
//! **Bounded.** A stream first replays from the database, a page at a time, then takes
//! live events. A stream whose client reads too slowly falls behind the broadcast
//! channel, which drops the oldest events for it; it then catches up from the
//! database again. Likewise, a stream handed a change that is not the next one after
//! what it sent (its feed started after it, or missed one) reads the changes between
//! from the database first: the numbers have no gaps, so a gap is always noticed. Its own buffer towards the connection holds [`STREAM_BUFFER`](crate::events::STREAM_BUFFER)
//! frames. Open streams are limited per user (429) and in all (503); the total
//! defaults to half of `--max-connections`, so streams cannot take every connection.
//!
//! A stream ends when its session expires (a timer), ends (logout, revoke: the change
//! feed says so), when the chat it is narrowed to is deleted (after that event), at
//! shutdown, or when the client goes away.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actix_web::web::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use metrics::{counter, gauge, histogram};
use serde_json::json;
use tokio::sync::{Notify, broadcast, mpsc, watch};

use crate::config::EventSettings;
use crate::db::{self, Db};
use crate::domain::{Change, ChangeKind, hex};
use crate::metric_names::{EVENTS_LAG, EVENTS_SENT, OPEN_STREAMS, STREAMS_RESET};

/// Changes read from the database at once.
const PAGE: usize = 256;

/// Batches of rendered changes a feed keeps for streams that have not taken them yet; a
/// stream further behind catches up from the database.
const FEED_BUFFER: usize = 512;

/// A batch is cut once its frames reach this many bytes, so that what one stream is
/// handed at once stays small next to its connection's write buffer.
const BATCH_BYTES: usize = 32 * 1024;

/// The shortest time between two reads of a feed (see [`follow`]): under a stream of
/// writes, a stream gets one batch per pace rather than one per write, which is what
/// lets many streams of a busy chat keep up (BENCHMARKS.md, "The events stream").
const FEED_PACE: Duration = Duration::from_millis(10);

/// Frames waiting to be written to one stream's connection.
pub const STREAM_BUFFER: usize = 64;

/// How long a client waits before it reconnects (the `retry:` field), in ms.
const RETRY_MS: u64 = 2000;

/// Where a stream stands: every event of the changes up to `seq` was sent, except that
/// of change `seq` itself, when `message` is set, only its messages with ids up to
/// `message` were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The number of the last change sent (or partly sent).
    pub seq: i64,
    /// For a change partly sent: the id of the last of its messages sent.
    pub message: Option<i64>,
}

impl Position {
    /// Reads an event id: `N` or `N.M`.
    pub fn parse(id: &str) -> Option<Position> {
        let (seq, message) = match id.split_once('.') {
            Some((seq, message)) => (seq, Some(message.parse().ok()?)),
            None => (id, None),
        };
        let seq: i64 = seq.parse().ok()?;
        (seq >= 0 && message.is_none_or(|m: i64| m > 0)).then_some(Position { seq, message })
    }

    /// The number to read changes after: the change itself is read again when it was
    /// only partly sent.
    pub fn read_after(self) -> i64 {
        match self.message {
            Some(_) => self.seq - 1,
            None => self.seq,
        }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.message {
            Some(message) => write!(f, "{}.{message}", self.seq),
            None => write!(f, "{}", self.seq),
        }
    }
}

/// One change, rendered once for every stream.
#[derive(Debug)]
pub struct Rendered {
    seq: i64,
    kind: ChangeKind,
    chat_id: Option<i64>,
    /// The SSE frames, with the message id of each message event.
    frames: Vec<(Option<i64>, Bytes)>,
    /// For a session's end: the token hash, in hex.
    ended_session: Option<String>,
    /// When the change was recorded, for the lag metric.
    recorded: Option<DateTime<Utc>>,
    /// Not a change: the user is gone (their account was deleted), and so is their
    /// change feed; every stream of theirs ends.
    user_gone: bool,
}

impl Rendered {
    /// What a feed hands its streams when its user is gone.
    fn user_gone() -> Rendered {
        Rendered {
            seq: i64::MAX,
            kind: ChangeKind::SessionEnded,
            chat_id: None,
            frames: Vec::new(),
            ended_session: None,
            recorded: None,
            user_gone: true,
        }
    }

    fn bytes(&self) -> usize {
        self.frames.iter().map(|(_, frame)| frame.len()).sum()
    }

    /// Whether a stream narrowed to `chat` (`None`: not narrowed) sends this change.
    fn concerns(&self, chat: Option<i64>) -> bool {
        chat.is_none() || self.chat_id == chat
    }

    /// Whether this change can end a stream (it goes through a stream's checks one by
    /// one, never joined).
    fn may_end(&self) -> bool {
        matches!(
            self.kind,
            ChangeKind::SessionEnded | ChangeKind::ChatDeleted
        )
    }
}

/// Consecutive changes a feed read together, handed to its streams at once. A stream
/// that stands right before the batch takes all the frames of its chat (or all of
/// them) as one piece of bytes, joined once for every stream that wants the same.
#[derive(Debug)]
pub struct Batch {
    changes: Vec<Rendered>,
    /// Whether one of the changes can end a stream: then each is delivered on its own.
    may_end: bool,
    /// The frames joined, per narrowing (`None`: every chat); made when the first
    /// stream asks.
    joined: Mutex<Vec<(Option<i64>, Joined)>>,
}

/// The frames of a batch that one narrowing sends, as one piece.
#[derive(Debug, Clone)]
struct Joined {
    bytes: Bytes,
    /// How many frames.
    frames: u64,
    /// When the oldest of their changes was recorded, for the lag metric.
    oldest: Option<DateTime<Utc>>,
}

impl Batch {
    fn new(changes: Vec<Rendered>) -> Batch {
        Batch {
            may_end: changes.iter().any(Rendered::may_end),
            changes,
            joined: Mutex::new(Vec::new()),
        }
    }

    fn first(&self) -> i64 {
        self.changes.first().map_or(0, |change| change.seq)
    }

    /// Whether this says the user is gone (see [`Rendered::user_gone`]).
    fn user_gone(&self) -> bool {
        self.changes.iter().any(|change| change.user_gone)
    }

    fn last(&self) -> i64 {
        self.changes.last().map_or(0, |change| change.seq)
    }

    /// The frames of the changes of `chat` (`None`: of every chat) as one piece.
    fn joined(&self, chat: Option<i64>) -> Joined {
        let mut joined = self.joined.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, piece)) = joined.iter().find(|(of, _)| *of == chat) {
            return piece.clone();
        }
        let ours: Vec<&Rendered> = self
            .changes
            .iter()
            .filter(|change| change.concerns(chat) && !change.frames.is_empty())
            .collect();
        let mut bytes = BytesMut::with_capacity(ours.iter().map(|change| change.bytes()).sum());
        let mut frames = 0;
        for (_, frame) in ours.iter().flat_map(|change| &change.frames) {
            bytes.extend_from_slice(frame);
            frames += 1;
        }
        let piece = Joined {
            bytes: bytes.freeze(),
            frames,
            oldest: ours.first().and_then(|change| change.recorded),
        };
        joined.push((chat, piece.clone()));
        piece
    }
}

/// Records the lag of a change recorded at `recorded`, sent now.
fn record_lag(recorded: Option<DateTime<Utc>>) {
    if let Some(recorded) = recorded {
        let lag = Utc::now().signed_duration_since(recorded);
        histogram!(EVENTS_LAG).record(lag.as_seconds_f64().max(0.0));
    }
}

/// One SSE frame: `id`, `event` and one line of JSON data.
fn frame(id: &str, event: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("id: {id}\nevent: {event}\ndata: {data}\n\n"))
}

/// Renders `change` as its events.
pub fn render(change: Change) -> Rendered {
    let seq = change.seq;
    let id = seq.to_string();
    let mut frames = Vec::new();
    let mut ended_session = None;
    match change.kind {
        ChangeKind::MessagesAdded => {
            for message in &change.messages {
                let id = Position {
                    seq,
                    message: Some(message.id),
                };
                let data = json!({ "message": message });
                frames.push((Some(message.id), frame(&id.to_string(), "message", &data)));
            }
        }
        ChangeKind::MessagesDeleted => {
            let ids: Vec<i64> = change
                .detail
                .as_deref()
                .and_then(|detail| serde_json::from_str(detail).ok())
                .unwrap_or_default();
            let data = json!({ "chat_id": change.chat_id, "ids": ids });
            frames.push((None, frame(&id, "messages_deleted", &data)));
        }
        ChangeKind::ChatCreated | ChangeKind::ChatRenamed => {
            if let Some(chat) = &change.chat {
                let event = change.kind.as_str();
                frames.push((None, frame(&id, event, &json!({ "chat": chat }))));
            }
        }
        ChangeKind::ChatDeleted => {
            let data = json!({ "chat_id": change.chat_id });
            frames.push((None, frame(&id, "chat_deleted", &data)));
        }
        ChangeKind::SessionEnded => ended_session = change.detail.clone(),
    }
    Rendered {
        seq,
        kind: change.kind,
        chat_id: change.chat_id,
        frames,
        ended_session,
        recorded: DateTime::parse_from_rfc3339(change.created_at.as_str())
            .ok()
            .map(|at| at.with_timezone(&Utc)),
        user_gone: false,
    }
}

/// The events of every open stream: the feeds, the limits and the stop signal.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    settings: EventSettings,
    poll: Duration,
    feeds: Mutex<HashMap<String, FeedEntry>>,
    open: AtomicUsize,
    stop: watch::Sender<bool>,
}

/// A feed in the hub's map: the feed itself, held weakly (its streams hold it), and its
/// wake-up, which waking uses without taking a hold on the feed. (A hold taken under the
/// map's lock could be the feed's last one: dropping it there would take the lock again
/// from within, in [`Feed`]'s `drop`.)
struct FeedEntry {
    feed: Weak<Feed>,
    wake: Arc<Notify>,
}

/// The changes of one user with open streams.
struct Feed {
    user: String,
    wake: Arc<Notify>,
    events: broadcast::Sender<Arc<Batch>>,
    streams: AtomicUsize,
    hub: Weak<Inner>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        // Its task ends by itself; take it out of the map unless it was replaced.
        if let Some(hub) = self.hub.upgrade() {
            let mut feeds = hub.feeds.lock().unwrap_or_else(|e| e.into_inner());
            if feeds
                .get(&self.user)
                .is_some_and(|entry| entry.feed.strong_count() == 0)
            {
                feeds.remove(&self.user);
            }
        }
    }
}

/// Why a stream could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The user has the most streams allowed open (429).
    PerUser,
    /// The server has the most streams allowed open (503).
    Total,
}

impl Hub {
    /// A hub over `db`, waking its feeds by themselves every `poll`.
    pub fn new(db: Db, settings: EventSettings, poll: Duration) -> Hub {
        let (stop, _) = watch::channel(false);
        let hub = Hub {
            inner: Arc::new(Inner {
                db: db.clone(),
                settings,
                poll,
                feeds: Mutex::new(HashMap::new()),
                open: AtomicUsize::new(0),
                stop,
            }),
        };
        tokio::spawn(wake_on_writes(Arc::downgrade(&hub.inner), db.changes()));
        let others = Arc::downgrade(&hub.inner);
        tokio::spawn(async move {
            db.follow_changes(|user| match others.upgrade() {
                Some(inner) if !*inner.stop.borrow() => {
                    wake(&inner, user);
                    true
                }
                _ => false,
            })
            .await;
        });
        hub
    }

    /// Ends every stream now (at shutdown), and refuses new ones.
    pub fn stop(&self) {
        self.inner.stop.send_replace(true);
    }

    /// Opens a stream of `user`'s events from `start` (`None`: from now), narrowed to
    /// `chat` if set, for the session `token_hash` that expires at `expires_at`. The
    /// frames come out of the receiver; the stream ends when it is dropped.
    pub fn open(
        &self,
        user: String,
        chat: Option<i64>,
        token_hash: [u8; 32],
        expires_at: DateTime<Utc>,
        start: Option<Position>,
        state: FeedState,
    ) -> Result<mpsc::Receiver<Bytes>, Refused> {
        let inner = &self.inner;
        if *inner.stop.borrow() {
            return Err(Refused::Total);
        }
        let total = inner.open.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(Arc::clone(inner));
        if total >= inner.settings.max_streams {
            return Err(Refused::Total);
        }
        let feed = self.feed(&user, state.last);
        let per_user = feed.streams.fetch_add(1, Ordering::AcqRel);
        let user_slot = UserSlot(Arc::clone(&feed));
        if per_user >= inner.settings.max_per_user {
            return Err(Refused::PerUser);
        }
        // Subscribed before the replay reads the database: whatever commits from now on
        // comes through here, and what the replay has sent already is skipped.
        let live = feed.events.subscribe();
        let (out, frames) = mpsc::channel(STREAM_BUFFER);
        gauge!(OPEN_STREAMS).increment(1.0);
        let stream = Stream {
            db: inner.db.clone(),
            user,
            chat,
            token_hex: hex(&token_hash),
            out,
        };
        let heartbeat = inner.settings.heartbeat;
        let stop = inner.stop.subscribe();
        tokio::spawn(async move {
            let _slots = (slot, user_slot);
            stream
                .run(start, state, live, heartbeat, expires_at, stop)
                .await;
            gauge!(OPEN_STREAMS).decrement(1.0);
        });
        Ok(frames)
    }

    /// The feed of `user`; started, from after change `last`, if it has none.
    fn feed(&self, user: &str, last: i64) -> Arc<Feed> {
        let inner = &self.inner;
        let mut feeds = inner.feeds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(feed) = feeds.get(user).and_then(|entry| entry.feed.upgrade()) {
            return feed;
        }
        let (events, _) = broadcast::channel(FEED_BUFFER);
        let feed = Arc::new(Feed {
            user: user.to_owned(),
            wake: Arc::new(Notify::new()),
            events,
            streams: AtomicUsize::new(0),
            hub: Arc::downgrade(inner),
        });
        let entry = FeedEntry {
            feed: Arc::downgrade(&feed),
            wake: Arc::clone(&feed.wake),
        };
        feeds.insert(user.to_owned(), entry);
        tokio::spawn(follow(
            Arc::downgrade(&feed),
            Arc::clone(&feed.wake),
            inner.db.clone(),
            user.to_owned(),
            last,
            inner.poll,
            inner.stop.subscribe(),
        ));
        feed
    }
}

/// A place among the open streams, given back when dropped.
struct Slot(Arc<Inner>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A place among a user's open streams, given back when dropped.
struct UserSlot(Arc<Feed>);

impl Drop for UserSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

fn wake(inner: &Inner, user: Option<&str>) {
    let feeds = inner.feeds.lock().unwrap_or_else(|e| e.into_inner());
    match user {
        Some(user) => {
            if let Some(entry) = feeds.get(user) {
                entry.wake.notify_one();
            }
        }
        None => {
            for entry in feeds.values() {
                entry.wake.notify_one();
            }
        }
    }
}

/// Wakes the feed of every user this process writes for, until the hub is gone.
async fn wake_on_writes(hub: Weak<Inner>, mut writes: broadcast::Receiver<Arc<str>>) {
    loop {
        let user = match writes.recv().await {
            Ok(user) => Some(user),
            // Missed some: wake them all.
            Err(broadcast::error::RecvError::Lagged(_)) => None,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(inner) = hub.upgrade() else { return };
        wake(&inner, user.as_deref());
    }
}

/// A feed's task: reads `user`'s new changes whenever woken (or every `poll`) and hands
/// them to the feed's streams, until the feed is gone or the hub stops.
async fn follow(
    feed: Weak<Feed>,
    wake: Arc<Notify>,
    db: Db,
    user: String,
    mut after: i64,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let Some(events) = feed.upgrade().map(|feed| feed.events.clone()) else {
            return;
        };
        let read_at = tokio::time::Instant::now();
        match read_new(&db, &user, after, &events).await {
            Ok(last) => after = last,
            Err(db::Error::NotFound(db::Entity::User)) => {
                log::debug!("the user {user} is gone: ending their events streams");
                let _ = events.send(Arc::new(Batch::new(vec![Rendered::user_gone()])));
                return;
            }
            Err(err) => log::warn!("reading the change feed of {user} failed: {err}"),
        }
        drop(events);
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(poll) => {}
            _ = stop.changed() => return,
        }
        // While writes keep coming, read at most once per pace: what they wrote
        // meanwhile goes out as one batch. A first write after a quiet spell is read
        // at once.
        tokio::select! {
            () = tokio::time::sleep_until(read_at + FEED_PACE) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Hands every change of `user` after `after` to `events`, in batches; the number of
/// the last.
async fn read_new(
    db: &Db,
    user: &str,
    mut after: i64,
    events: &broadcast::Sender<Arc<Batch>>,
) -> db::Result<i64> {
    loop {
        let log = db.read_changes(user.to_owned(), after, PAGE).await?;
        let full = log.changes.len() == PAGE;
        let mut batch = Vec::new();
        let mut bytes = 0;
        for change in log.changes {
            after = change.seq;
            let change = render(change);
            bytes += change.bytes();
            batch.push(change);
            if bytes >= BATCH_BYTES {
                // No receivers is fine: the last stream just went away.
                let _ = events.send(Arc::new(Batch::new(std::mem::take(&mut batch))));
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            let _ = events.send(Arc::new(Batch::new(batch)));
        }
        if !full {
            return Ok(after);
        }
    }
}

/// Where a user's change feed stands (see [`Db::read_changes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedState {
    /// The number of the user's newest change.
    pub last: i64,
    /// The number of the oldest change still kept.
    pub oldest: Option<i64>,
}

/// One open stream.
struct Stream {
    db: Db,
    user: String,
    chat: Option<i64>,
    token_hex: String,
    out: mpsc::Sender<Bytes>,
}

/// What sending a change left the stream to do.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Go,
    End,
}

impl Stream {
    async fn run(
        self,
        start: Option<Position>,
        state: FeedState,
        mut live: broadcast::Receiver<Arc<Batch>>,
        heartbeat: Duration,
        expires_at: DateTime<Utc>,
        mut stop: watch::Receiver<bool>,
    ) {
        if self
            .send(Bytes::from(format!("retry: {RETRY_MS}\n\n")))
            .await
            == Flow::End
        {
            return;
        }
        // Boxed, like the catch-ups below: a stream's task stays small while it waits,
        // which is what 10,000 idle streams cost.
        let mut at = match Box::pin(self.begin(start, state)).await {
            Some(at) => at,
            None => return,
        };
        let until_expiry = (expires_at - Utc::now()).to_std().unwrap_or_default();
        let expiry = tokio::time::sleep(until_expiry);
        tokio::pin!(expiry);
        let mut beats = tokio::time::interval(heartbeat);
        beats.reset();
        loop {
            let flow = tokio::select! {
                received = live.recv() => match received {
                    Ok(batch) if batch.user_gone() => Flow::End,
                    // Changes that do not come next: those between came before this
                    // stream's feed did, or were missed; read them first.
                    Ok(batch) if batch.first() > at.seq + 1 => {
                        match Box::pin(self.catch_up(&mut at)).await {
                            Some(Flow::Go) => self.deliver_batch(&batch, &mut at).await,
                            Some(Flow::End) | None => Flow::End,
                        }
                    }
                    Ok(batch) => self.deliver_batch(&batch, &mut at).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        match Box::pin(self.catch_up(&mut at)).await {
                            Some(flow) => flow,
                            None => Flow::End,
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => Flow::End,
                },
                _ = beats.tick() => self.send(Bytes::from_static(b": heartbeat\n\n")).await,
                () = &mut expiry => Flow::End,
                _ = stop.changed() => Flow::End,
                () = self.out.closed() => Flow::End,
            };
            if flow == Flow::End {
                return;
            }
        }
    }

    /// Replays what came after `start`, or sends a `reset` when that is no longer kept;
    /// where the stream then stands. `None` when the stream ended.
    /// `feed` is where the user's change feed stood when the stream was opened, before
    /// its client got the answer's head: "from now" means from there.
    async fn begin(&self, start: Option<Position>, feed: FeedState) -> Option<Position> {
        let now = Position {
            seq: feed.last,
            message: None,
        };
        let Some(start) = start else {
            // Whatever committed since was maybe handed out by the feed before this
            // stream subscribed: read it here.
            let mut at = now;
            return match self.catch_up(&mut at).await? {
                Flow::Go => Some(at),
                Flow::End => None,
            };
        };
        let needed = start.read_after().saturating_add(1);
        let kept = match feed.oldest {
            Some(oldest) => oldest <= needed,
            None => needed > feed.last,
        };
        if start.seq > feed.last || !kept {
            counter!(STREAMS_RESET).increment(1);
            let data = json!({
                "reason": "the changes after this event id are no longer kept; reload",
            });
            let reset = frame(&now.to_string(), "reset", &data);
            return match self.send(reset).await {
                Flow::Go => Some(now),
                Flow::End => None,
            };
        }
        let mut at = start;
        match self.catch_up(&mut at).await? {
            Flow::Go => Some(at),
            Flow::End => None,
        }
    }

    /// Sends every change after `at` from the database, a page at a time. `None` when
    /// reading failed (the stream ends; the client reconnects and resumes).
    async fn catch_up(&self, at: &mut Position) -> Option<Flow> {
        loop {
            let log = match self
                .db
                .read_changes(self.user.clone(), at.read_after(), PAGE)
                .await
            {
                Ok(log) => log,
                Err(err) => {
                    log::warn!("reading the events of {} failed: {err}", self.user);
                    return None;
                }
            };
            let full = log.changes.len() == PAGE;
            for change in log.changes {
                if self.deliver(&render(change), at).await == Flow::End {
                    return Some(Flow::End);
                }
            }
            if !full {
                return Some(Flow::Go);
            }
        }
    }

    /// Sends what of `batch` this stream has not sent yet, and moves `at` past it: at
    /// once when it comes right after `at` and none of it can end the stream, else
    /// change by change.
    async fn deliver_batch(&self, batch: &Batch, at: &mut Position) -> Flow {
        let next = at.message.is_none() && batch.first() == at.seq + 1;
        if !next || batch.may_end {
            for change in &batch.changes {
                if self.deliver(change, at).await == Flow::End {
                    return Flow::End;
                }
            }
            return Flow::Go;
        }
        let piece = batch.joined(self.chat);
        if piece.frames > 0 {
            if self.send(piece.bytes).await == Flow::End {
                return Flow::End;
            }
            counter!(EVENTS_SENT).increment(piece.frames);
            // The oldest change's lag, once per batch and stream.
            record_lag(piece.oldest);
        }
        *at = Position {
            seq: batch.last(),
            message: None,
        };
        Flow::Go
    }

    /// Sends what of `change` this stream has not sent yet, and moves `at` past it.
    async fn deliver(&self, change: &Rendered, at: &mut Position) -> Flow {
        if change.seq < at.seq || (change.seq == at.seq && at.message.is_none()) {
            return Flow::Go;
        }
        if change.ended_session.as_deref() == Some(self.token_hex.as_str()) {
            return Flow::End;
        }
        let ours = change.concerns(self.chat);
        if ours {
            for (message, text) in &change.frames {
                let sent =
                    change.seq == at.seq && message.zip(at.message).is_some_and(|(m, a)| m <= a);
                if sent {
                    continue;
                }
                if self.send(text.clone()).await == Flow::End {
                    return Flow::End;
                }
                counter!(EVENTS_SENT).increment(1);
                if let Some(message) = message {
                    *at = Position {
                        seq: change.seq,
                        message: Some(*message),
                    };
                }
            }
            record_lag(change.recorded);
        }
        *at = Position {
            seq: change.seq,
            message: None,
        };
        if ours && self.chat.is_some() && change.kind == ChangeKind::ChatDeleted {
            return Flow::End;
        }
        Flow::Go
    }

    /// Queues `frame` for the connection, waiting while its buffer is full.
    async fn send(&self, frame: Bytes) -> Flow {
        match self.out.send(frame).await {
            Ok(()) => Flow::Go,
            Err(_) => Flow::End,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_read_back_as_they_are_written() {
        for id in ["0", "7", "12.345"] {
            let position = Position::parse(id).unwrap();
            assert_eq!(position.to_string(), id);
        }
        assert_eq!(
            Position::parse("12.345"),
            Some(Position {
                seq: 12,
                message: Some(345)
            })
        );
    }

    #[test]
    fn other_ids_are_not_event_ids() {
        for id in [
            "", "-1", "1.", ".5", "1.0", "1.-2", "x", "1.2.3", " 1", "1e3",
        ] {
            assert_eq!(Position::parse(id), None, "{id:?}");
        }
    }

    #[test]
    fn a_partly_sent_change_is_read_again() {
        let whole = Position::parse("9").unwrap();
        let part = Position::parse("9.40").unwrap();
        assert_eq!(whole.read_after(), 9);
        assert_eq!(part.read_after(), 8);
    }
}
