//! The real binary, run the hard way ("Run it for real"): killed with SIGKILL while
//! clients write, stopped with SIGTERM under load, backed up and checked while it
//! writes, refusing files it must not touch, migrating an old database, revoking
//! sessions while it runs, and starting quickly on a large database.
//!
//! Load comes from a few concurrent clients that post batches of uniquely worded
//! messages and record what each request was answered. Every wait is bounded by a
//! deadline, and every server process is killed by its guard when a test fails.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use neptun_chat::auth::{SESSION_COOKIE, SessionToken, hash_token};
use neptun_chat::db::Admin;
use neptun_chat::db::Location;
use neptun_chat::domain::Timestamp;
use reqwest::header::{CONTENT_TYPE, COOKIE};
use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::process::{ServerProcess, TempDb, neptun, run, unprivileged};

/// How many clients write at once.
const CLIENTS: usize = 8;

/// The longest a load may take to reach a number of acknowledgements, or to wind down.
const LOAD_DEADLINE: Duration = Duration::from_secs(10);

/// No single request may take longer than this; a hung request fails the test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

// ---- load ----------------------------------------------------------------------------

/// What became of one request.
#[derive(Debug, Clone)]
enum Answer {
    /// 200, with the ids the server gave the messages, in the batch's order.
    Stored(Vec<i64>),
    /// Another status, with the body.
    Refused(u16, String),
    /// No complete answer: connection refused or reset, or a timeout.
    Lost(String),
}

/// One batch a client sent, and its answer.
#[derive(Debug, Clone)]
struct SentBatch {
    /// The messages, in order: `(text, role)`.
    messages: Vec<(String, &'static str)>,
    answer: Answer,
    /// When the answer (or the failure) came.
    answered_at: Instant,
}

impl SentBatch {
    fn stored_ids(&self) -> Option<&[i64]> {
        match &self.answer {
            Answer::Stored(ids) => Some(ids),
            _ => None,
        }
    }
}

/// `CLIENTS` tasks posting batches of 3 to 5 messages to one chat, each until it is told
/// to stop or until one of its requests gets anything but a 200.
struct Load {
    stop: Arc<AtomicBool>,
    acknowledged: watch::Receiver<usize>,
    /// How many clients have a request in flight.
    in_flight: watch::Receiver<usize>,
    sent: Arc<Mutex<Vec<SentBatch>>>,
    clients: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(url: String, token: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (acks, acknowledged) = watch::channel(0);
        let acks = Arc::new(acks);
        let (sending, in_flight) = watch::channel(0);
        let sending = Arc::new(sending);
        let sent = Arc::new(Mutex::new(Vec::new()));
        let cookie = format!("{SESSION_COOKIE}={token}");
        let clients = (0..CLIENTS)
            .map(|client| {
                let (url, cookie) = (url.clone(), cookie.clone());
                let (stop, acks, sent) = (stop.clone(), acks.clone(), sent.clone());
                let sending = sending.clone();
                // A client of its own per task: each sends its requests one after another
                // on one kept-alive connection, so none is ever opened in a race with
                // the server closing its listener.
                let http = reqwest::Client::builder()
                    .timeout(REQUEST_TIMEOUT)
                    .pool_max_idle_per_host(1)
                    .build()
                    .expect("an HTTP client");
                tokio::spawn(async move {
                    for batch in 0.. {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let messages = batch_messages(client, batch);
                        sending.send_modify(|n| *n += 1);
                        let answer = post_batch(&http, &url, &cookie, &messages).await;
                        sending.send_modify(|n| *n -= 1);
                        let go_on = matches!(answer, Answer::Stored(_));
                        sent.lock().expect("the log lock").push(SentBatch {
                            messages,
                            answer,
                            answered_at: Instant::now(),
                        });
                        if !go_on {
                            return;
                        }
                        acks.send_modify(|n| *n += 1);
                    }
                })
            })
            .collect();
        Load {
            stop,
            acknowledged,
            in_flight,
            sent,
            clients,
        }
    }

    /// Waits until at least `count` batches have been acknowledged.
    async fn wait_for_acks(&mut self, count: usize) {
        let reached = tokio::time::timeout(
            LOAD_DEADLINE,
            self.acknowledged.wait_for(|acks| *acks >= count),
        )
        .await;
        assert!(
            matches!(reached, Ok(Ok(_))),
            "{count} acknowledgements within {LOAD_DEADLINE:?}; the last answers: {:#?}",
            self.sent
                .lock()
                .expect("the log lock")
                .iter()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
        );
    }

