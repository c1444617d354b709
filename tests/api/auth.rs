//! Who may write to a chat: no valid session is always the same opaque 401, a session of
//! another user is 403, both before anything else about the request is looked at, and a
//! chat that is missing or someone else's is the same 404. Deleting a user takes their
//! sessions, chats and messages with them. A refused request stores nothing.

use std::collections::BTreeMap;

use neptun_chat::auth::SessionToken;
use neptun_chat::config::Limits;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_error, json_body, spawn_app, spawn_app_with};

const VALID_SINGLE: &str = r#"{"message":"hi","actor":"user"}"#;

/// A small body limit, so an oversized body is cheap to send.
const SMALL_LIMITS: Limits = Limits {
    max_body_bytes: 1024,
    max_batch: 1000,
    max_text_bytes: 256 * 1024,
    body_timeout: std::time::Duration::from_secs(20),
};

/// One request: method, path below the server's address, content type, body.
struct Request {
    what: &'static str,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

impl Request {
    fn post(
        what: &'static str,
        path: String,
        content_type: Option<&'static str>,
        body: impl Into<Vec<u8>>,
    ) -> Request {
        Request {
            what,
            method: Method::POST,
            path,
            content_type,
            body: body.into(),
        }
    }
}

/// Requests to `owner`'s chat `chat_id` that are wrong in every way other than the
/// session: each must be answered by the session check alone.
fn requests_wrong_in_other_ways(owner: &str, chat_id: i64, other_chat_id: i64) -> Vec<Request> {
    let messages =
        |chat: &dyn std::fmt::Display| format!("/api/users/{owner}/chats/{chat}/messages");
    let json = Some("application/json");
    vec![
        Request::post("a valid request", messages(&chat_id), json, VALID_SINGLE),
        Request::post(
            "a chat id that is not a number",
            messages(&"abc"),
            json,
            VALID_SINGLE,
        ),
        Request::post("a chat id of zero", messages(&0), json, VALID_SINGLE),
        Request::post(
            "an invalid body",
            messages(&chat_id),
            json,
            r#"{"message":" ","actor":"robot"}"#,
        ),
        Request::post("malformed JSON", messages(&chat_id), json, "{\"message\":"),
        Request::post(
            "a body that is not an object",
            messages(&chat_id),
            json,
            "[]",
        ),
        Request::post(
            "a text/plain body",
            messages(&chat_id),
            Some("text/plain"),
            VALID_SINGLE,
        ),
        Request::post("no content type", messages(&chat_id), None, VALID_SINGLE),
        Request::post(
            "an oversized body",
            messages(&chat_id),
            json,
            vec![b' '; 64 * 1024],
        ),
        Request::post(
            "a chat that does not exist",
            messages(&999_999),
            json,
            VALID_SINGLE,
        ),
        Request::post(
            "another user's chat",
            messages(&other_chat_id),
            json,
            VALID_SINGLE,
        ),
        Request::post(
            "an unknown sub-route",
            format!("/api/users/{owner}/nope"),
            json,
            VALID_SINGLE,
        ),
        Request {
            what: "GET instead of POST",
            method: Method::GET,
            path: messages(&chat_id),
            content_type: None,
            body: Vec::new(),
        },
        Request {
            what: "a read with an invalid query",
            method: Method::GET,
            path: format!("{}?limit=0&after=x&before=1", messages(&chat_id)),
            content_type: None,
            body: Vec::new(),
        },
        Request {
            what: "a read with a chat id that is not a number",
            method: Method::GET,
            path: messages(&"abc"),
            content_type: None,
            body: Vec::new(),
        },
        Request {
            what: "a read of another user's chat",
            method: Method::GET,
            path: messages(&other_chat_id),
            content_type: None,
            body: Vec::new(),
        },
        Request {
            what: "PUT instead of POST",
            method: Method::PUT,
            path: messages(&chat_id),
            content_type: json,
            body: VALID_SINGLE.into(),
        },
        Request {
            what: "a chat listing with an invalid order",
            method: Method::GET,
            path: format!("/api/users/{owner}/chats?order_by=colour"),
            content_type: None,
            body: Vec::new(),
        },
        Request::post(
            "a new chat with an invalid body",
            format!("/api/users/{owner}/chats"),
            json,
            r#"{"name":" "}"#,
        ),
        Request::post(
            "a new chat with an oversized body",
            format!("/api/users/{owner}/chats"),
            json,
            vec![b' '; 64 * 1024],
        ),
        Request {
            what: "a read of one chat with a malformed id",
            method: Method::GET,
            path: format!("/api/users/{owner}/chats/abc"),
            content_type: None,
            body: Vec::new(),
        },
        Request {
            what: "a read of another user's chat",
            method: Method::GET,
            path: format!("/api/users/{owner}/chats/{other_chat_id}"),
            content_type: None,
            body: Vec::new(),
        },
        Request {
            what: "a rename that is not JSON",
            method: Method::PATCH,
            path: format!("/api/users/{owner}/chats/{chat_id}"),
            content_type: Some("text/plain"),
            body: b"name".to_vec(),
        },
        Request {
            what: "a bulk delete with an invalid body",
            method: Method::DELETE,
            path: format!("/api/users/{owner}/chats"),
            content_type: json,
            body: b"{}".to_vec(),
        },
        Request {
            what: "deleting the last turn of a malformed chat id",
            method: Method::DELETE,
            path: messages(&"abc") + "/last",
            content_type: None,
            body: Vec::new(),
        },
        Request {
            what: "PUT on the chats resource",
            method: Method::PUT,
            path: format!("/api/users/{owner}/chats"),
            content_type: json,
            body: b"{}".to_vec(),
        },
    ]
}

/// Sends `request` with extra `headers` (e.g. a cookie).
async fn send(app: &TestApp, request: &Request, headers: &[(&str, String)]) -> reqwest::Response {
    let mut builder = app
        .client
        .request(
            request.method.clone(),
            format!("{}{}", app.address, request.path),
        )
        .body(request.body.clone());
    if let Some(content_type) = request.content_type {
        builder = builder.header(CONTENT_TYPE, content_type);
    }
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    builder.send().await.expect("the request is sent")
}

fn cookie(token: &str) -> Vec<(&'static str, String)> {
    vec![(COOKIE.as_str(), format!("neptun-session={token}"))]
}

/// The status, headers and raw body. Left out: `date` and `x-request-id`, which differ
/// on every response, and `connection`, which says whether the server had read the
/// request body when it answered (refusing a request without a cookie needs no lookup,
/// so its body is still unread and the connection is closed): that depends on what the
/// client sent, not on anything the server knows.
async fn observable(response: reqwest::Response) -> (u16, BTreeMap<String, String>, String) {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "x-request-id" | "connection"))
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect();
    (status, headers, response.text().await.unwrap())
}

