//! `GET /api/users/{user_id}/chats/{chat_id}/messages` (the whole chat, or pages by
//! `limit` with `after` or `before`) and `DELETE .../messages/last` (the last turn).
//! Paging walks a 5,000-message chat both ways, and forward while messages are added.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_error, json_body, spawn_app};

const INVALID_WINDOW: &str = "Bad Request. Invalid query(limit, after, before).";

fn messages_path(user_id: &str, chat_id: i64) -> String {
    format!("/api/users/{user_id}/chats/{chat_id}/messages")
}

/// Posts `{"messages": [...]}` with the given roles (texts are `"{prefix} {i}"`) to
/// `user`'s chat `chat_id`; returns the created messages.
async fn post_batch(
    app: &TestApp,
    user: &TestUser,
    chat_id: i64,
    prefix: &str,
    roles: &[&str],
) -> Vec<Value> {
    let messages: Vec<Value> = roles
        .iter()
        .enumerate()
        .map(|(i, role)| json!({"content": format!("{prefix} {i}"), "role": role}))
        .collect();
    let response = app
        .post_json(
            &messages_path(&user.id, chat_id),
            Some(&user.token),
            &json!({ "messages": messages }),
        )
        .await;
    assert_eq!(response.status().as_u16(), 200, "posting {prefix}");
    json_body(response).await["chatMessages"]
        .as_array()
        .expect("chatMessages")
        .clone()
}

/// Posts `count` user messages to `user`'s own chat; returns their ids.
async fn post_users(app: &TestApp, user: &TestUser, prefix: &str, count: usize) -> Vec<i64> {
    ids(&post_batch(app, user, user.chat_id, prefix, &vec!["user"; count]).await)
}

fn ids(messages: &[Value]) -> Vec<i64> {
    messages
        .iter()
        .map(|message| message["id"].as_i64().expect("an integer id"))
        .collect()
}

/// GETs `user`'s own chat with `query`, expecting 200; returns the page's ids and `next`.
async fn page(app: &TestApp, user: &TestUser, query: &str) -> (Vec<i64>, Option<i64>) {
    let response = app
        .get(
            &format!("{}{query}", messages_path(&user.id, user.chat_id)),
            Some(&user.token),
        )
        .await;
    assert_eq!(response.status().as_u16(), 200, "GET {query}");
    let body = json_body(response).await;
    let messages = body["chatMessages"].as_array().expect("chatMessages");
    let next = match &body["next"] {
        Value::Null => None,
        next => Some(next.as_i64().expect("next is an id or null")),
    };
    (ids(messages), next)
}

/// The stored ids of a chat, in order.
fn stored_ids(app: &TestApp, chat_id: i64) -> Vec<i64> {
    app.stored_messages(chat_id)
        .into_iter()
        .map(|(id, _, _)| id)
        .collect()
}

/// Fills `user`'s own chat with 5,000 messages: five batches of 1,000.
async fn seed_5000(app: &TestApp, user: &TestUser) -> Vec<i64> {
    let mut all = Vec::new();
    for batch in 0..5 {
        all.extend(post_users(app, user, &format!("batch {batch}"), 1000).await);
    }
    all
}

/// Walks forward with `?limit=…&after=…` from the start until `next` is null; returns
/// the pages.
async fn walk_forward(app: &TestApp, user: &TestUser, limit: usize) -> Vec<Vec<i64>> {
    let mut pages = Vec::new();
    let mut query = format!("?limit={limit}");
    loop {
        let (ids, next) = page(app, user, &query).await;
        pages.push(ids);
        match next {
            Some(next) => query = format!("?limit={limit}&after={next}"),
            None => return pages,
        }
    }
}

fn assert_strictly_increasing(ids: &[i64], what: &str) {
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "{what} is in id order: {ids:?}"
    );
}

#[tokio::test]
async fn the_whole_chat_is_returned_in_id_order_in_the_shape_the_create_endpoint_uses() {
    // Arrange: two batches, and a message in another chat that must not show.
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let other = app.create_chat("alice");
    let mut created = post_batch(&app, &alice, alice.chat_id, "first", &["system", "user"]).await;
    post_batch(&app, &alice, other, "elsewhere", &["user"]).await;
    created.extend(
        post_batch(
            &app,
            &alice,
            alice.chat_id,
            "second",
            &["assistant", "user"],
        )
        .await,
    );

    // Act
    let response = app
        .get(&messages_path("alice", alice.chat_id), Some(&alice.token))
        .await;

    // Assert: exactly what the create endpoint returned, in the same order.
    assert_eq!(response.status().as_u16(), 200);
    let body = json_body(response).await;
    assert_eq!(body, json!({"chatMessages": created, "next": null}));
    let texts: Vec<&str> = created
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["first 0", "first 1", "second 0", "second 1"]);
    assert_eq!(ids(&created), stored_ids(&app, alice.chat_id));
}

