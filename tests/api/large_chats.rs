//! Large chats stay bounded: a whole 100,000-message chat is streamed in slices while
//! small reads of other chats stay fast, large answers are gzipped for clients that
//! accept it, and deleting such a chat hides it at once and purges it in the
//! background without holding up other writes, resuming after a restart.

use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING, COOKIE};
use serde_json::{Value, json};

use crate::database::Database;
use crate::helpers::{TestApp, TestUser, chat_message_ids, json_body, spawn_app};
use crate::process::TempDb;

/// How long a test polls for something before it fails.
const DEADLINE: Duration = Duration::from_secs(120);

/// Adds `count` messages of `owner` to `chat` in one transaction, straight through
/// SQL: the API would take minutes for 100,000.
fn bulk_insert_messages(db: &Database, owner: &str, chat: i64, count: u32) {
    db.execute_each(
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) \
             INSERT INTO chat_messages (chat_conversation_id, neptun_user_id, message, actor, created_at) \
             SELECT {chat}, '{owner}', 'bulk message ' || i || ' ' || substr(hex(randomblob(60)), 1, 40 + i % 80), \
                    CASE i % 2 WHEN 0 THEN 'user' ELSE 'assistant' END, '2026-01-01T00:00:00.000Z' \
             FROM n"
        ),
        &format!(
            "INSERT INTO chat_messages (chat_conversation_id, neptun_user_id, message, actor, created_at) \
             SELECT {chat}, '{owner}', convert_to('bulk message ' || i || ' ' || substr(md5(random()::text) \
                    || md5(random()::text) || md5(random()::text) || md5(random()::text), 1, 40 + i % 80), 'UTF8'), \
                    CASE i % 2 WHEN 0 THEN 'user' ELSE 'assistant' END, '2026-01-01T00:00:00.000Z' \
             FROM generate_series(1, {count}) AS n(i)"
        ),
    );
}

/// How many messages of `chat` are stored, whether the chat is visible or not.
fn stored_count(db: &Database, chat: i64) -> i64 {
    db.integer(&format!(
        "SELECT count(*) FROM chat_messages WHERE chat_conversation_id = {chat}"
    ))
}

/// Whether anything of `chat` is still stored: its row or a message (visible or
/// waiting to be purged). Cheap enough to poll while measuring.
fn anything_stored(db: &Database, chat: i64) -> bool {
    db.integer(&format!(
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM chat_conversations WHERE id = {chat}) \
         OR EXISTS (SELECT 1 FROM chat_messages WHERE chat_conversation_id = {chat}) \
         THEN 1 ELSE 0 END"
    )) == 1
}

