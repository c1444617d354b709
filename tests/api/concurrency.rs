//! Many clients at once: every batch stays contiguous and in order, none is lost, and
//! the database being busy never turns into a 500.

use std::collections::HashSet;

use serde_json::json;

use crate::helpers::{chat_message_ids, json_body, spawn_app};

const CLIENTS: usize = 32;
const BATCHES_PER_CLIENT: usize = 20;
const BATCH_LEN: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_stay_contiguous_in_order_and_none_is_lost() {
    // Arrange: every client writes to the same chat, so their batches interleave.
    let app = std::sync::Arc::new(spawn_app().await);
    let alice = std::sync::Arc::new(app.seed_user("alice"));

    // Act
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let app = app.clone();
        let alice = alice.clone();
        tasks.push(tokio::spawn(async move {
            let mut returned = Vec::new();
            for batch in 0..BATCHES_PER_CLIENT {
                let messages: Vec<_> = (0..BATCH_LEN)
                    .map(|i| json!({"content": format!("c{client} b{batch} m{i}"), "role": "user"}))
                    .collect();
                let response = app
                    .post_messages(&alice, &json!({"messages": messages}))
                    .await;
                assert_eq!(
                    response.status().as_u16(),
                    200,
                    "client {client} batch {batch}"
                );
                let body = json_body(response).await;
                let ids: Vec<i64> = chat_message_ids(&body);
                returned.push((client, batch, ids));
            }
            returned
        }));
    }
    let mut batches = Vec::new();
    for task in tasks {
        batches.extend(task.await.expect("client task"));
    }

    // Assert: all messages stored once, each batch's ids contiguous and in its order.
    let stored = app.stored_messages(alice.chat_id);
    assert_eq!(stored.len(), CLIENTS * BATCHES_PER_CLIENT * BATCH_LEN);
    let position: std::collections::HashMap<i64, usize> = stored
        .iter()
        .enumerate()
        .map(|(pos, (id, _, _))| (*id, pos))
        .collect();
    let mut seen = HashSet::new();
    for (client, batch, ids) in batches {
        assert_eq!(ids.len(), BATCH_LEN);
        let first = position[&ids[0]];
        for (i, id) in ids.iter().enumerate() {
            assert!(seen.insert(*id), "id {id} returned twice");
            assert_eq!(
                position[id],
                first + i,
                "batch c{client} b{batch} is contiguous"
            );
            assert_eq!(stored[first + i].1, format!("c{client} b{batch} m{i}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_single_messages_from_many_users_all_succeed() {
    let app = std::sync::Arc::new(spawn_app().await);
    let users: Vec<_> = (0..16)
        .map(|i| std::sync::Arc::new(app.seed_user(&format!("user{i}"))))
        .collect();

    let mut tasks = Vec::new();
    for user in &users {
        for n in 0..10 {
            let app = app.clone();
            let user = user.clone();
            tasks.push(tokio::spawn(async move {
                let response = app
                    .post_messages(
                        &user,
                        &json!({"message": format!("{} #{n}", user.id), "actor": "user"}),
                    )
                    .await;
                response.status().as_u16()
            }));
        }
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }

    for user in &users {
        let stored = app.stored_messages(user.chat_id);
        assert_eq!(stored.len(), 10, "{}", user.id);
        assert!(
            stored
                .iter()
                .all(|(_, text, _)| text.starts_with(&format!("{} #", user.id)))
        );
    }
}