#[tokio::test]
async fn an_empty_chat_reads_as_an_empty_list_with_a_null_next() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    for query in ["", "?limit=10", "?after=0", "?before=1000"] {
        let response = app
            .get(
                &format!("{}{query}", messages_path("alice", alice.chat_id)),
                Some(&alice.token),
            )
            .await;

        assert_eq!(response.status().as_u16(), 200, "{query:?}");
        assert_eq!(
            json_body(response).await,
            json!({"chatMessages": [], "next": null}),
            "{query:?}"
        );
    }
}

#[tokio::test]
async fn limit_and_after_page_forward_and_next_is_null_on_the_last_page() {
    // Arrange: ten messages, ids m[0]..m[9].
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let m = post_users(&app, &alice, "m", 10).await;
    let cases = [
        (
            "the first page",
            "?limit=4".to_owned(),
            m[0..4].to_vec(),
            Some(m[3]),
        ),
        (
            "the second page",
            format!("?limit=4&after={}", m[3]),
            m[4..8].to_vec(),
            Some(m[7]),
        ),
        (
            "the short last page",
            format!("?limit=4&after={}", m[7]),
            m[8..].to_vec(),
            None,
        ),
        (
            "a page that ends exactly at the last message",
            format!("?limit=5&after={}", m[4]),
            m[5..].to_vec(),
            None,
        ),
        (
            "one page holding everything",
            "?limit=10".to_owned(),
            m.clone(),
            None,
        ),
        (
            "after 0 starts at the beginning",
            "?limit=3&after=0".to_owned(),
            m[0..3].to_vec(),
            Some(m[2]),
        ),
        (
            "after the last message",
            format!("?after={}", m[9]),
            vec![],
            None,
        ),
        (
            "after without a limit",
            format!("?after={}", m[1]),
            m[2..].to_vec(),
            None,
        ),
        (
            "a limit of 1",
            "?limit=1".to_owned(),
            vec![m[0]],
            Some(m[0]),
        ),
    ];

    for (case, query, expected, next) in cases {
        // Act
        let answer = page(&app, &alice, &query).await;

        // Assert
        assert_eq!(answer, (expected, next), "{case}: {query}");
    }
}

#[tokio::test]
async fn before_returns_the_newest_messages_below_the_id_oldest_first() {
    // Arrange: ten messages, ids m[0]..m[9].
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let m = post_users(&app, &alice, "m", 10).await;
    let cases = [
        (
            "the newest page",
            format!("?limit=4&before={}", m[9] + 1),
            m[6..].to_vec(),
            Some(m[6]),
        ),
        (
            "the page before it",
            format!("?limit=4&before={}", m[6]),
            m[2..6].to_vec(),
            Some(m[2]),
        ),
        (
            "the short first page",
            format!("?limit=4&before={}", m[2]),
            m[0..2].to_vec(),
            None,
        ),
        (
            "a page that ends exactly at the first message",
            format!("?limit=5&before={}", m[5]),
            m[0..5].to_vec(),
            None,
        ),
        (
            "before the first message",
            format!("?before={}", m[0]),
            vec![],
            None,
        ),
        (
            "before without a limit",
            format!("?before={}", m[3]),
            m[0..3].to_vec(),
            None,
        ),
        (
            "the largest id as the bound",
            "?limit=2&before=9223372036854775807".to_owned(),
            m[8..].to_vec(),
            Some(m[8]),
        ),
    ];

    for (case, query, expected, next) in cases {
        // Act
        let answer = page(&app, &alice, &query).await;

        // Assert
        assert_eq!(answer, (expected, next), "{case}: {query}");
    }
}

#[tokio::test]
async fn limits_of_1_and_1000_are_accepted() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let mut m = post_users(&app, &alice, "m", 1000).await;
    m.extend(post_users(&app, &alice, "one more", 1).await);

    assert_eq!(
        page(&app, &alice, "?limit=1").await,
        (vec![m[0]], Some(m[0]))
    );
    assert_eq!(
        page(&app, &alice, "?limit=1000").await,
        (m[..1000].to_vec(), Some(m[999]))
    );
    assert_eq!(
        page(&app, &alice, &format!("?limit=1000&after={}", m[999])).await,
        (vec![m[1000]], None)
    );
}

