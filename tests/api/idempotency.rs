//! `Idempotency-Key` on `POST .../messages`: a retry with the same key and body gets the
//! first answer byte for byte and stores nothing, also when retries race; a different
//! request with a used key is a 422; keys belong to one user, expire after 24 hours, are
//! not used up by failed requests, and are validated; `Db::purge_expired` drops the
//! expired ones.

use std::sync::Arc;

use neptun_chat::auth::SESSION_COOKIE;
use neptun_chat::db::{Db, Durability};
use reqwest::header::{CONTENT_TYPE, COOKIE, HeaderValue};
use serde_json::{Value, json};

use crate::database::Backend;
use crate::helpers::{TestApp, TestUser, assert_error, json_body, spawn_app};

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The response to a create-messages request, kept whole so two can be compared.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

impl Answer {
    async fn of(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.text().await.expect("a body");
        Answer {
            status,
            content_type,
            body,
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    /// The ids of the messages in a `chatMessage` or `chatMessages` answer.
    fn ids(&self) -> Vec<i64> {
        let body = self.json();
        match body.get("chatMessages") {
            Some(messages) => messages
                .as_array()
                .expect("chatMessages is an array")
                .iter()
                .map(|m| m["id"].as_i64().expect("an id"))
                .collect(),
            None => vec![body["chatMessage"]["id"].as_i64().expect("an id")],
        }
    }
}

/// POSTs `body` to `user`'s chat `chat_id` with the raw header value `key`.
async fn post_with_key(
    app: &TestApp,
    user: &TestUser,
    chat_id: i64,
    key: HeaderValue,
    body: &Value,
) -> reqwest::Response {
    post_text_with_key(app, user, chat_id, key, body.to_string()).await
}

/// POSTs the JSON text `body` to `user`'s chat `chat_id` with the raw header value `key`.
async fn post_text_with_key(
    app: &TestApp,
    user: &TestUser,
    chat_id: i64,
    key: HeaderValue,
    body: String,
) -> reqwest::Response {
    app.client
        .post(app.messages_url(&user.id, chat_id))
        .header(COOKIE, format!("{SESSION_COOKIE}={}", user.token))
        .header(CONTENT_TYPE, "application/json")
        .header(IDEMPOTENCY_KEY, key)
        .body(body)
        .send()
        .await
        .expect("the request is sent")
}

/// POSTs `body` to `user`'s own chat with the `Idempotency-Key` `key`.
async fn post_keyed(app: &TestApp, user: &TestUser, key: &str, body: &Value) -> reqwest::Response {
    let key = HeaderValue::from_str(key).expect("a valid header value");
    post_with_key(app, user, user.chat_id, key, body).await
}

/// The stored keys as `(user_id, key)`, read straight from the database.
fn stored_keys(app: &TestApp) -> Vec<(String, String)> {
    app.database
        .rows("SELECT user_id, key FROM idempotency_keys ORDER BY user_id, key")
        .into_iter()
        .map(|row| (row[0].clone().unwrap(), row[1].clone().unwrap()))
        .collect()
}

/// Moves the stored answer for `user_id`'s `key` `hours` into the past.
fn age_key(app: &TestApp, user_id: &str, key: &str, hours: i64) {
    let created_at = (chrono::Utc::now() - chrono::Duration::hours(hours))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let changed = app.database.rows(&format!(
        "UPDATE idempotency_keys SET created_at = '{created_at}' \
         WHERE user_id = '{user_id}' AND key = '{key}' RETURNING key"
    ));
    assert_eq!(
        changed.len(),
        1,
        "exactly one stored answer for {user_id}/{key}"
    );
}

fn batch_of(texts: &[&str]) -> Value {
    let messages: Vec<Value> = texts
        .iter()
        .map(|text| json!({"content": text, "role": "user"}))
        .collect();
    json!({"messages": messages})
}

#[tokio::test]
async fn a_retried_single_message_gets_the_first_answer_byte_for_byte_and_is_stored_once() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let body = json!({"message": "Hello once", "actor": "user"});
    let first = Answer::of(post_keyed(&app, &alice, "retry-1", &body).await).await;

    // Act
    let retry = Answer::of(post_keyed(&app, &alice, "retry-1", &body).await).await;

    // Assert
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(retry.status, 200, "{retry:?}");
    assert!(
        retry.content_type.starts_with("application/json"),
        "{retry:?}"
    );
    assert_eq!(retry.body, first.body, "byte-identical replay");
    assert_eq!(first.json()["chatMessage"]["message"], "Hello once");
    let id = first.ids()[0];
    assert_eq!(
        app.stored_messages(alice.chat_id),
        vec![(id, "Hello once".to_owned(), "user".to_owned())]
    );
}

#[tokio::test]
async fn a_retried_batch_gets_the_first_answer_byte_for_byte_and_is_stored_once() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let body = batch_of(&["one", "two", "three"]);
    let first = Answer::of(post_keyed(&app, &alice, "batch-key", &body).await).await;