    /// Waits until every client has a request in flight and every batch of the
    /// `committed` messages in the database has been answered: the requests in flight
    /// are then all waiting for the database.
    async fn wait_until_all_wait_for_the_database(&mut self, committed: usize) {
        let deadline = Instant::now() + LOAD_DEADLINE;
        loop {
            let answered: usize = self.acknowledged().iter().map(|b| b.messages.len()).sum();
            let in_flight = *self.in_flight.borrow();
            if answered == committed && in_flight == CLIENTS {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "within {LOAD_DEADLINE:?}, {answered} of {committed} committed messages \
                 were answered and {in_flight} of {CLIENTS} clients had a request in flight"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The batches acknowledged so far.
    fn acknowledged(&self) -> Vec<SentBatch> {
        self.sent
            .lock()
            .expect("the log lock")
            .iter()
            .filter(|batch| batch.stored_ids().is_some())
            .cloned()
            .collect()
    }

    /// Tells the clients to send nothing more; those with a request in flight finish it.
    fn stop_sending(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits for every client to end (told to stop, or its server gone) and returns
    /// every batch sent.
    async fn finish(self) -> Vec<SentBatch> {
        let ended = tokio::time::timeout(LOAD_DEADLINE, async {
            for client in self.clients {
                client.await.expect("a client task");
            }
        })
        .await;
        assert!(ended.is_ok(), "the clients ended within {LOAD_DEADLINE:?}");
        std::mem::take(&mut *self.sent.lock().expect("the log lock"))
    }
}

/// Batch `batch` of `client`: 3 to 5 messages whose texts appear nowhere else, with
/// non-ASCII characters and JSON-escaped ones, so "exact text" means something.
fn batch_messages(client: usize, batch: usize) -> Vec<(String, &'static str)> {
    const ROLES: [&str; 3] = ["user", "assistant", "system"];
    (0..3 + (client + batch) % 3)
        .map(|i| {
            (
                format!("client {client} · batch {batch} · message {i} «ü\"\\\t»"),
                ROLES[(batch + i) % 3],
            )
        })
        .collect()
}

async fn post_batch(
    http: &reqwest::Client,
    url: &str,
    cookie: &str,
    messages: &[(String, &str)],
) -> Answer {
    let body = json!({
        "messages": messages
            .iter()
            .map(|(content, role)| json!({"content": content, "role": role}))
            .collect::<Vec<_>>()
    });
    let sent = http
        .post(url)
        .header(COOKIE, cookie)
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(err) => return Answer::Lost(format!("{err:?}")),
    };
    let status = response.status().as_u16();
    let text = match response.text().await {
        Ok(text) => text,
        Err(err) => return Answer::Lost(format!("status {status}, then {err:?}")),
    };
    if status != 200 {
        return Answer::Refused(status, text);
    }
    let body: Value = serde_json::from_str(&text).expect("a 200 answer is JSON");
    let stored = body["chatMessages"].as_array().expect("chatMessages");
    let echoed: Vec<(&str, &str)> = stored
        .iter()
        .map(|m| {
            (
                m["message"].as_str().expect("message"),
                m["actor"].as_str().expect("actor"),
            )
        })
        .collect();
    let sent: Vec<(&str, &str)> = messages.iter().map(|(t, r)| (t.as_str(), *r)).collect();
    assert_eq!(echoed, sent, "the answer echoes the batch in order");
    Answer::Stored(
        stored
            .iter()
            .map(|m| m["id"].as_i64().expect("an id"))
            .collect(),
    )
}

// ---- reading and checking what is stored ---------------------------------------------

/// One stored message: `(id, text, role)`.
type Stored = (i64, String, String);

/// A chat's messages in id order, read through the server.
async fn fetch_chat(server: &ServerProcess, user: &str, chat: i64, token: &str) -> Vec<Stored> {
    let response = reqwest::Client::new()
        .get(server.messages_url(user, chat))
        .header(COOKIE, format!("{SESSION_COOKIE}={token}"))
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .expect("the chat can be read");
    assert_eq!(response.status().as_u16(), 200, "reading the chat");
    let body: Value = response.json().await.expect("a JSON page");
    assert_eq!(body["next"], Value::Null, "the whole chat in one page");
    body["chatMessages"]
        .as_array()
        .expect("chatMessages")
        .iter()
        .map(|m| {
            (
                m["id"].as_i64().expect("id"),
                m["message"].as_str().expect("message").to_owned(),
                m["actor"].as_str().expect("actor").to_owned(),
            )
        })
        .collect()
}

/// A chat's messages in id order, read straight from a database file (read-only).
fn read_chat(path: &Path, chat: i64) -> Vec<Stored> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("the database opens read-only");
    conn.prepare(
        "SELECT id, message, actor FROM chat_messages WHERE chat_conversation_id = ?1 ORDER BY id",
    )
    .expect("the query prepares")
    .query_map([chat], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
    .expect("the query runs")
    .collect::<Result<_, _>>()
    .expect("the rows read")
}

/// Asserts that every acknowledged batch is stored under the ids it was given, with
/// its exact texts and roles.
fn assert_acknowledged_batches_are_stored(sent: &[SentBatch], stored: &[Stored], case: &str) {
    let by_id: HashMap<i64, (&str, &str)> = stored
        .iter()
        .map(|(id, text, role)| (*id, (text.as_str(), role.as_str())))
        .collect();
    for batch in sent {
        let Some(ids) = batch.stored_ids() else {
            continue;
        };
        for (id, (text, role)) in ids.iter().zip(&batch.messages) {
            assert_eq!(
                by_id.get(id),
                Some(&(text.as_str(), *role)),
                "{case}: acknowledged message {id} is stored with its exact text and role"
            );
        }
    }
}

/// Asserts that every batch sent, acknowledged or not, is stored all or nothing, and if
/// all then contiguous and in order; and that nothing else is stored.
fn assert_batches_are_all_or_nothing(sent: &[SentBatch], stored: &[Stored], case: &str) {
    let mut position = HashMap::new();
    for (at, (id, text, _)) in stored.iter().enumerate() {
        let earlier = position.insert(text.as_str(), at);
        assert!(
            earlier.is_none(),
            "{case}: message {id} ({text:?}) is stored once"
        );
    }
    let mut accounted = 0;
    for batch in sent {
        let positions: Vec<Option<usize>> = batch
            .messages
            .iter()
            .map(|(text, _)| position.get(text.as_str()).copied())
            .collect();
        let found: Vec<usize> = positions.iter().flatten().copied().collect();
        if found.is_empty() {
            continue;
        }
        assert_eq!(
            found.len(),
            positions.len(),
            "{case}: a batch is stored whole or not at all: {batch:?} at {positions:?}"
        );
        let contiguous = found.windows(2).all(|pair| pair[1] == pair[0] + 1);
        assert!(
            contiguous,
            "{case}: a stored batch is contiguous and in order: {batch:?} at {found:?}"
        );
        accounted += found.len();
    }
    assert_eq!(
        accounted,
        stored.len(),
        "{case}: every stored message belongs to a batch that was sent"
    );
}

// ---- database files ------------------------------------------------------------------

/// The schema version the binary writes, read from a fresh database it made.
fn current_schema_version() -> i64 {
    let db = TempDb::new();
    db.create_user("probe");
    user_version(&db.path)
}

/// `PRAGMA user_version` of a database. (A read-write connection: a read-only one
/// would leave `-wal` and `-shm` files behind.)
fn user_version(path: &Path) -> i64 {
    Connection::open(path)
        .expect("the database opens")
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("the user version")
}

/// The names of the files in `dir`, sorted.
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("the folder lists")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .into_string()
                .expect("a UTF-8 name")
        })
        .collect();
    names.sort();
    names
}

/// `path` with `suffix` appended: the `-wal` and `-shm` files beside a database.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A database made by the binary with one user, `alice`, a session and a chat.
fn seeded_db() -> (TempDb, String, i64) {
    let db = TempDb::new();
    db.create_user("alice");
    let token = db.create_session("alice", &[]);
    let chat = db.create_chat("alice");
    (db, token, chat)
}

/// Adds `count` messages to `chat` in one transaction, straight through SQLite (the
/// repository functions would take far longer for this many).
fn bulk_insert_messages(path: &Path, chat: i64, count: u32) {
    let mut conn = Connection::open(path).expect("the database opens");
    let tx = conn.transaction().expect("a transaction");
    tx.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2) \
         INSERT INTO chat_messages (chat_conversation_id, neptun_user_id, message, actor, created_at) \
         SELECT ?1, 'alice', 'bulk message ' || i || ' ' || substr(hex(randomblob(40)), 1, i % 80), \
                CASE i % 2 WHEN 0 THEN 'user' ELSE 'assistant' END, '2026-01-01T00:00:00.000Z' \
         FROM n",
        rusqlite::params![chat, count],
    )
    .expect("the messages are inserted");
    tx.commit().expect("the insert commits");
}

