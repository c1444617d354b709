//! `/api/auth`: sign-up, login, logout, the current session and the session check. The
//! cookie's attributes, email normalisation, password bounds, identical answers for a
//! wrong email and a wrong password, and which sessions a logout ends.
//!
//! Argon2 is slow in debug builds (about a second a hash), so only the tests that are
//! about passwords sign up or log in; the rest use sessions made the CLI's way.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, json_body, session_cookie, spawn_app};

const INVALID_CREDENTIALS_BODY: &str = "Bad Request. Invalid body(email, password).";

/// The attributes of a fresh session cookie, sorted.
const SESSION_COOKIE_ATTRIBUTES: [&str; 5] = [
    "HttpOnly",
    "Max-Age=2592000",
    "Path=/",
    "SameSite=Lax",
    "Secure",
];

/// The attributes of the cookie that clears the session, sorted.
const CLEARED_COOKIE_ATTRIBUTES: [&str; 5] =
    ["HttpOnly", "Max-Age=0", "Path=/", "SameSite=Lax", "Secure"];

fn sorted(mut attributes: Vec<String>) -> Vec<String> {
    attributes.sort_unstable();
    attributes
}

/// `(primary_email, password_hash)` of a user, read straight from the database.
fn stored_user(app: &TestApp, id: &str) -> (Option<String>, Option<String>) {
    let row = app.database.row(&format!(
        "SELECT primary_email, password_hash FROM users WHERE id = '{id}'"
    ));
    (row[0].clone(), row[1].clone())
}

/// How many rows a table holds.
fn count_rows(app: &TestApp, table: &str) -> i64 {
    app.database.count(table)
}

/// The `(code, path)` of each issue a 400 should list, in order.
type ExpectedIssues = Vec<(&'static str, Value)>;

async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.post_json(
        "/api/auth/login",
        None,
        &json!({"email": email, "password": password}),
    )
    .await
}

/// `GET /api/auth/session` with `token`; the status and the JSON body.
async fn current_session(app: &TestApp, token: Option<&str>) -> (u16, Value) {
    let response = app.get("/api/auth/session", token).await;
    let status = response.status().as_u16();
    (status, json_body(response).await)
}

/// `HEAD /api/auth/check` with `token`, on the wire: the status line, and whatever
/// follows the headers (which must be nothing).
async fn raw_check(app: &TestApp, token: Option<&str>) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let cookie = token.map_or(String::new(), |token| {
        format!("Cookie: neptun-session={token}\r\n")
    });
    let request =
        format!("HEAD /api/auth/check HTTP/1.1\r\nHost: test\r\n{cookie}Connection: close\r\n\r\n");
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the server answers and closes the connection")
    .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a complete head");
    let status_line = head.lines().next().unwrap_or_default().to_owned();
    (status_line, body.to_owned())
}

#[tokio::test]
async fn sign_up_returns_the_new_user_and_a_30_day_session_cookie() {
    // Arrange
    let app = spawn_app().await;
    let password = "correct horse battery staple";

    // Act
    let response = app
        .post_json(
            "/api/auth/sign-up",
            None,
            &json!({"email": "grace@example.org", "password": password}),
        )
        .await;

    // Assert: the cookie.
    assert_eq!(response.status().as_u16(), 200);
    let (token, attributes) = session_cookie(&response).expect("a neptun-session cookie");
    assert_eq!(sorted(attributes), SESSION_COOKIE_ATTRIBUTES);
    assert_eq!(token.len(), 43, "256 bits of URL-safe base64: {token}");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );

    // The body: exactly {"user": {id, primary_email, created_at}}, with a generated id.
    let body = json_body(response).await;
    let user = &body["user"];
    let id = user["id"].as_str().expect("a string id").to_owned();
    assert!(
        !id.is_empty() && id != "grace@example.org",
        "generated id {id}"
    );
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "the id is safe in a path: {id}"
    );
    let created_at = user["created_at"].as_str().expect("created_at");
    assert!(created_at.ends_with('Z'), "{created_at}");
    chrono::DateTime::parse_from_rfc3339(created_at).expect("RFC 3339");
    assert_eq!(
        body,
        json!({"user": {"id": id, "primary_email": "grace@example.org", "created_at": created_at}})
    );

    // The password is stored only as an Argon2id hash.
    let (email, hash) = stored_user(&app, &id);
    assert_eq!(email.as_deref(), Some("grace@example.org"));
    let hash = hash.expect("a password hash");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(password), "{hash}");

    // The cookie is a live session for that user.
    assert_eq!(
        current_session(&app, Some(&token)).await,
        (200, body.clone())
    );
}

