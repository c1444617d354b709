//! `GET /api/users/{user_id}/events`: the Server-Sent Events stream of a user's changes,
//! read with a real SSE parser (eventsource-stream) over reqwest's byte stream.

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use neptun_chat::auth::{SESSION_COOKIE, hash_token};
use neptun_chat::config::{EventSettings, Settings};
use reqwest::header::COOKIE;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_error, spawn_app, spawn_app_with_settings};

/// How long a test waits for one event before it fails.
const PATIENCE: Duration = Duration::from_secs(10);

type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// An open events stream.
struct Sse {
    events: Events,
}

impl Sse {
    /// The next event (not a heartbeat), or `None` once the stream has ended.
    async fn next(&mut self) -> Option<Event> {
        match tokio::time::timeout(PATIENCE, self.events.next()).await {
            Ok(Some(Ok(event))) => Some(event),
            Ok(Some(Err(err))) => panic!("the stream failed: {err}"),
            Ok(None) => None,
            Err(_) => panic!("no event within {PATIENCE:?}"),
        }
    }

    /// The next event, which must be of `kind`; its data.
    async fn expect(&mut self, kind: &str) -> (String, Value) {
        let event = self.next().await.expect("another event");
        assert_eq!(event.event, kind, "event {event:?}");
        let data = serde_json::from_str(&event.data).expect("JSON data");
        (event.id, data)
    }

    /// Asserts that the stream ends within [`PATIENCE`] without another event.
    async fn expect_end(&mut self) {
        if let Some(event) = self.next().await {
            panic!("expected the end of the stream, got {event:?}");
        }
    }
}

/// Sends `GET .../events{query}` for `user` with `token`, and `Last-Event-ID` if given.
async fn request(
    app: &TestApp,
    user: &str,
    token: Option<&str>,
    query: &str,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .get(format!("{}/api/users/{user}/events{query}", app.address));
    if let Some(token) = token {
        request = request.header(COOKIE, format!("{SESSION_COOKIE}={token}"));
    }
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    request.send().await.expect("the request is sent")
}

/// Opens `user`'s events stream, expecting 200 and `text/event-stream`.
async fn open(app: &TestApp, user: &TestUser, query: &str, last_event_id: Option<&str>) -> Sse {
    let response = request(app, &user.id, Some(&user.token), query, last_event_id).await;
    assert_eq!(response.status().as_u16(), 200, "opening the events stream");
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    Sse {
        events: Box::pin(response.bytes_stream().eventsource()),
    }
}

