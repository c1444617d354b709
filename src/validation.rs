//! Request bodies to domain types. Pure functions: they take parsed JSON and either
//! return validated values or *every* problem found, each shaped like a zod issue
//! (`{"code", "path", "message", ...}`) so front ends written against zod can show them.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::domain::{
    ChatOrder, ChatSortField, MessageWindow, NewMessage, Role, SearchFilter, SearchPosition,
    Timestamp,
};
use crate::search;

/// The options of the `actor` / `role` enum, as issues list them.
const ROLE_OPTIONS: [&str; 3] = ["user", "assistant", "system"];

/// The limits a create-messages body is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    /// Most messages in one batch.
    pub max_batch: usize,
    /// Most UTF-8 bytes in one message text.
    pub max_text_bytes: usize,
}

/// One element of an issue's `path`: an object key or an array index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PathSegment {
    /// An object key.
    Key(&'static str),
    /// An array index.
    Index(usize),
}

/// One problem with a request body, serialized like a zod issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    /// What kind of problem, with its details; serialized flat, tagged by `code`.
    #[serde(flatten)]
    pub kind: IssueKind,
    /// Where in the body.
    pub path: Vec<PathSegment>,
    /// A sentence for people.
    pub message: String,
}

/// The zod issue codes this service produces, with their extra fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum IssueKind {
    /// A value of the wrong JSON type, or a missing field (`received: "undefined"`).
    InvalidType {
        /// The type wanted.
        expected: &'static str,
        /// The type found.
        received: &'static str,
    },
    /// A string or array below its minimum.
    TooSmall {
        /// The minimum.
        minimum: usize,
        /// `"string"` or `"array"`.
        #[serde(rename = "type")]
        of: &'static str,
        /// Always true: the minimum itself is allowed.
        inclusive: bool,
        /// Always false.
        exact: bool,
    },
    /// A string (in UTF-8 bytes) or array above its maximum.
    TooBig {
        /// The maximum.
        maximum: usize,
        /// `"string"` or `"array"`.
        #[serde(rename = "type")]
        of: &'static str,
        /// Always true: the maximum itself is allowed.
        inclusive: bool,
        /// Always false.
        exact: bool,
    },
    /// A string that is not one of the allowed options.
    InvalidEnumValue {
        /// The allowed values.
        options: &'static [&'static str],
        /// The value found.
        received: String,
    },
    /// The body matches neither accepted form, or both.
    InvalidUnion,
    /// A string of the right type but the wrong format (e.g. not an email address).
    InvalidString {
        /// The format wanted, e.g. `"email"`.
        validation: &'static str,
    },
    /// A value that fails a check of its own (zod's `refine`), said in the message.
    Custom,
    /// The body is not valid JSON.
    InvalidJson {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
    },
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            return f.write_str(&self.message);
        }
        for (i, segment) in self.path.iter().enumerate() {
            match segment {
                PathSegment::Key(key) if i == 0 => write!(f, "{key}")?,
                PathSegment::Key(key) => write!(f, ".{key}")?,
                PathSegment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl Issue {
    /// An `invalid_json` issue for a body the JSON parser rejected.
    pub fn invalid_json(err: &serde_json::Error) -> Issue {
        Issue {
            kind: IssueKind::InvalidJson {
                line: err.line(),
                column: err.column(),
            },
            path: Vec::new(),
            message: format!("Invalid JSON: {err}"),
        }
    }

    /// An issue for a query string that could not be decoded at all.
    pub fn unparsable_query(err: &dyn fmt::Display) -> Issue {
        Issue {
            kind: IssueKind::InvalidType {
                expected: "query string",
                received: "string",
            },
            path: Vec::new(),
            message: format!("Invalid query string: {err}"),
        }
    }

    fn invalid_type(
        path: Vec<PathSegment>,
        expected: &'static str,
        found: Option<&Value>,
    ) -> Issue {
        let received = found.map_or("undefined", json_type);
        let message = if found.is_none() {
            "Required".to_owned()
        } else {
            format!("Expected {expected}, received {received}")
        };
        Issue {
            kind: IssueKind::InvalidType { expected, received },
            path,
            message,
        }
    }
}

/// `text` without leading and trailing white space, counting U+FEFF as white space as
/// JavaScript's `trim` (and so zod) does.
fn trim_blank(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || c == '\u{FEFF}')
}

/// zod's name for the type of a JSON value.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A valid create-messages body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateMessages {
    /// `{"message", "actor"}`: answered with `{"chatMessage"}`.
    Single(NewMessage),
    /// `{"messages": [{"content", "role"}, ...]}`: answered with `{"chatMessages"}`.
    Batch(Vec<NewMessage>),
}

/// Validates a create-messages body. Unknown fields are ignored; a body with both forms
/// is ambiguous and rejected.
pub fn parse_create_messages(
    body: Value,
    limits: &MessageLimits,
) -> Result<CreateMessages, Vec<Issue>> {
    let mut object = expect_object(body)?;
    let batch = object.contains_key("messages");
    let single = object.contains_key("message") || object.contains_key("actor");
    let mut issues = Vec::new();
    let parsed = match (single, batch) {
        (true, true) => {
            return Err(vec![Issue {
                kind: IssueKind::InvalidUnion,
                path: Vec::new(),
                message: "Ambiguous body: send either {message, actor} or {messages}, not both"
                    .to_owned(),
            }]);
        }
        (false, false) => {
            return Err(vec![Issue {
                kind: IssueKind::InvalidUnion,
                path: Vec::new(),
                message:
                    "Invalid input: expected {message, actor} or {messages: [{content, role}]}"
                        .to_owned(),
            }]);
        }
        (true, false) => {
            let message = take_message(&mut object, &[], ("message", "actor"), limits, &mut issues);
            message.map(CreateMessages::Single)
        }
        (false, true) => {
            take_batch(object.remove("messages"), limits, &mut issues).map(CreateMessages::Batch)
        }
    };
    finish(parsed, issues)
}

