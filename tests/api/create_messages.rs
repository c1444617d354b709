//! The happy paths of `POST /api/users/{user_id}/chats/{chat_id}/messages`: exact
//! response shapes, order, exact storage of tricky texts, and all-or-nothing batches.

use serde_json::{Value, json};

use crate::helpers::{json_body, spawn_app};

fn assert_rfc3339_utc(value: &Value) {
    let text = value.as_str().expect("created_at is a string");
    assert!(text.ends_with('Z'), "{text} ends in Z");
    chrono::DateTime::parse_from_rfc3339(text).expect("created_at is RFC 3339");
}

#[tokio::test]
async fn a_single_message_is_stored_and_returned_in_the_documented_shape() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("user123");

    // Act
    let response = app
        .post_messages(&alice, &json!({"message": "Hello, world", "actor": "user"}))
        .await;

    // Assert
    assert_eq!(response.status().as_u16(), 200);
    let body = json_body(response).await;
    let message = &body["chatMessage"];
    assert_eq!(
        body.as_object().unwrap().len(),
        1,
        "only chatMessage in {body}"
    );
    let fields: Vec<&str> = message
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = fields.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "actor",
            "chat_conversation_id",
            "created_at",
            "id",
            "message",
            "neptun_user_id"
        ]
    );
    assert!(message["id"].as_i64().unwrap() > 0);
    assert_eq!(message["chat_conversation_id"], alice.chat_id);
    assert_eq!(message["neptun_user_id"], "user123");
    assert_eq!(message["message"], "Hello, world");
    assert_eq!(message["actor"], "user");
    assert_rfc3339_utc(&message["created_at"]);
    let id = message["id"].as_i64().unwrap();
    assert_eq!(
        app.stored_messages(alice.chat_id),
        vec![(id, "Hello, world".to_owned(), "user".to_owned())]
    );
}

#[tokio::test]
async fn a_batch_is_stored_in_array_order_with_strictly_increasing_ids() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let roles = ["system", "user", "assistant", "user", "assistant"];
    let batch: Vec<Value> = roles
        .iter()
        .enumerate()
        .map(|(i, role)| json!({"content": format!("message {i}"), "role": role, "extra": i}))
        .collect();

    let response = app
        .post_messages(&alice, &json!({"messages": batch, "ignored": true}))
        .await;

    assert_eq!(response.status().as_u16(), 200);
    let body = json_body(response).await;
    let returned = body["chatMessages"].as_array().expect("chatMessages array");
    assert_eq!(returned.len(), roles.len());
    let ids: Vec<i64> = returned.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    for (i, message) in returned.iter().enumerate() {
        assert_eq!(message["message"], format!("message {i}"));
        assert_eq!(message["actor"], roles[i]);
        assert_eq!(message["chat_conversation_id"], alice.chat_id);
        assert_eq!(message["neptun_user_id"], "alice");
        assert_rfc3339_utc(&message["created_at"]);
    }
    let stored = app.stored_messages(alice.chat_id);
    let expected: Vec<(i64, String, String)> = ids
        .iter()
        .zip(roles)
        .enumerate()
        .map(|(i, (id, role))| (*id, format!("message {i}"), role.to_owned()))
        .collect();
    assert_eq!(stored, expected, "reading back by id gives the array order");
}

#[tokio::test]
async fn tricky_texts_are_stored_exactly_as_sent() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let texts = [
        "  leading and trailing spaces  ",
        "line one\nline two\r\n\ttabbed",
        "emoji 🎉👩‍👩‍👧 and ünïcödé, 漢字, العربية",
        "'); DROP TABLE chat_messages; --",
        "quotes \" ' ` and backslash \\ and null-looking null",
        "\u{200B}zero width\u{FEFF}",
        "<script>alert(1)</script>",
        "x",
    ];
    let batch: Vec<Value> = texts
        .iter()
        .map(|t| json!({"content": t, "role": "user"}))
        .collect();

    let response = app.post_messages(&alice, &json!({"messages": batch})).await;

    assert_eq!(response.status().as_u16(), 200);
    let body = json_body(response).await;
    let returned: Vec<&str> = body["chatMessages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(returned, texts);
    let stored: Vec<String> = app
        .stored_messages(alice.chat_id)
        .into_iter()
        .map(|(_, text, _)| text)
        .collect();
    assert_eq!(stored, texts);
}