    let retries = [
        Answer::of(post_keyed(&app, &alice, "batch-key", &body).await).await,
        Answer::of(post_keyed(&app, &alice, "batch-key", &body).await).await,
    ];

    assert_eq!(first.status, 200, "{first:?}");
    for retry in &retries {
        assert_eq!(retry.status, 200, "{retry:?}");
        assert_eq!(retry.body, first.body, "byte-identical replay");
    }
    let ids = first.ids();
    let stored: Vec<(i64, String)> = app
        .stored_messages(alice.chat_id)
        .into_iter()
        .map(|(id, text, _)| (id, text))
        .collect();
    assert_eq!(
        stored,
        vec![
            (ids[0], "one".to_owned()),
            (ids[1], "two".to_owned()),
            (ids[2], "three".to_owned()),
        ]
    );
}

#[tokio::test]
async fn requests_without_a_key_are_stored_every_time() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let body = json!({"message": "no key", "actor": "user"});

    let first = app.post_messages(&alice, &body).await;
    let second = app.post_messages(&alice, &body).await;

    assert_eq!(first.status().as_u16(), 200);
    assert_eq!(second.status().as_u16(), 200);
    assert_eq!(app.stored_messages(alice.chat_id).len(), 2);
    assert!(stored_keys(&app).is_empty(), "nothing kept without a key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_racing_identical_requests_with_one_key_store_exactly_one_batch() {
    // Arrange
    let app = Arc::new(spawn_app().await);
    let alice = Arc::new(app.seed_user("alice"));
    let body = Arc::new(batch_of(&["race a", "race b", "race c"]));

    // Act: all sixteen are in flight at once.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (app, alice, body) = (app.clone(), alice.clone(), body.clone());
        tasks.spawn(
            async move { Answer::of(post_keyed(&app, &alice, "racing", &body).await).await },
        );
    }
    let answers = tasks.join_all().await;

    // Assert
    assert_eq!(answers.len(), 16);
    for answer in &answers {
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body, answers[0].body, "all answers are identical");
    }
    let ids = answers[0].ids();
    let stored: Vec<i64> = app
        .stored_messages(alice.chat_id)
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(stored, ids, "exactly one batch stored, the one answered");
    assert_eq!(
        stored_keys(&app),
        vec![("alice".to_owned(), "racing".to_owned())]
    );
}