/// Messages in the whole database, so a refused request can be shown to store nothing.
fn all_messages(app: &TestApp) -> i64 {
    app.database.count("chat_messages")
}

/// Posts one message to `user`'s chat through a hand-written path segment for the user id.
async fn post_as(app: &TestApp, user: &TestUser, user_segment: &str) -> reqwest::Response {
    let url = format!(
        "{}/api/users/{user_segment}/chats/{}/messages",
        app.address, user.chat_id
    );
    app.post_raw(
        &url,
        Some(&user.token),
        Some("application/json"),
        VALID_SINGLE,
    )
    .await
}

#[tokio::test]
async fn a_missing_unknown_expired_or_malformed_session_gets_the_same_opaque_401() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let expired = app.create_session("alice", 0);
    let never_stored = SessionToken::generate().unwrap().expose().to_owned();
    let credentials: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no cookie", vec![]),
        ("an unknown token", cookie(&never_stored)),
        ("an expired session", cookie(&expired)),
        ("an empty token", cookie("")),
        ("an overlong token", cookie(&"a".repeat(300))),
        (
            "the token with its first character dropped",
            cookie(&alice.token[1..]),
        ),
        (
            "the token under another cookie name",
            vec![(COOKIE.as_str(), format!("session={}", alice.token))],
        ),
        (
            "the token as a bearer token",
            vec![(AUTHORIZATION.as_str(), format!("Bearer {}", alice.token))],
        ),
    ];
    let request = Request::post(
        "a valid request",
        format!("/api/users/alice/chats/{}/messages", alice.chat_id),
        Some("application/json"),
        VALID_SINGLE,
    );

    // Act
    let mut answers = Vec::new();
    for (case, headers) in &credentials {
        answers.push((*case, observable(send(&app, &request, headers).await).await));
    }

    // Assert
    let (_, first) = &answers[0];
    assert_eq!(first.0, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&first.2).unwrap(),
        json!({
            "statusCode": 401,
            "statusMessage": "Unauthorized",
            "message": "A valid neptun-session cookie is required",
        })
    );
    assert_eq!(
        first.1.get("content-type").map(String::as_str),
        Some("application/json")
    );
    for (case, answer) in &answers {
        assert_eq!(
            answer, first,
            "{case} is answered exactly like a missing cookie"
        );
    }
    assert!(app.stored_messages(alice.chat_id).is_empty());
}

