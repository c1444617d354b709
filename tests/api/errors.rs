//! What an authenticated client gets back when `POST /api/users/{user_id}/chats/{chat_id}/messages`
//! goes wrong: the exact envelope, the zod-style issues with their paths and details, the
//! size limits (small custom ones, and the defaults once each), the content type, the
//! route parameters, and the framework's own 404 and 405. Every failed request must
//! leave the chat empty.

use std::time::Duration;

use neptun_chat::config::Limits;
use reqwest::Method;
use reqwest::header::{ALLOW, CONTENT_ENCODING, CONTENT_TYPE, COOKIE};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_error, json_body, spawn_app, spawn_app_with};

const INVALID_BODY: &str = "Bad Request. Invalid body(message | messages).";
const INVALID_ROUTE_PARAMS: &str = "Bad Request. Invalid routeParams(user_id, chat_id).";
const ROLE_EXPECTED: &str = "'user' | 'assistant' | 'system'";
const ROLE_OPTIONS: [&str; 3] = ["user", "assistant", "system"];
const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;
const DEFAULT_MAX_TEXT: usize = 256 * 1024;
const DEFAULT_MAX_BATCH: usize = 1000;

/// POSTs raw bytes as `application/json` to `user`'s own chat with `user`'s session.
async fn post_json_text(
    app: &TestApp,
    user: &TestUser,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    app.post_raw(
        &app.messages_url(&user.id, user.chat_id),
        Some(&user.token),
        Some("application/json"),
        body,
    )
    .await
}

/// Asserts a 400 invalid-body envelope and returns its issues.
async fn assert_invalid_body(response: reqwest::Response, case: &str) -> Vec<Value> {
    let status = response.status().as_u16();
    assert_eq!(status, 400, "status for {case}");
    let body = assert_error(response, 400, INVALID_BODY).await;
    let issues = body["data"]["issues"]
        .as_array()
        .unwrap_or_else(|| panic!("data.issues is an array for {case}: {body}"))
        .clone();
    assert!(!issues.is_empty(), "at least one issue for {case}");
    issues
}

/// A `{"messages": [...]}` body of `n` valid messages.
fn batch_of(n: usize) -> Value {
    let messages: Vec<Value> = (0..n)
        .map(|i| json!({"content": format!("message {i}"), "role": "user"}))
        .collect();
    json!({ "messages": messages })
}

/// Writes `request` on a new connection and reads the whole answer (the request must
/// ask for `Connection: close`). A deadline turns a server that never answers into a
/// failure instead of a hang.
async fn raw_exchange(app: &TestApp, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes the connection")
        .unwrap();
    String::from_utf8(answer).unwrap()
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_rejected_as_invalid_type() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let cases = [
        ("an array", "[]", "array"),
        (
            "an array of a valid message",
            r#"[{"message":"hi","actor":"user"}]"#,
            "array",
        ),
        ("a string", r#""hello""#, "string"),
        ("null", "null", "null"),
        ("a number", "42", "number"),
        ("a boolean", "true", "boolean"),
    ];

    for (case, body, received) in cases {
        // Act
        let response = post_json_text(&app, &alice, body).await;

        // Assert
        let issues = assert_invalid_body(response, case).await;
        assert_eq!(
            issues,
            vec![json!({
                "code": "invalid_type",
                "expected": "object",
                "received": received,
                "path": [],
                "message": format!("Expected object, received {received}"),
            })],
            "issues for {case}"
        );
    }
    assert!(app.stored_messages(alice.chat_id).is_empty());
}

#[tokio::test]
async fn malformed_json_is_rejected_as_invalid_json_naming_the_line_and_column() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let deeply_nested = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let cases: [(&str, Vec<u8>, usize, usize); 8] = [
        ("an empty body", b"".to_vec(), 1, 0),
        (
            "a truncated object",
            br#"{"message": "hi", "actor": "us"#.to_vec(),
            1,
            30,
        ),
        (
            "a missing comma on line 3",
            b"{\n  \"message\": \"hi\"\n  \"actor\": \"user\"\n}".to_vec(),
            3,
            3,
        ),
        (
            "a trailing comma",
            br#"{"message": "hi", "actor": "user",}"#.to_vec(),
            1,
            35,
        ),
        (
            "trailing garbage",
            br#"{"message": "hi", "actor": "user"} x"#.to_vec(),
            1,
            36,
        ),
        (
            "invalid UTF-8",
            b"{\"message\": \"\xff\", \"actor\": \"user\"}".to_vec(),
            1,
            14,
        ),
        (
            "a lone surrogate escape",
            br#"{"message": "\ud800", "actor": "user"}"#.to_vec(),
            1,
            20,
        ),
        (
            "nesting deeper than the parser allows",
            deeply_nested.into_bytes(),
            1,
            128,
        ),
    ];

    for (case, body, line, column) in cases {
        // Act
        let response = post_json_text(&app, &alice, body).await;

        // Assert
        let issues = assert_invalid_body(response, case).await;
        assert_eq!(issues.len(), 1, "one issue for {case}: {issues:?}");
        let issue = &issues[0];
        assert_eq!(issue["code"], "invalid_json", "code for {case}");
        assert_eq!(issue["path"], json!([]), "path for {case}");
        assert_eq!(issue["line"], line, "line for {case}: {issue}");
        assert_eq!(issue["column"], column, "column for {case}: {issue}");
        let message = issue["message"].as_str().unwrap();
        assert!(
            message.starts_with("Invalid JSON: "),
            "message for {case}: {message}"
        );
        assert!(
            message.contains(&format!("line {line} column {column}")),
            "message for {case} names the position: {message}"
        );
    }
    assert!(app.stored_messages(alice.chat_id).is_empty());
}

