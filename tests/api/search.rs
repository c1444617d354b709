//! `GET /api/users/{user_id}/search`: full-text search across a user's chats.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_error, json_body, spawn_app};

const INVALID: &str = "Bad Request. Invalid query(q, chat_id, actor, since, until, limit, cursor).";

/// Posts `messages` (`(text, role)`) as one batch to `chat`; their ids.
async fn post(app: &TestApp, user: &TestUser, chat: i64, messages: &[(&str, &str)]) -> Vec<i64> {
    let body = json!({
        "messages": messages
            .iter()
            .map(|(content, role)| json!({"content": content, "role": role}))
            .collect::<Vec<_>>()
    });
    let response = app
        .post_json(
            &format!("/api/users/{}/chats/{chat}/messages", user.id),
            Some(&user.token),
            &body,
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);
    json_body(response).await["chatMessages"]
        .as_array()
        .expect("chatMessages")
        .iter()
        .map(|m| m["id"].as_i64().expect("id"))
        .collect()
}

/// `GET .../search?{query}` (the query string as given, already encoded), expecting
/// 200; the body.
async fn search(app: &TestApp, user: &TestUser, query: &str) -> Value {
    let response = app
        .get(
            &format!("/api/users/{}/search?{query}", user.id),
            Some(&user.token),
        )
        .await;
    let status = response.status().as_u16();
    let body = json_body(response).await;
    assert_eq!(status, 200, "search {query}: {body}");
    body
}

/// The ids of the hits of `q` (URL-encoded here), in the order given.
async fn found(app: &TestApp, user: &TestUser, q: &str) -> Vec<i64> {
    let body = search(app, user, &format!("q={}", encode(q))).await;
    hit_ids(&body)
}

fn hit_ids(body: &Value) -> Vec<i64> {
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|hit| hit["message"]["id"].as_i64().expect("message id"))
        .collect()
}

/// Percent-encodes a query value.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn sorted(mut ids: Vec<i64>) -> Vec<i64> {
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn words_phrases_prefixes_and_exclusions_find_what_they_say() {
    let app = spawn_app().await;
    let user = app.seed_user("searcher");
    let other_chat = app.create_chat(&user.id);
    let ids = post(
        &app,
        &user,
        user.chat_id,
        &[
            ("The quick brown fox jumps over the lazy dog", "user"),
            ("A brown dog sleeps", "assistant"),
            ("Quickly, the fox ran home", "user"),
        ],
    )
    .await;
    let more = post(
        &app,
        &user,
        other_chat,
        &[("the fox is brown and quick", "system")],
    )
    .await;
    let (quick, dog, quickly, other) = (ids[0], ids[1], ids[2], more[0]);

    assert_eq!(
        sorted(found(&app, &user, "fox").await),
        [quick, quickly, other]
    );
    // Every word must match, in any order and any case.
    assert_eq!(
        sorted(found(&app, &user, "BROWN fox").await),
        [quick, other]
    );
    // A phrase: those words next to each other, in order.
    assert_eq!(found(&app, &user, "\"brown fox\"").await, [quick]);
    assert_eq!(found(&app, &user, "\"fox brown\"").await, Vec::<i64>::new());
    // A prefix.
    assert_eq!(
        sorted(found(&app, &user, "quick*").await),
        [quick, quickly, other]
    );
    assert_eq!(sorted(found(&app, &user, "quick").await), [quick, other]);
    // Exclusions, of a word and of a phrase.
    assert_eq!(sorted(found(&app, &user, "brown -fox").await), [dog]);
    assert_eq!(
        sorted(found(&app, &user, "fox -\"lazy dog\"").await),
        [quickly, other]
    );
    assert_eq!(found(&app, &user, "elephant").await, Vec::<i64>::new());
}

