//! The user's account as a whole: `GET /api/users/{user_id}/export` (NDJSON, export
//! format version 1), the `export` and `import` commands (a neptun-chat export, or a
//! ChatGPT data export's `conversations.json`), and `DELETE /api/users/{user_id}`, after
//! which nothing of the user is left: no row in any table that names them, no entry in
//! the search index, no session, and no open events stream.
//!
//! Argon2 is slow in debug builds, so only the tests about passwords sign up; the rest
//! make their users the CLI's way.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use neptun_chat::auth::SESSION_COOKIE;
use neptun_chat::config::{Backoff, Settings, ThrottleSettings};
use reqwest::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE, COOKIE, RETRY_AFTER};
use serde_json::{Value, json};

use crate::database::Backend;
use crate::helpers::{
    TestApp, assert_error, json_body, session_cookie, spawn_app, spawn_app_with_settings,
};
use crate::process::{Outcome, neptun, run};

/// The `message` of the 403 for a wrong password (or confirm).
const WRONG_CONFIRMATION: &str =
    "The password (or confirm, for an account without one) does not match";

/// The `message` of the 401 for a missing, unknown or ended session.
const NO_SESSION: &str = "A valid neptun-session cookie is required";

/// The `message` of the 403 for a session of another user.
const NOT_YOURS: &str = "The session does not belong to this user";

/// A ChatGPT data export's `conversations.json`: three conversations, eight messages to
/// import and four to leave out (see src/archive/chatgpt.rs).
const CHATGPT_FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/chatgpt/conversations.json"
);

/// How long a test waits for an events stream to send something or end.
const PATIENCE: Duration = Duration::from_secs(10);

// ---- helpers --------------------------------------------------------------------------

/// Runs `neptun-chat --database <the app's database> <args...>`.
fn cli(app: &TestApp, args: &[&str]) -> Outcome {
    run(neptun()
        .arg("--database")
        .arg(app.database.arg())
        .args(args))
}

/// Makes a user the CLI's way (`user create`: no email, no password, no chat) and a
/// session for them (`session create`); the session's token.
fn cli_user(app: &TestApp, id: &str) -> String {
    assert_eq!(cli(app, &["user", "create", id]).single_line(), id);
    cli(app, &["session", "create", id])
        .single_line()
        .to_owned()
}

/// Runs `neptun-chat import <user> <file> [extra...]`.
fn import(app: &TestApp, user: &str, file: &Path, extra: &[&str]) -> Outcome {
    let file = file.to_str().expect("a UTF-8 path");
    let mut args = vec!["import", user, file];
    args.extend_from_slice(extra);
    cli(app, &args)
}

/// `GET path` with `token`, expecting 200; the JSON body.
async fn get_ok(app: &TestApp, path: &str, token: &str) -> Value {
    let response = app.get(path, Some(token)).await;
    let status = response.status().as_u16();
    let body = json_body(response).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// Creates a chat through the API; the chat.
async fn create_chat(app: &TestApp, user: &str, token: &str, name: &str, model: &str) -> Value {
    let response = app
        .post_json(
            &format!("/api/users/{user}/chats"),
            Some(token),
            &json!({"name": name, "model": model}),
        )
        .await;
    let status = response.status().as_u16();
    let body = json_body(response).await;
    assert_eq!(status, 200, "creating chat {name:?}: {body}");
    body["chat"].clone()
}

/// The path of a chat's messages.
fn messages_path(user: &str, chat: i64) -> String {
    format!("/api/users/{user}/chats/{chat}/messages")
}

/// The id of a chat or a message.
fn id_of(object: &Value) -> i64 {
    object["id"].as_i64().expect("an id")
}

/// Posts `messages` (`(content, role)`) to `chat` as one batch; the stored messages.
async fn post_batch(
    app: &TestApp,
    user: &str,
    token: &str,
    chat: i64,
    messages: &[(&str, &str)],
) -> Vec<Value> {
    let body = json!({
        "messages": messages
            .iter()
            .map(|(content, role)| json!({"content": content, "role": role}))
            .collect::<Vec<_>>()
    });
    let response = app
        .post_json(&messages_path(user, chat), Some(token), &body)
        .await;
    let status = response.status().as_u16();
    let answer = json_body(response).await;
    assert_eq!(status, 200, "posting a batch: {answer}");
    answer["chatMessages"]
        .as_array()
        .expect("chatMessages")
        .clone()
}

/// Posts one message (the single form) to `chat`; the stored message.
async fn post_one(
    app: &TestApp,
    user: &str,
    token: &str,
    chat: i64,
    text: &str,
    actor: &str,
) -> Value {
    let response = app
        .post_json(
            &messages_path(user, chat),
            Some(token),
            &json!({"message": text, "actor": actor}),
        )
        .await;
    let status = response.status().as_u16();
    let answer = json_body(response).await;
    assert_eq!(status, 200, "posting {text:?}: {answer}");
    answer["chatMessage"].clone()
}

/// The messages of a chat as the API reads them back, in order.
async fn messages_of(app: &TestApp, user: &str, token: &str, chat: i64) -> Vec<Value> {
    let body = get_ok(app, &messages_path(user, chat), token).await;
    body["chatMessages"]
        .as_array()
        .expect("chatMessages")
        .clone()
}

/// The ids of the messages `GET .../search?q={q}` finds (`q` needs no encoding), sorted.
async fn hits(app: &TestApp, user: &str, token: &str, q: &str) -> Vec<i64> {
    let body = get_ok(app, &format!("/api/users/{user}/search?q={q}"), token).await;
    let mut hits: Vec<i64> = body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|hit| hit["message"]["id"].as_i64().expect("an id"))
        .collect();
    hits.sort_unstable();
    hits
}

/// The user's chats as the API lists them (newest activity first).
async fn chats_of(app: &TestApp, user: &str, token: &str) -> Vec<Value> {
    let body = get_ok(app, &format!("/api/users/{user}/chats"), token).await;
    body["chats"].as_array().expect("chats").clone()
}

