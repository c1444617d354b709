//! Several instances of the server on one PostgreSQL database, as real processes: at
//! least two `neptun-chat serve` on one fresh database of a throwaway cluster, raced
//! against each other, against a PostgreSQL restart, and against a `kill -9` of one of
//! them; and the start-up of instances on unusable databases.
//!
//! What they prove is what the PostgreSQL backend promises (see `src/db/postgres`): a
//! batch is one transaction in array order with nothing of its chat between its
//! messages, id order is commit order within a chat (so paging never skips), an
//! idempotency key answers once across instances, a revoked session or deleted chat is
//! gone on every instance at once, an outage is 503 with `Retry-After` and heals by
//! itself, and every acknowledged write is stored.
//!
//! Without PostgreSQL installed these tests pass trivially, saying so once, unless
//! `NEPTUN_TEST_POSTGRES=required`. Every wait is bounded; nothing sleeps to wait for
//! what it can poll.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use neptun_chat::auth::SESSION_COOKIE;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, RETRY_AFTER};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::postgres_cluster::{self, Cluster};
use crate::process::{self, ServerProcess, neptun};

/// How long one HTTP request may take before the test calls it a hang.
const REQUEST_LIMIT: Duration = Duration::from_secs(15);

/// How long a test may wait for something it polls (a server to notice an outage,
/// writers to finish).
const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(20);

/// The cluster these tests share, started on first use; `None` (after saying so once)
/// when PostgreSQL is not available and not required. Not [`postgres_cluster::shared`],
/// which ends the whole test process when PostgreSQL is missing: this binary's SQLite
/// tests must still run.
fn shared() -> Option<&'static Cluster> {
    static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match SHARED.get_or_init(Cluster::start) {
        Ok(cluster) => Some(cluster),
        Err(reason) => skip(reason),
    }
}

/// A private cluster, for a test that stops and starts PostgreSQL.
fn private() -> Option<Cluster> {
    match Cluster::start() {
        Ok(cluster) => Some(cluster),
        Err(reason) => skip(&reason),
    }
}

/// Fails when PostgreSQL is required, else says once that these tests are skipped.
fn skip<T>(reason: &str) -> Option<T> {
    if postgres_cluster::required() {
        panic!(
            "PostgreSQL is required ({}=required) but {reason}",
            postgres_cluster::REQUIRED_VARIABLE
        );
    }
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        eprintln!("PostgreSQL not available, the instances tests are skipped: {reason}");
    }
    None
}

/// A fresh database on a cluster, and a folder for the server logs.
struct Database<'c> {
    cluster: &'c Cluster,
    name: String,
    dir: TempDir,
}

impl<'c> Database<'c> {
    fn fresh(cluster: &'c Cluster) -> Database<'c> {
        static CREATED: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "inst_{}_{}",
            std::process::id(),
            CREATED.fetch_add(1, Ordering::Relaxed)
        );
        cluster
            .simple_query(
                "postgres",
                &format!("CREATE DATABASE {name} TEMPLATE template0"),
            )
            .unwrap_or_else(|err| panic!("{err}"));
        Database {
            cluster,
            name,
            dir: tempfile::tempdir().expect("a temporary folder"),
        }
    }

    fn url(&self) -> String {
        self.cluster.url(&self.name)
    }

    /// Rows of `sql` on this database, every value as text.
    fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.cluster
            .simple_query(&self.name, sql)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// Runs a one-shot command of the binary on this database.
    fn cli(&self, args: &[&str]) -> process::Outcome {
        process::run(
            neptun()
                .current_dir(self.dir.path())
                .arg("--database")
                .arg(self.url())
                .args(args),
        )
    }

    /// `neptun-chat serve` on this database, started and healthy.
    fn serve(&self) -> ServerProcess {
        ServerProcess::start(self.serve_command(), self.dir.path())
    }

    fn serve_command(&self) -> Command {
        let mut command = neptun();
        command
            .current_dir(self.dir.path())
            .arg("--database")
            .arg(self.url())
            .arg("serve")
            .args(["--bind", "127.0.0.1:0"]);
        command
    }

    /// `count` servers on this database, started at the same moment.
    fn serve_many(&self, count: usize) -> Vec<ServerProcess> {
        std::thread::scope(|scope| {
            let started: Vec<_> = (0..count).map(|_| scope.spawn(|| self.serve())).collect();
            started
                .into_iter()
                .map(|server| server.join().expect("a server started"))
                .collect()
        })
    }

    /// A user with a session and a chat, made by the admin commands.
    fn seed(&self, user: &str) -> Seeded {
        assert_eq!(self.cli(&["user", "create", user]).single_line(), user);
        let token = self
            .cli(&["session", "create", user])
            .single_line()
            .to_owned();
        let chat = self.create_chat(user);
        Seeded {
            user: user.to_owned(),
            token,
            chat,
        }
    }

    fn create_chat(&self, user: &str) -> i64 {
        let line = self.cli(&["chat", "create", user]).single_line().to_owned();
        line.parse().unwrap_or_else(|_| panic!("a chat id: {line}"))
    }