#[tokio::test]
async fn accents_case_and_chinese_japanese_korean_text_are_found() {
    let app = spawn_app().await;
    let user = app.seed_user("polyglot");
    let ids = post(
        &app,
        &user,
        user.chat_id,
        &[
            ("On se retrouve au Café de Flore?", "user"),
            ("ÉLÈVE naïve façade", "user"),
            ("明日は東京タワーに行きます", "user"),
            ("我喜欢北京烤鸭", "assistant"),
            ("안녕하세요 여러분", "user"),
        ],
    )
    .await;
    assert_eq!(found(&app, &user, "cafe").await, [ids[0]]);
    assert_eq!(found(&app, &user, "CAFÉ flore").await, [ids[0]]);
    assert_eq!(found(&app, &user, "eleve naive facade").await, [ids[1]]);
    assert_eq!(found(&app, &user, "東京").await, [ids[2]]);
    assert_eq!(found(&app, &user, "タワー").await, [ids[2]]);
    assert_eq!(found(&app, &user, "北京").await, [ids[3]]);
    // Characters in another order are another word.
    assert_eq!(found(&app, &user, "京北").await, Vec::<i64>::new());
    assert_eq!(found(&app, &user, "안녕").await, [ids[4]]);
}

#[tokio::test]
async fn hits_come_best_first_with_their_chat_a_score_and_a_marked_snippet() {
    let app = spawn_app().await;
    let user = app.seed_user("ranker");
    let named = app
        .post_json(
            &format!("/api/users/{}/chats", user.id),
            Some(&user.token),
            &json!({"name": "Gardening", "model": "test-model"}),
        )
        .await;
    let chat = json_body(named).await["chat"]["id"]
        .as_i64()
        .expect("chat id");
    let ids = post(
        &app,
        &user,
        chat,
        &[
            ("tomato", "user"),
            (
                "a long message that mentions the tomato only once among very many other words of no interest at all",
                "user",
            ),
            ("tomato tomato tomato", "assistant"),
        ],
    )
    .await;
    let body = search(&app, &user, "q=tomato").await;
    let results = body["results"].as_array().expect("results");
    // The long message, with one mention among many words, comes last.
    assert_eq!(results.len(), 3);
    assert_eq!(results[2]["message"]["id"], ids[1]);
    let scores: Vec<f64> = results
        .iter()
        .map(|hit| hit["score"].as_f64().expect("score"))
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(scores[1] > scores[2], "{scores:?}");
    let hit = results
        .iter()
        .find(|hit| hit["message"]["id"] == ids[1])
        .expect("the long message");
    assert_eq!(hit["chat"], json!({"id": chat, "name": "Gardening"}));
    assert_eq!(hit["message"]["chat_conversation_id"], chat);
    assert_eq!(hit["message"]["actor"], "user");
    assert_eq!(
        hit["snippet"],
        "a long message that mentions the <mark>tomato</mark> only once among very many other words of no interest at all"
    );
    assert_eq!(body["next_cursor"], Value::Null);
    assert_eq!(body["complete"], true);
}

#[tokio::test]
async fn markup_in_a_message_shows_in_its_snippet_as_text() {
    let app = spawn_app().await;
    let user = app.seed_user("escaper");
    let text = "<img src=x onerror=alert(1)> needle & \"q\" 'too' </mark>";
    post(&app, &user, user.chat_id, &[(text, "user")]).await;
    let body = search(&app, &user, "q=needle").await;
    let hit = &body["results"][0];
    assert_eq!(
        hit["message"]["message"], text,
        "the message itself as stored"
    );
    assert_eq!(
        hit["snippet"],
        "&lt;img src=x onerror=alert(1)&gt; <mark>needle</mark> &amp; &quot;q&quot; &#39;too&#39; &lt;/mark&gt;"
    );
}

