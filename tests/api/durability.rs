//! The real binary, run the hard way ("Run it for real"): killed with SIGKILL while
//! clients write, stopped by signals with requests in flight, and revoking sessions
//! while it runs, on either backend. What is about SQLite's files (the WAL, backups,
//! `check` on a damaged file, refusals, migration, permissions) is in
//! [`crate::sqlite_files`], which reuses the load of this module.
//!
//! Load comes from a few concurrent clients that post batches of uniquely worded
//! messages and record what each request was answered. Every wait is bounded by a
//! deadline, and every server process is killed by its guard when a test fails.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use neptun_chat::auth::{SESSION_COOKIE, SessionToken, hash_token};
use neptun_chat::domain::Timestamp;
use reqwest::header::{CONTENT_TYPE, COOKIE};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::process::{ServerProcess, TempDb};

/// How many clients write at once.
pub(crate) const CLIENTS: usize = 8;

/// The longest a load may take to reach a number of acknowledgements, or to wind down.
pub(crate) const LOAD_DEADLINE: Duration = Duration::from_secs(30);

/// No single request may take longer than this; a hung request fails the test.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

// ---- load ----------------------------------------------------------------------------

/// What became of one request.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// 200, with the ids the server gave the messages, in the batch's order.
    Stored(Vec<i64>),
    /// Another status, with the body.
    Refused(u16, String),
    /// No complete answer: connection refused or reset, or a timeout.
    Lost(String),
}

/// One batch a client sent, and its answer.
#[derive(Debug, Clone)]
pub(crate) struct SentBatch {
    /// The messages, in order: `(text, role)`.
    pub(crate) messages: Vec<(String, &'static str)>,
    pub(crate) answer: Answer,
    /// When the answer (or the failure) came.
    pub(crate) answered_at: Instant,
}

impl SentBatch {
    pub(crate) fn stored_ids(&self) -> Option<&[i64]> {
        match &self.answer {
            Answer::Stored(ids) => Some(ids),
            _ => None,
        }
    }
}

/// `CLIENTS` tasks posting batches of 3 to 5 messages to one chat, each until it is told
/// to stop or until one of its requests gets anything but a 200.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    acknowledged: watch::Receiver<usize>,
    /// How many clients have a request in flight.
    in_flight: watch::Receiver<usize>,
    sent: Arc<Mutex<Vec<SentBatch>>>,
    clients: Vec<JoinHandle<()>>,
}