#[tokio::test]
async fn a_retry_that_differs_only_in_json_formatting_or_unknown_fields_replays() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let key = HeaderValue::from_static("fmt");
    let compact = r#"{"message":"same","actor":"user"}"#.to_owned();
    let reordered = "{\n  \"actor\": \"user\",\n  \"message\": \"same\",\n  \"client\": 1\n}";
    let first =
        Answer::of(post_text_with_key(&app, &alice, alice.chat_id, key.clone(), compact).await)
            .await;

    let retry = Answer::of(
        post_text_with_key(&app, &alice, alice.chat_id, key, reordered.to_owned()).await,
    )
    .await;

    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(retry.body, first.body);
    assert_eq!(app.stored_messages(alice.chat_id).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_requests_with_one_key_and_different_bodies_store_exactly_one_of_them() {
    // Arrange
    let app = Arc::new(spawn_app().await);
    let alice = Arc::new(app.seed_user("alice"));

    // Act
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (app, alice) = (app.clone(), alice.clone());
        tasks.spawn(async move {
            let body = json!({"message": format!("contender {i}"), "actor": "user"});
            Answer::of(post_keyed(&app, &alice, "contested", &body).await).await
        });
    }
    let answers = tasks.join_all().await;

    // Assert
    let winners: Vec<&Answer> = answers.iter().filter(|a| a.status == 200).collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    assert!(
        answers.iter().all(|a| a.status == 200 || a.status == 422),
        "{answers:?}"
    );
    let winner = winners[0].json();
    let stored = app.stored_messages(alice.chat_id);
    assert_eq!(
        stored,
        vec![(
            winner["chatMessage"]["id"].as_i64().unwrap(),
            winner["chatMessage"]["message"]
                .as_str()
                .unwrap()
                .to_owned(),
            "user".to_owned(),
        )]
    );
}

#[tokio::test]
async fn a_used_key_with_a_different_request_is_a_422_and_stores_nothing() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let other_chat = app.create_chat("alice");
    let single = json!({"message": "original", "actor": "user"});
    let batch = batch_of(&["first", "second"]);
    let first_single = post_keyed(&app, &alice, "single-key", &single).await;
    let first_batch = post_keyed(&app, &alice, "batch-key", &batch).await;
    assert_eq!(first_single.status().as_u16(), 200);
    assert_eq!(first_batch.status().as_u16(), 200);
    let before = app.stored_messages(alice.chat_id);
    let cases = [
        (
            "single-key",
            alice.chat_id,
            json!({"message": "changed", "actor": "user"}),
            "a different text",
        ),
        (
            "single-key",
            alice.chat_id,
            json!({"message": "original", "actor": "assistant"}),
            "a different role",
        ),
        (
            "single-key",
            alice.chat_id,
            batch_of(&["original"]),
            "the batch form of the same message",
        ),
        (
            "single-key",
            other_chat,
            single.clone(),
            "the same message to another chat",
        ),
        (
            "batch-key",
            alice.chat_id,
            batch_of(&["first"]),
            "a shorter batch",
        ),
        (
            "batch-key",
            alice.chat_id,
            batch_of(&["second", "first"]),
            "the batch in another order",
        ),
        (
            "batch-key",
            alice.chat_id,
            json!({"message": "first", "actor": "user"}),
            "the single form of the batch's first message",
        ),
        (
            "batch-key",
            alice.chat_id,
            batch_of(&["firs", "tsecond"]),
            "the same bytes split differently",
        ),
    ];

    for (key, chat_id, body, case) in cases {
        // Act
        let key_value = HeaderValue::from_static(key);
        let response = post_with_key(&app, &alice, chat_id, key_value, &body).await;

        // Assert
        let envelope = assert_error(response, 422, "Unprocessable Entity").await;
        assert_eq!(
            envelope["message"], "This Idempotency-Key was already used with a different request",
            "{case}"
        );
    }
    assert_eq!(app.stored_messages(alice.chat_id), before, "nothing stored");
    assert!(app.stored_messages(other_chat).is_empty(), "nothing stored");
}

#[tokio::test]
async fn keys_are_scoped_per_user_so_bob_may_use_alices_key_value() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let bob = app.seed_user("bob");
    let body = json!({"message": "same text", "actor": "user"});
    let alices = Answer::of(post_keyed(&app, &alice, "shared-value", &body).await).await;

    // Act
    let bobs = Answer::of(post_keyed(&app, &bob, "shared-value", &body).await).await;

    // Assert
    assert_eq!(alices.status, 200, "{alices:?}");
    assert_eq!(bobs.status, 200, "{bobs:?}");
    assert_eq!(bobs.json()["chatMessage"]["neptun_user_id"], "bob");
    assert_eq!(
        bobs.json()["chatMessage"]["chat_conversation_id"],
        bob.chat_id
    );
    assert_ne!(bobs.ids(), alices.ids());
    assert_eq!(app.stored_messages(alice.chat_id).len(), 1);
    assert_eq!(app.stored_messages(bob.chat_id).len(), 1);
    assert_eq!(
        stored_keys(&app),
        vec![
            ("alice".to_owned(), "shared-value".to_owned()),
            ("bob".to_owned(), "shared-value".to_owned()),
        ]
    );
}