#[tokio::test]
async fn emails_are_stored_lower_cased_and_login_accepts_any_case_with_a_second_session() {
    // Arrange
    let app = spawn_app().await;
    let (user, signup_token) = app.sign_up("Ada@Example.ORG", "analytical engine").await;

    // Act
    let response = login(&app, "aDA@eXAMPLE.org", "analytical engine").await;

    // Assert
    assert_eq!(user["primary_email"], "ada@example.org");
    let id = user["id"].as_str().unwrap();
    assert_eq!(stored_user(&app, id).0.as_deref(), Some("ada@example.org"));
    assert_eq!(response.status().as_u16(), 200);
    let (login_token, attributes) = session_cookie(&response).expect("login sets a cookie");
    assert_eq!(sorted(attributes), SESSION_COOKIE_ATTRIBUTES);
    assert_ne!(login_token, signup_token, "login makes a new session");
    assert_eq!(json_body(response).await, json!({ "user": user }));
    for token in [&signup_token, &login_token] {
        assert_eq!(
            current_session(&app, Some(token)).await,
            (200, json!({ "user": user })),
            "both sessions are live"
        );
    }
    assert_eq!(count_rows(&app, "sessions"), 2);
}

#[tokio::test]
async fn passwords_of_8_and_1024_characters_are_accepted() {
    let app = spawn_app().await;
    let cases = [
        ("eight@example.org", "x".repeat(8)),
        // 1024 characters, 2048 bytes: the bound is on characters.
        ("long@example.org", "é".repeat(1024)),
    ];
    for (email, password) in cases {
        let (user, token) = app.sign_up(email, &password).await;
        assert_eq!(user["primary_email"], email);
        assert_eq!(current_session(&app, Some(&token)).await.0, 200, "{email}");
    }
}

#[tokio::test]
async fn passwords_outside_8_to_1024_characters_are_rejected_and_nothing_is_stored() {
    let app = spawn_app().await;
    let cases = [
        (
            "7 characters",
            json!("x".repeat(7)),
            "too_small",
            "minimum",
            8,
        ),
        (
            "7 characters in 14 bytes",
            json!("é".repeat(7)),
            "too_small",
            "minimum",
            8,
        ),
        ("empty", json!(""), "too_small", "minimum", 8),
        (
            "1025 characters",
            json!("x".repeat(1025)),
            "too_big",
            "maximum",
            1024,
        ),
    ];
    for (case, password, code, bound, value) in cases {
        let response = app
            .post_json(
                "/api/auth/sign-up",
                None,
                &json!({"email": "bounds@example.org", "password": password}),
            )
            .await;

        assert!(session_cookie(&response).is_none(), "no cookie for {case}");
        let body = assert_error(response, 400, INVALID_CREDENTIALS_BODY).await;
        let issues = body["data"]["issues"].as_array().unwrap();
        assert_eq!(issues.len(), 1, "one issue for {case}: {body}");
        assert_eq!(issues[0]["code"], code, "{case}");
        assert_eq!(issues[0]["path"], json!(["password"]), "{case}");
        assert_eq!(issues[0][bound], value, "{case}");
        assert_eq!(issues[0]["type"], "string", "{case}");
    }
    assert_eq!(count_rows(&app, "users"), 0);
}

