//! The API document against the app: every documented operation is served, every served
//! resource is documented with the methods it answers, and `/openapi.json` carries the
//! running server's limits. The served routes come from the app itself: the resource
//! tree actix built from `routes::configure`, the same function the server uses.

use actix_web::{App, HttpRequest, test, web};
use neptun_chat::config::Limits;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, json_body, spawn_app, spawn_app_with};

/// Served, deliberately not in the document: the document itself, its viewer, the
/// icon browsers ask for when they show it, and the web console with its files.
const UNDOCUMENTED: [&str; 6] = [
    "/openapi.json",
    "/docs",
    "/docs/{asset}",
    "/favicon.ico",
    "/",
    "/console/{file}",
];

/// The path patterns of every resource `routes::configure` registers, scopes joined
/// with their resources, read from the resource tree of an app built with it. actix has
/// no public walk of the tree, so it is read from the tree's `Debug` form: each
/// `patterns: Single("...")` line, nested by its indentation.
async fn served_resources() -> Vec<String> {
    const PROBE: &str = "/__resource_tree";
    let app = test::init_service(App::new().configure(neptun_chat::routes::configure).route(
        PROBE,
        web::get().to(|req: HttpRequest| async move { format!("{:#?}", req.resource_map()) }),
    ))
    .await;
    let tree =
        test::call_and_read_body(&app, test::TestRequest::get().uri(PROBE).to_request()).await;
    let tree = String::from_utf8(tree.to_vec()).expect("UTF-8");
    let lines: Vec<&str> = tree.lines().collect();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut resources = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim() != "patterns: Single(" {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let pattern: String = serde_json::from_str(lines[i + 1].trim().trim_end_matches(','))
            .expect("a quoted pattern");
        let is_prefix = lines[i..]
            .iter()
            .find_map(|l| l.trim().strip_prefix("is_prefix: "))
            .expect("is_prefix follows the pattern")
            .starts_with("true");
        stack.retain(|(level, _)| *level < indent);
        let full: String = stack
            .iter()
            .map(|(_, p)| p.as_str())
            .chain([pattern.as_str()])
            .collect();
        if is_prefix {
            stack.push((indent, pattern));
        } else if full != PROBE {
            resources.push(full);
        }
    }
    assert!(
        resources.len() > 5,
        "the tree was read: {resources:?}\n{tree}"
    );
    resources.sort();
    resources
}

/// The document's operations, as (method, path) pairs.
fn documented(doc: &Value) -> Vec<(String, String)> {
    let mut operations: Vec<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item")
                .keys()
                .filter(|key| *key != "parameters")
                .map(|method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    operations.sort();
    operations
}

async fn served_document(app: &TestApp) -> Value {
    json_body(app.get("/openapi.json", None).await).await
}

#[tokio::test]
async fn every_served_resource_is_documented_and_every_documented_path_is_served() {
    // Arrange
    let app = spawn_app().await;
    let doc = served_document(&app).await;

    // Act
    let served = served_resources().await;

    // Assert
    let mut documented_paths: Vec<String> = documented(&doc).into_iter().map(|(_, p)| p).collect();
    documented_paths.sort();
    documented_paths.dedup();
    let served_documented: Vec<String> = served
        .iter()
        .filter(|path| !UNDOCUMENTED.contains(&path.as_str()))
        .cloned()
        .collect();
    assert_eq!(
        served_documented, documented_paths,
        "served (left) and documented (right) paths"
    );
    for path in UNDOCUMENTED {
        assert!(served.iter().any(|p| p == path), "{path} is still served");
    }
}

#[tokio::test]
async fn every_documented_operation_is_answered_by_its_route_and_other_methods_are_refused_naming_exactly_the_documented_ones()
 {
    // Arrange
    let app = spawn_app().await;
    let user = app.seed_user("alice");
    let doc = served_document(&app).await;
    let operations = documented(&doc);
    // A fresh chat and session for every request: some operations delete a chat or
    // end the session.
    let concrete = |path: &str| {
        let chat = app.create_chat("alice");
        let path = path
            .replace("{user_id}", &user.id)
            .replace("{chat_id}", &chat.to_string());
        (path, app.create_session("alice", 30))
    };

    for (method, path) in &operations {
        // Act: the documented method, with a session and a (possibly invalid) JSON body.
        let body = (method != "GET" && method != "HEAD").then(|| json!({}));
        let (concrete_path, token) = concrete(path);
        let response = app
            .send(
                Method::from_bytes(method.as_bytes()).expect("a method"),
                &concrete_path,
                Some(&token),
                body.as_ref(),
            )
            .await;

        // Assert: answered by the route, whatever the route thinks of the body.
        let status = response.status().as_u16();
        assert_ne!(status, 405, "{method} {path} is served");
        if status == 404 && method != "HEAD" {
            let body = json_body(response).await;
            assert_ne!(
                body["message"], "No route matches this path",
                "{method} {path}: {body}"
            );
        }
    }

    let mut paths: Vec<&String> = operations.iter().map(|(_, path)| path).collect();
    paths.sort();
    paths.dedup();
    for path in paths {
        // Act: a method no route has.
        let (concrete_path, token) = concrete(path);
        let response = app
            .send(Method::PUT, &concrete_path, Some(&token), None)
            .await;

        // Assert
        assert_eq!(response.status().as_u16(), 405, "PUT {path}");
        let allow = response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        // Every GET route also answers HEAD, which the document leaves implied.
        let without_implied_head = |methods: Vec<&str>| -> Vec<String> {
            let mut methods: Vec<String> = methods
                .iter()
                .filter(|m| **m != "HEAD" || !methods.contains(&"GET"))
                .map(|m| (*m).to_owned())
                .collect();
            methods.sort();
            methods
        };
        let allowed = without_implied_head(allow.split(',').map(str::trim).collect());
        let methods = without_implied_head(
            operations
                .iter()
                .filter(|(_, p)| p == path)
                .map(|(m, _)| m.as_str())
                .collect(),
        );
        assert_eq!(
            allowed, methods,
            "{path}: Allow {allow:?} against the document"
        );
    }
}

#[tokio::test]
async fn the_served_document_has_the_running_servers_batch_and_text_limits() {
    // Arrange
    let app = spawn_app_with(Limits {
        max_batch: 3,
        max_text_bytes: 40,
        ..Limits::default()
    })
    .await;

    // Act
    let doc = served_document(&app).await;

    // Assert
    let schemas = &doc["components"]["schemas"];
    let forms = schemas["CreateMessagesBody"]["oneOf"]
        .as_array()
        .expect("two forms");
    let limit_of = |property: &str, key: &str| {
        forms
            .iter()
            .find_map(|form| form["properties"][property].get(key).cloned())
            .unwrap_or(Value::Null)
    };
    assert_eq!(limit_of("messages", "maxItems"), 3);
    assert_eq!(
        limit_of("message", "maxLength"),
        10,
        "40 bytes: 10 characters of up to 4 bytes"
    );
    assert_eq!(
        schemas["NewMessageBody"]["properties"]["content"]["maxLength"],
        10
    );
    let metrics = &doc["paths"]["/metrics"]["get"];
    assert_eq!(
        metrics["summary"], "Read the service's metrics.",
        "{metrics}"
    );
}