/// `DELETE /api/users/{user}` with `token` and `body`.
async fn delete_account(app: &TestApp, user: &str, token: &str, body: &Value) -> reqwest::Response {
    app.delete(&format!("/api/users/{user}"), Some(token), Some(body))
        .await
}

/// `GET .../export` with `token`, expecting 200 and an NDJSON attachment that must not
/// be cached; the body.
async fn export_text(app: &TestApp, user: &str, token: &str) -> String {
    let response = app
        .get(&format!("/api/users/{user}/export"), Some(token))
        .await;
    assert_eq!(response.status().as_u16(), 200, "exporting {user}");
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header(CONTENT_TYPE), "application/x-ndjson");
    let disposition = header(CONTENT_DISPOSITION);
    assert!(
        disposition.starts_with("attachment; filename=\"neptun-chat-export-")
            && disposition.ends_with(".ndjson\""),
        "Content-Disposition {disposition:?}"
    );
    assert_eq!(header(CACHE_CONTROL), "no-store");
    response.text().await.expect("the export's body")
}

/// [`export_text`], each line parsed as JSON.
async fn export(app: &TestApp, user: &str, token: &str) -> Vec<Value> {
    lines_of(&export_text(app, user, token).await)
}

/// The lines of an NDJSON text, each parsed as JSON; the last one must be terminated.
fn lines_of(text: &str) -> Vec<Value> {
    assert!(
        text.ends_with('\n'),
        "the last line is terminated: {text:?}"
    );
    text.lines()
        .enumerate()
        .map(|(index, line)| {
            serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("line {} is not JSON ({err}): {line}", index + 1))
        })
        .collect()
}

/// An export's lines without the time it was made.
fn without_exported_at(lines: &[Value]) -> Vec<Value> {
    let mut lines = lines.to_vec();
    if let Some(header) = lines.first_mut().and_then(Value::as_object_mut) {
        header.remove("exported_at");
    }
    lines
}

/// An export's lines without what differs between two users holding the same chats:
/// the user, the time of the export, and every id (chats', messages', users').
fn without_ids(lines: &[Value]) -> Vec<Value> {
    let mut lines = without_exported_at(lines);
    if let Some(header) = lines.first_mut().and_then(Value::as_object_mut) {
        header.remove("user");
    }
    for line in &mut lines {
        if let Some(chat) = line.get_mut("chat").and_then(Value::as_object_mut) {
            chat.remove("id");
            chat.remove("neptun_user_id");
        }
        if let Some(message) = line.get_mut("message").and_then(Value::as_object_mut) {
            message.remove("id");
            message.remove("chat_conversation_id");
            message.remove("neptun_user_id");
        }
    }
    lines
}

/// Asserts that every message line of an export belongs to the chat line before it
/// and to `user`, and that chat and message ids increase.
fn assert_well_formed(lines: &[Value], user: &str) {
    let mut chat = None;
    let (mut last_chat, mut last_message) = (0, 0);
    for line in lines {
        if let Some(object) = line.get("chat") {
            assert_eq!(object["neptun_user_id"], user, "{line}");
            assert!(id_of(object) > last_chat, "chats in id order: {line}");
            last_chat = id_of(object);
            chat = Some(last_chat);
            last_message = 0;
        }
        if let Some(message) = line.get("message") {
            assert_eq!(message["neptun_user_id"], user, "{line}");
            assert_eq!(
                message["chat_conversation_id"].as_i64(),
                chat,
                "a message of the chat before it: {line}"
            );
            assert!(
                id_of(message) > last_message,
                "messages in id order: {line}"
            );
            last_message = id_of(message);
        }
    }
}

/// Every column of the schema that names a user, as `table.column`: `users.id` and
/// each column whose name ends in `user_id`, in whatever tables the schema has now.
fn user_columns(app: &TestApp) -> Vec<String> {
    let sql = match app.database.backend() {
        Backend::Sqlite => {
            "SELECT m.name, p.name FROM sqlite_schema AS m, pragma_table_info(m.name) AS p \
             WHERE m.type = 'table' AND p.name LIKE '%user_id' ORDER BY 1, 2"
        }
        Backend::Postgres => {
            "SELECT table_name, column_name FROM information_schema.columns \
             WHERE table_schema = 'public' AND column_name LIKE '%user_id' ORDER BY 1, 2"
        }
    };
    let mut columns = vec!["users.id".to_owned()];
    columns.extend(
        app.database
            .rows(sql)
            .into_iter()
            .map(|row| match row.as_slice() {
                [Some(table), Some(column)] => format!("{table}.{column}"),
                other => panic!("a table and a column: {other:?}"),
            }),
    );
    columns
}

/// How many rows of each table name `user`, by [`user_columns`]: `(table.column, rows)`.
fn rows_naming(app: &TestApp, user: &str) -> Vec<(String, i64)> {
    user_columns(app)
        .into_iter()
        .map(|column| {
            let (table, name) = column.split_once('.').expect("table.column");
            let rows = app.database.integer(&format!(
                "SELECT count(*) FROM {table} WHERE {name} = '{user}'"
            ));
            (column, rows)
        })
        .collect()
}

/// How many of the messages `ids` the search index holds: on SQLite, rows of the
/// `message_words` index; on PostgreSQL, whose words are a column of the message's own
/// row, messages that still have them.
fn indexed(app: &TestApp, ids: &[i64]) -> i64 {
    let ids = ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    app.database.integer(&match app.database.backend() {
        Backend::Sqlite => format!("SELECT count(*) FROM message_words WHERE rowid IN ({ids})"),
        Backend::Postgres => {
            format!("SELECT count(*) FROM chat_messages WHERE id IN ({ids}) AND search IS NOT NULL")
        }
    })
}

/// How many of the messages `ids` are stored.
fn stored(app: &TestApp, ids: &[i64]) -> i64 {
    let ids = ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    app.database.integer(&format!(
        "SELECT count(*) FROM chat_messages WHERE id IN ({ids})"
    ))
}