#[tokio::test]
async fn a_key_with_a_different_body_from_another_user_is_not_a_conflict() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let bob = app.seed_user("bob");
    let first = post_keyed(&app, &alice, "k", &json!({"message": "a", "actor": "user"})).await;

    let bobs = post_keyed(&app, &bob, "k", &batch_of(&["b1", "b2"])).await;

    assert_eq!(first.status().as_u16(), 200);
    assert_eq!(bobs.status().as_u16(), 200);
    assert_eq!(app.stored_messages(bob.chat_id).len(), 2);
}

#[tokio::test]
async fn a_key_older_than_24_hours_no_longer_replays_and_the_request_is_stored_again() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let body = json!({"message": "daily report", "actor": "user"});
    let first = Answer::of(post_keyed(&app, &alice, "daily", &body).await).await;
    assert_eq!(first.status, 200, "{first:?}");
    age_key(&app, "alice", "daily", 25);

    // Act
    let later = Answer::of(post_keyed(&app, &alice, "daily", &body).await).await;
    let retry_of_later = Answer::of(post_keyed(&app, &alice, "daily", &body).await).await;

    // Assert
    assert_eq!(later.status, 200, "{later:?}");
    assert_ne!(later.ids(), first.ids(), "a new insert");
    assert_eq!(
        retry_of_later.body, later.body,
        "the new answer is kept for the key"
    );
    let ids: Vec<i64> = app
        .stored_messages(alice.chat_id)
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(ids, [first.ids()[0], later.ids()[0]]);
}

#[tokio::test]
async fn an_expired_key_may_be_reused_with_a_different_body() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let first = post_keyed(
        &app,
        &alice,
        "old",
        &json!({"message": "a", "actor": "user"}),
    )
    .await;
    assert_eq!(first.status().as_u16(), 200);
    age_key(&app, "alice", "old", 25);

    let response = post_keyed(&app, &alice, "old", &batch_of(&["new", "batch"])).await;

    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(app.stored_messages(alice.chat_id).len(), 3);
}

#[tokio::test]
async fn a_key_23_hours_old_still_replays() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let body = json!({"message": "still fresh", "actor": "user"});
    let first = Answer::of(post_keyed(&app, &alice, "fresh", &body).await).await;
    age_key(&app, "alice", "fresh", 23);

    let retry = Answer::of(post_keyed(&app, &alice, "fresh", &body).await).await;

    assert_eq!(retry.status, 200, "{retry:?}");
    assert_eq!(retry.body, first.body);
    assert_eq!(app.stored_messages(alice.chat_id).len(), 1);
}

#[tokio::test]
async fn a_failed_request_does_not_use_up_its_key() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let valid = json!({"message": "finally valid", "actor": "user"});
    let failures = [
        (
            "missing-chat",
            999_999,
            valid.clone(),
            404,
            "Not Found",
            "a chat that does not exist",
        ),
        (
            "bad-body",
            alice.chat_id,
            json!({"message": "", "actor": "user"}),
            400,
            "Bad Request. Invalid body(message | messages).",
            "an empty message",
        ),
        (
            "bad-role",
            alice.chat_id,
            json!({"message": "finally valid", "actor": "robot"}),
            400,
            "Bad Request. Invalid body(message | messages).",
            "an unknown role",
        ),
    ];

    for (key, chat_id, body, status, status_message, case) in failures {
        // Act
        let failed =
            post_with_key(&app, &alice, chat_id, HeaderValue::from_static(key), &body).await;
        let later = post_keyed(&app, &alice, key, &valid).await;

        // Assert
        assert_error(failed, status, status_message).await;
        assert_eq!(later.status().as_u16(), 200, "after {case}");
        let stored = json_body(later).await;
        assert_eq!(stored["chatMessage"]["message"], "finally valid", "{case}");
    }
    assert_eq!(app.stored_messages(alice.chat_id).len(), 3);
}

