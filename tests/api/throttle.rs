//! Throttled logins and sign-ups: failed logins lock an account from one address and an
//! address as a whole, the lock covers the right password too and is outwaited, other
//! addresses are not affected, sign-ups are limited per address, `X-Forwarded-For` is
//! believed only from a configured proxy, and a full hashing queue answers 503.
//!
//! Clients at other addresses connect from other loopback addresses (127.0.0.2 ...), so
//! the server sees a real different TCP peer.

use std::time::{Duration, Instant};

use neptun_chat::config::{Backoff, HashSettings, Settings, ThrottleSettings, TrustedProxies};
use reqwest::header::RETRY_AFTER;
use serde_json::json;

use crate::helpers::{TestApp, assert_error, client_from, session_cookie, spawn_app_with_settings};

const PASSWORD: &str = "correct horse";

/// A backoff of `free` attempts, then a lock of a second (doubling up to two).
fn quick(free: u32) -> Backoff {
    Backoff {
        free,
        first_lock: Duration::from_secs(1),
        max_lock: Duration::from_secs(2),
        forget_after: Duration::from_secs(60),
    }
}

fn throttled(throttle: ThrottleSettings) -> Settings {
    Settings {
        throttle,
        ..Settings::default()
    }
}

/// Only the per-account backoff, with `free` attempts.
fn per_account(free: u32) -> ThrottleSettings {
    ThrottleSettings {
        login_per_account: quick(free),
        login_per_address: Backoff::OFF,
        sign_up_per_address: Backoff::OFF,
        ..ThrottleSettings::default()
    }
}

/// `POST path` with credentials from `client`, with an optional `X-Forwarded-For`.
async fn post_credentials(
    app: &TestApp,
    client: &reqwest::Client,
    path: &str,
    email: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let mut request = client
        .post(format!("{}{path}", app.address))
        .json(&json!({"email": email, "password": password}));
    if let Some(forwarded_for) = forwarded_for {
        request = request.header("x-forwarded-for", forwarded_for);
    }
    request.send().await.unwrap()
}

async fn login_from(
    app: &TestApp,
    client: &reqwest::Client,
    email: &str,
    password: &str,
) -> reqwest::Response {
    post_credentials(app, client, "/api/auth/login", email, password, None).await
}

/// Asserts a 429 envelope with a `Retry-After` of `seconds`.
async fn assert_throttled(response: reqwest::Response, seconds: &str) {
    let retry_after = response.headers().get(RETRY_AFTER).cloned();
    let body = assert_error(response, 429, "Too Many Requests").await;
    assert_eq!(
        retry_after.as_ref().and_then(|v| v.to_str().ok()),
        Some(seconds),
        "Retry-After of {body}"
    );
    assert_eq!(
        body["message"],
        format!("Too many attempts; retry in {seconds} s")
    );
}

#[tokio::test]
async fn after_n_failed_logins_the_next_is_refused_with_429_even_with_the_right_password_until_outwaited()
 {
    // Arrange
    let app = spawn_app_with_settings(throttled(per_account(3))).await;
    let (user, _) = app.sign_up("ada@example.org", PASSWORD).await;
    let home = client_from("127.0.0.1");
    for n in 0..3 {
        let response = login_from(&app, &home, "ada@example.org", "wrong password").await;
        assert_eq!(response.status().as_u16(), 401, "failure {n} is answered");
    }

    // Act
    let locked = login_from(&app, &home, "ada@example.org", PASSWORD).await;

    // Assert: refused with the envelope, without a cookie, though the password is right.
    assert!(session_cookie(&locked).is_none());
    assert_throttled(locked, "1").await;

    // The lock is outwaited: poll with the right password until it is let through. The
    // refused attempts are not counted, so polling does not extend the lock.
    let deadline = Instant::now() + Duration::from_secs(10);
    let outwaited = loop {
        let response = login_from(&app, &home, "ada@example.org", PASSWORD).await;
        if response.status().as_u16() != 429 {
            break response;
        }
        assert!(Instant::now() < deadline, "the lock never expired");
        tokio::task::yield_now().await;
    };
    assert_eq!(outwaited.status().as_u16(), 200);
    let body: serde_json::Value = outwaited.json().await.unwrap();
    assert_eq!(body["user"]["id"], user["id"]);
}

