//! Failing honestly: only a taken unique value is a 409, and it says which. (A busy
//! database's 503 and other constraint failures' 500s are injected through SQLite's lock
//! and triggers, in [`crate::sqlite_engine`].)

use serde_json::json;

use crate::helpers::{TestApp, assert_error, spawn_app};
use crate::process::TempDb;

fn count(app: &TestApp, table: &str) -> i64 {
    app.database.count(table)
}

#[tokio::test]
async fn a_sign_up_with_a_taken_email_is_a_409_that_names_the_email() {
    let app = spawn_app().await;
    app.sign_up("ada@example.org", "a long password").await;

    let response = app
        .post_json(
            "/api/auth/sign-up",
            None,
            &json!({"email": "ada@example.org", "password": "another password"}),
        )
        .await;

    let body = assert_error(response, 409, "Conflict").await;
    assert_eq!(body["message"], "A user with this email already exists");
    assert_eq!(count(&app, "users"), 1);
}

#[test]
fn user_create_with_a_taken_id_or_email_says_which_is_taken() {
    let db = TempDb::new();
    db.cli(&["user", "create", "alice", "--email", "alice@example.com"])
        .single_line();
    let cases: [(&[&str], &str, &str); 2] = [
        (
            &["user", "create", "alice", "--email", "other@example.com"],
            "a user with id \"alice\" already exists",
            "email",
        ),
        (
            &["user", "create", "bob", "--email", "ALICE@example.com"],
            "a user with the email \"alice@example.com\" already exists",
            "id",
        ),
    ];

    for (args, says, not) in cases {
        let outcome = db.cli(args);

        let error = outcome.clear_error();
        assert!(error.contains(says), "{args:?}: {error}");
        assert!(!error.contains(not), "{args:?} mentions {not}: {error}");
    }
    assert_eq!(db.count("users"), 1);
}
