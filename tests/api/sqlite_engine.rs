//! Behaviour whose cause or subject is SQLite's engine rather than a file: another
//! connection holding SQLite's write lock past the busy timeout, the writer thread's
//! bounded queue and its closing, constraint failures injected with SQLite triggers,
//! and `PRAGMA user_version`. Only the SQLite test binary runs these; PostgreSQL has
//! neither this lock nor this writer.

use std::time::{Duration, Instant};

use actix_web::ResponseError;
use neptun_chat::auth::SessionToken;
use neptun_chat::config::Settings;
use neptun_chat::db::{Db, Durability, Location};
use neptun_chat::domain::{NewMessage, Role, SessionClaim};
use neptun_chat::error::ApiError;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, RETRY_AFTER};
use serde_json::json;

use crate::helpers::{TestApp, assert_error, json_body, spawn_app, spawn_app_with_settings};

/// A valid one-message body.
const VALID_SINGLE: &str = r#"{"message":"hi","actor":"user"}"#;

/// A server whose statements wait at most 200 ms for a lock another connection holds.
async fn spawn_app_with_a_short_busy_timeout() -> TestApp {
    spawn_app_with_settings(Settings {
        busy_timeout: Duration::from_millis(200),
        ..Settings::default()
    })
    .await
}

/// The number of rows in `table`.
fn count(app: &TestApp, table: &str) -> i64 {
    app.database.count(table)
}

#[tokio::test]
async fn with_the_write_queue_full_401_and_403_still_come_before_503() {
    // Arrange: a queue of one, and the database's write lock held from outside, so the
    // writer is stuck on its first write (for up to its 5 s busy timeout) and the next
    // write fills the queue.
    let app = spawn_app_with_settings(neptun_chat::config::Settings {
        write_queue: 1,
        ..Default::default()
    })
    .await;
    let alice = app.seed_user("alice");
    let bob = app.seed_user("bob");
    let lock = rusqlite::Connection::open(app.db_path()).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let url = app.messages_url("alice", alice.chat_id);
    let post = |token: String| {
        let client = app.client.clone();
        let url = url.clone();
        async move {
            client
                .post(url)
                .header(COOKIE, format!("neptun-session={token}"))
                .header(CONTENT_TYPE, "application/json")
                .body(VALID_SINGLE)
                .timeout(std::time::Duration::from_millis(300))
                .send()
                .await
        }
    };
    // Writes that stay unanswered are held by the writer or wait in the queue; once
    // one is refused at once, the queue is full.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let refused = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the queue never filled"
        );
        if let Ok(response) = post(alice.token.clone()).await {
            break response;
        }
    };
    assert_eq!(refused.status().as_u16(), 503);
    assert!(refused.headers().contains_key("retry-after"));

    // Act
    let unknown = post(SessionToken::generate().unwrap().expose().to_owned())
        .await
        .unwrap();
    let other_user = post(bob.token.clone()).await.unwrap();
    let live = post(alice.token.clone()).await.unwrap();

    // Assert
    lock.execute_batch("ROLLBACK").unwrap();
    assert_error(unknown, 401, "Unauthorized").await;
    assert_error(other_user, 403, "Forbidden").await;
    assert_error(live, 503, "Service Unavailable").await;
}

#[tokio::test]
async fn a_write_while_another_connection_holds_the_lock_past_the_busy_timeout_is_a_503_with_retry_after()
 {
    // Arrange: another connection (as an admin command or a backup would) holds the
    // write lock for longer than the server's busy timeout.
    let app = spawn_app_with_a_short_busy_timeout().await;
    let alice = app.seed_user("alice");
    let holder = rusqlite::Connection::open(app.db_path()).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();

    // Act
    let started = Instant::now();
    let refused = app
        .post_messages(&alice, &json!({"message": "hi", "actor": "user"}))
        .await;
    let waited = started.elapsed();

    // Assert: unavailable, come back later; and nothing was stored.
    assert_eq!(
        refused
            .headers()
            .get(RETRY_AFTER)
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    let body = assert_error(refused, 503, "Service Unavailable").await;
    assert_eq!(body["message"], "The database is not available");
    assert!(
        waited >= Duration::from_millis(200),
        "answered after {waited:?}, before the busy timeout ran out"
    );
    holder.execute_batch("ROLLBACK").unwrap();
    assert_eq!(app.stored_messages(alice.chat_id), []);

    // Once the lock is released, the same writer stores the retry.
    let retried = app
        .post_messages(&alice, &json!({"message": "hi", "actor": "user"}))
        .await;
    assert_eq!(retried.status().as_u16(), 200);
    let stored = json_body(retried).await;
    assert_eq!(stored["chatMessage"]["message"], "hi");
    assert_eq!(app.stored_messages(alice.chat_id).len(), 1);
}

#[tokio::test]
async fn a_busy_database_is_counted_in_the_busy_metric() {
    let app = spawn_app_with_a_short_busy_timeout().await;
    let alice = app.seed_user("alice");
    let busy_total = |metrics: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("neptun_db_busy_total "))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    };
    let before = busy_total(&app.get("/metrics", None).await.text().await.unwrap());
    let holder = rusqlite::Connection::open(app.db_path()).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();

    let refused = app
        .post_messages(&alice, &json!({"message": "hi", "actor": "user"}))
        .await;

    assert_eq!(refused.status().as_u16(), 503);
    holder.execute_batch("ROLLBACK").unwrap();
    let after = busy_total(&app.get("/metrics", None).await.text().await.unwrap());
    // The recorder is shared by every test in this binary: others may count too.
    assert!(after > before, "neptun_db_busy_total {before} -> {after}");
}