#[tokio::test]
async fn a_missing_field_is_reported_as_required_with_received_undefined() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let cases = [
        (
            "single form without actor",
            json!({"message": "hi"}),
            json!(["actor"]),
            ROLE_EXPECTED,
        ),
        (
            "single form without message",
            json!({"actor": "user"}),
            json!(["message"]),
            "string",
        ),
        (
            "batch item without content",
            json!({"messages": [{"content": "ok", "role": "user"}, {"role": "user"}]}),
            json!(["messages", 1, "content"]),
            "string",
        ),
        (
            "batch item without role",
            json!({"messages": [{"content": "no role"}]}),
            json!(["messages", 0, "role"]),
            ROLE_EXPECTED,
        ),
    ];

    for (case, body, path, expected) in cases {
        // Act
        let response = app.post_messages(&alice, &body).await;

        // Assert
        let issues = assert_invalid_body(response, case).await;
        assert_eq!(
            issues,
            vec![json!({
                "code": "invalid_type",
                "expected": expected,
                "received": "undefined",
                "path": path,
                "message": "Required",
            })],
            "issues for {case}"
        );
    }
    assert!(app.stored_messages(alice.chat_id).is_empty());
}

#[tokio::test]
async fn a_field_of_the_wrong_type_is_rejected_naming_expected_and_received() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let cases = [
        (
            "a numeric message",
            json!({"message": 5, "actor": "user"}),
            json!(["message"]),
            "string",
            "number",
        ),
        (
            "a null message",
            json!({"message": null, "actor": "user"}),
            json!(["message"]),
            "string",
            "null",
        ),
        (
            "a boolean actor",
            json!({"message": "hi", "actor": true}),
            json!(["actor"]),
            ROLE_EXPECTED,
            "boolean",
        ),
        (
            "messages as an object",
            json!({"messages": {}}),
            json!(["messages"]),
            "array",
            "object",
        ),
        (
            "messages as null",
            json!({"messages": null}),
            json!(["messages"]),
            "array",
            "null",
        ),
        (
            "a batch item that is a string",
            json!({"messages": [{"content": "ok", "role": "user"}, "nope"]}),
            json!(["messages", 1]),
            "object",
            "string",
        ),
        (
            "batch content as an array",
            json!({"messages": [{"content": ["hi"], "role": "user"}]}),
            json!(["messages", 0, "content"]),
            "string",
            "array",
        ),
        (
            "a numeric batch role",
            json!({"messages": [{"content": "hi", "role": 1}]}),
            json!(["messages", 0, "role"]),
            ROLE_EXPECTED,
            "number",
        ),
    ];

    for (case, body, path, expected, received) in cases {
        // Act
        let response = app.post_messages(&alice, &body).await;

        // Assert
        let issues = assert_invalid_body(response, case).await;
        assert_eq!(
            issues,
            vec![json!({
                "code": "invalid_type",
                "expected": expected,
                "received": received,
                "path": path,
                "message": format!("Expected {expected}, received {received}"),
            })],
            "issues for {case}"
        );
    }
    assert!(app.stored_messages(alice.chat_id).is_empty());
}

