//! `neptun-chat copy --to`: a database with real content, made through the API, moved
//! from SQLite to PostgreSQL and back into a new SQLite file, compared row for row with
//! where it started, and used through a server on the PostgreSQL copy (the same password,
//! the same session, the same idempotent answer, fresh ids); targets that are not empty
//! are refused and a copy that fails half-way leaves its target empty.
//!
//! These tests run against a real PostgreSQL: a database of their own each in a
//! throwaway cluster ([`TempPostgres`], from `postgres_cluster`). They are in the SQLite
//! binary only: every one of them moves data between the two backends.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use neptun_chat::auth::SESSION_COOKIE;
use neptun_chat::config::Settings;
use neptun_chat::db::Location;
use neptun_chat::startup::Application;
use reqwest::header::{CONTENT_TYPE, COOKIE};
use rusqlite::types::Value as SqlValue;
use serde_json::{Value, json};

use crate::helpers::{chat_message_ids, json_body, session_cookie, spawn_app};
use crate::postgres_cluster::{self, Cluster, TestDatabase};
use crate::process::{Outcome, neptun, run};

/// Databases of the throwaway PostgreSQL cluster these tests share, dropped with this.
struct TempPostgres {
    cluster: &'static Cluster,
    databases: Vec<TestDatabase>,
}

impl TempPostgres {
    /// The shared cluster, started on first use; `None`, loudly, when it cannot start
    /// and PostgreSQL is not required (this binary's other tests are SQLite's and go on).
    fn start() -> Option<TempPostgres> {
        static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
        let cluster = CLUSTER.get_or_init(|| match Cluster::start() {
            Ok(cluster) => Some(cluster),
            Err(reason) if postgres_cluster::required() => {
                panic!("PostgreSQL is required but {reason}")
            }
            Err(reason) => {
                eprintln!("PostgreSQL NOT AVAILABLE: the copy tests checked nothing: {reason}");
                None
            }
        });
        Some(TempPostgres {
            cluster: cluster.as_ref()?,
            databases: Vec::new(),
        })
    }

    /// A new, empty database; its URL.
    fn create_database(&mut self) -> String {
        let database = self.cluster.create_database();
        let url = database.url();
        self.databases.push(database);
        url
    }
}

/// `neptun-chat --database FROM copy --to TO`.
fn copy(from: &str, to: &str) -> Outcome {
    run(neptun().args(["--database", from, "copy", "--to", to]))
}

/// Asserts that `outcome` is a successful copy, and returns its table lines.
fn copied(outcome: &Outcome) -> Vec<(String, u64)> {
    assert!(outcome.status.success(), "the copy succeeds: {outcome:#?}");
    assert!(
        outcome.stderr.contains("verified"),
        "it says it verified the copy: {outcome:#?}"
    );
    outcome
        .stdout
        .lines()
        .map(|line| {
            let (table, rows) = line.split_once('\t').expect("table<TAB>rows");
            (table.to_owned(), rows.parse().expect("a row count"))
        })
        .collect()
}

/// Every row of every table and the AUTOINCREMENT counters of the SQLite database at
/// `path`, in key order, as SQLite returns them.
fn sqlite_rows(path: &Path) -> Vec<(String, Vec<Vec<SqlValue>>)> {
    let conn = rusqlite::Connection::open(path).expect("the database opens");
    [
        ("users", "SELECT * FROM users ORDER BY id"),
        ("sessions", "SELECT * FROM sessions ORDER BY token_hash"),
        (
            "chat_conversations",
            "SELECT * FROM chat_conversations ORDER BY id",
        ),
        ("chat_messages", "SELECT * FROM chat_messages ORDER BY id"),
        (
            "idempotency_keys",
            "SELECT * FROM idempotency_keys ORDER BY user_id, key",
        ),
        (
            "sqlite_sequence",
            "SELECT * FROM sqlite_sequence ORDER BY name",
        ),
    ]
    .into_iter()
    .map(|(table, sql)| {
        let mut stmt = conn.prepare(sql).expect("the query prepares");
        let columns = stmt.column_count();
        let rows = stmt
            .query_map([], |row| {
                (0..columns).map(|i| row.get::<_, SqlValue>(i)).collect()
            })
            .expect("the query runs")
            .collect::<Result<_, _>>()
            .expect("the rows are read");
        (table.to_owned(), rows)
    })
    .collect()
}

