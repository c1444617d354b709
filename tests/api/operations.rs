//! What operators rely on: `/healthz` and `/readyz`, the Prometheus metrics, the
//! security headers, `X-Request-Id`, the per-session write rate limit, the body
//! timeout, and logs that never carry secrets or message texts.
//!
//! The metrics recorder is global to the process and shared by every test in this
//! binary, so metric assertions compare before and after (at least, never exactly).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use neptun_chat::auth::SESSION_COOKIE;
use neptun_chat::config::{Limits, Settings};
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, assert_error, json_body, session_cookie, spawn_app, spawn_app_with_settings,
};
use crate::process::TempDb;

/// The longest any wait in this module may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);

/// The create-messages route as the metrics and the log name it.
const MESSAGES_ROUTE: &str = "/api/users/{user_id}/chats/{chat_id}/messages";

// ---- health and readiness ------------------------------------------------------------

#[tokio::test]
async fn healthz_and_readyz_answer_without_a_session() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let health = app.get("/healthz", None).await;
    let ready = app.get("/readyz", None).await;

    // Assert
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(json_body(health).await, json!({"status": "ok"}));
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(json_body(ready).await, json!({"status": "ready"}));
}

// ---- metrics -------------------------------------------------------------------------

/// One sample line of the Prometheus text format.
#[derive(Debug)]
pub(crate) struct Sample {
    pub(crate) name: String,
    labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

/// Parses the sample lines of a Prometheus text exposition (comments skipped).
pub(crate) fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a value after the series");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("a number in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').expect(line))),
                None => (series, BTreeMap::new()),
            };
            Sample {
                name: name.to_owned(),
                labels,
                value,
            }
        })
        .collect()
}

/// `a="x",b="y\"z"` -> {a: x, b: y"z}
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("key=\"value\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("a closing quote") {
                (_, '\\') => value.push(chars.next().expect("an escaped char").1),
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    labels
}

/// The metrics right now.
struct Metrics {
    text: String,
    samples: Vec<Sample>,
}

impl Metrics {
    async fn scrape(app: &TestApp) -> Metrics {
        let response = app.get("/metrics", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()[CONTENT_TYPE]
            .to_str()
            .expect("ASCII")
            .to_owned();
        assert!(
            content_type.starts_with("text/plain"),
            "content type {content_type}"
        );
        let text = response.text().await.expect("a body");
        let samples = parse_metrics(&text);
        Metrics { text, samples }
    }

    /// The value of the series `name` with exactly these labels; 0 if it is absent.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .map_or(0.0, |s| s.value)
    }

