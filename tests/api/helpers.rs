//! `spawn_app()` and `TestApp`: the real application on a random port against a fresh
//! database on this binary's backend (`crate::BACKEND`), plus typed request helpers and
//! seeding through [`Admin`], the same code the admin commands use.

use std::net::IpAddr;
use std::path::Path;

use neptun_chat::auth::{SESSION_COOKIE, SessionToken};
use neptun_chat::config::{Limits, Settings};
use neptun_chat::db::Admin;
use neptun_chat::domain::Timestamp;
use neptun_chat::startup::Application;
use reqwest::header::{CONTENT_TYPE, COOKIE};
use serde_json::Value;
use tempfile::TempDir;

use crate::database::Database;

/// A running application, its database, and its temporary folder (which holds the
/// database when it is a SQLite file).
pub(crate) struct TestApp {
    pub address: String,
    pub database: Database,
    pub client: reqwest::Client,
    _dir: TempDir,
}

/// A user with a live session and one chat of their own.
pub(crate) struct TestUser {
    pub id: String,
    pub token: String,
    pub chat_id: i64,
}

/// Starts the application with default limits.
pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(Limits::default()).await
}

/// Starts the application with the given limits.
pub(crate) async fn spawn_app_with(limits: Limits) -> TestApp {
    spawn_app_with_settings(Settings {
        limits,
        ..Settings::default()
    })
    .await
}

impl TestApp {
    /// Runs `work` with a handle for seeding, as the admin commands use it.
    pub(crate) fn with_admin<T: Send>(&self, work: impl FnOnce(&mut Admin) -> T + Send) -> T {
        self.database.with_admin(work)
    }

    /// The SQLite file, for tests about SQLite's files only.
    pub(crate) fn db_path(&self) -> &Path {
        self.database.sqlite_path()
    }

    /// Creates a user, a 30-day session and a chat.
    pub(crate) fn seed_user(&self, id: &str) -> TestUser {
        self.with_admin(|admin| admin.create_user(id, None, None))
            .expect("user created");
        let token = self.create_session(id, 30);
        let chat_id = self
            .with_admin(|admin| admin.create_chat(id, "Test chat", "test-model"))
            .expect("chat created");
        TestUser {
            id: id.to_owned(),
            token,
            chat_id,
        }
    }

    /// A new session token for `user_id`, expiring in `days` (0: already expired).
    pub(crate) fn create_session(&self, user_id: &str, days: i64) -> String {
        let token = SessionToken::generate().expect("random token");
        let expires_at =
            Timestamp::from_datetime(chrono::Utc::now() + chrono::Duration::days(days));
        self.with_admin(|admin| admin.create_session(user_id, &token.hash(), &expires_at))
            .expect("session created");
        token.expose().to_owned()
    }

    /// Another chat for an existing user.
    pub(crate) fn create_chat(&self, user_id: &str) -> i64 {
        self.with_admin(|admin| admin.create_chat(user_id, "Another chat", "test-model"))
            .expect("chat created")
    }

    /// The messages path of a chat.
    pub(crate) fn messages_url(&self, user_id: &str, chat_id: impl std::fmt::Display) -> String {
        format!(
            "{}/api/users/{user_id}/chats/{chat_id}/messages",
            self.address
        )
    }

    /// POSTs a JSON body to `user`'s own chat with `user`'s session.
    pub(crate) async fn post_messages(&self, user: &TestUser, body: &Value) -> reqwest::Response {
        self.post_raw(
            &self.messages_url(&user.id, user.chat_id),
            Some(&user.token),
            Some("application/json"),
            body.to_string(),
        )
        .await
    }

    /// POSTs raw bytes with an optional session token and content type.
    pub(crate) async fn post_raw(
        &self,
        url: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut request = self.client.post(url).body(body);
        if let Some(token) = token {
            request = request.header(COOKIE, format!("{SESSION_COOKIE}={token}"));
        }
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        request.send().await.expect("the request is sent")
    }

    /// The stored messages of a chat in id order, as `(id, text, actor)`, read straight
    /// from the database.
    pub(crate) fn stored_messages(&self, chat_id: i64) -> Vec<(i64, String, String)> {
        self.database.stored_messages(chat_id)
    }
}

/// The JSON body of a response, checking that it is the JSON it says it is.
pub(crate) async fn json_body(response: reqwest::Response) -> Value {
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "content type {content_type:?}"
    );
    response.json().await.expect("a JSON body")
}

