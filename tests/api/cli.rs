//! The `neptun-chat` binary itself: the admin commands' one-line output and exit codes,
//! which options each subcommand takes (the server's only on `serve` and the bare
//! command, `--database` everywhere) and their environment variables, the limits the
//! parser refuses, `healthcheck`, start-up failures, and the CLI working together with a
//! running server on the same database file.
//!
//! Every command runs with the `NEPTUN_*` variables and `RUST_LOG` removed, inside a
//! fresh temporary folder, and every wait is bounded (see [`crate::process`]).

use std::net::TcpListener;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use neptun_chat::auth::hash_token;
use serde_json::json;

use neptun_chat::auth::SESSION_COOKIE;
use reqwest::header::{CONTENT_TYPE, COOKIE};

use crate::database::blob_text;
use crate::helpers::{TestApp, assert_error, json_body, spawn_app};
use crate::process::{Outcome, ServerProcess, TempDb, free_port, neptun, run, run_with_input};

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
    let user = db.database.row("SELECT id, primary_email FROM users");
    assert_eq!(
        user,
        [
            Some("alice".to_owned()),
            Some("alice@example.com".to_owned())
        ]
    );
}

#[test]
fn user_create_without_an_email_stores_none() {
    let db = TempDb::new();

    assert_eq!(db.cli(&["user", "create", "bob"]).single_line(), "bob");

    let email = db
        .database
        .value("SELECT primary_email FROM users WHERE id = 'bob'");
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
    let row = db.database.row(&format!(
        "SELECT token_hash, user_id, {} FROM sessions",
        db.database.timestamp("expires_at")
    ));
    let [Some(hash), Some(user_id), Some(expires_at)] = &row[..] else {
        panic!("one session: {row:?}");
    };
    assert_eq!(
        *hash,
        blob_text(&hash_token(&token)),
        "the stored hash is the token's SHA-256"
    );
    assert_eq!(user_id, "alice");
    let expires_at = chrono::DateTime::parse_from_rfc3339(expires_at).expect("RFC 3339");
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
        let text = db
            .database
            .value(&format!(
                "SELECT {} FROM sessions WHERE token_hash = {}",
                db.database.timestamp("expires_at"),
                db.database.blob(&hash_token(token))
            ))
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
    let rows = db
        .database
        .rows("SELECT id, neptun_user_id, name, model FROM chat_conversations ORDER BY id");
    let rows: Vec<_> = rows
        .into_iter()
        .map(|row| {
            vec![
                row[0].clone(),
                row[1].clone(),
                db.database.text(&row[2]),
                db.database.text(&row[3]),
            ]
        })
        .collect();
    let owned = |id: i64, name: &str, model: &str| {
        [
            id.to_string(),
            "alice".to_owned(),
            name.to_owned(),
            model.to_owned(),
        ]
        .map(Some)
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
    let database = db.arg();
    let database = database.to_str().expect("UTF-8");

    let outcome = run(neptun().current_dir(db.dir.path()).args([
        "user",
        "create",
        "alice",
        "--database",
        database,
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

// ---- environment and help ------------------------------------------------------------

#[test]
fn the_database_option_wins_over_the_environment() {
    let db = TempDb::new();
    let ignored = db.dir.path().join("ignored.db");

    let outcome = run(neptun()
        .current_dir(db.dir.path())
        .env("NEPTUN_DATABASE", &ignored)
        .arg("--database")
        .arg(db.arg())
        .args(["user", "create", "alice"]));

    assert_eq!(outcome.single_line(), "alice");
    assert_eq!(db.count("users"), 1);
    assert!(!ignored.exists(), "the environment's path was not used");
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
            "copy",
            "export",
            "import",
            "compact",
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
const SERVER_OPTIONS: [(&str, &str); 20] = [
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
    ("--max-user-messages", "NEPTUN_MAX_USER_MESSAGES"),
    ("--max-user-bytes", "NEPTUN_MAX_USER_BYTES"),
    ("--cors-origin", "NEPTUN_CORS_ORIGIN"),
    ("--trusted-proxy", "NEPTUN_TRUSTED_PROXIES"),
    ("--login-failures", "NEPTUN_LOGIN_FAILURES"),
    (
        "--login-failures-per-address",
        "NEPTUN_LOGIN_FAILURES_PER_ADDRESS",
    ),
    ("--sign-ups-per-address", "NEPTUN_SIGN_UPS_PER_ADDRESS"),
    ("--hash-queue", "NEPTUN_HASH_QUEUE"),
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
        assert!(db.database.is_untouched(), "{args:?} did nothing");
    }
}

#[test]
fn a_zero_that_would_refuse_everything_is_refused_by_the_parser_from_the_command_line_or_env() {
    let cases = [
        (
            "--max-body-bytes",
            "NEPTUN_MAX_BODY_BYTES",
            "every request body",
        ),
        ("--max-batch", "NEPTUN_MAX_BATCH", "every batch"),
        (
            "--max-message-bytes",
            "NEPTUN_MAX_MESSAGE_BYTES",
            "every message text",
        ),
        (
            "--body-timeout-secs",
            "NEPTUN_BODY_TIMEOUT_SECS",
            "every request body",
        ),
        (
            "--max-connections",
            "NEPTUN_MAX_CONNECTIONS",
            "every connection",
        ),
        ("--write-queue", "NEPTUN_WRITE_QUEUE", "every write"),
    ];

    for (option, env, refused) in cases {
        for from_env in [false, true] {
            // Arrange
            let db = TempDb::new();
            let mut command = neptun();
            command
                .current_dir(db.dir.path())
                .arg("--database")
                .arg(db.arg());
            if from_env {
                command
                    .env(env, "0")
                    .args(["serve", "--bind", "127.0.0.1:0"]);
            } else {
                command.args(["serve", "--bind", "127.0.0.1:0", option, "0"]);
            }

            // Act
            let outcome = run(&mut command);

            // Assert
            let case = format!("{option} 0 (from the environment: {from_env})");
            assert_eq!(outcome.status.code(), Some(2), "{case}: {outcome:#?}");
            assert_eq!(outcome.stdout, "", "{case}");
            let first = outcome.stderr.lines().next().unwrap_or_default();
            assert!(
                first.starts_with(&format!("error: invalid value '0' for '{option}")),
                "{case}: the error names the option: {first}"
            );
            assert!(
                first.ends_with(&format!("0 would refuse {refused}; give at least 1")),
                "{case}: the error says why: {first}"
            );
            assert!(db.database.is_untouched(), "{case}: nothing was served");
        }
    }
}

#[test]
fn one_is_the_smallest_accepted_limit() {
    let db = TempDb::new();
    let _server = db.serve_with_args(&[
        "--max-body-bytes",
        "1",
        "--max-batch",
        "1",
        "--max-message-bytes",
        "1",
        "--body-timeout-secs",
        "1",
        "--max-connections",
        "1",
        "--write-queue",
        "1",
        "--write-rate-limit",
        "0",
    ]);
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
            .env("NEPTUN_DATABASE", db.arg())
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

// ---- user list, user delete, user set-password, session revoke --prefix ---------------

/// Runs `neptun-chat --database <the app's database> <args...>`.
fn app_cli(app: &TestApp, args: &[&str]) -> Outcome {
    run(neptun()
        .arg("--database")
        .arg(app.database.arg())
        .args(args))
}

#[test]
fn user_list_prints_every_user_oldest_first_with_email_and_creation_time_tab_separated() {
    // Arrange
    let db = TempDb::new();
    let empty = db.cli(&["user", "list"]);
    db.cli(&["user", "create", "alice", "--email", "Alice@Example.org"])
        .single_line();
    db.create_user("bob");

    // Act
    let outcome = db.cli(&["user", "list"]);

    // Assert
    assert!(empty.status.success(), "{empty:#?}");
    assert_eq!(empty.stdout, "", "no users, no lines");
    assert!(outcome.status.success(), "{outcome:#?}");
    let rows: Vec<Vec<&str>> = outcome
        .stdout
        .lines()
        .map(|line| line.split('\t').collect())
        .collect();
    assert_eq!(rows.len(), 2, "{}", outcome.stdout);
    assert_eq!(rows[0][..2], ["alice", "alice@example.org"]);
    assert_eq!(rows[1][..2], ["bob", ""], "no email: an empty field");
    for row in &rows {
        assert_eq!(row.len(), 3, "id, email, created: {row:?}");
        chrono::DateTime::parse_from_rfc3339(row[2]).expect("created is RFC 3339");
    }
    assert!(rows[0][2] <= rows[1][2], "oldest first: {rows:?}");
}

#[tokio::test]
async fn user_delete_removes_all_of_the_user_and_says_what_and_leaves_other_users_alone() {
    // Arrange: alice has two sessions, two chats, three messages and one idempotency
    // answer; bob has his own of each.
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    app.create_session("alice", 30);
    let second_chat = app.create_chat("alice");
    let bob = app.seed_user("bob");
    for user in [&alice, &bob] {
        let response = app
            .client
            .post(app.messages_url(&user.id, user.chat_id))
            .header(COOKIE, format!("{SESSION_COOKIE}={}", user.token))
            .header(CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", "key-1")
            .body(
                json!({"messages": [
                    {"content": "one", "role": "user"},
                    {"content": "two", "role": "assistant"},
                ]})
                .to_string(),
            )
            .send()
            .await
            .expect("the request is sent");
        assert_eq!(response.status().as_u16(), 200);
    }
    let third = app
        .post_raw(
            &app.messages_url("alice", second_chat),
            Some(&alice.token),
            Some("application/json"),
            json!({"message": "three", "actor": "user"}).to_string(),
        )
        .await;
    assert_eq!(third.status().as_u16(), 200);
    let count = |table: &str, column: &str, user: &str| -> i64 {
        app.database.integer(&format!(
            "SELECT count(*) FROM {table} WHERE {column} = '{user}'"
        ))
    };
    let tables = [
        ("users", "id"),
        ("sessions", "user_id"),
        ("chat_conversations", "neptun_user_id"),
        ("chat_messages", "neptun_user_id"),
        ("idempotency_keys", "user_id"),
    ];
    let bobs_before: Vec<i64> = tables.iter().map(|(t, c)| count(t, c, "bob")).collect();

    // Act
    let outcome = app_cli(&app, &["user", "delete", "alice"]);
    let again = app_cli(&app, &["user", "delete", "alice"]);

    // Assert
    assert_eq!(
        outcome.single_line(),
        "deleted user alice: 2 sessions, 2 chats, 3 messages, 1 idempotency keys"
    );
    for (table, column) in tables {
        assert_eq!(
            count(table, column, "alice"),
            0,
            "nothing of alice in {table}"
        );
    }
    let bobs_after: Vec<i64> = tables.iter().map(|(t, c)| count(t, c, "bob")).collect();
    assert_eq!(bobs_after, bobs_before, "bob keeps everything");
    let error = again.clear_error();
    assert!(error.contains("no user with id \"alice\""), "{error}");
    let refused = app
        .get(
            &format!("/api/users/alice/chats/{}/messages", alice.chat_id),
            Some(&alice.token),
        )
        .await;
    assert_eq!(refused.status().as_u16(), 401, "alice's session is gone");
    let kept = app
        .get(
            &format!("/api/users/bob/chats/{}/messages", bob.chat_id),
            Some(&bob.token),
        )
        .await;
    assert_eq!(kept.status().as_u16(), 200, "bob's session works");
}

#[tokio::test]
async fn user_set_password_replaces_the_password_and_revokes_the_users_sessions() {
    // Arrange
    let app = spawn_app().await;
    let (user, old_session) = app.sign_up("ada@example.org", "the old password").await;
    let user_id = user["id"].as_str().expect("a user id").to_owned();
    let login = |password: &'static str| {
        let app = &app;
        async move {
            app.post_json(
                "/api/auth/login",
                None,
                &json!({"email": "ada@example.org", "password": password}),
            )
            .await
            .status()
            .as_u16()
        }
    };
    assert_eq!(login("the old password").await, 200);

    // Act
    let outcome = run_with_input(
        neptun().arg("--database").arg(app.database.arg()).args([
            "user",
            "set-password",
            &user_id,
            "--password-stdin",
        ]),
        "a brand new password\n",
    );

    // Assert
    assert_eq!(
        outcome.single_line(),
        "2",
        "the sign-up's and the login's sessions were revoked"
    );
    assert_eq!(
        login("the old password").await,
        401,
        "the old password is refused"
    );
    assert_eq!(
        login("a brand new password").await,
        200,
        "the new one works"
    );
    let session = app.get("/api/auth/session", Some(&old_session)).await;
    assert_eq!(session.status().as_u16(), 401, "the old session is revoked");
}

#[test]
fn user_set_password_refuses_unknown_users_users_without_email_and_bad_passwords() {
    let db = TempDb::new();
    db.create_user("noemail");
    db.cli_with_input(
        &[
            "user",
            "create",
            "ada",
            "--email",
            "ada@example.org",
            "--password-stdin",
        ],
        "the first password\n",
    )
    .single_line();
    let hash_of_ada = || -> String {
        db.database
            .value("SELECT password_hash FROM users WHERE id = 'ada'")
            .expect("ada has a password")
    };
    let before = hash_of_ada();
    let cases: [(&[&str], &str, &str); 4] = [
        (&["ghost"], "long enough\n", "no user with id \"ghost\""),
        (&["noemail"], "long enough\n", "no email"),
        (&["ada"], "short\n", "8 to 1024 characters"),
        (&["ada"], "", "8 to 1024 characters"),
    ];

    for (user, input, expected) in cases {
        let mut args = vec!["user", "set-password"];
        args.extend_from_slice(user);
        args.push("--password-stdin");

        let outcome = db.cli_with_input(&args, input);

        let error = outcome.clear_error();
        assert!(error.contains(expected), "{user:?} {input:?}: {error}");
    }
    let without_flag = db.cli(&["user", "set-password", "ada"]);
    assert_eq!(without_flag.status.code(), Some(2), "{without_flag:#?}");
    assert!(
        without_flag.stderr.contains("--password-stdin"),
        "{without_flag:#?}"
    );
    assert_eq!(hash_of_ada(), before, "ada's password is unchanged");
}

#[test]
fn session_revoke_by_prefix_revokes_exactly_the_one_session_it_names() {
    // Arrange: two sessions whose hashes share their first two hex digits.
    let db = TempDb::new();
    db.create_user("alice");
    let expires = neptun_chat::domain::Timestamp::from_datetime(
        chrono::Utc::now() + chrono::Duration::days(1),
    );
    let mut first = [0x11; 32];
    first[..2].copy_from_slice(&[0xab, 0xcd]);
    let mut second = [0x22; 32];
    second[..2].copy_from_slice(&[0xab, 0xef]);
    db.database.with_admin(|admin| {
        for hash in [&first, &second] {
            admin
                .create_session("alice", hash, &expires)
                .expect("session stored");
        }
    });
    let listed = db.cli(&["session", "list", "alice"]);
    let prefixes: Vec<&str> = listed
        .stdout
        .lines()
        .filter_map(|line| line.split('\t').next())
        .collect();
    let hashes = || -> Vec<String> {
        db.database
            .rows("SELECT token_hash FROM sessions ORDER BY token_hash")
            .into_iter()
            .map(|row| row[0].clone().expect("a hash"))
            .collect()
    };

    // Act
    let ambiguous = db.cli(&["session", "revoke", "--prefix", "ab"]);
    let unknown = db.cli(&["session", "revoke", "--prefix", "abcdff"]);
    let not_hex = db.cli(&["session", "revoke", "--prefix", "xyz"]);
    let after_refusals = hashes();
    let revoked = db.cli(&["session", "revoke", "--prefix", "ABCD"]);

    // Assert
    assert!(prefixes.contains(&"abcd11111111"), "{listed:#?}");
    assert!(prefixes.contains(&"abef22222222"), "{listed:#?}");
    let error = ambiguous.clear_error();
    assert!(
        error.contains("2 sessions' hashes start with ab") && error.contains("more digits"),
        "{error}"
    );
    let error = unknown.clear_error();
    assert!(
        error.contains("no session's hash starts with abcdff"),
        "{error}"
    );
    assert_eq!(not_hex.status.code(), Some(2), "{not_hex:#?}");
    assert!(not_hex.stderr.contains("hex digits"), "{not_hex:#?}");
    assert_eq!(after_refusals.len(), 2, "the refusals revoked nothing");
    assert_eq!(revoked.single_line(), "1", "upper-case digits match too");
    assert_eq!(
        hashes(),
        vec![blob_text(&second)],
        "only the named session is gone"
    );
}

#[test]
fn chat_create_applies_the_apis_name_and_model_rules() {
    let db = TempDb::new();
    db.create_user("alice");
    let longest = "n".repeat(200);
    let too_long = "n".repeat(201);
    let refused: [(&str, &str, &str); 5] = [
        (
            &too_long,
            "m",
            "name: String must contain at most 200 character(s)",
        ),
        ("", "m", "name: String must contain at least 1 character(s)"),
        (
            " \t ",
            "m",
            "name: String must contain at least 1 character(s)",
        ),
        (
            "n",
            " ",
            "model: String must contain at least 1 character(s)",
        ),
        (
            "",
            &too_long,
            "name: String must contain at least 1 character(s); model: String must contain at most 200 character(s)",
        ),
    ];

    for (name, model, expected) in refused {
        let outcome = db.cli(&["chat", "create", "alice", "--name", name, "--model", model]);

        let error = outcome.clear_error();
        assert_eq!(
            error,
            format!("error: invalid chat: {expected}"),
            "{name:?} {model:?}"
        );
    }
    assert_eq!(db.count("chat_conversations"), 0, "no chat was made");
    let trimmed = db.cli(&[
        "chat", "create", "alice", "--name", "  Work  ", "--model", " m1 ",
    ]);
    let longest = db.cli(&[
        "chat", "create", "alice", "--name", &longest, "--model", "m",
    ]);
    trimmed.single_line();
    longest.single_line();
    let rows: Vec<(String, String)> = db
        .database
        .rows("SELECT name, model FROM chat_conversations ORDER BY id")
        .into_iter()
        .map(|row| {
            (
                db.database.text(&row[0]).unwrap(),
                db.database.text(&row[1]).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("Work".to_owned(), "m1".to_owned()),
            ("n".repeat(200), "m".to_owned())
        ],
        "trimmed as the API trims; 200 characters are allowed"
    );
}