fn take_batch(
    value: Option<Value>,
    limits: &MessageLimits,
    issues: &mut Vec<Issue>,
) -> Option<Vec<NewMessage>> {
    let path = || vec![PathSegment::Key("messages")];
    let items = match value {
        Some(Value::Array(items)) => items,
        other => {
            issues.push(Issue::invalid_type(path(), "array", other.as_ref()));
            return None;
        }
    };
    if items.is_empty() {
        issues.push(Issue {
            kind: IssueKind::TooSmall {
                minimum: 1,
                of: "array",
                inclusive: true,
                exact: false,
            },
            path: path(),
            message: "Array must contain at least 1 element(s)".to_owned(),
        });
    } else if items.len() > limits.max_batch {
        issues.push(Issue {
            kind: IssueKind::TooBig {
                maximum: limits.max_batch,
                of: "array",
                inclusive: true,
                exact: false,
            },
            path: path(),
            message: format!("Array must contain at most {} element(s)", limits.max_batch),
        });
    }
    let mut messages = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let prefix = [PathSegment::Key("messages"), PathSegment::Index(index)];
        match item {
            Value::Object(mut object) => {
                let message =
                    take_message(&mut object, &prefix, ("content", "role"), limits, issues);
                messages.extend(message);
            }
            other => issues.push(Issue::invalid_type(prefix.to_vec(), "object", Some(&other))),
        }
    }
    Some(messages)
}

/// Takes one message out of `object`, whose text and role fields are named `fields`.
fn take_message(
    object: &mut Map<String, Value>,
    prefix: &[PathSegment],
    (text_field, role_field): (&'static str, &'static str),
    limits: &MessageLimits,
    issues: &mut Vec<Issue>,
) -> Option<NewMessage> {
    let at = |field| {
        let mut path = prefix.to_vec();
        path.push(PathSegment::Key(field));
        path
    };
    let content = take_text(object.remove(text_field), at(text_field), limits, issues);
    let role = take_role(object.remove(role_field), at(role_field), issues);
    Some(NewMessage {
        content: content?,
        role: role?,
    })
}

fn take_text(
    value: Option<Value>,
    path: Vec<PathSegment>,
    limits: &MessageLimits,
    issues: &mut Vec<Issue>,
) -> Option<String> {
    let text = match value {
        Some(Value::String(text)) => text,
        other => {
            issues.push(Issue::invalid_type(path, "string", other.as_ref()));
            return None;
        }
    };
    if trim_blank(&text).is_empty() {
        issues.push(Issue {
            kind: IssueKind::TooSmall {
                minimum: 1,
                of: "string",
                inclusive: true,
                exact: false,
            },
            path,
            message: "String must contain at least 1 non-whitespace character(s)".to_owned(),
        });
        None
    } else if text.len() > limits.max_text_bytes {
        issues.push(Issue {
            kind: IssueKind::TooBig {
                maximum: limits.max_text_bytes,
                of: "string",
                inclusive: true,
                exact: false,
            },
            path,
            message: format!(
                "String must contain at most {} byte(s) of UTF-8",
                limits.max_text_bytes
            ),
        });
        None
    } else {
        Some(text)
    }
}

fn take_role(
    value: Option<Value>,
    path: Vec<PathSegment>,
    issues: &mut Vec<Issue>,
) -> Option<Role> {
    let text = match value {
        Some(Value::String(text)) => text,
        other => {
            issues.push(Issue::invalid_type(path, ROLES_EXPECTED, other.as_ref()));
            return None;
        }
    };
    parse_role(&text, path, issues)
}

/// `text` as a role; an `invalid_enum_value` issue at `path` if it is none.
fn parse_role(text: &str, path: Vec<PathSegment>, issues: &mut Vec<Issue>) -> Option<Role> {
    let role = Role::parse(text);
    if role.is_none() {
        issues.push(Issue {
            kind: IssueKind::InvalidEnumValue {
                options: &ROLE_OPTIONS,
                received: text.to_owned(),
            },
            path,
            message: format!("Invalid enum value. Expected {ROLES_EXPECTED}, received '{text}'"),
        });
    }
    role
}

/// The roles as zod lists them in its messages.
const ROLES_EXPECTED: &str = "'user' | 'assistant' | 'system'";

/// Parses a chat id route parameter: a positive 64-bit integer written in ASCII digits.
pub fn parse_chat_id(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<i64>().ok().filter(|id| *id > 0)
}

