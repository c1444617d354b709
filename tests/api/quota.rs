//! The per-user storage quota (`--max-user-messages`, `--max-user-bytes`): off by
//! default; past it a write is a 403 with the JSON envelope and stores nothing; it is
//! checked inside the write transaction, so racing writes cannot pass it together; and
//! deleting messages makes room again.

use neptun_chat::cli::Cli;
use neptun_chat::config::{Quota, Settings};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_error, json_body, spawn_app_with_settings};

async fn spawn_app_with_quota(quota: Quota) -> TestApp {
    spawn_app_with_settings(Settings {
        quota,
        ..Settings::default()
    })
    .await
}

fn batch_of(texts: &[&str]) -> Value {
    let messages: Vec<Value> = texts
        .iter()
        .map(|text| json!({"role": "user", "content": text}))
        .collect();
    json!({ "messages": messages })
}

async fn post_batch(app: &TestApp, user: &TestUser, texts: &[&str]) -> reqwest::Response {
    app.post_messages(user, &batch_of(texts)).await
}

/// The user's storage counts as the database keeps them.
fn stored_counts(app: &TestApp, user_id: &str) -> (i64, i64) {
    let row = app.database.row(&format!(
        "SELECT stored_messages, stored_bytes FROM users WHERE id = '{user_id}'"
    ));
    let number = |i: usize| row[i].as_deref().unwrap().parse().unwrap();
    (number(0), number(1))
}

#[tokio::test]
async fn a_write_past_the_message_quota_is_a_403_that_stores_nothing() {
    // Arrange: room for three messages; two are stored.
    let app = spawn_app_with_quota(Quota {
        max_messages: Some(3),
        max_bytes: None,
    })
    .await;
    let alice = app.seed_user("alice");
    assert_eq!(post_batch(&app, &alice, &["a", "b"]).await.status(), 200);

    // Act: two more would make four.
    let refused = post_batch(&app, &alice, &["c", "d"]).await;

    // Assert
    let body = assert_error(refused, 403, "Forbidden. Storage quota exceeded.").await;
    assert_eq!(
        body["message"],
        "Not stored: a user may keep at most 3 messages; delete messages to make room"
    );
    assert_eq!(app.stored_messages(alice.chat_id).len(), 2);
    // Exactly up to the limit is fine.
    let third = post_batch(&app, &alice, &["c"]).await;
    assert_eq!(third.status(), 200);
    assert_eq!(app.stored_messages(alice.chat_id).len(), 3);
    assert_eq!(stored_counts(&app, "alice"), (3, 3));
}

#[tokio::test]
async fn the_byte_quota_counts_utf8_bytes_of_message_text() {
    let app = spawn_app_with_quota(Quota {
        max_messages: None,
        max_bytes: Some(10),
    })
    .await;
    let alice = app.seed_user("alice");
    // "héllo" is 5 characters and 6 bytes.
    assert_eq!(post_batch(&app, &alice, &["héllo"]).await.status(), 200);

    let refused = post_batch(&app, &alice, &["abcde"]).await;
    let accepted = post_batch(&app, &alice, &["abcd"]).await;

    let body = assert_error(refused, 403, "Forbidden. Storage quota exceeded.").await;
    assert_eq!(
        body["message"],
        "Not stored: a user may keep at most 10 bytes of message text; delete messages to make room"
    );
    assert_eq!(accepted.status(), 200);
    assert_eq!(stored_counts(&app, "alice"), (2, 10));
}