#[tokio::test]
async fn an_empty_or_whitespace_only_text_is_rejected_as_too_small() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let texts = [
        ("empty", ""),
        ("one space", " "),
        ("tabs and newlines", "\t\r\n \n"),
        ("Unicode spaces", "\u{00A0}\u{2003}\u{3000}"),
    ];

    for (case, text) in texts {
        let forms = [
            (
                json!({"message": text, "actor": "user"}),
                json!(["message"]),
            ),
            (
                json!({"messages": [{"content": "fine", "role": "user"}, {"content": text, "role": "user"}]}),
                json!(["messages", 1, "content"]),
            ),
        ];
        for (body, path) in forms {
            // Act
            let response = app.post_messages(&alice, &body).await;

            // Assert
            let issues = assert_invalid_body(response, case).await;
            assert_eq!(
                issues,
                vec![json!({
                    "code": "too_small",
                    "minimum": 1,
                    "type": "string",
                    "inclusive": true,
                    "exact": false,
                    "path": path,
                    "message": "String must contain at least 1 non-whitespace character(s)",
                })],
                "issues for {case} at {path}"
            );
        }
    }
    assert!(app.stored_messages(alice.chat_id).is_empty());
}

#[tokio::test]
async fn a_single_message_with_an_unknown_actor_is_rejected_naming_the_options() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let actors = [
        ("an unknown role", "robot"),
        ("a role in the wrong case", "User"),
        ("a role with padding", " user"),
        ("an empty role", ""),
    ];

    for (case, actor) in actors {
        // Act
        let response = app
            .post_messages(&alice, &json!({"message": "hi", "actor": actor}))
            .await;

        // Assert
        let issues = assert_invalid_body(response, case).await;
        assert_eq!(
            issues,
            vec![json!({
                "code": "invalid_enum_value",
                "options": ROLE_OPTIONS,
                "received": actor,
                "path": ["actor"],
                "message": format!("Invalid enum value. Expected {ROLE_EXPECTED}, received '{actor}'"),
            })],
            "issues for {case}"
        );
    }
    assert!(app.stored_messages(alice.chat_id).is_empty());
}

#[tokio::test]
async fn a_batch_with_an_unknown_role_is_rejected_naming_the_options() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let body = json!({"messages": [
        {"content": "one", "role": "user"},
        {"content": "two", "role": "assistant"},
        {"content": "three", "role": "moderator"},
    ]});

    // Act
    let response = app.post_messages(&alice, &body).await;

    // Assert
    let issues = assert_invalid_body(response, "a batch with an unknown role").await;
    assert_eq!(
        issues,
        vec![json!({
            "code": "invalid_enum_value",
            "options": ["user", "assistant", "system"],
            "received": "moderator",
            "path": ["messages", 2, "role"],
            "message": "Invalid enum value. Expected 'user' | 'assistant' | 'system', received 'moderator'",
        })]
    );
    assert!(
        app.stored_messages(alice.chat_id).is_empty(),
        "no part of the batch is stored"
    );
}

#[tokio::test]
async fn every_problem_in_a_batch_is_reported_with_its_path_and_in_the_message() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let body = json!({"messages": [
        {"content": "fine", "role": "user"},
        {"content": 5, "role": "robot"},
        "nope",
        {"content": " ", "role": "system"},
        {"role": "assistant"},
    ]});

    // Act
    let response = app.post_messages(&alice, &body).await;

    // Assert
    assert_eq!(response.status().as_u16(), 400);
    let envelope = json_body(response).await;
    let issues = envelope["data"]["issues"].as_array().unwrap();
    let summary: Vec<(&str, Value)> = issues
        .iter()
        .map(|issue| (issue["code"].as_str().unwrap(), issue["path"].clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("invalid_type", json!(["messages", 1, "content"])),
            ("invalid_enum_value", json!(["messages", 1, "role"])),
            ("invalid_type", json!(["messages", 2])),
            ("too_small", json!(["messages", 3, "content"])),
            ("invalid_type", json!(["messages", 4, "content"])),
        ]
    );
    assert_eq!(
        envelope["message"],
        "messages[1].content: Expected string, received number; \
         messages[1].role: Invalid enum value. Expected 'user' | 'assistant' | 'system', received 'robot'; \
         messages[2]: Expected object, received string; \
         messages[3].content: String must contain at least 1 non-whitespace character(s); \
         messages[4].content: Required"
    );
    assert!(app.stored_messages(alice.chat_id).is_empty());
}

