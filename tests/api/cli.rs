//! The `neptun-chat` binary itself: the admin commands' one-line output and exit codes,
//! the global options and their environment variables, `healthcheck`, start-up failures,
//! and the CLI working together with a running server on the same database file.
//!
//! Every command runs with the `NEPTUN_*` variables and `RUST_LOG` removed, inside a
//! fresh temporary folder, and every wait is bounded (see [`crate::process`]).

use std::fs;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use neptun_chat::auth::hash_token;
use serde_json::json;

use crate::helpers::{assert_error, json_body};
use crate::process::{ServerProcess, TempDb, free_port, neptun, run};

// ---- admin commands: output ----------------------------------------------------------

#[test]
fn user_create_prints_exactly_the_user_id_and_stores_the_email_lower_cased() {
    // Arrange
    let db = TempDb::new();

    // Act
    let outcome = db.cli(&["user", "create", "alice", "--email", "  Alice@Example.COM "]);

    // Assert
    assert_eq!(outcome.single_line(), "alice");
    assert_eq!(outcome.stderr, "", "nothing on stderr");
    let (id, email): (String, Option<String>) = db
        .connection()
        .query_row("SELECT id, primary_email FROM users", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("one user");
    assert_eq!(id, "alice");
    assert_eq!(email.as_deref(), Some("alice@example.com"));
}

#[test]
fn user_create_without_an_email_stores_none() {
    let db = TempDb::new();

    assert_eq!(db.cli(&["user", "create", "bob"]).single_line(), "bob");

    let email: Option<String> = db
        .connection()
        .query_row(
            "SELECT primary_email FROM users WHERE id = 'bob'",
            [],
            |r| r.get(0),
        )
        .expect("bob exists");
    assert_eq!(email, None);
}

#[test]
fn session_create_prints_a_43_character_url_safe_token_and_stores_only_its_hash() {
    // Arrange
    let db = TempDb::new();
    db.create_user("alice");

    // Act
    let before = chrono::Utc::now();
    let token = db.create_session("alice", &[]);
    let after = chrono::Utc::now();

    // Assert
    assert_eq!(token.len(), 43, "token {token:?}");
    let bytes = URL_SAFE_NO_PAD
        .decode(&token)
        .expect("URL-safe base64 without padding");
    assert_eq!(bytes.len(), 32);
    let (hash, user_id, expires_at): (Vec<u8>, String, String) = db
        .connection()
        .query_row(
            "SELECT token_hash, user_id, expires_at FROM sessions",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("one session");
    assert_eq!(
        hash,
        hash_token(&token),
        "the stored hash is the token's SHA-256"
    );
    assert_eq!(user_id, "alice");
    let expires_at = chrono::DateTime::parse_from_rfc3339(&expires_at).expect("RFC 3339");
    assert!(
        expires_at >= before + chrono::Duration::days(30)
            && expires_at <= after + chrono::Duration::days(30),
        "expires 30 days from now by default: {expires_at}"
    );
}

#[test]
fn session_create_honours_ttl_days_and_gives_distinct_tokens() {
    let db = TempDb::new();
    db.create_user("alice");

    let before = chrono::Utc::now();
    let week = db.create_session("alice", &["--ttl-days", "7"]);
    let expired = db.create_session("alice", &["--ttl-days", "0"]);
    let after = chrono::Utc::now();

    assert_ne!(week, expired);
    let expiry_of = |token: &str| -> chrono::DateTime<chrono::FixedOffset> {
        let text: String = db
            .connection()
            .query_row(
                "SELECT expires_at FROM sessions WHERE token_hash = ?1",
                [&hash_token(token)[..]],
                |r| r.get(0),
            )
            .expect("the session is stored");
        chrono::DateTime::parse_from_rfc3339(&text).expect("RFC 3339")
    };
    let week_expiry = expiry_of(&week);
    assert!(week_expiry >= before + chrono::Duration::days(7));
    assert!(week_expiry <= after + chrono::Duration::days(7));
    let expired_expiry = expiry_of(&expired);
    assert!(
        expired_expiry <= after,
        "ttl 0 is already expired: {expired_expiry}"
    );
}

#[test]
fn chat_create_prints_increasing_ids_and_stores_name_model_and_owner() {
    // Arrange
    let db = TempDb::new();
    db.create_user("alice");

    // Act
    let first = db.create_chat("alice");
    let named = db
        .cli(&[
            "chat",
            "create",
            "alice",
            "--name",
            "Trip plans",
            "--model",
            "gpt-x",
        ])
        .single_line()
        .parse::<i64>()
        .expect("a chat id");
    let third = db.create_chat("alice");

    // Assert
    assert!(first > 0, "ids are positive: {first}");
    assert!(
        first < named && named < third,
        "ids increase: {first} {named} {third}"
    );
    let rows: Vec<(i64, String, String, String)> = db
        .connection()
        .prepare("SELECT id, neptun_user_id, name, model FROM chat_conversations ORDER BY id")
        .expect("query prepares")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query runs")
        .collect::<Result<_, _>>()
        .expect("rows read");
    let owned = |id: i64, name: &str, model: &str| {
        (id, "alice".to_owned(), name.to_owned(), model.to_owned())
    };
    assert_eq!(
        rows,
        vec![
            owned(first, "New chat", "default"),
            owned(named, "Trip plans", "gpt-x"),
            owned(third, "New chat", "default"),
        ]
    );
}

#[test]
fn global_options_may_follow_the_subcommand() {
    let db = TempDb::new();
    let path = db.path.to_str().expect("a UTF-8 path");

    let outcome = run(neptun().current_dir(db.dir.path()).args([
        "user",
        "create",
        "alice",
        "--database",
        path,
    ]));

    assert_eq!(outcome.single_line(), "alice");
    assert_eq!(db.count("users"), 1);
}

// ---- admin commands: bad input -------------------------------------------------------

#[test]
fn a_duplicate_user_id_or_email_fails_with_already_exists_and_changes_nothing() {
    // Arrange
    let db = TempDb::new();
    assert_eq!(
        db.cli(&["user", "create", "alice", "--email", "alice@example.com"])
            .single_line(),
        "alice"
    );
    let cases: [(&[&str], &str); 3] = [
        (&["user", "create", "alice"], "the same id"),
        (
            &["user", "create", "alice", "--email", "other@example.com"],
            "the same id, another email",
        ),
        (
            &["user", "create", "bob", "--email", "ALICE@example.com"],
            "the same email in another case",
        ),
    ];

    for (args, case) in cases {
        // Act
        let outcome = db.cli(args);

        // Assert
        let error = outcome.clear_error();
        assert!(error.contains("already exists"), "{case}: {error}");
    }
    assert_eq!(db.count("users"), 1, "no user was added");
}

#[test]
fn session_and_chat_create_for_an_unknown_user_fail_naming_the_user() {
    let db = TempDb::new();
    db.create_user("alice");
    let cases: [(&[&str], &str); 3] = [
        (&["session", "create", "ghost"], "session create"),
        (&["chat", "create", "ghost"], "chat create"),
        (
            &["chat", "create", "ghost", "--name", "n", "--model", "m"],
            "chat create with options",
        ),
    ];

    for (args, case) in cases {
        let outcome = db.cli(args);

        let error = outcome.clear_error();
        assert!(
            error.contains("\"ghost\""),
            "{case} names the user: {error}"
        );
        assert!(
            error.contains("no user"),
            "{case} says the user is missing: {error}"
        );
    }
    assert_eq!(db.count("sessions"), 0);
    assert_eq!(db.count("chat_conversations"), 0);
}

#[test]
fn invalid_user_ids_and_emails_are_refused_without_creating_a_user() {
    let db = TempDb::new();
    db.create_user("alice");
    let too_long = "a".repeat(129);
    let cases: [(&[&str], &str); 6] = [
        (&["user", "create", ""], "an empty id"),
        (&["user", "create", "a/b"], "an id with a slash"),
        (&["user", "create", "/"], "a lone slash"),
        (&["user", "create", &too_long], "129 characters"),
        (&["user", "create", "tab\there"], "a control character"),
        (
            &["user", "create", "carol", "--email", "not-an-email"],
            "an invalid email",
        ),
    ];

    for (args, case) in cases {
        let outcome = db.cli(args);

        let error = outcome.clear_error();
        assert!(error.contains("invalid"), "{case}: {error}");
    }
    assert_eq!(db.count("users"), 1, "no user was added to alice");
}

#[test]
fn a_user_id_of_exactly_128_characters_is_accepted() {
    let db = TempDb::new();
    let id = "é".repeat(128);

    assert_eq!(db.cli(&["user", "create", &id]).single_line(), id);
}

#[test]
fn a_session_ttl_beyond_a_hundred_years_is_refused_without_a_panic() {
    let db = TempDb::new();
    db.create_user("alice");

    let outcome = db.cli(&["session", "create", "alice", "--ttl-days", "100000000"]);

    assert_eq!(
        outcome.status.code(),
        Some(2),
        "a usage error: {outcome:#?}"
    );
    assert!(!outcome.stderr.contains("panicked"), "{outcome:#?}");
    assert!(
        outcome
            .stderr
            .starts_with("error: invalid value '100000000' for '--ttl-days"),
        "{outcome:#?}"
    );
    assert!(outcome.stderr.contains("0..=36500"), "{outcome:#?}");
    assert_eq!(db.count("sessions"), 0);
}

// ---- the CLI and the server together -------------------------------------------------

#[tokio::test]
async fn cli_made_user_session_and_chat_work_with_the_running_server_and_admin_keeps_working() {
    // Arrange: everything made by the CLI before the server starts.
    let db = TempDb::new();
    db.create_user("alice");
    let token = db.create_session("alice", &[]);
    let first_chat = db.create_chat("alice");
    let server = db.serve(&[]);

    // Act
    let response = server
        .post(
            "alice",
            first_chat,
            &token,
            json!({"message": "Hello", "actor": "user"}).to_string(),
        )
        .await;

    // Assert
    assert_eq!(response.status().as_u16(), 200);
    let body = json_body(response).await;
    let message = &body["chatMessage"];
    assert!(message["id"].as_i64().is_some_and(|id| id > 0), "{body}");
    assert_eq!(message["chat_conversation_id"], first_chat);
    assert_eq!(message["neptun_user_id"], "alice");
    assert_eq!(message["message"], "Hello");
    assert_eq!(message["actor"], "user");

    // Act: admin commands while the server runs, then use what they made.
    let second_chat = db.create_chat("alice");
    db.create_user("bob");
    let bob_token = db.create_session("bob", &[]);
    let bob_chat = db.create_chat("bob");
    let batch = json!({"messages": [
        {"content": "one", "role": "user"},
        {"content": "two", "role": "assistant"},
    ]});
    let alice_batch = server
        .post("alice", second_chat, &token, batch.to_string())
        .await;
    let bob_single = server
        .post(
            "bob",
            bob_chat,
            &bob_token,
            json!({"message": "Hi", "actor": "user"}).to_string(),
        )
        .await;

    // Assert
    assert!(
        second_chat > first_chat,
        "chat ids increase: {first_chat} {second_chat}"
    );
    assert!(
        bob_chat > second_chat,
        "chat ids increase: {second_chat} {bob_chat}"
    );
    assert_eq!(alice_batch.status().as_u16(), 200);
    let body = json_body(alice_batch).await;
    let stored: Vec<(&str, &str, i64)> = body["chatMessages"]
        .as_array()
        .expect("chatMessages")
        .iter()
        .map(|m| {
            (
                m["message"].as_str().unwrap(),
                m["actor"].as_str().unwrap(),
                m["chat_conversation_id"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        stored,
        [
            ("one", "user", second_chat),
            ("two", "assistant", second_chat)
        ]
    );
    assert_eq!(bob_single.status().as_u16(), 200);
    let body = json_body(bob_single).await;
    assert_eq!(body["chatMessage"]["neptun_user_id"], "bob");
    assert_eq!(body["chatMessage"]["chat_conversation_id"], bob_chat);
    assert_eq!(db.count("chat_messages"), 4);
}

#[tokio::test]
async fn a_session_made_with_ttl_days_zero_is_refused_by_the_server() {
    let db = TempDb::new();
    db.create_user("alice");
    let expired = db.create_session("alice", &["--ttl-days", "0"]);
    let chat = db.create_chat("alice");
    let server = db.serve(&[]);

    let response = server
        .post(
            "alice",
            chat,
            &expired,
            json!({"message": "Hello", "actor": "user"}).to_string(),
        )
        .await;

    assert_error(response, 401, "Unauthorized").await;
    assert_eq!(db.count("chat_messages"), 0);
}

#[tokio::test]
async fn a_session_with_the_longest_ttl_is_accepted_by_the_server() {
    let db = TempDb::new();
    db.create_user("alice");
    let token = db.create_session("alice", &["--ttl-days", "36500"]);
    let chat = db.create_chat("alice");
    let server = db.serve(&[]);

    let response = server
        .post(
            "alice",
            chat,
            &token,
            json!({"message": "Hello", "actor": "user"}).to_string(),
        )
        .await;

    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn limits_from_the_environment_reach_the_server() {
    // Arrange
    let db = TempDb::new();
    db.create_user("alice");
    let token = db.create_session("alice", &[]);
    let chat = db.create_chat("alice");
    let server = db.serve(&[
        ("NEPTUN_MAX_BATCH", "2"),
        ("NEPTUN_MAX_MESSAGE_BYTES", "5"),
        ("NEPTUN_MAX_BODY_BYTES", "300"),
    ]);
    let message = |text: &str| json!({"message": text, "actor": "user"}).to_string();
    let three = json!({"messages": [
        {"content": "a", "role": "user"},
        {"content": "b", "role": "user"},
        {"content": "c", "role": "user"},
    ]});

    // Act
    let within = server.post("alice", chat, &token, message("12345")).await;
    let long_text = server.post("alice", chat, &token, message("123456")).await;
    let big_batch = server.post("alice", chat, &token, three.to_string()).await;
    let big_body = server
        .post(
            "alice",
            chat,
            &token,
            format!("{}{}", message("x"), " ".repeat(300)),
        )
        .await;

    // Assert
    assert_eq!(within.status().as_u16(), 200, "5 bytes are allowed");
    let long_text = json_body(long_text).await;
    assert_eq!(
        long_text["statusCode"], 400,
        "6 bytes are too long: {long_text}"
    );
    let big_batch = json_body(big_batch).await;
    assert_eq!(
        big_batch["statusCode"], 400,
        "3 messages are too many: {big_batch}"
    );
    assert_error(big_body, 413, "Payload Too Large").await;
    assert_eq!(
        db.count("chat_messages"),
        1,
        "only the valid message was stored"
    );
}

#[test]
fn running_without_arguments_serves_the_default_database_on_the_bind_address_from_the_environment()
{
    // Arrange
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut command = neptun();
    command
        .current_dir(dir.path())
        .env("NEPTUN_BIND", "127.0.0.1:0");

    // Act: the healthcheck finds the port the server reported through NEPTUN_BIND.
    let server = ServerProcess::start(command, dir.path());
    let check = run(neptun()
        .current_dir(dir.path())
        .env("NEPTUN_BIND", format!("127.0.0.1:{}", server.port()))
        .arg("healthcheck"));

    // Assert
    assert!(
        check.status.success(),
        "healthcheck via NEPTUN_BIND: {check:#?}"
    );
    assert_eq!(check.stdout, "");
    assert!(
        dir.path().join("data").join("neptun.db").is_file(),
        "the default database data/neptun.db was created:\n{}",
        server.log()
    );
}

// ---- healthcheck ---------------------------------------------------------------------

#[test]
fn healthcheck_exits_non_zero_quickly_when_nothing_listens() {
    let url = format!("http://127.0.0.1:{}/healthz", free_port());

    let started = Instant::now();
    let outcome = run(neptun().args(["healthcheck", "--url", &url]));
    let took = started.elapsed();

    let error = outcome.clear_error();
    assert!(error.contains(&url), "the error names the URL: {error}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn healthcheck_fails_when_the_server_answers_something_other_than_200() {
    let db = TempDb::new();
    let server = db.serve(&[]);
    let url = format!("{}/no-such-route", server.address());

    let outcome = run(neptun().args(["healthcheck", "--url", &url]));

    let error = outcome.clear_error();
    assert!(error.contains("404"), "{error}");
}

// ---- start-up failures ---------------------------------------------------------------

#[test]
fn serving_on_an_address_in_use_fails_with_one_clear_line_naming_the_address() {
    // Arrange
    let db = TempDb::new();
    let taken = TcpListener::bind("127.0.0.1:0").expect("an ephemeral port");
    let address = taken.local_addr().expect("a local address").to_string();

    // Act
    let outcome = db.cli(&["serve", "--bind", &address]);

    // Assert
    let error = outcome.clear_error();
    assert!(
        error.contains(&address),
        "the error names {address}: {error}"
    );
    assert!(error.to_lowercase().contains("in use"), "{error}");
}

#[test]
fn serving_a_plain_text_file_as_the_database_fails_clearly_and_leaves_it_untouched() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let text = dir.path().join("notes.txt");
    let content = "these are my notes, not a database\n".repeat(100);
    fs::write(&text, &content).expect("the text file is written");
    let path = text.to_str().expect("a UTF-8 path");

    for args in [
        &["serve", "--bind", "127.0.0.1:0"][..],
        &["user", "create", "alice"][..],
    ] {
        let outcome = run(neptun()
            .current_dir(dir.path())
            .args(["--database", path])
            .args(args));

        let error = outcome.clear_error();
        assert!(error.contains("database"), "{args:?}: {error}");
        assert!(error.contains(path), "{args:?} names the file: {error}");
    }
    assert_eq!(
        fs::read_to_string(&text).expect("the file is still there"),
        content
    );
    let names: Vec<_> = fs::read_dir(dir.path())
        .expect("the folder lists")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert_eq!(
        names,
        ["notes.txt"],
        "no -wal or -shm files were left beside it"
    );
}

#[test]
fn a_database_under_a_regular_file_fails_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = dir.path().join("plain");
    fs::write(&file, "x").expect("the file is written");
    let database = file.join("sub").join("neptun.db");
    let path = database.to_str().expect("a UTF-8 path");

    for args in [
        &["serve", "--bind", "127.0.0.1:0"][..],
        &["user", "create", "alice"][..],
    ] {
        let outcome = run(neptun()
            .current_dir(dir.path())
            .args(["--database", path])
            .args(args));

        let error = outcome.clear_error();
        assert!(error.contains("database"), "{args:?}: {error}");
        assert!(error.contains(path), "{args:?} names the path: {error}");
    }
}

#[test]
fn a_database_of_another_application_is_refused_and_left_untouched() {
    let db = TempDb::new();
    fs::create_dir_all(db.path.parent().expect("a parent")).expect("the folder");
    db.connection()
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me');")
        .expect("a foreign database");

    for args in [
        &["serve", "--bind", "127.0.0.1:0"][..],
        &["user", "create", "alice"][..],
    ] {
        let outcome = db.cli(args);

        let error = outcome.clear_error();
        assert!(error.contains("another application"), "{args:?}: {error}");
    }
    let tables: Vec<String> = db
        .connection()
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")
        .expect("query prepares")
        .query_map([], |r| r.get(0))
        .expect("query runs")
        .collect::<Result<_, _>>()
        .expect("rows read");
    assert_eq!(tables, ["notes"]);
    assert_eq!(db.count("notes"), 1);
}

#[test]
fn a_database_of_another_application_is_left_byte_for_byte_unchanged() {
    let db = TempDb::new();
    fs::create_dir_all(db.path.parent().expect("a parent")).expect("the folder");
    db.connection()
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me');")
        .expect("a foreign database");
    let before = fs::read(&db.path).expect("the file reads");

    db.cli(&["user", "create", "alice"]).clear_error();

    assert!(
        fs::read(&db.path).expect("the file reads") == before,
        "the file changed"
    );
    let mode: String = db
        .connection()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("the journal mode");
    assert_eq!(mode, "delete", "the journal mode is still the default");
}

// ---- environment and help ------------------------------------------------------------

#[test]
fn neptun_database_from_the_environment_is_used_and_its_missing_folders_are_created() {
    // Arrange
    let dir = tempfile::tempdir().expect("a temporary folder");
    let database = dir.path().join("deep").join("er").join("env.db");

    // Act
    let outcome = run(neptun()
        .current_dir(dir.path())
        .env("NEPTUN_DATABASE", &database)
        .args(["user", "create", "alice"]));

    // Assert
    assert_eq!(outcome.single_line(), "alice");
    assert!(database.is_file(), "{} was created", database.display());
    assert!(
        !dir.path().join("data").exists(),
        "the default path was not used"
    );
    let id: String = rusqlite::Connection::open(&database)
        .expect("the database opens")
        .query_row("SELECT id FROM users", [], |r| r.get(0))
        .expect("one user");
    assert_eq!(id, "alice");
}

#[test]
fn the_database_option_wins_over_the_environment() {
    let db = TempDb::new();
    let ignored = db.dir.path().join("ignored.db");

    let outcome = run(neptun()
        .current_dir(db.dir.path())
        .env("NEPTUN_DATABASE", &ignored)
        .arg("--database")
        .arg(&db.path)
        .args(["user", "create", "alice"]));

    assert_eq!(outcome.single_line(), "alice");
    assert_eq!(db.count("users"), 1);
    assert!(!ignored.exists(), "the environment's path was not used");
}

#[test]
fn without_a_database_option_the_default_is_data_neptun_db_in_the_working_folder() {
    let dir = tempfile::tempdir().expect("a temporary folder");

    let outcome = run(neptun()
        .current_dir(dir.path())
        .args(["user", "create", "alice"]));

    assert_eq!(outcome.single_line(), "alice");
    assert!(dir.path().join("data").join("neptun.db").is_file());
}

#[test]
fn help_lists_the_subcommands_and_the_global_options() {
    let outcome = run(neptun().arg("--help"));

    assert!(outcome.status.success(), "{outcome:#?}");
    let commands: Vec<&str> = outcome
        .stdout
        .lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        [
            "serve",
            "user",
            "session",
            "chat",
            "healthcheck",
            "backup",
            "check",
            "help"
        ],
        "{}",
        outcome.stdout
    );
    for option in [
        "--database",
        "NEPTUN_DATABASE",
        "--bind",
        "NEPTUN_BIND",
        "--max-body-bytes",
        "NEPTUN_MAX_BODY_BYTES",
        "--max-batch",
        "NEPTUN_MAX_BATCH",
        "--max-message-bytes",
        "NEPTUN_MAX_MESSAGE_BYTES",
        "--session-ttl-days",
        "NEPTUN_SESSION_TTL_DAYS",
        "--cookie-secure",
        "NEPTUN_COOKIE_SECURE",
        "--sync",
        "NEPTUN_SYNC",
        "--shutdown-grace-secs",
        "NEPTUN_SHUTDOWN_GRACE_SECS",
    ] {
        assert!(
            outcome.stdout.contains(option),
            "--help mentions {option}:\n{}",
            outcome.stdout
        );
    }
}

/// Every server option with its environment variable, as `serve --help` shows them.
const SERVER_OPTIONS: [(&str, &str); 12] = [
    ("--bind", "NEPTUN_BIND"),
    ("--max-body-bytes", "NEPTUN_MAX_BODY_BYTES"),
    ("--max-batch", "NEPTUN_MAX_BATCH"),
    ("--max-message-bytes", "NEPTUN_MAX_MESSAGE_BYTES"),
    ("--body-timeout-secs", "NEPTUN_BODY_TIMEOUT_SECS"),
    ("--max-connections", "NEPTUN_MAX_CONNECTIONS"),
    ("--write-queue", "NEPTUN_WRITE_QUEUE"),
    ("--write-rate-limit", "NEPTUN_WRITE_RATE_LIMIT"),
    ("--session-ttl-days", "NEPTUN_SESSION_TTL_DAYS"),
    ("--cookie-secure", "NEPTUN_COOKIE_SECURE"),
    ("--sync", "NEPTUN_SYNC"),
    ("--shutdown-grace-secs", "NEPTUN_SHUTDOWN_GRACE_SECS"),
];

#[test]
fn serve_help_lists_every_server_option_with_its_environment_variable() {
    let outcome = run(neptun().args(["serve", "--help"]));

    assert!(outcome.status.success(), "{outcome:#?}");
    for (option, env) in SERVER_OPTIONS
        .iter()
        .chain(&[("--database", "NEPTUN_DATABASE")])
    {
        for text in [option, env] {
            assert!(
                outcome.stdout.contains(text),
                "serve --help mentions {text}:\n{}",
                outcome.stdout
            );
        }
    }
}

#[test]
fn admin_subcommand_help_shows_the_database_and_its_own_options_but_no_server_option() {
    let cases: [&[&str]; 10] = [
        &["user", "create", "--help"],
        &["user", "--help"],
        &["session", "create", "--help"],
        &["session", "list", "--help"],
        &["session", "revoke", "--help"],
        &["chat", "create", "--help"],
        &["backup", "--help"],
        &["check", "--help"],
        &["healthcheck", "--help"],
        &["help", "user", "create"],
    ];

    for args in cases {
        let outcome = run(neptun().args(args));

        assert!(outcome.status.success(), "{args:?}: {outcome:#?}");
        assert!(
            outcome.stdout.contains("--database"),
            "{args:?} shows the global --database:\n{}",
            outcome.stdout
        );
        for (option, _) in SERVER_OPTIONS {
            // healthcheck probes the server's --bind address, so it has a --bind of its own.
            if option == "--bind" && args[0] == "healthcheck" {
                continue;
            }
            assert!(
                !outcome.stdout.contains(&format!("{option} ")),
                "{args:?} does not list the server option {option}:\n{}",
                outcome.stdout
            );
        }
    }
}

#[test]
fn a_server_option_before_a_subcommand_is_refused_with_where_it_belongs() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["--bind", "127.0.0.1:0", "serve"],
            "neptun-chat serve --bind",
        ),
        (
            &["--max-batch", "5", "serve"],
            "neptun-chat serve --max-batch",
        ),
        (
            &["--sync", "normal", "check"],
            "an option of 'serve', not of 'check'",
        ),
    ];

    for (args, advice) in cases {
        let db = TempDb::new();

        let outcome = db.cli(args);

        assert_eq!(outcome.status.code(), Some(2), "{args:?}: {outcome:#?}");
        assert!(outcome.stderr.contains(advice), "{args:?}: {outcome:#?}");
        assert!(!db.path.exists(), "{args:?} did nothing");
    }
}

#[tokio::test]
async fn no_subcommand_and_serve_both_serve_with_the_settings_from_the_environment() {
    for args in [&[][..], &["serve"][..]] {
        // Arrange
        let db = TempDb::new();
        db.create_user("alice");
        let token = db.create_session("alice", &[]);
        let chat = db.create_chat("alice");
        let mut command = neptun();
        command
            .current_dir(db.dir.path())
            .env("NEPTUN_DATABASE", &db.path)
            .env("NEPTUN_BIND", "127.0.0.1:0")
            .env("NEPTUN_MAX_BATCH", "2")
            .args(args);
        let server = ServerProcess::start(command, db.dir.path());
        let batch = |n: usize| {
            json!({"messages": vec![json!({"content": "a", "role": "user"}); n]}).to_string()
        };

        // Act
        let two = server.post("alice", chat, &token, batch(2)).await;
        let three = server.post("alice", chat, &token, batch(3)).await;

        // Assert
        assert_eq!(two.status().as_u16(), 200, "{args:?}: two are allowed");
        let three = json_body(three).await;
        assert_eq!(
            three["statusCode"], 400,
            "{args:?}: three are too many: {three}"
        );
        assert_eq!(
            db.count("chat_messages"),
            2,
            "{args:?}: the server used the database from NEPTUN_DATABASE"
        );
    }
}

#[test]
fn subcommand_help_lists_their_options() {
    let cases: [(&[&str], &[&str]); 4] = [
        (&["user", "create", "--help"], &["<USER_ID>", "--email"]),
        (
            &["session", "create", "--help"],
            &["<USER_ID>", "--ttl-days", "30"],
        ),
        (
            &["chat", "create", "--help"],
            &["<USER_ID>", "--name", "--model"],
        ),
        (&["healthcheck", "--help"], &["--url"]),
    ];

    for (args, expected) in cases {
        let outcome = run(neptun().args(args));

        assert!(outcome.status.success(), "{args:?}: {outcome:#?}");
        for text in expected {
            assert!(
                outcome.stdout.contains(text),
                "{args:?} mentions {text}:\n{}",
                outcome.stdout
            );
        }
    }
}