#[tokio::test]
async fn chat_actor_since_and_until_narrow_the_search() {
    let app = spawn_app().await;
    let user = app.seed_user("narrower");
    let second = app.create_chat(&user.id);
    let first = post(
        &app,
        &user,
        user.chat_id,
        &[("apple pie", "user"), ("apple tart", "assistant")],
    )
    .await;
    let body = search(&app, &user, "q=apple").await;
    let stored_at = body["results"][0]["message"]["created_at"]
        .as_str()
        .expect("created_at")
        .to_owned();
    let later = post(&app, &user, second, &[("apple juice", "system")]).await;

    let narrowed = |query: String| {
        let (app, user) = (&app, &user);
        async move { sorted(hit_ids(&search(app, user, &query).await)) }
    };
    assert_eq!(narrowed(format!("q=apple&chat_id={second}")).await, later);
    assert_eq!(
        narrowed(format!("q=apple&chat_id={}", user.chat_id)).await,
        first
    );
    assert_eq!(
        narrowed("q=apple&actor=assistant".to_owned()).await,
        [first[1]]
    );
    // since is inclusive, until is not.
    let at = encode(&stored_at);
    let all = sorted([first.clone(), later.clone()].concat());
    assert_eq!(narrowed(format!("q=apple&since={at}")).await, all);
    assert_eq!(
        narrowed(format!("q=apple&until={at}")).await,
        Vec::<i64>::new()
    );
    assert_eq!(
        narrowed("q=apple&since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00%2B02:00".to_owned())
            .await,
        all
    );
    assert_eq!(
        narrowed("q=apple&since=2999-01-01T00:00:00Z".to_owned()).await,
        Vec::<i64>::new()
    );
}

#[tokio::test]
async fn pages_follow_the_cursor_once_each_and_leave_later_messages_out() {
    let app = spawn_app().await;
    let user = app.seed_user("pager");
    // Some hits tie on their score (the same text), others do not.
    let mut texts: Vec<String> = (0..30).map(|_| "needle in the hay".to_owned()).collect();
    texts.extend((0..15).map(|i| format!("needle {}", "word ".repeat(i))));
    let messages: Vec<(&str, &str)> = texts.iter().map(|t| (t.as_str(), "user")).collect();
    let ids = post(&app, &user, user.chat_id, &messages).await;

    let mut seen = Vec::new();
    let mut query = "q=needle&limit=20".to_owned();
    let mut pages = 0;
    loop {
        let body = search(&app, &user, &query).await;
        let page = hit_ids(&body);
        pages += 1;
        seen.extend(page.iter().copied());
        if pages == 1 {
            assert_eq!(page.len(), 20);
            // Stored after the first page: not among the pages of this search.
            post(
                &app,
                &user,
                user.chat_id,
                &[("needle needle needle", "user")],
            )
            .await;
        }
        match body["next_cursor"].as_str() {
            Some(cursor) => query = format!("q=needle&limit=20&cursor={}", encode(cursor)),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), ids.len(), "no hit twice: {seen:?}");
    assert_eq!(
        seen.iter().copied().collect::<BTreeSet<_>>(),
        ids.iter().copied().collect::<BTreeSet<_>>()
    );
    // A new search finds the message stored meanwhile.
    assert_eq!(found(&app, &user, "needle").await.len(), 20);
    let body = search(&app, &user, "q=needle&limit=100").await;
    assert_eq!(hit_ids(&body).len(), ids.len() + 1);
}

#[tokio::test]
async fn deleted_messages_and_chats_are_no_longer_found() {
    let app = spawn_app().await;
    let user = app.seed_user("forgetter");
    let other = app.create_chat(&user.id);
    let kept = post(
        &app,
        &user,
        user.chat_id,
        &[("zebra one", "user"), ("zebra!", "assistant")],
    )
    .await;
    post(
        &app,
        &user,
        user.chat_id,
        &[("zebra two", "user"), ("zebra three", "assistant")],
    )
    .await;
    let four = post(&app, &user, other, &[("zebra four", "user")]).await;
    assert_eq!(found(&app, &user, "zebra").await.len(), 5);

    let last = app
        .delete(
            &format!(
                "/api/users/{}/chats/{}/messages/last",
                user.id, user.chat_id
            ),
            Some(&user.token),
            None,
        )
        .await;
    assert_eq!(last.status().as_u16(), 200);
    let deleted: Vec<i64> = json_body(last).await["deleted"]
        .as_array()
        .expect("deleted ids")
        .iter()
        .map(|id| id.as_i64().expect("an id"))
        .collect();
    assert!(!deleted.is_empty());
    assert_eq!(deleted.len(), 2, "the last turn: zebra two and three");
    let left = sorted(found(&app, &user, "zebra").await);
    assert_eq!(left, sorted([kept.clone(), four].concat()));
    let gone = app
        .delete(
            &format!("/api/users/{}/chats/{other}", user.id),
            Some(&user.token),
            None,
        )
        .await;
    assert_eq!(gone.status().as_u16(), 200);
    assert_eq!(sorted(found(&app, &user, "zebra").await), kept);
}

