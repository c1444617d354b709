//! `/api/users/{user_id}/chats[/{chat_id}]`: listing and its orders, creating, reading
//! one, renaming, deleting one or many. Then, for every route under `/api/users/{user_id}/chats`: no
//! session is 401, another user's path is 403, another user's chat id is 404, and none
//! of them changes the other user's data.

use reqwest::Method;
use serde_json::{Value, json};

use crate::database::Row;
use crate::helpers::{TestApp, TestUser, assert_error, json_body, spawn_app};

const INVALID_ORDER_BY: &str = "Bad Request. Invalid query(order_by).";
const INVALID_CHAT_BODY: &str = "Bad Request. Invalid body(name, model).";
const INVALID_RENAME_BODY: &str = "Bad Request. Invalid body(name).";
const INVALID_CHAT_IDS_BODY: &str = "Bad Request. Invalid body(chat_ids).";

fn chats_path(user_id: &str) -> String {
    format!("/api/users/{user_id}/chats")
}

fn chat_path(user_id: &str, chat_id: impl std::fmt::Display) -> String {
    format!("/api/users/{user_id}/chats/{chat_id}")
}

/// The ids of `{"chats": [...]}`, in order.
fn ids_of(body: &Value) -> Vec<i64> {
    body["chats"]
        .as_array()
        .unwrap_or_else(|| panic!("a chats array in {body}"))
        .iter()
        .map(|chat| chat["id"].as_i64().unwrap())
        .collect()
}

/// Sets a chat's timestamps straight in the database, so ordering tests need no
/// waiting.
fn set_chat_times(app: &TestApp, chat_id: i64, created_at: &str, updated_at: &str) {
    app.database.execute(&format!(
        "UPDATE chat_conversations SET created_at = '{created_at}', updated_at = '{updated_at}' \
         WHERE id = {chat_id}"
    ));
}

/// Everything stored for one user: their chats `(id, name, model, owner, created_at,
/// updated_at)` and their messages `(id, chat id, text, actor)`, in id order.
type Snapshot = (Vec<Row>, Vec<Row>, Vec<Row>);

/// Everything stored for `user_id`: chats, messages, the user's storage counts and
/// change count, and their recorded changes (a refused write records none).
fn snapshot(app: &TestApp, user_id: &str) -> Snapshot {
    let db = &app.database;
    let mut chats = db.rows(&format!(
        "SELECT id, name, model, neptun_user_id, {}, {} \
         FROM chat_conversations WHERE neptun_user_id = '{user_id}' ORDER BY id",
        db.timestamp("created_at"),
        db.timestamp("updated_at"),
    ));
    for chat in &mut chats {
        chat[1] = db.text(&chat[1]);
        chat[2] = db.text(&chat[2]);
    }
    let mut messages = db.rows(&format!(
        "SELECT id, chat_conversation_id, message, actor FROM chat_messages \
         WHERE neptun_user_id = '{user_id}' ORDER BY id"
    ));
    for message in &mut messages {
        message[2] = db.text(&message[2]);
    }
    let mut counts = db.rows(&format!(
        "SELECT stored_messages, stored_bytes, last_change FROM users WHERE id = '{user_id}'"
    ));
    counts.extend(db.rows(&format!(
        "SELECT seq, kind, chat_id FROM changes WHERE user_id = '{user_id}' ORDER BY seq"
    )));
    (chats, messages, counts)
}

/// Posts a user/assistant exchange to `user`'s chat `chat_id`.
async fn post_exchange(app: &TestApp, user: &TestUser, chat_id: i64) {
    let response = app
        .post_json(
            &format!("{}/messages", chat_path(&user.id, chat_id)),
            Some(&user.token),
            &json!({"messages": [
                {"content": "question", "role": "user"},
                {"content": "answer", "role": "assistant"},
            ]}),
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);
}