/// Posts one message to `chat` of `user`; its id.
async fn post(app: &TestApp, user: &TestUser, chat: i64, text: &str) -> i64 {
    let response = app
        .post_json(
            &format!("/api/users/{}/chats/{chat}/messages", user.id),
            Some(&user.token),
            &json!({"message": text, "actor": "user"}),
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    body["chatMessage"]["id"].as_i64().unwrap()
}

/// Posts a batch of `texts` to `chat` of `user`; their ids.
async fn post_batch(app: &TestApp, user: &TestUser, chat: i64, texts: &[&str]) -> Vec<i64> {
    let messages: Vec<Value> = texts
        .iter()
        .map(|text| json!({"content": text, "role": "assistant"}))
        .collect();
    let response = app
        .post_json(
            &format!("/api/users/{}/chats/{chat}/messages", user.id),
            Some(&user.token),
            &json!({ "messages": messages }),
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    crate::helpers::chat_message_ids(&body)
}

/// Opens a stream of all `user`'s events and makes sure the server follows it: a chat
/// created by the CLI's code (another process's way in, seen by polling on SQLite and
/// by NOTIFY on PostgreSQL) arrives as its first event.
async fn open_live(app: &TestApp, user: &TestUser) -> Sse {
    let mut sse = open(app, user, "", None).await;
    let marker = app.create_chat(&user.id);
    let (_, data) = sse.expect("chat_created").await;
    assert_eq!(data["chat"]["id"], marker);
    sse
}

#[tokio::test]
async fn single_messages_and_batches_arrive_live_in_order_each_its_own_event() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let mut sse = open_live(&app, &alice).await;

    let first = post(&app, &alice, alice.chat_id, "hello").await;
    let batch = post_batch(&app, &alice, alice.chat_id, &["one", "two", "three"]).await;

    let (id, data) = sse.expect("message").await;
    assert_eq!(data["message"]["id"], first);
    assert_eq!(data["message"]["message"], "hello");
    assert_eq!(data["message"]["actor"], "user");
    assert_eq!(data["message"]["chat_conversation_id"], alice.chat_id);
    assert!(id.ends_with(&format!(".{first}")), "id {id}");
    let mut batch_change = None;
    for (expected_id, text) in batch.iter().zip(["one", "two", "three"]) {
        let (id, data) = sse.expect("message").await;
        assert_eq!(data["message"]["id"], *expected_id);
        assert_eq!(data["message"]["message"], text);
        assert_eq!(data["message"]["actor"], "assistant");
        let (change, message) = id.split_once('.').expect("N.M");
        assert_eq!(message, expected_id.to_string());
        // One change: the batch.
        assert_eq!(*batch_change.get_or_insert(change.to_owned()), change);
    }
}

#[tokio::test]
async fn every_kind_of_change_is_an_event() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let mut sse = open_live(&app, &alice).await;
    let chats = format!("/api/users/{}/chats", alice.id);

    let created = app
        .post_json(
            &chats,
            Some(&alice.token),
            &json!({"name": "Plans", "model": "m"}),
        )
        .await;
    let chat = created.json::<Value>().await.unwrap()["chat"]["id"]
        .as_i64()
        .unwrap();
    let (_, data) = sse.expect("chat_created").await;
    assert_eq!(data["chat"]["id"], chat);
    assert_eq!(data["chat"]["name"], "Plans");

    let renamed = app
        .patch_json(
            &format!("{chats}/{chat}"),
            Some(&alice.token),
            &json!({"name": "Trips"}),
        )
        .await;
    assert_eq!(renamed.status().as_u16(), 200);
    let (_, data) = sse.expect("chat_renamed").await;
    assert_eq!(data["chat"]["name"], "Trips");

    let question = post(&app, &alice, chat, "where to?").await;
    sse.expect("message").await;
    let deleted = app
        .delete(
            &format!("{chats}/{chat}/messages/last"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(deleted.status().as_u16(), 200);
    let (_, data) = sse.expect("messages_deleted").await;
    assert_eq!(data, json!({"chat_id": chat, "ids": [question]}));

    let gone = app
        .delete(&format!("{chats}/{chat}"), Some(&alice.token), None)
        .await;
    assert_eq!(gone.status().as_u16(), 200);
    let (_, data) = sse.expect("chat_deleted").await;
    assert_eq!(data, json!({"chat_id": chat}));
}

#[tokio::test]
async fn a_reconnect_with_last_event_id_gets_exactly_what_it_missed_then_live_events() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let mut sse = open_live(&app, &alice).await;
    post(&app, &alice, alice.chat_id, "seen").await;
    let (seen_id, _) = sse.expect("message").await;
    drop(sse);

    let missed = post_batch(&app, &alice, alice.chat_id, &["a", "b"]).await;
    let renamed = app
        .patch_json(
            &format!("/api/users/{}/chats/{}", alice.id, alice.chat_id),
            Some(&alice.token),
            &json!({"name": "Renamed"}),
        )
        .await;
    assert_eq!(renamed.status().as_u16(), 200);

    let mut again = open(&app, &alice, "", Some(&seen_id)).await;
    for id in &missed {
        let (_, data) = again.expect("message").await;
        assert_eq!(data["message"]["id"], *id);
    }
    let (_, data) = again.expect("chat_renamed").await;
    assert_eq!(data["chat"]["name"], "Renamed");
    let live = post(&app, &alice, alice.chat_id, "live").await;
    let (_, data) = again.expect("message").await;
    assert_eq!(
        data["message"]["id"], live,
        "nothing twice, nothing left out"
    );

    // `?after=` does the same; a header, when given too, wins.
    let mut by_query = open(&app, &alice, &format!("?after={seen_id}"), None).await;
    let (_, data) = by_query.expect("message").await;
    assert_eq!(data["message"]["id"], missed[0]);
}

#[tokio::test]
async fn a_reconnect_half_way_through_a_batch_resumes_after_the_last_message_received() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let mut sse = open_live(&app, &alice).await;
    let batch = post_batch(&app, &alice, alice.chat_id, &["1", "2", "3"]).await;
    let (first_id, _) = sse.expect("message").await;
    drop(sse);

    let mut again = open(&app, &alice, "", Some(&first_id)).await;
    for id in &batch[1..] {
        let (_, data) = again.expect("message").await;
        assert_eq!(data["message"]["id"], *id);
    }
}