#[tokio::test]
async fn an_unauthenticated_request_gets_401_whatever_else_is_wrong_with_it() {
    // Arrange
    let app = spawn_app_with(SMALL_LIMITS).await;
    let alice = app.seed_user("alice");
    let bob = app.seed_user("bob");
    let expired = app.create_session("alice", 0);
    let unknown = SessionToken::generate().unwrap().expose().to_owned();
    let credentials = [
        ("no cookie", vec![]),
        ("an unknown token", cookie(&unknown)),
        ("an expired session", cookie(&expired)),
    ];
    let expected = json!({
        "statusCode": 401,
        "statusMessage": "Unauthorized",
        "message": "A valid neptun-session cookie is required",
    });

    for request in requests_wrong_in_other_ways("alice", alice.chat_id, bob.chat_id) {
        for (session, headers) in &credentials {
            // Act
            let response = send(&app, &request, headers).await;

            // Assert
            let case = format!("{} with {session}", request.what);
            assert_eq!(response.status().as_u16(), 401, "{case}");
            assert_eq!(json_body(response).await, expected, "{case}");
        }
    }
    assert_eq!(all_messages(&app), 0, "no refused request stored anything");
}

#[tokio::test]
async fn an_unauthenticated_body_over_4_mib_gets_401_at_the_default_limits() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let body = format!(
        r#"{{"message":"hi","actor":"user","pad":"{}"}}"#,
        "x".repeat(4 * 1024 * 1024)
    );

    // Act
    let response = app
        .post_raw(
            &app.messages_url("alice", alice.chat_id),
            None,
            Some("application/json"),
            body,
        )
        .await;

    // Assert
    assert_error(response, 401, "Unauthorized").await;
    assert!(app.stored_messages(alice.chat_id).is_empty());
}

#[tokio::test]
async fn a_session_of_another_user_gets_403_before_path_and_body_problems() {
    // Arrange
    let app = spawn_app_with(SMALL_LIMITS).await;
    let alice = app.seed_user("alice");
    let bob = app.seed_user("bob");
    let mut requests = requests_wrong_in_other_ways("alice", alice.chat_id, bob.chat_id);
    requests.push(Request::post(
        "a user that does not exist",
        "/api/users/carol/chats/1/messages".to_owned(),
        Some("application/json"),
        VALID_SINGLE,
    ));
    requests.push(Request::post(
        "the user id in another case",
        format!("/api/users/ALICE/chats/{}/messages", alice.chat_id),
        Some("application/json"),
        VALID_SINGLE,
    ));
    let expected = json!({
        "statusCode": 403,
        "statusMessage": "Forbidden",
        "message": "The session does not belong to this user",
    });

    for request in &requests {
        // Act: Bob's valid session on Alice's paths.
        let response = send(&app, request, &cookie(&bob.token)).await;

        // Assert
        assert_eq!(response.status().as_u16(), 403, "{}", request.what);
        assert_eq!(json_body(response).await, expected, "{}", request.what);
    }
    assert_eq!(all_messages(&app), 0, "no refused request stored anything");
}

