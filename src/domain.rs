//! Domain types that both the HTTP layer and storage speak. Nothing here knows about
//! actix or rusqlite, so a second storage backend can reuse them as they are.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};

/// Who wrote a message. Serialized as `"user"`, `"assistant"` or `"system"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A person typing in the chat.
    User,
    /// The model's answer.
    Assistant,
    /// Instructions for the model.
    System,
}

impl Role {
    /// Every role, in the order error messages list them.
    pub const ALL: [Role; 3] = [Role::User, Role::Assistant, Role::System];

    /// The wire and storage spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
        }
    }

    /// The role spelled `s`, if any (exact, case-sensitive).
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message to be appended to a chat: text exactly as the client sent it, and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The text, never trimmed or normalised.
    pub content: String,
    /// Who wrote it.
    pub role: Role,
}

/// A client's `Idempotency-Key` for a create-messages request, and a hash of what the
/// request asked for: a retry must ask for exactly the same thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The key, 1 to 255 printable ASCII characters.
    pub key: String,
    /// SHA-256 over the chat id and the messages.
    pub request_hash: [u8; 32],
}

/// How long an idempotency key's answer is kept.
pub const IDEMPOTENCY_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// A stored message, in the shape the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ChatMessage {
    /// Strictly increasing in insertion order, never reused.
    pub id: i64,
    /// The chat it belongs to.
    pub chat_conversation_id: i64,
    /// The owner of the chat.
    pub neptun_user_id: String,
    /// The text exactly as sent.
    pub message: String,
    /// Who wrote it.
    pub actor: Role,
    /// RFC 3339, UTC, millisecond precision, ending in `Z`.
    pub created_at: Timestamp,
}

/// A stored message, borrowed from wherever it is read: the same fields and the same
/// JSON as [`ChatMessage`], without copying the texts. Pages are serialised from these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MessageRef<'a> {
    /// See [`ChatMessage::id`].
    pub id: i64,
    /// See [`ChatMessage::chat_conversation_id`].
    pub chat_conversation_id: i64,
    /// See [`ChatMessage::neptun_user_id`].
    pub neptun_user_id: &'a str,
    /// See [`ChatMessage::message`].
    pub message: &'a str,
    /// See [`ChatMessage::actor`].
    pub actor: Role,
    /// See [`ChatMessage::created_at`].
    pub created_at: &'a str,
}

impl<'a> From<&'a ChatMessage> for MessageRef<'a> {
    fn from(message: &'a ChatMessage) -> Self {
        MessageRef {
            id: message.id,
            chat_conversation_id: message.chat_conversation_id,
            neptun_user_id: &message.neptun_user_id,
            message: &message.message,
            actor: message.actor,
            created_at: message.created_at.as_str(),
        }
    }
}

/// A request's claim to act for `user_id`, backed by the session whose token hashes to
/// `token_hash`. Storage checks it in the same step as the work it guards: unknown or
/// expired session first, then a session of another user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionClaim {
    /// The user the request acts for (the `{user_id}` of its path).
    pub user_id: String,
    /// The SHA-256 of the presented session token.
    pub token_hash: [u8; 32],
}

/// A user as the API shows it (never with a password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct User {
    /// The user's id: chosen by an operator, or generated at sign-up.
    pub id: String,
    /// Lower-cased email address; `null` for users made without one.
    pub primary_email: Option<String>,
    /// When the user was created.
    pub created_at: Timestamp,
}

/// A chat conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Chat {
    /// The chat's id.
    pub id: i64,
    /// Its name, trimmed, 1 to 200 characters.
    pub name: String,
    /// The model it talks to.
    pub model: String,
    /// The owner.
    pub neptun_user_id: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was created, renamed or last got a message.
    pub updated_at: Timestamp,
}

/// A column chats can be listed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatSortField {
    /// Creation time.
    CreatedAt,
    /// Last activity.
    UpdatedAt,
    /// Name.
    Name,
}

/// The order of a chat listing: `field:asc` or `field:desc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatOrder {
    /// What to sort by.
    pub field: ChatSortField,
    /// Newest / last first when true.
    pub descending: bool,
}

impl Default for ChatOrder {
    /// Newest activity first.
    fn default() -> Self {
        ChatOrder {
            field: ChatSortField::UpdatedAt,
            descending: true,
        }
    }
}

/// What a search is narrowed to, besides its words.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchFilter {
    /// Only this chat's messages.
    pub chat_id: Option<i64>,
    /// Only messages of this role.
    pub actor: Option<Role>,
    /// Only messages stored at or after this time.
    pub since: Option<Timestamp>,
    /// Only messages stored before this time.
    pub until: Option<Timestamp>,
}

/// Where a page of search hits ends: the last hit's score and id. The next page holds
/// the hits after it, in the same order (score descending, then id descending).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchPosition {
    /// The last hit's score.
    pub score: f64,
    /// The last hit's message id.
    pub id: i64,
}

/// One message a search found.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The message.
    pub message: ChatMessage,
    /// Its chat's name.
    pub chat_name: String,
    /// How well it matches: higher is better; comparable within one search only.
    pub score: f64,
}