#[tokio::test]
async fn an_id_no_longer_kept_or_never_given_starts_with_a_reset_event() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let mut sse = open_live(&app, &alice).await;
    post(&app, &alice, alice.chat_id, "old").await;
    let (old_id, _) = sse.expect("message").await;
    drop(sse);
    post(&app, &alice, alice.chat_id, "newer").await;
    // What the replay window's purge does to changes older than the window: the one
    // that stored "old" is gone.
    let old_change = old_id.split_once('.').expect("N.M").0;
    app.database.execute(&format!(
        "DELETE FROM changes WHERE user_id = 'alice' AND seq <= {old_change}"
    ));

    let mut stale = open(&app, &alice, "", Some(&old_id)).await;
    let (reset_id, data) = stale.expect("reset").await;
    assert!(data["reason"].as_str().is_some_and(|r| !r.is_empty()));
    let live = post(&app, &alice, alice.chat_id, "after the reset").await;
    let (_, data) = stale.expect("message").await;
    assert_eq!(data["message"]["id"], live);

    // An id from the future (another database) or not of this server: a reset too.
    for id in ["99999", "not-an-id"] {
        let mut other = open(&app, &alice, "", Some(id)).await;
        other.expect("reset").await;
    }
    // The reset's id resumes without another reset.
    let mut resumed = open(&app, &alice, "", Some(&reset_id)).await;
    let (_, data) = resumed.expect("message").await;
    assert_eq!(data["message"]["id"], live);
}

#[tokio::test]
async fn the_stream_answers_401_403_400_and_404_in_that_order_before_it_starts() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let bob = app.seed_user("bob");

    let none = request(&app, "alice", None, "?chat_id=x", None).await;
    assert_error(none, 401, "Unauthorized").await;
    let bobs = request(&app, "alice", Some(&bob.token), "?chat_id=x", None).await;
    assert_error(bobs, 403, "Forbidden").await;
    for query in [
        "?chat_id=x",
        "?chat_id=0",
        "?after=1.x",
        "?after=-3",
        "?chat_id=1&chat_id=2",
    ] {
        let bad = request(&app, "alice", Some(&alice.token), query, None).await;
        let body = assert_error(bad, 400, "Bad Request. Invalid query(chat_id, after).").await;
        assert!(
            body["data"]["issues"]
                .as_array()
                .is_some_and(|i| !i.is_empty()),
            "{query}: {body}"
        );
    }
    let foreign = request(
        &app,
        "alice",
        Some(&alice.token),
        &format!("?chat_id={}", bob.chat_id),
        None,
    )
    .await;
    let body = assert_error(foreign, 404, "Not Found").await;
    assert_eq!(body["message"], "Chat not found");
}

