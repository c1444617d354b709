//! The issues a malformed query string is answered with, exactly as zod would list them:
//! a number out of range is `too_small` / `too_big`, something that is no whole number
//! is `invalid_type`.

use serde_json::{Value, json};

use crate::helpers::{assert_error, spawn_app};

const INVALID_WINDOW: &str = "Bad Request. Invalid query(limit, after, before).";

#[tokio::test]
async fn a_page_size_or_cursor_out_of_range_is_too_small_or_too_big() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let path = format!("/api/users/alice/chats/{}/messages", alice.chat_id);
    let bound = |code: &str, key: &str, value: i64, field: &str, message: String| -> Value {
        json!({"code": code, key: value, "type": "number", "inclusive": true, "exact": false,
               "path": [field], "message": message})
    };
    let cases = [
        (
            "limit=0",
            bound(
                "too_small",
                "minimum",
                1,
                "limit",
                "limit must be at least 1".into(),
            ),
        ),
        (
            "limit=1001",
            bound(
                "too_big",
                "maximum",
                1000,
                "limit",
                "limit must be at most 1000".into(),
            ),
        ),
        (
            "limit=-3",
            bound(
                "too_small",
                "minimum",
                1,
                "limit",
                "limit must be at least 1".into(),
            ),
        ),
        (
            "after=-1",
            bound(
                "too_small",
                "minimum",
                0,
                "after",
                "after must be at least 0".into(),
            ),
        ),
        (
            "before=0",
            bound(
                "too_small",
                "minimum",
                1,
                "before",
                "before must be at least 1".into(),
            ),
        ),
        (
            "limit=abc",
            json!({"code": "invalid_type", "expected": "integer", "received": "string",
                   "path": ["limit"], "message": "limit must be an integer from 1 to 1000"}),
        ),
    ];

    for (query, expected) in cases {
        // Act
        let response = app
            .get(&format!("{path}?{query}"), Some(&alice.token))
            .await;

        // Assert
        let body = assert_error(response, 400, INVALID_WINDOW).await;
        assert_eq!(body["data"]["issues"], json!([expected]), "{query}");
    }
}