#[tokio::test]
async fn another_users_messages_are_never_found() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let bob = app.seed_user("bob");
    let hers = post(&app, &alice, alice.chat_id, &[("secret plans", "user")]).await;
    post(&app, &bob, bob.chat_id, &[("secret plans too", "user")]).await;
    assert_eq!(found(&app, &alice, "secret").await, hers);
    // Bob's session on Alice's path, and Alice's chat id in Bob's search.
    let theirs = app
        .get(
            &format!("/api/users/{}/search?q=secret", alice.id),
            Some(&bob.token),
        )
        .await;
    assert_eq!(theirs.status().as_u16(), 403);
    let chat = app
        .get(
            &format!(
                "/api/users/{}/search?q=secret&chat_id={}",
                bob.id, alice.chat_id
            ),
            Some(&bob.token),
        )
        .await;
    assert_error(chat, 404, "Not Found").await;
    let anonymous = app
        .get(&format!("/api/users/{}/search?q=secret", alice.id), None)
        .await;
    assert_eq!(anonymous.status().as_u16(), 401);
}

#[tokio::test]
async fn queries_that_cannot_be_read_are_400_naming_the_parameter() {
    let app = spawn_app().await;
    let user = app.seed_user("typo");
    for (query, path, code) in [
        ("", "q", "invalid_type"),
        ("q=", "q", "custom"),
        ("q=%22open", "q", "custom"),
        ("q=-only", "q", "custom"),
        ("q=%2A", "q", "custom"),
        ("q=%21%21%21", "q", "custom"),
        ("q=x&limit=0", "limit", "too_small"),
        ("q=x&limit=101", "limit", "too_big"),
        ("q=x&chat_id=abc", "chat_id", "invalid_type"),
        ("q=x&actor=robot", "actor", "invalid_enum_value"),
        ("q=x&since=yesterday", "since", "invalid_string"),
        ("q=x&until=2026-13-01T00:00:00Z", "until", "invalid_string"),
        ("q=x&cursor=nope", "cursor", "custom"),
        ("q=x&q=y", "q", "invalid_type"),
    ] {
        let response = app
            .get(
                &format!("/api/users/{}/search?{query}", user.id),
                Some(&user.token),
            )
            .await;
        let body = assert_error(response, 400, INVALID).await;
        let issue = &body["data"]["issues"][0];
        assert_eq!(issue["path"], json!([path]), "{query}: {body}");
        assert_eq!(issue["code"], code, "{query}: {body}");
        assert!(issue["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // A long query of many words is refused as well, never a 500.
    let long = vec!["word"; 40].join("+");
    let response = app
        .get(
            &format!("/api/users/{}/search?q={long}", user.id),
            Some(&user.token),
        )
        .await;
    assert_error(response, 400, INVALID).await;
}

#[tokio::test]
async fn a_message_with_a_word_too_long_to_index_is_stored_and_found_by_its_other_words() {
    let app = spawn_app().await;
    let user = app.seed_user("paster");
    // 3,000 letters without a break: longer than PostgreSQL takes as one word.
    let text = format!("my key {} ends here", "Ab".repeat(1500));
    let ids = post(&app, &user, user.chat_id, &[(text.as_str(), "user")]).await;
    assert_eq!(found(&app, &user, "key ends").await, ids);
}