async fn list(app: &TestApp, user: &TestUser, query: &str) -> Value {
    let response = app
        .get(
            &format!("{}{query}", chats_path(&user.id)),
            Some(&user.token),
        )
        .await;
    assert_eq!(response.status().as_u16(), 200, "listing with {query:?}");
    json_body(response).await
}

async fn create(app: &TestApp, user: &TestUser, name: &str, model: &str) -> reqwest::Response {
    app.post_json(
        &chats_path(&user.id),
        Some(&user.token),
        &json!({"name": name, "model": model}),
    )
    .await
}

#[tokio::test]
async fn a_new_chat_is_returned_in_the_documented_shape_with_trimmed_name_and_model() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");

    // Act
    let response = create(&app, &alice, "  Trip planning \n", " gpt-4o ").await;

    // Assert
    assert_eq!(response.status().as_u16(), 200);
    let body = json_body(response).await;
    let chat = &body["chat"];
    let id = chat["id"].as_i64().expect("an integer id");
    assert_ne!(id, alice.chat_id);
    let created_at = chat["created_at"].as_str().expect("created_at");
    assert!(created_at.ends_with('Z'), "{created_at}");
    chrono::DateTime::parse_from_rfc3339(created_at).expect("RFC 3339");
    assert_eq!(
        body,
        json!({"chat": {
            "id": id,
            "name": "Trip planning",
            "model": "gpt-4o",
            "neptun_user_id": "alice",
            "created_at": created_at,
            "updated_at": created_at,
        }})
    );
    let listed = list(&app, &alice, "").await;
    let stored = listed["chats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .expect("the new chat is listed");
    assert_eq!(stored, chat);
}

#[tokio::test]
async fn chat_names_of_1_to_200_characters_after_trimming_are_accepted() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let cases = [
        ("one character", "x".to_owned(), "x".to_owned()),
        ("200 characters", "a".repeat(200), "a".repeat(200)),
        (
            "200 characters inside whitespace",
            format!("   {}\t", "b".repeat(200)),
            "b".repeat(200),
        ),
        ("200 two-byte characters", "é".repeat(200), "é".repeat(200)),
    ];
    for (case, name, stored) in cases {
        let response = create(&app, &alice, &name, "model").await;

        assert_eq!(response.status().as_u16(), 200, "{case}");
        let body = json_body(response).await;
        assert_eq!(body["chat"]["name"], stored.as_str(), "{case}");
    }
}

#[tokio::test]
async fn chat_names_and_models_outside_1_to_200_characters_are_rejected() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let before = snapshot(&app, "alice");
    let cases = [
        (
            "an empty name",
            json!({"name": "", "model": "m"}),
            "too_small",
            json!(["name"]),
        ),
        (
            "a whitespace-only name",
            json!({"name": " \t\n ", "model": "m"}),
            "too_small",
            json!(["name"]),
        ),
        (
            "a 201-character name",
            json!({"name": "a".repeat(201), "model": "m"}),
            "too_big",
            json!(["name"]),
        ),
        (
            "a name of 201 after trimming",
            json!({"name": format!(" {} ", "a".repeat(201)), "model": "m"}),
            "too_big",
            json!(["name"]),
        ),
        (
            "a missing name",
            json!({"model": "m"}),
            "invalid_type",
            json!(["name"]),
        ),
        (
            "a numeric name",
            json!({"name": 7, "model": "m"}),
            "invalid_type",
            json!(["name"]),
        ),
        (
            "a missing model",
            json!({"name": "n"}),
            "invalid_type",
            json!(["model"]),
        ),
        (
            "an empty model",
            json!({"name": "n", "model": " "}),
            "too_small",
            json!(["model"]),
        ),
    ];
    for (case, body, code, path) in cases {
        let response = app
            .post_json(&chats_path("alice"), Some(&alice.token), &body)
            .await;

        let envelope = assert_error(response, 400, INVALID_CHAT_BODY).await;
        let issues = envelope["data"]["issues"].as_array().unwrap();
        assert_eq!(issues.len(), 1, "{case}: {envelope}");
        assert_eq!(issues[0]["code"], code, "{case}");
        assert_eq!(issues[0]["path"], path, "{case}");
    }
    assert_eq!(snapshot(&app, "alice"), before, "no chat was created");
}