#[tokio::test]
async fn a_body_with_both_forms_or_neither_is_rejected_as_an_invalid_union() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let both = "Ambiguous body: send either {message, actor} or {messages}, not both";
    let neither = "Invalid input: expected {message, actor} or {messages: [{content, role}]}";
    let cases = [
        (
            "both complete forms",
            json!({"message": "hi", "actor": "user", "messages": [{"content": "hi", "role": "user"}]}),
            both,
        ),
        (
            "messages with an actor",
            json!({"actor": "user", "messages": []}),
            both,
        ),
        (
            "messages with a message",
            json!({"message": "hi", "messages": null}),
            both,
        ),
        ("an empty object", json!({}), neither),
        (
            "a batch item's fields at the top level",
            json!({"content": "hi", "role": "user"}),
            neither,
        ),
        (
            "only unknown fields",
            json!({"text": "hi", "author": "user"}),
            neither,
        ),
    ];

    for (case, body, message) in cases {
        // Act
        let response = app.post_messages(&alice, &body).await;

        // Assert
        let issues = assert_invalid_body(response, case).await;
        assert_eq!(
            issues,
            vec![json!({"code": "invalid_union", "path": [], "message": message})],
            "issues for {case}"
        );
    }
    assert!(app.stored_messages(alice.chat_id).is_empty());
}

#[tokio::test]
async fn an_empty_batch_is_rejected_as_too_small() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");

    // Act
    let response = app.post_messages(&alice, &json!({"messages": []})).await;

    // Assert
    let issues = assert_invalid_body(response, "an empty batch").await;
    assert_eq!(
        issues,
        vec![json!({
            "code": "too_small",
            "minimum": 1,
            "type": "array",
            "inclusive": true,
            "exact": false,
            "path": ["messages"],
            "message": "Array must contain at least 1 element(s)",
        })]
    );
    assert!(app.stored_messages(alice.chat_id).is_empty());
}

#[tokio::test]
async fn a_batch_longer_than_the_configured_maximum_is_rejected_as_too_big() {
    // Arrange
    let app = spawn_app_with(Limits {
        max_batch: 3,
        ..Limits::default()
    })
    .await;
    let alice = app.seed_user("alice");

    // Act
    let too_many = app.post_messages(&alice, &batch_of(4)).await;
    let at_limit = app.post_messages(&alice, &batch_of(3)).await;

    // Assert
    let issues = assert_invalid_body(too_many, "four messages with a maximum of three").await;
    assert_eq!(
        issues,
        vec![json!({
            "code": "too_big",
            "maximum": 3,
            "type": "array",
            "inclusive": true,
            "exact": false,
            "path": ["messages"],
            "message": "Array must contain at most 3 element(s)",
        })]
    );
    assert_eq!(
        at_limit.status().as_u16(),
        200,
        "three messages are allowed"
    );
    let stored: Vec<String> = app
        .stored_messages(alice.chat_id)
        .into_iter()
        .map(|(_, text, _)| text)
        .collect();
    assert_eq!(
        stored,
        ["message 0", "message 1", "message 2"],
        "only the accepted batch"
    );
}

