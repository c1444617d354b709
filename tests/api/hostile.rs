//! Hostile and broken input against the running server. Property tests throw arbitrary
//! JSON, bytes, chat-id segments, query strings and headers at the JSON routes; explicit
//! cases cover deep nesting, huge numbers, invalid UTF-8, NUL characters, oversized or
//! malformed request heads, and idle, slow and stalling clients.
//!
//! Whatever arrives, the server must never answer 5xx or fall over (it still answers
//! `/healthz` afterwards), must answer every error with the JSON envelope whose
//! `statusCode` is the HTTP status, and must store nothing for a request it rejects.
//! Create-messages bodies are judged by an independent model of the README's rules; the
//! other bodies by the crate's own validators, whose rules have unit tests: here the
//! point is that the HTTP layer agrees with them and never writes on a rejection.
//!
//! Answers produced by the HTTP parser itself, before the application sees the request
//! (431 for an oversized head, 408 for a slow head, 400 for broken framing), have empty
//! bodies; the tests that provoke them check the status and the connection, not JSON.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use neptun_chat::config::Limits;
use neptun_chat::validation::{
    parse_chat_ids, parse_chat_rename, parse_credentials, parse_new_chat,
};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config, TestCaseError, TestCaseResult, TestRunner};
use reqwest::header::{CONTENT_TYPE, COOKIE, HeaderMap, HeaderValue, SET_COOKIE};
use reqwest::{Method, RequestBuilder, Url};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::database::Backend;
use crate::helpers::{TestApp, TestUser, spawn_app, spawn_app_with};

const MAX_BODY: usize = 4 * 1024 * 1024;
const MAX_TEXT: usize = 256 * 1024;
const MAX_BATCH: usize = 1000;
const ROLES: &[&str] = &["user", "assistant", "system"];
const ENVELOPE_KEYS: [&str; 4] = ["statusCode", "statusMessage", "message", "data"];
const INVALID_ROUTE_PARAMS: &str = "Bad Request. Invalid routeParams(user_id, chat_id).";

/// Object keys the generators favour, so that near-valid bodies turn up.
const MESSAGE_FIELDS: &[&str] = &["message", "actor", "messages", "content", "role"];
const CREDENTIAL_FIELDS: &[&str] = &["email", "password"];
const CHAT_FIELDS: &[&str] = &["name", "model", "chat_ids"];

/// Number literals that strain a JSON parser: beyond a double's range, beyond 64 bits,
/// negative zero, denormals.
const ODD_NUMBERS: &[&str] = &[
    "1e400",
    "-1e400",
    "1e999999",
    "1E-400",
    "-0",
    "-0.0",
    "0e0",
    "5e-324",
    "1.7976931348623157e308",
    "123456789012345678901234567890",
    "-123456789012345678901234567890",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
];

/// JSON string literals with escapes that are easy to get wrong: NUL, lone and swapped
/// surrogates (invalid), a valid pair, and an escape JSON does not have (invalid).
const ODD_STRING_LITERALS: &[&str] = &[
    r#""\u0000""#,
    r#""a\u0000b""#,
    r#""\ud800""#,
    r#""\udc00\ud800""#,
    r#""\uD83D\uDE00""#,
    r#""\u00e9\n\t\/""#,
    r#""\x41""#,
];

/// Characters that are, or look like, white space. U+200B and NUL are not white space.
const BLANKS: &[char] = &[
    ' ', '\t', '\n', '\r', '\u{a0}', '\u{2003}', '\u{3000}', '\u{feff}', '\u{85}', '\u{200b}',
    '\u{0}',
];

// ---------------------------------------------------------------------------------------
// Running properties and checking answers
// ---------------------------------------------------------------------------------------

/// The seed of every property's inputs unless `PROPTEST_RNG_SEED` gives another: the
/// same inputs on every run and every machine, so a failure in CI fails the same way
/// at a developer's desk.
const DEFAULT_SEED: u64 = 0x6e65_7074_756e;

/// Where failing inputs are kept, and tried first on the next runs (commit new lines).
const REGRESSIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/api/hostile.proptest-regressions"
);

/// Runs `property` on `default_cases` inputs drawn from `strategy` (`PROPTEST_CASES`
/// overrides the number), each on the test's runtime, and panics with the smallest
/// failing input proptest finds and the seed that reproduces it. The inputs come from
/// a fixed seed (`PROPTEST_RNG_SEED` overrides it) with the ChaCha generator, which
/// proptest keeps stable across versions; failing inputs are persisted in
/// [`REGRESSIONS`]. Needs the multi-threaded runtime: it blocks its thread.
fn check_property<S, F>(default_cases: u32, strategy: S, property: impl Fn(S::Value) -> F)
where
    S: Strategy,
    S::Value: Debug,
    F: Future<Output = TestCaseResult>,
{
    use proptest::test_runner::{FileFailurePersistence, RngAlgorithm, RngSeed};

    // `Config::default()` has read `PROPTEST_CASES` and `PROPTEST_RNG_SEED` already.
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default_cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(DEFAULT_SEED);
    }
    config.rng_algorithm = RngAlgorithm::ChaCha;
    config.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS)));
    config.max_shrink_iters = 256;
    let seed = config.rng_seed;
    let mut runner = TestRunner::new(config);
    let runtime = tokio::runtime::Handle::current();
    let outcome = tokio::task::block_in_place(|| {
        runner.run(&strategy, |input| runtime.block_on(property(input)))
    });
    if let Err(failure) = outcome {
        panic!("{failure}\n(reproduce with PROPTEST_RNG_SEED={seed})");
    }
}

/// An answer that passed [`exchange`]'s checks.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

/// Sends `request` and checks what every answer must be, whatever was sent: not a 5xx,
/// a JSON body, and for an error exactly the envelope, its `statusCode` the HTTP status.
async fn exchange(request: RequestBuilder) -> Result<Answer, TestCaseError> {
    let response = request
        .send()
        .await
        .map_err(|err| TestCaseError::fail(format!("no answer (connection dropped?): {err:?}")))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response
        .bytes()
        .await
        .map_err(|err| TestCaseError::fail(format!("the {status} body broke off: {err:?}")))?;
    let text = String::from_utf8_lossy(&bytes);
    prop_assert!(status < 500, "a {} answer: {}", status, text);
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    prop_assert!(
        content_type.starts_with("application/json"),
        "content type {:?} of a {} answer: {}",
        content_type,
        status,
        text
    );
    let body: Value = serde_json::from_slice(&bytes).map_err(|err| {
        TestCaseError::fail(format!("the {status} answer is not JSON ({err}): {text}"))
    })?;
    if status >= 400 {
        let only_envelope_keys = body
            .as_object()
            .is_some_and(|object| object.keys().all(|k| ENVELOPE_KEYS.contains(&k.as_str())));
        prop_assert!(only_envelope_keys, "an envelope and nothing else: {}", body);
        prop_assert_eq!(
            &body["statusCode"],
            &json!(status),
            "statusCode in {}",
            body
        );
        let non_empty = |key: &str| body[key].as_str().is_some_and(|text| !text.is_empty());
        prop_assert!(non_empty("statusMessage"), "statusMessage in {}", body);
        prop_assert!(non_empty("message"), "message in {}", body);
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// Checks that `answer` is a 400 for a body that should hold `fields`, listing `issues`
/// when given (otherwise at least one issue, none of them `invalid_json`).
fn check_invalid_body(answer: &Answer, fields: &str, issues: Option<Value>) -> TestCaseResult {
    prop_assert_eq!(answer.status, 400, "a rejected body: {}", answer.body);
    let status_message = format!("Bad Request. Invalid body({fields}).");
    prop_assert_eq!(
        answer.body["statusMessage"].as_str(),
        Some(&*status_message)
    );
    let found = &answer.body["data"]["issues"];
    match issues {
        Some(issues) => prop_assert_eq!(found, &issues),
        None => {
            let found = found.as_array().cloned().unwrap_or_default();
            prop_assert!(!found.is_empty(), "issues in {}", answer.body);
            prop_assert!(
                found.iter().all(|issue| issue["code"] != "invalid_json"),
                "well-formed JSON is not reported as invalid_json: {}",
                answer.body
            );
        }
    }
    Ok(())
}

/// The issue the server lists for a body the JSON parser rejects with `err`.
fn invalid_json_issue(err: &serde_json::Error) -> Value {
    json!([{
        "code": "invalid_json",
        "line": err.line(),
        "column": err.column(),
        "path": [],
        "message": format!("Invalid JSON: {err}"),
    }])
}

/// The server still answers its health check, to a fresh client.
async fn assert_alive(app: &TestApp) {
    let response = reqwest::Client::new()
        .get(format!("{}/healthz", app.address))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("the server still answers");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );
}

fn session_cookie(token: &str) -> String {
    format!("neptun-session={token}")
}

/// Everything a request could change, read straight from the database. Messages
/// are counted, with the AUTOINCREMENT high-water mark, so that a message stored and
/// deleted again still shows.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    users: Vec<(String, Option<String>)>,
    sessions: i64,
    /// `(id, owner, name, model, updated_at)` in id order.
    chats: Vec<(i64, String, String, String, String)>,
    messages: (i64, Option<i64>),
    idempotency_keys: i64,
}

fn snapshot(app: &TestApp) -> Stored {
    let db = &app.database;
    let text = |value: &Option<String>| value.clone().expect("a value");
    let number = |value: &Option<String>| text(value).parse::<i64>().expect("an integer");
    let users = db
        .rows("SELECT id, primary_email FROM users ORDER BY id")
        .iter()
        .map(|row| (text(&row[0]), row[1].clone()))
        .collect();
    let chats = db
        .rows(&format!(
            "SELECT id, neptun_user_id, name, model, {} FROM chat_conversations ORDER BY id",
            db.timestamp("updated_at")
        ))
        .iter()
        .map(|row| {
            (
                number(&row[0]),
                text(&row[1]),
                text(&db.text(&row[2])),
                text(&db.text(&row[3])),
                text(&row[4]),
            )
        })
        .collect();
    // PostgreSQL's sequences are not transactional (a rolled-back insert uses up its
    // ids), so there the highest id stored stands in for SQLite's high-water mark.
    let high_water = match db.backend() {
        Backend::Sqlite => "SELECT seq FROM sqlite_sequence WHERE name = 'chat_messages'",
        Backend::Postgres => "SELECT max(id) FROM chat_messages",
    };
    let messages = (
        db.count("chat_messages"),
        db.rows(high_water)
            .first()
            .and_then(|row| row[0].as_ref())
            .map(|seq| seq.parse().expect("an integer")),
    );
    Stored {
        users,
        sessions: db.count("sessions"),
        chats,
        messages,
        idempotency_keys: db.count("idempotency_keys"),
    }
}

/// The last `n` messages of a chat as `(text, role)`, oldest first.
fn last_stored(app: &TestApp, chat_id: i64, n: usize) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = app
        .database
        .stored_messages(chat_id)
        .into_iter()
        .rev()
        .take(n)
        .map(|(_, text, actor)| (text, actor))
        .collect();
    rows.reverse();
    rows
}