#[tokio::test]
async fn chats_are_listed_in_each_supported_order() {
    // Arrange: three chats whose names, creation and activity orders all differ.
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let (b, c) = (app.create_chat("alice"), app.create_chat("alice"));
    let a = alice.chat_id;
    for (id, name) in [(a, "banana"), (b, "cherry"), (c, "apple")] {
        app.database.execute(&format!(
            "UPDATE chat_conversations SET name = '{name}' WHERE id = {id}"
        ));
    }
    set_chat_times(
        &app,
        a,
        "2026-01-01T00:00:00.000Z",
        "2026-01-05T00:00:00.000Z",
    );
    set_chat_times(
        &app,
        b,
        "2026-01-02T00:00:00.000Z",
        "2026-01-03T00:00:00.000Z",
    );
    set_chat_times(
        &app,
        c,
        "2026-01-03T00:00:00.000Z",
        "2026-01-04T00:00:00.000Z",
    );
    let cases = [
        ("no order_by: newest activity first", "", vec![a, c, b]),
        (
            "?order_by=updated_at:desc",
            "?order_by=updated_at:desc",
            vec![a, c, b],
        ),
        (
            "?order_by=updated_at:asc",
            "?order_by=updated_at:asc",
            vec![b, c, a],
        ),
        (
            "?order_by=created_at:asc",
            "?order_by=created_at:asc",
            vec![a, b, c],
        ),
        (
            "?order_by=created_at:desc",
            "?order_by=created_at:desc",
            vec![c, b, a],
        ),
        (
            "?order_by=created_at",
            "?order_by=created_at",
            vec![a, b, c],
        ),
        ("?order_by=name:asc", "?order_by=name:asc", vec![c, a, b]),
        ("?order_by=name:desc", "?order_by=name:desc", vec![b, a, c]),
        (
            "?order_by=name (ascending)",
            "?order_by=name",
            vec![c, a, b],
        ),
    ];

    for (case, query, expected) in cases {
        // Act
        let body = list(&app, &alice, query).await;

        // Assert
        assert_eq!(ids_of(&body), expected, "{case}");
    }
}

#[tokio::test]
async fn an_unsupported_order_by_is_rejected_with_400() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    for order_by in [
        "id",
        "name:up",
        "",
        "NAME",
        "name:ASC",
        "name:",
        ":asc",
        "updated_at:desc:x",
        "name%20desc",
    ] {
        let response = app
            .get(
                &format!("{}?order_by={order_by}", chats_path("alice")),
                Some(&alice.token),
            )
            .await;

        let body = assert_error(response, 400, INVALID_ORDER_BY).await;
        let issues = body["data"]["issues"].as_array().unwrap();
        assert_eq!(issues.len(), 1, "{order_by:?}: {body}");
        assert_eq!(issues[0]["path"], json!(["order_by"]), "{order_by:?}");
    }
}

#[tokio::test]
async fn a_repeated_order_by_is_rejected_naming_order_by() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");

    let response = app
        .get(
            &format!("{}?order_by=name&order_by=name:desc", chats_path("alice")),
            Some(&alice.token),
        )
        .await;

    let body = assert_error(response, 400, INVALID_ORDER_BY).await;
    assert_eq!(body["data"]["issues"][0]["path"], json!(["order_by"]));
}