    /// The stored messages of `chat`, in id order, as `(id, text)`.
    fn stored(&self, chat: i64) -> Vec<(i64, String)> {
        self.query(&format!(
            "SELECT id, convert_from(message, 'UTF8') FROM chat_messages \
             WHERE chat_conversation_id = {chat} ORDER BY id"
        ))
        .into_iter()
        .map(|row| {
            let id = row[0].as_deref().expect("an id").parse().expect("a number");
            (id, row[1].clone().expect("a text"))
        })
        .collect()
    }
}

impl Drop for Database<'_> {
    fn drop(&mut self) {
        let _ = self.cluster.simple_query(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A user with a live session and one chat.
#[derive(Clone)]
struct Seeded {
    user: String,
    token: String,
    chat: i64,
}

/// An HTTP client whose every request ends within [`REQUEST_LIMIT`].
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_LIMIT)
        .build()
        .expect("a client")
}

fn cookie(token: &str) -> String {
    format!("{SESSION_COOKIE}={token}")
}

/// A batch of `texts` as user messages, with an optional idempotency key.
async fn post_batch(
    client: &reqwest::Client,
    server: &ServerProcess,
    who: &Seeded,
    texts: &[String],
    key: Option<&str>,
) -> reqwest::Result<reqwest::Response> {
    let messages: Vec<Value> = texts
        .iter()
        .map(|text| json!({"content": text, "role": "user"}))
        .collect();
    let mut request = client
        .post(server.messages_url(&who.user, who.chat))
        .header(COOKIE, cookie(&who.token))
        .header(CONTENT_TYPE, "application/json")
        .body(json!({ "messages": messages }).to_string());
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await
}

/// `(id, text)` of the messages in a 200 answer's `chatMessages`.
async fn messages_of(response: reqwest::Response) -> Vec<(i64, String)> {
    let status = response.status();
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(status, StatusCode::OK, "{body}");
    body["chatMessages"]
        .as_array()
        .unwrap_or_else(|| panic!("chatMessages in {body}"))
        .iter()
        .map(|m| {
            (
                m["id"].as_i64().expect("an id"),
                m["message"].as_str().expect("a text").to_owned(),
            )
        })
        .collect()
}

/// One page of `who`'s chat: `query` is `after=N&limit=M` or the like; the messages and
/// `next`.
async fn page(
    client: &reqwest::Client,
    server: &ServerProcess,
    who: &Seeded,
    query: &str,
) -> (Vec<(i64, String)>, Option<i64>) {
    let response = client
        .get(format!(
            "{}?{query}",
            server.messages_url(&who.user, who.chat)
        ))
        .header(COOKIE, cookie(&who.token))
        .send()
        .await
        .expect("a page is answered");
    assert_eq!(response.status(), StatusCode::OK, "GET ?{query}");
    let body: Value = response.json().await.expect("a JSON body");
    let next = body["next"].as_i64();
    let messages = body["chatMessages"]
        .as_array()
        .unwrap_or_else(|| panic!("chatMessages in {body}"))
        .iter()
        .map(|m| {
            (
                m["id"].as_i64().expect("an id"),
                m["message"].as_str().expect("a text").to_owned(),
            )
        })
        .collect();
    (messages, next)
}

/// The text of message `index` of batch `batch` of writer `writer`: the tests recognise
/// each batch's messages by it.
fn text(writer: usize, batch: usize, index: usize) -> String {
    format!("w{writer}-b{batch}-m{index}")
}

/// The `(writer, batch, index)` a [`text`] names.
fn parse_text(text: &str) -> (usize, usize, usize) {
    let parts: Vec<usize> = text
        .split('-')
        .map(|part| part[1..].parse().expect("a number"))
        .collect();
    (parts[0], parts[1], parts[2])
}