#[tokio::test]
async fn a_locked_account_still_logs_in_from_another_address() {
    // Arrange: the account locked from 127.0.0.1.
    let app = spawn_app_with_settings(throttled(per_account(2))).await;
    let (user, _) = app.sign_up("ada@example.org", PASSWORD).await;
    let attacker = client_from("127.0.0.1");
    for _ in 0..2 {
        login_from(&app, &attacker, "ada@example.org", "wrong guess").await;
    }
    assert_throttled(
        login_from(&app, &attacker, "ada@example.org", "wrong guess").await,
        "1",
    )
    .await;

    // Act: the real user, elsewhere.
    let response = login_from(&app, &client_from("127.0.0.2"), "ada@example.org", PASSWORD).await;

    // Assert
    assert_eq!(response.status().as_u16(), 200);
    assert!(session_cookie(&response).is_some());
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["user"]["id"], user["id"]);
}

#[tokio::test]
async fn failed_logins_to_many_accounts_lock_that_address_only() {
    // Arrange
    let app = spawn_app_with_settings(throttled(ThrottleSettings {
        login_per_account: Backoff::OFF,
        login_per_address: quick(4),
        sign_up_per_address: Backoff::OFF,
        ..ThrottleSettings::default()
    }))
    .await;
    let sprayer = client_from("127.0.0.1");
    for n in 0..4 {
        let email = format!("user{n}@example.org");
        let response = login_from(&app, &sprayer, &email, "Winter2026!").await;
        assert_eq!(response.status().as_u16(), 401, "{email}");
    }

    // Act
    let fifth = login_from(&app, &sprayer, "user4@example.org", "Winter2026!").await;
    let elsewhere = login_from(
        &app,
        &client_from("127.0.0.3"),
        "user4@example.org",
        "Winter2026!",
    )
    .await;

    // Assert
    assert_throttled(fifth, "1").await;
    assert_error(elsewhere, 401, "Unauthorized").await;
}

#[tokio::test]
async fn sign_ups_from_one_address_are_limited_and_others_sign_up() {
    // Arrange
    let app = spawn_app_with_settings(throttled(ThrottleSettings {
        sign_up_per_address: quick(2),
        ..ThrottleSettings::default()
    }))
    .await;
    let home = client_from("127.0.0.1");
    for n in 0..2 {
        let email = format!("user{n}@example.org");
        let response =
            post_credentials(&app, &home, "/api/auth/sign-up", &email, PASSWORD, None).await;
        assert_eq!(response.status().as_u16(), 200, "{email}");
    }

    // Act
    let third = post_credentials(
        &app,
        &home,
        "/api/auth/sign-up",
        "user2@example.org",
        PASSWORD,
        None,
    )
    .await;
    let elsewhere = post_credentials(
        &app,
        &client_from("127.0.0.2"),
        "/api/auth/sign-up",
        "user2@example.org",
        PASSWORD,
        None,
    )
    .await;

    // Assert: the refused sign-up stored nothing; the one from elsewhere did.
    assert_throttled(third, "1").await;
    assert_eq!(elsewhere.status().as_u16(), 200);
    let stored = app
        .database
        .integer("SELECT count(*) FROM users WHERE primary_email = 'user2@example.org'");
    assert_eq!(stored, 1);
}

#[tokio::test]
async fn a_spoofed_x_forwarded_for_does_not_dodge_the_limit_by_default() {
    // Arrange: every failure claims another address.
    let app = spawn_app_with_settings(throttled(per_account(2))).await;
    app.sign_up("ada@example.org", PASSWORD).await;
    let attacker = client_from("127.0.0.1");
    for n in 1..=2 {
        let spoofed = format!("198.51.100.{n}");
        let path = "/api/auth/login";
        let response = post_credentials(
            &app,
            &attacker,
            path,
            "ada@example.org",
            "wrong guess",
            Some(&spoofed),
        )
        .await;
        assert_eq!(response.status().as_u16(), 401);
    }

    // Act
    let response = post_credentials(
        &app,
        &attacker,
        "/api/auth/login",
        "ada@example.org",
        "wrong guess",
        Some("198.51.100.3"),
    )
    .await;

    // Assert
    assert_throttled(response, "1").await;
}