/// A body field is required and must be a string of `min..=max` characters (counted
/// after trimming when `trim`); returns it (trimmed when `trim`).
fn take_string(
    object: &mut Map<String, Value>,
    field: &'static str,
    (min, max): (usize, usize),
    trim: bool,
    issues: &mut Vec<Issue>,
) -> Option<String> {
    let path = vec![PathSegment::Key(field)];
    let text = match object.remove(field) {
        Some(Value::String(text)) => text,
        other => {
            issues.push(Issue::invalid_type(path, "string", other.as_ref()));
            return None;
        }
    };
    let text = if trim {
        trim_blank(&text).to_owned()
    } else {
        text
    };
    let chars = text.chars().count();
    if chars < min {
        issues.push(Issue {
            kind: IssueKind::TooSmall {
                minimum: min,
                of: "string",
                inclusive: true,
                exact: false,
            },
            path,
            message: format!("String must contain at least {min} character(s)"),
        });
        None
    } else if chars > max {
        issues.push(Issue {
            kind: IssueKind::TooBig {
                maximum: max,
                of: "string",
                inclusive: true,
                exact: false,
            },
            path,
            message: format!("String must contain at most {max} character(s)"),
        });
        None
    } else {
        Some(text)
    }
}

/// The body must be a JSON object.
fn expect_object(body: Value) -> Result<Map<String, Value>, Vec<Issue>> {
    match body {
        Value::Object(object) => Ok(object),
        other => Err(vec![Issue::invalid_type(
            Vec::new(),
            "object",
            Some(&other),
        )]),
    }
}

fn finish<T>(value: Option<T>, issues: Vec<Issue>) -> Result<T, Vec<Issue>> {
    match value {
        Some(value) if issues.is_empty() => Ok(value),
        _ => Err(issues),
    }
}

/// Shortest and longest accepted password, in characters.
pub const PASSWORD_CHARS: (usize, usize) = (8, 1024);

/// Shortest and longest chat name (after trimming) and model, in characters.
pub const CHAT_NAME_CHARS: (usize, usize) = (1, 200);

/// Most chat ids in one bulk delete.
pub const MAX_BULK_DELETE: usize = 1000;

/// Sign-up and login credentials, the email lower-cased.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Lower-cased, shape-checked email address.
    pub email: String,
    /// The password as typed.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("email", &self.email)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Validates `{"email", "password"}`.
pub fn parse_credentials(body: Value) -> Result<Credentials, Vec<Issue>> {
    let mut object = expect_object(body)?;
    let mut issues = Vec::new();
    let email = match take_string(&mut object, "email", (1, 254), true, &mut issues) {
        Some(email) => match normalize_email(&email) {
            Some(email) => Some(email),
            None => {
                issues.push(Issue {
                    kind: IssueKind::InvalidString {
                        validation: "email",
                    },
                    path: vec![PathSegment::Key("email")],
                    message: "Invalid email".to_owned(),
                });
                None
            }
        },
        None => None,
    };
    let password = take_string(&mut object, "password", PASSWORD_CHARS, false, &mut issues);
    let credentials = email
        .zip(password)
        .map(|(email, password)| Credentials { email, password });
    finish(credentials, issues)
}

/// What deleting an account is confirmed with.
#[derive(Clone, PartialEq, Eq)]
pub enum AccountConfirmation {
    /// The account's password, as typed (for an account that has one).
    Password(String),
    /// The account's id (for an account made without a password, by the CLI).
    UserId(String),
}

impl fmt::Debug for AccountConfirmation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccountConfirmation::Password(_) => f.write_str("Password(<redacted>)"),
            AccountConfirmation::UserId(id) => f.debug_tuple("UserId").field(id).finish(),
        }
    }
}

/// Validates `{"password"}` or, for an account without a password, `{"confirm": user
/// id}`: the body of `DELETE /api/users/{user_id}`.
pub fn parse_account_confirmation(body: Value) -> Result<AccountConfirmation, Vec<Issue>> {
    let mut object = expect_object(body)?;
    let mut issues = Vec::new();
    let confirmation = if object.contains_key("password") || !object.contains_key("confirm") {
        take_string(&mut object, "password", PASSWORD_CHARS, false, &mut issues)
            .map(AccountConfirmation::Password)
    } else {
        take_string(&mut object, "confirm", (1, 128), false, &mut issues)
            .map(AccountConfirmation::UserId)
    };
    finish(confirmation, issues)
}

/// A new chat: trimmed name and model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChat {
    /// 1 to 200 characters after trimming.
    pub name: String,
    /// 1 to 200 characters after trimming.
    pub model: String,
}

/// Validates `{"name", "model"}`.
pub fn parse_new_chat(body: Value) -> Result<NewChat, Vec<Issue>> {
    let mut object = expect_object(body)?;
    let mut issues = Vec::new();
    let name = take_string(&mut object, "name", CHAT_NAME_CHARS, true, &mut issues);
    let model = take_string(&mut object, "model", CHAT_NAME_CHARS, true, &mut issues);
    finish(
        name.zip(model).map(|(name, model)| NewChat { name, model }),
        issues,
    )
}

/// Validates `{"name"}` for renaming a chat; returns the trimmed name.
pub fn parse_chat_rename(body: Value) -> Result<String, Vec<Issue>> {
    let mut object = expect_object(body)?;
    let mut issues = Vec::new();
    let name = take_string(&mut object, "name", CHAT_NAME_CHARS, true, &mut issues);
    finish(name, issues)
}