/// A page of search hits.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    /// The hits, best first.
    pub hits: Vec<SearchHit>,
    /// The newest message id the search looks at: later pages of the same search stop
    /// there too, so a message stored meanwhile does not push the pages around.
    pub newest: i64,
    /// Whether every message is indexed; false while messages stored before search
    /// existed are still being indexed in the background.
    pub complete: bool,
}

/// Which slice of a chat's messages to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageWindow {
    /// The whole chat, oldest first.
    All,
    /// Up to `limit` messages with ids greater than `after` (0: from the start), oldest first.
    After {
        /// Exclusive lower bound on the id.
        after: i64,
        /// Most messages in the page.
        limit: usize,
    },
    /// The newest `limit` messages with ids below `before` (`None`: the newest overall),
    /// returned oldest first.
    Before {
        /// Exclusive upper bound on the id.
        before: Option<i64>,
        /// Most messages in the page.
        limit: usize,
    },
}

/// `bytes` in lower-case hex: how token hashes are shown and recorded.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a recorded change of a user's data was (see the `changes` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Messages were appended to a chat: one request's, one batch.
    MessagesAdded,
    /// Messages were deleted from a chat (its last turn).
    MessagesDeleted,
    /// A chat was created.
    ChatCreated,
    /// A chat was renamed.
    ChatRenamed,
    /// A chat was deleted, with all its messages.
    ChatDeleted,
    /// One of the user's sessions ended (a logout or a revoke), so its streams end.
    SessionEnded,
}

impl ChangeKind {
    /// Every kind.
    pub const ALL: [ChangeKind; 6] = [
        ChangeKind::MessagesAdded,
        ChangeKind::MessagesDeleted,
        ChangeKind::ChatCreated,
        ChangeKind::ChatRenamed,
        ChangeKind::ChatDeleted,
        ChangeKind::SessionEnded,
    ];

    /// The kind as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::MessagesAdded => "messages_added",
            ChangeKind::MessagesDeleted => "messages_deleted",
            ChangeKind::ChatCreated => "chat_created",
            ChangeKind::ChatRenamed => "chat_renamed",
            ChangeKind::ChatDeleted => "chat_deleted",
            ChangeKind::SessionEnded => "session_ended",
        }
    }

    /// The kind stored as `text`.
    pub fn parse(text: &str) -> Option<ChangeKind> {
        ChangeKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// One recorded change of a user's data, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its number: 1, 2, 3, ... per user, in commit order.
    pub seq: i64,
    /// What it was.
    pub kind: ChangeKind,
    /// The chat it changed (`None` for a session's end).
    pub chat_id: Option<i64>,
    /// JSON: the ids (messages deleted); for a session's end, the session's token hash
    /// in hex.
    pub detail: Option<String>,
    /// For [`ChangeKind::ChatCreated`] and [`ChangeKind::ChatRenamed`]: the chat as it is
    /// now (`None` once it is deleted).
    pub chat: Option<Chat>,
    /// For [`ChangeKind::MessagesAdded`]: the messages stored that are still there,
    /// oldest first (none once they or their chat are deleted).
    pub messages: Vec<ChatMessage>,
    /// When it was recorded.
    pub created_at: Timestamp,
}

/// A run of a user's changes, and where their change feed stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeLog {
    /// Changes after the number asked for, oldest first.
    pub changes: Vec<Change>,
    /// The number of the user's newest change (0 before the first).
    pub last: i64,
    /// The number of the oldest change still kept, if any is.
    pub oldest: Option<i64>,
}

/// A UTC instant, rendered as RFC 3339 with milliseconds and a `Z`
/// (`2026-11-24T18:43:05.123Z`). The fixed width makes stored values sort as text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Timestamp(String);

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .examples(["2026-11-24T18:43:05.123Z"])
            .into()
    }
}

impl ToSchema for Timestamp {}

impl Timestamp {
    /// The current instant.
    pub fn now() -> Self {
        Self::from_datetime(Utc::now())
    }

    /// `instant`, rendered in the stored format.
    pub fn from_datetime(instant: DateTime<Utc>) -> Self {
        Timestamp(instant.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    /// Wraps a value read back from storage, which was written by [`Timestamp::now`].
    pub fn from_stored(text: String) -> Self {
        Timestamp(text)
    }

    /// The RFC 3339 text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_millis_and_z() {
        let instant = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.006+00:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            Timestamp::from_datetime(instant).as_str(),
            "2026-01-02T03:04:05.006Z"
        );
    }

    #[test]
    fn a_borrowed_message_serialises_exactly_like_an_owned_one() {
        let owned = ChatMessage {
            id: 7,
            chat_conversation_id: 3,
            neptun_user_id: "ada".to_owned(),
            message: "Hi \"there\"\n\u{1F600}".to_owned(),
            actor: Role::Assistant,
            created_at: Timestamp::from_stored("2026-01-02T03:04:05.006Z".to_owned()),
        };
        assert_eq!(
            serde_json::to_string(&MessageRef::from(&owned)).unwrap(),
            serde_json::to_string(&owned).unwrap()
        );
    }

    #[test]
    fn roles_round_trip_and_reject_other_spellings() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("User"), None);
        assert_eq!(Role::parse(" user"), None);
    }
}
