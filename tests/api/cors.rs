//! CORS (`--cors-origin`): preflights from a listed origin are answered before any
//! session check, actual requests from it carry the headers that let the page read the
//! answer with the session cookie, other origins get no CORS headers, and without the
//! option nothing changes.

use neptun_chat::auth::SESSION_COOKIE;
use neptun_chat::config::Settings;
use reqwest::Method;
use reqwest::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, CONTENT_TYPE, COOKIE, HeaderMap,
    ORIGIN, VARY,
};
use serde_json::json;

use crate::helpers::{TestApp, json_body, spawn_app, spawn_app_with_settings};
use crate::process::{ServerProcess, TempDb, neptun, run};

const FRONT_END: &str = "http://localhost:3000";

async fn spawn_app_with_cors(origins: &[&str]) -> TestApp {
    spawn_app_with_settings(Settings {
        cors_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
        ..Settings::default()
    })
    .await
}

/// Sends a preflight for `method` on `path` from `origin`, without any cookie.
async fn preflight(
    address: &str,
    path: &str,
    origin: &str,
    method: &str,
    headers: &str,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .request(Method::OPTIONS, format!("{address}{path}"))
        .header(ORIGIN, origin)
        .header(ACCESS_CONTROL_REQUEST_METHOD, method);
    if !headers.is_empty() {
        request = request.header(ACCESS_CONTROL_REQUEST_HEADERS, headers);
    }
    request.send().await.expect("the preflight is sent")
}

fn header(headers: &HeaderMap, name: impl reqwest::header::AsHeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn lower_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|item| item.trim().to_ascii_lowercase())
        .filter(|item| !item.is_empty())
        .collect()
}

#[tokio::test]
async fn a_preflight_from_a_listed_origin_is_answered_before_authentication_on_every_route() {
    // Arrange
    let app = spawn_app_with_cors(&[FRONT_END, "https://app.example.org"]).await;
    let user = app.seed_user("alice");
    let chat = user.chat_id;
    let cases = [
        ("/api/auth/login", "POST", "content-type"),
        ("/api/auth/session", "GET", ""),
        ("/api/users/alice/chats", "GET", ""),
        ("/api/users/alice/chats", "POST", "content-type"),
        (
            &format!("/api/users/alice/chats/{chat}") as &str,
            "PATCH",
            "content-type",
        ),
        (
            &format!("/api/users/alice/chats/{chat}/messages"),
            "POST",
            "content-type, idempotency-key",
        ),
        (
            &format!("/api/users/alice/chats/{chat}/messages/last"),
            "DELETE",
            "",
        ),
    ];

    for (path, method, request_headers) in cases {
        // Act
        let response = preflight(&app.address, path, FRONT_END, method, request_headers).await;

        // Assert
        let case = format!("{method} {path}");
        assert_eq!(response.status().as_u16(), 200, "{case}: no 401, no 405");
        let headers = response.headers();
        assert_eq!(
            header(headers, ACCESS_CONTROL_ALLOW_ORIGIN),
            FRONT_END,
            "{case}"
        );
        assert_eq!(
            header(headers, ACCESS_CONTROL_ALLOW_CREDENTIALS),
            "true",
            "{case}"
        );
        assert!(
            lower_list(header(headers, ACCESS_CONTROL_ALLOW_METHODS))
                .contains(&method.to_ascii_lowercase()),
            "{case}: {headers:?}"
        );
        let allowed = lower_list(header(headers, ACCESS_CONTROL_ALLOW_HEADERS));
        for wanted in lower_list(request_headers) {
            assert!(
                allowed.contains(&wanted),
                "{case}: {wanted} allowed: {headers:?}"
            );
        }
        assert_eq!(header(headers, ACCESS_CONTROL_MAX_AGE), "600", "{case}");
        assert!(
            lower_list(header(headers, VARY)).contains(&"origin".to_owned()),
            "{case}: Vary: Origin: {headers:?}"
        );
    }
    let second = preflight(
        &app.address,
        "/api/auth/login",
        "https://app.example.org",
        "POST",
        "",
    )
    .await;
    assert_eq!(
        header(second.headers(), ACCESS_CONTROL_ALLOW_ORIGIN),
        "https://app.example.org",
        "each listed origin is answered with itself"
    );
}

#[tokio::test]
async fn an_actual_request_from_a_listed_origin_carries_the_headers_to_read_the_answer_with_credentials()
 {
    // Arrange
    let app = spawn_app_with_cors(&[FRONT_END]).await;
    let user = app.seed_user("alice");
    let send = |token: Option<String>| {
        let app = &app;
        let user_chat = user.chat_id;
        async move {
            let mut request = app
                .client
                .post(app.messages_url("alice", user_chat))
                .header(ORIGIN, FRONT_END)
                .header(CONTENT_TYPE, "application/json")
                .body(json!({"message": "hi", "actor": "user"}).to_string());
            if let Some(token) = token {
                request = request.header(COOKIE, format!("{SESSION_COOKIE}={token}"));
            }
            request.send().await.expect("the request is sent")
        }
    };

    // Act
    let stored = send(Some(user.token.clone())).await;
    let refused = send(None).await;
    let listed = app
        .client
        .get(format!("{}/api/users/alice/chats", app.address))
        .header(ORIGIN, FRONT_END)
        .send()
        .await
        .expect("the request is sent");

    // Assert
    for (response, status, case) in [
        (&stored, 200, "stored"),
        (&refused, 401, "no session on the messages route"),
        (&listed, 401, "no session under the session middleware"),
    ] {
        assert_eq!(response.status().as_u16(), status, "{case}");
        let headers = response.headers();
        assert_eq!(
            header(headers, ACCESS_CONTROL_ALLOW_ORIGIN),
            FRONT_END,
            "{case}: the page may read it"
        );
        assert_eq!(
            header(headers, ACCESS_CONTROL_ALLOW_CREDENTIALS),
            "true",
            "{case}"
        );
        let exposed = lower_list(header(headers, ACCESS_CONTROL_EXPOSE_HEADERS));
        assert!(
            exposed.contains(&"retry-after".to_owned())
                && exposed.contains(&"x-request-id".to_owned()),
            "{case}: {headers:?}"
        );
    }
    let body = json_body(stored).await;
    assert_eq!(body["chatMessage"]["message"], "hi", "{body}");
    assert_eq!(app.stored_messages(user.chat_id).len(), 1);
}