#[tokio::test]
async fn a_text_longer_than_the_configured_limit_in_utf8_bytes_is_rejected_as_too_big() {
    // Arrange: 8 bytes allowed.
    let app = spawn_app_with(Limits {
        max_text_bytes: 8,
        ..Limits::default()
    })
    .await;
    let alice = app.seed_user("alice");
    let cases = [
        ("8 ASCII bytes", "12345678", true),
        ("9 ASCII bytes", "123456789", false),
        ("4 two-byte characters", "éééé", true),
        ("5 characters but 9 bytes", "ééééx", false),
        ("2 four-byte emoji", "😀😀", true),
        ("3 characters but 9 bytes", "😀😀x", false),
        ("8 bytes with surrounding spaces", "   ab   ", true),
        ("9 bytes of which 8 are spaces", "        a", false),
    ];

    for (case, text, accepted) in cases {
        let forms = [
            (
                json!({"message": text, "actor": "user"}),
                json!(["message"]),
            ),
            (
                json!({"messages": [{"content": text, "role": "user"}]}),
                json!(["messages", 0, "content"]),
            ),
        ];
        for (body, path) in forms {
            let before = app.stored_messages(alice.chat_id).len();

            // Act
            let response = app.post_messages(&alice, &body).await;

            // Assert
            if accepted {
                assert_eq!(
                    response.status().as_u16(),
                    200,
                    "{case} at {path} is accepted"
                );
                let stored = app.stored_messages(alice.chat_id);
                assert_eq!(stored.len(), before + 1);
                assert_eq!(stored.last().unwrap().1, text, "{case} is stored as sent");
            } else {
                let issues = assert_invalid_body(response, case).await;
                assert_eq!(
                    issues,
                    vec![json!({
                        "code": "too_big",
                        "maximum": 8,
                        "type": "string",
                        "inclusive": true,
                        "exact": false,
                        "path": path,
                        "message": "String must contain at most 8 byte(s) of UTF-8",
                    })],
                    "issues for {case}"
                );
                assert_eq!(
                    app.stored_messages(alice.chat_id).len(),
                    before,
                    "{case} stores nothing"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_body_larger_than_the_configured_limit_is_rejected_with_413() {
    // Arrange: a valid single message padded with an ignored field to an exact size.
    let limit = 100;
    let app = spawn_app_with(Limits {
        max_body_bytes: limit,
        ..Limits::default()
    })
    .await;
    let alice = app.seed_user("alice");
    let padded = |size: usize| {
        let bare = r#"{"message":"hi","actor":"user","pad":""}"#;
        let body = bare.replace(
            r#""pad":"""#,
            &format!(r#""pad":"{}""#, "x".repeat(size - bare.len())),
        );
        assert_eq!(body.len(), size);
        body
    };

    // Act
    let over = post_json_text(&app, &alice, padded(limit + 1)).await;
    let far_over = post_json_text(&app, &alice, padded(64 * 1024)).await;
    let at_limit = post_json_text(&app, &alice, padded(limit)).await;

    // Assert
    for (case, response) in [("one byte over", over), ("far over", far_over)] {
        let body = assert_error(response, 413, "Payload Too Large").await;
        assert_eq!(
            body,
            json!({
                "statusCode": 413,
                "statusMessage": "Payload Too Large",
                "message": "The request body is larger than 100 bytes",
            }),
            "{case}"
        );
    }
    assert_eq!(
        at_limit.status().as_u16(),
        200,
        "a body of exactly the limit is accepted"
    );
    assert_eq!(
        app.stored_messages(alice.chat_id).len(),
        1,
        "only the body at the limit"
    );
}

#[tokio::test]
async fn a_body_over_4_mib_is_rejected_with_413_at_the_default_limits() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let body = format!(
        r#"{{"message":"hi","actor":"user","pad":"{}"}}"#,
        "x".repeat(DEFAULT_MAX_BODY)
    );

    // Act
    let response = post_json_text(&app, &alice, body).await;

    // Assert
    let body = assert_error(response, 413, "Payload Too Large").await;
    assert_eq!(
        body["message"],
        "The request body is larger than 4194304 bytes"
    );
    assert!(app.stored_messages(alice.chat_id).is_empty());
}

#[tokio::test]
async fn a_batch_of_1001_messages_is_rejected_at_the_default_limits() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");

    // Act
    let response = app
        .post_messages(&alice, &batch_of(DEFAULT_MAX_BATCH + 1))
        .await;

    // Assert
    let issues = assert_invalid_body(response, "1001 messages").await;
    assert_eq!(
        issues,
        vec![json!({
            "code": "too_big",
            "maximum": 1000,
            "type": "array",
            "inclusive": true,
            "exact": false,
            "path": ["messages"],
            "message": "Array must contain at most 1000 element(s)",
        })]
    );
    assert!(app.stored_messages(alice.chat_id).is_empty());
}

#[tokio::test]
async fn a_text_of_256_kib_plus_one_byte_is_rejected_at_the_default_limits() {
    // Arrange: one multi-byte character so the limit is visibly in bytes.
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let text = format!("é{}", "a".repeat(DEFAULT_MAX_TEXT - 1));
    assert_eq!(text.len(), DEFAULT_MAX_TEXT + 1);

    // Act
    let response = app
        .post_messages(
            &alice,
            &json!({"messages": [{"content": text, "role": "assistant"}]}),
        )
        .await;

    // Assert
    let issues = assert_invalid_body(response, "262145 bytes").await;
    assert_eq!(
        issues,
        vec![json!({
            "code": "too_big",
            "maximum": 262144,
            "type": "string",
            "inclusive": true,
            "exact": false,
            "path": ["messages", 0, "content"],
            "message": "String must contain at most 262144 byte(s) of UTF-8",
        })]
    );
    assert!(app.stored_messages(alice.chat_id).is_empty());
}

#[tokio::test]
async fn values_exactly_at_the_default_limits_are_accepted() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let longest_text = format!("é{}", "a".repeat(DEFAULT_MAX_TEXT - 2));
    assert_eq!(longest_text.len(), DEFAULT_MAX_TEXT);
    let bare = r#"{"message":"hi","actor":"user","pad":""}"#;
    let largest_body = format!(
        r#"{{"message":"hi","actor":"user","pad":"{}"}}"#,
        "x".repeat(DEFAULT_MAX_BODY - bare.len())
    );
    assert_eq!(largest_body.len(), DEFAULT_MAX_BODY);

    // Act
    let full_batch = app
        .post_messages(&alice, &batch_of(DEFAULT_MAX_BATCH))
        .await;
    let longest = app
        .post_messages(&alice, &json!({"message": longest_text, "actor": "system"}))
        .await;
    let largest = post_json_text(&app, &alice, largest_body).await;

    // Assert
    assert_eq!(
        full_batch.status().as_u16(),
        200,
        "1000 messages are accepted"
    );
    let returned = json_body(full_batch).await;
    assert_eq!(
        returned["chatMessages"].as_array().unwrap().len(),
        DEFAULT_MAX_BATCH
    );
    assert_eq!(
        longest.status().as_u16(),
        200,
        "a 262144-byte text is accepted"
    );
    assert_eq!(
        largest.status().as_u16(),
        200,
        "a body of exactly 4 MiB is accepted"
    );
    let stored = app.stored_messages(alice.chat_id);
    assert_eq!(stored.len(), DEFAULT_MAX_BATCH + 2);
    assert_eq!(stored[0].1, "message 0");
    assert_eq!(stored[DEFAULT_MAX_BATCH - 1].1, "message 999");
    assert_eq!(
        stored[DEFAULT_MAX_BATCH].1, longest_text,
        "the longest text is stored whole"
    );
    assert_eq!(stored[DEFAULT_MAX_BATCH + 1].1, "hi");
}

#[tokio::test]
async fn a_body_not_declared_as_json_is_rejected_with_415() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let url = app.messages_url(&alice.id, alice.chat_id);
    let valid = json!({"message": "hi", "actor": "user"}).to_string();
    let cases = [
        ("no content type", None),
        ("text/plain", Some("text/plain")),
        ("a form", Some("application/x-www-form-urlencoded")),
        ("multipart", Some("multipart/form-data; boundary=x")),
        ("a JSON-like vendor type", Some("application/vnd.api+json")),
        ("a malformed content type", Some("application json")),
    ];

    for (case, content_type) in cases {
        // Act
        let response = app
            .post_raw(&url, Some(&alice.token), content_type, valid.clone())
            .await;

        // Assert
        let body = assert_error(response, 415, "Unsupported Media Type").await;
        assert_eq!(
            body,
            json!({
                "statusCode": 415,
                "statusMessage": "Unsupported Media Type",
                "message": "Content-Type must be application/json",
            }),
            "{case}"
        );
    }
    assert!(app.stored_messages(alice.chat_id).is_empty());
}

#[tokio::test]
async fn a_json_content_type_is_recognised_whatever_its_case_and_parameters() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let url = app.messages_url(&alice.id, alice.chat_id);
    let content_types = [
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "Application/JSON",
    ];

    for content_type in content_types {
        // Act
        let response = app
            .post_raw(
                &url,
                Some(&alice.token),
                Some(content_type),
                json!({"message": content_type, "actor": "user"}).to_string(),
            )
            .await;

        // Assert
        assert_eq!(
            response.status().as_u16(),
            200,
            "{content_type:?} is accepted"
        );
    }
    let stored: Vec<String> = app
        .stored_messages(alice.chat_id)
        .into_iter()
        .map(|(_, text, _)| text)
        .collect();
    assert_eq!(stored, content_types);
}

#[tokio::test]
async fn a_chat_id_that_is_not_a_positive_integer_is_rejected_as_invalid_route_params() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let chat_ids = [
        ("a word", "abc"),
        ("zero", "0"),
        ("a negative number", "-1"),
        ("a decimal", "1.5"),
        ("an explicit plus sign", "+1"),
        ("an exponent", "1e3"),
        ("one past i64::MAX", "9223372036854775808"),
        ("a percent-encoded space before the id", "%201"),
        (
            "the chat id followed by a word",
            &format!("{}abc", alice.chat_id),
        ),
    ];
    let valid = json!({"message": "hi", "actor": "user"}).to_string();

    for (case, chat_id) in chat_ids {
        // Act
        let response = app
            .post_raw(
                &app.messages_url(&alice.id, chat_id),
                Some(&alice.token),
                Some("application/json"),
                valid.clone(),
            )
            .await;

        // Assert
        let body = assert_error(response, 400, INVALID_ROUTE_PARAMS).await;
        assert_eq!(
            body,
            json!({
                "statusCode": 400,
                "statusMessage": INVALID_ROUTE_PARAMS,
                "message": "chat_id must be a positive integer",
            }),
            "{case}"
        );
    }
    assert!(app.stored_messages(alice.chat_id).is_empty());
}

