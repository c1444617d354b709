//! Whole journeys the way a browser makes them: the session travels only in the cookie
//! that `Set-Cookie` handed out (parsed by hand: reqwest's cookie store will not keep a
//! `Secure` cookie over plain HTTP), and every step's answer feeds the next.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, json_body, session_cookie, spawn_app};

/// Sends a request the way the browser would: with the cookie it holds, if any.
async fn browser(
    app: &TestApp,
    cookie: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    app.send(method, path, cookie, body.as_ref()).await
}

#[tokio::test]
async fn a_browser_signs_up_chats_reads_back_and_after_logout_is_refused_everywhere() {
    let app = spawn_app().await;

    // Sign up: the cookie is all the browser keeps.
    let response = browser(
        &app,
        None,
        Method::POST,
        "/api/auth/sign-up",
        Some(json!({"email": "Lin@Example.com", "password": "a long passphrase"})),
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    let (cookie, _) = session_cookie(&response).expect("sign-up sets the session cookie");
    let user = json_body(response).await["user"].clone();
    let user_id = user["id"].as_str().unwrap().to_owned();
    let cookie = Some(cookie.as_str());

    // The session is live.
    let session = browser(&app, cookie, Method::GET, "/api/auth/session", None).await;
    assert_eq!(json_body(session).await, json!({ "user": user }));
    let check = browser(&app, cookie, Method::HEAD, "/api/auth/check", None).await;
    assert_eq!(check.status().as_u16(), 200);

    // Create a chat under the generated user id.
    let chats = format!("/api/users/{user_id}/chats");
    let response = browser(
        &app,
        cookie,
        Method::POST,
        &chats,
        Some(json!({"name": "First chat", "model": "gpt-4o-mini"})),
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    let chat = json_body(response).await["chat"].clone();
    assert_eq!(chat["neptun_user_id"], user_id.as_str());
    let chat_id = chat["id"].as_i64().unwrap();
    let messages = format!("{chats}/{chat_id}/messages");

    // Post a conversation as one batch.
    let response = browser(
        &app,
        cookie,
        Method::POST,
        &messages,
        Some(json!({"messages": [
            {"content": "You are terse.", "role": "system"},
            {"content": "What is 2 + 2?", "role": "user"},
            {"content": "4", "role": "assistant"},
        ]})),
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    let posted = json_body(response).await["chatMessages"].clone();
    assert_eq!(posted.as_array().unwrap().len(), 3);

    // Read it back: the same messages, ids and order.
    let response = browser(&app, cookie, Method::GET, &messages, None).await;
    assert_eq!(
        json_body(response).await,
        json!({"chatMessages": posted, "next": null})
    );
    let response = browser(&app, cookie, Method::GET, &chats, None).await;
    let listed = json_body(response).await;
    assert_eq!(listed["chats"].as_array().unwrap().len(), 1);
    assert_eq!(listed["chats"][0]["id"], chat_id);

    // Log out: the browser is told to forget the cookie.
    let response = browser(&app, cookie, Method::POST, "/api/auth/logout", None).await;
    assert_eq!(response.status().as_u16(), 200);
    let (cleared, attributes) = session_cookie(&response).expect("a clearing cookie");
    assert_eq!(cleared, "");
    assert!(
        attributes.iter().any(|a| a == "Max-Age=0"),
        "{attributes:?}"
    );

    // A browser that kept the old cookie anyway is refused everywhere.
    let refused: [(Method, &str, Option<Value>); 7] = [
        (Method::GET, "/api/auth/session", None),
        (Method::GET, &chats, None),
        (
            Method::POST,
            &chats,
            Some(json!({"name": "after logout", "model": "m"})),
        ),
        (Method::GET, &messages, None),
        (
            Method::POST,
            &messages,
            Some(json!({"message": "after logout", "actor": "user"})),
        ),
        (Method::DELETE, &format!("{messages}/last"), None),
        (
            Method::DELETE,
            &chats,
            Some(json!({ "chat_ids": [chat_id] })),
        ),
    ];
    for (method, path, body) in refused {
        let response = browser(&app, cookie, method.clone(), path, body).await;
        assert_error(response, 401, "Unauthorized").await;
    }
    let check = browser(&app, cookie, Method::HEAD, "/api/auth/check", None).await;
    assert_eq!(check.status().as_u16(), 401);

    // Nothing was lost or added while signed out.
    let stored: Vec<i64> = app
        .stored_messages(chat_id)
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    let posted_ids: Vec<i64> = posted
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(stored, posted_ids);

    // Logging in again, in another case, brings the same chat back.
    let response = browser(
        &app,
        None,
        Method::POST,
        "/api/auth/login",
        Some(json!({"email": "lin@example.COM", "password": "a long passphrase"})),
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    let (new_cookie, _) = session_cookie(&response).expect("login sets the session cookie");
    assert_ne!(Some(new_cookie.as_str()), cookie);
    let response = browser(&app, Some(&new_cookie), Method::GET, &messages, None).await;
    assert_eq!(
        json_body(response).await,
        json!({"chatMessages": posted, "next": null})
    );
}