#[tokio::test]
async fn a_path_user_that_differs_only_in_case_is_another_user() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");

    // Act
    let response = app
        .post_raw(
            &app.messages_url("Alice", alice.chat_id),
            Some(&alice.token),
            Some("application/json"),
            VALID_SINGLE,
        )
        .await;

    // Assert
    assert_error(response, 403, "Forbidden").await;
    assert!(app.stored_messages(alice.chat_id).is_empty());
}

#[tokio::test]
async fn a_missing_chat_and_another_users_chat_get_identical_404s() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let bob = app.seed_user("bob");
    let deleted_chat = app.create_chat("alice");
    app.database.execute(&format!(
        "DELETE FROM chat_conversations WHERE id = {deleted_chat}"
    ));
    let chats = [
        ("Bob's chat", bob.chat_id),
        ("a chat id never used", 999_999),
        ("the largest chat id", i64::MAX),
        ("a deleted chat of Alice's", deleted_chat),
    ];

    // Act
    let mut answers = Vec::new();
    for (case, chat_id) in chats {
        let response = app
            .post_raw(
                &app.messages_url("alice", chat_id),
                Some(&alice.token),
                Some("application/json"),
                VALID_SINGLE,
            )
            .await;
        answers.push((case, observable(response).await));
    }

    // Assert
    let (_, first) = &answers[0];
    assert_eq!(first.0, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&first.2).unwrap(),
        json!({"statusCode": 404, "statusMessage": "Not Found", "message": "Chat not found"})
    );
    for (case, answer) in &answers {
        assert_eq!(answer, first, "{case} is answered exactly like Bob's chat");
    }
    assert!(
        app.stored_messages(bob.chat_id).is_empty(),
        "Bob's chat is untouched"
    );
    assert_eq!(all_messages(&app), 0);
}

#[tokio::test]
async fn an_expired_session_is_refused_while_a_live_one_of_the_same_user_is_accepted() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let expired = app.create_session("alice", 0);
    let url = app.messages_url("alice", alice.chat_id);

    // Act
    let with_expired = app
        .post_raw(&url, Some(&expired), Some("application/json"), VALID_SINGLE)
        .await;
    let with_live = app
        .post_raw(
            &url,
            Some(&alice.token),
            Some("application/json"),
            VALID_SINGLE,
        )
        .await;

    // Assert
    assert_error(with_expired, 401, "Unauthorized").await;
    assert_eq!(with_live.status().as_u16(), 200);
    let stored = app.stored_messages(alice.chat_id);
    assert_eq!(
        stored.len(),
        1,
        "only the live session's message: {stored:?}"
    );
}

#[tokio::test]
async fn the_session_cookie_is_found_among_other_cookies() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let request = Request::post(
        "a valid request",
        format!("/api/users/alice/chats/{}/messages", alice.chat_id),
        Some("application/json"),
        VALID_SINGLE,
    );
    let header = vec![(
        COOKIE.as_str(),
        format!("theme=dark; neptun-session={}; lang=en", alice.token),
    )];

    // Act
    let response = send(&app, &request, &header).await;

    // Assert
    assert_eq!(response.status().as_u16(), 200);
    let body = json_body(response).await;
    assert_eq!(body["chatMessage"]["neptun_user_id"], "alice");
    assert_eq!(app.stored_messages(alice.chat_id).len(), 1);
}