/// Validates `{"chat_ids": [positive integers]}` (1 to 1000 of them).
pub fn parse_chat_ids(body: Value) -> Result<Vec<i64>, Vec<Issue>> {
    let mut object = expect_object(body)?;
    let path = || vec![PathSegment::Key("chat_ids")];
    let items = match object.remove("chat_ids") {
        Some(Value::Array(items)) => items,
        other => return Err(vec![Issue::invalid_type(path(), "array", other.as_ref())]),
    };
    let mut issues = Vec::new();
    if items.is_empty() || items.len() > MAX_BULK_DELETE {
        let (kind, message) = if items.is_empty() {
            (
                IssueKind::TooSmall {
                    minimum: 1,
                    of: "array",
                    inclusive: true,
                    exact: false,
                },
                "Array must contain at least 1 element(s)".to_owned(),
            )
        } else {
            (
                IssueKind::TooBig {
                    maximum: MAX_BULK_DELETE,
                    of: "array",
                    inclusive: true,
                    exact: false,
                },
                format!("Array must contain at most {MAX_BULK_DELETE} element(s)"),
            )
        };
        issues.push(Issue {
            kind,
            path: path(),
            message,
        });
    }
    let mut ids = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match item.as_i64().filter(|id| *id > 0) {
            Some(id) => ids.push(id),
            None => {
                let mut at = path();
                at.push(PathSegment::Index(index));
                issues.push(Issue {
                    kind: IssueKind::InvalidType {
                        expected: "positive integer",
                        received: json_type(item),
                    },
                    path: at,
                    message: "Expected a positive integer chat id".to_owned(),
                });
            }
        }
    }
    finish(Some(ids), issues)
}

/// Parses `order_by` for listing chats: `field` or `field:asc|desc`, field one of
/// `created_at`, `updated_at`, `name`. Absent: newest activity first.
pub fn parse_chat_order(order_by: Option<&str>) -> Result<ChatOrder, Vec<Issue>> {
    const OPTIONS: &[&str] = &[
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
    let Some(text) = order_by else {
        return Ok(ChatOrder::default());
    };
    let (field, direction) = text.split_once(':').unwrap_or((text, "asc"));
    let field = match field {
        "created_at" => Some(ChatSortField::CreatedAt),
        "updated_at" => Some(ChatSortField::UpdatedAt),
        "name" => Some(ChatSortField::Name),
        _ => None,
    };
    let descending = match direction {
        "asc" => Some(false),
        "desc" => Some(true),
        _ => None,
    };
    match field.zip(descending) {
        Some((field, descending)) => Ok(ChatOrder { field, descending }),
        None => Err(vec![Issue {
            kind: IssueKind::InvalidEnumValue {
                options: OPTIONS,
                received: text.to_owned(),
            },
            path: vec![PathSegment::Key("order_by")],
            message: format!(
                "Invalid order_by '{text}': use created_at, updated_at or name, optionally with :asc or :desc"
            ),
        }]),
    }
}

/// The single values of the query parameters named in `allowed`, from the query's
/// decoded pairs; other parameters are ignored. A parameter given twice is an issue
/// naming it.
pub fn single_params<'q>(
    pairs: &'q [(String, String)],
    allowed: &[&'static str],
) -> Result<Vec<Option<&'q str>>, Vec<Issue>> {
    let mut values = vec![None; allowed.len()];
    let mut issues = Vec::new();
    for (name, value) in pairs {
        let Some(index) = allowed.iter().position(|a| a == name) else {
            continue;
        };
        if values[index].replace(value.as_str()).is_some() {
            issues.push(Issue {
                kind: IssueKind::InvalidType {
                    expected: "string",
                    received: "array",
                },
                path: vec![PathSegment::Key(allowed[index])],
                message: format!("{} may be given only once", allowed[index]),
            });
        }
    }
    if issues.is_empty() {
        Ok(values)
    } else {
        Err(issues)
    }
}

/// Largest page of messages.
pub const MAX_PAGE: usize = 1000;

/// Page size when `after` or `before` is given without `limit`.
pub const DEFAULT_PAGE: usize = 100;

/// Parses the query of a message listing: optional `limit` (1..=1000) and at most one of
/// `after` / `before` (message ids, non-negative integers).
pub fn parse_message_window(
    limit: Option<&str>,
    after: Option<&str>,
    before: Option<&str>,
) -> Result<MessageWindow, Vec<Issue>> {
    let mut issues = Vec::new();
    let mut integer = |field: &'static str, text: Option<&str>, min: i64, max: i64| {
        let text = text?;
        match query_integer(field, text, min, max) {
            Ok(value) => Some(value),
            Err(issue) => {
                issues.push(issue);
                None
            }
        }
    };
    let max_page = i64::try_from(MAX_PAGE).unwrap_or(i64::MAX);
    let limit = integer("limit", limit, 1, max_page);
    let after_id = integer("after", after, 0, i64::MAX);
    let before_id = integer("before", before, 1, i64::MAX);
    if after.is_some() && before.is_some() {
        issues.push(Issue {
            kind: IssueKind::InvalidUnion,
            path: Vec::new(),
            message: "Give either after or before, not both".to_owned(),
        });
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    let limit = limit.and_then(|l| usize::try_from(l).ok());
    Ok(match (limit, after_id, before_id) {
        (None, None, None) => MessageWindow::All,
        (limit, after, None) => MessageWindow::After {
            after: after.unwrap_or(0),
            limit: limit.unwrap_or(DEFAULT_PAGE),
        },
        (limit, _, before) => MessageWindow::Before {
            before,
            limit: limit.unwrap_or(DEFAULT_PAGE),
        },
    })
}