#[tokio::test]
async fn racing_writes_cannot_pass_the_quota_together() {
    // Arrange
    let app = spawn_app_with_quota(Quota {
        max_messages: Some(5),
        max_bytes: None,
    })
    .await;
    let alice = app.seed_user("alice");

    // Act: sixteen single messages at once.
    let mut tasks = Vec::new();
    let app = std::sync::Arc::new(app);
    let alice = std::sync::Arc::new(alice);
    for i in 0..16 {
        let (app, alice) = (app.clone(), alice.clone());
        tasks.push(tokio::spawn(async move {
            app.post_messages(
                &alice,
                &json!({"message": format!("m{i}"), "actor": "user"}),
            )
            .await
            .status()
            .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }

    // Assert
    statuses.sort_unstable();
    assert_eq!(statuses, [[200; 5].as_slice(), &[403; 11]].concat());
    assert_eq!(app.stored_messages(alice.chat_id).len(), 5);
}

#[tokio::test]
async fn the_quota_is_per_user_and_deleting_messages_makes_room() {
    let app = spawn_app_with_quota(Quota {
        max_messages: Some(2),
        max_bytes: None,
    })
    .await;
    let alice = app.seed_user("alice");
    let bob = app.seed_user("bob");
    assert_eq!(post_batch(&app, &alice, &["a", "b"]).await.status(), 200);
    assert_eq!(post_batch(&app, &alice, &["c"]).await.status(), 403);

    // Bob has his own room.
    assert_eq!(post_batch(&app, &bob, &["x", "y"]).await.status(), 200);
    // Deleting alice's last turn (her two trailing user messages) frees hers.
    let deleted = app
        .delete(
            &format!("/api/users/alice/chats/{}/messages/last", alice.chat_id),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(
        json_body(deleted).await["deleted"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(stored_counts(&app, "alice"), (0, 0));
    assert_eq!(post_batch(&app, &alice, &["c", "d"]).await.status(), 200);

    // Deleting a chat frees its messages too.
    let chats = format!("/api/users/{}/chats", bob.id);
    let deleted = app
        .delete(
            &chats,
            Some(&bob.token),
            Some(&json!({"chat_ids": [bob.chat_id]})),
        )
        .await;
    assert_eq!(deleted.status(), 200);
    assert_eq!(stored_counts(&app, "bob"), (0, 0));
}

#[tokio::test]
async fn without_a_quota_a_user_may_store_as_much_as_they_like() {
    let app = spawn_app_with_settings(Settings::default()).await;
    let alice = app.seed_user("alice");
    let texts: Vec<String> = (0..1000).map(|i| format!("message {i}")).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();

    for _ in 0..3 {
        assert_eq!(post_batch(&app, &alice, &texts).await.status(), 200);
    }

    assert_eq!(app.stored_messages(alice.chat_id).len(), 3000);
    assert_eq!(stored_counts(&app, "alice").0, 3000);
}

#[test]
fn the_quota_options_reach_the_settings_and_zero_is_refused() {
    let parse = |args: &[&str]| Cli::try_parse_checked_from([&["neptun-chat"], args].concat());
    let quota = |cli: Cli| cli.serve.settings(&cli.database).quota;

    let none = quota(parse(&[]).unwrap());
    let both = quota(parse(&["--max-user-messages", "100", "--max-user-bytes", "4096"]).unwrap());

    assert_eq!(none, Quota::default(), "off by default");
    assert_eq!(
        both,
        Quota {
            max_messages: Some(100),
            max_bytes: Some(4096)
        }
    );
    for zero in ["--max-user-messages", "--max-user-bytes"] {
        let err = parse(&[zero, "0"]).unwrap_err().to_string();
        assert!(err.contains(zero), "{zero}: {err}");
    }
}

#[tokio::test]
async fn the_api_document_says_a_create_may_be_refused_for_the_quota() {
    let app = spawn_app_with_settings(Settings::default()).await;

    let document = json_body(app.get("/openapi.json", None).await).await;

    let create = &document["paths"]["/api/users/{user_id}/chats/{chat_id}/messages"]["post"];
    let forbidden = create["responses"]["403"]["description"].as_str().unwrap();
    assert!(forbidden.contains("storage quota"), "{forbidden}");
    assert!(forbidden.contains("another user"), "{forbidden}");
}