#[tokio::test]
async fn a_chat_stream_carries_only_that_chat_and_ends_after_its_deletion() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let other = app.create_chat("alice");
    let mut sse = open(&app, &alice, &format!("?chat_id={}", alice.chat_id), None).await;
    // Wait for the stream to follow: a message of the chat.
    let mut first = post(&app, &alice, alice.chat_id, "ping").await;
    loop {
        let (_, data) = sse.expect("message").await;
        if data["message"]["id"] == first {
            break;
        }
        first = post(&app, &alice, alice.chat_id, "ping").await;
    }

    post(&app, &alice, other, "elsewhere").await;
    let mine = post(&app, &alice, alice.chat_id, "here").await;
    let (_, data) = sse.expect("message").await;
    assert_eq!(
        data["message"]["id"], mine,
        "the other chat's message is not sent"
    );

    let gone = app
        .delete(
            &format!("/api/users/alice/chats/{}", alice.chat_id),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(gone.status().as_u16(), 200);
    let (_, data) = sse.expect("chat_deleted").await;
    assert_eq!(data["chat_id"], alice.chat_id);
    sse.expect_end().await;
}

#[tokio::test]
async fn a_logout_ends_the_sessions_streams_and_a_revoke_by_the_cli_too() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let second = app.create_session("alice", 30);
    let mut first_stream = open_live(&app, &alice).await;
    let other_user = TestUser {
        id: alice.id.clone(),
        token: second.clone(),
        chat_id: alice.chat_id,
    };
    let mut second_stream = open(&app, &other_user, "", None).await;

    let logout = app
        .post_json("/api/auth/logout", Some(&alice.token), &json!({}))
        .await;
    assert_eq!(logout.status().as_u16(), 200);
    first_stream.expect_end().await;

    // The other session's stream goes on.
    let still = post(&app, &other_user, alice.chat_id, "still here").await;
    let (_, data) = second_stream.expect("message").await;
    assert_eq!(data["message"]["id"], still);

    // Revoked by another process (the admin commands' code, as the CLI runs it).
    let revoked = app.with_admin(|admin| admin.revoke_session(&hash_token(&second)));
    assert_eq!(revoked.ok(), Some(true));
    second_stream.expect_end().await;
}

#[tokio::test]
async fn streams_beyond_the_per_user_limit_get_429_with_retry_after() {
    let app = spawn_app_with_settings(Settings {
        events: EventSettings {
            max_per_user: 2,
            ..EventSettings::default()
        },
        ..Settings::default()
    })
    .await;
    let alice = app.seed_user("alice");
    let bob = app.seed_user("bob");
    let _one = open(&app, &alice, "", None).await;
    let _two = open(&app, &alice, "", None).await;

    let third = request(&app, "alice", Some(&alice.token), "", None).await;
    assert!(third.headers().contains_key("retry-after"));
    assert_error(third, 429, "Too Many Requests").await;
    // Another user is not affected.
    let _bobs = open(&app, &bob, "", None).await;
}

#[tokio::test]
async fn a_reader_that_falls_far_behind_still_gets_every_message_once_in_order() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let mut sse = open_live(&app, &alice).await;
    // Not read meanwhile: far more than the live buffers hold (1,024 changes shared by
    // the user's streams, 64 frames per stream) and than the sockets buffer (about
    // 10 MB of text), so the stream falls behind and is caught up from the database.
    let padding = "x".repeat(4000);
    let mut posted = Vec::new();
    for batch in 0..30 {
        let texts: Vec<String> = (0..50).map(|i| format!("{batch}-{i} {padding}")).collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        posted.extend(post_batch(&app, &alice, alice.chat_id, &texts).await);
    }
    for _ in 0..1100 {
        posted.push(post(&app, &alice, alice.chat_id, &padding).await);
    }
    for id in &posted {
        let (_, data) = sse.expect("message").await;
        assert_eq!(data["message"]["id"], *id);
    }
}