/// Asserts the error envelope's status code and status message, and returns it.
pub(crate) async fn assert_error(
    response: reqwest::Response,
    status: u16,
    status_message: &str,
) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let body = json_body(response).await;
    assert_eq!(body["statusCode"], status, "statusCode in {body}");
    assert_eq!(
        body["statusMessage"], status_message,
        "statusMessage in {body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message in {body}"
    );
    body
}

/// Requests to any route with an optional session cookie, and signing up through the API.
impl TestApp {
    /// Sends `method` to `path` (e.g. `/api/auth/session`) with an optional session
    /// token and an optional JSON body.
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.header(COOKIE, format!("{SESSION_COOKIE}={token}"));
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        request.send().await.expect("the request is sent")
    }

    /// GETs `path` with an optional session token.
    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        self.send(reqwest::Method::GET, path, token, None).await
    }

    /// POSTs a JSON body to `path` with an optional session token.
    pub(crate) async fn post_json(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        self.send(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    /// PATCHes a JSON body to `path` with an optional session token.
    pub(crate) async fn patch_json(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        self.send(reqwest::Method::PATCH, path, token, Some(body))
            .await
    }

    /// DELETEs `path` with an optional session token and an optional JSON body.
    pub(crate) async fn delete(
        &self,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::Response {
        self.send(reqwest::Method::DELETE, path, token, body).await
    }

    /// Signs up through `POST /api/auth/sign-up`, expecting success; returns the
    /// `user` object and the session token from `Set-Cookie`.
    pub(crate) async fn sign_up(&self, email: &str, password: &str) -> (Value, String) {
        let response = self
            .post_json(
                "/api/auth/sign-up",
                None,
                &serde_json::json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(response.status().as_u16(), 200, "sign-up of {email}");
        let (token, _) = session_cookie(&response).expect("sign-up sets the session cookie");
        let body = json_body(response).await;
        (body["user"].clone(), token)
    }
}

/// The `neptun-session` cookie a response sets: its value and its attributes as
/// written (e.g. `["HttpOnly", "SameSite=Lax", "Path=/"]`). Parsed by hand because
/// reqwest's cookie store will not keep a `Secure` cookie over plain HTTP.
pub(crate) fn session_cookie(response: &reqwest::Response) -> Option<(String, Vec<String>)> {
    let prefix = format!("{SESSION_COOKIE}=");
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|header| {
            let mut parts = header.split(';').map(str::trim);
            let value = parts.next()?.strip_prefix(&prefix)?.to_owned();
            Some((value, parts.map(str::to_owned).collect()))
        })
}

/// Starts the application with `settings`, except that `database` and `bind` are
/// replaced by a fresh database on this binary's backend and `127.0.0.1:0`.
pub(crate) async fn spawn_app_with_settings(settings: Settings) -> TestApp {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let database = Database::fresh_in(dir.path());
    spawn_app_on(dir, database, settings).await
}

/// Starts the application with `settings` on a fresh database that `seed` fills first,
/// for what the server does at start-up.
pub(crate) async fn spawn_app_after(settings: Settings, seed: impl FnOnce(&Database)) -> TestApp {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let database = Database::fresh_in(dir.path());
    seed(&database);
    spawn_app_on(dir, database, settings).await
}

/// Starts the application on `database`, keeping `dir` as long as it runs.
async fn spawn_app_on(dir: TempDir, database: Database, settings: Settings) -> TestApp {
    let settings = Settings {
        database: database.location(),
        bind: "127.0.0.1:0".to_owned(),
        ..settings
    };
    let app = Application::build(settings)
        .await
        .expect("the application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    // The listener is already bound, so requests queue until the server polls it.
    tokio::spawn(app.run_ignoring_signals());
    TestApp {
        address,
        database,
        client: reqwest::Client::new(),
        _dir: dir,
    }
}

/// A client whose connections come from `local` (e.g. `127.0.0.2`), so that a test can
/// act from several client addresses on loopback.
pub(crate) fn client_from(local: &str) -> reqwest::Client {
    let local: IpAddr = local.parse().unwrap();
    reqwest::Client::builder()
        .local_address(local)
        .build()
        .unwrap()
}

/// The ids of the `chatMessages` of an answer, in order.
pub(crate) fn chat_message_ids(body: &Value) -> Vec<i64> {
    body["chatMessages"]
        .as_array()
        .expect("chatMessages is an array")
        .iter()
        .map(|m| m["id"].as_i64().expect("every message has an id"))
        .collect()
}
