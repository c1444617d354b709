//! `--retention-days`: chats with no activity for that long are deleted in the
//! background, with their messages, and each deletion is recorded in the change feed;
//! and `compact`, which gives the space of deleted data back (SQLite's files are in
//! tests/api/sqlite_files.rs).

use std::time::{Duration, Instant};

use neptun_chat::cli::Cli;
use neptun_chat::config::Settings;

use crate::helpers::{json_body, spawn_app_after};
use crate::process::TempDb;

/// Polls `done` until it holds, for at most ten seconds.
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(Instant::now() < deadline, "{what} did not happen in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn chats_idle_past_the_retention_are_deleted_and_active_ones_kept_however_old() {
    // Arrange: a chat last active in 2020, and one created then but active now.
    let mut ids = (0, 0);
    let settings = Settings {
        retention_days: Some(30),
        ..Settings::default()
    };
    let app = spawn_app_after(settings, |database| {
        database
            .with_admin(|admin| admin.create_user("ada", None, None))
            .unwrap();
        let idle = database
            .with_admin(|admin| admin.create_chat("ada", "Idle", "m"))
            .unwrap();
        let recent = database
            .with_admin(|admin| admin.create_chat("ada", "Recent", "m"))
            .unwrap();
        database.execute(&format!(
            "UPDATE chat_conversations SET created_at = '2020-01-01T00:00:00.000Z' \
             WHERE id IN ({idle}, {recent})"
        ));
        database.execute(&format!(
            "UPDATE chat_conversations SET updated_at = '2020-01-02T00:00:00.000Z' \
             WHERE id = {idle}"
        ));
        ids = (idle, recent);
    })
    .await;
    let (idle, recent) = ids;
    let token = app.create_session("ada", 1);

    // Act: the server deletes it by itself, after start-up.
    eventually("the idle chat's deletion", async || {
        app.database.integer(&format!(
            "SELECT count(*) FROM chat_conversations WHERE id = {idle}"
        )) == 0
    })
    .await;

    // Assert: one round looked at both; only the idle one went.
    let list = json_body(app.get("/api/users/ada/chats", Some(&token)).await).await;
    let names: Vec<&str> = list["chats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|chat| chat["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Recent"], "{list}");
    let gone = app
        .get(&format!("/api/users/ada/chats/{idle}"), Some(&token))
        .await;
    assert_eq!(gone.status(), 404);
    let kept = app
        .get(&format!("/api/users/ada/chats/{recent}"), Some(&token))
        .await;
    assert_eq!(kept.status(), 200);
    let last = app
        .database
        .row("SELECT kind, chat_id FROM changes WHERE user_id = 'ada' ORDER BY seq DESC LIMIT 1");
    assert_eq!(
        last,
        [Some("chat_deleted".to_owned()), Some(idle.to_string())],
        "the deletion is in the change feed"
    );
}

#[test]
fn the_retention_option_reaches_the_settings_and_zero_is_refused() {
    let parse = |args: &[&str]| Cli::try_parse_checked_from([&["neptun-chat"], args].concat());
    let retention = |cli: Cli| cli.serve.settings(&cli.database).retention_days;

    assert_eq!(retention(parse(&[]).unwrap()), None, "off by default");
    assert_eq!(
        retention(parse(&["--retention-days", "90"]).unwrap()),
        Some(90)
    );
    let err = parse(&["--retention-days", "0"]).unwrap_err().to_string();
    assert!(err.contains("--retention-days"), "{err}");
}

#[test]
fn compact_keeps_every_row_and_prints_the_sizes_before_and_after() {
    // Arrange: a chat with messages, and one deleted.
    let db = TempDb::new();
    db.create_user("ada");
    let kept = db.create_chat("ada");
    let gone = db.create_chat("ada");
    let insert = |text: &str| {
        format!(
            "INSERT INTO chat_messages (chat_conversation_id, neptun_user_id, message, actor, created_at) \
             VALUES ({kept}, 'ada', {text}, 'user', '2026-01-01T00:00:00.000Z')"
        )
    };
    db.database
        .execute_each(&insert("'kept'"), &insert(&db.database.blob(b"kept")));
    // Counted as the program counts what it stores (`check` compares).
    db.database
        .execute("UPDATE users SET stored_messages = 1, stored_bytes = 4 WHERE id = 'ada'");
    db.database
        .execute(&format!("DELETE FROM chat_conversations WHERE id = {gone}"));

    // Act
    let (before, after) = db.compact();

    // Assert
    assert!(
        before > 0 && after > 0,
        "{before} bytes before, {after} after"
    );
    assert_eq!(db.database.count("chat_conversations"), 1);
    assert_eq!(db.database.stored_messages(kept).len(), 1);
    assert_eq!(db.cli(&["check"]).single_line(), "ok");
}