/// Asserts that in `stored` (a chat's messages in id order) each batch's messages are
/// consecutive, in array order, with nothing of the chat between them, and that each
/// batch is whole (`size` messages) or absent. Returns the batches found.
fn assert_batches_whole_and_contiguous(
    stored: &[(i64, String)],
    size: usize,
) -> HashSet<(usize, usize)> {
    let mut found = HashSet::new();
    let mut position = 0;
    while position < stored.len() {
        let (writer, batch, index) = parse_text(&stored[position].1);
        assert_eq!(
            index,
            0,
            "a batch starts with its first message: {:?}",
            &stored[position..]
        );
        assert!(
            found.insert((writer, batch)),
            "batch {writer}/{batch} stored once"
        );
        for offset in 1..size {
            let (id, text) = stored
                .get(position + offset)
                .unwrap_or_else(|| panic!("batch {writer}/{batch} is whole"));
            assert_eq!(
                parse_text(text),
                (writer, batch, offset),
                "message {id}: batch {writer}/{batch} in array order with nothing between"
            );
        }
        position += size;
    }
    for pair in stored.windows(2) {
        assert!(pair[0].0 < pair[1].0, "strictly increasing ids");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_racing_on_one_chat_from_two_instances_are_each_one_block_in_array_order() {
    // Arrange
    let Some(cluster) = shared() else { return };
    let db = Database::fresh(cluster);
    let who = db.seed("racer");
    let servers = Arc::new(db.serve_many(2));
    let (writers, batches, size) = (4, 15, 5);

    // Act: four writers, two on each instance, each posting its batches one after another.
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let (servers, who) = (Arc::clone(&servers), who.clone());
        tasks.push(tokio::spawn(async move {
            let client = client();
            let server = &servers[writer % 2];
            let mut answered = Vec::new();
            for batch in 0..batches {
                let texts: Vec<String> = (0..size).map(|i| text(writer, batch, i)).collect();
                let response = post_batch(&client, server, &who, &texts, None)
                    .await
                    .expect("the batch is answered");
                let stored = messages_of(response).await;
                answered.push((batch, texts, stored));
            }
            (writer, answered)
        }));
    }
    let mut acknowledged = HashMap::new();
    for task in tasks {
        let (writer, answered) = task.await.unwrap();
        for (batch, texts, stored) in answered {
            // Assert: each answer is its batch, in array order, at consecutive ids.
            let answered_texts: Vec<&String> = stored.iter().map(|(_, text)| text).collect();
            assert_eq!(answered_texts, texts.iter().collect::<Vec<_>>());
            for pair in stored.windows(2) {
                assert!(pair[0].0 < pair[1].0, "strictly increasing ids: {stored:?}");
            }
            acknowledged.insert((writer, batch), stored);
        }
    }

    // Assert: the table holds every batch once, each a block of its own in array order.
    let stored = db.stored(who.chat);
    assert_eq!(stored.len(), writers * batches * size);
    let found = assert_batches_whole_and_contiguous(&stored, size);
    assert_eq!(found.len(), writers * batches);
    let by_id: BTreeMap<i64, String> = stored.iter().cloned().collect();
    for messages in acknowledged.values() {
        for (id, text) in messages {
            assert_eq!(by_id.get(id), Some(text), "the answered id holds its text");
        }
    }
    // And both instances read the same chat, the same way.
    let client = client();
    for server in servers.iter() {
        let (read, next) = page(&client, server, &who, "after=0&limit=1000").await;
        assert_eq!(read, stored, "the API reads what the table holds");
        assert_eq!(next, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paging_on_either_instance_never_skips_or_repeats_while_both_append() {
    // Arrange
    let Some(cluster) = shared() else { return };
    let db = Database::fresh(cluster);
    let who = db.seed("pager");
    let servers = Arc::new(db.serve_many(2));
    let (writers, batches, size) = (12, 16, 2);
    let total = writers * batches * size;
    let writing = Arc::new(AtomicUsize::new(writers));

    // Act: writers on both instances append; readers walk forward and backward pages,
    // alternating the instances, until the writers are done and everything was seen.
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let (servers, who, writing) = (Arc::clone(&servers), who.clone(), Arc::clone(&writing));
        tasks.push(tokio::spawn(async move {
            let client = client();
            for batch in 0..batches {
                let texts: Vec<String> = (0..size).map(|i| text(writer, batch, i)).collect();
                let response = post_batch(&client, &servers[writer % 2], &who, &texts, None)
                    .await
                    .expect("the batch is answered");
                assert_eq!(response.status(), StatusCode::OK);
            }
            writing.fetch_sub(1, Ordering::Relaxed);
        }));
    }
    // Readers that keep up with the newest messages are the ones that would see a
    // later commit of a smaller id skipped; six of them, alternating the
    // instances.
    let forward: Vec<_> = (0..6)
        .map(|reader| {
            let (servers, who, writing) = (Arc::clone(&servers), who.clone(), Arc::clone(&writing));
            tokio::spawn(async move {
                let client = client();
                let started = Instant::now();
                let mut seen: Vec<(i64, String)> = Vec::new();
                let mut turn = reader;
                loop {
                    let done = writing.load(Ordering::Relaxed) == 0;
                    let after = seen.last().map_or(0, |(id, _)| *id);
                    let query = format!("after={after}&limit=25");
                    let (messages, _) = page(&client, &servers[turn % 2], &who, &query).await;
                    turn += 1;
                    // Caught up after the last write: nothing more will come.
                    if done && messages.is_empty() {
                        return seen;
                    }
                    seen.extend(messages);
                    assert!(
                        started.elapsed() < WAIT_LIMIT,
                        "reader {reader} saw {} of {total}",
                        seen.len()
                    );
                }
            })
        })
        .collect();
    let backward = {
        let (servers, who, writing) = (Arc::clone(&servers), who.clone(), Arc::clone(&writing));
        tokio::spawn(async move {
            let client = client();
            let mut walks = Vec::new();
            let mut turn = 0;
            while writing.load(Ordering::Relaxed) > 0 {
                // One walk from the newest page back to the first.
                let mut walk: Vec<(i64, String)> = Vec::new();
                let mut query = format!("before={}&limit=5", i64::MAX);
                loop {
                    let (messages, next) = page(&client, &servers[turn % 2], &who, &query).await;
                    turn += 1;
                    walk.splice(0..0, messages);
                    match next {
                        Some(before) => query = format!("before={before}&limit=5"),
                        None => break,
                    }
                }
                walks.push(walk);
            }
            walks
        })
    };
    for task in tasks {
        task.await.unwrap();
    }
    let mut seen_by_readers = Vec::new();
    for reader in forward {
        seen_by_readers.push(reader.await.unwrap());
    }
    let walks = backward.await.unwrap();

    // Assert: the forward walk saw every stored message once, in id order; each backward
    // walk saw every message up to the newest one it started from.
    let stored = db.stored(who.chat);
    assert_eq!(stored.len(), total);
    let stored_ids: Vec<i64> = stored.iter().map(|(id, _)| *id).collect();
    for (reader, seen) in seen_by_readers.iter().enumerate() {
        let seen_ids: Vec<i64> = seen.iter().map(|(id, _)| *id).collect();
        let missed: Vec<&i64> = stored_ids
            .iter()
            .filter(|id| !seen_ids.contains(id))
            .collect();
        assert_eq!(
            seen_ids, stored_ids,
            "reader {reader} saw every message exactly once, in id order; it missed {missed:?}"
        );
        assert_eq!(seen, &stored);
    }
    assert!(!walks.is_empty(), "a backward walk ran while writers wrote");
    for walk in &walks {
        let newest = walk.last().map_or(0, |(id, _)| *id);
        let expected: Vec<&(i64, String)> = stored.iter().filter(|(id, _)| *id <= newest).collect();
        assert_eq!(
            walk.iter().collect::<Vec<_>>(),
            expected,
            "a backward walk from {newest} skips and repeats nothing"
        );
    }
    assert_batches_whole_and_contiguous(&stored, size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_sent_to_both_instances_at_once_stores_once_and_answers_alike() {
    // Arrange
    let Some(cluster) = shared() else { return };
    let db = Database::fresh(cluster);
    let who = db.seed("retrier");
    let servers = db.serve_many(2);
    let client = client();
    let rounds = 40;

    for round in 0..rounds {
        let key = format!("round-{round}");
        let texts: Vec<String> = (0..3).map(|i| text(0, round, i)).collect();

        // Act: the same request to both instances at the same moment.
        let (first, second) = tokio::join!(
            post_batch(&client, &servers[0], &who, &texts, Some(&key)),
            post_batch(&client, &servers[1], &who, &texts, Some(&key)),
        );
        let (first, second) = (first.unwrap(), second.unwrap());
        let first = messages_of(first).await;
        let second = messages_of(second).await;

        // Assert: one answer, the same ids, stored once.
        assert_eq!(first, second, "round {round}: both instances answer alike");
        let answered: Vec<&String> = first.iter().map(|(_, text)| text).collect();
        assert_eq!(answered, texts.iter().collect::<Vec<_>>());
        let stored = db.stored(who.chat);
        assert_eq!(stored.len(), (round + 1) * 3, "round {round}: stored once");
        assert_eq!(&stored[stored.len() - 3..], &first[..]);
    }

    // Assert: another body under a used key is 422 on either instance, and stores nothing.
    let other = vec!["something else".to_owned()];
    for server in &servers {
        let response = post_batch(&client, server, &who, &other, Some("round-0"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    assert_eq!(db.stored(who.chat).len(), rounds * 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_ended_or_a_chat_deleted_on_one_instance_is_gone_on_the_other_at_once() {
    // Arrange
    let Some(cluster) = shared() else { return };
    let db = Database::fresh(cluster);
    let who = db.seed("leaver");
    let servers = db.serve_many(2);
    let client = client();
    let session_status = |server: &ServerProcess, token: &str| {
        let request = client
            .get(format!("{}/api/auth/session", server.address()))
            .header(COOKIE, cookie(token));
        async move { request.send().await.unwrap().status() }
    };

    // Act + Assert: a logout on one instance is 401 on the other's very next request,
    // each way round.
    for (through, other) in [(0, 1), (1, 0)] {
        let token = db
            .cli(&["session", "create", &who.user])
            .single_line()
            .to_owned();
        assert_eq!(
            session_status(&servers[other], &token).await,
            StatusCode::OK
        );
        let logout = client
            .post(format!("{}/api/auth/logout", servers[through].address()))
            .header(COOKIE, cookie(&token))
            .send()
            .await
            .unwrap();
        assert_eq!(logout.status(), StatusCode::OK);
        assert_eq!(
            session_status(&servers[other], &token).await,
            StatusCode::UNAUTHORIZED,
            "logged out on instance {through}, still valid on {other}"
        );
    }

    // A session revoked by the operator is 401 on both instances at once.
    let token = db
        .cli(&["session", "create", &who.user])
        .single_line()
        .to_owned();
    for server in &servers {
        assert_eq!(session_status(server, &token).await, StatusCode::OK);
    }
    assert_eq!(db.cli(&["session", "revoke", &token]).single_line(), "1");
    for server in &servers {
        assert_eq!(
            session_status(server, &token).await,
            StatusCode::UNAUTHORIZED
        );
    }

    // A chat deleted on one instance is 404 on the other: read, written or listed.
    let stored = post_batch(&client, &servers[1], &who, &[text(0, 0, 0)], None)
        .await
        .unwrap();
    assert_eq!(messages_of(stored).await.len(), 1);
    let chat_url = |server: &ServerProcess| {
        format!(
            "{}/api/users/{}/chats/{}",
            server.address(),
            who.user,
            who.chat
        )
    };
    let deleted = client
        .delete(chat_url(&servers[0]))
        .header(COOKIE, cookie(&who.token))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    let chat = client
        .get(chat_url(&servers[1]))
        .header(COOKIE, cookie(&who.token))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), StatusCode::NOT_FOUND);
    let read = client
        .get(servers[1].messages_url(&who.user, who.chat))
        .header(COOKIE, cookie(&who.token))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::NOT_FOUND);
    let write = post_batch(&client, &servers[1], &who, &[text(0, 1, 0)], None)
        .await
        .unwrap();
    assert_eq!(write.status(), StatusCode::NOT_FOUND);
    let listed: Value = client
        .get(format!(
            "{}/api/users/{}/chats",
            servers[1].address(),
            who.user
        ))
        .header(COOKIE, cookie(&who.token))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["chats"], json!([]));
    assert!(db.stored(who.chat).is_empty(), "its messages went with it");
}

/// A chat's messages, or an answer's, as `(id, text)`.
type Messages = Vec<(i64, String)>;

/// What one load writer saw: the batches acknowledged (200), as `(writer, batch)` with
/// their answers.
#[derive(Default)]
struct Load {
    acknowledged: Vec<((usize, usize), Messages)>,
}

/// A load writer's running counts, for the test to wait on.
#[derive(Default)]
struct Counts {
    ok: AtomicUsize,
    unavailable: AtomicUsize,
}

/// Load writers posting batches of `size` to `servers` (writer `w` to server `w % n`)
/// until `stop` is set. A 200 answer must be the batch; any other must be a 503 with
/// `Retry-After`, or, for writers of `lost_server`, a refused connection once it is gone
/// (that writer then stops). No request may take longer than [`REQUEST_LIMIT`].
fn start_writers(
    servers: &Arc<Vec<ServerProcess>>,
    who: &Seeded,
    writers: usize,
    size: usize,
    stop: &Arc<AtomicBool>,
    lost_server: Option<usize>,
) -> (Vec<tokio::task::JoinHandle<Load>>, Vec<Arc<Counts>>) {
    let counts: Vec<Arc<Counts>> = (0..writers).map(|_| Arc::default()).collect();
    let tasks = (0..writers)
        .map(|writer| {
            let (servers, who, stop) = (Arc::clone(servers), who.clone(), Arc::clone(stop));
            let counts = Arc::clone(&counts[writer]);
            tokio::spawn(async move {
                let client = client();
                let mut load = Load::default();
                let target = writer % servers.len();
                let mut batch = 0;
                while !stop.load(Ordering::Relaxed) {
                    let texts: Vec<String> = (0..size).map(|i| text(writer, batch, i)).collect();
                    let started = Instant::now();
                    let answer = post_batch(&client, &servers[target], &who, &texts, None).await;
                    assert!(started.elapsed() < REQUEST_LIMIT, "a request hung");
                    match answer {
                        Ok(response) if response.status() == StatusCode::OK => {
                            let stored = messages_of(response).await;
                            let got: Vec<&String> = stored.iter().map(|(_, t)| t).collect();
                            assert_eq!(got, texts.iter().collect::<Vec<_>>());
                            load.acknowledged.push(((writer, batch), stored));
                            counts.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(response) => {
                            let status = response.status();
                            let retry = response.headers().get(RETRY_AFTER).cloned();
                            let body = response.text().await.unwrap_or_default();
                            assert_eq!(
                                status,
                                StatusCode::SERVICE_UNAVAILABLE,
                                "only 200 or 503: {body}"
                            );
                            let retry = retry.unwrap_or_else(|| panic!("Retry-After: {body}"));
                            let seconds: u64 = retry.to_str().unwrap().parse().unwrap();
                            assert!(seconds >= 1, "Retry-After {seconds}");
                            counts.unavailable.fetch_add(1, Ordering::Relaxed);
                            // Less than the Retry-After asks, to see the recovery soon, but
                            // not a busy loop either.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        Err(err) => {
                            assert!(
                                lost_server == Some(target) && !err.is_timeout(),
                                "writer {writer}: {err}"
                            );
                            break;
                        }
                    }
                    batch += 1;
                }
                load
            })
        })
        .collect();
    (tasks, counts)
}

/// Readers of the whole chat and of pages on every server until `stop` is set, each
/// answer 200 or 503 with `Retry-After`, within [`REQUEST_LIMIT`]; they return how many
/// answers had each status.
fn start_readers(
    servers: &Arc<Vec<ServerProcess>>,
    who: &Seeded,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<BTreeMap<u16, usize>>> {
    (0..servers.len())
        .map(|target| {
            let (servers, who, stop) = (Arc::clone(servers), who.clone(), Arc::clone(stop));
            tokio::spawn(async move {
                let client = client();
                let mut statuses = BTreeMap::new();
                let url = servers[target].messages_url(&who.user, who.chat);
                let mut turn = 0_usize;
                while !stop.load(Ordering::Relaxed) {
                    let query = ["", "?after=0&limit=5", "?before=1000000&limit=5"][turn % 3];
                    turn += 1;
                    let response = client
                        .get(format!("{url}{query}"))
                        .header(COOKIE, cookie(&who.token))
                        .send()
                        .await
                        .unwrap_or_else(|err| panic!("GET {query}: {err}"));
                    let status = response.status();
                    let retry = response.headers().get(RETRY_AFTER).is_some();
                    // The whole body: a whole-chat read streams, and may fail half-way.
                    let body = response.bytes().await;
                    match status {
                        StatusCode::OK => {
                            let body = body.unwrap_or_else(|err| panic!("GET {query}: {err}"));
                            let page: Value = serde_json::from_slice(&body)
                                .unwrap_or_else(|err| panic!("GET {query}: {err}"));
                            assert!(page["chatMessages"].is_array(), "{page}");
                        }
                        StatusCode::SERVICE_UNAVAILABLE => {
                            assert!(retry, "GET {query}: a 503 has Retry-After");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        other => panic!("GET {query}: only 200 or 503, not {other}: {body:?}"),
                    }
                    *statuses.entry(status.as_u16()).or_default() += 1;
                }
                statuses
            })
        })
        .collect()
}

/// Stops the writers and collects what they saw.
async fn stop_writers(stop: &AtomicBool, tasks: Vec<tokio::task::JoinHandle<Load>>) -> Vec<Load> {
    stop.store(true, Ordering::Relaxed);
    let mut loads = Vec::new();
    for task in tasks {
        loads.push(task.await.unwrap());
    }
    loads
}

/// Asserts that every acknowledged batch is stored as answered, and that every batch in
/// the chat is whole or absent, a block of its own.
fn assert_acknowledged_are_stored(db: &Database<'_>, who: &Seeded, loads: &[Load], size: usize) {
    let stored = db.stored(who.chat);
    assert_batches_whole_and_contiguous(&stored, size);
    let by_id: BTreeMap<i64, String> = stored.into_iter().collect();
    for load in loads {
        for (batch, messages) in &load.acknowledged {
            for (id, text) in messages {
                assert_eq!(by_id.get(id), Some(text), "acknowledged batch {batch:?}");
            }
        }
    }
}

/// Polls `condition` until it holds, failing after [`WAIT_LIMIT`] with `what`.
async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !condition().await {
        assert!(
            started.elapsed() < WAIT_LIMIT,
            "not within {WAIT_LIMIT:?}: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until each of `counts` has `more` acknowledged batches than now.
async fn wait_for_acks(what: &str, counts: &[Arc<Counts>], more: usize) {
    let before: Vec<usize> = counts
        .iter()
        .map(|c| c.ok.load(Ordering::Relaxed))
        .collect();
    wait_until(what, || {
        let done = counts
            .iter()
            .zip(&before)
            .all(|(now, then)| now.ok.load(Ordering::Relaxed) >= then + more);
        async move { done }
    })
    .await;
}

/// The status `/readyz` answers, or `None` when the request fails.
async fn readyz(client: &reqwest::Client, server: &ServerProcess) -> Option<StatusCode> {
    let response = client
        .get(format!("{}/readyz", server.address()))
        .send()
        .await
        .ok()?;
    Some(response.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgresql_restart_under_load_is_503_with_retry_after_and_heals_without_a_restart() {
    // Arrange: a cluster of this test's own, two instances, writers on both.
    let Some(cluster) = private() else { return };
    let db = Database::fresh(&cluster);
    let who = db.seed("through-restart");
    let servers = Arc::new(db.serve_many(2));
    let client = client();
    let stop = Arc::new(AtomicBool::new(false));
    let size = 3;
    let (writers, counts) = start_writers(&servers, &who, 4, size, &stop, None);
    let readers = start_readers(&servers, &who, &stop);
    wait_for_acks("the writers are served", &counts, 5).await;

    // Act: PostgreSQL stops (as a crash would: at once, its connections cut) while the
    // writers write and the readers read.
    cluster.stop();
    for server in servers.iter() {
        wait_until(
            "/readyz says not ready while PostgreSQL is down",
            || async { readyz(&client, server).await == Some(StatusCode::SERVICE_UNAVAILABLE) },
        )
        .await;
    }
    let refused: Vec<usize> = counts
        .iter()
        .map(|c| c.unavailable.load(Ordering::Relaxed))
        .collect();
    wait_until("every writer meets the outage", || {
        let met = counts
            .iter()
            .zip(&refused)
            .all(|(now, then)| now.unavailable.load(Ordering::Relaxed) > *then);
        async move { met }
    })
    .await;
    cluster.restart();

    // Assert: both serve again, without a restart of their own.
    for server in servers.iter() {
        wait_until("/readyz is ready again", || async {
            readyz(&client, server).await == Some(StatusCode::OK)
        })
        .await;
    }
    wait_for_acks("every writer is served again", &counts, 5).await;
    let loads = stop_writers(&stop, writers).await;
    for reader in readers {
        let statuses = reader.await.unwrap();
        assert!(
            statuses.contains_key(&200),
            "read before and after: {statuses:?}"
        );
    }
    assert_acknowledged_are_stored(&db, &who, &loads, size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_instance_loses_no_acknowledged_batch_and_the_other_keeps_serving() {
    // Arrange
    let Some(cluster) = shared() else { return };
    let db = Database::fresh(cluster);
    let who = db.seed("survivor");
    let servers = Arc::new(db.serve_many(2));
    let victim_pid = servers[0].pid();
    let stop = Arc::new(AtomicBool::new(false));
    let size = 4;
    let (writers, counts) = start_writers(&servers, &who, 6, size, &stop, Some(0));
    wait_for_acks("the writers are served", &counts, 5).await;

    // Act: SIGKILL to instance 0 in the middle of its writes.
    let killed = process::run(Command::new("kill").args(["-KILL", &victim_pid.to_string()]));
    assert!(killed.status.success(), "{killed:#?}");

    // Assert: instance 1's writers keep being served; then every acknowledged batch is
    // there and every batch is whole or absent.
    let survivors: Vec<Arc<Counts>> = counts.iter().skip(1).step_by(2).cloned().collect();
    wait_for_acks("the other instance keeps serving", &survivors, 10).await;
    let loads = stop_writers(&stop, writers).await;
    assert_acknowledged_are_stored(&db, &who, &loads, size);
    let client = client();
    let (all, _) = page(&client, &servers[1], &who, "after=0&limit=1000").await;
    assert_eq!(
        all,
        db.stored(who.chat),
        "the survivor reads the whole chat"
    );
}

#[test]
fn an_unreachable_database_is_one_clear_error_line_naming_it_without_the_password() {
    // Arrange: a socket folder with no server in it.
    let empty = tempfile::tempdir().unwrap();
    let url = format!(
        "postgresql://neptun:s3cret-pw@localhost/chats_db?host={}",
        empty.path().display()
    );

    // Act
    let started = Instant::now();
    let outcome = process::run(neptun().current_dir(empty.path()).args([
        "--database",
        &url,
        "serve",
        "--bind",
        "127.0.0.1:0",
    ]));

    // Assert
    let line = outcome.clear_error();
    assert!(
        started.elapsed() < process::DEADLINE,
        "{:?}",
        started.elapsed()
    );
    assert!(line.contains("chats_db"), "names the database: {line}");
    assert!(!line.contains("s3cret-pw"), "shows no password: {line}");
}

#[test]
fn two_instances_starting_at_once_on_an_empty_database_both_serve_on_one_migrated_schema() {
    // Arrange
    let Some(cluster) = shared() else { return };
    let db = Database::fresh(cluster);

    // Act
    let servers = db.serve_many(2);

    // Assert: one schema, at the newest version (3: search), marked once.
    assert_eq!(servers.len(), 2);
    assert_eq!(
        db.query("SELECT version FROM neptun_schema"),
        vec![vec![Some("3".to_owned())]]
    );
    let tables = db.query(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'chat_messages'",
    );
    assert_eq!(tables, vec![vec![Some("1".to_owned())]]);
}

#[test]
fn a_database_of_another_application_or_of_a_newer_schema_is_refused_and_left_untouched() {
    // Arrange
    let Some(cluster) = shared() else { return };
    let foreign = Database::fresh(cluster);
    foreign.query("CREATE TABLE foo (id int); INSERT INTO foo VALUES (7)");
    let newer = Database::fresh(cluster);
    newer.seed("before-the-upgrade");
    newer.query("UPDATE neptun_schema SET version = 99");

    // Act
    let refused_foreign = process::run(&mut foreign.serve_command());
    let refused_newer = process::run(&mut newer.serve_command());

    // Assert
    let line = refused_foreign.clear_error();
    assert!(
        line.contains("another application") && line.contains("foo"),
        "{line}"
    );
    assert_eq!(
        foreign.query(
            "SELECT string_agg(relname, ',') FROM pg_class \
             WHERE relnamespace = 'public'::regnamespace"
        ),
        vec![vec![Some("foo".to_owned())]],
        "nothing added: no table, sequence or index"
    );
    assert_eq!(
        foreign.query("SELECT id FROM foo"),
        vec![vec![Some("7".to_owned())]]
    );
    let line = refused_newer.clear_error();
    assert!(line.contains("99") && line.contains("newer"), "{line}");
    assert_eq!(
        newer.query("SELECT version FROM neptun_schema"),
        vec![vec![Some("99".to_owned())]]
    );
    assert_eq!(
        newer.query("SELECT id FROM users"),
        vec![vec![Some("before-the-upgrade".to_owned())]]
    );
}

/// The next SSE event of `events` within [`REQUEST_LIMIT`]: `(event, id, data)`.
async fn next_event<S>(events: &mut S) -> (String, String, Value)
where
    S: futures_util::Stream<
            Item = Result<
                eventsource_stream::Event,
                eventsource_stream::EventStreamError<reqwest::Error>,
            >,
        > + Unpin,
{
    use futures_util::StreamExt;
    let event = tokio::time::timeout(REQUEST_LIMIT, events.next())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
        .expect("a well-formed event");
    let data = serde_json::from_str(&event.data).expect("JSON data");
    (event.event, event.id, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_on_one_instance_gets_the_other_instances_writes_in_order_and_after_its_listener_is_cut()
 {
    use eventsource_stream::Eventsource;

    // Arrange: a stream on instance 0, following (a chat made by the CLI arrives).
    let Some(cluster) = shared() else { return };
    let db = Database::fresh(cluster);
    let who = db.seed("streamer");
    let servers = db.serve_many(2);
    let client = client();
    let response = client
        .get(format!(
            "{}/api/users/{}/events",
            servers[0].address(),
            who.user
        ))
        .header(COOKIE, cookie(&who.token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut events = Box::pin(response.bytes_stream().eventsource());
    let marker = db.create_chat(&who.user);
    let (kind, _, data) = next_event(&mut events).await;
    assert_eq!(
        (kind.as_str(), &data["chat"]["id"]),
        ("chat_created", &json!(marker))
    );

    // Act: batches through instance 1.
    let mut sent = Vec::new();
    for batch in 0..3 {
        let texts: Vec<String> = (0..4).map(|index| text(1, batch, index)).collect();
        let response = post_batch(&client, &servers[1], &who, &texts, None)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        sent.extend(messages_of(response).await);
    }

    // Assert: every message, in order, once.
    for (id, text) in &sent {
        let (kind, _, data) = next_event(&mut events).await;
        assert_eq!(kind, "message");
        assert_eq!(data["message"]["id"], *id);
        assert_eq!(data["message"]["message"], text.as_str());
    }

    // Act: cut instance 0's listening connection, then write through instance 1.
    let cut = db.query(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    );
    assert!(
        cut[0][0].as_deref().is_some_and(|n| n != "0"),
        "a listener was cut: {cut:?}"
    );
    let texts: Vec<String> = (0..2).map(|index| text(1, 9, index)).collect();
    let response = post_batch(&client, &servers[1], &who, &texts, None)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let after_cut = messages_of(response).await;

    // Assert: the stream catches up once the listener is back.
    for (id, _) in &after_cut {
        let (kind, _, data) = next_event(&mut events).await;
        assert_eq!(kind, "message");
        assert_eq!(data["message"]["id"], *id);
    }
}

#[test]
fn a_database_at_schema_version_1_is_migrated_keeps_its_data_and_indexes_its_messages_for_search() {
    // Arrange: version 1 as it was released, with a user, a chat and more messages than
    // one batch of the search backlog written into it.
    let Some(cluster) = shared() else { return };
    let db = Database::fresh(cluster);
    db.query(include_str!(
        "../../src/db/postgres/migrations/001_initial.sql"
    ));
    db.query(
        "INSERT INTO users (id, created_at) VALUES ('early', now()); \
         INSERT INTO chat_conversations (neptun_user_id, name, model, created_at, updated_at) \
         VALUES ('early', 'old', 'm', now(), now()); \
         INSERT INTO chat_messages (chat_conversation_id, neptun_user_id, message, actor, created_at) \
         SELECT 1, 'early', convert_to('An old Café message ' || n, 'UTF8'), 'user', now() \
         FROM generate_series(1, 1200) AS n",
    );

    // Act
    let _server = db.serve();
    let chat = db.create_chat("early");

    // Assert: the newest version, the old rows kept, and the user's changes counted
    // from here.
    assert_eq!(
        db.query("SELECT version FROM neptun_schema"),
        vec![vec![Some("3".to_owned())]]
    );
    assert_eq!(
        db.query("SELECT convert_from(name, 'UTF8') FROM chat_conversations ORDER BY id"),
        vec![
            vec![Some("old".to_owned())],
            vec![Some("New chat".to_owned())]
        ]
    );
    assert_eq!(
        db.query("SELECT u.last_change, c.seq, c.kind, c.chat_id FROM users u JOIN changes c ON c.user_id = u.id"),
        vec![vec![
            Some("1".to_owned()),
            Some("1".to_owned()),
            Some("chat_created".to_owned()),
            Some(chat.to_string()),
        ]]
    );
    // The old messages are indexed in the background, their words folded as new ones.
    let unindexed = || db.query("SELECT count(*) FROM chat_messages WHERE search IS NULL");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while unindexed() != vec![vec![Some("0".to_owned())]] {
        assert!(
            std::time::Instant::now() < deadline,
            "still unindexed: {:?}",
            unindexed()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        db.query("SELECT count(*) FROM chat_messages WHERE search @@ 'cafe & old'::tsquery"),
        vec![vec![Some("1200".to_owned())]]
    );
}