#[tokio::test]
async fn malformed_invisible_and_look_alike_emails_are_rejected_as_invalid_string() {
    let app = spawn_app().await;
    let cases = [
        ("no at sign", "ada"),
        ("no domain", "ada@"),
        ("no local part", "@example.org"),
        ("an undotted domain", "ada@example"),
        ("a space", "a da@example.org"),
        ("two at signs", "a@b@example.org"),
        ("a domain ending in a dot", "ada@example."),
        ("an empty domain label", "a@b..c"),
        ("a label ending in a hyphen", "ada@example-.org"),
        ("a zero-width space", "ada\u{200b}@example.org"),
        ("a right-to-left override", "\u{202e}ada@example.org"),
        ("a Cyrillic look-alike", "\u{0430}da@example.org"),
        ("a non-ASCII domain", "ada@b\u{fc}cher.example"),
    ];
    for (case, email) in cases {
        let response = app
            .post_json(
                "/api/auth/sign-up",
                None,
                &json!({"email": email, "password": "long enough"}),
            )
            .await;

        let body = assert_error(response, 400, INVALID_CREDENTIALS_BODY).await;
        assert_eq!(
            body["data"]["issues"],
            json!([{
                "code": "invalid_string",
                "validation": "email",
                "path": ["email"],
                "message": "Invalid email"
            }]),
            "{case}"
        );
    }
    assert_eq!(count_rows(&app, "users"), 0);
}

#[tokio::test]
async fn sign_up_and_login_bodies_of_the_wrong_shape_are_rejected_naming_email_and_password() {
    let app = spawn_app().await;
    let cases: [(&str, &str, ExpectedIssues); 5] = [
        (
            "an empty object",
            "{}",
            vec![
                ("invalid_type", json!(["email"])),
                ("invalid_type", json!(["password"])),
            ],
        ),
        ("an array", "[]", vec![("invalid_type", json!([]))]),
        (
            "a string",
            r#""ada@example.org""#,
            vec![("invalid_type", json!([]))],
        ),
        (
            "fields of the wrong type",
            r#"{"email": 5, "password": true}"#,
            vec![
                ("invalid_type", json!(["email"])),
                ("invalid_type", json!(["password"])),
            ],
        ),
        (
            "malformed JSON",
            r#"{"email": "ada@example.org","#,
            vec![("invalid_json", json!([]))],
        ),
    ];
    for route in ["/api/auth/sign-up", "/api/auth/login"] {
        for (case, body, expected) in &cases {
            let response = app
                .post_raw(
                    &format!("{}{route}", app.address),
                    None,
                    Some("application/json"),
                    body.to_string(),
                )
                .await;

            assert!(session_cookie(&response).is_none(), "{route} {case}");
            let envelope = assert_error(response, 400, INVALID_CREDENTIALS_BODY).await;
            let issues: Vec<(&str, Value)> = envelope["data"]["issues"]
                .as_array()
                .unwrap()
                .iter()
                .map(|issue| (issue["code"].as_str().unwrap(), issue["path"].clone()))
                .collect();
            assert_eq!(&issues, expected, "{route} {case}");
        }
    }
    assert_eq!(count_rows(&app, "users"), 0);
    assert_eq!(count_rows(&app, "sessions"), 0);
}

#[tokio::test]
async fn an_email_already_taken_in_any_case_is_rejected_with_409() {
    // Arrange: a user made by the CLI owns the address.
    let app = spawn_app().await;
    app.with_admin(|admin| admin.create_user("ada", Some("ada@example.org"), None))
        .unwrap();

    // Act
    let response = app
        .post_json(
            "/api/auth/sign-up",
            None,
            &json!({"email": "ADA@Example.org", "password": "another password"}),
        )
        .await;

    // Assert
    assert!(session_cookie(&response).is_none());
    let body = assert_error(response, 409, "Conflict").await;
    assert_eq!(body["message"], "A user with this email already exists");
    assert_eq!(count_rows(&app, "users"), 1);
    assert_eq!(count_rows(&app, "sessions"), 0);
}