#[tokio::test]
async fn a_422_does_not_replace_the_kept_answer() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let body = json!({"message": "kept", "actor": "user"});
    let first = Answer::of(post_keyed(&app, &alice, "k", &body).await).await;
    let conflict = post_keyed(
        &app,
        &alice,
        "k",
        &json!({"message": "other", "actor": "user"}),
    )
    .await;

    let retry = Answer::of(post_keyed(&app, &alice, "k", &body).await).await;

    assert_eq!(conflict.status().as_u16(), 422);
    assert_eq!(retry.status, 200);
    assert_eq!(retry.body, first.body);
    assert_eq!(app.stored_messages(alice.chat_id).len(), 1);
}

#[tokio::test]
async fn invalid_keys_are_a_400_and_store_nothing() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let too_long = "k".repeat(256);
    let cases: [(HeaderValue, &str); 7] = [
        (HeaderValue::from_static(""), "an empty key"),
        (HeaderValue::from_str(&too_long).unwrap(), "256 characters"),
        (
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
            "UTF-8 beyond ASCII",
        ),
        (
            HeaderValue::from_bytes(b"key\xff").unwrap(),
            "a raw high byte",
        ),
        (HeaderValue::from_bytes(b"a\tb").unwrap(), "a tab inside"),
        (
            HeaderValue::from_bytes(b"\x80").unwrap(),
            "a lone high byte",
        ),
        (
            HeaderValue::from_bytes("ключ".as_bytes()).unwrap(),
            "Cyrillic letters",
        ),
    ];

    for (key, case) in cases {
        // Act
        let response = post_with_key(
            &app,
            &alice,
            alice.chat_id,
            key,
            &json!({"message": "hi", "actor": "user"}),
        )
        .await;

        // Assert
        let envelope = assert_error(
            response,
            400,
            "Bad Request. Invalid header(Idempotency-Key).",
        )
        .await;
        assert_eq!(
            envelope["message"], "Idempotency-Key must be 1 to 255 printable ASCII characters",
            "{case}"
        );
    }
    assert!(app.stored_messages(alice.chat_id).is_empty());
    assert!(stored_keys(&app).is_empty());
}

#[tokio::test]
async fn a_key_of_exactly_255_printable_characters_with_spaces_and_symbols_is_accepted() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let printable: String = (0x21u8..=0x7E).map(char::from).collect();
    let key = format!("a b{printable}")
        .chars()
        .cycle()
        .take(255)
        .collect::<String>();
    assert_eq!(key.len(), 255);
    let body = json!({"message": "long key", "actor": "user"});

    let first = Answer::of(post_keyed(&app, &alice, &key, &body).await).await;
    let retry = Answer::of(post_keyed(&app, &alice, &key, &body).await).await;

    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(retry.body, first.body);
    assert_eq!(stored_keys(&app), vec![("alice".to_owned(), key)]);
}

#[tokio::test]
async fn keys_differing_only_in_case_are_different_keys() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let body = json!({"message": "case", "actor": "user"});

    let lower = post_keyed(&app, &alice, "abc", &body).await;
    let upper = post_keyed(&app, &alice, "ABC", &body).await;

    assert_eq!(lower.status().as_u16(), 200);
    assert_eq!(upper.status().as_u16(), 200);
    assert_eq!(app.stored_messages(alice.chat_id).len(), 2);
}

#[tokio::test]
async fn purge_expired_deletes_keys_older_than_24_hours_and_keeps_fresh_ones() {
    // Arrange: two kept answers, one of them 25 hours old.
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let old_body = json!({"message": "old", "actor": "user"});
    let fresh_body = json!({"message": "fresh", "actor": "user"});
    assert_eq!(
        post_keyed(&app, &alice, "old", &old_body).await.status(),
        200
    );
    let fresh = Answer::of(post_keyed(&app, &alice, "fresh", &fresh_body).await).await;
    age_key(&app, "alice", "old", 25);
    let db = Db::open(&app.database.location(), Durability::Full)
        .await
        .expect("a second handle opens");

    // Act
    let purged = db.purge_expired().await.expect("the purge runs");

    // Assert
    assert_eq!(purged, 1, "one expired key, no expired session");
    assert_eq!(
        stored_keys(&app),
        vec![("alice".to_owned(), "fresh".to_owned())]
    );
    let retry = Answer::of(post_keyed(&app, &alice, "fresh", &fresh_body).await).await;
    assert_eq!(retry.body, fresh.body, "the fresh key still replays");
    db.close().await.expect("the second handle closes");
}