fn messages_path(user_id: &str, chat_id: i64) -> String {
    format!("/api/users/{user_id}/chats/{chat_id}/messages")
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Times one `?limit=10` read of `user`'s chat, checking its ids.
async fn timed_small_read(app: &TestApp, user: &TestUser, expected: &[i64]) -> Duration {
    let started = Instant::now();
    let response = app
        .get(
            &format!("{}?limit=10", messages_path(&user.id, user.chat_id)),
            Some(&user.token),
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);
    let body = json_body(response).await;
    let elapsed = started.elapsed();
    let ids: Vec<i64> = chat_message_ids(&body);
    assert_eq!(ids, expected);
    elapsed
}

/// Posts one message to `user`'s chat; its latency.
async fn timed_write(app: &TestApp, user: &TestUser, text: &str) -> Duration {
    let started = Instant::now();
    let response = app
        .post_messages(user, &json!({"message": text, "actor": "user"}))
        .await;
    assert_eq!(response.status().as_u16(), 200, "posting {text}");
    started.elapsed()
}

/// A user with ten messages in their chat; returns them and the ids.
async fn user_with_ten_messages(app: &TestApp, id: &str) -> (TestUser, Vec<i64>) {
    let user = app.seed_user(id);
    let messages: Vec<Value> = (0..10)
        .map(|i| json!({"content": format!("small {i}"), "role": "user"}))
        .collect();
    let response = app
        .post_messages(&user, &json!({ "messages": messages }))
        .await;
    let body = json_body(response).await;
    let ids = chat_message_ids(&body);
    (user, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_read_stays_fast_while_whole_100000_message_chats_are_read() {
    // Arrange: alice's chat holds 100,000 messages; bob's holds ten.
    let app = Arc::new(spawn_app().await);
    let alice = Arc::new(app.seed_user("alice"));
    bulk_insert_messages(&app.database, "alice", alice.chat_id, 100_000);
    let (bob, bob_ids) = user_with_ten_messages(&app, "bob").await;
    for _ in 0..5 {
        timed_small_read(&app, &bob, &bob_ids).await;
    }
    let mut idle = Vec::new();
    for _ in 0..30 {
        idle.push(timed_small_read(&app, &bob, &bob_ids).await);
    }
    let idle = median(idle);

    // Act: eight clients read alice's whole chat over and over (until told to stop, so
    // they overlap every page read), while bob reads a page.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..8 {
        let (app, alice, stop) = (app.clone(), alice.clone(), stop.clone());
        let started = started.clone();
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut response = app
                    .get(&messages_path(&alice.id, alice.chat_id), Some(&alice.token))
                    .await;
                assert_eq!(response.status().as_u16(), 200);
                started.fetch_add(1, Ordering::Relaxed);
                let mut bytes = 0;
                while let Some(chunk) = response.chunk().await.expect("the body streams") {
                    bytes += chunk.len();
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
                assert!(bytes > 10_000_000, "a whole read of {bytes} bytes");
            }
        }));
    }
    let deadline = Instant::now() + DEADLINE;
    while started.load(Ordering::Relaxed) < 8 {
        assert!(Instant::now() < deadline, "the large reads did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut loaded = Vec::new();
    for _ in 0..30 {
        loaded.push(timed_small_read(&app, &bob, &bob_ids).await);
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    let loaded = median(loaded);
    eprintln!("a page read: {idle:?} idle, {loaded:?} while whole chats are read");

    // Assert: a generous ratio; a read waiting for whole reads to finish took 4,500x.
    assert!(
        loaded < idle * 30,
        "a small read took {loaded:?} while whole chats were read, {idle:?} idle"
    );
}

#[tokio::test]
async fn the_whole_of_a_chat_larger_than_a_slice_is_one_answer_in_id_order_with_a_null_next() {
    // Arrange: 5,000 messages, and a message in another chat that must not show.
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let other = app.create_chat("alice");
    bulk_insert_messages(&app.database, "alice", alice.chat_id, 5_000);
    bulk_insert_messages(&app.database, "alice", other, 1);
    let stored = app.stored_messages(alice.chat_id);

    // Act
    let response = app
        .get(&messages_path("alice", alice.chat_id), Some(&alice.token))
        .await;

    // Assert
    assert_eq!(response.status().as_u16(), 200);
    let body = json_body(response).await;
    assert_eq!(body["next"], Value::Null);
    let read: Vec<(i64, String, String)> = body["chatMessages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["chat_conversation_id"], alice.chat_id);
            assert_eq!(m["neptun_user_id"], "alice");
            (
                m["id"].as_i64().unwrap(),
                m["message"].as_str().unwrap().to_owned(),
                m["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(read.len(), 5_000);
    assert_eq!(read, stored);
}

/// Adds `count` user messages of 2,000 characters each to `chat` (of `owner`): a 40 MB
/// chat for 20,000, far more than the socket buffers between server and client hold.
fn bulk_insert_long_user_messages(db: &Database, owner: &str, chat: i64, count: u32) {
    db.execute_each(
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) \
             INSERT INTO chat_messages (chat_conversation_id, neptun_user_id, message, actor, created_at) \
             SELECT {chat}, '{owner}', i || ' ' || hex(zeroblob(1000)), 'user', '2026-01-01T00:00:00.000Z' FROM n"
        ),
        &format!(
            "INSERT INTO chat_messages (chat_conversation_id, neptun_user_id, message, actor, created_at) \
             SELECT {chat}, '{owner}', convert_to(i || ' ' || repeat('0', 2000), 'UTF8'), 'user', '2026-01-01T00:00:00.000Z' \
             FROM generate_series(1, {count}) AS n(i)"
        ),
    );
}

/// Reads the rest of a response's body; `Err` if the server cut it short.
async fn rest_of_body(mut response: reqwest::Response) -> Result<usize, reqwest::Error> {
    let mut bytes = 0;
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len();
    }
    Ok(bytes)
}

#[tokio::test]
async fn a_whole_chat_read_ends_cut_short_when_the_chat_or_its_turns_back_into_the_part_sent_are_deleted()
 {
    // Each case: what is deleted once the first part of the answer has arrived.
    let cases = [
        ("the chat", reqwest::Method::DELETE, ""),
        ("its last turn", reqwest::Method::DELETE, "/messages/last"),
    ];
    for (what, method, suffix) in cases {
        // Arrange: 20,000 long messages, all the user's, so the last turn is all of them.
        let app = spawn_app().await;
        let alice = app.seed_user("alice");
        bulk_insert_long_user_messages(&app.database, "alice", alice.chat_id, 20_000);
        let mut response = app
            .get(&messages_path("alice", alice.chat_id), Some(&alice.token))
            .await;
        assert_eq!(response.status().as_u16(), 200, "{what}");
        let first = response.chunk().await.unwrap().expect("a first part");
        assert!(first.starts_with(b"{\"chatMessages\":[{"), "{what}");

        // Act: delete while the client has not read on.
        let path = format!("/api/users/alice/chats/{}{suffix}", alice.chat_id);
        let deleted = app.send(method, &path, Some(&alice.token), None).await;
        assert_eq!(deleted.status().as_u16(), 200, "deleting {what}");
        let rest = rest_of_body(response).await;

        // Assert: the answer breaks off; a well-formed end would claim a chat that never
        // was (a part of the messages, then nothing).
        assert!(
            rest.is_err(),
            "deleting {what} under the read still gave a complete answer ({rest:?} more bytes)"
        );
    }
}

/// GETs `path` with alice's session and, if given, an `Accept-Encoding`; the raw
/// (undecoded) body and its `Content-Encoding`.
async fn raw_get(
    app: &TestApp,
    path: &str,
    token: &str,
    encoding: Option<&str>,
) -> (Vec<u8>, Option<String>) {
    let mut request = app
        .client
        .get(format!("{}{path}", app.address))
        .header(COOKIE, format!("neptun-session={token}"));
    if let Some(encoding) = encoding {
        request = request.header(ACCEPT_ENCODING, encoding);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_encoding = response
        .headers()
        .get(CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap().to_owned());
    (response.bytes().await.unwrap().to_vec(), content_encoding)
}

#[tokio::test]
async fn a_large_read_accepting_gzip_is_gzipped_and_decodes_to_the_same_json() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    bulk_insert_messages(&app.database, "alice", alice.chat_id, 3_000);
    let path = messages_path("alice", alice.chat_id);

    // Act
    let (plain, plain_encoding) = raw_get(&app, &path, &alice.token, None).await;
    let (gzipped, encoding) = raw_get(&app, &path, &alice.token, Some("gzip")).await;

    // Assert: gzip, several times smaller, and the same JSON once decoded.
    assert_eq!(plain_encoding, None);
    assert_eq!(encoding.as_deref(), Some("gzip"));
    assert!(
        gzipped.len() * 3 < plain.len(),
        "{} gzipped bytes for {} plain ones",
        gzipped.len(),
        plain.len()
    );
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&gzipped[..])
        .read_to_end(&mut decoded)
        .expect("a gzip stream");
    assert_eq!(decoded, plain);
    let json: Value = serde_json::from_slice(&decoded).unwrap();
    assert_eq!(json["chatMessages"].as_array().unwrap().len(), 3_000);
}

/// Two clients posting to `user`'s chat one message after another until told to stop;
/// every write's latency.
struct Writers {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Duration>>>,
}

impl Writers {
    fn start(app: &Arc<TestApp>, user: &Arc<TestUser>, label: &str) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let tasks = (0..2)
            .map(|writer| {
                let (app, user) = (app.clone(), user.clone());
                let (stop, done, label) = (stop.clone(), done.clone(), label.to_owned());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let text = format!("{label} {writer} #{}", latencies.len());
                        latencies.push(timed_write(&app, &user, &text).await);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    latencies
                })
            })
            .collect();
        Writers { stop, done, tasks }
    }

    async fn wait_for(&self, writes: usize) {
        let deadline = Instant::now() + DEADLINE;
        while self.done.load(Ordering::Relaxed) < writes {
            assert!(Instant::now() < deadline, "the writes did not get through");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn stop(self) -> Vec<Duration> {
        self.stop.store(true, Ordering::Relaxed);
        let mut latencies = Vec::new();
        for task in self.tasks {
            latencies.extend(task.await.unwrap());
        }
        latencies.sort();
        latencies
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_100000_message_chat_hides_it_at_once_and_purges_it_without_holding_up_writes() {
    // Arrange: alice's chat holds 100,000 messages; two clients write to bob's chat,
    // first without anything else going on.
    let app = Arc::new(spawn_app().await);
    let alice = app.seed_user("alice");
    bulk_insert_messages(&app.database, "alice", alice.chat_id, 100_000);
    let bob = Arc::new(app.seed_user("bob"));
    let idle = Writers::start(&app, &bob, "idle");
    idle.wait_for(300).await;
    let idle = idle.stop().await;

    // Act: the same two clients write while alice's chat is deleted and purged.
    let during = Writers::start(&app, &bob, "during");
    during.wait_for(4).await;
    let chat_path = format!("/api/users/alice/chats/{}", alice.chat_id);
    let deleted = app.delete(&chat_path, Some(&alice.token), None).await;
    let messages = app
        .get(&messages_path("alice", alice.chat_id), Some(&alice.token))
        .await;
    let chats = app.get("/api/users/alice/chats", Some(&alice.token)).await;
    let deadline = Instant::now() + DEADLINE;
    while anything_stored(&app.database, alice.chat_id) {
        assert!(Instant::now() < deadline, "the chat was not purged in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let during = during.stop().await;

    // Assert: gone for alice at once, purged in the end, and no write waited long. The
    // slowest of some hundred writes shows the machine's hiccups as much as the purge,
    // so it is compared with the slowest of as many idle writes (or ten idle medians,
    // should the idle writes have met no hiccup at all), with a generous ratio: a
    // write that waited for the whole delete took 20 to 50 times as long.
    assert_eq!(deleted.status().as_u16(), 200);
    assert_eq!(
        json_body(deleted).await,
        json!({"deleted": [alice.chat_id]})
    );
    assert_eq!(messages.status().as_u16(), 404);
    assert_eq!(json_body(chats).await["chats"], json!([]));
    let (idle_median, idle_slowest) = (idle[idle.len() / 2], idle[idle.len() - 1]);
    let slowest = during[during.len() - 1];
    eprintln!(
        "a write: median {idle_median:?}, slowest {idle_slowest:?} in {} idle writes; \
         median {:?}, slowest {slowest:?} in {} writes during the purge",
        idle.len(),
        during[during.len() / 2],
        during.len()
    );
    let baseline = idle_slowest.max(idle_median * 10);
    assert!(
        slowest < baseline * 5,
        "a write took {slowest:?} during the purge; idle, the slowest took {idle_slowest:?}, \
         the median {idle_median:?}"
    );
}

#[tokio::test]
async fn a_purge_cut_short_by_a_crash_resumes_after_the_restart() {
    // Arrange: a server on a database with a 100,000-message chat.
    let db = TempDb::new();
    db.create_user("alice");
    let token = db.create_session("alice", &[]);
    let chat = db.create_chat("alice");
    bulk_insert_messages(&db.database, "alice", chat, 100_000);
    let mut server = db.serve(&[]);
    let client = reqwest::Client::new();
    let chat_url = format!("{}/api/users/alice/chats/{chat}", server.address());

    // Act: delete it, and kill the server before the purge can finish.
    let deleted = client
        .delete(&chat_url)
        .header(COOKIE, format!("neptun-session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 200);
    server.kill();
    let left = stored_count(&db.database, chat);
    let server = db.serve(&[]);

    // Assert: still hidden after the restart, and purged in the end. (SQLite purges a
    // large chat's messages after the delete, so some are left at the crash; PostgreSQL
    // deletes them in the deleting transaction, so none are.)
    match crate::BACKEND {
        crate::database::Backend::Sqlite => assert!(
            left > 0,
            "the purge finished before the crash; nothing to resume"
        ),
        crate::database::Backend::Postgres => assert_eq!(left, 0, "deleted with the chat"),
    }
    let read = client
        .get(server.messages_url("alice", chat))
        .header(COOKIE, format!("neptun-session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status().as_u16(), 404);
    let deadline = Instant::now() + DEADLINE;
    while anything_stored(&db.database, chat) {
        assert!(
            Instant::now() < deadline,
            "the purge did not resume: {} messages left",
            stored_count(&db.database, chat)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in the status of {pid}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_whole_reads_of_a_100000_message_chat_at_once_take_less_memory_than_one_answer() {
    // Arrange: a server (its own process, so its memory is its own) and a large chat.
    let db = TempDb::new();
    db.create_user("alice");
    let token = db.create_session("alice", &[]);
    let chat = db.create_chat("alice");
    bulk_insert_messages(&db.database, "alice", chat, 100_000);
    let server = db.serve(&[]);
    let client = reqwest::Client::new();
    let url = server.messages_url("alice", chat);
    let before = status_kib(server.pid(), "VmRSS");

    // Act: eight clients read the whole chat at once.
    let reads: Vec<_> = (0..8)
        .map(|_| {
            let request = client
                .get(&url)
                .header(COOKIE, format!("neptun-session={token}"));
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                assert_eq!(response.status().as_u16(), 200);
                rest_of_body(response).await.expect("the whole chat")
            })
        })
        .collect();
    let mut sizes = Vec::new();
    for read in reads {
        sizes.push(read.await.unwrap());
    }
    let peak = status_kib(server.pid(), "VmHWM");

    // Assert: every read got the whole chat, and the server grew by less than one
    // answer (building each answer whole took eight of them: 16 such reads took RSS
    // to 346 MiB).
    assert!(
        sizes
            .iter()
            .all(|&size| size == sizes[0] && size > 10_000_000),
        "{sizes:?}"
    );
    let answer_kib = u64::try_from(sizes[0] / 1024).unwrap();
    let grown = peak.saturating_sub(before);
    eprintln!("memory: {before} KiB before, {peak} KiB at the peak; one answer {answer_kib} KiB");
    assert!(
        grown < answer_kib,
        "the server grew by {grown} KiB for answers of {answer_kib} KiB"
    );
}