#[tokio::test]
async fn every_role_is_accepted_in_the_single_form() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    for actor in ["user", "assistant", "system"] {
        let response = app
            .post_messages(
                &alice,
                &json!({"message": format!("from {actor}"), "actor": actor}),
            )
            .await;
        assert_eq!(response.status().as_u16(), 200, "actor {actor}");
        let body = json_body(response).await;
        assert_eq!(body["chatMessage"]["actor"], actor);
    }
    assert_eq!(app.stored_messages(alice.chat_id).len(), 3);
}

#[tokio::test]
async fn a_charset_parameter_on_the_content_type_is_accepted() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let response = app
        .post_raw(
            &app.messages_url(&alice.id, alice.chat_id),
            Some(&alice.token),
            Some("application/json; charset=utf-8"),
            json!({"message": "hi", "actor": "user"}).to_string(),
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn messages_go_to_the_chat_in_the_path() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let second_chat = app.create_chat("alice");

    let response = app
        .post_raw(
            &app.messages_url("alice", second_chat),
            Some(&alice.token),
            Some("application/json"),
            json!({"messages": [{"content": "to the second chat", "role": "user"}]}).to_string(),
        )
        .await;

    assert_eq!(response.status().as_u16(), 200);
    let body = json_body(response).await;
    assert_eq!(body["chatMessages"][0]["chat_conversation_id"], second_chat);
    assert_eq!(app.stored_messages(second_chat).len(), 1);
    assert!(app.stored_messages(alice.chat_id).is_empty());
}

#[tokio::test]
async fn a_batch_that_fails_inside_the_transaction_stores_nothing() {
    // Arrange: a test-only trigger makes the third insert of the batch fail.
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    app.database.execute_each(
        "CREATE TRIGGER fail_on_boom BEFORE INSERT ON chat_messages \
         WHEN NEW.message = 'boom' BEGIN SELECT RAISE(ABORT, 'forced failure'); END;",
        "CREATE FUNCTION fail_on_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF NEW.message = 'boom' THEN RAISE EXCEPTION 'forced failure'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER fail_on_boom BEFORE INSERT ON chat_messages \
         FOR EACH ROW EXECUTE FUNCTION fail_on_boom();",
    );
    let batch = json!({"messages": [
        {"content": "first", "role": "user"},
        {"content": "second", "role": "assistant"},
        {"content": "boom", "role": "user"},
        {"content": "fourth", "role": "assistant"},
    ]});

    // Act
    let response = app.post_messages(&alice, &batch).await;

    // Assert: a 500 that reveals nothing, and nothing of the batch stored.
    assert_eq!(response.status().as_u16(), 500);
    let body = json_body(response).await;
    assert_eq!(body["statusCode"], 500);
    let text = body.to_string();
    for secret in [
        "forced failure",
        "chat_messages",
        "sqlite",
        "postgres",
        "SQL",
        "neptun.db",
        "boom",
    ] {
        assert!(!text.contains(secret), "{secret:?} leaked in {text}");
    }
    assert!(app.stored_messages(alice.chat_id).is_empty());

    // The writer carries on: the next batch goes through, and ids still increase.
    let ok = app
        .post_messages(
            &alice,
            &json!({"messages": [{"content": "after", "role": "user"}]}),
        )
        .await;
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(app.stored_messages(alice.chat_id).len(), 1);
}

#[tokio::test]
async fn posting_a_message_moves_the_chats_updated_at() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    app.database.execute(&format!(
        "UPDATE chat_conversations SET updated_at = '2000-01-01T00:00:00.000Z' WHERE id = {}",
        alice.chat_id
    ));

    let response = app
        .post_messages(&alice, &json!({"message": "hi", "actor": "user"}))
        .await;

    let body = json_body(response).await;
    let updated_at = app.database.value(&format!(
        "SELECT {} FROM chat_conversations WHERE id = {}",
        app.database.timestamp("updated_at"),
        alice.chat_id
    ));
    assert_eq!(
        updated_at.as_deref().unwrap(),
        body["chatMessage"]["created_at"].as_str().unwrap()
    );
}

#[tokio::test]
async fn the_health_check_answers_ok_without_a_session() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(json_body(response).await, json!({"status": "ok"}));
}

#[tokio::test]
async fn a_sane_request_id_from_the_client_is_echoed_back() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-abc-123");
}