#[tokio::test]
async fn a_damaged_stored_request_hash_is_a_500_not_a_different_request() {
    // Arrange: a kept key whose stored hash was cut short (a damaged row).
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let body = json!({"message": "once", "actor": "user"});
    assert_eq!(post_keyed(&app, &alice, "k", &body).await.status(), 200);
    // PostgreSQL's schema checks the hash's length, so the damage there takes the
    // check away first, as a hand-edited database might.
    let damage = format!(
        "UPDATE idempotency_keys SET request_hash = {}",
        app.database.blob(&[1, 2])
    );
    app.database.execute_each(
        &damage,
        &format!(
            "ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_request_hash_check; \
             {damage}"
        ),
    );

    // Act
    let retry = post_keyed(&app, &alice, "k", &body).await;

    // Assert: neither a 422 (the request is the same) nor a second copy.
    assert_error(retry, 500, "Internal Server Error").await;
    assert_eq!(app.stored_messages(alice.chat_id).len(), 1);
}

#[tokio::test]
async fn a_key_keeps_a_few_bytes_however_large_its_answer_and_still_replays_it_exactly() {
    // Arrange: a batch of 1 MiB of text.
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let big = "x".repeat(256 * 1024);
    let body = batch_of(&[big.as_str(), big.as_str(), big.as_str(), big.as_str()]);
    let first = Answer::of(post_keyed(&app, &alice, "big", &body).await).await;
    assert_eq!(first.status, 200, "{first:?}");

    // Act
    let retry = Answer::of(post_keyed(&app, &alice, "big", &body).await).await;

    // Assert: the same answer, rendered from the messages; the key holds their ids.
    assert_eq!(retry.body, first.body, "byte-identical replay");
    assert_eq!(app.stored_messages(alice.chat_id).len(), 4);
    // A timestamp is its text in SQLite, 8 bytes in PostgreSQL.
    let size = match app.database.backend() {
        Backend::Sqlite => {
            "SELECT length(CAST(user_id AS BLOB)) + length(CAST(key AS BLOB)) \
             + length(request_hash) + length(CAST(created_at AS BLOB)) + 3 * 8 \
             FROM idempotency_keys"
        }
        Backend::Postgres => {
            "SELECT octet_length(user_id) + octet_length(key) + octet_length(request_hash) \
             + 8 + 3 * 8 FROM idempotency_keys"
        }
    };
    let kept = app.database.integer(size);
    assert!(kept < 100, "a key keeps {kept} bytes");
    let ids = first.ids();
    let columns = app
        .database
        .rows("SELECT first_message_id, last_message_id, message_count FROM idempotency_keys");
    assert_eq!(columns, [[ids[0], ids[3], 4].map(|n| Some(n.to_string()))]);
}

#[tokio::test]
async fn a_retry_after_its_messages_were_deleted_is_a_409_and_stores_nothing() {
    // Arrange: the keyed messages are the last turn, which is then deleted.
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let body = batch_of(&["one", "two"]);
    assert_eq!(post_keyed(&app, &alice, "gone", &body).await.status(), 200);
    let last = format!("/api/users/alice/chats/{}/messages/last", alice.chat_id);
    let deleted = app.delete(&last, Some(&alice.token), None).await;
    assert_eq!(deleted.status(), 200);

    // Act
    let retry = post_keyed(&app, &alice, "gone", &body).await;

    // Assert
    let envelope = assert_error(retry, 409, "Conflict").await;
    assert_eq!(
        envelope["message"],
        "The messages stored with this Idempotency-Key have been deleted since"
    );
    assert_eq!(app.stored_messages(alice.chat_id), []);
}