/// The ids of a list of messages (or chats).
fn ids(objects: &[Value]) -> Vec<i64> {
    objects.iter().map(id_of).collect()
}

/// A temporary folder holding `contents` as `name`; the folder (keep it) and the path.
fn file_with(name: &str, contents: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join(name);
    std::fs::write(&path, contents).expect("the file is written");
    (dir, path)
}

// ---- GET .../export ---------------------------------------------------------------------

#[tokio::test]
async fn an_export_holds_the_user_then_each_live_chat_followed_by_its_messages_then_the_counts() {
    // Arrange: ada's messages interleave across her chats; one chat is deleted; one is
    // empty. Bob's message must not show up.
    let app = spawn_app().await;
    let token = cli_user(&app, "ada");
    let bob_token = cli_user(&app, "bob");
    let bobs = create_chat(&app, "bob", &bob_token, "Bob's", "m").await;
    post_one(
        &app,
        "bob",
        &bob_token,
        id_of(&bobs),
        "bob's secret",
        "user",
    )
    .await;
    let first = create_chat(&app, "ada", &token, "Groceries", "gpt-4o").await;
    let (first_id, mut first_messages) = (id_of(&first), Vec::new());
    first_messages.push(post_one(&app, "ada", &token, first_id, "milk?", "user").await);
    first_messages.extend(
        post_batch(
            &app,
            "ada",
            &token,
            first_id,
            &[
                ("yes, and eggs", "assistant"),
                ("two\nlines", "user"),
                ("Ünïcödé 日本語 🥚", "system"),
            ],
        )
        .await,
    );
    let doomed = create_chat(&app, "ada", &token, "Doomed", "m").await;
    post_one(&app, "ada", &token, id_of(&doomed), "soon gone", "user").await;
    let second = create_chat(&app, "ada", &token, "Trips ✈️", "claude").await;
    let second_messages =
        vec![post_one(&app, "ada", &token, id_of(&second), "Kyoto", "user").await];
    // After the second chat's message: ids interleave across chats.
    first_messages.push(post_one(&app, "ada", &token, first_id, "and bread", "user").await);
    let empty = create_chat(&app, "ada", &token, "Empty", "m").await;
    let gone = app
        .delete(
            &format!("/api/users/ada/chats/{}", id_of(&doomed)),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(gone.status().as_u16(), 200);
    // The chats as they are now (their updated_at moved with each message).
    let mut chats = Vec::new();
    for chat in [&first, &second, &empty] {
        let path = format!("/api/users/ada/chats/{}", id_of(chat));
        chats.push(get_ok(&app, &path, &token).await["chat"].clone());
    }
    let created_at = app.database.value(&format!(
        "SELECT {} FROM users WHERE id = 'ada'",
        app.database.timestamp("created_at")
    ));
    let before = Utc::now().trunc_subsecs(3);

    // Act
    let lines = export(&app, "ada", &token).await;

    // Assert
    let after = Utc::now();
    let header = &lines[0];
    let exported_at: DateTime<Utc> = header["exported_at"]
        .as_str()
        .and_then(|at| at.parse().ok())
        .expect("exported_at is an RFC 3339 time");
    assert!(
        before <= exported_at && exported_at <= after,
        "{before} <= {exported_at} <= {after}"
    );
    assert_eq!(
        *header,
        json!({
            "format": "neptun-chat-export",
            "version": 1,
            "exported_at": header["exported_at"],
            "user": {"id": "ada", "primary_email": null, "created_at": created_at},
        }),
        "the header, without a password hash"
    );
    let mut expected = Vec::new();
    for (chat, messages) in [
        (&chats[0], &first_messages),
        (&chats[1], &second_messages),
        (&chats[2], &Vec::new()),
    ] {
        expected.push(json!({"chat": chat}));
        expected.extend(messages.iter().map(|message| json!({"message": message})));
    }
    expected.push(json!({"end": {"chats": 3, "messages": 6}}));
    assert_eq!(lines[1..], expected[..], "the chats, messages and end line");
    let doomed_id = id_of(&doomed);
    assert!(
        lines.iter().all(|line| line["chat"]["id"] != doomed_id
            && line["message"]["chat_conversation_id"] != doomed_id),
        "nothing of the deleted chat"
    );
    // The same messages as the API reads back, in the same order.
    for (chat, messages) in [
        (first_id, &first_messages),
        (id_of(&second), &second_messages),
    ] {
        assert_eq!(messages_of(&app, "ada", &token, chat).await, *messages);
    }
    assert_eq!(
        first_messages
            .iter()
            .map(|m| (m["message"].as_str().unwrap(), m["actor"].as_str().unwrap()))
            .collect::<Vec<_>>(),
        [
            ("milk?", "user"),
            ("yes, and eggs", "assistant"),
            ("two\nlines", "user"),
            ("Ünïcödé 日本語 🥚", "system"),
            ("and bread", "user"),
        ]
    );
    assert!(
        ids(&first_messages).windows(2).all(|w| w[0] < w[1])
            && first_messages[4]["id"].as_i64() > second_messages[0]["id"].as_i64(),
        "the first chat's last message came after the second chat's"
    );
}

/// A request that must be refused: what it is, the session it carries, its body (for
/// a DELETE of the account; `None`: a GET of the export), and the status and message
/// of the answer.
type Refused<'a> = (&'a str, Option<&'a str>, Option<Value>, u16, &'a str);