impl Load {
    pub(crate) fn start(url: String, token: &str) -> Load {
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
    pub(crate) async fn wait_for_acks(&mut self, count: usize) {
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
    pub(crate) async fn wait_until_all_wait_for_the_database(&mut self, committed: usize) {
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
    pub(crate) fn acknowledged(&self) -> Vec<SentBatch> {
        self.sent
            .lock()
            .expect("the log lock")
            .iter()
            .filter(|batch| batch.stored_ids().is_some())
            .cloned()
            .collect()
    }

    /// Tells the clients to send nothing more; those with a request in flight finish it.
    pub(crate) fn stop_sending(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits for every client to end (told to stop, or its server gone) and returns
    /// every batch sent.
    pub(crate) async fn finish(self) -> Vec<SentBatch> {
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
pub(crate) fn batch_messages(client: usize, batch: usize) -> Vec<(String, &'static str)> {
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

pub(crate) async fn post_batch(
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
pub(crate) type Stored = (i64, String, String);

/// A chat's messages in id order, read through the server.
pub(crate) async fn fetch_chat(
    server: &ServerProcess,
    user: &str,
    chat: i64,
    token: &str,
) -> Vec<Stored> {
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

/// Asserts that every acknowledged batch is stored under the ids it was given, with
/// its exact texts and roles.
pub(crate) fn assert_acknowledged_batches_are_stored(
    sent: &[SentBatch],
    stored: &[Stored],
    case: &str,
) {
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
pub(crate) fn assert_batches_are_all_or_nothing(sent: &[SentBatch], stored: &[Stored], case: &str) {
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

/// A database made by the binary with one user, `alice`, a session and a chat.
pub(crate) fn seeded_db() -> (TempDb, String, i64) {
    let db = TempDb::new();
    db.create_user("alice");
    let token = db.create_session("alice", &[]);
    let chat = db.create_chat("alice");
    (db, token, chat)
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

/// Polls the server's Prometheus `metric` (read on a fresh connection, which counts
/// itself among the open connections) until it is at least `at_least`.
pub(crate) async fn wait_for_metric(server: &ServerProcess, metric: &str, at_least: f64) {
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
pub(crate) fn wait_for_log(server: &ServerProcess, text: &str) {
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

/// A connection that sent the head and the first half of a one-message create request.
pub(crate) struct HalfSentRequest {
    stream: std::net::TcpStream,
    rest: Vec<u8>,
}

impl HalfSentRequest {
    /// Connects, sends half the request and waits until the server counts the
    /// connection as open (so the server, not only the kernel's backlog, has it).
    pub(crate) async fn send(
        server: &ServerProcess,
        chat: i64,
        token: &str,
        text: &str,
    ) -> HalfSentRequest {
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
    pub(crate) fn finish(mut self) -> Option<(u16, String)> {
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
        let texts: Vec<String> = db
            .database
            .stored_messages(chat)
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

#[tokio::test]
async fn sigterm_ends_open_events_streams_at_once_instead_of_waiting_out_the_grace() {
    use futures_util::StreamExt;
    // Arrange: an events stream, open and sending (its first frame has arrived).
    let grace = Duration::from_secs(10);
    let (db, token, _chat) = seeded_db();
    let mut server = db.serve_with_args(&["--shutdown-grace-secs", "10"]);
    let response = reqwest::Client::new()
        .get(format!("{}/api/users/alice/events", server.address()))
        .header(COOKIE, format!("{SESSION_COOKIE}={token}"))
        .send()
        .await
        .expect("the stream opens");
    assert_eq!(response.status().as_u16(), 200);
    let mut frames = response.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), frames.next())
        .await
        .expect("a first frame");
    assert!(first.is_some_and(|frame| frame.is_ok_and(|f| f.starts_with(b"retry: "))));

    // Act
    let signalled = Instant::now();
    server.signal("TERM");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = frames.next().await {}
    })
    .await;
    let status = server.wait_for_exit(grace);
    let took = signalled.elapsed();

    // Assert
    assert!(ended.is_ok(), "the stream did not end:\n{}", server.log());
    assert_eq!(status.code(), Some(0), "exit status:\n{}", server.log());
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after SIGTERM with a stream open; the grace is {grace:?}"
    );
}

// ---- 7. sessions over time -------------------------------------------------------------

/// The first 12 hex digits of a token's SHA-256, as `session list` shows it.
pub(crate) fn hash_prefix(token: &str) -> String {
    hash_token(token)[..6]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A session of `user` that lives `days` days, stored as `session create` stores it.
/// Its token never starts with '-', which `session revoke` cannot take (see
/// `session_revoke_takes_a_token_that_starts_with_a_dash`).
pub(crate) fn seed_session(db: &TempDb, user: &str, days: i64) -> String {
    let token = std::iter::repeat_with(|| SessionToken::generate().expect("a token"))
        .find(|token| !token.expose().starts_with('-'))
        .expect("a token without a leading dash");
    let expires_at = Timestamp::from_datetime(chrono::Utc::now() + chrono::Duration::days(days));
    db.database
        .with_admin(|admin| admin.create_session(user, &token.hash(), &expires_at))
        .expect("the session is stored");
    token.expose().to_owned()
}

/// `session list <user>`, each line split at its tabs.
pub(crate) fn session_lines(db: &TempDb, user: &str) -> Vec<Vec<String>> {
    let outcome = db.cli(&["session", "list", user]);
    assert!(outcome.status.success(), "{outcome:#?}");
    outcome
        .stdout
        .lines()
        .map(|line| line.split('\t').map(str::to_owned).collect())
        .collect()
}

/// The status of `GET` on a chat of `user` with `token`.
pub(crate) async fn read_status(server: &ServerProcess, user: &str, chat: i64, token: &str) -> u16 {
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
    db.database
        .with_admin(|admin| admin.create_session("alice", &hash_token(token), &expires_at))
        .expect("the session is stored");
    let server = db.serve_with_args(&[]);
    assert_eq!(read_status(&server, "alice", chat, token).await, 200);

    // Act
    let revoked = db.cli(&["session", "revoke", token]);

    // Assert
    assert_eq!(revoked.single_line(), "1");
    assert_eq!(read_status(&server, "alice", chat, token).await, 401);
}