#[tokio::test]
async fn posting_a_message_moves_the_chat_to_the_front_of_the_default_listing() {
    // Arrange: the first chat is the least recently active.
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let newer = app.create_chat("alice");
    set_chat_times(
        &app,
        alice.chat_id,
        "2026-01-01T00:00:00.000Z",
        "2026-01-01T00:00:00.000Z",
    );
    set_chat_times(
        &app,
        newer,
        "2026-01-02T00:00:00.000Z",
        "2026-01-02T00:00:00.000Z",
    );
    assert_eq!(
        ids_of(&list(&app, &alice, "").await),
        [newer, alice.chat_id]
    );

    // Act
    post_exchange(&app, &alice, alice.chat_id).await;

    // Assert
    let body = list(&app, &alice, "").await;
    assert_eq!(ids_of(&body), [alice.chat_id, newer]);
    let moved = &body["chats"][0];
    assert_eq!(moved["created_at"], "2026-01-01T00:00:00.000Z");
    assert!(moved["updated_at"].as_str().unwrap() > "2026-01-02T00:00:00.000Z");
}

#[tokio::test]
async fn a_user_sees_only_their_own_chats() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let bob = app.seed_user("bob");
    let bobs_second = app.create_chat("bob");
    app.with_admin(|admin| admin.create_user("carol", None, None))
        .unwrap();
    let carols_token = app.create_session("carol", 30);

    assert_eq!(ids_of(&list(&app, &alice, "").await), [alice.chat_id]);
    assert_eq!(
        ids_of(&list(&app, &bob, "?order_by=created_at").await),
        [bob.chat_id, bobs_second]
    );
    let carols = app.get(&chats_path("carol"), Some(&carols_token)).await;
    assert_eq!(carols.status().as_u16(), 200);
    assert_eq!(json_body(carols).await, json!({"chats": []}));
}

#[tokio::test]
async fn one_chat_is_returned_exactly_as_the_listing_shows_it() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let other = app.create_chat("alice");
    post_exchange(&app, &alice, alice.chat_id).await;
    let listed = list(&app, &alice, "").await;

    for chat_id in [alice.chat_id, other] {
        // Act
        let response = app
            .get(&chat_path("alice", chat_id), Some(&alice.token))
            .await;

        // Assert
        assert_eq!(response.status(), 200, "chat {chat_id}");
        let body = json_body(response).await;
        let in_listing = listed["chats"]
            .as_array()
            .unwrap()
            .iter()
            .find(|chat| chat["id"] == chat_id)
            .unwrap();
        assert_eq!(body, json!({ "chat": in_listing }), "chat {chat_id}");
    }
    let head = app
        .send(
            Method::HEAD,
            &chat_path("alice", other),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(head.status(), 200);
}

#[tokio::test]
async fn reading_a_chat_with_a_malformed_id_is_invalid_route_params() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    for chat_id in ["abc", "0", "-1", "1.5"] {
        let response = app
            .get(&chat_path("alice", chat_id), Some(&alice.token))
            .await;

        assert_error(
            response,
            400,
            "Bad Request. Invalid routeParams(user_id, chat_id).",
        )
        .await;
    }
}

#[tokio::test]
async fn a_chat_resource_answers_other_methods_with_405_naming_get() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");

    let response = app
        .send(
            Method::PUT,
            &chat_path("alice", alice.chat_id),
            Some(&alice.token),
            None,
        )
        .await;

    assert_eq!(response.headers()["allow"], "GET, HEAD, PATCH, DELETE");
    assert_error(response, 405, "Method Not Allowed").await;
}

#[tokio::test]
async fn renaming_a_chat_returns_it_with_the_new_trimmed_name_and_a_later_updated_at() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let old = "2026-01-01T00:00:00.000Z";
    set_chat_times(&app, alice.chat_id, old, old);

    // Act
    let response = app
        .patch_json(
            &chat_path("alice", alice.chat_id),
            Some(&alice.token),
            &json!({"name": "  Renamed chat  "}),
        )
        .await;

    // Assert
    assert_eq!(response.status().as_u16(), 200);
    let body = json_body(response).await;
    let updated_at = body["chat"]["updated_at"].as_str().unwrap().to_owned();
    assert!(updated_at.as_str() > old, "updated_at moved: {updated_at}");
    assert_eq!(
        body,
        json!({"chat": {
            "id": alice.chat_id,
            "name": "Renamed chat",
            "model": "test-model",
            "neptun_user_id": "alice",
            "created_at": old,
            "updated_at": updated_at,
        }})
    );
    assert_eq!(list(&app, &alice, "").await["chats"][0], body["chat"]);
}