#[tokio::test]
async fn streams_beyond_the_total_limit_get_503_with_retry_after() {
    let app = spawn_app_with_settings(Settings {
        // A client that went away is noticed when the next frame cannot be written:
        // at the next heartbeat at the latest.
        events: EventSettings {
            max_streams: 1,
            heartbeat: Duration::from_millis(200),
            ..EventSettings::default()
        },
        ..Settings::default()
    })
    .await;
    let alice = app.seed_user("alice");
    let bob = app.seed_user("bob");
    let first = open(&app, &alice, "", None).await;

    let refused = request(&app, "bob", Some(&bob.token), "", None).await;
    assert!(refused.headers().contains_key("retry-after"));
    assert_error(refused, 503, "Service Unavailable").await;
    // A place is free again once a stream's client has gone.
    drop(first);
    let mut reopened = None;
    for _ in 0..100 {
        let response = request(&app, "bob", Some(&bob.token), "", None).await;
        if response.status().as_u16() == 200 {
            reopened = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        reopened.is_some(),
        "no place came free after the first stream ended"
    );
}

#[tokio::test]
async fn a_stream_ends_when_its_session_expires() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let token = neptun_chat::auth::SessionToken::generate().unwrap();
    let expires_at = neptun_chat::domain::Timestamp::from_datetime(
        chrono::Utc::now() + chrono::Duration::seconds(2),
    );
    app.with_admin(|admin| admin.create_session("alice", &token.hash(), &expires_at))
        .unwrap();
    let short = TestUser {
        id: alice.id.clone(),
        token: token.expose().to_owned(),
        chat_id: alice.chat_id,
    };
    let mut sse = open(&app, &short, "", None).await;

    sse.expect_end().await;
    let again = request(&app, "alice", Some(&short.token), "", None).await;
    assert_error(again, 401, "Unauthorized").await;
}

/// The value of the unlabelled series `name` on `app`'s `/metrics`.
async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.get("/metrics", None).await.text().await.unwrap();
    crate::operations::parse_metrics(&text)
        .iter()
        .find(|sample| sample.name == name)
        .map(|sample| sample.value)
        .unwrap_or_else(|| panic!("{name} is not exported:\n{text}"))
}

#[tokio::test]
async fn open_streams_events_sent_resets_and_the_lag_are_counted() {
    // The recorder is shared by every test of this binary: the counts only grow, and a
    // gauge of streams open elsewhere can be higher.
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let sent_before = metric(&app, "neptun_events_sent_total").await;
    let lagged_before = metric(&app, "neptun_events_lag_seconds_count").await;
    let resets_before = metric(&app, "neptun_events_streams_reset_total").await;

    let mut sse = open_live(&app, &alice).await;
    post_batch(&app, &alice, alice.chat_id, &["a", "b"]).await;
    sse.expect("message").await;
    sse.expect("message").await;
    let mut reset = open(&app, &alice, "", Some("99999")).await;
    reset.expect("reset").await;

    assert!(metric(&app, "neptun_events_open_streams").await >= 2.0);
    // The marker chat and the two messages.
    assert!(metric(&app, "neptun_events_sent_total").await >= sent_before + 3.0);
    assert!(metric(&app, "neptun_events_lag_seconds_count").await >= lagged_before + 2.0);
    assert!(metric(&app, "neptun_events_streams_reset_total").await >= resets_before + 1.0);
}

#[tokio::test]
async fn an_idle_stream_gets_heartbeats() {
    let app = spawn_app_with_settings(Settings {
        events: EventSettings {
            heartbeat: Duration::from_millis(200),
            ..EventSettings::default()
        },
        ..Settings::default()
    })
    .await;
    let alice = app.seed_user("alice");
    let response = request(&app, "alice", Some(&alice.token), "", None).await;
    let mut bytes = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains(": heartbeat\n\n") {
        let chunk = tokio::time::timeout(PATIENCE, bytes.next())
            .await
            .expect("a frame in time")
            .expect("the stream goes on")
            .expect("a chunk");
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(seen.starts_with("retry: "), "{seen:?}");
}