/// The ids of a chat's messages, ascending.
fn message_ids(app: &TestApp, chat_id: i64) -> Vec<i64> {
    app.database
        .stored_messages(chat_id)
        .into_iter()
        .map(|(id, _, _)| id)
        .collect()
}

/// `text` with every character outside `keep` and the URL-unreserved set
/// percent-encoded. `%` is always kept, so generated escapes reach the server as written.
fn percent_encode(text: &str, keep: &str) -> String {
    let mut encoded = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || "-._~%".contains(c) || keep.contains(c) {
            encoded.push(c);
        } else {
            let mut utf8 = [0u8; 4];
            for byte in c.encode_utf8(&mut utf8).bytes() {
                encoded.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    encoded
}

/// Decodes every well-formed `%XX`; anything else is kept as it is.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|pair| pair.iter().all(u8::is_ascii_hexdigit))
            .and_then(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    decoded
}

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

/// A request body; `Debug` shows it as text with other bytes escaped, so that a failing
/// input reads as what was sent.
#[derive(Clone)]
struct Body(Vec<u8>);

impl Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

fn encoded(text: impl AsRef<str>) -> String {
    serde_json::to_string(text.as_ref()).unwrap()
}

/// A JSON object from already-encoded values; keys are encoded here.
fn render_object(fields: &[(String, String)]) -> String {
    let members: Vec<String> = fields
        .iter()
        .map(|(key, value)| format!("{}:{value}", encoded(key)))
        .collect();
    format!("{{{}}}", members.join(","))
}

fn render_array(items: &[String]) -> String {
    format!("[{}]", items.join(","))
}

/// A string of 0 to 4 white-space-like characters.
fn blank() -> BoxedStrategy<String> {
    prop::collection::vec(select(BLANKS), 0..4)
        .prop_map(|chars| chars.into_iter().collect())
        .boxed()
}

fn json_number() -> BoxedStrategy<String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        // NaN and the infinities come out as `null`.
        any::<f64>().prop_map(|x| serde_json::to_string(&x).unwrap()),
        select(ODD_NUMBERS).prop_map(str::to_owned),
    ]
    .boxed()
}

/// A JSON string literal: any printable Unicode, the roles, anything at all, blanks, or
/// a literal with odd escapes.
fn json_string() -> BoxedStrategy<String> {
    prop_oneof![
        6 => "\\PC{1,16}".prop_map(encoded),
        4 => select(ROLES).prop_map(encoded),
        2 => any::<String>().prop_map(encoded),
        2 => blank().prop_map(encoded),
        1 => select(ODD_STRING_LITERALS).prop_map(str::to_owned),
    ]
    .boxed()
}

/// JSON text of any value, nested up to four deep, with object keys often from `keys`.
fn json_value(keys: &'static [&'static str]) -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        2 => select(&["null", "true", "false"][..]).prop_map(str::to_owned),
        3 => json_number(),
        6 => json_string(),
    ];
    leaf.prop_recursive(4, 32, 5, move |inner| {
        let key = prop_oneof![
            3 => select(keys).prop_map(str::to_owned),
            1 => "\\PC{0,8}",
            1 => any::<String>(),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|items| render_array(&items)),
            prop::collection::vec((key, inner), 0..5).prop_map(|fields| render_object(&fields)),
        ]
    })
    .boxed()
}

/// An optional `name: value` member.
fn member(
    name: &'static str,
    value: BoxedStrategy<String>,
) -> BoxedStrategy<Vec<(String, String)>> {
    prop::option::weighted(0.95, value)
        .prop_map(move |value| value.map(|v| (name.to_owned(), v)).into_iter().collect())
        .boxed()
}

/// Zero or one member with a random (often meaningful) key and any value.
fn extra_members(keys: &'static [&'static str]) -> BoxedStrategy<Vec<(String, String)>> {
    let key = prop_oneof![select(keys).prop_map(str::to_owned), "\\PC{0,8}"];
    prop::collection::vec((key, json_value(keys)), 0..2).boxed()
}

/// An object of the given members in a random order.
fn object_of(members: Vec<BoxedStrategy<Vec<(String, String)>>>) -> BoxedStrategy<String> {
    members
        .prop_map(|parts| parts.into_iter().flatten().collect::<Vec<_>>())
        .prop_shuffle()
        .prop_map(|fields| render_object(&fields))
        .boxed()
}

/// A message text: mostly valid, sometimes blank, near the 256 KiB limit (with one
/// two-byte character, so the limit is visibly in bytes), with a NUL, or any value.
fn message_text() -> BoxedStrategy<String> {
    prop_oneof![
        12 => "\\PC{1,24}".prop_map(encoded),
        1 => blank().prop_map(encoded),
        1 => select(vec![MAX_TEXT - 1, MAX_TEXT, MAX_TEXT + 1])
            .prop_map(|len| encoded(format!("é{}", "a".repeat(len - 2)))),
        1 => Just(r#""a\u0000b""#.to_owned()),
        2 => json_value(MESSAGE_FIELDS),
    ]
    .boxed()
}

fn message_role() -> BoxedStrategy<String> {
    prop_oneof![
        12 => select(ROLES).prop_map(encoded),
        1 => select(&["User", "SYSTEM", " user", "robot", ""][..]).prop_map(encoded),
        1 => json_value(MESSAGE_FIELDS),
    ]
    .boxed()
}

/// A create-messages body: the single form, the batch form, or any JSON value, with
/// optional white space (or a byte order mark) around it.
fn create_messages_body() -> BoxedStrategy<Vec<u8>> {
    let single = object_of(vec![
        member("message", message_text()),
        member("actor", message_role()),
        extra_members(MESSAGE_FIELDS),
    ]);
    let item = prop_oneof![
        8 => object_of(vec![member("content", message_text()), member("role", message_role())]),
        1 => json_value(MESSAGE_FIELDS),
    ];
    let batch = (
        prop::collection::vec(item, 0..4),
        extra_members(MESSAGE_FIELDS),
    )
        .prop_map(|(items, extra)| {
            let mut fields = vec![("messages".to_owned(), render_array(&items))];
            fields.extend(extra);
            render_object(&fields)
        });
    let body = prop_oneof![3 => single, 3 => batch, 1 => json_value(MESSAGE_FIELDS)];
    let before = prop_oneof![6 => Just(""), 1 => Just(" \n\t"), 1 => Just("\u{feff}")];
    (before, body, select(&["", " ", "\r\n"][..]))
        .prop_map(|(before, body, after)| format!("{before}{body}{after}").into_bytes())
        .boxed()
}

/// Byte sequences that are not UTF-8: an overlong slash, an encoded surrogate, a cut
/// three-byte sequence, a lone continuation byte, a code point above U+10FFFF, 0xFF.
const INVALID_UTF8: &[&[u8]] = &[
    b"\xC0\xAF",
    b"\xED\xA0\x80",
    b"\xE2\x82",
    b"\x80",
    b"\xF5\x80\x80\x80",
    b"\xFF",
];

/// Bytes sent as `application/json`: anything, a near-valid body with a few bytes
/// overwritten or cut short, or a valid body with invalid UTF-8 in its text.
fn json_ish_bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        (
            create_messages_body(),
            prop::collection::vec((any::<Index>(), any::<u8>()), 1..4)
        )
            .prop_map(|(mut body, edits)| {
                for (at, byte) in edits {
                    if !body.is_empty() {
                        let i = at.index(body.len());
                        body[i] = byte;
                    }
                }
                body
            }),
        (create_messages_body(), any::<Index>())
            .prop_map(|(body, at)| body[..at.index(body.len() + 1)].to_vec()),
        (select(INVALID_UTF8), "\\PC{0,6}").prop_map(|(bad, text)| {
            let mut body = br#"{"message":""#.to_vec();
            body.extend_from_slice(text.as_bytes());
            body.extend_from_slice(bad);
            body.extend_from_slice(br#"","actor":"user"}"#);
            body
        }),
    ]
    .boxed()
}

/// Bytes a header value may hold: visible ASCII, space, tab and obs-text (0x80-0xFF).
fn header_bytes(len: Range<usize>) -> BoxedStrategy<Vec<u8>> {
    prop::collection::vec(
        prop_oneof![4 => 0x20u8..0x7f, 1 => 0x80u8..=0xff, 1 => Just(b'\t')],
        len,
    )
    .boxed()
}

// ---------------------------------------------------------------------------------------
// Create-messages bodies
// ---------------------------------------------------------------------------------------

/// What a create-messages body must get, judged by the README's rules (not by the
/// crate's validator): stored messages as `(text, role)`, or a rejection.
#[derive(Debug)]
enum Verdict {
    TooLarge,
    InvalidJson(Value),
    Invalid,
    Stored {
        single: bool,
        messages: Vec<(String, String)>,
    },
}

fn judge_messages_body(body: &[u8]) -> Verdict {
    if body.len() > MAX_BODY {
        return Verdict::TooLarge;
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(err) => return Verdict::InvalidJson(invalid_json_issue(&err)),
    };
    let Some(object) = value.as_object() else {
        return Verdict::Invalid;
    };
    let single = object.contains_key("message") || object.contains_key("actor");
    let messages = match (single, object.get("messages")) {
        (true, None) => valid_message(object, "message", "actor").map(|m| vec![m]),
        (false, Some(Value::Array(items))) if (1..=MAX_BATCH).contains(&items.len()) => items
            .iter()
            .map(|item| valid_message(item.as_object()?, "content", "role"))
            .collect(),
        _ => None,
    };
    messages.map_or(Verdict::Invalid, |messages| Verdict::Stored {
        single,
        messages,
    })
}

/// A text that is not blank (white space and U+FEFF, as JavaScript's trim) and at most
/// 256 KiB of UTF-8, and one of the three roles.
fn valid_message(object: &Map<String, Value>, text: &str, role: &str) -> Option<(String, String)> {
    let text = object.get(text)?.as_str()?;
    let role = object.get(role)?.as_str()?;
    let blank = text
        .trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
        .is_empty();
    (!blank && text.len() <= MAX_TEXT && ROLES.contains(&role))
        .then(|| (text.to_owned(), role.to_owned()))
}