// ---- 1. crash safety -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sigkill_under_load_every_acknowledged_batch_is_stored_and_every_batch_is_whole_or_absent()
 {
    // Each case: kill after this many acknowledged requests, with this `--sync` level.
    let cases = [
        (50, "full"),
        (200, "normal"),
        (500, "full"),
        (500, "normal"),
    ];

    for (kill_after, sync) in cases {
        let case = format!("SIGKILL after {kill_after} acknowledgements, --sync {sync}");
        // Arrange
        let (db, token, chat) = seeded_db();
        let mut server = db.serve_with_args(&["--sync", sync]);
        let mut load = Load::start(server.messages_url("alice", chat), &token);

        // Act: kill the server with requests in flight, then start it again.
        load.wait_for_acks(kill_after).await;
        server.kill();
        let sent = load.finish().await;
        let server = db.serve_with_args(&["--sync", sync]);
        let stored = fetch_chat(&server, "alice", chat, &token).await;

        // Assert
        let acknowledged = sent.iter().filter(|b| b.stored_ids().is_some()).count();
        assert!(acknowledged >= kill_after, "{case}: {acknowledged} acks");
        for batch in &sent {
            if let Answer::Refused(status, body) = &batch.answer {
                panic!("{case}: only 200s or lost answers, not {status}: {body}");
            }
        }
        assert_acknowledged_batches_are_stored(&sent, &stored, &case);
        assert_batches_are_all_or_nothing(&sent, &stored, &case);
        assert_eq!(db.cli(&["check"]).single_line(), "ok", "{case}");
    }
}