#[tokio::test]
async fn deleting_a_user_removes_their_sessions_chats_and_messages_and_nothing_else() {
    // Arrange: Alice has two chats with messages and two sessions; Bob has one of each.
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let second_token = app.create_session("alice", 30);
    let second_chat = app.create_chat("alice");
    let bob = app.seed_user("bob");
    let batch = json!({"messages": [
        {"content": "one", "role": "user"},
        {"content": "two", "role": "assistant"},
    ]});
    assert_eq!(
        app.post_messages(&alice, &batch).await.status().as_u16(),
        200
    );
    let to_second_chat = app
        .post_raw(
            &app.messages_url("alice", second_chat),
            Some(&second_token),
            Some("application/json"),
            VALID_SINGLE,
        )
        .await;
    assert_eq!(to_second_chat.status().as_u16(), 200);
    assert_eq!(app.post_messages(&bob, &batch).await.status().as_u16(), 200);
    let bobs_messages = app.stored_messages(bob.chat_id);

    // Act
    let deleted = app
        .database
        .rows("DELETE FROM users WHERE id = 'alice' RETURNING id");

    // Assert
    assert_eq!(deleted.len(), 1);
    for table_and_column in [
        ("sessions", "user_id"),
        ("chat_conversations", "neptun_user_id"),
        ("chat_messages", "neptun_user_id"),
    ] {
        let (table, column) = table_and_column;
        let count = |user: &str| {
            app.database.integer(&format!(
                "SELECT count(*) FROM {table} WHERE {column} = '{user}'"
            ))
        };
        assert_eq!(count("alice"), 0, "Alice's rows in {table}");
        assert!(count("bob") > 0, "Bob's rows in {table}");
    }
    assert!(app.stored_messages(alice.chat_id).is_empty());
    assert!(app.stored_messages(second_chat).is_empty());
    for (which, token, chat) in [
        ("the first token", &alice.token, alice.chat_id),
        ("the second token", &second_token, second_chat),
    ] {
        let response = app
            .post_raw(
                &app.messages_url("alice", chat),
                Some(token),
                Some("application/json"),
                VALID_SINGLE,
            )
            .await;
        assert_eq!(
            response.status().as_u16(),
            401,
            "{which} of the deleted user"
        );
    }
    assert_eq!(
        app.stored_messages(bob.chat_id),
        bobs_messages,
        "Bob's messages stay"
    );
    let bob_again = app
        .post_messages(&bob, &json!({"message": "still here", "actor": "user"}))
        .await;
    assert_eq!(
        bob_again.status().as_u16(),
        200,
        "Bob's session still works"
    );
}

#[tokio::test]
async fn a_user_id_with_special_characters_is_matched_whether_or_not_it_is_percent_encoded() {
    // Arrange: ids the admin command accepts (printable, no '/'), each written into the
    // path as-is where a URL allows it and percent-encoded.
    let app = spawn_app().await;
    let cases = [
        (
            "a space",
            "ada lovelace",
            ["ada%20lovelace", "ada%20lovelace"],
        ),
        (
            "an at sign",
            "ada@example.org",
            ["ada@example.org", "ada%40example.org"],
        ),
        ("a semicolon", "a;b", ["a;b", "a%3Bb"]),
        ("a plus sign", "ada+work", ["ada+work", "ada+work"]),
        ("a question mark", "who?", ["who%3F", "who%3f"]),
        ("non-ASCII letters", "zoë", ["zo%C3%AB", "zo%c3%ab"]),
    ];

    for (case, id, segments) in cases {
        let user = app.seed_user(id);
        for segment in segments {
            // Act
            let response = post_as(&app, &user, segment).await;

            // Assert
            assert_eq!(response.status().as_u16(), 200, "{case} as {segment:?}");
            let body = json_body(response).await;
            assert_eq!(body["chatMessage"]["neptun_user_id"], id, "{case}");
        }
        assert_eq!(app.stored_messages(user.chat_id).len(), 2, "{case}");
    }
}