#[tokio::test]
async fn a_wrong_password_an_unknown_email_and_a_passwordless_user_get_identical_401s() {
    // Arrange
    let app = spawn_app().await;
    app.sign_up("ada@example.org", "the right password").await;
    app.with_admin(|admin| admin.create_user("cli-user", Some("cli@example.org"), None))
        .unwrap();
    let cases = [
        ("a wrong password", "ada@example.org", "the wrong password"),
        (
            "an unknown email",
            "nobody@example.org",
            "the right password",
        ),
        (
            "a user without a password",
            "cli@example.org",
            "any password",
        ),
    ];

    let mut bodies = Vec::new();
    for (case, email, password) in cases {
        // Act
        let response = login(&app, email, password).await;

        // Assert
        assert!(session_cookie(&response).is_none(), "no cookie for {case}");
        let body = assert_error(response, 401, "Unauthorized").await;
        bodies.push((case, body));
    }
    let (_, first) = &bodies[0];
    assert_eq!(first["message"], "Invalid email or password");
    for (case, body) in &bodies {
        assert_eq!(body, first, "{case} answers exactly like a wrong password");
    }
    assert_eq!(
        count_rows(&app, "sessions"),
        1,
        "only the sign-up's session"
    );
}

#[tokio::test]
async fn the_session_route_returns_the_user_of_a_session_made_by_the_cli() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let created_at = app
        .database
        .value(&format!(
            "SELECT {} FROM users WHERE id = 'alice'",
            app.database.timestamp("created_at")
        ))
        .unwrap();

    let answer = current_session(&app, Some(&alice.token)).await;

    assert_eq!(
        answer,
        (
            200,
            json!({"user": {"id": "alice", "primary_email": null, "created_at": created_at}})
        )
    );
}

#[tokio::test]
async fn the_session_and_check_routes_refuse_missing_unknown_and_expired_sessions() {
    // Arrange
    let app = spawn_app().await;
    app.seed_user("alice");
    let expired = app.create_session("alice", 0);
    let too_long = "a".repeat(300);
    let cases = [
        ("no cookie", None),
        ("an empty cookie", Some("")),
        ("an unknown token", Some("not-a-token-we-issued")),
        ("an expired session", Some(expired.as_str())),
        ("an over-long token", Some(too_long.as_str())),
    ];

    for (case, token) in cases {
        // Act
        let session = app.get("/api/auth/session", token).await;
        let check = app.send(Method::HEAD, "/api/auth/check", token, None).await;

        // Assert
        let body = assert_error(session, 401, "Unauthorized").await;
        assert_eq!(
            body,
            json!({
                "statusCode": 401,
                "statusMessage": "Unauthorized",
                "message": "A valid neptun-session cookie is required"
            }),
            "{case}"
        );
        assert_eq!(check.status().as_u16(), 401, "{case}");
    }
}

#[tokio::test]
async fn the_check_route_answers_200_or_401_with_an_empty_body() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let cases = [
        ("a live session", Some(alice.token.as_str()), "200 OK"),
        ("no session", None, "401 Unauthorized"),
        ("an unknown token", Some("nope"), "401 Unauthorized"),
    ];
    for (case, token, status) in cases {
        let (status_line, body) = raw_check(&app, token).await;

        assert_eq!(status_line, format!("HTTP/1.1 {status}"), "{case}");
        assert_eq!(body, "", "no body for {case}");
    }
}