#[tokio::test]
async fn a_bad_chat_id_is_reported_before_problems_with_the_body() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let url = app.messages_url(&alice.id, "abc");
    let cases = [
        (
            "an invalid body",
            Some("application/json"),
            r#"{"message": ""}"#,
        ),
        ("malformed JSON", Some("application/json"), "{"),
        ("a wrong content type", Some("text/plain"), "hello"),
    ];

    for (case, content_type, body) in cases {
        // Act
        let response = app
            .post_raw(&url, Some(&alice.token), content_type, body)
            .await;

        // Assert
        let envelope = assert_error(response, 400, INVALID_ROUTE_PARAMS).await;
        assert!(
            envelope.get("data").is_none(),
            "no issues for {case}: {envelope}"
        );
    }
}

#[tokio::test]
async fn an_unknown_route_gets_a_json_404_envelope() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let chat = alice.chat_id;
    let paths = [
        ("an unknown top-level path", "/nope".to_owned(), None),
        ("the API prefix alone", "/api".to_owned(), None),
        (
            "the users prefix without a user",
            "/api/users".to_owned(),
            None,
        ),
        ("an unknown API path", "/api/nope".to_owned(), None),
        (
            "a health check with a suffix",
            "/healthz/extra".to_owned(),
            None,
        ),
        (
            "an unknown path of a user",
            "/api/users/alice/nope".to_owned(),
            Some(&alice.token),
        ),
        (
            "an unknown path of a chat",
            format!("/api/users/alice/chats/{chat}/nope"),
            Some(&alice.token),
        ),
        (
            "a messages path with a trailing slash",
            format!("/api/users/alice/chats/{chat}/messages/"),
            Some(&alice.token),
        ),
    ];

    for (case, path, token) in paths {
        // Act
        let url = format!("{}{path}", app.address);
        let response = app
            .post_raw(
                &url,
                token.map(String::as_str),
                Some("application/json"),
                "{}",
            )
            .await;

        // Assert
        let body = assert_error(response, 404, "Not Found").await;
        assert_eq!(
            body,
            json!({
                "statusCode": 404,
                "statusMessage": "Not Found",
                "message": "No route matches this path",
            }),
            "{case}"
        );
    }
    assert!(app.stored_messages(alice.chat_id).is_empty());
}