#[tokio::test]
async fn another_users_export_or_account_is_refused_and_no_session_gets_a_401() {
    // Arrange
    let app = spawn_app().await;
    let ada_token = cli_user(&app, "ada");
    let bob_token = cli_user(&app, "bob");
    let chat = create_chat(&app, "ada", &ada_token, "Mine", "m").await;
    post_one(&app, "ada", &ada_token, id_of(&chat), "private", "user").await;
    let before = rows_naming(&app, "ada");
    let bob = Some(bob_token.as_str());
    let cases: [Refused<'_>; 6] = [
        ("bob exports ada", bob, None, 403, NOT_YOURS),
        ("an export without a cookie", None, None, 401, NO_SESSION),
        (
            "an export with an unknown session",
            Some("no-such-session-token-no-such-session-token"),
            None,
            401,
            NO_SESSION,
        ),
        (
            "bob deletes ada, confirming his own id",
            bob,
            Some(json!({"confirm": "bob"})),
            403,
            NOT_YOURS,
        ),
        (
            "bob deletes ada, confirming hers",
            bob,
            Some(json!({"confirm": "ada"})),
            403,
            NOT_YOURS,
        ),
        (
            "a deletion without a cookie",
            None,
            Some(json!({"confirm": "ada"})),
            401,
            NO_SESSION,
        ),
    ];

    for (case, token, body, status, message) in cases {
        // Act
        let response = match &body {
            None => app.get("/api/users/ada/export", token).await,
            Some(body) => app.delete("/api/users/ada", token, Some(body)).await,
        };

        // Assert
        let reason = if status == 401 {
            "Unauthorized"
        } else {
            "Forbidden"
        };
        let envelope = assert_error(response, status, reason).await;
        assert_eq!(envelope["message"], message, "{case}");
        assert_eq!(
            rows_naming(&app, "ada"),
            before,
            "{case}: ada keeps everything"
        );
    }
}

// ---- export, import, export again ---------------------------------------------------------

#[tokio::test]
async fn an_export_imported_into_another_user_exports_again_the_same_but_for_ids() {
    // Arrange: chats with a batch, unicode, line breaks and strings that look like the
    // format itself; one renamed.
    let app = spawn_app().await;
    let token = cli_user(&app, "source");
    let tricky = [
        ("line one\nline two\n", "user"),
        ("tab\there, CR LF\r\nthere", "assistant"),
        (
            "quotes \" and \\ backslashes \\n (not a line break)\n{\"end\":{\"chats\":0,\"messages\":0}}",
            "user",
        ),
        ("\u{2028}line and paragraph separators\u{2029}", "assistant"),
        ("  kept as sent, spaces and all  ", "system"),
        ("\u{FEFF}a byte order mark, then text", "user"),
        ("control characters \u{1} \u{1f} \u{7f} and 𝄞", "assistant"),
    ];
    let long = "long ".repeat(2000);
    let first = create_chat(&app, "source", &token, "Ünïcödé 🚀 chat", "gpt-4o-mini").await;
    post_batch(&app, "source", &token, id_of(&first), &tricky).await;
    post_one(&app, "source", &token, id_of(&first), &long, "assistant").await;
    let second = create_chat(&app, "source", &token, "Plans", "claude-3").await;
    post_batch(
        &app,
        "source",
        &token,
        id_of(&second),
        &[
            ("日本語のテキスト", "user"),
            ("한국어 텍스트", "assistant"),
            ("עברית", "user"),
        ],
    )
    .await;
    let renamed = app
        .patch_json(
            &format!("/api/users/source/chats/{}", id_of(&second)),
            Some(&token),
            &json!({"name": "Plans, renamed"}),
        )
        .await;
    assert_eq!(renamed.status().as_u16(), 200);
    create_chat(&app, "source", &token, "Nothing yet", "m").await;
    let target_token = cli_user(&app, "target");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = dir.path().join("source.ndjson");

    // Act: the CLI writes the file, imports it into another user, and the API exports
    // that user.
    let written = cli(
        &app,
        &["export", "source", "--out", file.to_str().expect("UTF-8")],
    );
    let imported = import(&app, "target", &file, &[]);
    let original = export(&app, "source", &token).await;
    let copy_text = export_text(&app, "target", &target_token).await;
    let copy_by_cli = cli(&app, &["export", "target"]);

    // Assert
    assert!(written.status.success(), "{written:#?}");
    assert_eq!(written.stdout, "", "the export went to the file");
    let from_file = lines_of(&std::fs::read_to_string(&file).expect("the export file"));
    assert_eq!(
        without_exported_at(&from_file),
        without_exported_at(&original),
        "the CLI writes what the API serves"
    );
    assert_eq!(
        imported.single_line(),
        "imported 3 chats and 11 messages into user target"
    );
    let copy = lines_of(&copy_text);
    assert_eq!(original.len(), 1 + 3 + 11 + 1);
    assert_eq!(without_ids(&copy), without_ids(&original));
    assert_eq!(copy[0]["user"]["id"], "target");
    assert_well_formed(&original, "source");
    assert_well_formed(&copy, "target");
    let chat_ids = |lines: &[Value]| -> Vec<i64> {
        lines
            .iter()
            .filter_map(|line| line.get("chat").map(id_of))
            .collect()
    };
    let (old, new) = (chat_ids(&original), chat_ids(&copy));
    assert!(
        new.iter().all(|id| !old.contains(id)),
        "new ids: {old:?} {new:?}"
    );
    // What the import stored, read back through the API, holds the texts exactly.
    let texts: Vec<String> = messages_of(&app, "target", &target_token, new[0])
        .await
        .iter()
        .map(|m| m["message"].as_str().expect("a text").to_owned())
        .collect();
    let mut expected: Vec<String> = tricky.iter().map(|(text, _)| (*text).to_owned()).collect();
    expected.push(long);
    assert_eq!(texts, expected);
    assert!(copy_by_cli.status.success(), "{copy_by_cli:#?}");
    assert_eq!(
        without_exported_at(&lines_of(&copy_by_cli.stdout)),
        without_exported_at(&copy),
        "the CLI's export to standard output is the API's"
    );
}