#[tokio::test]
async fn logout_ends_only_the_presented_session_and_clears_the_cookie() {
    // Arrange: alice is signed in from two places.
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let other_device = app.create_session("alice", 30);

    // Act
    let response = app
        .send(Method::POST, "/api/auth/logout", Some(&alice.token), None)
        .await;

    // Assert
    assert_eq!(response.status().as_u16(), 200);
    let (value, attributes) = session_cookie(&response).expect("a clearing cookie");
    assert_eq!(value, "");
    assert_eq!(sorted(attributes), CLEARED_COOKIE_ATTRIBUTES);
    assert_eq!(json_body(response).await, json!({"ok": true}));

    let old = Some(alice.token.as_str());
    assert_eq!(current_session(&app, old).await.0, 401);
    let check = app.send(Method::HEAD, "/api/auth/check", old, None).await;
    assert_eq!(check.status().as_u16(), 401);
    let chats = app.get("/api/users/alice/chats", old).await;
    assert_error(chats, 401, "Unauthorized").await;

    let (status, body) = current_session(&app, Some(&other_device)).await;
    assert_eq!(status, 200, "the other session lives on");
    assert_eq!(body["user"]["id"], "alice");
    assert_eq!(count_rows(&app, "sessions"), 1);
}

#[tokio::test]
async fn logout_without_a_live_session_still_answers_200_and_clears_the_cookie() {
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let cases = [
        ("no cookie", None),
        ("an unknown token", Some("not-a-token-we-issued")),
        ("a live session", Some(alice.token.as_str())),
        ("the same session again", Some(alice.token.as_str())),
    ];
    for (case, token) in cases {
        let response = app
            .send(Method::POST, "/api/auth/logout", token, None)
            .await;

        assert_eq!(response.status().as_u16(), 200, "{case}");
        let (value, attributes) = session_cookie(&response).expect("a clearing cookie");
        assert_eq!(value, "", "{case}");
        assert_eq!(sorted(attributes), CLEARED_COOKIE_ATTRIBUTES, "{case}");
    }
    assert_eq!(count_rows(&app, "sessions"), 0);
}

/// Runs `neptun-chat user create` on the app's database with `stdin` as its input.
fn create_user_with_password(app: &TestApp, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = crate::process::neptun()
        .arg("--database")
        .arg(app.database.arg())
        .args(["user", "create"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts");
    // A command refused by its argument parser exits without reading: a broken pipe
    // here is expected then, and the exit status tells the rest.
    let _ = child
        .stdin
        .take()
        .expect("a stdin pipe")
        .write_all(stdin.as_bytes());
    child.wait_with_output().expect("the binary finishes")
}

#[tokio::test]
async fn an_operator_can_set_a_password_from_stdin_and_the_user_can_then_log_in() {
    // Arrange: the CLI works on the database of the running server.
    let app = spawn_app().await;

    // Act
    let made = create_user_with_password(
        &app,
        &["grace", "--email", "Grace@Example.org", "--password-stdin"],
        "correct horse battery\n",
    );

    // Assert
    assert!(made.status.success(), "{made:?}");
    assert_eq!(String::from_utf8_lossy(&made.stdout), "grace\n");
    let (_, hash) = stored_user(&app, "grace");
    let hash = hash.expect("a password hash is stored");
    assert!(hash.starts_with("$argon2id$") && !hash.contains("correct horse"));
    let response = login(&app, "grace@example.org", "correct horse battery").await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(json_body(response).await["user"]["id"], "grace");
}

#[tokio::test]
async fn a_password_from_stdin_must_be_8_to_1024_characters_and_needs_an_email() {
    let app = spawn_app().await;
    let cases: [(&[&str], &str, &str); 3] = [
        (
            &["u1", "--email", "u1@example.org", "--password-stdin"],
            "short\n",
            "8 to 1024",
        ),
        (
            &["u2", "--email", "u2@example.org", "--password-stdin"],
            &"x".repeat(1025),
            "8 to 1024",
        ),
        (
            &["u3", "--password-stdin"],
            "correct horse battery\n",
            "--email",
        ),
    ];
    for (args, stdin, complaint) in cases {
        let made = create_user_with_password(&app, args, stdin);
        let stderr = String::from_utf8_lossy(&made.stderr);
        assert!(!made.status.success(), "{args:?} must fail");
        assert!(stderr.contains(complaint), "{args:?}: {stderr}");
    }
    assert_eq!(count_rows(&app, "users"), 0);
}