#[tokio::test]
async fn a_wrong_method_gets_a_json_405_whose_allow_header_names_the_right_one() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let messages = app.messages_url(&alice.id, alice.chat_id);
    let healthz = format!("{}/healthz", app.address);
    let cases = [
        (Method::PUT, &messages, "POST"),
        (Method::PATCH, &messages, "POST"),
        (Method::POST, &healthz, "GET"),
        (Method::PUT, &healthz, "GET"),
    ];

    for (method, url, needed) in cases {
        let case = format!("{method} {url}");

        // Act
        let response = app
            .client
            .request(method.clone(), url)
            .header(COOKIE, format!("neptun-session={}", alice.token))
            .header(CONTENT_TYPE, "application/json")
            .body(json!({"message": "hi", "actor": "user"}).to_string())
            .send()
            .await
            .unwrap();

        // Assert
        let allow = response
            .headers()
            .get(ALLOW)
            .unwrap_or_else(|| panic!("an Allow header for {case}"))
            .to_str()
            .unwrap()
            .to_owned();
        let allowed: Vec<&str> = allow.split(',').map(str::trim).collect();
        assert!(
            allowed.contains(&needed),
            "{needed} in Allow {allow:?} for {case}"
        );
        assert!(
            !allowed.contains(&method.as_str()),
            "{method} not in Allow {allow:?}"
        );
        let body = assert_error(response, 405, "Method Not Allowed").await;
        assert_eq!(
            body,
            json!({
                "statusCode": 405,
                "statusMessage": "Method Not Allowed",
                "message": format!("This route accepts {allow}"),
            }),
            "{case}"
        );
    }
    assert!(app.stored_messages(alice.chat_id).is_empty());
}