#[tokio::test]
async fn another_origin_gets_no_cors_headers_but_requests_without_origin_work_as_before() {
    // Arrange
    let app = spawn_app_with_cors(&[FRONT_END]).await;
    let user = app.seed_user("alice");
    let path = format!("/api/users/alice/chats/{}/messages", user.chat_id);

    // Act
    let foreign_preflight = preflight(
        &app.address,
        &path,
        "http://evil.example",
        "POST",
        "content-type",
    )
    .await;
    let foreign_get = app
        .client
        .get(format!("{}{path}", app.address))
        .header(ORIGIN, "http://evil.example")
        .header(COOKIE, format!("{SESSION_COOKIE}={}", user.token))
        .send()
        .await
        .expect("the request is sent");
    let plain = app.get(&path, Some(&user.token)).await;

    // Assert
    assert_ne!(
        foreign_preflight.status().as_u16(),
        200,
        "the preflight fails"
    );
    assert!(
        !foreign_preflight
            .headers()
            .contains_key(ACCESS_CONTROL_ALLOW_ORIGIN),
        "{:?}",
        foreign_preflight.headers()
    );
    // (actix-cors still adds Allow-Credentials; without Allow-Origin it means nothing.)
    assert_eq!(
        foreign_get.status().as_u16(),
        200,
        "served, but the browser hides it"
    );
    assert!(
        !foreign_get
            .headers()
            .contains_key(ACCESS_CONTROL_ALLOW_ORIGIN)
    );
    assert_eq!(plain.status().as_u16(), 200);
    assert!(!plain.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
}

#[tokio::test]
async fn without_cors_origins_a_preflight_gets_no_cors_headers() {
    let app = spawn_app().await;
    let user = app.seed_user("alice");

    let response = preflight(
        &app.address,
        &format!("/api/users/alice/chats/{}/messages", user.chat_id),
        FRONT_END,
        "POST",
        "content-type",
    )
    .await;

    assert_ne!(response.status().as_u16(), 200);
    assert!(
        !response
            .headers()
            .keys()
            .any(|name| name.as_str().starts_with("access-control-")),
        "{:?}",
        response.headers()
    );
}

#[tokio::test]
async fn cors_origins_come_from_the_option_or_from_the_environment_separated_by_commas() {
    let cases: [(&[&str], Option<&str>); 2] = [
        (
            &[
                "--cors-origin",
                "http://a.test:1",
                "--cors-origin",
                "HTTP://B.test:2",
            ],
            None,
        ),
        (&[], Some("http://a.test:1, http://b.test:2")),
    ];

    for (args, env) in cases {
        // Arrange
        let db = TempDb::new();
        let mut command = neptun();
        command
            .arg("--database")
            .arg(db.arg())
            .args(["serve", "--bind", "127.0.0.1:0"])
            .args(args);
        if let Some(env) = env {
            command.env("NEPTUN_CORS_ORIGIN", env);
        }
        let server = ServerProcess::start(command, db.dir.path());

        for origin in ["http://a.test:1", "http://b.test:2"] {
            // Act
            let response = preflight(
                &server.address(),
                "/api/auth/login",
                origin,
                "POST",
                "content-type",
            )
            .await;

            // Assert
            assert_eq!(
                header(response.headers(), ACCESS_CONTROL_ALLOW_ORIGIN),
                origin,
                "{args:?} {env:?}: {origin} is allowed (lower-cased)"
            );
        }
    }
}

#[test]
fn a_wildcard_or_malformed_cors_origin_is_refused_by_the_parser() {
    let cases = [
        ("*", "'*' would let every web site use the API"),
        ("http://localhost:3000/", "no path, not even a trailing '/'"),
        ("localhost:3000", "scheme://host[:port]"),
        ("ftp://files.example", "only http and https"),
        ("http://localhost:99999", "scheme://host[:port]"),
    ];

    for (origin, reason) in cases {
        for from_env in [false, true] {
            let db = TempDb::new();
            let mut command = neptun();
            command
                .arg("--database")
                .arg(db.arg())
                .args(["serve", "--bind", "127.0.0.1:0"]);
            if from_env {
                command.env("NEPTUN_CORS_ORIGIN", format!("http://fine.test,{origin}"));
            } else {
                command.args(["--cors-origin", origin]);
            }

            let outcome = run(&mut command);

            let case = format!("{origin:?} (from the environment: {from_env})");
            assert_eq!(outcome.status.code(), Some(2), "{case}: {outcome:#?}");
            let first = outcome.stderr.lines().next().unwrap_or_default();
            assert!(
                first.contains("'--cors-origin <ORIGIN>'"),
                "{case}: {first}"
            );
            assert!(first.contains(reason), "{case}: {first}");
            assert!(db.database.is_untouched(), "{case}: nothing was served");
        }
    }
}