/// A query parameter that must be a whole number from `min` to `max` (`min >= 0`),
/// written in plain digits. As zod's `z.coerce.number().int().min(min).max(max)` would
/// say: a number out of range is `too_small` / `too_big`, anything else (`abc`, `1.5`,
/// `+5`, an empty value) is `invalid_type`.
/// The query of an events stream: `chat_id` (a chat id) and `after` (an event id, `N` or
/// `N.M`), each optional. `after` is checked by `is_event_id`.
pub fn parse_events_query(
    chat_id: Option<&str>,
    after: Option<&str>,
    is_event_id: impl Fn(&str) -> bool,
) -> Result<(Option<i64>, Option<String>), Vec<Issue>> {
    let mut issues = Vec::new();
    let chat_id = match chat_id.map(|text| query_integer("chat_id", text, 1, i64::MAX)) {
        Some(Ok(id)) => Some(id),
        Some(Err(issue)) => {
            issues.push(issue);
            None
        }
        None => None,
    };
    if let Some(after) = after.filter(|after| !is_event_id(after)) {
        issues.push(Issue {
            kind: IssueKind::InvalidType {
                expected: "event id",
                received: "string",
            },
            path: vec![PathSegment::Key("after")],
            message: format!("after must be an event id (N or N.M), not {after:?}"),
        });
    }
    if issues.is_empty() {
        Ok((chat_id, after.map(str::to_owned)))
    } else {
        Err(issues)
    }
}

/// Largest page of search hits.
pub const MAX_SEARCH_PAGE: usize = 100;

/// Search hits per page when `limit` is not given.
pub const DEFAULT_SEARCH_PAGE: usize = 20;

/// A search as its query string asks for it.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    /// What to look for.
    pub query: search::Query,
    /// What to narrow it to.
    pub filter: SearchFilter,
    /// Hits per page.
    pub limit: usize,
    /// Where the page before ended (from its `next_cursor`).
    pub cursor: Option<SearchCursor>,
}

/// A page's `next_cursor`: the last hit (score and id) and the newest message id the
/// search looks at. Written `SCORE.ID.NEWEST`, the score as the 16 hex digits of its
/// bits, so that the next page compares it exactly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchCursor {
    /// The last hit of the page.
    pub position: SearchPosition,
    /// The newest message id of the first page.
    pub newest: i64,
}

impl SearchCursor {
    /// Reads a cursor as [`fmt::Display`] writes it.
    pub fn parse(text: &str) -> Option<SearchCursor> {
        let mut parts = text.split('.');
        let bits = parts.next().filter(|bits| bits.len() == 16)?;
        let score = f64::from_bits(u64::from_str_radix(bits, 16).ok()?);
        let id = parts.next()?.parse().ok()?;
        let newest = parts.next()?.parse().ok()?;
        (parts.next().is_none() && score.is_finite()).then_some(SearchCursor {
            position: SearchPosition { score, id },
            newest,
        })
    }
}

impl fmt::Display for SearchCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = self.position.score.to_bits();
        write!(f, "{bits:016x}.{}.{}", self.position.id, self.newest)
    }
}

/// The query parameters a search takes, in the order [`parse_search_query`] wants them.
pub const SEARCH_PARAMS: [&str; 7] = ["q", "chat_id", "actor", "since", "until", "limit", "cursor"];

/// Parses a search's query string: `q` (required, see [`search::Query::parse`]),
/// `chat_id`, `actor`, `since` and `until` (RFC 3339 times; `since` inclusive, `until`
/// not), `limit` (1..=100, default 20) and `cursor` (a page's `next_cursor`), given as
/// the values of [`SEARCH_PARAMS`].
pub fn parse_search_query(values: &[Option<&str>]) -> Result<SearchRequest, Vec<Issue>> {
    let value = |i: usize| values.get(i).copied().flatten();
    let mut issues = Vec::new();
    let key = |name: &'static str| vec![PathSegment::Key(name)];
    let query = match value(0) {
        None => {
            issues.push(Issue {
                kind: IssueKind::InvalidType {
                    expected: "string",
                    received: "undefined",
                },
                path: key("q"),
                message: "q is required: the words to search for".to_owned(),
            });
            None
        }
        Some(text) => match search::Query::parse(text) {
            Ok(query) => Some(query),
            Err(search::QueryError(message)) => {
                issues.push(Issue {
                    kind: IssueKind::Custom,
                    path: key("q"),
                    message,
                });
                None
            }
        },
    };
    let mut integer =
        |field: &'static str, text: Option<&str>, min: i64, max: i64| match query_integer(
            field, text?, min, max,
        ) {
            Ok(value) => Some(value),
            Err(issue) => {
                issues.push(issue);
                None
            }
        };
    let chat_id = integer("chat_id", value(1), 1, i64::MAX);
    let max_page = i64::try_from(MAX_SEARCH_PAGE).unwrap_or(i64::MAX);
    let limit = integer("limit", value(5), 1, max_page);
    let actor = value(2).and_then(|text| parse_role(text, key("actor"), &mut issues));
    let mut time = |field: &'static str, text: Option<&str>| {
        let text = text?;
        match chrono::DateTime::parse_from_rfc3339(text) {
            Ok(at) => Some(Timestamp::from_datetime(at.with_timezone(&chrono::Utc))),
            Err(_) => {
                issues.push(Issue {
                    kind: IssueKind::InvalidString {
                        validation: "datetime",
                    },
                    path: vec![PathSegment::Key(field)],
                    message: format!(
                        "{field} must be an RFC 3339 time such as 2026-01-31T12:00:00Z"
                    ),
                });
                None
            }
        }
    };
    let since = time("since", value(3));
    let until = time("until", value(4));
    let cursor = value(6).and_then(|text| {
        let cursor = SearchCursor::parse(text);
        if cursor.is_none() {
            issues.push(Issue {
                kind: IssueKind::Custom,
                path: key("cursor"),
                message: "cursor must be a next_cursor given by a search".to_owned(),
            });
        }
        cursor
    });
    match query {
        Some(query) if issues.is_empty() => Ok(SearchRequest {
            query,
            filter: SearchFilter {
                chat_id,
                actor,
                since,
                until,
            },
            limit: limit
                .and_then(|l| usize::try_from(l).ok())
                .unwrap_or(DEFAULT_SEARCH_PAGE),
            cursor,
        }),
        _ => Err(issues),
    }
}