#[tokio::test]
async fn an_invalid_limit_after_or_before_is_rejected_with_400() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    post_users(&app, &alice, "m", 3).await;
    let cases = [
        ("limit=0", json!(["limit"])),
        ("limit=1001", json!(["limit"])),
        ("limit=-1", json!(["limit"])),
        ("limit=abc", json!(["limit"])),
        ("limit=", json!(["limit"])),
        ("limit=1.5", json!(["limit"])),
        ("limit=%2B5", json!(["limit"])),
        ("after=-1", json!(["after"])),
        ("after=abc", json!(["after"])),
        ("before=0", json!(["before"])),
        ("before=x", json!(["before"])),
        ("after=1&before=3", json!([])),
        ("limit=10&after=0&before=5", json!([])),
    ];
    for (query, path) in cases {
        let response = app
            .get(
                &format!("{}?{query}", messages_path("alice", alice.chat_id)),
                Some(&alice.token),
            )
            .await;

        let body = assert_error(response, 400, INVALID_WINDOW).await;
        let issues = body["data"]["issues"].as_array().unwrap();
        assert_eq!(issues.len(), 1, "{query}: {body}");
        assert_eq!(issues[0]["path"], path, "{query}");
    }
}

#[tokio::test]
async fn a_repeated_limit_after_or_before_is_rejected_naming_the_parameter() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    for (query, field) in [
        ("limit=1&limit=2", "limit"),
        ("after=1&after=2", "after"),
        ("before=5&before=6", "before"),
    ] {
        let response = app
            .get(
                &format!("{}?{query}", messages_path("alice", alice.chat_id)),
                Some(&alice.token),
            )
            .await;

        let body = assert_error(response, 400, INVALID_WINDOW).await;
        assert_eq!(body["data"]["issues"][0]["path"], json!([field]), "{query}");
    }
}

#[tokio::test]
async fn walking_a_5000_message_chat_forward_in_pages_of_100_gets_every_message_once_in_order() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let seeded = seed_5000(&app, &alice).await;
    assert_eq!(seeded, stored_ids(&app, alice.chat_id));

    // Act
    let pages = walk_forward(&app, &alice, 100).await;

    // Assert
    assert_eq!(pages.len(), 50);
    assert!(pages.iter().all(|page| page.len() == 100));
    let walked: Vec<i64> = pages.concat();
    assert_strictly_increasing(&walked, "the walk");
    assert_eq!(walked, seeded);
}

#[tokio::test]
async fn walking_a_5000_message_chat_backward_with_before_gets_every_message_once_in_order() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let seeded = seed_5000(&app, &alice).await;

    // Act: from the newest page back to the oldest.
    let mut pages = Vec::new();
    let mut before = i64::MAX;
    loop {
        let (ids, next) = page(&app, &alice, &format!("?limit=100&before={before}")).await;
        assert_strictly_increasing(&ids, "a page");
        pages.push(ids);
        match next {
            Some(next) => before = next,
            None => break,
        }
    }

    // Assert
    assert_eq!(pages.len(), 50);
    assert!(pages.iter().all(|page| page.len() == 100));
    pages.reverse();
    assert_eq!(pages.concat(), seeded);
}

