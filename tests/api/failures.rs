//! Failing honestly: a database that cannot serve now is a 503 with `Retry-After`, not a
//! 500; only a taken unique value is a 409, and it says which; other constraint failures
//! are 500s. Faults are injected with raw SQL on the test's own connection.

use std::time::{Duration, Instant};

use actix_web::ResponseError;
use neptun_chat::config::Settings;
use neptun_chat::db::Location;
use neptun_chat::db::{Db, Durability};
use neptun_chat::domain::{NewMessage, Role, SessionClaim};
use neptun_chat::error::ApiError;
use reqwest::header::RETRY_AFTER;
use serde_json::json;

use crate::helpers::{TestApp, assert_error, json_body, spawn_app, spawn_app_with_settings};
use crate::process::TempDb;

/// A server whose statements wait at most 200 ms for a lock another connection holds.
async fn spawn_app_with_a_short_busy_timeout() -> TestApp {
    spawn_app_with_settings(Settings {
        busy_timeout: Duration::from_millis(200),
        ..Settings::default()
    })
    .await
}

fn count(app: &TestApp, table: &str) -> i64 {
    rusqlite::Connection::open(&app.db_path)
        .unwrap()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn a_write_while_another_connection_holds_the_lock_past_the_busy_timeout_is_a_503_with_retry_after()
 {
    // Arrange: another connection (as an admin command or a backup would) holds the
    // write lock for longer than the server's busy timeout.
    let app = spawn_app_with_a_short_busy_timeout().await;
    let alice = app.seed_user("alice");
    let holder = rusqlite::Connection::open(&app.db_path).unwrap();
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
    let holder = rusqlite::Connection::open(&app.db_path).unwrap();
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
async fn a_sign_up_with_a_taken_email_is_a_409_that_names_the_email() {
    let app = spawn_app().await;
    app.sign_up("ada@example.org", "a long password").await;

    let response = app
        .post_json(
            "/api/auth/sign-up",
            None,
            &json!({"email": "ada@example.org", "password": "another password"}),
        )
        .await;

    let body = assert_error(response, 409, "Conflict").await;
    assert_eq!(body["message"], "A user with this email already exists");
    assert_eq!(count(&app, "users"), 1);
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
        rusqlite::Connection::open(&app.db_path)
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

#[test]
fn user_create_with_a_taken_id_or_email_says_which_is_taken() {
    let db = TempDb::new();
    db.cli(&["user", "create", "alice", "--email", "alice@example.com"])
        .single_line();
    let cases: [(&[&str], &str, &str); 2] = [
        (
            &["user", "create", "alice", "--email", "other@example.com"],
            "a user with id \"alice\" already exists",
            "email",
        ),
        (
            &["user", "create", "bob", "--email", "ALICE@example.com"],
            "a user with the email \"alice@example.com\" already exists",
            "id",
        ),
    ];

    for (args, says, not) in cases {
        let outcome = db.cli(args);

        let error = outcome.clear_error();
        assert!(error.contains(says), "{args:?}: {error}");
        assert!(!error.contains(not), "{args:?} mentions {not}: {error}");
    }
    assert_eq!(db.count("users"), 1);
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