fn query_integer(field: &'static str, text: &str, min: i64, max: i64) -> Result<i64, Issue> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let bound = |n: i64| usize::try_from(n).unwrap_or(usize::MAX);
    let too_small = || Issue {
        kind: IssueKind::TooSmall {
            minimum: bound(min),
            of: "number",
            inclusive: true,
            exact: false,
        },
        path: vec![PathSegment::Key(field)],
        message: format!("{field} must be at least {min}"),
    };
    let too_big = || Issue {
        kind: IssueKind::TooBig {
            maximum: bound(max),
            of: "number",
            inclusive: true,
            exact: false,
        },
        path: vec![PathSegment::Key(field)],
        message: format!("{field} must be at most {max}"),
    };
    if digits(text) {
        // Digits beyond i64 are a number too large, not a malformed one.
        return match text.parse::<i64>() {
            Ok(value) if value < min => Err(too_small()),
            Ok(value) if value > max => Err(too_big()),
            Ok(value) => Ok(value),
            Err(_) => Err(too_big()),
        };
    }
    match text.strip_prefix('-') {
        Some(magnitude) if digits(magnitude) && magnitude.bytes().any(|b| b != b'0') => {
            Err(too_small())
        }
        _ => Err(Issue {
            kind: IssueKind::InvalidType {
                expected: "integer",
                received: "string",
            },
            path: vec![PathSegment::Key(field)],
            message: format!("{field} must be an integer from {min} to {max}"),
        }),
    }
}

/// An `Idempotency-Key` header value: 1 to 255 printable ASCII characters (space included).
pub fn parse_idempotency_key(text: &str) -> Option<String> {
    let printable = text.bytes().all(|b| (0x20..=0x7E).contains(&b));
    (printable && (1..=255).contains(&text.len())).then(|| text.to_owned())
}

/// Checks the shape of an email address and returns it trimmed and lower-cased.
///
/// Only ASCII addresses are accepted: a dot-atom local part (RFC 5322 `atext` and
/// single dots inside, at most 64 characters) and a domain of at least two labels, each
/// 1 to 63 letters, digits or inner hyphens, the last not all digits, at most 253
/// characters; the whole at most 254. An internationalised domain is accepted in its
/// ASCII (`xn--`) form; a non-ASCII local part (RFC 6531) is refused.
///
/// Why ASCII only: the address is the account's login name, so two addresses that look
/// the same must not be two accounts. Invisible format characters (Unicode category
/// Cf: zero-width spaces and joiners, direction overrides, soft hyphens, tags) and
/// look-alikes from other scripts (Cyrillic `а` for Latin `a`) can only be told apart
/// from the real address with Unicode tables that change every year; no ASCII
/// character is a format character, and ASCII has no two letters that are the same
/// glyph. Quoted local parts and address literals (`[192.0.2.1]`) are refused too.
pub fn normalize_email(text: &str) -> Option<String> {
    let email = text.trim();
    if !email.is_ascii() || email.len() > 254 {
        return None;
    }
    let email = email.to_ascii_lowercase();
    let (local, domain) = email.split_once('@')?;
    (is_dot_atom(local) && is_domain(domain)).then_some(email)
}

/// A dot-atom local part: `atext` runs joined by single dots, 1 to 64 characters.
fn is_dot_atom(local: &str) -> bool {
    const SPECIALS: &[u8] = b"!#$%&'*+-/=?^_`{|}~";
    local.len() <= 64
        && local.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || SPECIALS.contains(&b))
        })
}

/// A DNS host name of at least two labels, at most 253 characters, whose last label
/// (the top-level domain) is not all digits, so an IPv4 address is not a domain.
fn is_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| is_label(label))
        && labels
            .last()
            .is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()))
}