#[tokio::test]
async fn messages_posted_between_pages_of_a_forward_walk_are_reached_without_skips_or_repeats() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    post_users(&app, &alice, "before the walk", 250).await;

    // Act: after each page, 30 more messages arrive.
    let mut walked = Vec::new();
    let mut query = "?limit=100".to_owned();
    let mut pages = 0;
    loop {
        let (ids, next) = page(&app, &alice, &query).await;
        walked.extend(ids);
        pages += 1;
        let Some(next) = next else { break };
        post_users(&app, &alice, &format!("after page {pages}"), 30).await;
        query = format!("?limit=100&after={next}");
    }

    // Assert: 250 + 3 × 30 messages, each once, in order.
    assert_eq!(pages, 4);
    assert_eq!(walked.len(), 340);
    assert_eq!(walked, stored_ids(&app, alice.chat_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_walk_racing_concurrent_writers_never_skips_or_repeats() {
    // Arrange
    let app = Arc::new(spawn_app().await);
    let alice = Arc::new(app.seed_user("alice"));
    post_users(&app, &alice, "seed", 100).await;
    let writer = {
        let (app, alice) = (app.clone(), alice.clone());
        tokio::spawn(async move {
            for batch in 0..40 {
                post_users(&app, &alice, &format!("racing {batch}"), 10).await;
            }
        })
    };

    // Act: walk in small pages while the writer runs, then finish once it is done.
    let mut walked = Vec::new();
    let mut after = 0;
    let mut writer_done = false;
    loop {
        let (ids, next) = page(&app, &alice, &format!("?limit=7&after={after}")).await;
        if let Some(last) = ids.last() {
            after = *last;
        }
        if next.is_some() {
            assert_eq!(next, ids.last().copied(), "next is the page's last id");
        }
        walked.extend(ids);
        if next.is_none() {
            if writer_done {
                break;
            }
            if writer.is_finished() {
                writer_done = true;
            }
            tokio::task::yield_now().await;
        }
    }
    writer.await.expect("the writer task");

    // Assert
    let unique: HashSet<i64> = walked.iter().copied().collect();
    assert_eq!(unique.len(), walked.len(), "no message is read twice");
    assert_eq!(walked.len(), 500);
    assert_eq!(walked, stored_ids(&app, alice.chat_id));
}

#[tokio::test]
async fn deleting_the_last_turn_removes_the_messages_the_rule_names() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    // (case, roles in the chat, indexes of the messages that go)
    let cases: [(&str, &[&str], &[usize]); 8] = [
        (
            "an answered turn: the answer and the question",
            &["user", "assistant", "user", "assistant"],
            &[2, 3],
        ),
        (
            "unanswered questions: all trailing user messages",
            &["user", "assistant", "user", "user"],
            &[2, 3],
        ),
        (
            "a trailing system message: it alone",
            &["user", "assistant", "system"],
            &[2],
        ),
        (
            "a lone system message after a question: it alone",
            &["user", "system"],
            &[1],
        ),
        ("a single question", &["user"], &[0]),
        (
            "an answer after a system prompt: the answer and its question",
            &["system", "user", "assistant"],
            &[1, 2],
        ),
        (
            "several questions before one answer: all of them",
            &["assistant", "user", "user", "assistant"],
            &[1, 2, 3],
        ),
        (
            "an answer right after another answer: only the last",
            &["user", "assistant", "assistant"],
            &[2],
        ),
    ];
    for (case, roles, doomed) in cases {
        // Arrange: each case in a fresh chat.
        let chat = app.create_chat("alice");
        let created = ids(&post_batch(&app, &alice, chat, case, roles).await);
        let expected: Vec<i64> = doomed.iter().map(|&i| created[i]).collect();
        let kept: Vec<i64> = created
            .iter()
            .copied()
            .filter(|id| !expected.contains(id))
            .collect();

        // Act
        let response = app
            .delete(
                &format!("{}/last", messages_path("alice", chat)),
                Some(&alice.token),
                None,
            )
            .await;

        // Assert
        assert_eq!(response.status().as_u16(), 200, "{case}");
        assert_eq!(
            json_body(response).await,
            json!({ "deleted": expected }),
            "{case}"
        );
        assert_eq!(stored_ids(&app, chat), kept, "{case}");
    }
}

#[tokio::test]
async fn deleting_the_last_turn_repeatedly_unwinds_the_chat_then_answers_404() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let m = ids(&post_batch(
        &app,
        &alice,
        alice.chat_id,
        "turn",
        &["system", "user", "assistant", "user", "assistant"],
    )
    .await);
    let path = format!("{}/last", messages_path("alice", alice.chat_id));

    // Act and Assert, turn by turn.
    for expected in [vec![m[3], m[4]], vec![m[1], m[2]], vec![m[0]]] {
        let response = app.delete(&path, Some(&alice.token), None).await;
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(json_body(response).await, json!({ "deleted": expected }));
    }
    assert!(app.stored_messages(alice.chat_id).is_empty());
    let response = app.delete(&path, Some(&alice.token), None).await;
    let body = assert_error(response, 404, "Not Found").await;
    assert_eq!(body["message"], "No messages in chat");
}

#[tokio::test]
async fn deleting_the_last_turn_leaves_other_chats_alone() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let other = app.create_chat("alice");
    let others = post_batch(&app, &alice, other, "other", &["user", "assistant"]).await;
    let mine = ids(&post_batch(&app, &alice, alice.chat_id, "mine", &["user", "assistant"]).await);

    let response = app
        .delete(
            &format!("{}/last", messages_path("alice", alice.chat_id)),
            Some(&alice.token),
            None,
        )
        .await;

    assert_eq!(json_body(response).await, json!({ "deleted": mine }));
    assert_eq!(stored_ids(&app, other), ids(&others));
}