#[tokio::test]
async fn a_sign_up_breaking_another_constraint_is_a_500_not_a_409() {
    // Each trigger makes the sign-up's insert break a constraint other than a unique
    // one, as a bug or a damaged database would.
    let cases = [
        (
            "a foreign key",
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) \
             VALUES (x'00', 'nobody', 'now', 'now');",
        ),
        (
            "NOT NULL",
            "INSERT INTO chat_conversations (neptun_user_id, name, model, created_at, updated_at) \
             VALUES (NEW.id, NULL, 'm', 'now', 'now');",
        ),
        (
            "a CHECK",
            "INSERT INTO chat_conversations (neptun_user_id, name, model, created_at, updated_at) \
             VALUES (NEW.id, 'c', 'm', 'now', 'now'); \
             INSERT INTO chat_messages (chat_conversation_id, neptun_user_id, message, actor, created_at) \
             VALUES (last_insert_rowid(), NEW.id, 'x', 'robot', 'now');",
        ),
    ];
    for (case, body) in cases {
        // Arrange
        let app = spawn_app().await;
        rusqlite::Connection::open(app.db_path())
            .unwrap()
            .execute_batch(&format!(
                "CREATE TRIGGER break_sign_up AFTER INSERT ON users BEGIN {body} END;"
            ))
            .unwrap();

        // Act
        let response = app
            .post_json(
                "/api/auth/sign-up",
                None,
                &json!({"email": "ada@example.org", "password": "a long password"}),
            )
            .await;

        // Assert
        let envelope = assert_error(response, 500, "Internal Server Error").await;
        assert_eq!(
            envelope["message"], "Something went wrong on our side",
            "{case}"
        );
        assert_eq!(
            count(&app, "users"),
            0,
            "{case}: the sign-up was rolled back"
        );
    }
}

#[tokio::test]
async fn a_write_after_the_writer_stopped_is_unavailable_not_a_failure() {
    // Arrange: a database whose writer has been closed, as at shutdown.
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(
        &Location::Sqlite(dir.path().join("neptun.db")),
        Durability::Full,
    )
    .await
    .unwrap();
    db.close().await.unwrap();

    // Act
    let err = db
        .append_messages(
            SessionClaim {
                user_id: "alice".to_owned(),
                token_hash: [0; 32],
            },
            1,
            vec![NewMessage {
                content: "hi".to_owned(),
                role: Role::User,
            }],
            None,
        )
        .await
        .unwrap_err();

    // Assert
    assert!(err.is_writer_gone(), "{err:?}");
    let response = ApiError::from(err).error_response();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
}

#[tokio::test]
async fn readyz_is_a_503_while_the_schema_version_was_changed_by_someone_else() {
    // Arrange: another program marks the file as a newer schema under the server.
    let app = spawn_app().await;
    assert_eq!(app.get("/readyz", None).await.status(), StatusCode::OK);
    let conn = rusqlite::Connection::open(app.db_path()).expect("the database opens");
    let original: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version");
    conn.pragma_update(None, "user_version", 99)
        .expect("user_version is set");

    // Act
    let not_ready = app.get("/readyz", None).await;
    conn.pragma_update(None, "user_version", original)
        .expect("user_version is restored");
    let ready_again = app.get("/readyz", None).await;

    // Assert
    let envelope = assert_error(not_ready, 503, "Service Unavailable").await;
    assert_eq!(envelope["message"], "The database is not available");
    assert!(
        !envelope.to_string().contains("99"),
        "the cause stays in the log: {envelope}"
    );
    assert_eq!(ready_again.status(), StatusCode::OK);
}