/// One DNS label: 1 to 63 letters, digits and hyphens, not starting or ending with one.
fn is_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_page_size_or_cursor_out_of_range_is_too_small_or_too_big_and_junk_is_invalid_type() {
        let issue = |limit: Option<&str>, after: Option<&str>, before: Option<&str>| {
            let issues = parse_message_window(limit, after, before).unwrap_err();
            assert_eq!(issues.len(), 1, "{issues:?}");
            serde_json::to_value(&issues[0]).unwrap()
        };
        let too_small = |field: &str, minimum: i64| {
            json!({"code": "too_small", "minimum": minimum, "type": "number", "inclusive": true,
                   "exact": false, "path": [field], "message": format!("{field} must be at least {minimum}")})
        };
        let too_big = |field: &str, maximum: i64| {
            json!({"code": "too_big", "maximum": maximum, "type": "number", "inclusive": true,
                   "exact": false, "path": [field], "message": format!("{field} must be at most {maximum}")})
        };
        let invalid = |field: &str, min: i64, max: i64| {
            json!({"code": "invalid_type", "expected": "integer", "received": "string",
                   "path": [field], "message": format!("{field} must be an integer from {min} to {max}")})
        };
        let cases = [
            (
                "limit=0",
                issue(Some("0"), None, None),
                too_small("limit", 1),
            ),
            (
                "limit=1001",
                issue(Some("1001"), None, None),
                too_big("limit", 1000),
            ),
            (
                "limit=-5",
                issue(Some("-5"), None, None),
                too_small("limit", 1),
            ),
            (
                "limit beyond 64 bits",
                issue(Some("99999999999999999999"), None, None),
                too_big("limit", 1000),
            ),
            (
                "after=-1",
                issue(None, Some("-1"), None),
                too_small("after", 0),
            ),
            (
                "before=0",
                issue(None, None, Some("0")),
                too_small("before", 1),
            ),
            (
                "limit=abc",
                issue(Some("abc"), None, None),
                invalid("limit", 1, 1000),
            ),
            (
                "limit=1.5",
                issue(Some("1.5"), None, None),
                invalid("limit", 1, 1000),
            ),
            (
                "limit=+5",
                issue(Some("+5"), None, None),
                invalid("limit", 1, 1000),
            ),
            (
                "limit=",
                issue(Some(""), None, None),
                invalid("limit", 1, 1000),
            ),
            (
                "after=-0",
                issue(None, Some("-0"), None),
                invalid("after", 0, i64::MAX),
            ),
        ];
        for (case, found, expected) in cases {
            assert_eq!(found, expected, "{case}");
        }
    }

    const LIMITS: MessageLimits = MessageLimits {
        max_batch: 3,
        max_text_bytes: 8,
    };

    fn issues_of(body: Value) -> Vec<Value> {
        let issues = parse_create_messages(body, &LIMITS).unwrap_err();
        issues
            .iter()
            .map(|i| serde_json::to_value(i).unwrap())
            .collect()
    }

    #[test]
    fn a_single_message_is_parsed_with_its_text_untouched() {
        let parsed = parse_create_messages(
            json!({"message": "  hi\n", "actor": "system", "x": 1}),
            &LIMITS,
        );
        assert_eq!(
            parsed,
            Ok(CreateMessages::Single(NewMessage {
                content: "  hi\n".to_owned(),
                role: Role::System
            }))
        );
    }

    #[test]
    fn a_batch_keeps_its_order() {
        let parsed = parse_create_messages(
            json!({"messages": [{"content": "a", "role": "user"}, {"content": "b", "role": "assistant"}]}),
            &LIMITS,
        )
        .unwrap();
        let CreateMessages::Batch(messages) = parsed else {
            panic!("expected a batch")
        };
        let texts: Vec<_> = messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(texts, ["a", "b"]);
    }

    #[test]
    fn a_missing_field_is_required_with_received_undefined() {
        assert_eq!(
            issues_of(json!({"message": "hi"})),
            vec![
                json!({"code": "invalid_type", "expected": "'user' | 'assistant' | 'system'",
                        "received": "undefined", "path": ["actor"], "message": "Required"})
            ]
        );
    }

    #[test]
    fn every_problem_in_a_batch_is_reported_with_its_path() {
        let issues = issues_of(json!({"messages": [
            {"content": "ok", "role": "user"},
            {"content": 5, "role": "robot"},
            "nope",
            {"content": " \t\n", "role": "user"}
        ]}));
        let summary: Vec<(String, Value)> = issues
            .iter()
            .map(|i| (i["code"].as_str().unwrap().to_owned(), i["path"].clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("too_big".to_owned(), json!(["messages"])),
                ("invalid_type".to_owned(), json!(["messages", 1, "content"])),
                (
                    "invalid_enum_value".to_owned(),
                    json!(["messages", 1, "role"])
                ),
                ("invalid_type".to_owned(), json!(["messages", 2])),
                ("too_small".to_owned(), json!(["messages", 3, "content"])),
            ]
        );
        assert_eq!(issues[2]["options"], json!(["user", "assistant", "system"]));
        assert_eq!(issues[2]["received"], "robot");
        assert_eq!(issues[1]["received"], "number");
    }

    #[test]
    fn text_length_is_counted_in_utf8_bytes() {
        let ok = json!({"message": "ééé", "actor": "user"});
        assert!(parse_create_messages(ok, &LIMITS).is_ok());
        let issues = issues_of(json!({"message": "éééééé", "actor": "user"}));
        assert_eq!(issues[0]["code"], "too_big");
        assert_eq!(issues[0]["maximum"], 8);
        assert_eq!(issues[0]["type"], "string");
    }

    #[test]
    fn bodies_of_the_wrong_shape_are_rejected() {
        let cases = [
            (json!([]), "invalid_type", "array"),
            (json!(null), "invalid_type", "null"),
            (json!("text"), "invalid_type", "string"),
            (json!(7), "invalid_type", "number"),
            (json!({}), "invalid_union", ""),
            (
                json!({"messages": [], "actor": "user"}),
                "invalid_union",
                "",
            ),
            (json!({"messages": {}}), "invalid_type", "object"),
            (json!({"messages": []}), "too_small", ""),
        ];
        for (body, code, received) in cases {
            let issues = issues_of(body.clone());
            assert_eq!(issues.len(), 1, "one issue for {body}");
            assert_eq!(issues[0]["code"], code, "code for {body}");
            if !received.is_empty() {
                assert_eq!(issues[0]["received"], received, "received for {body}");
            }
        }
    }

    #[test]
    fn a_text_of_only_a_byte_order_mark_is_blank_as_in_javascript() {
        let issues = issues_of(json!({"message": "\u{FEFF} ", "actor": "user"}));
        assert_eq!(issues[0]["code"], "too_small");
    }

    #[test]
    fn chat_ids_are_positive_decimal_integers() {
        assert_eq!(parse_chat_id("1"), Some(1));
        assert_eq!(parse_chat_id("9223372036854775807"), Some(i64::MAX));
        for bad in [
            "0",
            "-1",
            "+1",
            "1.0",
            "abc",
            "",
            " 1",
            "9223372036854775808",
        ] {
            assert_eq!(parse_chat_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn emails_are_checked_and_lower_cased() {
        let accepted = [
            (
                " Ada@Example.ORG ",
                "ada@example.org",
                "trimmed and lower-cased",
            ),
            (
                "ada.lovelace@example.org",
                "ada.lovelace@example.org",
                "dots inside the local part",
            ),
            ("a+tag@example.org", "a+tag@example.org", "plus addressing"),
            ("o'neil@example.org", "o'neil@example.org", "atext specials"),
            (
                "ada@mail.example.co.uk",
                "ada@mail.example.co.uk",
                "many labels",
            ),
            ("ada@x-y.example", "ada@x-y.example", "an inner hyphen"),
            (
                "ada@xn--bcher-kva.example",
                "ada@xn--bcher-kva.example",
                "an IDN in its xn-- form",
            ),
            ("ada@1.example", "ada@1.example", "a digit label"),
        ];
        for (input, expected, why) in accepted {
            assert_eq!(
                normalize_email(input).as_deref(),
                Some(expected),
                "{why}: {input:?}"
            );
        }
        let long_label = format!("ada@{}.org", "a".repeat(64));
        let long_local = format!("{}@example.org", "a".repeat(65));
        let long_domain = format!("ada@{}.org", vec!["a".repeat(63); 4].join("."));
        let refused: [(&str, &str); 34] = [
            ("", "empty"),
            ("ada", "no @"),
            ("@example.org", "empty local part"),
            ("ada@", "empty domain"),
            ("ada@example", "a single label"),
            ("a b@example.org", "a space"),
            ("a@b@c.org", "two @"),
            ("a@b..c", "an empty label"),
            ("ada@.example.org", "a leading dot in the domain"),
            ("ada@example.org.", "a trailing dot in the domain"),
            ("ada@-example.org", "a label starting with a hyphen"),
            ("ada@example-.org", "a label ending with a hyphen"),
            (&long_label, "a label of 64 characters"),
            (&long_local, "a local part of 65 characters"),
            (&long_domain, "a domain of more than 253 characters"),
            ("ada@exa_mple.org", "an underscore in the domain"),
            ("ada@192.0.2.1", "an IPv4 address"),
            ("ada@[192.0.2.1]", "an address literal"),
            (".ada@example.org", "a leading dot in the local part"),
            ("ada.@example.org", "a trailing dot in the local part"),
            ("a..da@example.org", "two dots in the local part"),
            ("\"ada\"@example.org", "a quoted local part"),
            ("a(comment)@example.org", "a comment"),
            ("ada\u{200b}@example.org", "a zero-width space (Cf)"),
            ("\u{202e}ada@example.org", "a right-to-left override (Cf)"),
            ("a\u{200d}da@example.org", "a zero-width joiner (Cf)"),
            ("ada@exam\u{00ad}ple.org", "a soft hyphen (Cf)"),
            ("\u{feff}ada@example.org", "a byte-order mark (Cf)"),
            ("ada@example.org\u{e0041}", "a tag character (Cf)"),
            ("\u{0430}da@example.org", "a Cyrillic a in the local part"),
            ("ada@ex\u{0430}mple.org", "a Cyrillic a in the domain"),
            (
                "ada@b\u{fc}cher.example",
                "a non-ASCII domain not in xn-- form",
            ),
            ("\u{ff41}da@example.org", "a fullwidth a"),
            ("ada\u{0}@example.org", "a control character"),
        ];
        for (bad, why) in refused {
            assert_eq!(normalize_email(bad), None, "{why}: {bad:?}");
        }
    }

    #[test]
    fn issues_read_as_path_and_message() {
        let issues =
            parse_create_messages(json!({"messages": [{"role": "user"}]}), &LIMITS).unwrap_err();
        assert_eq!(issues[0].to_string(), "messages[0].content: Required");
    }
}