#[tokio::test]
async fn a_user_id_with_a_plus_or_percent_sign_is_matched_when_percent_encoded() {
    // Arrange
    let app = spawn_app().await;
    let cases = [
        ("a plus sign", "ada+work", "ada%2Bwork"),
        ("a percent sign", "100%real", "100%25real"),
    ];

    for (case, id, encoded) in cases {
        let user = app.seed_user(id);

        // Act
        let response = post_as(&app, &user, encoded).await;

        // Assert
        assert_eq!(response.status().as_u16(), 200, "{case} as {encoded:?}");
        let body = json_body(response).await;
        assert_eq!(body["chatMessage"]["neptun_user_id"], id, "{case}");
        assert_eq!(app.stored_messages(user.chat_id).len(), 1, "{case}");
    }
}

/// Sends `head` and then `first_part` of a body over a raw connection and returns the
/// answer's status line and body, read with a deadline; the rest of the body is never
/// sent.
async fn answer_to_a_partly_sent_body(
    app: &TestApp,
    head: String,
    first_part: &[u8],
) -> (String, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(first_part).await.unwrap();
    let mut received = Vec::new();
    let deadline = std::time::Duration::from_secs(30);
    let read = tokio::time::timeout(deadline, async {
        let mut buffer = [0u8; 4096];
        loop {
            let n = stream.read(&mut buffer).await.unwrap_or(0);
            received.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&received);
            let complete = text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
                head.lines()
                    .find_map(|line| {
                        line.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|length| length.trim().parse::<usize>().ok())
                    .is_some_and(|length| body.len() >= length)
            });
            if n == 0 || complete {
                break;
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no answer while the body was still being sent"
    );
    let text = String::from_utf8_lossy(&received).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole response head");
    let status_line = head.lines().next().unwrap_or_default().to_owned();
    (
        status_line,
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_large_body_with_a_bogus_or_foreign_session_is_refused_before_it_is_sent() {
    // Arrange: a body timeout far beyond the test's deadline, so only an answer given
    // without waiting for the body counts.
    let app = spawn_app_with(Limits {
        body_timeout: std::time::Duration::from_secs(600),
        ..Limits::default()
    })
    .await;
    let alice = app.seed_user("alice");
    let bob = app.seed_user("bob");
    let path = format!("/api/users/alice/chats/{}/messages", alice.chat_id);
    let bogus = "x".repeat(43);
    let cases = [
        ("a bogus cookie", bogus.as_str(), "HTTP/1.1 401", 401),
        (
            "another user's session",
            bob.token.as_str(),
            "HTTP/1.1 403",
            403,
        ),
    ];
    let framings = [
        ("Content-Length", "Content-Length: 3900000\r\n"),
        ("chunked", "Transfer-Encoding: chunked\r\n"),
    ];

    for (case, token, status_line, status) in cases {
        for (framing, length_header) in framings {
            // Act: the head and 4 KiB of a 3.9 MB body of empty objects.
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                 {length_header}Cookie: neptun-session={token}\r\n\r\n"
            );
            let mut first_part = b"{\"messages\":[".to_vec();
            first_part.extend("{},".repeat(4096 / 3).bytes());
            if framing == "chunked" {
                first_part = [
                    format!("{:x}\r\n", first_part.len()).into_bytes(),
                    first_part,
                    b"\r\n".to_vec(),
                ]
                .concat();
            }
            let (line, body) = answer_to_a_partly_sent_body(&app, head, &first_part).await;

            // Assert
            assert!(line.starts_with(status_line), "{case}, {framing}: {line}");
            assert_eq!(body["statusCode"], status, "{case}, {framing}: {body}");
        }
    }
    assert_eq!(all_messages(&app), 0);
}

#[tokio::test]
async fn a_large_batch_with_a_live_session_is_stored_whether_its_length_is_given_or_chunked() {
    // Arrange: a batch well over the size at which the session is checked first.
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let texts: Vec<String> = (0..1000)
        .map(|i| format!("message {i} {}", "x".repeat(100)))
        .collect();
    let batch = json!({
        "messages": texts.iter().map(|t| json!({"content": t, "role": "user"})).collect::<Vec<_>>()
    })
    .to_string();
    assert!(batch.len() > 64 * 1024);
    let path = format!("/api/users/alice/chats/{}/messages", alice.chat_id);

    // Act
    let with_length = app
        .post_raw(
            &format!("{}{path}", app.address),
            Some(&alice.token),
            Some("application/json"),
            batch.clone(),
        )
        .await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nCookie: neptun-session={}\r\nConnection: close\r\n\r\n",
        alice.token
    );
    let chunked = [
        format!("{:x}\r\n", batch.len()).as_bytes(),
        batch.as_bytes(),
        b"\r\n0\r\n\r\n",
    ]
    .concat();
    let (chunked_line, chunked_body) = answer_to_a_partly_sent_body(&app, head, &chunked).await;

    // Assert
    assert_eq!(with_length.status(), 200);
    let stored = json_body(with_length).await;
    assert_eq!(stored["chatMessages"].as_array().map(Vec::len), Some(1000));
    assert_eq!(stored["chatMessages"][999]["message"], texts[999]);
    assert!(chunked_line.starts_with("HTTP/1.1 200"), "{chunked_line}");
    assert_eq!(chunked_body["chatMessages"][0]["message"], texts[0]);
    let in_db: Vec<String> = app
        .stored_messages(alice.chat_id)
        .into_iter()
        .map(|(_, text, _)| text)
        .collect();
    assert_eq!(in_db, [texts.clone(), texts].concat());
}

#[tokio::test]
async fn of_several_session_cookies_the_live_one_of_the_paths_user_is_used_wherever_it_comes() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let bob = app.seed_user("bob");
    let expired = app.create_session("alice", 0);
    let unknown = SessionToken::generate().unwrap().expose().to_owned();
    let path = format!("/api/users/alice/chats/{}/messages", alice.chat_id);
    let cookies = |tokens: &[&str]| {
        tokens
            .iter()
            .map(|t| format!("neptun-session={t}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let cases: [(&str, Vec<&str>, u16); 6] = [
        (
            "an unknown token, then alice's",
            vec![&unknown, &alice.token],
            200,
        ),
        (
            "alice's, then an expired one",
            vec![&alice.token, &expired],
            200,
        ),
        ("bob's, then alice's", vec![&bob.token, &alice.token], 200),
        ("alice's in a second Cookie header", vec![], 200),
        ("bob's and an expired one", vec![&expired, &bob.token], 403),
        (
            "an unknown and an expired one",
            vec![&unknown, &expired],
            401,
        ),
    ];

    for (case, tokens, status) in cases {
        // Act
        let mut request = app
            .client
            .post(format!("{}{path}", app.address))
            .header(CONTENT_TYPE, "application/json")
            .body(VALID_SINGLE);
        if tokens.is_empty() {
            request = request
                .header(COOKIE, cookies(&[&unknown]))
                .header(COOKIE, cookies(&[&alice.token]));
        } else {
            request = request.header(COOKIE, cookies(&tokens));
        }
        let response = request.send().await.unwrap();

        // Assert
        assert_eq!(response.status().as_u16(), status, "{case}");
        if status == 200 {
            assert_eq!(
                json_body(response).await["chatMessage"]["neptun_user_id"],
                "alice",
                "{case}"
            );
        }
    }
    assert_eq!(app.stored_messages(alice.chat_id).len(), 4);
    let session = app
        .client
        .get(format!("{}/api/auth/session", app.address))
        .header(COOKIE, cookies(&[&unknown, &bob.token]))
        .send()
        .await
        .unwrap();
    assert_eq!(session.status(), 200);
    assert_eq!(json_body(session).await["user"]["id"], "bob");
}