#[tokio::test]
async fn x_forwarded_for_names_the_client_when_the_peer_is_a_trusted_proxy() {
    // Arrange: 127.0.0.1 is the proxy; failures from 198.51.100.1 behind it.
    let app = spawn_app_with_settings(Settings {
        trusted_proxies: TrustedProxies(vec!["127.0.0.1".parse().unwrap()]),
        ..throttled(per_account(2))
    })
    .await;
    app.sign_up("ada@example.org", PASSWORD).await;
    let proxy = client_from("127.0.0.1");
    let path = "/api/auth/login";
    for _ in 0..2 {
        // A client-made entry left of the proxy's own is never read.
        let forwarded = Some("203.0.113.9, 198.51.100.1");
        post_credentials(
            &app,
            &proxy,
            path,
            "ada@example.org",
            "wrong guess",
            forwarded,
        )
        .await;
    }

    // Act
    let same_client = post_credentials(
        &app,
        &proxy,
        path,
        "ada@example.org",
        PASSWORD,
        Some("198.51.100.1"),
    )
    .await;
    let other_client = post_credentials(
        &app,
        &proxy,
        path,
        "ada@example.org",
        PASSWORD,
        Some("198.51.100.2"),
    )
    .await;
    let not_the_proxy = client_from("127.0.0.2");
    let untrusted_claim = post_credentials(
        &app,
        &not_the_proxy,
        path,
        "ada@example.org",
        PASSWORD,
        Some("198.51.100.1"),
    )
    .await;

    // Assert: the lock is 198.51.100.1's, and only the proxy can claim that address.
    assert_throttled(same_client, "1").await;
    assert_eq!(
        other_client.status().as_u16(),
        200,
        "another client behind the proxy"
    );
    assert_eq!(
        untrusted_claim.status().as_u16(),
        200,
        "127.0.0.2's header is ignored"
    );
}

#[tokio::test]
async fn a_full_hashing_queue_answers_503_with_retry_after_and_the_attempts_are_not_counted() {
    // Arrange: no waiting hashes, one per client; more free failures than attempts at
    // once, so none of those is refused for the count.
    const FREE: u32 = 13;
    let app = spawn_app_with_settings(Settings {
        hashing: HashSettings {
            queue: 0,
            per_client: 1,
        },
        ..throttled(per_account(FREE))
    })
    .await;
    let home = client_from("127.0.0.1");

    // Act: logins at once from one client; one hashes, the others find its share used.
    let url = format!("{}/api/auth/login", app.address);
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let request = home
                .post(&url)
                .json(&json!({"email": "ada@example.org", "password": "wrong guess"}));
            tokio::spawn(async move { request.send().await.unwrap() })
        })
        .collect();
    let mut responses = Vec::new();
    for task in tasks {
        responses.push(task.await.unwrap());
    }

    // Assert
    let mut busy = 0;
    let mut refused = 0u32;
    for response in responses {
        match response.status().as_u16() {
            503 => {
                busy += 1;
                assert_eq!(
                    response
                        .headers()
                        .get(RETRY_AFTER)
                        .unwrap()
                        .to_str()
                        .unwrap(),
                    "1"
                );
                let body = assert_error(response, 503, "Service Unavailable").await;
                assert_eq!(
                    body["message"],
                    "Too many logins and sign-ups are waiting; retry shortly"
                );
            }
            401 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(busy > 0, "some logins found the queue full");
    assert!(refused > 0, "some were checked");
    // Only the checked ones count: the attempts refused for overload were refunded, so
    // the lock comes after exactly the failures still missing from the checked ones.
    for n in refused..FREE {
        let response = login_from(&app, &home, "ada@example.org", "wrong guess").await;
        assert_eq!(response.status().as_u16(), 401, "failure {n} of {FREE}");
    }
    let next = login_from(&app, &home, "ada@example.org", "wrong guess").await;
    assert_throttled(next, "1").await;
}