#[tokio::test]
async fn a_chatgpt_export_imports_its_chats_with_their_names_times_and_order_and_is_searchable() {
    // Arrange
    let app = spawn_app().await;
    let token = cli_user(&app, "gpt-fan");

    // Act
    let outcome = import(&app, "gpt-fan", Path::new(CHATGPT_FIXTURE), &[]);

    // Assert
    assert_eq!(
        outcome.single_line(),
        "imported 3 chats and 8 messages into user gpt-fan \
         (4 hidden, tool or empty messages left out)"
    );
    let chats = chats_of(&app, "gpt-fan", &token).await;
    let summary: Vec<[&str; 4]> = chats
        .iter()
        .map(|chat| {
            ["name", "model", "created_at", "updated_at"].map(|key| chat[key].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        summary,
        [
            [
                "Sourdough starter ratios",
                "gpt-4o",
                "2024-06-14T07:47:14.567Z",
                "2024-06-14T07:48:26.000Z"
            ],
            [
                "Untitled chat",
                "gpt-4o",
                "2024-04-01T19:33:20.250Z",
                "2024-04-01T19:33:30.000Z"
            ],
            [
                "Packing list for Kyoto",
                "text-davinci-002-render-sha",
                "2023-07-22T04:26:40.000Z",
                "2023-07-22T04:26:53.000Z"
            ],
        ],
        "newest activity first"
    );
    let expected: [&[(&str, &str, &str)]; 3] = [
        &[
            (
                "user",
                "What ratio of flour to water should I feed a sourdough starter?",
                "2024-06-14T07:47:14.570Z",
            ),
            (
                "assistant",
                "Most bakers feed **1:1:1** by weight: starter, flour, water.\n\nA stiffer starter uses less water.",
                "2024-06-14T07:47:50.987Z",
            ),
            (
                "user",
                "And in grams for 50 g of starter?",
                "2024-06-14T07:48:20.400Z",
            ),
            (
                "assistant",
                "Add 50 g of flour and 50 g of water.",
                "2024-06-14T07:48:25.550Z",
            ),
        ],
        &[
            (
                "user",
                "What dessert is this? Crème brûlée? 日本語も",
                "2024-04-01T19:33:20.400Z",
            ),
            (
                "assistant",
                "Yes, that is crème brûlée: a baked custard under a caramelised sugar crust.\nはい、クレームブリュレです。",
                "2024-04-01T19:33:29.125Z",
            ),
        ],
        &[
            (
                "user",
                "What should I pack for Kyoto in November?",
                "2023-07-22T04:26:41.200Z",
            ),
            (
                "assistant",
                "Layers: a light down jacket, a sweater, and shoes you can slip off at temples.",
                "2023-07-22T04:26:41.200Z",
            ),
        ],
    ];
    let mut message_ids = Vec::new();
    for (chat, expected) in chats.iter().zip(expected) {
        let messages = messages_of(&app, "gpt-fan", &token, id_of(chat)).await;
        let got: Vec<(&str, &str, &str)> = messages
            .iter()
            .map(|m| {
                (
                    m["actor"].as_str().unwrap(),
                    m["message"].as_str().unwrap(),
                    m["created_at"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, expected, "the messages of {}", chat["name"]);
        assert!(ids(&messages).windows(2).all(|w| w[0] < w[1]));
        message_ids.push(ids(&messages));
    }
    // Found by search: "sourdough" only in the first question (the left-out call to
    // the browser also says it), "brulee" in both messages about the dessert.
    assert_eq!(
        hits(&app, "gpt-fan", &token, "sourdough").await,
        [message_ids[0][0]]
    );
    assert_eq!(
        hits(&app, "gpt-fan", &token, "brulee").await,
        message_ids[1]
    );
    assert_eq!(
        hits(&app, "gpt-fan", &token, "kyoto").await,
        [message_ids[2][0]]
    );
}

#[tokio::test]
async fn a_bad_import_file_fails_naming_the_place_and_stores_nothing() {
    // Arrange: a user with a chat of their own, and a real export to spoil.
    let app = spawn_app().await;
    let token = cli_user(&app, "importer");
    let own = create_chat(&app, "importer", &token, "Own", "m").await;
    post_one(
        &app,
        "importer",
        &token,
        id_of(&own),
        "already here",
        "user",
    )
    .await;
    let source_token = cli_user(&app, "source");
    let chat = create_chat(&app, "source", &source_token, "Source", "m").await;
    post_batch(
        &app,
        "source",
        &source_token,
        id_of(&chat),
        &[("a", "user"), ("b", "assistant")],
    )
    .await;
    let second = create_chat(&app, "source", &source_token, "Second", "m").await;
    post_one(&app, "source", &source_token, id_of(&second), "c", "user").await;
    let export = export_text(&app, "source", &source_token).await;
    let lines: Vec<&str> = export.lines().collect();
    assert_eq!(
        lines.len(),
        7,
        "header, chat, 2 messages, chat, message, end"
    );
    let truncated = format!("{}\n", lines[..6].join("\n"));
    let mut bad_actor = lines.clone();
    let robot = bad_actor[3].replace("\"actor\":\"assistant\"", "\"actor\":\"robot\"");
    bad_actor[3] = &robot;
    let bad_actor = format!("{}\n", bad_actor.join("\n"));
    let mut conversations: Value =
        serde_json::from_str(&std::fs::read_to_string(CHATGPT_FIXTURE).expect("the fixture"))
            .expect("the fixture is JSON");
    // The last conversation's answer, after two good conversations.
    conversations[2]["mapping"]["d4c3b2a1-0f9e-4d8c-b7a6-5f4e3d2c1b0a"]["message"]["author"]["role"] =
        json!("robot");
    let unknown_role = conversations.to_string();
    let fixture = std::fs::read_to_string(CHATGPT_FIXTURE).expect("the fixture");
    // (case, file, --format, place, problem)
    let cases: [(&str, &str, &str, &str, &str); 5] = [
        (
            "an export without its end line",
            &truncated,
            "auto",
            "line 7",
            "the file ends before its end line: the export was cut short",
        ),
        (
            "an export with an unknown actor",
            &bad_actor,
            "auto",
            "line 4",
            "message.actor \"robot\" is not one of user, assistant, system",
        ),
        (
            "a ChatGPT export with an unknown role",
            &unknown_role,
            "auto",
            "conversations[2].mapping[\"d4c3b2a1-0f9e-4d8c-b7a6-5f4e3d2c1b0a\"].message.author.role",
            "is \"robot\", not one of user, assistant, system or tool",
        ),
        (
            "a ChatGPT export read as a neptun-chat export",
            &fixture,
            "neptun",
            "line 1",
            "EOF while parsing a list",
        ),
        (
            "a neptun-chat export read as a ChatGPT export",
            &export,
            "chatgpt",
            "line 2, column 1",
            "trailing characters",
        ),
    ];
    let chats_before = chats_of(&app, "importer", &token).await;
    let rows_before = rows_naming(&app, "importer");

    for (case, contents, format, place, problem) in cases {
        let (_dir, file) = file_with("import.json", contents.as_bytes());

        // Act
        let outcome = import(&app, "importer", &file, &["--format", format]);

        // Assert
        let error = outcome.clear_error();
        assert!(
            error.contains(&format!("{place}: {problem}")),
            "{case}: names {place}: {error}"
        );
        assert!(
            error.ends_with("nothing was imported"),
            "{case}: says nothing was imported: {error}"
        );
        assert_eq!(
            chats_of(&app, "importer", &token).await,
            chats_before,
            "{case}: the chats are as they were"
        );
        assert_eq!(
            rows_naming(&app, "importer"),
            rows_before,
            "{case}: no row was added"
        );
    }
}

#[tokio::test]
async fn an_import_that_the_database_refuses_half_way_stores_nothing() {
    // Arrange: a test-only trigger refuses the last conversation's question, after two
    // chats of the file have been stored in the import's transaction.
    let app = spawn_app().await;
    let token = cli_user(&app, "importer");
    let rows_before = rows_naming(&app, "importer");
    app.database.execute_each(
        "CREATE TRIGGER refuse_kyoto BEFORE INSERT ON chat_messages \
         WHEN NEW.message = 'What should I pack for Kyoto in November?' \
         BEGIN SELECT RAISE(ABORT, 'forced failure'); END;",
        "CREATE FUNCTION refuse_kyoto() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF NEW.message = 'What should I pack for Kyoto in November?' THEN \
         RAISE EXCEPTION 'forced failure'; END IF; RETURN NEW; END $$; \
         CREATE TRIGGER refuse_kyoto BEFORE INSERT ON chat_messages \
         FOR EACH ROW EXECUTE FUNCTION refuse_kyoto();",
    );

    // Act
    let outcome = import(&app, "importer", Path::new(CHATGPT_FIXTURE), &[]);

    // Assert
    assert!(!outcome.status.success(), "{outcome:#?}");
    assert_ne!(outcome.status.code(), Some(101), "no panic: {outcome:#?}");
    assert!(
        outcome.stderr.contains("forced failure"),
        "the database's refusal, not another error: {outcome:#?}"
    );
    assert_eq!(outcome.stdout, "", "{outcome:#?}");
    assert_eq!(
        chats_of(&app, "importer", &token).await,
        Vec::<Value>::new()
    );
    assert_eq!(rows_naming(&app, "importer"), rows_before);
    assert_eq!(
        app.database
            .value("SELECT stored_messages FROM users WHERE id = 'importer'")
            .as_deref(),
        Some("0"),
        "the quota count is as it was"
    );
}

// ---- DELETE /api/users/{user_id} --------------------------------------------------------

#[tokio::test]
async fn a_wrong_password_or_a_confirm_does_not_delete_an_account_that_has_a_password() {
    // Arrange
    let app = spawn_app().await;
    let (user, token) = app
        .sign_up("ada@example.org", "correct horse battery")
        .await;
    let ada = user["id"].as_str().expect("the user id").to_owned();
    let chat = create_chat(&app, &ada, &token, "Kept", "m").await;
    post_one(&app, &ada, &token, id_of(&chat), "still here", "user").await;
    let before = rows_naming(&app, &ada);
    let cases = [
        (
            "a wrong password",
            json!({"password": "wrong horse battery"}),
        ),
        ("confirm with the account's own id", json!({"confirm": ada})),
    ];

    for (case, body) in cases {
        // Act
        let response = delete_account(&app, &ada, &token, &body).await;

        // Assert
        assert!(
            session_cookie(&response).is_none(),
            "{case}: the cookie is kept"
        );
        let envelope = assert_error(response, 403, "Forbidden").await;
        assert_eq!(envelope["message"], WRONG_CONFIRMATION, "{case}");
        assert_eq!(rows_naming(&app, &ada), before, "{case}: nothing deleted");
        let session = app.get("/api/auth/session", Some(&token)).await;
        assert_eq!(
            session.status().as_u16(),
            200,
            "{case}: the session is kept"
        );
    }
}

#[tokio::test]
async fn deleting_an_account_with_its_password_leaves_no_row_naming_it_and_ends_its_sessions() {
    // Arrange: ada has two sessions, two chats, three messages (two of them stored with
    // an Idempotency-Key) and search words for each; bob has his own.
    let app = spawn_app().await;
    let (user, token) = app
        .sign_up("ada@example.org", "correct horse battery")
        .await;
    let ada = user["id"].as_str().expect("the user id").to_owned();
    let second_session = app.create_session(&ada, 30);
    let recipes = create_chat(&app, &ada, &token, "Recipes", "gpt-4o").await;
    let keyed = app
        .client
        .post(app.messages_url(&ada, id_of(&recipes)))
        .header(COOKIE, format!("{SESSION_COOKIE}={token}"))
        .header(CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", "key-1")
        .body(
            json!({"messages": [
                {"content": "pancakes", "role": "user"},
                {"content": "flour, eggs, milk", "role": "assistant"},
            ]})
            .to_string(),
        )
        .send()
        .await
        .expect("the request is sent");
    assert_eq!(keyed.status().as_u16(), 200);
    let mut message_ids = crate::helpers::chat_message_ids(&json_body(keyed).await);
    let trips = create_chat(&app, &ada, &token, "Trips", "m").await;
    message_ids.push(id_of(
        &post_one(
            &app,
            &ada,
            &token,
            id_of(&trips),
            "pancakes in Kyoto?",
            "user",
        )
        .await,
    ));
    let bob = app.seed_user("bob");
    post_one(
        &app,
        "bob",
        &bob.token,
        bob.chat_id,
        "pancakes for bob",
        "user",
    )
    .await;
    let bobs_before = rows_naming(&app, "bob");
    let adas_before = rows_naming(&app, &ada);
    let expected_columns = [
        "chat_conversations.neptun_user_id",
        "chat_messages.neptun_user_id",
        "changes.user_id",
        "idempotency_keys.user_id",
        "sessions.user_id",
        "users.id",
    ];
    for column in expected_columns {
        assert!(
            adas_before.iter().any(|(c, rows)| c == column && *rows > 0),
            "ada has rows in {column}: {adas_before:?}"
        );
    }
    assert_eq!(indexed(&app, &message_ids), 3, "ada's messages are indexed");

    // Act
    let response = delete_account(
        &app,
        &ada,
        &token,
        &json!({"password": "correct horse battery"}),
    )
    .await;

    // Assert: the answer counts what went, and clears the cookie.
    let (cleared, attributes) = session_cookie(&response).expect("a clearing cookie");
    assert_eq!(cleared, "");
    assert!(
        attributes.iter().any(|a| a == "Max-Age=0"),
        "{attributes:?}"
    );
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        json_body(response).await,
        json!({"deleted": {"sessions": 2, "chats": 2, "messages": 3, "idempotency_keys": 1}})
    );
    // Both sessions are gone, and so is the login.
    for session in [&token, &second_session] {
        let refused = app.get("/api/auth/session", Some(session)).await;
        assert_error(refused, 401, "Unauthorized").await;
    }
    let refused = app
        .get(&format!("/api/users/{ada}/export"), Some(&token))
        .await;
    assert_error(refused, 401, "Unauthorized").await;
    let login = app
        .post_json(
            "/api/auth/login",
            None,
            &json!({"email": "ada@example.org", "password": "correct horse battery"}),
        )
        .await;
    let envelope = assert_error(login, 401, "Unauthorized").await;
    assert_eq!(envelope["message"], "Invalid email or password");
    // No row anywhere names ada, and the search index holds none of her messages.
    let adas_after = rows_naming(&app, &ada);
    assert!(
        adas_after.iter().all(|(_, rows)| *rows == 0),
        "rows naming ada: {adas_after:?}"
    );
    assert_eq!(stored(&app, &message_ids), 0);
    assert_eq!(indexed(&app, &message_ids), 0, "ada's words left the index");
    assert_eq!(hits(&app, "bob", &bob.token, "pancakes").await.len(), 1);
    // Bob keeps everything, and his session works.
    assert_eq!(rows_naming(&app, "bob"), bobs_before);
    assert_eq!(chats_of(&app, "bob", &bob.token).await.len(), 1);
}

#[tokio::test]
async fn an_account_without_a_password_is_deleted_by_confirming_its_own_id_and_nothing_else() {
    // Arrange: a user made by the CLI, with a chat made by the CLI and one message.
    let app = spawn_app().await;
    let token = cli_user(&app, "cli-made");
    let chat: i64 = cli(&app, &["chat", "create", "cli-made"])
        .single_line()
        .parse()
        .expect("a chat id");
    let message = post_one(&app, "cli-made", &token, chat, "hello", "user").await;
    let before = rows_naming(&app, "cli-made");
    let refused = [
        ("another id", json!({"confirm": "other"})),
        ("its id in other case", json!({"confirm": "CLI-MADE"})),
        ("a password", json!({"password": "a password it never had"})),
    ];

    // Act
    let mut refusals = Vec::new();
    for (case, body) in refused {
        let response = delete_account(&app, "cli-made", &token, &body).await;
        refusals.push((case, assert_error(response, 403, "Forbidden").await));
        assert_eq!(
            rows_naming(&app, "cli-made"),
            before,
            "{case}: nothing deleted"
        );
    }
    let deleted = delete_account(&app, "cli-made", &token, &json!({"confirm": "cli-made"})).await;

    // Assert
    for (case, envelope) in refusals {
        assert_eq!(envelope["message"], WRONG_CONFIRMATION, "{case}");
    }
    assert_eq!(deleted.status().as_u16(), 200);
    assert_eq!(
        json_body(deleted).await,
        json!({"deleted": {"sessions": 1, "chats": 1, "messages": 1, "idempotency_keys": 0}})
    );
    let after = rows_naming(&app, "cli-made");
    assert!(after.iter().all(|(_, rows)| *rows == 0), "{after:?}");
    assert_eq!(indexed(&app, &[id_of(&message)]), 0);
    let gone = app.get("/api/users/cli-made/chats", Some(&token)).await;
    assert_error(gone, 401, "Unauthorized").await;
    assert_eq!(cli(&app, &["user", "list"]).stdout, "", "no users left");
}

// ---- the events stream of a deleted account ---------------------------------------------

type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// The next event of a stream, or `None` once it has ended; fails after [`PATIENCE`].
async fn next_event(events: &mut Events) -> Option<Event> {
    match tokio::time::timeout(PATIENCE, events.next()).await {
        Ok(Some(Ok(event))) => Some(event),
        Ok(Some(Err(err))) => panic!("the stream failed: {err}"),
        Ok(None) => None,
        Err(_) => panic!("neither an event nor the end within {PATIENCE:?}"),
    }
}

#[tokio::test]
async fn the_events_stream_of_a_deleted_account_ends() {
    // Arrange: ada's stream follows her changes (a chat made the CLI's way arrives).
    let app = spawn_app().await;
    let token = cli_user(&app, "ada");
    let response = app.get("/api/users/ada/events", Some(&token)).await;
    assert_eq!(response.status().as_u16(), 200, "opening the stream");
    let mut events: Events = Box::pin(response.bytes_stream().eventsource());
    let marker = app
        .with_admin(|admin| admin.create_chat("ada", "Marker", "m"))
        .expect("chat created");
    let event = next_event(&mut events).await.expect("an event");
    assert_eq!(event.event, "chat_created", "{event:?}");
    let data: Value = serde_json::from_str(&event.data).expect("JSON data");
    assert_eq!(data["chat"]["id"], marker);

    // Act
    let deleted = delete_account(&app, "ada", &token, &json!({"confirm": "ada"})).await;
    assert_eq!(deleted.status().as_u16(), 200);

    // Assert: the stream ends, within the deadline, without another event.
    if let Some(event) = next_event(&mut events).await {
        panic!("expected the end of the stream, got {event:?}");
    }
}

#[tokio::test]
async fn a_large_account_is_gone_at_once_and_its_rows_follow_a_slice_at_a_time() {
    // Arrange: more messages than one purge slice takes.
    let app = spawn_app().await;
    let token = cli_user(&app, "big");
    let chat = id_of(&create_chat(&app, "big", &token, "Long", "m").await);
    let batch: Vec<(&str, &str)> = vec![("a line of the long chat", "user"); 400];
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.extend(self::ids(
            &post_batch(&app, "big", &token, chat, &batch).await,
        ));
    }

    // Act
    let deleted = delete_account(&app, "big", &token, &json!({"confirm": "big"})).await;

    // Assert: the answer counts everything, the account is gone for every request at
    // once, and no row names it once the writer has purged the rest.
    assert_eq!(deleted.status().as_u16(), 200);
    assert_eq!(
        json_body(deleted).await,
        json!({"deleted": {"sessions": 1, "chats": 1, "messages": 1200, "idempotency_keys": 0}})
    );
    let gone = app.get("/api/users/big/chats", Some(&token)).await;
    assert_error(gone, 401, "Unauthorized").await;
    assert_eq!(cli(&app, &["user", "list"]).stdout, "", "not listed");
    let again = cli(&app, &["session", "create", "big"]);
    assert!(!again.status.success(), "no session for it: {again:?}");
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let left = rows_naming(&app, "big");
        if left.iter().all(|(_, rows)| *rows == 0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {left:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stored(&app, &ids), 0);
    assert_eq!(indexed(&app, &ids), 0);
    assert_eq!(
        cli(&app, &["user", "create", "big"]).single_line(),
        "big",
        "the id is free again"
    );
}

#[tokio::test]
async fn an_export_is_the_state_of_one_instant_while_writes_go_on() {
    // Arrange: an export far larger than the sockets buffer (about 20 MB), so the
    // server is still reading it while the writes below happen.
    let app = spawn_app().await;
    let token = cli_user(&app, "ada");
    let chat = id_of(&create_chat(&app, "ada", &token, "Long", "m").await);
    let text = "x".repeat(2000);
    // Answers: deleting the last turn below takes only the user's message after them.
    let batch: Vec<(&str, &str)> = vec![(text.as_str(), "assistant"); 500];
    for _ in 0..20 {
        post_batch(&app, "ada", &token, chat, &batch).await;
    }
    let begun = app.get("/api/users/ada/export", Some(&token)).await;
    assert_eq!(begun.status().as_u16(), 200);

    // Act: with the export's answer begun and not read, a message, a chat and a
    // deletion of the last turn.
    let added = post_one(
        &app,
        "ada",
        &token,
        chat,
        "written during the export",
        "user",
    )
    .await;
    let other = create_chat(&app, "ada", &token, "Made during the export", "m").await;
    let removed = app
        .delete(
            &format!("{}/last", messages_path("ada", chat)),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(removed.status().as_u16(), 200);
    let lines = lines_of(&begun.text().await.expect("the export's body"));

    // Assert: exactly the 10,000 messages there were when it began, none of the changes.
    assert_eq!(
        lines.last(),
        Some(&json!({"end": {"chats": 1, "messages": 10_000}}))
    );
    let messages: Vec<&Value> = lines
        .iter()
        .filter_map(|line| line.get("message"))
        .collect();
    assert_eq!(messages.len(), 10_000);
    assert!(
        messages
            .iter()
            .all(|message| message["message"] == text.as_str())
    );
    assert!(!messages.iter().any(|message| message["id"] == added["id"]));
    let chats: Vec<&Value> = lines.iter().filter_map(|line| line.get("chat")).collect();
    assert_eq!(chats.len(), 1);
    assert_ne!(chats[0]["id"], other["id"]);
    // The next export sees them.
    let after = export(&app, "ada", &token).await;
    assert_eq!(
        after.last(),
        Some(&json!({"end": {"chats": 2, "messages": 10_000}})),
        "the message written, then deleted as the last turn, and the new chat"
    );
}

#[tokio::test]
async fn wrong_passwords_at_account_deletion_count_towards_the_login_back_off() {
    // Arrange: one free failure per account, then a wait.
    let app = spawn_app_with_settings(Settings {
        throttle: ThrottleSettings {
            login_per_account: Backoff {
                free: 1,
                first_lock: Duration::from_secs(60),
                max_lock: Duration::from_secs(60),
                forget_after: Duration::from_secs(600),
            },
            login_per_address: Backoff::OFF,
            sign_up_per_address: Backoff::OFF,
            ..ThrottleSettings::default()
        },
        ..Settings::default()
    })
    .await;
    let (user, token) = app
        .sign_up("ada@example.org", "correct horse battery")
        .await;
    let ada = user["id"].as_str().expect("the user id").to_owned();
    let wrong = delete_account(
        &app,
        &ada,
        &token,
        &json!({"password": "wrong horse battery"}),
    )
    .await;
    assert_error(wrong, 403, "Forbidden").await;

    // Act: the right password, too soon.
    let right = delete_account(
        &app,
        &ada,
        &token,
        &json!({"password": "correct horse battery"}),
    )
    .await;

    // Assert: refused before any hashing, and nothing deleted; so is a login.
    assert_eq!(right.status().as_u16(), 429);
    assert!(right.headers().contains_key(RETRY_AFTER));
    let session = app.get("/api/auth/session", Some(&token)).await;
    assert_eq!(session.status().as_u16(), 200, "the account is still there");
    let login = app
        .post_json(
            "/api/auth/login",
            None,
            &json!({"email": "ada@example.org", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(login.status().as_u16(), 429);
}