/// A server on `database`, with the test's defaults otherwise; its base URL.
async fn serve(database: Location) -> String {
    let app = Application::build(Settings {
        database,
        bind: "127.0.0.1:0".to_owned(),
        ..Settings::default()
    })
    .await
    .expect("the application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_ignoring_signals());
    address
}

/// Sends a JSON request to `address` + `path` with an optional session token and
/// `Idempotency-Key`.
async fn send(
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    key: Option<&str>,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.header(COOKIE, format!("{SESSION_COOKIE}={token}"));
    }
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    if let Some(body) = body {
        request = request
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
    }
    request.send().await.expect("the request is sent")
}

/// Asserts a 200 and returns its JSON body.
async fn ok(response: reqwest::Response, what: &str) -> Value {
    assert_eq!(response.status().as_u16(), 200, "{what}");
    json_body(response).await
}

/// The stored content of a real deployment: two users signed up with passwords, three
/// chats, single and batch messages, an idempotency-keyed batch, a deleted last turn
/// (so message ids have a gap at the end) and a deleted chat. Returns the SQLite file,
/// the first user's id and session, their chat and the keyed request.
struct Content {
    db_path: PathBuf,
    address: String,
    user_id: String,
    token: String,
    chat_id: i64,
    keyed_body: Value,
    keyed_ids: Vec<i64>,
    _app: crate::helpers::TestApp,
}

const KEY: &str = "retry-me-7";