#[tokio::test]
async fn renaming_with_an_invalid_name_is_rejected_and_changes_nothing() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let before = snapshot(&app, "alice");
    let cases = [
        ("an empty name", json!({"name": ""}), "too_small"),
        (
            "a whitespace-only name",
            json!({"name": "   "}),
            "too_small",
        ),
        (
            "a 201-character name",
            json!({"name": "x".repeat(201)}),
            "too_big",
        ),
        ("a missing name", json!({"model": "other"}), "invalid_type"),
        ("a null name", json!({"name": null}), "invalid_type"),
    ];
    for (case, body, code) in cases {
        let response = app
            .patch_json(
                &chat_path("alice", alice.chat_id),
                Some(&alice.token),
                &body,
            )
            .await;

        let envelope = assert_error(response, 400, INVALID_RENAME_BODY).await;
        assert_eq!(envelope["data"]["issues"][0]["code"], code, "{case}");
        assert_eq!(
            envelope["data"]["issues"][0]["path"],
            json!(["name"]),
            "{case}"
        );
    }
    assert_eq!(snapshot(&app, "alice"), before);
}

#[tokio::test]
async fn a_malformed_chat_id_is_rejected_as_invalid_route_params() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let before = snapshot(&app, "alice");
    for chat_id in ["0", "-1", "abc", "1.5", "99999999999999999999"] {
        for method in [Method::PATCH, Method::DELETE] {
            let response = app
                .send(
                    method.clone(),
                    &chat_path("alice", chat_id),
                    Some(&alice.token),
                    Some(&json!({"name": "new"})),
                )
                .await;

            assert_error(
                response,
                400,
                "Bad Request. Invalid routeParams(user_id, chat_id).",
            )
            .await;
        }
    }
    assert_eq!(snapshot(&app, "alice"), before);
}

#[tokio::test]
async fn deleting_a_chat_removes_it_with_its_messages_and_a_second_delete_is_404() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let kept = app.create_chat("alice");
    post_exchange(&app, &alice, alice.chat_id).await;
    post_exchange(&app, &alice, kept).await;
    let kept_messages = app.stored_messages(kept);
    let path = chat_path("alice", alice.chat_id);

    // Act
    let first = app.delete(&path, Some(&alice.token), None).await;
    let second = app.delete(&path, Some(&alice.token), None).await;

    // Assert
    assert_eq!(first.status().as_u16(), 200);
    assert_eq!(json_body(first).await, json!({"deleted": [alice.chat_id]}));
    assert!(app.stored_messages(alice.chat_id).is_empty());
    let body = assert_error(second, 404, "Not Found").await;
    assert_eq!(body["message"], "Chat not found");
    assert_eq!(ids_of(&list(&app, &alice, "").await), [kept]);
    assert_eq!(app.stored_messages(kept), kept_messages);
}

#[tokio::test]
async fn bulk_delete_removes_the_users_chats_and_lists_the_rest_as_not_found() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let bob = app.seed_user("bob");
    let (a, b, kept) = (
        alice.chat_id,
        app.create_chat("alice"),
        app.create_chat("alice"),
    );
    for chat in [a, b, kept] {
        post_exchange(&app, &alice, chat).await;
    }
    post_exchange(&app, &bob, bob.chat_id).await;
    let bobs_before = snapshot(&app, "bob");
    let kept_messages = app.stored_messages(kept);

    // Act: a repeated id counts once.
    let response = app
        .delete(
            &chats_path("alice"),
            Some(&alice.token),
            Some(&json!({"chat_ids": [a, b, bob.chat_id, 999_999, a]})),
        )
        .await;

    // Assert
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        json_body(response).await,
        json!({"deleted": [a, b], "not_found": [bob.chat_id, 999_999]})
    );
    assert!(app.stored_messages(a).is_empty());
    assert!(app.stored_messages(b).is_empty());
    assert_eq!(app.stored_messages(kept), kept_messages);
    assert_eq!(ids_of(&list(&app, &alice, "").await), [kept]);
    assert_eq!(snapshot(&app, "bob"), bobs_before);
}