/// Posts `body` to Alice's chat and checks the answer and the database against
/// [`judge_messages_body`].
async fn post_messages_and_check(
    app: &TestApp,
    alice: &TestUser,
    Body(body): Body,
) -> TestCaseResult {
    let before = snapshot(app);
    let request = app
        .client
        .post(app.messages_url(&alice.id, alice.chat_id))
        .header(COOKIE, session_cookie(&alice.token))
        .header(CONTENT_TYPE, "application/json")
        .body(body.clone());
    let answer = exchange(request).await?;
    let after = snapshot(app);
    match judge_messages_body(&body) {
        Verdict::Stored { single, messages } => {
            prop_assert_eq!(
                answer.status,
                200,
                "a valid body is stored: {}",
                answer.body
            );
            let returned = if single {
                vec![answer.body["chatMessage"].clone()]
            } else {
                answer.body["chatMessages"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            };
            let ids: Vec<i64> = returned.iter().filter_map(|m| m["id"].as_i64()).collect();
            prop_assert!(
                ids.len() == returned.len() && ids.windows(2).all(|w| w[0] < w[1]),
                "ids increase in array order: {}",
                answer.body
            );
            prop_assert!(
                returned
                    .iter()
                    .all(|m| m["chat_conversation_id"] == alice.chat_id
                        && m["neptun_user_id"] == "alice"),
                "in Alice's chat: {}",
                answer.body
            );
            let returned: Vec<(String, String)> = returned
                .iter()
                .map(|m| {
                    let field = |key: &str| m[key].as_str().unwrap_or("<missing>").to_owned();
                    (field("message"), field("actor"))
                })
                .collect();
            prop_assert_eq!(&returned, &messages, "the answer holds what was sent");
            prop_assert_eq!(
                after.messages.0,
                before.messages.0 + messages.len() as i64,
                "exactly the returned messages are stored"
            );
            prop_assert_eq!(&last_stored(app, alice.chat_id, messages.len()), &messages);
            return Ok(());
        }
        Verdict::TooLarge => prop_assert_eq!(answer.status, 413),
        Verdict::InvalidJson(issues) => {
            check_invalid_body(&answer, "message | messages", Some(issues))?;
        }
        Verdict::Invalid => check_invalid_body(&answer, "message | messages", None)?,
    }
    prop_assert_eq!(&after, &before, "a rejected body changes nothing");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_json_bodies_store_exactly_the_valid_messages_and_nothing_else() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");

    // Act and assert, for each generated body
    check_property(128, create_messages_body().prop_map(Body), |body| {
        post_messages_and_check(&app, &alice, body)
    });

    assert_alive(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_bytes_declared_as_json_are_stored_only_when_they_are_a_valid_body() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");

    // Act and assert, for each generated body
    check_property(128, json_ish_bytes().prop_map(Body), |body| {
        post_messages_and_check(&app, &alice, body)
    });

    assert_alive(&app).await;
}

// ---------------------------------------------------------------------------------------
// Chat ids in the path
// ---------------------------------------------------------------------------------------

/// Chat id segments that are odd, as written before percent-encoding.
const ODD_CHAT_IDS: &[&str] = &[
    "1e999999",
    "123456789012345678901234567890",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "0",
    "00",
    "-0",
    "01",
    " 1",
    "1 ",
    ".",
    "..",
    "%2e",
    "%2E%2e",
    "%31",
    "%2F",
    "1%2F2",
    "%00",
    "1%00",
    "%ff",
    "%E2%80%8B1",
    "١",
    "１",
];

fn chat_id_segment() -> BoxedStrategy<String> {
    prop_oneof![
        "[0-9]{1,3}",
        "[0-9]{19,40}",
        "-[0-9]{1,20}",
        "[+-]?[0-9]{0,4}[.eE][+-]?[0-9]{0,6}",
        select(ODD_CHAT_IDS).prop_map(str::to_owned),
        "\\PC{1,10}",
        "(%[0-9A-Fa-f]{2}){1,6}",
        "[0-9]{0,2}%[0-9A-Za-z]{0,2}[0-9]{0,2}",
    ]
    .prop_map(|segment| percent_encode(&segment, "!$&'()*+,;=:@"))
    .boxed()
}

/// What a chat id segment means to the server.
#[derive(Debug, PartialEq)]
enum ChatIdVerdict {
    /// The URL parser resolved a dot segment, so the request goes to another route.
    Rerouted,
    /// Not a positive 64-bit decimal integer once percent-decoded.
    Malformed,
    /// A well-formed id.
    Id(i64),
}

fn judge_chat_id(segment: &str) -> ChatIdVerdict {
    let decoded = String::from_utf8(percent_decode(segment)).unwrap_or_default();
    let digits = !decoded.is_empty() && decoded.bytes().all(|b| b.is_ascii_digit());
    match decoded.parse::<i64>() {
        Ok(id) if digits && id > 0 => ChatIdVerdict::Id(id),
        _ => ChatIdVerdict::Malformed,
    }
}

/// Sends a read, a create-messages and a rename to chat `segment` of Alice's and checks
/// each against what the segment means.
async fn chat_id_requests_and_check(
    app: &TestApp,
    alice: &TestUser,
    segment: String,
) -> TestCaseResult {
    let chat_url = format!("{}/api/users/alice/chats/{segment}", app.address);
    let messages_url = format!("{chat_url}/messages");
    let parsed = Url::parse(&messages_url).unwrap();
    let verdict = if parsed.path() == format!("/api/users/alice/chats/{segment}/messages") {
        judge_chat_id(&segment)
    } else {
        ChatIdVerdict::Rerouted
    };
    let requests = [
        app.client.get(&messages_url),
        app.client
            .post(&messages_url)
            .header(CONTENT_TYPE, "application/json")
            .body(json!({"message": format!("to {segment}"), "actor": "user"}).to_string()),
        app.client
            .patch(&chat_url)
            .header(CONTENT_TYPE, "application/json")
            .body(json!({"name": format!("renamed via {segment}")}).to_string()),
    ];
    for (i, request) in requests.into_iter().enumerate() {
        let before = snapshot(app);
        let answer = exchange(request.header(COOKIE, session_cookie(&alice.token))).await?;
        let after = snapshot(app);
        match verdict {
            ChatIdVerdict::Id(id) if id == alice.chat_id => {
                prop_assert_eq!(
                    answer.status,
                    200,
                    "request {} to {}: {}",
                    i,
                    segment,
                    answer.body
                );
                if i == 1 {
                    prop_assert_eq!(after.messages.0, before.messages.0 + 1);
                }
                continue;
            }
            ChatIdVerdict::Id(_) => {
                prop_assert_eq!(answer.status, 404, "request {} to {}", i, segment);
                prop_assert_eq!(answer.body["message"].as_str(), Some("Chat not found"));
            }
            ChatIdVerdict::Malformed => {
                prop_assert_eq!(
                    &answer.body,
                    &json!({
                        "statusCode": 400,
                        "statusMessage": INVALID_ROUTE_PARAMS,
                        "message": "chat_id must be a positive integer",
                    }),
                    "request {} to {}",
                    i,
                    segment
                );
            }
            ChatIdVerdict::Rerouted => {
                prop_assert!(answer.status >= 400, "request {} to {}", i, segment);
            }
        }
        prop_assert_eq!(
            &after,
            &before,
            "request {} to {} changes nothing",
            i,
            segment
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_chat_id_segments_reach_the_chat_only_when_they_decode_to_its_id() {
    // Arrange: Bob's chat is not Alice's, so its id must be a 404 for her.
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let _bob = app.seed_user("bob");

    // Act and assert, for each generated segment
    check_property(96, chat_id_segment(), |segment| {
        chat_id_requests_and_check(&app, &alice, segment)
    });

    assert_alive(&app).await;
}

// ---------------------------------------------------------------------------------------
// Query strings
// ---------------------------------------------------------------------------------------

const ORDER_BY: &[&str] = &[
    "created_at",
    "created_at:asc",
    "created_at:desc",
    "updated_at",
    "updated_at:asc",
    "updated_at:desc",
    "name",
    "name:asc",
    "name:desc",
];

/// Parameter names that are almost, or only when decoded, the real ones.
const NEAR_MISS_NAMES: &[&str] = &[
    "LIMIT",
    "Limit",
    "limit[]",
    "%6Cimit",
    "limit%00",
    "order%5Fby",
    "",
    " limit",
];

/// Values that are almost, or only when decoded, valid ones.
const ODD_VALUES: &[&str] = &[
    "name:ASC",
    "name:asc:desc",
    "updated_at:",
    ":desc",
    "name%3Adesc",
    "+1",
    "1+",
    "%2B1",
    "1e2",
    "0x10",
    "%31%30",
    "١",
    "",
];

/// A query string of up to five parameters: the real names, near misses (case, an
/// encoded letter, a NUL, brackets), junk; values valid, out of range, signed, encoded.
fn query_string() -> BoxedStrategy<String> {
    let name = prop_oneof![
        6 => select(&["limit", "after", "before", "order_by"][..]).prop_map(str::to_owned),
        1 => select(NEAR_MISS_NAMES).prop_map(str::to_owned),
        1 => "\\PC{1,6}",
    ];
    let value = prop_oneof![
        3 => "[0-9]{1,4}",
        1 => "[0-9]{18,25}",
        1 => "-[0-9]{1,3}",
        2 => select(ORDER_BY).prop_map(str::to_owned),
        1 => select(ODD_VALUES).prop_map(str::to_owned),
        1 => "\\PC{0,8}",
        1 => "(%[0-9A-Fa-f]{2}){1,3}",
    ];
    let pair = prop_oneof![
        4 => (name.clone(), value).prop_map(|(name, value)| {
            format!("{}={}", percent_encode(&name, "+:"), percent_encode(&value, "+:"))
        }),
        1 => name.prop_map(|name| percent_encode(&name, "+:")),
        1 => "\\PC{0,6}".prop_map(|junk| percent_encode(&junk, "+:")),
    ];
    prop::collection::vec(pair, 0..5)
        .prop_map(|pairs| pairs.join("&"))
        .boxed()
}

/// The page (`ids`, `next`) that `GET .../messages` must answer out of the chat's
/// ascending `ids` for the decoded query `pairs`, or `None` if it must refuse them.
fn expected_page(pairs: &[(String, String)], ids: &[i64]) -> Option<(Vec<i64>, Option<i64>)> {
    let mut params: HashMap<&str, &str> = HashMap::new();
    for (name, value) in pairs {
        let known = ["limit", "after", "before"].contains(&name.as_str());
        if known && params.insert(name, value).is_some() {
            return None;
        }
    }
    let integer = |name: &str, min: i64, max: i64| -> Option<Option<i64>> {
        let Some(text) = params.get(name) else {
            return Some(None);
        };
        let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        let value = text
            .parse::<i64>()
            .ok()
            .filter(|n| digits && (min..=max).contains(n));
        value.map(Some)
    };
    let limit = integer("limit", 1, 1000)?;
    let after = integer("after", 0, i64::MAX)?;
    let before = integer("before", 1, i64::MAX)?;
    if params.contains_key("after") && params.contains_key("before") {
        return None;
    }
    let size = limit.map_or(100, |limit| limit as usize);
    Some(match (limit, after, before) {
        (None, None, None) => (ids.to_vec(), None),
        (_, after, None) => {
            let above: Vec<i64> = ids
                .iter()
                .copied()
                .filter(|id| *id > after.unwrap_or(0))
                .collect();
            let page: Vec<i64> = above.iter().copied().take(size).collect();
            let next = (above.len() > size).then(|| page[page.len() - 1]);
            (page, next)
        }
        (_, _, Some(before)) => {
            let below: Vec<i64> = ids.iter().copied().filter(|id| *id < before).collect();
            let page = below[below.len().saturating_sub(size)..].to_vec();
            let next = (below.len() > size).then(|| page[0]);
            (page, next)
        }
    })
}

/// Whether `GET .../chats` must accept the decoded query `pairs`.
fn order_by_accepted(pairs: &[(String, String)]) -> bool {
    let values: Vec<&str> = pairs
        .iter()
        .filter(|(name, _)| name == "order_by")
        .map(|(_, value)| value.as_str())
        .collect();
    match values[..] {
        [] => true,
        [value] => ORDER_BY.contains(&value),
        _ => false,
    }
}

/// Sends `query` to both listings of Alice's and checks each answer against the rules.
async fn listings_and_check(
    app: &TestApp,
    alice: &TestUser,
    chats: &[i64],
    query: String,
) -> TestCaseResult {
    let before = snapshot(app);
    let ids = message_ids(app, alice.chat_id);

    let url = Url::parse(&format!(
        "{}?{query}",
        app.messages_url("alice", alice.chat_id)
    ))
    .unwrap();
    // The server decodes the query the client sends, as the URL parser normalised it.
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let request = app
        .client
        .get(url)
        .header(COOKIE, session_cookie(&alice.token));
    let answer = exchange(request).await?;
    match expected_page(&pairs, &ids) {
        Some((page, next)) => {
            prop_assert_eq!(answer.status, 200, "{:?}: {}", pairs, answer.body);
            let returned: Vec<i64> = answer.body["chatMessages"]
                .as_array()
                .map(|messages| messages.iter().filter_map(|m| m["id"].as_i64()).collect())
                .unwrap_or_default();
            prop_assert_eq!(&returned, &page, "page for {:?}", pairs);
            prop_assert_eq!(&answer.body["next"], &json!(next), "next for {:?}", pairs);
        }
        None => {
            prop_assert_eq!(answer.status, 400, "{:?}: {}", pairs, answer.body);
            prop_assert_eq!(
                answer.body["statusMessage"].as_str(),
                Some("Bad Request. Invalid query(limit, after, before).")
            );
        }
    }

    let url = Url::parse(&format!("{}/api/users/alice/chats?{query}", app.address)).unwrap();
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let request = app
        .client
        .get(url)
        .header(COOKIE, session_cookie(&alice.token));
    let answer = exchange(request).await?;
    if order_by_accepted(&pairs) {
        prop_assert_eq!(answer.status, 200, "{:?}: {}", pairs, answer.body);
        let mut listed: Vec<i64> = answer.body["chats"]
            .as_array()
            .map(|chats| chats.iter().filter_map(|c| c["id"].as_i64()).collect())
            .unwrap_or_default();
        listed.sort_unstable();
        prop_assert_eq!(
            &listed,
            &chats.to_vec(),
            "every chat of Alice's, for {:?}",
            pairs
        );
    } else {
        prop_assert_eq!(answer.status, 400, "{:?}: {}", pairs, answer.body);
        prop_assert_eq!(
            answer.body["statusMessage"].as_str(),
            Some("Bad Request. Invalid query(order_by).")
        );
    }
    prop_assert_eq!(&snapshot(app), &before, "a listing changes nothing");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_query_strings_get_the_page_or_the_order_the_rules_give_or_a_400() {
    // Arrange: 30 messages to page through, and three chats to list.
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let chats = vec![
        alice.chat_id,
        app.create_chat("alice"),
        app.create_chat("alice"),
    ];
    let batch: Vec<Value> = (0..30)
        .map(|i| json!({"content": format!("message {i}"), "role": ROLES[i % 3]}))
        .collect();
    let seeded = app.post_messages(&alice, &json!({"messages": batch})).await;
    assert_eq!(seeded.status().as_u16(), 200);

    // Act and assert, for each generated query
    check_property(128, query_string(), |query| {
        listings_and_check(&app, &alice, &chats, query)
    });

    assert_alive(&app).await;
}

// ---------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------

/// One entry of a `Cookie` header.
#[derive(Debug, Clone)]
enum CookiePart {
    /// Alice's session cookie, its value in double quotes or not.
    Session { quoted: bool },
    /// A `neptun-session` cookie whose value is no live token.
    Bogus(String),
    /// Some other cookie.
    Other(String, String),
    /// Text that is not a cookie at all; the server skips it.
    Junk(&'static str),
}

impl CookiePart {
    fn render(&self, token: &str) -> String {
        match self {
            CookiePart::Session { quoted: false } => session_cookie(token),
            CookiePart::Session { quoted: true } => format!("neptun-session=\"{token}\""),
            CookiePart::Bogus(value) => session_cookie(value),
            CookiePart::Other(name, value) => format!("{name}={value}"),
            CookiePart::Junk(text) => (*text).to_owned(),
        }
    }
}

/// Content types the server must take as JSON, and some it must not.
const JSON_TYPES: &[&str] = &[
    "application/json",
    "APPLICATION/JSON",
    "application/json;charset=utf-8",
    "application/json; charset=\"utf-8\"",
    "application/json; foo=bar",
    "application/json;",
];
const OTHER_TYPES: &[&str] = &[
    "",
    "text/json",
    "application/jsonp",
    "application/x-json",
    "application/ld+json",
    "application/json-seq",
    "json",
    "application/",
    "*/*",
    "application/*",
    "application/json ; charset=utf-8",
    "application/json,text/plain",
];

/// The headers of one create-messages request, and which text it posts.
#[derive(Debug, Clone)]
struct OddHeaders {
    /// One `Cookie` header per inner list.
    cookies: Vec<Vec<CookiePart>>,
    separator: &'static str,
    content_type: Option<Vec<u8>>,
    idempotency_key: Option<Vec<u8>>,
    request_id: Option<Vec<u8>>,
    text: &'static str,
}

impl OddHeaders {
    /// Each of the first four well-formed `neptun-session` cookies is tried (empty
    /// values and values over 256 bytes are no tokens): the request authenticates if
    /// one of them is the token.
    fn authenticates(&self) -> bool {
        self.cookies
            .iter()
            .flatten()
            .filter(|part| match part {
                CookiePart::Session { .. } => true,
                CookiePart::Bogus(value) => (1..=256).contains(&value.len()),
                _ => false,
            })
            .take(4)
            .any(|part| matches!(part, CookiePart::Session { .. }))
    }
}

fn cookie_part() -> BoxedStrategy<CookiePart> {
    prop_oneof![
        3 => any::<bool>().prop_map(|quoted| CookiePart::Session { quoted }),
        1 => prop_oneof!["[A-Za-z0-9_-]{0,60}", "[A-Za-z0-9]{257,300}"].prop_map(CookiePart::Bogus),
        6 => ("[a-z_]{1,12}", "[A-Za-z0-9._~-]{0,30}")
            .prop_map(|(name, value)| CookiePart::Other(name, value)),
        1 => ("[a-z_]{1,12}", 1000usize..12_000)
            .prop_map(|(name, len)| CookiePart::Other(name, "v".repeat(len))),
        1 => select(&["junk", "=value", "neptun-session", ";;"][..]).prop_map(CookiePart::Junk),
    ]
    .boxed()
}

/// Headers for create-messages: up to four `Cookie` headers of up to 40 cookies (some of
/// them kilobytes long, 90 KB at most in all), odd content types, Idempotency-Keys
/// (often reused, to meet the replay and the 422) and request ids of any header bytes.
fn odd_headers() -> BoxedStrategy<OddHeaders> {
    let content_type = prop_oneof![
        1 => Just(None),
        4 => select(JSON_TYPES).prop_map(|t| Some(t.as_bytes().to_vec())),
        1 => select(OTHER_TYPES).prop_map(|t| Some(t.as_bytes().to_vec())),
        1 => "[ -~]{0,24}".prop_map(|t| Some(t.into_bytes())),
        1 => header_bytes(0..24).prop_map(Some),
    ];
    let idempotency_key = prop::option::weighted(
        0.6,
        prop_oneof![
            3 => "[a-c]{1,2}".prop_map(String::into_bytes),
            1 => "[ -~]{250,260}".prop_map(String::into_bytes),
            2 => header_bytes(0..12),
        ],
    );
    let request_id = prop::option::of(prop_oneof![
        "[!-~]{1,12}".prop_map(String::into_bytes),
        "[!-~]{127,129}".prop_map(String::into_bytes),
        header_bytes(0..16),
    ]);
    let cookies = prop::collection::vec(prop::collection::vec(cookie_part(), 0..40), 0..4)
        .prop_map(|headers| {
            let mut budget = 90_000usize;
            headers
                .into_iter()
                .map(|parts| {
                    parts
                        .into_iter()
                        .take_while(|part| {
                            let len = part.render("x".repeat(43).as_str()).len() + 2;
                            budget = budget.saturating_sub(len);
                            budget > 0
                        })
                        .collect()
                })
                .collect()
        });
    (
        cookies,
        select(&[";", "; ", " ;  "][..]),
        content_type,
        idempotency_key,
        request_id,
        select(&["one", "two"][..]),
    )
        .prop_map(
            |(cookies, separator, content_type, idempotency_key, request_id, text)| OddHeaders {
                cookies,
                separator,
                content_type,
                idempotency_key,
                request_id,
                text,
            },
        )
        .boxed()
}

/// A header value as the server reads it: without leading and trailing spaces and tabs.
fn as_received(value: &[u8]) -> &[u8] {
    let is_blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value
        .iter()
        .position(|b| !is_blank(b))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_blank(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// Whether the server takes `content_type` as JSON; `None` where the test cannot tell.
fn takes_as_json(content_type: Option<&[u8]>) -> Option<bool> {
    let Some(value) = content_type else {
        return Some(false);
    };
    let value = std::str::from_utf8(as_received(value)).ok()?;
    if JSON_TYPES.contains(&value) {
        Some(true)
    } else if OTHER_TYPES.contains(&value) {
        Some(false)
    } else {
        None
    }
}

/// Posts `case.text` with `case`'s headers and checks the answer in the order the
/// server decides: request id (always), session, Idempotency-Key, content type, replay.
/// `replies` holds the first answer to each Idempotency-Key, with the text it posted.
async fn odd_headers_and_check(
    app: &TestApp,
    alice: &TestUser,
    replies: &Mutex<HashMap<Vec<u8>, (&'static str, Value)>>,
    case: OddHeaders,
) -> TestCaseResult {
    let before = snapshot(app);
    let mut request = app
        .client
        .post(app.messages_url(&alice.id, alice.chat_id))
        .body(json!({"message": case.text, "actor": "user"}).to_string());
    for parts in &case.cookies {
        let line: Vec<String> = parts.iter().map(|part| part.render(&alice.token)).collect();
        request = request.header(COOKIE, line.join(case.separator));
    }
    let headers = [
        (CONTENT_TYPE.as_str(), &case.content_type),
        ("idempotency-key", &case.idempotency_key),
        ("x-request-id", &case.request_id),
    ];
    for (name, value) in headers {
        if let Some(value) = value {
            request = request.header(name, HeaderValue::from_bytes(value).unwrap());
        }
    }
    let answer = exchange(request).await?;
    let after = snapshot(app);

    let echoed = answer
        .headers
        .get("x-request-id")
        .map(|v| v.as_bytes().to_vec());
    let sane_id = case
        .request_id
        .as_deref()
        .map(as_received)
        .filter(|id| (1..=128).contains(&id.len()) && id.iter().all(u8::is_ascii_graphic));
    match sane_id {
        Some(id) => prop_assert_eq!(echoed, Some(id.to_vec()), "a sane request id is echoed"),
        None => prop_assert!(
            echoed.is_some_and(|id| (1..=64).contains(&id.len())
                && id
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')),
            "a fresh request id instead of an insane one"
        ),
    }

    if !case.authenticates() {
        prop_assert_eq!(
            &answer.body,
            &json!({
                "statusCode": 401,
                "statusMessage": "Unauthorized",
                "message": "A valid neptun-session cookie is required",
            })
        );
        prop_assert_eq!(&after, &before);
        return Ok(());
    }
    let key = case.idempotency_key.as_deref().map(as_received);
    let key_valid = key.is_none_or(|key| {
        (1..=255).contains(&key.len()) && key.iter().all(|b| (0x20..=0x7e).contains(b))
    });
    if !key_valid {
        prop_assert_eq!(answer.status, 400, "{}", answer.body);
        prop_assert_eq!(
            answer.body["statusMessage"].as_str(),
            Some("Bad Request. Invalid header(Idempotency-Key).")
        );
        prop_assert_eq!(&after, &before);
        return Ok(());
    }
    match takes_as_json(case.content_type.as_deref()) {
        Some(false) => {
            prop_assert_eq!(answer.status, 415, "{}", answer.body);
            prop_assert_eq!(&after, &before);
            return Ok(());
        }
        None if answer.status == 415 => {
            prop_assert_eq!(&after, &before);
            return Ok(());
        }
        None => {
            let received = case
                .content_type
                .as_deref()
                .map(as_received)
                .unwrap_or_default();
            let lower = String::from_utf8_lossy(received).to_ascii_lowercase();
            prop_assert!(
                lower.starts_with("application/json"),
                "taken as JSON: {:?}",
                lower
            );
        }
        Some(true) => {}
    }
    let first = key.and_then(|key| replies.lock().unwrap().get(key).cloned());
    match first {
        Some((text, reply)) if text == case.text => {
            prop_assert_eq!(answer.status, 200, "a replay: {}", answer.body);
            prop_assert_eq!(&answer.body, &reply, "the first answer again");
            prop_assert_eq!(&after, &before, "a replay stores nothing");
        }
        Some(_) => {
            prop_assert_eq!(answer.status, 422, "{}", answer.body);
            prop_assert_eq!(&after, &before);
        }
        None => {
            prop_assert_eq!(answer.status, 200, "{}", answer.body);
            prop_assert_eq!(
                answer.body["chatMessage"]["message"].as_str(),
                Some(case.text)
            );
            prop_assert_eq!(after.messages.0, before.messages.0 + 1);
            if let Some(key) = key {
                replies
                    .lock()
                    .unwrap()
                    .insert(key.to_vec(), (case.text, answer.body));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_cookies_content_types_idempotency_keys_and_request_ids_are_judged_in_order() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let replies = Mutex::new(HashMap::new());

    // Act and assert, for each generated set of headers
    check_property(128, odd_headers(), |case| {
        odd_headers_and_check(&app, &alice, &replies, case)
    });

    assert_alive(&app).await;
}

// ---------------------------------------------------------------------------------------
// The other JSON routes
// ---------------------------------------------------------------------------------------

/// A sign-up or login body: mostly `{"email", "password"}` from small pools (so that
/// emails repeat and logins succeed), sometimes anything.
fn credentials_body() -> BoxedStrategy<Body> {
    let email = prop_oneof![
        6 => select(&["ada@example.org", " ADA@Example.ORG "][..]).prop_map(encoded),
        2 => Just(encoded("bob@example.com")),
        3 => "[a-z]{1,5}@[a-z]{1,5}\\.[a-z]{2,3}".prop_map(encoded),
        1 => select(&["a\u{0}@example.org", "ada@example", "@example.org", "ada@@example.org"][..])
            .prop_map(encoded),
        1 => "\\PC{0,16}".prop_map(encoded),
        1 => json_value(CREDENTIAL_FIELDS),
    ];
    let password = prop_oneof![
        6 => Just(encoded("correct horse")),
        3 => select(&["wrong horse", "12345678"][..]).prop_map(encoded),
        1 => select(&["1234567", "\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}"][..]).prop_map(encoded),
        1 => (1020usize..1030).prop_map(|len| encoded("é".repeat(len))),
        1 => "\\PC{0,12}".prop_map(encoded),
        1 => json_value(CREDENTIAL_FIELDS),
    ];
    let body = prop_oneof![
        6 => object_of(vec![
            member("email", email.boxed()),
            member("password", password.boxed()),
            extra_members(CREDENTIAL_FIELDS),
        ]),
        1 => json_value(CREDENTIAL_FIELDS),
    ];
    body.prop_map(|body| Body(body.into_bytes())).boxed()
}

/// Posts `body` to sign-up or login and checks the answer and the users and sessions
/// against the validator and `accounts` (email to password of every user signed up).
async fn credentials_and_check(
    app: &TestApp,
    accounts: &Mutex<HashMap<String, String>>,
    (route, Body(body)): (&'static str, Body),
) -> TestCaseResult {
    let before = snapshot(app);
    let request = app
        .client
        .post(format!("{}/api/auth/{route}", app.address))
        .header(CONTENT_TYPE, "application/json")
        .body(body.clone());
    let answer = exchange(request).await?;
    let after = snapshot(app);
    let fields = "email, password";
    let credentials = match serde_json::from_slice::<Value>(&body) {
        Err(err) => {
            check_invalid_body(&answer, fields, Some(invalid_json_issue(&err)))?;
            prop_assert_eq!(&after, &before);
            return Ok(());
        }
        Ok(value) => match parse_credentials(value) {
            Err(_) => {
                check_invalid_body(&answer, fields, None)?;
                prop_assert_eq!(&after, &before);
                return Ok(());
            }
            Ok(credentials) => credentials,
        },
    };
    let known = accounts.lock().unwrap().get(&credentials.email).cloned();
    match (route, known) {
        ("sign-up", None) => {
            prop_assert_eq!(answer.status, 200, "{}", answer.body);
            prop_assert_eq!(
                answer.body["user"]["primary_email"].as_str(),
                Some(credentials.email.as_str())
            );
            prop_assert!(answer.headers.contains_key(SET_COOKIE));
            prop_assert_eq!(after.users.len(), before.users.len() + 1);
            prop_assert_eq!(after.sessions, before.sessions + 1);
            accounts
                .lock()
                .unwrap()
                .insert(credentials.email, credentials.password);
        }
        ("sign-up", Some(_)) => {
            prop_assert_eq!(answer.status, 409, "{}", answer.body);
            prop_assert_eq!(&after, &before);
        }
        (_, Some(password)) if password == credentials.password => {
            prop_assert_eq!(answer.status, 200, "{}", answer.body);
            prop_assert!(answer.headers.contains_key(SET_COOKIE));
            prop_assert_eq!(&after.users, &before.users);
            prop_assert_eq!(after.sessions, before.sessions + 1);
        }
        _ => {
            prop_assert_eq!(
                &answer.body,
                &json!({
                    "statusCode": 401,
                    "statusMessage": "Unauthorized",
                    "message": "Invalid email or password",
                })
            );
            prop_assert_eq!(&after, &before);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_sign_up_and_login_bodies_create_users_and_sessions_only_when_valid() {
    // Arrange: throttling off, since this many sign-ups and failed logins from one
    // address would be throttled (tests/api/throttle.rs covers that).
    let app = crate::helpers::spawn_app_with_settings(neptun_chat::config::Settings {
        throttle: neptun_chat::config::ThrottleSettings::OFF,
        ..Default::default()
    })
    .await;
    app.sign_up("ada@example.org", "correct horse").await;
    let accounts = Mutex::new(HashMap::from([(
        "ada@example.org".to_owned(),
        "correct horse".to_owned(),
    )]));
    let requests = (select(&["sign-up", "login"][..]), credentials_body());

    // Act and assert, for each generated request
    check_property(64, requests, |request| {
        credentials_and_check(&app, &accounts, request)
    });

    assert_alive(&app).await;
}

/// A request to one of the chat routes that take a body.
#[derive(Debug, Clone)]
enum ChatRequest {
    Create(Body),
    /// Renames the chat the index picks among Alice's, Bob's and a missing one.
    Rename(Index, Body),
    DeleteMany(Body),
}

fn chat_name() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "\\PC{1,20}".prop_map(encoded),
        1 => blank().prop_map(encoded),
        1 => (198usize..203).prop_map(|len| encoded(format!(" {} ", "ñ".repeat(len)))),
        1 => Just(r#""\u0000""#.to_owned()),
        1 => json_value(CHAT_FIELDS),
    ]
    .boxed()
}

fn chat_request() -> BoxedStrategy<ChatRequest> {
    let create = prop_oneof![
        4 => object_of(vec![
            member("name", chat_name()),
            member("model", chat_name()),
            extra_members(CHAT_FIELDS),
        ]),
        1 => json_value(CHAT_FIELDS),
    ];
    let rename = prop_oneof![
        4 => object_of(vec![member("name", chat_name()), extra_members(CHAT_FIELDS)]),
        1 => json_value(CHAT_FIELDS),
    ];
    let id = prop_oneof![
        4 => (0i64..8).prop_map(|id| id.to_string()),
        1 => select(ODD_NUMBERS).prop_map(str::to_owned),
        1 => json_value(CHAT_FIELDS),
    ];
    let ids = prop_oneof![
        4 => prop::collection::vec(id, 0..6).prop_map(|ids| render_array(&ids)),
        1 => Just(render_array(&vec!["1".to_owned(); 1001])),
        1 => json_value(CHAT_FIELDS),
    ];
    let delete = prop_oneof![
        4 => object_of(vec![member("chat_ids", ids.boxed()), extra_members(CHAT_FIELDS)]),
        1 => json_value(CHAT_FIELDS),
    ];
    prop_oneof![
        create.prop_map(|body| ChatRequest::Create(Body(body.into_bytes()))),
        (any::<Index>(), rename)
            .prop_map(|(at, body)| ChatRequest::Rename(at, Body(body.into_bytes()))),
        delete.prop_map(|body| ChatRequest::DeleteMany(Body(body.into_bytes()))),
    ]
    .boxed()
}

/// The chats other than `changed`, as stored.
fn chats_except(stored: &Stored, changed: &[i64]) -> Vec<(i64, String, String, String, String)> {
    stored
        .chats
        .iter()
        .filter(|chat| !changed.contains(&chat.0))
        .cloned()
        .collect()
}

/// Sends `request` as Alice and checks the answer and the chats against the validators.
async fn chat_request_and_check(
    app: &TestApp,
    alice: &TestUser,
    bob_chat: i64,
    request: ChatRequest,
) -> TestCaseResult {
    let before = snapshot(app);
    let alices: Vec<i64> = before
        .chats
        .iter()
        .filter(|chat| chat.1 == "alice")
        .map(|chat| chat.0)
        .collect();
    let chats_url = format!("{}/api/users/alice/chats", app.address);
    let (builder, body, fields, target) = match &request {
        ChatRequest::Create(body) => (app.client.post(&chats_url), body, "name, model", 0),
        ChatRequest::Rename(at, body) => {
            let targets: Vec<i64> = alices.iter().copied().chain([bob_chat, 999_999]).collect();
            let target = targets[at.index(targets.len())];
            let url = format!("{chats_url}/{target}");
            (app.client.patch(url), body, "name", target)
        }
        ChatRequest::DeleteMany(body) => (app.client.delete(&chats_url), body, "chat_ids", 0),
    };
    let answer = exchange(
        builder
            .header(COOKIE, session_cookie(&alice.token))
            .header(CONTENT_TYPE, "application/json")
            .body(body.0.clone()),
    )
    .await?;
    let after = snapshot(app);
    let value = match serde_json::from_slice::<Value>(&body.0) {
        Ok(value) => value,
        Err(err) => {
            check_invalid_body(&answer, fields, Some(invalid_json_issue(&err)))?;
            prop_assert_eq!(&after, &before);
            return Ok(());
        }
    };
    match request {
        ChatRequest::Create(_) => match parse_new_chat(value) {
            Ok(new) => {
                prop_assert_eq!(answer.status, 200, "{}", answer.body);
                let id = answer.body["chat"]["id"].as_i64().unwrap_or_default();
                let row = after.chats.iter().find(|chat| chat.0 == id);
                prop_assert_eq!(
                    row.map(|chat| (chat.1.as_str(), chat.2.as_str(), chat.3.as_str())),
                    Some(("alice", new.name.as_str(), new.model.as_str()))
                );
                prop_assert_eq!(chats_except(&after, &[id]), before.chats);
                return Ok(());
            }
            Err(_) => check_invalid_body(&answer, fields, None)?,
        },
        ChatRequest::Rename(..) => match parse_chat_rename(value) {
            Ok(name) if alices.contains(&target) => {
                prop_assert_eq!(answer.status, 200, "{}", answer.body);
                prop_assert_eq!(answer.body["chat"]["name"].as_str(), Some(name.as_str()));
                let row = after.chats.iter().find(|chat| chat.0 == target);
                prop_assert_eq!(row.map(|chat| chat.2.as_str()), Some(name.as_str()));
                prop_assert_eq!(
                    chats_except(&after, &[target]),
                    chats_except(&before, &[target])
                );
                return Ok(());
            }
            Ok(_) => {
                prop_assert_eq!(answer.status, 404, "{}", answer.body);
                prop_assert_eq!(answer.body["message"].as_str(), Some("Chat not found"));
            }
            Err(_) => check_invalid_body(&answer, fields, None)?,
        },
        ChatRequest::DeleteMany(_) => match parse_chat_ids(value) {
            Ok(ids) => {
                let mut unique = Vec::new();
                for id in ids {
                    if !unique.contains(&id) {
                        unique.push(id);
                    }
                }
                let (deleted, not_found): (Vec<i64>, Vec<i64>) =
                    unique.into_iter().partition(|id| alices.contains(id));
                prop_assert_eq!(
                    &answer.body,
                    &json!({"deleted": deleted, "not_found": not_found})
                );
                prop_assert_eq!(&after.chats, &chats_except(&before, &deleted));
                return Ok(());
            }
            Err(_) => check_invalid_body(&answer, fields, None)?,
        },
    }
    prop_assert_eq!(&after, &before, "a rejected request changes nothing");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_chat_bodies_create_rename_and_delete_only_alices_chats_and_only_when_valid() {
    // Arrange: Bob's chat must survive whatever Alice sends.
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    app.create_chat("alice");
    let bob = app.seed_user("bob");

    // Act and assert, for each generated request
    check_property(128, chat_request(), |request| {
        chat_request_and_check(&app, &alice, bob.chat_id, request)
    });

    let bobs: Vec<i64> = snapshot(&app)
        .chats
        .iter()
        .filter(|chat| chat.1 == "bob")
        .map(|chat| chat.0)
        .collect();
    assert_eq!(bobs, [bob.chat_id]);
    assert_alive(&app).await;
}

// ---------------------------------------------------------------------------------------
// Explicit cases
// ---------------------------------------------------------------------------------------

/// The routes that take a JSON body: label, method, path, the fields their 400 names,
/// and a body template whose `TEXT` sits inside a JSON string.
fn json_routes(
    alice: &TestUser,
) -> Vec<(&'static str, Method, String, &'static str, &'static str)> {
    let chat = alice.chat_id;
    vec![
        (
            "sign-up",
            Method::POST,
            "/api/auth/sign-up".to_owned(),
            "email, password",
            r#"{"email":"ada@example.org","password":"passTEXTword"}"#,
        ),
        (
            "login",
            Method::POST,
            "/api/auth/login".to_owned(),
            "email, password",
            r#"{"email":"ada@example.org","password":"passTEXTword"}"#,
        ),
        (
            "create chat",
            Method::POST,
            "/api/users/alice/chats".to_owned(),
            "name, model",
            r#"{"name":"nameTEXT","model":"model"}"#,
        ),
        (
            "rename chat",
            Method::PATCH,
            format!("/api/users/alice/chats/{chat}"),
            "name",
            r#"{"name":"nameTEXT"}"#,
        ),
        (
            "delete chats",
            Method::DELETE,
            "/api/users/alice/chats".to_owned(),
            "chat_ids",
            r#"{"chat_ids":[999],"note":"TEXT"}"#,
        ),
        (
            "create messages",
            Method::POST,
            format!("/api/users/alice/chats/{chat}/messages"),
            "message | messages",
            r#"{"message":"hiTEXT","actor":"user"}"#,
        ),
    ]
}

/// Sends `body` as JSON to `path` with Alice's session and checks the answer's shape.
async fn send_json(
    app: &TestApp,
    alice: &TestUser,
    method: Method,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> Answer {
    let request = app
        .client
        .request(method.clone(), format!("{}{path}", app.address))
        .header(COOKIE, session_cookie(&alice.token))
        .header(CONTENT_TYPE, "application/json")
        .body(body);
    match exchange(request).await {
        Ok(answer) => answer,
        Err(err) => panic!("{method} {path}: {err}"),
    }
}

/// Asserts a 400 whose single issue is `invalid_json` with a message starting `prefix`.
fn assert_invalid_json(answer: &Answer, fields: &str, prefix: &str, case: &str) {
    assert_eq!(answer.status, 400, "{case}: {}", answer.body);
    assert_eq!(
        answer.body["statusMessage"],
        format!("Bad Request. Invalid body({fields})."),
        "{case}"
    );
    let issues = answer.body["data"]["issues"].as_array().unwrap();
    assert_eq!(issues.len(), 1, "{case}: {issues:?}");
    assert_eq!(issues[0]["code"], "invalid_json", "{case}");
    let message = issues[0]["message"].as_str().unwrap();
    assert!(message.starts_with(prefix), "{case}: {message}");
}

#[tokio::test]
async fn ten_thousand_nested_arrays_or_objects_are_invalid_json_on_every_json_route() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let depth = 10_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
    let bodies = [
        ("10,000 nested arrays", arrays.clone()),
        ("10,000 nested objects", objects),
        (
            "arrays and objects alternating 10,000 deep",
            format!(
                "{}0{}",
                r#"[{"a":"#.repeat(depth / 2),
                "}]".repeat(depth / 2)
            ),
        ),
        ("10,000 unclosed arrays", "[".repeat(depth)),
        (
            "10,000 nested arrays in an ignored field of a valid message",
            format!(r#"{{"message":"hi","actor":"user","extra":{arrays}}}"#),
        ),
    ];
    let before = snapshot(&app);

    for (route, method, path, fields, _) in json_routes(&alice) {
        for (case, body) in &bodies {
            // Act
            let answer = send_json(&app, &alice, method.clone(), &path, body.clone()).await;

            // Assert
            let case = format!("{case} to {route}");
            assert_invalid_json(
                &answer,
                fields,
                "Invalid JSON: recursion limit exceeded",
                &case,
            );
        }
    }
    assert_eq!(snapshot(&app), before, "nothing is stored");
    assert_alive(&app).await;
}

#[tokio::test]
async fn a_4_mib_body_of_open_brackets_is_invalid_json_and_one_byte_more_is_too_large() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let at_limit = "[".repeat(MAX_BODY);
    let over_limit = "[".repeat(MAX_BODY + 1);
    let routes = [
        (
            format!("/api/users/alice/chats/{}/messages", alice.chat_id),
            "message | messages",
        ),
        ("/api/auth/sign-up".to_owned(), "email, password"),
    ];
    let before = snapshot(&app);

    for (path, fields) in routes {
        // Act
        let parsed = send_json(&app, &alice, Method::POST, &path, at_limit.clone()).await;
        let refused = send_json(&app, &alice, Method::POST, &path, over_limit.clone()).await;

        // Assert
        let error = "Invalid JSON: recursion limit exceeded at line 1 column 128";
        assert_eq!(
            parsed.body,
            json!({
                "statusCode": 400,
                "statusMessage": format!("Bad Request. Invalid body({fields})."),
                "message": error,
                "data": {"issues": [
                    {"code": "invalid_json", "line": 1, "column": 128, "path": [], "message": error}
                ]},
            }),
            "4 MiB of [ to {path}"
        );
        assert_eq!(
            refused.body,
            json!({
                "statusCode": 413,
                "statusMessage": "Payload Too Large",
                "message": "The request body is larger than 4194304 bytes",
            }),
            "4 MiB and one byte of [ to {path}"
        );
    }
    assert_eq!(snapshot(&app), before, "nothing is stored");
    assert_alive(&app).await;
}

#[tokio::test]
async fn a_number_beyond_the_range_of_a_double_makes_a_body_invalid_json_even_in_an_ignored_field()
{
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let messages = format!("/api/users/alice/chats/{}/messages", alice.chat_id);
    let cases = [
        (
            "1e999999 as the message",
            Method::POST,
            messages.as_str(),
            "message | messages",
            r#"{"message":1e999999,"actor":"user"}"#,
        ),
        (
            "-1e400 in an ignored field of a message",
            Method::POST,
            &messages,
            "message | messages",
            r#"{"message":"hi","actor":"user","ignored":-1e400}"#,
        ),
        (
            "1e999999 in an ignored field of a batch item",
            Method::POST,
            &messages,
            "message | messages",
            r#"{"messages":[{"content":"hi","role":"user","ignored":1e999999}]}"#,
        ),
        (
            "1e999999 as a chat id to delete",
            Method::DELETE,
            "/api/users/alice/chats",
            "chat_ids",
            r#"{"chat_ids":[1e999999]}"#,
        ),
        (
            "1e400 in an ignored field of a new chat",
            Method::POST,
            "/api/users/alice/chats",
            "name, model",
            r#"{"name":"n","model":"m","ignored":1e400}"#,
        ),
        (
            "1e400 in an ignored field of a sign-up",
            Method::POST,
            "/api/auth/sign-up",
            "email, password",
            r#"{"email":"ada@example.org","password":"correct horse","ignored":1e400}"#,
        ),
    ];
    let before = snapshot(&app);

    for (case, method, path, fields, body) in cases {
        // Act
        let answer = send_json(&app, &alice, method, path, body).await;

        // Assert
        assert_invalid_json(&answer, fields, "Invalid JSON: number out of range", case);
    }
    assert_eq!(snapshot(&app), before, "nothing is stored");
}

#[tokio::test]
async fn integers_beyond_64_bits_are_wrong_types_where_a_value_is_needed_and_ignored_elsewhere() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let messages = format!("/api/users/alice/chats/{}/messages", alice.chat_id);
    let big = "123456789012345678901234567890";
    let not_an_id = |index: usize| {
        json!({
            "code": "invalid_type",
            "expected": "positive integer",
            "received": "number",
            "path": ["chat_ids", index],
            "message": "Expected a positive integer chat id",
        })
    };
    let rejected = [
        (
            "as the message",
            Method::POST,
            messages.as_str(),
            format!(r#"{{"message":{big},"actor":"user"}}"#),
            json!([{"code": "invalid_type", "expected": "string", "received": "number",
                    "path": ["message"], "message": "Expected string, received number"}]),
        ),
        (
            "as the actor",
            Method::POST,
            &messages,
            format!(r#"{{"message":"hi","actor":{big}}}"#),
            json!([{"code": "invalid_type", "expected": "'user' | 'assistant' | 'system'",
                    "received": "number", "path": ["actor"],
                    "message": "Expected 'user' | 'assistant' | 'system', received number"}]),
        ),
        (
            "as chat ids to delete, with one past i64::MAX, -0 and 1.0",
            Method::DELETE,
            "/api/users/alice/chats",
            format!(r#"{{"chat_ids":[{big},9223372036854775808,-0,1.0]}}"#),
            json!([not_an_id(0), not_an_id(1), not_an_id(2), not_an_id(3)]),
        ),
    ];
    let before = snapshot(&app);

    for (case, method, path, body, issues) in rejected {
        // Act
        let answer = send_json(&app, &alice, method, path, body).await;

        // Assert
        assert_eq!(answer.status, 400, "{case}: {}", answer.body);
        assert_eq!(answer.body["data"]["issues"], issues, "{case}");
    }
    assert_eq!(snapshot(&app), before, "nothing is stored");

    // Act: the same number where nothing reads it, and the largest id there is.
    let ignored = format!(r#"{{"message":"hi","actor":"user","ignored":{big}}}"#);
    let stored = send_json(&app, &alice, Method::POST, &messages, ignored).await;
    let largest_id = r#"{"chat_ids":[9223372036854775807]}"#;
    let deleted = send_json(
        &app,
        &alice,
        Method::DELETE,
        "/api/users/alice/chats",
        largest_id,
    )
    .await;

    // Assert
    assert_eq!(stored.status, 200, "{}", stored.body);
    assert_eq!(stored.body["chatMessage"]["message"], "hi");
    assert_eq!(
        last_stored(&app, alice.chat_id, 2),
        [("hi".to_owned(), "user".to_owned())]
    );
    assert_eq!(
        deleted.body,
        json!({"deleted": [], "not_found": [9223372036854775807_i64]})
    );
}

#[tokio::test]
async fn huge_or_negative_numbers_as_chat_ids_are_invalid_route_params_on_every_chat_route() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let routes = [
        (Method::GET, "/messages", None),
        (
            Method::POST,
            "/messages",
            Some(r#"{"message":"hi","actor":"user"}"#),
        ),
        (Method::DELETE, "/messages/last", None),
        (Method::PATCH, "", Some(r#"{"name":"renamed"}"#)),
        (Method::DELETE, "", None),
    ];
    let malformed = [
        "1e999999",
        "123456789012345678901234567890",
        "18446744073709551616",
        "9223372036854775808",
        "-9223372036854775808",
        "-1",
    ];
    let before = snapshot(&app);

    for (method, suffix, body) in &routes {
        for chat_id in malformed.iter().chain(&["9223372036854775807"]) {
            let path = format!("/api/users/alice/chats/{chat_id}{suffix}");
            let case = format!("{method} {path}");

            // Act
            let mut request = app
                .client
                .request(method.clone(), format!("{}{path}", app.address))
                .header(COOKIE, session_cookie(&alice.token));
            if let Some(body) = body {
                request = request.header(CONTENT_TYPE, "application/json").body(*body);
            }
            let answer = exchange(request)
                .await
                .unwrap_or_else(|err| panic!("{case}: {err}"));

            // Assert
            let expected = if *chat_id == "9223372036854775807" {
                json!({
                    "statusCode": 404,
                    "statusMessage": "Not Found",
                    "message": "Chat not found",
                })
            } else {
                json!({
                    "statusCode": 400,
                    "statusMessage": INVALID_ROUTE_PARAMS,
                    "message": "chat_id must be a positive integer",
                })
            };
            assert_eq!(answer.body, expected, "{case}");
        }
    }
    assert_eq!(snapshot(&app), before, "nothing is stored");
}

#[tokio::test]
async fn invalid_utf8_inside_a_json_string_is_invalid_json_on_every_json_route() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let before = snapshot(&app);

    for (route, method, path, fields, template) in json_routes(&alice) {
        for bad in INVALID_UTF8 {
            let (head, tail) = template.split_once("TEXT").unwrap();
            let body = [head.as_bytes(), bad, tail.as_bytes()].concat();
            let case = format!("{bad:02X?} in a string to {route}");

            // Act
            let answer = send_json(&app, &alice, method.clone(), &path, body).await;

            // Assert
            assert_invalid_json(
                &answer,
                fields,
                "Invalid JSON: invalid unicode code point",
                &case,
            );
        }
    }
    assert_eq!(snapshot(&app), before, "nothing is stored");
}

#[tokio::test]
async fn an_escaped_nul_is_stored_and_read_back_exactly_while_a_raw_nul_byte_is_invalid_json() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let texts = ["a\u{0}b", "\u{0}", "\u{0} leading", "trailing\n\u{0}\u{0}"];
    let batch: Vec<Value> = texts
        .iter()
        .map(|text| json!({"content": text, "role": "user"}))
        .collect();
    let messages = format!("/api/users/alice/chats/{}/messages", alice.chat_id);

    // Act
    let created = app.post_messages(&alice, &json!({"messages": batch})).await;
    let read = app.get(&messages, Some(&alice.token)).await;
    let chat = send_json(
        &app,
        &alice,
        Method::POST,
        "/api/users/alice/chats",
        r#"{"name":"a\u0000b","model":"\u0000"}"#,
    )
    .await;
    let raw_nul = send_json(
        &app,
        &alice,
        Method::POST,
        &messages,
        b"{\"message\":\"a\x00b\",\"actor\":\"user\"}".to_vec(),
    )
    .await;

    // Assert
    assert_eq!(created.status().as_u16(), 200);
    let texts_of = |body: &Value| -> Vec<String> {
        body["chatMessages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["message"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(texts_of(&created.json::<Value>().await.unwrap()), texts);
    assert_eq!(texts_of(&read.json::<Value>().await.unwrap()), texts);
    let stored: Vec<String> = app
        .stored_messages(alice.chat_id)
        .into_iter()
        .map(|(_, text, _)| text)
        .collect();
    assert_eq!(stored, texts, "stored byte for byte, NULs included");
    assert_eq!(chat.status, 200, "{}", chat.body);
    assert_eq!(chat.body["chat"]["name"], "a\u{0}b");
    assert_eq!(chat.body["chat"]["model"], "\u{0}");
    let id = chat.body["chat"]["id"].as_i64().unwrap();
    let row = snapshot(&app)
        .chats
        .into_iter()
        .find(|chat| chat.0 == id)
        .unwrap();
    assert_eq!((row.2.as_str(), row.3.as_str()), ("a\u{0}b", "\u{0}"));
    let error = "Invalid JSON: control character (\\u0000-\\u001F) found while parsing a string \
                 at line 1 column 14";
    assert_eq!(
        raw_nul.body["data"]["issues"],
        json!([{"code": "invalid_json", "line": 1, "column": 14, "path": [], "message": error}])
    );
    assert_eq!(app.stored_messages(alice.chat_id).len(), texts.len());
}

// ---------------------------------------------------------------------------------------
// Raw connections: oversized heads, broken framing, idle, slow and stalling clients
// ---------------------------------------------------------------------------------------

fn host(app: &TestApp) -> &str {
    app.address.trim_start_matches("http://")
}

/// An HTTP/1.1 answer read off a raw connection.
#[derive(Debug)]
struct RawAnswer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// One whole answer at the start of `bytes`, if it has arrived.
fn parse_raw_answer(bytes: &[u8]) -> Option<RawAnswer> {
    let end = bytes.windows(4).position(|window| window == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map_or(Some(0), |(_, value)| value.trim().parse().ok())?;
    let body = bytes.get(end + 4..end + 4 + length)?.to_vec();
    Some(RawAnswer { status, head, body })
}

/// Reads one answer from `stream`: `None` if the server closed or reset the connection
/// without a whole answer. Panics if neither happens `within` the time given.
async fn read_raw_answer(stream: &mut TcpStream, within: Duration) -> Option<RawAnswer> {
    let deadline = tokio::time::Instant::now() + within;
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        if let Some(answer) = parse_raw_answer(&bytes) {
            return Some(answer);
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => panic!(
                "neither an answer nor a close within {within:?}; got {:?}",
                String::from_utf8_lossy(&bytes)
            ),
            Ok(Ok(0) | Err(_)) => return None,
            Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Writes `request` on a new connection, ends the sending side when `end_stream`, and
/// reads one answer. The server may refuse and close before it has read everything, so
/// a failed write is not an error here.
async fn raw_request(app: &TestApp, request: &[u8], end_stream: bool) -> Option<RawAnswer> {
    let mut stream = TcpStream::connect(host(app)).await.unwrap();
    let written = tokio::time::timeout(Duration::from_secs(5), stream.write_all(request)).await;
    assert!(written.is_ok(), "the server neither read nor closed");
    if end_stream {
        stream.shutdown().await.ok();
    }
    read_raw_answer(&mut stream, Duration::from_secs(5)).await
}

#[tokio::test]
async fn a_one_megabyte_header_or_a_hundred_header_fields_get_431_or_a_closed_connection() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let get = |headers: &str| {
        format!(
            "GET /api/users/alice/chats HTTP/1.1\r\nHost: localhost\r\n{headers}\
             Connection: close\r\n\r\n"
        )
    };
    let many_fields: String = (0..100).map(|i| format!("X-Field-{i}: {i}\r\n")).collect();
    let oversized = [
        (
            "a 1 MB header",
            get(&format!("X-Big: {}\r\n", "a".repeat(1 << 20))),
        ),
        (
            "a 1 MB cookie",
            get(&format!(
                "Cookie: {}\r\n",
                session_cookie(&"a".repeat(1 << 20))
            )),
        ),
        ("100 header fields", get(&many_fields)),
    ];
    let fits = get(&format!(
        "Cookie: big={}; {}\r\n",
        "v".repeat(100_000),
        session_cookie(&alice.token)
    ));

    for (case, request) in oversized {
        // Act
        let answer = raw_request(&app, request.as_bytes(), false).await;

        // Assert: a 431, or the connection closed (or reset) while the client still sent.
        if let Some(answer) = answer {
            assert_eq!(answer.status, 431, "{case}: {}", answer.head);
        }
        assert_alive(&app).await;
    }

    // Act: a 100 KB cookie fits the parser's 128 KiB for a head, so the app answers.
    let answer = raw_request(&app, fits.as_bytes(), false)
        .await
        .expect("an answer");

    // Assert
    assert_eq!(answer.status, 200, "{}", answer.head);
    let body: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(body["chats"][0]["id"], alice.chat_id);
}

#[tokio::test]
async fn broken_message_framing_is_refused_and_stores_nothing() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let valid = r#"{"message":"hi","actor":"user"}"#;
    let head = format!(
        "POST /api/users/alice/chats/{}/messages HTTP/1.1\r\nHost: localhost\r\n\
         {}\r\nContent-Type: application/json\r\nConnection: close\r\n",
        alice.chat_id,
        format_args!("Cookie: {}", session_cookie(&alice.token)),
    );
    let length = valid.len();
    /// How the server must refuse: the parser's own bare 400, which a broken chunk may
    /// replace by closing the connection; or the JSON envelope with this status and message.
    enum Refusal {
        Parser,
        ParserOrClosed,
        Envelope(u16, &'static str),
    }
    let cases = [
        (
            "a chunk size that is not hexadecimal",
            format!("Transfer-Encoding: chunked\r\n\r\nzz\r\n{valid}\r\n0\r\n\r\n"),
            false,
            Refusal::ParserOrClosed,
        ),
        (
            "Content-Length and Transfer-Encoding together",
            format!("Content-Length: {length}\r\nTransfer-Encoding: chunked\r\n\r\n{valid}"),
            false,
            Refusal::Parser,
        ),
        (
            "two different Content-Lengths",
            format!("Content-Length: {length}\r\nContent-Length: 5\r\n\r\n{valid}"),
            false,
            Refusal::Parser,
        ),
        (
            "a negative Content-Length",
            format!("Content-Length: -1\r\n\r\n{valid}"),
            false,
            Refusal::Parser,
        ),
        (
            "a Content-Length beyond 64 bits",
            format!("Content-Length: 99999999999999999999999\r\n\r\n{valid}"),
            false,
            Refusal::Parser,
        ),
        (
            "a NUL byte in a header value",
            format!("X-Odd: a\0b\r\nContent-Length: {length}\r\n\r\n{valid}"),
            false,
            Refusal::Parser,
        ),
        (
            "a Content-Length of 2^64 - 1",
            format!("Content-Length: 18446744073709551615\r\n\r\n{valid}"),
            true,
            Refusal::Envelope(413, "The request body is larger than 4194304 bytes"),
        ),
        (
            "a body that ends before its Content-Length",
            format!("Content-Length: 100\r\n\r\n{}", &valid[..11]),
            true,
            Refusal::Envelope(400, "The request body could not be read"),
        ),
    ];
    let before = snapshot(&app);

    for (case, rest, end_stream, refusal) in cases {
        // Act
        let request = format!("{head}{rest}");
        let answer = raw_request(&app, request.as_bytes(), end_stream).await;

        // Assert
        match (refusal, answer) {
            (Refusal::ParserOrClosed, None) => {}
            (Refusal::Parser | Refusal::ParserOrClosed, Some(answer)) => {
                assert_eq!(answer.status, 400, "{case}: {}", answer.head);
                assert!(answer.body.is_empty(), "{case}");
            }
            (Refusal::Envelope(status, message), Some(answer)) => {
                assert_eq!(answer.status, status, "{case}: {}", answer.head);
                assert_eq!(
                    serde_json::from_slice::<Value>(&answer.body).unwrap()["message"],
                    message,
                    "{case}"
                );
            }
            (_, None) => panic!("{case}: closed without an answer"),
        }
    }
    assert_eq!(snapshot(&app), before, "nothing is stored");
    assert_alive(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_idle_connections_neither_delay_a_fresh_request_nor_stay_open() {
    // Arrange: 1,000 connections; half send nothing, half half a request line.
    let app = spawn_app().await;
    let opened = Instant::now();
    let mut idle = Vec::with_capacity(1000);
    for i in 0..1000 {
        let mut stream = TcpStream::connect(host(&app)).await.unwrap();
        if i % 2 == 1 {
            stream.write_all(b"GET /heal").await.unwrap();
        }
        idle.push(stream);
    }

    // Act
    let started = Instant::now();
    let response = reqwest::Client::new()
        .get(format!("{}/healthz", app.address))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("a fresh request is answered");
    let waited = started.elapsed();

    // Assert: answered promptly; then the server closes every idle connection itself,
    // with a bare 408 or without a word, once the 5 s for a request head are up.
    assert_eq!(response.status().as_u16(), 200);
    assert!(waited < Duration::from_secs(2), "answered after {waited:?}");
    let mut closing = tokio::task::JoinSet::new();
    for mut stream in idle {
        closing.spawn(async move {
            read_raw_answer(&mut stream, Duration::from_secs(10))
                .await
                .map(|answer| answer.status)
        });
    }
    let mut outcomes: HashMap<Option<u16>, usize> = HashMap::new();
    while let Some(outcome) = closing.join_next().await {
        *outcomes.entry(outcome.unwrap()).or_default() += 1;
    }
    let all_closed = opened.elapsed();
    assert!(
        outcomes
            .keys()
            .all(|outcome| matches!(outcome, None | Some(408))),
        "{outcomes:?}"
    );
    assert_eq!(outcomes.values().sum::<usize>(), 1000);
    assert!(
        all_closed < Duration::from_secs(8),
        "the last idle connection was closed after {all_closed:?}"
    );
    assert_alive(&app).await;
}

#[tokio::test]
async fn a_client_sending_its_request_head_a_byte_every_200_ms_is_cut_off_within_seven_seconds() {
    // Arrange: a head that would take 23 s at this pace.
    let app = spawn_app().await;
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(70)
    );
    let mut stream = TcpStream::connect(host(&app)).await.unwrap();
    let started = Instant::now();
    let mut sent = 0;
    let mut answer = Vec::new();

    // Act: send a byte, give the server 200 ms to speak, repeat until it hangs up.
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still connected after 10 s"
        );
        if sent < head.len()
            && stream
                .write_all(&head.as_bytes()[sent..=sent])
                .await
                .is_ok()
        {
            sent += 1;
        }
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let cut_off_after = started.elapsed();

    // Assert
    assert!(sent < head.len(), "the whole head ({sent} bytes) went out");
    assert!(
        cut_off_after < Duration::from_secs(7),
        "cut off after {cut_off_after:?}"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408 "),
        "{answer}"
    );
    assert_alive(&app).await;
}

#[tokio::test]
async fn a_body_that_stalls_after_the_headers_gets_a_408_envelope_once_the_body_timeout_passes() {
    // Arrange
    let app = spawn_app_with(Limits {
        body_timeout: Duration::from_millis(500),
        ..Limits::default()
    })
    .await;
    let alice = app.seed_user("alice");
    let cases = [
        (
            format!("/api/users/alice/chats/{}/messages", alice.chat_id),
            r#"{"message":"hi","#,
        ),
        ("/api/users/alice/chats".to_owned(), r#"{"name":"#),
        (
            "/api/auth/sign-up".to_owned(),
            r#"{"email":"ada@example.org","#,
        ),
    ];
    let before = snapshot(&app);

    for (path, partial) in cases {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nCookie: {}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{partial}",
            session_cookie(&alice.token)
        );
        let mut stream = TcpStream::connect(host(&app)).await.unwrap();

        // Act: the headers and part of the body, then nothing.
        stream.write_all(request.as_bytes()).await.unwrap();
        let started = Instant::now();
        let answer = read_raw_answer(&mut stream, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("{path}: closed without an answer"));
        let waited = started.elapsed();

        // Assert
        assert_eq!(answer.status, 408, "{path}: {}", answer.head);
        assert!(
            answer
                .head
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{}",
            answer.head
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&answer.body).unwrap(),
            json!({
                "statusCode": 408,
                "statusMessage": "Request Timeout",
                "message": "The request body did not arrive in time",
            }),
            "{path}"
        );
        assert!(
            waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
            "{path}: answered after {waited:?}"
        );

        // Act: the rest of the body, late, and a request behind it on the same connection.
        let late = format!(
            "{}GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
            " ".repeat(100)
        );
        stream.write_all(late.as_bytes()).await.ok();
        let mut after = Vec::new();
        let ended =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut after)).await;

        // Assert: the connection is closed and nothing late is read as a request.
        assert!(
            ended.is_ok(),
            "{path}: the connection stays open after the 408"
        );
        assert!(
            after.is_empty(),
            "{path}: {:?}",
            String::from_utf8_lossy(&after)
        );
    }
    assert_eq!(snapshot(&app), before, "nothing is stored");
    assert_alive(&app).await;
}

#[tokio::test]
async fn a_10000_digit_chat_id_is_invalid_and_a_path_past_64_kib_is_refused_by_the_parser() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.seed_user("alice");
    let get = |chat_id: &str| {
        format!(
            "GET /api/users/alice/chats/{chat_id}/messages HTTP/1.1\r\nHost: localhost\r\n\
             Cookie: {}\r\nConnection: close\r\n\r\n",
            session_cookie(&alice.token)
        )
    };

    // Act
    let long = raw_request(&app, get(&"9".repeat(10_000)).as_bytes(), false).await;
    let too_long = raw_request(&app, get(&"9".repeat(70_000)).as_bytes(), false).await;

    // Assert
    let long = long.expect("an answer to a 10,000-digit chat id");
    assert_eq!(long.status, 400, "{}", long.head);
    assert_eq!(
        serde_json::from_slice::<Value>(&long.body).unwrap(),
        json!({
            "statusCode": 400,
            "statusMessage": INVALID_ROUTE_PARAMS,
            "message": "chat_id must be a positive integer",
        })
    );
    let too_long = too_long.expect("an answer to a 70,000-digit chat id");
    assert_eq!(
        too_long.status, 400,
        "the parser's own 400: {}",
        too_long.head
    );
    assert!(too_long.body.is_empty());
    assert_alive(&app).await;
}