async fn make_content() -> Content {
    use reqwest::Method;
    let app = spawn_app().await;
    let (ada, token) = app.sign_up("ada@example.org", "ada's long password").await;
    let (bob, bob_token) = app.sign_up("bob@example.org", "bob's long password").await;
    let ada_id = ada["id"].as_str().expect("an id").to_owned();
    let bob_id = bob["id"].as_str().expect("an id").to_owned();
    let chats = |user: &str| format!("{}/api/users/{user}/chats", app.address);
    let mut chat_ids = Vec::new();
    for (user, token, name) in [
        (&ada_id, &token, "Plans"),
        (&ada_id, &token, "To delete"),
        (&bob_id, &bob_token, "Bob's"),
    ] {
        let body = json!({"name": name, "model": "test-model"});
        let chat = ok(
            send(Method::POST, chats(user), Some(token), None, Some(&body)).await,
            "chat created",
        )
        .await;
        chat_ids.push(chat["chat"]["id"].as_i64().expect("a chat id"));
    }
    let messages = |user: &str, chat: i64| format!("{}/{chat}/messages", chats(user));
    let single = json!({"message": "Hello, Grüße and 🚀", "actor": "user"});
    let batch = json!({"messages": [
        {"content": "a batch, first", "role": "user"},
        {"content": "a batch, second\nwith a new line", "role": "assistant"},
        {"content": "system note with a \u{0} inside", "role": "system"},
    ]});
    for (user, token, chat, body) in [
        (&ada_id, &token, chat_ids[0], &single),
        (&ada_id, &token, chat_ids[0], &batch),
        (&ada_id, &token, chat_ids[1], &batch),
        (&bob_id, &bob_token, chat_ids[2], &single),
    ] {
        ok(
            send(
                Method::POST,
                messages(user, chat),
                Some(token),
                None,
                Some(body),
            )
            .await,
            "messages stored",
        )
        .await;
    }
    let keyed_body = json!({"messages": [
        {"content": "kept with a key", "role": "user"},
        {"content": "and its answer", "role": "assistant"},
    ]});
    let keyed = ok(
        send(
            Method::POST,
            messages(&ada_id, chat_ids[0]),
            Some(&token),
            Some(KEY),
            Some(&keyed_body),
        )
        .await,
        "keyed batch stored",
    )
    .await;
    let keyed_ids = chat_message_ids(&keyed);
    // A last turn that is deleted leaves ids that are never handed out again.
    let turn = json!({"messages": [
        {"content": "to be taken back", "role": "user"},
        {"content": "taken back too", "role": "assistant"},
    ]});
    ok(
        send(
            Method::POST,
            messages(&ada_id, chat_ids[0]),
            Some(&token),
            None,
            Some(&turn),
        )
        .await,
        "last turn stored",
    )
    .await;
    let deleted = send(
        Method::DELETE,
        format!("{}/last", messages(&ada_id, chat_ids[0])),
        Some(&token),
        None,
        None,
    )
    .await;
    assert_eq!(deleted.status().as_u16(), 200, "last turn deleted");
    let deleted = send(
        Method::DELETE,
        format!("{}/{}", chats(&ada_id), chat_ids[1]),
        Some(&token),
        None,
        None,
    )
    .await;
    assert!(deleted.status().is_success(), "chat deleted");
    // The writer purges a deleted chat's rows soon after; wait for it, so that the
    // source holds only what a copy takes.
    let deadline = Instant::now() + Duration::from_secs(20);
    let conn = rusqlite::Connection::open(app.db_path()).expect("the database opens");
    while conn
        .query_row("SELECT count(*) FROM chat_conversations", [], |row| {
            row.get::<_, i64>(0)
        })
        .expect("counted")
        != 2
    {
        assert!(
            Instant::now() < deadline,
            "the deleted chat is purged in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Content {
        db_path: app.db_path().to_path_buf(),
        address: app.address.clone(),
        user_id: ada_id,
        token,
        chat_id: chat_ids[0],
        keyed_body,
        keyed_ids,
        _app: app,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_moved_to_postgresql_and_back_is_the_same_row_for_row_and_works_on_postgresql() {
    // Arrange
    let Some(mut postgres) = TempPostgres::start() else {
        return;
    };
    let content = make_content().await;
    let source = content.db_path.to_str().expect("a UTF-8 path").to_owned();
    let url = postgres.create_database();
    let back_dir = tempfile::tempdir().expect("a temporary folder");
    let back = back_dir.path().join("back.db");
    let back_text = back.to_str().expect("a UTF-8 path").to_owned();

    // Act
    let there = copy(&source, &url);
    let and_back = copy(&url, &back_text);

    // Assert: what each copy says it copied.
    let expected: Vec<(String, u64)> = [
        ("users", 2),
        ("sessions", 2),
        ("chats", 2),
        ("messages", 7),
        ("idempotency_keys", 1),
    ]
    .into_iter()
    .map(|(table, rows)| (table.to_owned(), rows))
    .collect();
    assert_eq!(copied(&there), expected, "SQLite -> PostgreSQL");
    assert_eq!(copied(&and_back), expected, "PostgreSQL -> SQLite");

    // Assert: every row, id, timestamp, hash and counter came back as it was, also by
    // way of a second PostgreSQL database, and from SQLite to SQLite directly.
    let second_url = postgres.create_database();
    copied(&copy(&url, &second_url));
    let by_second = back_dir.path().join("by-second.db");
    copied(&copy(
        &second_url,
        by_second.to_str().expect("a UTF-8 path"),
    ));
    let direct = back_dir.path().join("direct.db");
    copied(&copy(&source, direct.to_str().expect("a UTF-8 path")));
    let original = sqlite_rows(&content.db_path);
    for (file, how) in [
        (&back, "SQLite -> PostgreSQL -> SQLite"),
        (&by_second, "SQLite -> PostgreSQL -> PostgreSQL -> SQLite"),
        (&direct, "SQLite -> SQLite"),
    ] {
        for ((table, rows), (_, copied_rows)) in original.iter().zip(&sqlite_rows(file)) {
            assert!(!rows.is_empty(), "{table} has rows to compare");
            assert_eq!(rows, copied_rows, "{how}: {table}, row for row");
        }
    }

    // Assert: a server on the PostgreSQL copy.
    use reqwest::Method;
    let server = serve(url.parse().expect("a URL")).await;
    let login = send(
        Method::POST,
        format!("{server}/api/auth/login"),
        None,
        None,
        Some(&json!({"email": "ada@example.org", "password": "ada's long password"})),
    )
    .await;
    assert_eq!(login.status().as_u16(), 200, "the same password logs in");
    assert!(session_cookie(&login).is_some(), "a new session");
    let session = ok(
        send(
            Method::GET,
            format!("{server}/api/auth/session"),
            Some(&content.token),
            None,
            None,
        )
        .await,
        "the copied session cookie works",
    )
    .await;
    assert_eq!(session["user"]["id"], content.user_id.as_str(), "{session}");
    let messages = format!(
        "{server}/api/users/{}/chats/{}/messages",
        content.user_id, content.chat_id
    );
    let replayed = ok(
        send(
            Method::POST,
            messages.clone(),
            Some(&content.token),
            Some(KEY),
            Some(&content.keyed_body),
        )
        .await,
        "the idempotent retry",
    )
    .await;
    assert_eq!(
        chat_message_ids(&replayed),
        content.keyed_ids,
        "the retry replays the stored answer"
    );
    let next = ok(
        send(
            Method::POST,
            messages.clone(),
            Some(&content.token),
            None,
            Some(&json!({"message": "new on PostgreSQL", "actor": "user"})),
        )
        .await,
        "a new message",
    )
    .await;
    let highest_handed_out = original
        .iter()
        .find(|(table, _)| table == "sqlite_sequence")
        .and_then(|(_, rows)| {
            rows.iter()
                .find(|row| row[0] == SqlValue::Text("chat_messages".to_owned()))
        })
        .map(|row| match row[1] {
            SqlValue::Integer(seq) => seq,
            ref other => panic!("a sequence value: {other:?}"),
        })
        .expect("the source's message counter");
    let highest_copied = original[3]
        .1
        .iter()
        .map(|row| match row[0] {
            SqlValue::Integer(id) => id,
            ref other => panic!("a message id: {other:?}"),
        })
        .max()
        .expect("copied messages");
    assert!(
        highest_handed_out > highest_copied,
        "the source has a gap at the end"
    );
    assert_eq!(
        next["chatMessage"]["id"],
        highest_handed_out + 1,
        "a new message's id is past every id the source handed out: {next}"
    );
    let listed = ok(
        send(Method::GET, messages, Some(&content.token), None, None).await,
        "the chat reads",
    )
    .await;
    let texts: Vec<&str> = listed["chatMessages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["message"].as_str().expect("a text"))
        .collect();
    assert_eq!(
        texts,
        [
            "Hello, Grüße and 🚀",
            "a batch, first",
            "a batch, second\nwith a new line",
            "system note with a \u{0} inside",
            "kept with a key",
            "and its answer",
            "new on PostgreSQL",
        ]
    );

    // Assert: the copies are searchable, on PostgreSQL and back on SQLite: the copy
    // indexes what it stores.
    let back_server = serve(back_text.parse().expect("a path")).await;
    for (address, how) in [(&server, "on PostgreSQL"), (&back_server, "back on SQLite")] {
        let found = ok(
            send(
                Method::GET,
                format!("{address}/api/users/{}/search?q=batch", content.user_id),
                Some(&content.token),
                None,
                None,
            )
            .await,
            "the search",
        )
        .await;
        let mut texts: Vec<&str> = found["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|hit| hit["message"]["message"].as_str().expect("a text"))
            .collect();
        texts.sort_unstable();
        assert_eq!(
            texts,
            ["a batch, first", "a batch, second\nwith a new line"],
            "{how}: {found}"
        );
        assert_eq!(found["complete"], true, "{how}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn copying_into_a_database_that_is_not_empty_is_refused_and_changes_nothing() {
    // Arrange
    let Some(mut postgres) = TempPostgres::start() else {
        return;
    };
    let content = make_content().await;
    let source = content.db_path.to_str().expect("a UTF-8 path").to_owned();
    let url = postgres.create_database();
    copied(&copy(&source, &url));
    let other = spawn_app().await;
    other.seed_user("someone");
    let other_path = other.db_path().to_str().expect("a UTF-8 path").to_owned();
    let other_before = sqlite_rows(other.db_path());
    let back_dir = tempfile::tempdir().expect("a temporary folder");
    let before = back_dir.path().join("before.db");
    copied(&copy(&url, before.to_str().expect("a UTF-8 path")));

    // Act
    let into_postgres = copy(&other_path, &url);
    let into_sqlite = copy(&source, &other_path);

    // Assert
    for (outcome, target) in [(&into_postgres, &url), (&into_sqlite, &other_path)] {
        let error = outcome.clear_error();
        assert!(
            error.contains("not empty") && error.contains(target.as_str()),
            "the refusal names the target and why: {error}"
        );
    }
    assert!(
        into_postgres
            .stderr
            .contains("holds 2 users, 2 chats and 7 messages"),
        "{into_postgres:#?}"
    );
    assert_eq!(
        sqlite_rows(other.db_path()),
        other_before,
        "the SQLite target is unchanged"
    );
    let after = back_dir.path().join("after.db");
    copied(&copy(&url, after.to_str().expect("a UTF-8 path")));
    assert_eq!(
        sqlite_rows(&after),
        sqlite_rows(&before),
        "the PostgreSQL target is unchanged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_that_fails_half_way_leaves_the_target_empty() {
    // Arrange: a message whose time no PostgreSQL timestamp can take, after the users,
    // sessions and chats have been written.
    let Some(mut postgres) = TempPostgres::start() else {
        return;
    };
    let content = make_content().await;
    let broken = rusqlite::Connection::open(&content.db_path).expect("the database opens");
    broken
        .execute(
            "UPDATE chat_messages SET created_at = 'not a time' \
             WHERE id = (SELECT max(id) FROM chat_messages)",
            [],
        )
        .expect("a message is broken");
    let source = content.db_path.to_str().expect("a UTF-8 path").to_owned();
    let url = postgres.create_database();

    // Act
    let failed = copy(&source, &url);

    // Assert
    let error = failed.clear_error();
    assert!(
        error.contains("not a time"),
        "the error says what failed: {error}"
    );
    let back_dir = tempfile::tempdir().expect("a temporary folder");
    let back = back_dir.path().join("back.db");
    let outcome = copy(&url, back.to_str().expect("a UTF-8 path"));
    assert!(
        copied(&outcome).iter().all(|(_, rows)| *rows == 0),
        "nothing was kept: {outcome:#?}"
    );
}

#[test]
fn a_copy_into_a_new_file_that_fails_half_way_leaves_no_file() {
    // Arrange: a message whose text is not UTF-8, read after the users and chats.
    let source = crate::process::TempDb::new();
    source.create_user("ada");
    let chat = source.create_chat("ada");
    source
        .connection()
        .execute(
            "INSERT INTO chat_messages (chat_conversation_id, neptun_user_id, message, actor, \
             created_at) VALUES (?1, 'ada', CAST(x'ff' AS TEXT), 'user', '2026-01-02T03:04:05.006Z')",
            [chat],
        )
        .expect("a broken message is stored");
    let target_dir = tempfile::tempdir().expect("a temporary folder");
    let target = target_dir.path().join("copy.db");

    // Act
    let failed = copy(
        source.path().to_str().expect("a UTF-8 path"),
        target.to_str().expect("a UTF-8 path"),
    );

    // Assert
    failed.clear_error();
    let left: Vec<_> = std::fs::read_dir(target_dir.path())
        .expect("the folder is read")
        .map(|entry| entry.expect("an entry").file_name())
        .collect();
    assert!(left.is_empty(), "no file is left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chat_deleted_but_not_yet_purged_is_left_out_with_its_messages_and_its_owners_counts() {
    // Arrange: a chat as the deleting transaction leaves it, before the writer purges it.
    let Some(mut postgres) = TempPostgres::start() else {
        return;
    };
    let content = make_content().await;
    let conn = rusqlite::Connection::open(&content.db_path).expect("the database opens");
    conn.execute(
        "UPDATE chat_conversations SET deleted_at = '2026-01-02T03:04:05.006Z' WHERE id = ?1",
        [content.chat_id],
    )
    .expect("the chat is marked deleted");
    let source = content.db_path.to_str().expect("a UTF-8 path").to_owned();
    let url = postgres.create_database();

    // Act
    let outcome = copy(&source, &url);

    // Assert
    let counts = copied(&outcome);
    let rows = |table: &str| {
        counts
            .iter()
            .find(|(name, _)| name == table)
            .map(|(_, rows)| *rows)
    };
    assert_eq!(
        rows("chats"),
        Some(1),
        "only the other user's chat: {outcome:#?}"
    );
    assert_eq!(rows("messages"), Some(1), "only its message: {outcome:#?}");
    let still_there: i64 = conn
        .query_row(
            "SELECT count(*) FROM chat_messages WHERE chat_conversation_id = ?1",
            [content.chat_id],
            |row| row.get(0),
        )
        .expect("counted");
    assert_eq!(still_there, 6, "the copy ran before any purge");
    let check = run(neptun().args(["--database", &url, "check"]));
    assert_eq!(
        check.single_line(),
        "ok",
        "the storage counts fit the copied messages"
    );
}

/// The chats of [`copy_while_a_server_writes`]: two that get batches during the copy,
/// one after the other, and a large one between them in id order, so that a copy reads
/// them some time apart.
struct BusyChats {
    first: i64,
    large: i64,
    second: i64,
}

/// Makes [`BusyChats`] for `user_id` through the server at `address` (the large one
/// with 40 batches of 100 messages), then copies `source` to `target` while a client
/// keeps adding a batch of 100 to the first chat and then one to the second through
/// that server. The copy's outcome and the chats.
async fn copy_while_a_server_writes(
    address: &str,
    user_id: &str,
    token: &str,
    source: &str,
    target: &str,
) -> (Outcome, BusyChats) {
    let chats_url = format!("{address}/api/users/{user_id}/chats");
    let batch = |n: usize| {
        let batch: Vec<Value> = (0..100)
            .map(|i| json!({"content": format!("batch {n}, message {i}"), "role": "user"}))
            .collect();
        json!({"messages": batch})
    };
    let mut ids = Vec::new();
    for name in ["First", "Large", "Second"] {
        let body = json!({"name": name, "model": "test-model"});
        let response = send(
            reqwest::Method::POST,
            chats_url.clone(),
            Some(token),
            None,
            Some(&body),
        );
        ids.push(
            ok(response.await, "chat created").await["chat"]["id"]
                .as_i64()
                .expect("a chat id"),
        );
    }
    let chats = BusyChats {
        first: ids[0],
        large: ids[1],
        second: ids[2],
    };
    for n in 0..40 {
        let (url, body) = (format!("{chats_url}/{}/messages", chats.large), batch(n));
        let response = send(reqwest::Method::POST, url, Some(token), None, Some(&body));
        ok(response.await, "a batch stored").await;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stored = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let (stop, stored) = (std::sync::Arc::clone(&stop), std::sync::Arc::clone(&stored));
        let urls = [chats.first, chats.second].map(|chat| format!("{chats_url}/{chat}/messages"));
        let token = token.to_owned();
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = batch(1000 + stored.load(std::sync::atomic::Ordering::Relaxed));
                for url in &urls {
                    let response = send(
                        reqwest::Method::POST,
                        url.clone(),
                        Some(&token),
                        None,
                        Some(&body),
                    );
                    assert_eq!(
                        response.await.status().as_u16(),
                        200,
                        "a batch while copying"
                    );
                }
                stored.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    // The copy starts while batches keep coming.
    let deadline = Instant::now() + Duration::from_secs(20);
    while stored.load(std::sync::atomic::Ordering::Relaxed) < 3 {
        assert!(Instant::now() < deadline, "the writer stores batches");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = stored.load(std::sync::atomic::Ordering::Relaxed);
    let outcome = {
        let (source, target) = (source.to_owned(), target.to_owned());
        tokio::task::spawn_blocking(move || copy(&source, &target))
            .await
            .expect("the copy runs")
    };
    let during = stored.load(std::sync::atomic::Ordering::Relaxed) - before;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.expect("the writer ran");
    assert!(during > 0, "the server was written to during the copy");
    (outcome, chats)
}

/// The ids of `chat`'s messages in the SQLite database at `path`.
fn message_ids(path: &Path, chat: i64) -> Vec<i64> {
    let conn = rusqlite::Connection::open(path).expect("the database opens");
    let mut stmt = conn
        .prepare("SELECT id FROM chat_messages WHERE chat_conversation_id = ?1 ORDER BY id")
        .expect("the query prepares");
    stmt.query_map([chat], |row| row.get(0))
        .expect("the query runs")
        .collect::<Result<_, _>>()
        .expect("the ids are read")
}

/// Asserts that the copy holds the chats as they were at one moment: the large one
/// whole; the busy ones in whole batches, each the start of what the source holds now,
/// and the second at most one batch behind the first and never ahead, as the client
/// wrote them.
fn assert_one_moment(copied: &Path, source: &Path, chats: &BusyChats) {
    assert_eq!(
        message_ids(copied, chats.large).len(),
        4000,
        "the large chat whole"
    );
    let mut batches = Vec::new();
    for chat in [chats.first, chats.second] {
        let copied_ids = message_ids(copied, chat);
        let source_ids = message_ids(source, chat);
        assert_eq!(
            copied_ids.len() % 100,
            0,
            "whole batches only: {}",
            copied_ids.len()
        );
        assert_eq!(
            copied_ids[..],
            source_ids[..copied_ids.len()],
            "chat {chat} as it was at one moment"
        );
        batches.push(copied_ids.len() / 100);
    }
    assert!(
        batches[0] == batches[1] || batches[0] == batches[1] + 1,
        "both chats from the same moment: {batches:?} batches"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_of_an_sqlite_database_a_server_keeps_writing_to_is_one_snapshot_of_whole_batches() {
    // Arrange
    let Some(mut postgres) = TempPostgres::start() else {
        return;
    };
    let content = make_content().await;
    let source = content.db_path.to_str().expect("a UTF-8 path").to_owned();
    let url = postgres.create_database();

    // Act
    let (outcome, chats) = copy_while_a_server_writes(
        &content.address,
        &content.user_id,
        &content.token,
        &source,
        &url,
    )
    .await;

    // Assert
    copied(&outcome);
    let back_dir = tempfile::tempdir().expect("a temporary folder");
    let back = back_dir.path().join("back.db");
    copied(&copy(&url, back.to_str().expect("a UTF-8 path")));
    assert_one_moment(&back, &content.db_path, &chats);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_of_a_postgresql_database_a_server_keeps_writing_to_is_one_snapshot_of_whole_batches()
 {
    // Arrange: the content moved to PostgreSQL, and a server on it.
    let Some(mut postgres) = TempPostgres::start() else {
        return;
    };
    let content = make_content().await;
    let url = postgres.create_database();
    copied(&copy(content.db_path.to_str().expect("a UTF-8 path"), &url));
    let server = serve(url.parse().expect("a URL")).await;
    let back_dir = tempfile::tempdir().expect("a temporary folder");
    let back = back_dir.path().join("back.db");

    // Act
    let (outcome, chats) = copy_while_a_server_writes(
        &server,
        &content.user_id,
        &content.token,
        &url,
        back.to_str().expect("a UTF-8 path"),
    )
    .await;

    // Assert
    copied(&outcome);
    let after = back_dir.path().join("after.db");
    copied(&copy(&url, after.to_str().expect("a UTF-8 path")));
    assert_one_moment(&back, &after, &chats);
}