#[tokio::test]
async fn bulk_delete_bodies_of_the_wrong_shape_are_rejected_and_delete_nothing() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let before = snapshot(&app, "alice");
    let id = alice.chat_id;
    let cases = [
        (
            "no chat_ids",
            json!({}),
            "invalid_type",
            json!(["chat_ids"]),
        ),
        (
            "an empty list",
            json!({"chat_ids": []}),
            "too_small",
            json!(["chat_ids"]),
        ),
        (
            "1001 ids",
            json!({"chat_ids": vec![id; 1001]}),
            "too_big",
            json!(["chat_ids"]),
        ),
        (
            "a zero id",
            json!({"chat_ids": [id, 0]}),
            "invalid_type",
            json!(["chat_ids", 1]),
        ),
        (
            "a string id",
            json!({"chat_ids": [id.to_string()]}),
            "invalid_type",
            json!(["chat_ids", 0]),
        ),
        (
            "a fractional id",
            json!({"chat_ids": [1.5]}),
            "invalid_type",
            json!(["chat_ids", 0]),
        ),
        (
            "not a list",
            json!({"chat_ids": id}),
            "invalid_type",
            json!(["chat_ids"]),
        ),
    ];
    for (case, body, code, path) in cases {
        let response = app
            .delete(&chats_path("alice"), Some(&alice.token), Some(&body))
            .await;

        let envelope = assert_error(response, 400, INVALID_CHAT_IDS_BODY).await;
        assert_eq!(envelope["data"]["issues"][0]["code"], code, "{case}");
        assert_eq!(envelope["data"]["issues"][0]["path"], path, "{case}");
    }
    assert_eq!(snapshot(&app, "alice"), before);
}

/// One request to a chat route: method, path, JSON body.
struct RouteCall {
    route: &'static str,
    method: Method,
    path: String,
    body: Option<Value>,
}

/// A valid request to every route under `/api/users/{owner}/chats`, aimed at `chat_id`
/// where the route takes one.
fn every_chat_route(owner: &str, chat_id: i64) -> Vec<RouteCall> {
    let call = |route, method, path: String, body: Option<Value>| RouteCall {
        route,
        method,
        path,
        body,
    };
    let chat = chat_path(owner, chat_id);
    vec![
        call("list chats", Method::GET, chats_path(owner), None),
        call(
            "create a chat",
            Method::POST,
            chats_path(owner),
            Some(json!({"name": "intruder", "model": "m"})),
        ),
        call("read a chat", Method::GET, chat.clone(), None),
        call(
            "rename a chat",
            Method::PATCH,
            chat.clone(),
            Some(json!({"name": "hijacked"})),
        ),
        call("delete a chat", Method::DELETE, chat.clone(), None),
        call(
            "bulk delete",
            Method::DELETE,
            chats_path(owner),
            Some(json!({ "chat_ids": [chat_id] })),
        ),
        call(
            "list messages",
            Method::GET,
            format!("{chat}/messages"),
            None,
        ),
        call(
            "post messages",
            Method::POST,
            format!("{chat}/messages"),
            Some(json!({"message": "injected", "actor": "user"})),
        ),
        call(
            "delete the last turn",
            Method::DELETE,
            format!("{chat}/messages/last"),
            None,
        ),
    ]
}