// ---- 2. graceful shutdown --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_the_requests_in_flight_checkpoints_and_exits_0_within_the_grace_period()
 {
    // Arrange: clients writing; then the test holds the database's write lock, so that
    // every client's next request stays in flight, waiting for the database.
    let grace = Duration::from_secs(5);
    let (db, token, chat) = seeded_db();
    let mut server = db.serve_with_args(&["--shutdown-grace-secs", "5"]);
    let mut load = Load::start(server.messages_url("alice", chat), &token);
    load.wait_for_acks(100).await;
    let blocker = db.connection();
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("the write lock");
    let committed: i64 = blocker
        .query_row("SELECT count(*) FROM chat_messages", [], |r| r.get(0))
        .expect("the committed messages");
    load.wait_until_all_wait_for_the_database(usize::try_from(committed).expect("a count"))
        .await;
    load.stop_sending();

    // Act: SIGTERM while they wait, then let them through.
    let signalled = Instant::now();
    server.signal("TERM");
    wait_for_log(&server, "SIGTERM received");
    blocker
        .execute_batch("ROLLBACK")
        .expect("the lock is released");
    drop(blocker);
    let sent = load.finish().await;
    let status = server.wait_for_exit(grace + Duration::from_secs(2));
    let took = signalled.elapsed();

    // Assert
    assert_eq!(status.code(), Some(0), "exit status:\n{}", server.log());
    assert!(
        took <= grace,
        "exited {took:?} after SIGTERM; the grace is {grace:?}"
    );
    for batch in &sent {
        if let Answer::Refused(status, body) = &batch.answer {
            panic!("only 200s or no answer, not {status}: {body}");
        }
    }
    // A request the server had not yet started on when the signal came may be closed
    // unanswered (actix-http starts no new request once it drains a connection); those
    // waiting inside the server for the database are answered, after the signal.
    let finished_after_sigterm = sent
        .iter()
        .filter(|b| b.stored_ids().is_some() && b.answered_at > signalled)
        .count();
    let unanswered: Vec<&str> = sent
        .iter()
        .filter_map(|b| match &b.answer {
            Answer::Lost(error) => Some(error.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        finished_after_sigterm > 0,
        "requests in flight at SIGTERM were answered 200; unanswered: {unanswered:#?}"
    );
    let wal = beside(&db.path, "-wal");
    let wal_len = fs::metadata(&wal).map_or(0, |meta| meta.len());
    assert_eq!(wal_len, 0, "{} is absent or empty", wal.display());
    let stored = read_chat(&db.path, chat);
    assert_acknowledged_batches_are_stored(&sent, &stored, "after SIGTERM");
    assert_batches_are_all_or_nothing(&sent, &stored, "after SIGTERM");
    let acknowledged: usize = sent
        .iter()
        .filter(|b| b.stored_ids().is_some())
        .map(|b| b.messages.len())
        .sum();
    assert_eq!(
        stored.len(),
        acknowledged,
        "nothing but the answered batches: an unanswered request was never started"
    );
    assert_eq!(db.cli(&["check"]).single_line(), "ok");
}

/// Polls the server's Prometheus `metric` (read on a fresh connection, which counts
/// itself among the open connections) until it is at least `at_least`.
async fn wait_for_metric(server: &ServerProcess, metric: &str, at_least: f64) {
    let deadline = Instant::now() + LOAD_DEADLINE;
    loop {
        let text = reqwest::Client::new()
            .get(format!("{}/metrics", server.address()))
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .expect("the metrics are served")
            .text()
            .await
            .expect("the metrics text");
        let value: f64 = text
            .lines()
            .find_map(|line| line.strip_prefix(metric)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("{metric} in:\n{text}"));
        if value >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{metric} reached {at_least} within {LOAD_DEADLINE:?}; it is {value}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls the server's log until a line contains `text`.
fn wait_for_log(server: &ServerProcess, text: &str) {
    let deadline = Instant::now() + LOAD_DEADLINE;
    while !server.log().contains(text) {
        assert!(
            Instant::now() < deadline,
            "the log says {text:?} within {LOAD_DEADLINE:?}:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn sigint_stops_an_idle_server_at_once_with_exit_0_and_its_writes_checkpointed_into_the_file()
{
    // Arrange: one acknowledged write, still only in the WAL.
    let (db, token, chat) = seeded_db();
    let grace = Duration::from_secs(30);
    let mut server = db.serve_with_args(&["--shutdown-grace-secs", "30"]);
    let response = server
        .post(
            "alice",
            chat,
            &token,
            json!({"message": "kept", "actor": "user"}).to_string(),
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);
    let wal = beside(&db.path, "-wal");
    assert!(
        fs::metadata(&wal).map_or(0, |meta| meta.len()) > 0,
        "the write is in the WAL"
    );

    // Act
    let signalled = Instant::now();
    server.signal("INT");
    let status = server.wait_for_exit(grace);
    let took = signalled.elapsed();

    // Assert: no waiting for the grace period when nothing is in flight (a third of
    // it is generous for a loaded machine).
    assert_eq!(status.code(), Some(0), "exit status:\n{}", server.log());
    assert!(took < grace / 3, "exited {took:?} after SIGINT");
    assert_eq!(fs::metadata(&wal).map_or(0, |meta| meta.len()), 0);
    let stored: Vec<String> = read_chat(&db.path, chat)
        .into_iter()
        .map(|(_, text, _)| text)
        .collect();
    assert_eq!(stored, ["kept"]);
}

/// A connection that sent the head and the first half of a one-message create request.
struct HalfSentRequest {
    stream: std::net::TcpStream,
    rest: Vec<u8>,
}

impl HalfSentRequest {
    /// Connects, sends half the request and waits until the server counts the
    /// connection as open (so the server, not only the kernel's backlog, has it).
    async fn send(server: &ServerProcess, chat: i64, token: &str, text: &str) -> HalfSentRequest {
        use std::io::Write;
        let body = json!({"message": text, "actor": "user"})
            .to_string()
            .into_bytes();
        let (first, rest) = body.split_at(body.len() / 2);
        let head = format!(
            "POST /api/users/alice/chats/{chat}/messages HTTP/1.1\r\nHost: neptun\r\n\
             Cookie: {SESSION_COOKIE}={token}\r\nContent-Type: application/json\r\n\
             Connection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut stream =
            std::net::TcpStream::connect(server.address().trim_start_matches("http://"))
                .expect("a connection");
        stream.write_all(head.as_bytes()).expect("the head is sent");
        stream.write_all(first).expect("half the body is sent");
        stream
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .expect("a read timeout");
        // The metrics scrape counts its own connection too.
        wait_for_metric(server, "neptun_http_open_connections", 2.0).await;
        HalfSentRequest {
            stream,
            rest: rest.to_vec(),
        }
    }

    /// Sends the rest of the body and reads the answer until the server closes the
    /// connection: the status code and the body, or `None` if no answer came.
    fn finish(mut self) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        self.stream.write_all(&self.rest).ok()?;
        let mut answer = Vec::new();
        let _ = self.stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = answer.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    }
}

#[tokio::test]
async fn sigterm_and_sigint_both_let_a_half_sent_request_finish_with_a_200_and_store_it() {
    for signal in ["TERM", "INT"] {
        // Arrange: a request in flight, half its body sent.
        let (db, token, chat) = seeded_db();
        let mut server = db.serve_with_args(&["--shutdown-grace-secs", "10"]);
        let text = format!("sent across SIG{signal}");
        let request = HalfSentRequest::send(&server, chat, &token, &text).await;

        // Act: signal, wait until the server has begun to stop, then finish the request.
        server.signal(signal);
        wait_for_log(&server, &format!("SIG{signal} received"));
        let answer = request.finish();
        let status = server.wait_for_exit(Duration::from_secs(10));

        // Assert
        let (code, body) = answer
            .unwrap_or_else(|| panic!("SIG{signal}: the request got no answer:\n{}", server.log()));
        assert_eq!(code, 200, "SIG{signal}: {body}\n{}", server.log());
        let stored: Value = serde_json::from_str(&body).expect("a JSON answer");
        assert_eq!(
            stored["chatMessage"]["message"],
            text.as_str(),
            "SIG{signal}: {body}"
        );
        assert_eq!(status.code(), Some(0), "SIG{signal}:\n{}", server.log());
        let texts: Vec<String> = read_chat(&db.path, chat)
            .into_iter()
            .map(|(_, text, _)| text)
            .collect();
        assert_eq!(texts, [text], "SIG{signal}");
    }
}

#[tokio::test]
async fn a_second_signal_stops_at_once_without_waiting_for_the_request_in_flight() {
    for (first, second) in [("INT", "INT"), ("TERM", "INT"), ("INT", "TERM")] {
        // Arrange: a request in flight and a long grace period.
        let case = format!("SIG{first} then SIG{second}");
        let grace = Duration::from_secs(30);
        let (db, token, chat) = seeded_db();
        let mut server = db.serve_with_args(&["--shutdown-grace-secs", "30"]);
        let request = HalfSentRequest::send(&server, chat, &token, "never finished").await;
        server.signal(first);
        wait_for_log(&server, &format!("SIG{first} received"));

        // Act
        let signalled = Instant::now();
        server.signal(second);
        let status = server.wait_for_exit(grace);
        let took = signalled.elapsed();

        // Assert: it did not wait for the grace period, the request got no answer, and
        // the database was still closed cleanly.
        assert_eq!(status.code(), Some(0), "{case}:\n{}", server.log());
        assert!(
            took < grace / 3,
            "{case}: exited {took:?} after the second signal"
        );
        assert!(
            server
                .log()
                .contains(&format!("SIG{second} received again: stopping now")),
            "{case}:\n{}",
            server.log()
        );
        assert_eq!(request.finish(), None, "{case}: no answer");
        assert_eq!(db.count("chat_messages"), 0, "{case}");
        assert_eq!(db.cli(&["check"]).single_line(), "ok", "{case}");
    }
}

#[tokio::test]
async fn a_request_whose_body_never_arrives_holds_up_shutdown_for_the_grace_period_and_no_longer() {
    // Arrange: a request that sent its head and the start of its body, then stalled.
    let grace = Duration::from_secs(1);
    let (db, token, chat) = seeded_db();
    let mut server = db.serve_with_args(&["--shutdown-grace-secs", "1"]);
    let mut stalled = std::net::TcpStream::connect(server.address().trim_start_matches("http://"))
        .expect("a connection");
    let head = format!(
        "POST /api/users/alice/chats/{chat}/messages HTTP/1.1\r\nHost: neptun\r\n\
         Cookie: {SESSION_COOKIE}={token}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"message\": "
    );
    std::io::Write::write_all(&mut stalled, head.as_bytes()).expect("the head is sent");
    wait_for_metric(&server, "neptun_http_open_connections", 2.0).await;

    // Act
    let signalled = Instant::now();
    server.signal("TERM");
    let status = server.wait_for_exit(grace + Duration::from_secs(5));
    let took = signalled.elapsed();

    // Assert
    assert_eq!(status.code(), Some(0), "exit status:\n{}", server.log());
    assert!(
        took >= grace && took < grace + Duration::from_secs(4),
        "exited {took:?} after SIGTERM; the grace is {grace:?}"
    );
    assert_eq!(db.count("chat_messages"), 0);
    assert_eq!(db.cli(&["check"]).single_line(), "ok");
}

// ---- 3. backup during writes -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_prints_dest_and_makes_a_sound_copy_holding_everything_acknowledged_before_it()
 {
    // Arrange
    let (db, token, chat) = seeded_db();
    let server = db.serve_with_args(&[]);
    let mut load = Load::start(server.messages_url("alice", chat), &token);
    load.wait_for_acks(100).await;
    let backups = db.dir.path().join("backups");
    fs::create_dir(&backups).expect("the backup folder");
    let dest = backups.join("copy.db");

    // Act: back up while the clients keep writing.
    let before_backup = load.acknowledged();
    let outcome = tokio::task::spawn_blocking({
        let (database, dest) = (db.path.clone(), dest.clone());
        move || {
            run(neptun()
                .arg("--database")
                .arg(database)
                .arg("backup")
                .arg(dest))
        }
    })
    .await
    .expect("the backup command ran");
    let after_backup = load.acknowledged().len();
    load.wait_for_acks(after_backup + 50).await;
    load.stop_sending();
    let sent = load.finish().await;

    // Assert
    assert_eq!(outcome.single_line(), dest.to_str().expect("a UTF-8 path"));
    assert_eq!(
        file_names(&backups),
        ["copy.db"],
        "no temporary file is left beside the copy"
    );
    let copy = read_chat(&dest, chat);
    assert_acknowledged_batches_are_stored(&before_backup, &copy, "the copy");
    assert_batches_are_all_or_nothing(&sent, &copy, "the copy");
    let integrity: String = Connection::open_with_flags(&dest, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("the copy opens")
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("the integrity check runs");
    assert_eq!(integrity, "ok");
    let check = run(neptun().arg("--database").arg(&dest).arg("check"));
    assert_eq!(check.single_line(), "ok");
    let all_acknowledged = read_chat(&db.path, chat);
    assert_acknowledged_batches_are_stored(&sent, &all_acknowledged, "the live database");
    assert!(
        all_acknowledged.len() > copy.len(),
        "the server kept storing after the backup: {} > {}",
        all_acknowledged.len(),
        copy.len()
    );
}

#[test]
fn backup_over_an_existing_file_replaces_it_with_the_copy() {
    // Arrange
    let (db, _, chat) = seeded_db();
    bulk_insert_messages(&db.path, chat, 10);
    let dest = db.dir.path().join("copy.db");
    fs::write(&dest, "an older backup, to be replaced").expect("the old file");

    // Act
    let outcome = db.cli(&["backup", dest.to_str().expect("a UTF-8 path")]);

    // Assert
    assert_eq!(outcome.single_line(), dest.to_str().expect("a UTF-8 path"));
    assert_eq!(read_chat(&dest, chat), read_chat(&db.path, chat));
    assert_eq!(read_chat(&dest, chat).len(), 10);
    assert_eq!(
        file_names(db.dir.path()),
        ["copy.db", "data"],
        "no temporary file is left beside the copy"
    );
}

#[test]
fn backup_into_a_folder_that_does_not_exist_yet_creates_it() {
    // Arrange
    let (db, _, chat) = seeded_db();
    bulk_insert_messages(&db.path, chat, 3);
    let dest = db
        .dir
        .path()
        .join("backups")
        .join("nightly")
        .join("copy.db");

    // Act
    let outcome = db.cli(&["backup", dest.to_str().expect("a UTF-8 path")]);

    // Assert
    assert_eq!(outcome.single_line(), dest.to_str().expect("a UTF-8 path"));
    assert_eq!(read_chat(&dest, chat), read_chat(&db.path, chat));
    assert_eq!(read_chat(&dest, chat).len(), 3);
}

#[test]
fn backup_of_a_missing_database_fails_clearly_and_creates_no_file() {
    // Arrange
    let db = TempDb::new();
    let dest = db.dir.path().join("copy.db");

    // Act
    let outcome = db.cli(&["backup", dest.to_str().expect("a UTF-8 path")]);

    // Assert
    let error = outcome.clear_error();
    assert!(
        error.contains("no database") && error.contains(db.path.to_str().expect("a UTF-8 path")),
        "{error}"
    );
    assert_eq!(
        file_names(db.dir.path()),
        Vec::<String>::new(),
        "neither the database, its folder nor the copy was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_onto_the_live_database_itself_is_refused_and_loses_no_acknowledged_write() {
    // Arrange: a server with writes in its WAL.
    let (db, token, chat) = seeded_db();
    let mut server = db.serve_with_args(&[]);
    let url = server.messages_url("alice", chat);
    let mut load = Load::start(url.clone(), &token);
    load.wait_for_acks(50).await;
    load.stop_sending();
    let mut sent = load.finish().await;

    // Act: a "backup" whose destination is the database, then more writes and a crash.
    let outcome = db.cli(&["backup", db.path.to_str().expect("a UTF-8 path")]);
    let mut load = Load::start(url, &token);
    load.wait_for_acks(50).await;
    load.stop_sending();
    sent.extend(load.finish().await);
    server.kill();
    let server = db.serve_with_args(&[]);
    let stored = fetch_chat(&server, "alice", chat, &token).await;

    // Assert
    assert_acknowledged_batches_are_stored(&sent, &stored, "after backup onto itself");
    assert_eq!(db.cli(&["check"]).single_line(), "ok");
    let error = outcome.clear_error();
    assert!(error.contains("database"), "{error}");
}

// ---- 4. check --------------------------------------------------------------------------

/// A database with a few thousand messages, and a copy of it with a page of garbage in
/// the middle of the file (not the header): `(db, healthy, corrupted)`.
fn corrupted_copy() -> (TempDb, PathBuf, PathBuf) {
    const PAGE: u64 = 4096;
    let (db, _, chat) = seeded_db();
    bulk_insert_messages(&db.path, chat, 3000);
    assert!(
        !beside(&db.path, "-wal").exists(),
        "the last connection checkpointed everything into the file"
    );
    let corrupted = db.dir.path().join("corrupted.db");
    fs::copy(&db.path, &corrupted).expect("the copy");
    let mut bytes = fs::read(&corrupted).expect("the copy reads");
    let pages = bytes.len() as u64 / PAGE;
    assert!(pages > 50, "a database of {pages} pages");
    // Half a page of noise into the cells of a page in the middle (its header intact),
    // from a fixed seed so every run breaks the same bytes.
    let start = usize::try_from(pages / 2 * PAGE + PAGE / 2).expect("a small offset");
    let mut seed: u32 = 0x2545_F491;
    for byte in &mut bytes[start..start + PAGE as usize / 2] {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *byte = (seed >> 24) as u8;
    }
    fs::write(&corrupted, bytes).expect("the corruption is written");
    let healthy = db.path.clone();
    (db, healthy, corrupted)
}

/// The problems SQLite's own `integrity_check` reports for a file.
fn integrity_problems(path: &Path) -> Vec<String> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("the database opens read-only");
    let mut stmt = conn
        .prepare("PRAGMA integrity_check")
        .expect("the check prepares");
    let mut rows = stmt.query([]).expect("the check runs");
    let mut problems = Vec::new();
    while let Some(row) = rows.next().expect("the check reports without failing") {
        let line: String = row.get(0).expect("a text row");
        if line != "ok" {
            problems.push(line);
        }
    }
    problems
}

#[test]
fn check_prints_ok_for_a_healthy_database() {
    let (db, _, chat) = seeded_db();
    bulk_insert_messages(&db.path, chat, 3000);

    let outcome = db.cli(&["check"]);

    assert_eq!(outcome.single_line(), "ok");
    assert_eq!(outcome.stderr, "", "nothing on stderr");
}

#[test]
fn check_fails_on_a_page_of_garbage_without_a_panic_and_leaves_the_healthy_original_ok() {
    // Arrange
    let (_db, healthy, corrupted) = corrupted_copy();

    // Act
    let broken = run(neptun().arg("--database").arg(&corrupted).arg("check"));
    let sound = run(neptun().arg("--database").arg(&healthy).arg("check"));

    // Assert
    assert!(!broken.status.success(), "{broken:#?}");
    assert_ne!(broken.status.code(), Some(101), "no panic: {broken:#?}");
    assert!(!broken.stderr.contains("panicked"), "{broken:#?}");
    assert_eq!(broken.stdout, "", "no \"ok\": {broken:#?}");
    let last = broken.stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{broken:#?}");
    assert_eq!(sound.single_line(), "ok");
}

#[test]
fn check_lists_on_stderr_every_problem_sqlite_finds_in_a_corrupted_page() {
    // Arrange
    let (_db, _, corrupted) = corrupted_copy();
    let expected = integrity_problems(&corrupted);
    assert!(!expected.is_empty(), "SQLite sees the damage");

    // Act
    let outcome = run(neptun().arg("--database").arg(&corrupted).arg("check"));

    // Assert
    assert!(!outcome.status.success(), "{outcome:#?}");
    for problem in &expected {
        assert!(
            outcome.stderr.contains(problem.as_str()),
            "stderr lists {problem:?}: {outcome:#?}"
        );
    }
    let last = outcome.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: the database has ") && last.ends_with(" problem(s)"),
        "{outcome:#?}"
    );
}

#[test]
fn check_refuses_a_missing_database_without_creating_it() {
    let db = TempDb::new();

    let outcome = db.cli(&["check"]);

    let error = outcome.clear_error();
    assert!(
        error.contains("no database") && error.contains(db.path.to_str().expect("a UTF-8 path")),
        "{error}"
    );
    assert!(!db.path.exists(), "the database was not created");
    assert!(
        !db.path.parent().expect("a parent").exists(),
        "nor its folder"
    );
}

// ---- 5. start-up refusals --------------------------------------------------------------

/// Each way of spoiling the file at `db.path`, with what the error must say.
type Spoil = fn(&TempDb);

fn a_text_file(db: &TempDb) {
    fs::create_dir_all(db.path.parent().expect("a parent")).expect("the folder");
    fs::write(&db.path, "my notes, not a database\n".repeat(200)).expect("the file");
}

fn another_applications_database(db: &TempDb) {
    fs::create_dir_all(db.path.parent().expect("a parent")).expect("the folder");
    db.connection()
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me');")
        .expect("a foreign database");
}

fn a_database_of_a_newer_version(db: &TempDb) {
    db.create_user("alice");
    let newer = current_schema_version() + 1;
    db.connection()
        .pragma_update(None, "user_version", newer)
        .expect("the version is raised");
    assert_eq!(user_version(&db.path), newer);
}

fn a_database_with_a_damaged_header(db: &TempDb) {
    db.create_user("alice");
    let mut bytes = fs::read(&db.path).expect("the file reads");
    assert_eq!(&bytes[..16], b"SQLite format 3\0");
    bytes[..16].copy_from_slice(b"SQLite format 9\0");
    fs::write(&db.path, bytes).expect("the header is damaged");
}

#[test]
fn the_server_refuses_files_it_must_not_use_with_one_error_line_leaving_them_byte_for_byte_unchanged()
 {
    let cases: [(Spoil, &str, &str); 4] = [
        (a_text_file, "a text file", "file is not a database"),
        (
            another_applications_database,
            "another application's SQLite database",
            "another application",
        ),
        (
            a_database_of_a_newer_version,
            "a neptun database of a newer version",
            "newer",
        ),
        (
            a_database_with_a_damaged_header,
            "a neptun database with a damaged header",
            "file is not a database",
        ),
    ];

    for (spoil, case, expected) in cases {
        // Arrange
        let db = TempDb::new();
        spoil(&db);
        let before = fs::read(&db.path).expect("the file reads");
        let folder = db.path.parent().expect("a parent");
        assert_eq!(file_names(folder), ["neptun.db"], "{case}: a lone file");

        for args in [
            &["serve", "--bind", "127.0.0.1:0"][..],
            &["user", "create", "bob"][..],
        ] {
            // Act
            let outcome = db.cli(args);

            // Assert
            let error = outcome.clear_error();
            assert!(error.contains(expected), "{case}, {args:?}: {error}");
            assert!(
                error.contains(db.path.to_str().expect("a UTF-8 path")),
                "{case}, {args:?} names the file: {error}"
            );
            assert!(
                fs::read(&db.path).expect("the file reads") == before,
                "{case}, {args:?}: the file is byte-for-byte unchanged"
            );
            assert_eq!(
                file_names(folder),
                ["neptun.db"],
                "{case}, {args:?}: no journal, -wal or -shm file is left beside it"
            );
        }
    }
}

// ---- 6. migration ----------------------------------------------------------------------

#[tokio::test]
async fn the_server_migrates_a_version_1_database_keeping_its_messages_and_sessions() {
    // Arrange: a database as the first release made it, with a message and a session.
    let db = TempDb::new();
    fs::create_dir_all(db.path.parent().expect("a parent")).expect("the folder");
    let token = SessionToken::generate().expect("a token");
    {
        let conn = db.connection();
        conn.execute_batch(include_str!("../fixtures/schema_v1.sql"))
            .expect("the version 1 schema");
        conn.pragma_update(None, "application_id", 0x4E50_5443)
            .expect("the mark");
        conn.pragma_update(None, "user_version", 1)
            .expect("the version");
        conn.execute_batch(
            "INSERT INTO users (id, created_at) VALUES ('alice', '2026-01-01T00:00:00.000Z');
             INSERT INTO chat_conversations (neptun_user_id, name, model, created_at, updated_at)
                 VALUES ('alice', 'Old chat', 'm', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z');
             INSERT INTO chat_messages (chat_conversation_id, neptun_user_id, message, actor, created_at)
                 VALUES (1, 'alice', 'written by version 1 «ü»', 'assistant', '2026-01-01T00:00:01.000Z');",
        )
        .expect("the old rows");
        conn.execute(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) \
             VALUES (?1, 'alice', '2026-01-01T00:00:00.000Z', '2999-01-01T00:00:00.000Z')",
            [&token.hash()[..]],
        )
        .expect("the old session");
    }
    let current = current_schema_version();
    assert!(current > 1, "the binary is past version 1: {current}");

    // Act: the server is the first to open it.
    let server = db.serve_with_args(&[]);
    let old = reqwest::Client::new()
        .get(server.messages_url("alice", 1))
        .header(COOKIE, format!("{SESSION_COOKIE}={}", token.expose()))
        .send()
        .await
        .expect("the chat is read");
    let retry = |http: reqwest::Client| {
        http.post(server.messages_url("alice", 1))
            .header(COOKIE, format!("{SESSION_COOKIE}={}", token.expose()))
            .header(CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", "after-the-migration")
            .body(json!({"message": "new", "actor": "user"}).to_string())
            .send()
    };
    let first = retry(reqwest::Client::new()).await.expect("the first post");
    let again = retry(reqwest::Client::new()).await.expect("the retry");

    // Assert
    assert_eq!(old.status().as_u16(), 200);
    let page: Value = old.json().await.expect("a JSON page");
    assert_eq!(
        page,
        json!({"chatMessages": [{
            "id": 1,
            "chat_conversation_id": 1,
            "neptun_user_id": "alice",
            "message": "written by version 1 «ü»",
            "actor": "assistant",
            "created_at": "2026-01-01T00:00:01.000Z",
        }], "next": null})
    );
    assert_eq!(
        first.status().as_u16(),
        200,
        "the migrated schema takes writes"
    );
    let first: Value = first.json().await.expect("JSON");
    let again: Value = again.json().await.expect("JSON");
    assert_eq!(first["chatMessage"]["id"], 2);
    assert_eq!(
        again, first,
        "the idempotency table from the migration is used"
    );
    assert_eq!(db.count("chat_messages"), 2);
    assert_eq!(user_version(&db.path), current);
    assert!(
        server
            .log()
            .contains("migrating the database from schema version 1 to 2"),
        "{}",
        server.log()
    );
    assert_eq!(db.cli(&["check"]).single_line(), "ok");
}

// ---- 7. sessions over time -------------------------------------------------------------

/// The first 12 hex digits of a token's SHA-256, as `session list` shows it.
fn hash_prefix(token: &str) -> String {
    hash_token(token)[..6]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A session of `user` that lives `days` days, stored as `session create` stores it.
/// Its token never starts with '-', which `session revoke` cannot take (see
/// `session_revoke_takes_a_token_that_starts_with_a_dash`).
fn seed_session(db: &TempDb, user: &str, days: i64) -> String {
    let token = std::iter::repeat_with(|| SessionToken::generate().expect("a token"))
        .find(|token| !token.expose().starts_with('-'))
        .expect("a token without a leading dash");
    let expires_at = Timestamp::from_datetime(chrono::Utc::now() + chrono::Duration::days(days));
    Admin::open(&Location::Sqlite(db.path.clone()))
        .expect("the database opens")
        .create_session(user, &token.hash(), &expires_at)
        .expect("the session is stored");
    token.expose().to_owned()
}

/// `session list <user>`, each line split at its tabs.
fn session_lines(db: &TempDb, user: &str) -> Vec<Vec<String>> {
    let outcome = db.cli(&["session", "list", user]);
    assert!(outcome.status.success(), "{outcome:#?}");
    outcome
        .stdout
        .lines()
        .map(|line| line.split('\t').map(str::to_owned).collect())
        .collect()
}

/// The status of `GET` on a chat of `user` with `token`.
async fn read_status(server: &ServerProcess, user: &str, chat: i64, token: &str) -> u16 {
    reqwest::Client::new()
        .get(server.messages_url(user, chat))
        .header(COOKIE, format!("{SESSION_COOKIE}={token}"))
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .expect("the request is answered")
        .status()
        .as_u16()
}

#[tokio::test]
async fn session_list_shows_each_session_and_revoking_one_or_all_locks_them_out_of_the_running_server()
 {
    // Arrange: three sessions of alice, made one after another, and one of bob.
    let db = TempDb::new();
    db.create_user("alice");
    db.create_user("bob");
    let chat = db.create_chat("alice");
    let bobs_chat = db.create_chat("bob");
    let mut made = Vec::new();
    for ttl in [30, 7, 0] {
        let before = chrono::Utc::now();
        let token = seed_session(&db, "alice", ttl);
        made.push((token, ttl, before, chrono::Utc::now()));
    }
    let bob = seed_session(&db, "bob", 30);

    // Act (before the server starts, which purges expired sessions)
    let listed = session_lines(&db, "alice");

    // Assert: newest first, one tab-separated line each.
    assert_eq!(listed.len(), 3, "{listed:?}");
    for (line, (token, ttl, before, after)) in listed.iter().zip(made.iter().rev()) {
        let [prefix, created, expires, state] = &line[..] else {
            panic!("four fields: {line:?}");
        };
        assert_eq!(*prefix, hash_prefix(token), "ttl {ttl}: {line:?}");
        let created = chrono::DateTime::parse_from_rfc3339(created).expect("RFC 3339");
        let expires = chrono::DateTime::parse_from_rfc3339(expires).expect("RFC 3339");
        let millis = chrono::Duration::milliseconds(1);
        assert!(
            *before - millis <= created && created <= *after + millis,
            "ttl {ttl}: made between {before} and {after}: {line:?}"
        );
        let ttl = chrono::Duration::days(*ttl);
        let lifetime = expires - created;
        assert!(
            lifetime <= ttl && lifetime > ttl - chrono::Duration::seconds(2),
            "expires {ttl} after it was made: {line:?}"
        );
        let expected_state = if ttl.is_zero() { "expired" } else { "live" };
        assert_eq!(*state, expected_state, "{line:?}");
    }

    // Arrange
    let server = db.serve_with_args(&[]);
    let [month, week, expired] = [&made[0].0, &made[1].0, &made[2].0];
    assert_eq!(read_status(&server, "alice", chat, month).await, 200);
    assert_eq!(read_status(&server, "alice", chat, week).await, 200);
    assert_eq!(read_status(&server, "alice", chat, expired).await, 401);

    // Act: revoke one session while the server runs.
    let revoked = db.cli(&["session", "revoke", month]);

    // Assert: the very next request with it is refused; the others are untouched.
    assert_eq!(revoked.single_line(), "1");
    assert_eq!(read_status(&server, "alice", chat, month).await, 401);
    assert_eq!(read_status(&server, "alice", chat, week).await, 200);
    assert_eq!(
        db.cli(&["session", "revoke", month]).single_line(),
        "0",
        "a revoked token is gone"
    );
    let remaining: Vec<String> = session_lines(&db, "alice")
        .into_iter()
        .map(|line| line[0].clone())
        .collect();
    assert!(
        remaining.contains(&hash_prefix(week)) && !remaining.contains(&hash_prefix(month)),
        "{remaining:?}"
    );

    // Act: revoke all of alice's sessions.
    let revoked = db.cli(&["session", "revoke", "--all", "alice"]);

    // Assert: all of them are counted and refused; bob's is not touched.
    assert_eq!(revoked.single_line(), remaining.len().to_string());
    for token in [month, week, expired] {
        assert_eq!(read_status(&server, "alice", chat, token).await, 401);
    }
    assert_eq!(session_lines(&db, "alice"), Vec::<Vec<String>>::new());
    assert_eq!(session_lines(&db, "bob").len(), 1);
    assert_eq!(read_status(&server, "bob", bobs_chat, &bob).await, 200);
}

#[tokio::test]
async fn session_revoke_takes_a_token_that_starts_with_a_dash() {
    // Arrange: URL-safe base64 tokens start with '-' one time in 64.
    let (db, _, chat) = seeded_db();
    let token = "-leading-dash-token-for-the-revoke-test-000";
    assert_eq!(token.len(), 43, "as long as a real token");
    let expires_at = Timestamp::from_datetime(chrono::Utc::now() + chrono::Duration::days(1));
    Admin::open(&Location::Sqlite(db.path.clone()))
        .expect("the database opens")
        .create_session("alice", &hash_token(token), &expires_at)
        .expect("the session is stored");
    let server = db.serve_with_args(&[]);
    assert_eq!(read_status(&server, "alice", chat, token).await, 200);

    // Act
    let revoked = db.cli(&["session", "revoke", token]);

    // Assert
    assert_eq!(revoked.single_line(), "1");
    assert_eq!(read_status(&server, "alice", chat, token).await, 401);
}

// ---- 8. start-up on a large database ---------------------------------------------------

#[test]
fn the_server_answers_healthz_on_a_database_of_200k_messages_about_as_soon_as_on_an_empty_one() {
    // Arrange: the baseline is the same start-up, on this machine, now, on an empty
    // database (a loaded machine slows both).
    let empty = TempDb::new();
    let spawned = Instant::now();
    drop(empty.serve_with_args(&[]));
    let baseline = spawned.elapsed();
    let (db, _, chat) = seeded_db();
    bulk_insert_messages(&db.path, chat, 200_000);
    assert_eq!(db.count("chat_messages"), 200_000);

    // Act: start-up includes polling /healthz until it answers.
    let spawned = Instant::now();
    let server = db.serve_with_args(&[]);
    let took = spawned.elapsed();

    // Assert: nothing at start-up reads the messages (a full integrity check, a count).
    let bound = baseline * 4 + Duration::from_secs(1);
    assert!(
        took < bound,
        "healthy {took:?} after the spawn, {baseline:?} on an empty database:\n{}",
        server.log()
    );
}

// ---- 9. files of the database ------------------------------------------------------------

/// The permission bits of a file or folder.
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

#[tokio::test]
async fn the_database_its_wal_and_shm_and_backups_are_readable_by_their_owner_only() {
    // Arrange: a server that creates its folder and database.
    let db = TempDb::new();
    let server = db.serve(&[]);

    // Act
    let backup = db
        .dir
        .path()
        .join("backups")
        .join("daily")
        .join("neptun.db");
    let printed = db
        .cli(&["backup", backup.to_str().expect("a UTF-8 path")])
        .single_line()
        .to_owned();

    // Assert
    assert_eq!(printed, backup.display().to_string());
    let folder = db.path.parent().expect("the data folder");
    let mut modes = vec![(folder.to_path_buf(), mode(folder))];
    for file in [
        db.path.clone(),
        beside(&db.path, "-wal"),
        beside(&db.path, "-shm"),
    ] {
        modes.push((file.clone(), mode(&file)));
    }
    for folder in [
        backup.parent().unwrap(),
        backup.parent().unwrap().parent().unwrap(),
    ] {
        modes.push((folder.to_path_buf(), mode(folder)));
    }
    modes.push((backup.clone(), mode(&backup)));
    let expected: Vec<(PathBuf, u32)> = modes
        .iter()
        .map(|(path, _)| (path.clone(), if path.is_dir() { 0o700 } else { 0o600 }))
        .collect();
    assert_eq!(modes, expected, "{}", server.log());
}

#[test]
fn a_database_the_server_cannot_write_is_refused_at_start_up_and_left_unchanged() {
    // Arrange: a database made read-only after it was made. (As root, the server runs
    // as nobody: root writes a 0444 file all the same.)
    let (db, _, _) = seeded_db();
    set_mode(&db.path, 0o444);
    let before = fs::read(&db.path).expect("the database");

    // Act
    let outcome = run(unprivileged(&mut neptun(), db.dir.path())
        .arg("--database")
        .arg(&db.path)
        .args(["serve", "--bind", "127.0.0.1:0"]));

    // Assert: an error at once, rather than a server whose writes all fail.
    assert_eq!(
        outcome.clear_error(),
        format!(
            "error: cannot write the database {}: the file is read-only (for this user)",
            db.path.display()
        )
    );
    assert_eq!(fs::read(&db.path).expect("the database"), before);
    assert_eq!(file_names(db.path.parent().unwrap()), ["neptun.db"]);
}

#[test]
fn start_up_errors_about_the_database_file_say_the_reason_once_in_words() {
    let db = TempDb::new();
    let root = db.dir.path();
    let locked = root.join("locked");
    fs::create_dir(&locked).expect("a folder");
    let read_only_folder = root.join("read-only-folder");
    let kept_in_read_only_folder = read_only_folder.join("neptun.db");
    let outcome = run(neptun()
        .arg("--database")
        .arg(&kept_in_read_only_folder)
        .args(["user", "create", "alice"]));
    assert!(outcome.status.success(), "{outcome:#?}");
    set_mode(&read_only_folder, 0o555);
    set_mode(&locked, 0o555);
    let plain = root.join("plain");
    fs::write(&plain, "x").expect("a file");
    let new_in_locked = locked.join("neptun.db");
    let below_locked = locked.join("sub").join("neptun.db");
    let below_a_file = plain.join("sub").join("neptun.db");
    let cases = [
        (
            &new_in_locked,
            format!(
                "cannot create the database {}: the folder is not writable",
                new_in_locked.display()
            ),
        ),
        (
            &below_locked,
            format!(
                "cannot create the folder {} for the database {}: a folder above it is not writable",
                below_locked.parent().unwrap().display(),
                below_locked.display()
            ),
        ),
        (
            &kept_in_read_only_folder,
            format!(
                "cannot write the database {}: the folder is not writable, and SQLite keeps its -wal and -shm files in it",
                kept_in_read_only_folder.display()
            ),
        ),
        (
            &below_a_file,
            format!(
                "cannot create the folder {} for the database {}: a part of the path is a file, not a folder",
                below_a_file.parent().unwrap().display(),
                below_a_file.display()
            ),
        ),
    ];

    for (database, expected) in cases {
        for command in [
            &["serve", "--bind", "127.0.0.1:0"][..],
            &["user", "create", "bob"],
        ] {
            // Act
            let outcome = run(unprivileged(&mut neptun(), root)
                .arg("--database")
                .arg(database)
                .args(command));

            // Assert
            assert_eq!(
                outcome.clear_error(),
                format!("error: {expected}"),
                "{command:?}"
            );
        }
    }
    assert!(!new_in_locked.exists() && !below_locked.parent().unwrap().exists());
    // Without root, the temporary folder could not be removed otherwise.
    set_mode(&read_only_folder, 0o700);
    set_mode(&locked, 0o700);
}