    /// Whether any series of `name` exists.
    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

#[tokio::test]
async fn metrics_count_stored_messages_batches_and_requests_by_route_template() {
    // Arrange
    let app = spawn_app().await;
    let user = app.seed_user("metrics-user-5b1e");
    let before = Metrics::scrape(&app).await;

    // Act
    let batch = json!({"messages": [
        {"content": "m1", "role": "user"},
        {"content": "m2", "role": "assistant"},
        {"content": "m3", "role": "user"},
    ]});
    assert_eq!(app.post_messages(&user, &batch).await.status(), 200);
    let single = json!({"message": "m4", "actor": "user"});
    assert_eq!(app.post_messages(&user, &single).await.status(), 200);
    let after = Metrics::scrape(&app).await;

    // Assert
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    assert!(delta("neptun_messages_stored_total", &[]) >= 4.0);
    assert!(delta("neptun_batches_stored_total", &[]) >= 1.0);
    let post_200 = [
        ("method", "POST"),
        ("route", MESSAGES_ROUTE),
        ("status", "200"),
    ];
    assert!(
        delta("neptun_http_requests_total", &post_200) >= 2.0,
        "{}",
        after.text
    );
    assert!(
        delta(
            "neptun_http_request_duration_seconds_bucket",
            &[("route", MESSAGES_ROUTE), ("le", "+Inf")]
        ) >= 2.0,
        "{}",
        after.text
    );
    assert!(
        after
            .samples
            .iter()
            .filter(|s| s.name == "neptun_http_request_duration_seconds_bucket")
            .filter(|s| s.labels.get("route").map(String::as_str) == Some(MESSAGES_ROUTE))
            .count()
            > 2,
        "the latency histogram has buckets: {}",
        after.text
    );
    assert!(after.has("neptun_http_request_duration_seconds_count"));
    assert!(after.has("neptun_db_write_queue_depth"), "{}", after.text);
    assert!(after.value("neptun_db_write_queue_depth", &[]) >= 0.0);
    assert!(
        after.value("neptun_http_open_connections", &[]) >= 1.0,
        "the scrape's own connection is open: {}",
        after.text
    );
    assert!(after.value("process_resident_memory_bytes", &[]) > 0.0);
}

#[tokio::test]
async fn metric_labels_never_carry_user_ids_chat_ids_or_raw_paths() {
    // Arrange
    let app = spawn_app().await;
    let user = app.seed_user("label-leak-9c4d");
    let message = json!({"message": "hi", "actor": "user"});
    assert_eq!(app.post_messages(&user, &message).await.status(), 200);
    let chats = format!("/api/users/{}/chats", user.id);

    // Act: matched routes, a 401, a 403, unknown paths inside and outside the scope.
    let answers = [
        app.get(&chats, Some(&user.token)).await.status(),
        app.get(&chats, None).await.status(),
        app.get("/api/users/someone-else-7e2a/chats", Some(&user.token))
            .await
            .status(),
        app.get(&format!("{chats}/{}/nope", user.chat_id), Some(&user.token))
            .await
            .status(),
        app.get("/no-such-path-label-leak-9c4d", None)
            .await
            .status(),
    ];
    let metrics = Metrics::scrape(&app).await;

    // Assert
    assert_eq!(answers.map(|s| s.as_u16()), [200, 401, 403, 404, 404]);
    for needle in ["label-leak-9c4d", "someone-else-7e2a", "/nope"] {
        assert!(
            !metrics.text.contains(needle),
            "{needle} in the metrics:\n{}",
            metrics.text
        );
    }
    for sample in &metrics.samples {
        if let Some(route) = sample.labels.get("route") {
            assert!(
                route == "<unmatched>"
                    || route
                        .split('/')
                        .all(|segment| segment.parse::<i64>().is_err()),
                "a raw id in the route label {route:?}"
            );
        }
    }
    assert!(
        metrics.value(
            "neptun_http_requests_total",
            &[
                ("method", "GET"),
                ("route", "/api/users/{user_id}/chats"),
                ("status", "401")
            ]
        ) >= 1.0,
        "a 401 is counted under the route template: {}",
        metrics.text
    );
}

#[tokio::test]
async fn made_up_http_methods_do_not_add_metric_series() {
    // Arrange
    let app = spawn_app().await;
    let method = Method::from_bytes(b"MADEUP4F1C").expect("a method token");

    // Act
    let response = app.send(method, "/healthz", None, None).await;
    let metrics = Metrics::scrape(&app).await;

    // Assert
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        !metrics.text.contains("MADEUP4F1C"),
        "a client-chosen method became a label value:\n{}",
        metrics
            .text
            .lines()
            .filter(|l| l.contains("MADEUP4F1C"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ---- security headers ----------------------------------------------------------------

#[tokio::test]
async fn every_api_response_carries_nosniff_and_no_store() {
    // Arrange
    let app = spawn_app().await;
    let user = app.seed_user("alice");
    let chats = "/api/users/alice/chats";
    let cases = [
        (Method::GET, chats.to_owned(), Some(user.token.clone()), 200),
        (Method::GET, "/no-such-route".to_owned(), None, 404),
        (Method::GET, chats.to_owned(), None, 401),
        (Method::GET, "/healthz".to_owned(), None, 200),
        (Method::GET, "/readyz".to_owned(), None, 200),
        (Method::GET, "/metrics".to_owned(), None, 200),
        (Method::GET, "/openapi.json".to_owned(), None, 200),
        (Method::PUT, "/healthz".to_owned(), None, 405),
        (
            Method::GET,
            "/api/users/alice/chats/999999/messages".to_owned(),
            Some(user.token.clone()),
            404,
        ),
    ];

    for (method, path, token, status) in cases {
        // Act
        let response = app
            .send(method.clone(), &path, token.as_deref(), None)
            .await;

        // Assert
        let case = format!("{method} {path}");
        assert_eq!(response.status().as_u16(), status, "{case}");
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{case}");
        assert_eq!(headers[CACHE_CONTROL], "no-store", "{case}");
        assert_eq!(headers["x-frame-options"], "DENY", "{case}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{case}");
    }
}

#[tokio::test]
async fn the_docs_forbid_inline_scripts_and_may_be_cached() {
    // Arrange
    let app = spawn_app().await;

    for path in ["/docs", "/docs/init.js", "/docs/swagger-ui-bundle.js"] {
        // Act
        let response = app.get(path, None).await;

        // Assert
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        let cache = headers[CACHE_CONTROL].to_str().unwrap();
        assert!(cache.starts_with("public"), "{path}: cache-control {cache}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
        let script_src = directives
            .iter()
            .find(|d| d.starts_with("script-src"))
            .unwrap_or_else(|| panic!("{path}: no script-src in {csp}"));
        assert_eq!(*script_src, "script-src 'self'", "{path}: {csp}");
        assert!(
            !directives
                .iter()
                .any(|d| d.starts_with("script-src-elem") || d.starts_with("script-src-attr")),
            "{path}: {csp}"
        );
        if path == "/docs" {
            let page = response.text().await.unwrap();
            assert!(
                page.matches("<script").count() == page.matches("<script src=").count(),
                "every script on the page is an external file:\n{page}"
            );
        }
    }
}

// ---- request ids ---------------------------------------------------------------------

fn request_id(response: &reqwest::Response) -> String {
    response.headers()["x-request-id"]
        .to_str()
        .expect("an ASCII request id")
        .to_owned()
}

#[tokio::test]
async fn a_request_id_is_generated_for_each_request_that_has_none() {
    let app = spawn_app().await;

    let first = request_id(&app.get("/healthz", None).await);
    let second = request_id(&app.get("/healthz", None).await);
    let on_a_404 = request_id(&app.get("/nowhere", None).await);

    for id in [&first, &second, &on_a_404] {
        assert!(!id.is_empty());
        assert!(id.len() <= 128, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_graphic()), "{id:?}");
    }
    assert_ne!(first, second);
    assert_ne!(second, on_a_404);
}

#[tokio::test]
async fn a_sane_client_request_id_is_echoed_on_success_and_on_errors() {
    let app = spawn_app().await;
    let longest = "r".repeat(128);
    let cases = [
        ("/healthz", "trace-abc-123"),
        ("/nowhere", "0af7651916cd43dd8448eb211c80319c"),
        ("/api/users/alice/chats", "req:42/retry#1"),
        ("/healthz", longest.as_str()),
    ];

    for (path, id) in cases {
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .header("x-request-id", id)
            .send()
            .await
            .unwrap();

        assert_eq!(request_id(&response), id, "{path}");
    }
}

#[tokio::test]
async fn an_unreasonable_client_request_id_is_replaced() {
    let app = spawn_app().await;
    let cases = [
        (
            HeaderValue::from_str(&"x".repeat(500)).unwrap(),
            "500 characters",
        ),
        (
            HeaderValue::from_str(&"x".repeat(129)).unwrap(),
            "129 characters",
        ),
        (HeaderValue::from_static("has spaces in it"), "spaces"),
        (HeaderValue::from_bytes(b"tab\there").unwrap(), "a tab"),
        (
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
            "non-ASCII bytes",
        ),
        (HeaderValue::from_static(""), "empty"),
    ];

    for (sent, case) in cases {
        let response = app
            .client
            .get(format!("{}/healthz", app.address))
            .header("x-request-id", sent.clone())
            .send()
            .await
            .unwrap();

        assert_eq!(response.status(), StatusCode::OK, "{case}");
        let id = request_id(&response);
        assert_ne!(id.as_bytes(), sent.as_bytes(), "{case}");
        assert!(!id.is_empty(), "{case}");
        assert!(id.len() <= 128, "{case}: {id}");
        assert!(id.bytes().all(|b| b.is_ascii_graphic()), "{case}: {id:?}");
    }
}

// ---- write rate limit ----------------------------------------------------------------

fn limited_to(per_minute: u32) -> Settings {
    Settings {
        write_rate_limit: Some(std::num::NonZeroU32::new(per_minute).unwrap()),
        ..Settings::default()
    }
}

#[tokio::test]
async fn without_a_configured_limit_a_hundred_quick_writes_all_succeed() {
    // Arrange
    let app = Arc::new(spawn_app().await);
    let alice = Arc::new(app.seed_user("alice"));

    // Act
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let (app, alice) = (app.clone(), alice.clone());
        tasks.spawn(async move {
            let body = json!({"message": format!("quick {i}"), "actor": "user"});
            app.post_messages(&alice, &body).await.status().as_u16()
        });
    }
    let statuses = tasks.join_all().await;

    // Assert
    assert_eq!(statuses, vec![200; 100]);
    assert_eq!(app.stored_messages(alice.chat_id).len(), 100);
}

#[tokio::test]
async fn the_write_after_a_full_burst_gets_429_with_retry_after_and_is_not_stored() {
    // Arrange
    let app = spawn_app_with_settings(limited_to(3)).await;
    let alice = app.seed_user("alice");
    for i in 0..3 {
        let body = json!({"message": format!("allowed {i}"), "actor": "user"});
        assert_eq!(app.post_messages(&alice, &body).await.status(), 200, "{i}");
    }

    // Act
    let refused = app
        .post_messages(&alice, &json!({"message": "refused", "actor": "user"}))
        .await;

    // Assert
    assert_eq!(refused.headers()["x-content-type-options"], "nosniff");
    assert!(!request_id(&refused).is_empty());
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is whole seconds");
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let envelope = assert_error(refused, 429, "Too Many Requests").await;
    assert_eq!(
        envelope["message"],
        format!("Write rate limit reached; retry in {retry_after} s")
    );
    let texts: Vec<String> = app
        .stored_messages(alice.chat_id)
        .into_iter()
        .map(|(_, text, _)| text)
        .collect();
    assert_eq!(texts, ["allowed 0", "allowed 1", "allowed 2"]);
}

#[tokio::test]
async fn a_write_rate_limit_of_zero_on_the_command_line_means_no_limit() {
    // Arrange: the settings the server would run with.
    use clap::Parser as _;
    let cli =
        neptun_chat::cli::Cli::try_parse_from(["neptun-chat", "--write-rate-limit", "0"]).unwrap();
    let settings = cli.serve.settings(&cli.database);
    assert_eq!(settings.write_rate_limit, None);
    let app = spawn_app_with_settings(Settings {
        write_rate_limit: settings.write_rate_limit,
        ..Settings::default()
    })
    .await;
    let alice = app.seed_user("alice");

    // Act
    let mut statuses = Vec::new();
    for i in 0..20 {
        let body = json!({"message": format!("write {i}"), "actor": "user"});
        statuses.push(app.post_messages(&alice, &body).await.status().as_u16());
    }

    // Assert
    assert_eq!(statuses, vec![200; 20]);
    assert_eq!(app.stored_messages(alice.chat_id).len(), 20);
}

#[tokio::test]
async fn reads_are_not_limited_and_a_second_session_of_the_same_user_shares_the_budget() {
    // Arrange: alice's first session has used up her burst; bob has his own.
    let app = spawn_app_with_settings(limited_to(3)).await;
    let alice = app.seed_user("alice");
    let bob = app.seed_user("bob");
    let message = json!({"message": "write", "actor": "user"});
    for _ in 0..3 {
        assert_eq!(app.post_messages(&alice, &message).await.status(), 200);
    }
    assert_eq!(app.post_messages(&alice, &message).await.status(), 429);
    let messages_path = format!("/api/users/alice/chats/{}/messages", alice.chat_id);
    let second_token = app.create_session("alice", 30);

    // Act
    let mut reads = Vec::new();
    for _ in 0..10 {
        reads.push(app.get(&messages_path, Some(&alice.token)).await.status());
        reads.push(
            app.get("/api/users/alice/chats", Some(&alice.token))
                .await
                .status(),
        );
    }
    let second_session = app
        .post_raw(
            &app.messages_url("alice", alice.chat_id),
            Some(&second_token),
            Some("application/json"),
            json!({"message": "from the second session", "actor": "user"}).to_string(),
        )
        .await;
    let other_user = app.post_messages(&bob, &message).await;

    // Assert
    assert!(reads.iter().all(|s| *s == StatusCode::OK), "{reads:?}");
    assert_error(second_session, 429, "Too Many Requests").await;
    assert_eq!(other_user.status(), StatusCode::OK);
    assert_eq!(app.stored_messages(alice.chat_id).len(), 3);
    assert_eq!(app.stored_messages(bob.chat_id).len(), 1);
}

#[tokio::test]
async fn every_kind_of_write_draws_on_the_same_bucket() {
    let app = spawn_app_with_settings(limited_to(2)).await;
    let alice = app.seed_user("alice");
    let chats = "/api/users/alice/chats";

    let created = app
        .post_json(
            chats,
            Some(&alice.token),
            &json!({"name": "n", "model": "m"}),
        )
        .await;
    let posted = app
        .post_messages(&alice, &json!({"message": "m", "actor": "user"}))
        .await;
    let refused_chat = app
        .post_json(
            chats,
            Some(&alice.token),
            &json!({"name": "x", "model": "m"}),
        )
        .await;

    assert_eq!(created.status(), StatusCode::OK);
    assert_eq!(posted.status(), StatusCode::OK);
    assert_error(refused_chat, 429, "Too Many Requests").await;
    let listed = json_body(app.get(chats, Some(&alice.token)).await).await;
    assert_eq!(
        listed["chats"].as_array().map(Vec::len),
        Some(2),
        "the seeded chat and the first created one: {listed}"
    );
}

// ---- body timeout --------------------------------------------------------------------

/// A raw HTTP/1.1 response: status, headers (names lower-cased), body.
struct RawResponse {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// Reads one HTTP/1.1 response with a `Content-Length` from `stream`, failing the test
/// if it is not complete within [`DEADLINE`].
async fn read_response(stream: &mut tokio::net::TcpStream) -> RawResponse {
    use tokio::io::AsyncReadExt;

    let mut buffer = Vec::new();
    let started = Instant::now();
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buffer[..end].to_vec()).expect("an ASCII head");
            let mut lines = head.split("\r\n");
            let status: u16 = lines
                .next()
                .and_then(|line| line.split(' ').nth(1))
                .and_then(|code| code.parse().ok())
                .unwrap_or_else(|| panic!("a status line in {head:?}"));
            let headers: BTreeMap<String, String> = lines
                .filter_map(|line| line.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let length: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("a content-length in {head:?}"));
            if buffer.len() >= end + 4 + length {
                return RawResponse {
                    status,
                    headers,
                    body: buffer[end + 4..end + 4 + length].to_vec(),
                };
            }
        }
        let remaining = DEADLINE
            .checked_sub(started.elapsed())
            .expect("the response arrived within the deadline");
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout(remaining, stream.read(&mut chunk))
            .await
            .expect("the response arrived within the deadline")
            .expect("the connection is readable");
        assert!(
            read > 0,
            "the connection closed mid-response: {:?}",
            String::from_utf8_lossy(&buffer)
        );
        buffer.extend_from_slice(&chunk[..read]);
    }
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_a_408_envelope_after_the_body_timeout() {
    use tokio::io::AsyncWriteExt;

    // Arrange
    let app = spawn_app_with_settings(Settings {
        limits: Limits {
            body_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
        ..Settings::default()
    })
    .await;
    let alice = app.seed_user("alice");
    let cases: [(&[u8], &str); 2] = [
        (br#"{"message": "only part of"#, "part of the body"),
        (b"", "none of the body"),
    ];

    for (sent, case) in cases {
        let head = format!(
            "POST /api/users/alice/chats/{}/messages HTTP/1.1\r\nHost: localhost\r\n\
             Cookie: {SESSION_COOKIE}={}\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\n\r\n",
            alice.chat_id, alice.token
        );
        let address = app.address.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();

        // Act
        let started = Instant::now();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(sent).await.unwrap();
        let response = read_response(&mut stream).await;
        let waited = started.elapsed();

        // Assert
        assert_eq!(response.status, 408, "{case}");
        assert!(
            waited >= Duration::from_millis(300),
            "{case}: answered after {waited:?}, before the timeout"
        );
        assert!(
            response.headers["content-type"].starts_with("application/json"),
            "{case}"
        );
        assert_eq!(
            response.headers["x-content-type-options"], "nosniff",
            "{case}"
        );
        assert!(!response.headers["x-request-id"].is_empty(), "{case}");
        let envelope: Value = serde_json::from_slice(&response.body).expect("a JSON envelope");
        assert_eq!(
            envelope,
            json!({
                "statusCode": 408,
                "statusMessage": "Request Timeout",
                "message": "The request body did not arrive in time",
            }),
            "{case}"
        );
    }
    assert!(app.stored_messages(alice.chat_id).is_empty());
}

// ---- logs ----------------------------------------------------------------------------

#[tokio::test]
async fn the_log_names_routes_and_request_ids_but_never_tokens_passwords_or_texts() {
    // Arrange: a server logging at debug level to a file, with a user seeded by the CLI.
    let db = TempDb::new();
    db.create_user("log-user-3f8a");
    let token = db.create_session("log-user-3f8a", &[]);
    let chat_id = db.create_chat("log-user-3f8a");
    let mut server = db.serve(&[("RUST_LOG", "debug")]);
    let base = server.address();
    let client = reqwest::Client::new();
    let cookie = format!("{SESSION_COOKIE}={token}");
    let messages = format!("{base}/api/users/log-user-3f8a/chats/{chat_id}/messages");
    let text = "secret-message-text-a91f";
    let password = "secret-password-77c2e";
    let wrong_password = "wrong-password-d04b1";
    let forged_token = "forged-token-value-6e3d";

    // Act
    let post = |url: &str, cookie: Option<&str>, body: String| {
        let mut request = client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send()
    };
    let mut statuses = vec![
        post(
            &messages,
            Some(&cookie),
            json!({"message": text, "actor": "user"}).to_string(),
        )
        .await
        .unwrap()
        .status()
        .as_u16(),
        post(&messages, Some(&cookie), format!(r#"{{"message": "{text}"#))
            .await
            .unwrap()
            .status()
            .as_u16(),
        post(
            &messages,
            Some(&cookie),
            json!({"message": text, "actor": text}).to_string(),
        )
        .await
        .unwrap()
        .status()
        .as_u16(),
        post(
            &messages,
            Some(&format!("{SESSION_COOKIE}={forged_token}")),
            json!({"message": text, "actor": "user"}).to_string(),
        )
        .await
        .unwrap()
        .status()
        .as_u16(),
        client
            .get(format!("{base}/api/users/log-user-3f8a/chats"))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
    ];
    let signed_up = post(
        &format!("{base}/api/auth/sign-up"),
        None,
        json!({"email": "log-test@example.com", "password": password}).to_string(),
    )
    .await
    .unwrap();
    statuses.push(signed_up.status().as_u16());
    let (signed_up_token, _) = session_cookie(&signed_up).expect("a session cookie");
    statuses.push(
        post(
            &format!("{base}/api/auth/login"),
            None,
            json!({"email": "log-test@example.com", "password": wrong_password}).to_string(),
        )
        .await
        .unwrap()
        .status()
        .as_u16(),
    );
    statuses.push(
        client
            .get(format!("{base}/api/auth/session"))
            .header(COOKIE, format!("{SESSION_COOKIE}={signed_up_token}"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
    );
    server.signal("TERM");
    let exit = server.wait_for_exit(DEADLINE);
    let log = server.log();

    // Assert
    assert_eq!(statuses, [200, 400, 400, 401, 200, 200, 401, 200], "{log}");
    assert!(exit.success(), "a clean stop on SIGTERM: {exit}\n{log}");
    for secret in [
        token.as_str(),
        signed_up_token.as_str(),
        forged_token,
        password,
        wrong_password,
        text,
    ] {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
    }
    assert!(
        log.contains(&format!("POST {MESSAGES_ROUTE} 200")),
        "the route template is logged:\n{log}"
    );
    assert!(log.contains("POST /api/auth/sign-up 200"), "{log}");
    assert!(log.contains("GET /api/users/{user_id}/chats 200"), "{log}");
    assert!(
        log.lines()
            .filter(|line| line.contains(MESSAGES_ROUTE))
            .all(|line| line.contains("request_id=")),
        "every request line has its id:\n{log}"
    );
    assert!(
        !log.contains("/api/users/log-user-3f8a"),
        "raw paths are not logged:\n{log}"
    );
}

#[test]
fn the_server_logs_one_start_up_line_naming_address_database_and_durability_and_no_actix_lines() {
    // Arrange: the default log filter (no RUST_LOG), as an operator starts it.
    let db = TempDb::new();
    let mut server = db.serve_with_args(&["--sync", "normal"]);

    // Act
    server.signal("TERM");
    let exit = server.wait_for_exit(DEADLINE);
    let log = server.log();

    // Assert: start-up, the stop and its end, plus one line per request (the health
    // checks of the start-up).
    assert!(exit.success(), "{exit}\n{log}");
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| !line.contains("request_id="))
        .collect();
    assert_eq!(lines.len(), 3, "only these lines besides requests:\n{log}");
    let listening = format!(
        "neptun-chat listening on 127.0.0.1:{} with the database {} (durability normal",
        server.port(),
        db.arg().to_string_lossy()
    );
    assert!(lines[0].contains(&listening), "{listening:?} in:\n{log}");
    assert!(
        lines[1].contains("SIGTERM received: finishing the requests in flight"),
        "{log}"
    );
    assert!(
        lines[2].contains("stopped; the database is checkpointed and closed"),
        "{log}"
    );
    for actix_line in [
        "Actix runtime",
        "starting",
        "worker shutdown",
        "shutting down",
    ] {
        assert!(
            !log.contains(actix_line),
            "{actix_line:?} is logged:\n{log}"
        );
    }
}

/// The metric names the README lists: every backticked `neptun_*` or `process_*` name.
fn metrics_the_readme_lists() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("the README");
    let mut names: Vec<String> = readme
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|quoted| {
            (quoted.starts_with("neptun_") || quoted.starts_with("process_"))
                && quoted
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[tokio::test]
async fn a_fresh_server_exports_every_metric_the_readme_lists_before_any_write() {
    // Arrange: a process of its own, since this binary's recorder is shared and has
    // seen other tests' writes; it has answered only its start-up health checks.
    let documented = metrics_the_readme_lists();
    assert!(
        documented.len() >= 8,
        "the README's metrics list was found: {documented:?}"
    );
    let db = TempDb::new();
    let server = db.serve(&[]);

    // Act
    let text = reqwest::get(format!("{}/metrics", server.address()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // Assert: each is a sample (a histogram by its `_count`), and the write counters are 0.
    let samples = parse_metrics(&text);
    for name in &documented {
        let count = format!("{name}_count");
        assert!(
            samples.iter().any(|s| s.name == *name || s.name == count),
            "{name} is listed in the README but not exported:\n{text}"
        );
    }
    for name in [
        "neptun_messages_stored_total",
        "neptun_batches_stored_total",
        "neptun_db_busy_total",
    ] {
        let values: Vec<f64> = samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .collect();
        assert_eq!(values, [0.0], "{name}:\n{text}");
    }
    // Resident memory agrees with the kernel's own count in bytes (VmRSS, in KiB),
    // whatever the page size; the two are read moments apart, so within a factor 1.5.
    let rss = samples
        .iter()
        .find(|s| s.name == "process_resident_memory_bytes")
        .map(|s| s.value)
        .unwrap_or_default();
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let vm_rss_kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("VmRSS in {status}"));
    let kernel = vm_rss_kib * 1024.0;
    assert!(
        rss > kernel / 1.5 && rss < kernel * 1.5,
        "resident memory {rss} bytes, the kernel says {kernel}"
    );
}

#[tokio::test]
async fn the_favicon_is_an_empty_204_that_browsers_may_cache() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let response = app.get("/favicon.ico", None).await;

    // Assert
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(response.headers()[CACHE_CONTROL], "public, max-age=86400");
    assert_eq!(response.bytes().await.unwrap().len(), 0);
}

/// Sends `request` on a fresh connection and reads until the server closes it.
async fn raw_exchange(app: &TestApp, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection");
    // Closing with some of the request unread makes the kernel reset the connection
    // after the answer; what was read before the reset is the answer.
    match read {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(err) => panic!("the connection is readable: {err}"),
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// actix-http answers a request head it cannot parse, or one too large for its buffer,
/// itself, before any service (and so before any middleware or error handler of ours)
/// runs: the envelope cannot be added in this program (see `startup`'s module docs).
/// This pins what a client gets instead, so a change on either side is noticed.
#[tokio::test]
async fn a_malformed_or_oversized_request_head_gets_actix_https_own_empty_400_or_431() {
    // Arrange
    let app = spawn_app().await;
    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(128 * 1024)
    );
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "a malformed request line",
            b"GET /healthz HTTP/9.x\r\n\r\n",
            "400",
        ),
        (
            "a header without a colon",
            b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n",
            "400",
        ),
        ("a head of 128 KiB", huge_header.as_bytes(), "431"),
    ];

    for (case, request, status) in cases {
        // Act
        let answer = raw_exchange(&app, request).await;

        // Assert
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{case}: a response in {answer:?}"));
        let status_line = head.lines().next().unwrap_or_default();
        assert!(
            status_line.starts_with(&format!("HTTP/1.1 {status} ")),
            "{case}: {head}"
        );
        assert!(
            head.to_ascii_lowercase().contains("content-length: 0"),
            "{case}: {head}"
        );
        assert_eq!(body, "", "{case}");
        // The app never saw it: well-formed requests are still answered.
        assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
    }
}