async fn call_route(app: &TestApp, call: &RouteCall, token: Option<&str>) -> reqwest::Response {
    app.send(call.method.clone(), &call.path, token, call.body.as_ref())
        .await
}

#[tokio::test]
async fn every_chat_route_answers_401_without_a_live_session_and_changes_nothing() {
    let app = spawn_app().await;
    let bob = app.seed_user("bob");
    post_exchange(&app, &bob, bob.chat_id).await;
    let expired = app.create_session("bob", 0);
    let before = snapshot(&app, "bob");
    for call in every_chat_route("bob", bob.chat_id) {
        for (case, token) in [
            ("no session", None),
            ("an unknown token", Some("not-a-token-we-issued")),
            ("an expired session", Some(expired.as_str())),
        ] {
            let response = call_route(&app, &call, token).await;

            let body = assert_error(response, 401, "Unauthorized").await;
            assert_eq!(
                body["message"], "A valid neptun-session cookie is required",
                "{} with {case}",
                call.route
            );
        }
    }
    assert_eq!(snapshot(&app, "bob"), before);
}

#[tokio::test]
async fn every_chat_route_answers_403_to_another_users_session_and_changes_nothing() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let bob = app.seed_user("bob");
    post_exchange(&app, &bob, bob.chat_id).await;
    let bobs_before = snapshot(&app, "bob");
    let alices_before = snapshot(&app, "alice");

    for call in every_chat_route("bob", bob.chat_id) {
        // Act: alice's session on bob's path.
        let response = call_route(&app, &call, Some(&alice.token)).await;

        // Assert
        let body = assert_error(response, 403, "Forbidden").await;
        assert_eq!(
            body["message"], "The session does not belong to this user",
            "{}",
            call.route
        );
    }
    assert_eq!(snapshot(&app, "bob"), bobs_before);
    assert_eq!(snapshot(&app, "alice"), alices_before);
}

#[tokio::test]
async fn another_users_chat_id_on_ones_own_path_is_not_found_and_changes_nothing() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let bob = app.seed_user("bob");
    post_exchange(&app, &bob, bob.chat_id).await;
    let bobs_before = snapshot(&app, "bob");
    let alices_before = snapshot(&app, "alice");
    let routes_with_a_chat_id = every_chat_route("alice", bob.chat_id)
        .into_iter()
        .filter(|call| call.path.starts_with(&chat_path("alice", bob.chat_id)));

    for call in routes_with_a_chat_id {
        // Act: alice's path and session, bob's chat id.
        let response = call_route(&app, &call, Some(&alice.token)).await;

        // Assert
        let body = assert_error(response, 404, "Not Found").await;
        assert_eq!(body["message"], "Chat not found", "{}", call.route);
    }
    let bulk = app
        .delete(
            &chats_path("alice"),
            Some(&alice.token),
            Some(&json!({"chat_ids": [bob.chat_id]})),
        )
        .await;
    assert_eq!(
        json_body(bulk).await,
        json!({"deleted": [], "not_found": [bob.chat_id]})
    );
    assert_eq!(snapshot(&app, "bob"), bobs_before);
    assert_eq!(snapshot(&app, "alice"), alices_before);
}

#[tokio::test]
async fn a_missing_chat_id_is_the_same_404_as_another_users() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let bob = app.seed_user("bob");
    let missing = bob.chat_id + 1000;
    let mut answers = Vec::new();
    for chat_id in [bob.chat_id, missing] {
        let response = app
            .patch_json(
                &chat_path("alice", chat_id),
                Some(&alice.token),
                &json!({"name": "x"}),
            )
            .await;
        answers.push(assert_error(response, 404, "Not Found").await);
        let read = app
            .get(&chat_path("alice", chat_id), Some(&alice.token))
            .await;
        answers.push(assert_error(read, 404, "Not Found").await);
    }
    assert!(
        answers.iter().all(|answer| *answer == answers[0]),
        "{answers:?}"
    );
}