#[tokio::test]
async fn a_body_streamed_without_a_content_length_is_still_held_to_the_limit() {
    // Arrange: 240 bytes in chunks, with a 100-byte limit, over a raw connection
    // because the client library always sends a length for an in-memory body.
    let app = spawn_app_with(Limits {
        max_body_bytes: 100,
        ..Limits::default()
    })
    .await;
    let alice = app.seed_user("alice");
    let mut request = format!(
        "POST /api/users/alice/chats/{}/messages HTTP/1.1\r\nHost: localhost\r\n\
         Connection: close\r\nCookie: neptun-session={}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        alice.chat_id, alice.token
    );
    for chunk in [
        r#"{"message":"hi","actor":"user","pad":""#,
        &"x".repeat(160),
        r#""}"#,
    ] {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");

    // Act
    let response = raw_exchange(&app, request.as_bytes()).await;

    // Assert
    assert!(response.starts_with("HTTP/1.1 413 "), "{response}");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert_eq!(
        serde_json::from_str::<Value>(body).unwrap(),
        json!({
            "statusCode": 413,
            "statusMessage": "Payload Too Large",
            "message": "The request body is larger than 100 bytes",
        })
    );
    assert!(app.stored_messages(alice.chat_id).is_empty());
}

#[tokio::test]
async fn a_gzip_body_that_inflates_past_the_limit_is_rejected_with_413() {
    // Arrange: 56 bytes of gzip that inflate to the 1029-byte body
    // {"message":"xxx…(1000 times)","actor":"user"}, against a 100-byte limit.
    const GZIPPED: [u8; 56] = [
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0xab, 0x56, 0xca, 0x4d, 0x2d,
        0x2e, 0x4e, 0x4c, 0x4f, 0x55, 0xb2, 0x52, 0xaa, 0x18, 0x05, 0xa3, 0x60, 0x14, 0x0c, 0x7b,
        0xa0, 0xa4, 0xa3, 0x94, 0x98, 0x5c, 0x92, 0x5f, 0x04, 0xcc, 0xf2, 0xa5, 0xc5, 0xa9, 0x45,
        0x4a, 0xb5, 0x00, 0xfe, 0x63, 0xc9, 0xad, 0x05, 0x04, 0x00, 0x00,
    ];
    let app = spawn_app_with(Limits {
        max_body_bytes: 100,
        ..Limits::default()
    })
    .await;
    let alice = app.seed_user("alice");

    // Act
    let response = app
        .client
        .post(app.messages_url(&alice.id, alice.chat_id))
        .header(COOKIE, format!("neptun-session={}", alice.token))
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_ENCODING, "gzip")
        .body(GZIPPED.to_vec())
        .send()
        .await
        .unwrap();

    // Assert
    let body = assert_error(response, 413, "Payload Too Large").await;
    assert_eq!(body["message"], "The request body is larger than 100 bytes");
    assert!(app.stored_messages(alice.chat_id).is_empty());
}
