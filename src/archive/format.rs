//! The export format, version 1: NDJSON, one JSON object per line, each with one key
//! saying what it holds, in this order:
//!
//! ```text
//! {"format":"neptun-chat-export","version":1,"exported_at":"…","user":{User}}
//! {"chat":{Chat}}                       each live chat, in id order, and after it
//! {"message":{ChatMessage}}             each of its messages, in id order
//! {"end":{"chats":N,"messages":M}}      last: an export without it was cut short
//! ```
//!
//! `User`, `Chat` and `ChatMessage` are the API's own shapes (the user never with a
//! password hash). NDJSON, not one JSON document, so that both sides stream: a line is
//! written as it is read from the database, and read back a line at a time.
//!
//! [`write_row`](crate::archive::format::write_row) renders the rows of
//! [`crate::db::Db::export`]; [`read`](crate::archive::format::read) reads a file back
//! into [`ImportChat`](crate::archive::ImportChat)s, checking every line and naming the
//! first bad one.

use std::io::BufRead;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ArchiveError, ImportChat, ImportMessage};
use crate::db::ExportRow;
use crate::domain::{Chat, MessageRef, Role, Timestamp, User};

/// The `format` of the first line.
pub const FORMAT: &str = "neptun-chat-export";

/// The version this program writes, and the newest it reads.
pub const VERSION: u32 = 1;

/// The longest a chat name may be, in characters, as the API keeps names.
const NAME_CHARS: usize = 200;

/// Appends `row` to `out` as one line of the format. `exported_at` goes into the first
/// line (the user's).
pub fn write_row(
    out: &mut Vec<u8>,
    row: ExportRow<'_>,
    exported_at: &Timestamp,
) -> serde_json::Result<()> {
    match row {
        ExportRow::User(user) => serde_json::to_writer(
            &mut *out,
            &Header {
                format: FORMAT,
                version: VERSION,
                exported_at,
                user,
            },
        )?,
        ExportRow::Chat(chat) => serde_json::to_writer(&mut *out, &ChatLine { chat })?,
        ExportRow::Message(message) => serde_json::to_writer(&mut *out, &MessageLine { message })?,
        ExportRow::End { chats, messages } => serde_json::to_writer(
            &mut *out,
            &EndLine {
                end: Counts { chats, messages },
            },
        )?,
    }
    out.push(b'\n');
    Ok(())
}

#[derive(Serialize)]
struct Header<'a> {
    format: &'static str,
    version: u32,
    exported_at: &'a Timestamp,
    user: &'a User,
}

#[derive(Serialize)]
struct ChatLine<'a> {
    chat: &'a Chat,
}

#[derive(Serialize)]
struct MessageLine<'a> {
    message: MessageRef<'a>,
}

#[derive(Serialize)]
struct EndLine {
    end: Counts,
}

#[derive(Serialize)]
struct Counts {
    chats: u64,
    messages: u64,
}

/// A line as read back: exactly one of its keys is set.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadLine {
    format: Option<String>,
    version: Option<u32>,
    #[allow(dead_code)]
    exported_at: Option<String>,
    user: Option<serde_json::Value>,
    chat: Option<ReadChat>,
    message: Option<ReadMessage>,
    end: Option<ReadEnd>,
}

#[derive(Deserialize)]
struct ReadChat {
    id: i64,
    name: String,
    model: String,
    created_at: String,
    updated_at: String,
}

#[derive(Deserialize)]
struct ReadMessage {
    chat_conversation_id: i64,
    message: String,
    actor: String,
    created_at: String,
}

#[derive(Deserialize)]
struct ReadEnd {
    chats: u64,
    messages: u64,
}

/// Reads an export back: its chats, each with its messages, in the file's order.
/// Fails on the first line that is not what the format says should be there, naming it
/// (`line N`), and on a file that stops before its end line.
pub fn read(input: impl BufRead) -> Result<Vec<ImportChat>, ArchiveError> {
    let mut chats: Vec<ImportChat> = Vec::new();
    // The exported id of the chat the next messages belong to.
    let mut current: Option<i64> = None;
    let mut messages: u64 = 0;
    let mut ended = false;
    let mut number = 0;
    for line in input.lines() {
        number += 1;
        let place = || format!("line {number}");
        let line =
            line.map_err(|err| ArchiveError::at(place(), format!("cannot be read: {err}")))?;
        if line.trim().is_empty() {
            continue;
        }
        if ended {
            return Err(ArchiveError::at(place(), "comes after the end line"));
        }
        let parsed: ReadLine = serde_json::from_str(&line)
            .map_err(|err| ArchiveError::at(place(), without_position(&err)))?;
        if number == 1 {
            check_header(&parsed).map_err(|problem| ArchiveError::at(place(), problem))?;
            continue;
        }
        match parsed {
            ReadLine {
                chat: Some(chat),
                format: None,
                version: None,
                user: None,
                message: None,
                end: None,
                ..
            } => {
                let created_at = timestamp(&chat.created_at).map_err(|problem| {
                    ArchiveError::at(place(), format!("chat.created_at {problem}"))
                })?;
                let updated_at = timestamp(&chat.updated_at).map_err(|problem| {
                    ArchiveError::at(place(), format!("chat.updated_at {problem}"))
                })?;
                let name = chat.name.trim();
                if name.is_empty() || name.chars().count() > NAME_CHARS {
                    return Err(ArchiveError::at(
                        place(),
                        format!("chat.name must be 1 to {NAME_CHARS} characters"),
                    ));
                }
                current = Some(chat.id);
                chats.push(ImportChat {
                    name: name.to_owned(),
                    model: chat.model,
                    updated_at: updated_at.max(created_at.clone()),
                    created_at,
                    messages: Vec::new(),
                });
            }
            ReadLine {
                message: Some(message),
                format: None,
                version: None,
                user: None,
                chat: None,
                end: None,
                ..
            } => {
                let (Some(chat_id), Some(chat)) = (current, chats.last_mut()) else {
                    return Err(ArchiveError::at(place(), "a message comes before any chat"));
                };
                if message.chat_conversation_id != chat_id {
                    return Err(ArchiveError::at(
                        place(),
                        format!(
                            "message.chat_conversation_id is {}, but the chat before it is {chat_id}",
                            message.chat_conversation_id
                        ),
                    ));
                }
                let actor = Role::parse(&message.actor).ok_or_else(|| {
                    ArchiveError::at(
                        place(),
                        format!(
                            "message.actor {:?} is not one of user, assistant, system",
                            message.actor
                        ),
                    )
                })?;
                if message.message.is_empty() {
                    return Err(ArchiveError::at(place(), "message.message is empty"));
                }
                let created_at = timestamp(&message.created_at).map_err(|problem| {
                    ArchiveError::at(place(), format!("message.created_at {problem}"))
                })?;
                messages += 1;
                chat.messages.push(ImportMessage {
                    content: message.message,
                    actor,
                    created_at,
                });
            }
            ReadLine {
                end: Some(end),
                format: None,
                version: None,
                user: None,
                chat: None,
                message: None,
                ..
            } => {
                if end.chats != chats.len() as u64 || end.messages != messages {
                    return Err(ArchiveError::at(
                        place(),
                        format!(
                            "the end line counts {} chats and {} messages, but the file holds {} and {messages}",
                            end.chats,
                            end.messages,
                            chats.len()
                        ),
                    ));
                }
                ended = true;
            }
            _ => {
                return Err(ArchiveError::at(
                    place(),
                    "must hold exactly one of chat, message, end",
                ));
            }
        }
    }
    if number == 0 {
        return Err(ArchiveError::at("line 1", "the file is empty"));
    }
    if !ended {
        return Err(ArchiveError::at(
            format!("line {}", number + 1),
            "the file ends before its end line: the export was cut short",
        ));
    }
    Ok(chats)
}

/// Checks the first line: this format, a version this program reads, a user.
fn check_header(line: &ReadLine) -> Result<(), String> {
    if line.format.as_deref() != Some(FORMAT) {
        return Err(format!(
            "is not the start of a neptun-chat export (format must be {FORMAT:?})"
        ));
    }
    match line.version {
        Some(VERSION) => {}
        Some(newer) if newer > VERSION => {
            return Err(format!(
                "is version {newer} of the format, made by a newer neptun-chat; this one reads version {VERSION}"
            ));
        }
        _ => return Err(format!("must give version {VERSION}")),
    }
    if line.user.is_none() || line.chat.is_some() || line.message.is_some() || line.end.is_some() {
        return Err("must hold the user, and nothing else".to_owned());
    }
    Ok(())
}

/// An RFC 3339 time as the store keeps it (UTC, milliseconds).
fn timestamp(text: &str) -> Result<Timestamp, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|instant| Timestamp::from_datetime(instant.with_timezone(&Utc)))
        .map_err(|_| format!("{text:?} is not an RFC 3339 time"))
}

/// serde_json's message without its " at line L column C" (the place is the line).
fn without_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn export_of(chats: &[(Chat, Vec<MessageRef<'_>>)]) -> Vec<u8> {
        let user = User {
            id: "u1".to_owned(),
            primary_email: Some("a@example.com".to_owned()),
            created_at: Timestamp::from_stored("2026-01-01T00:00:00.000Z".to_owned()),
        };
        let at = Timestamp::from_stored("2026-02-01T00:00:00.000Z".to_owned());
        let mut out = Vec::new();
        write_row(&mut out, ExportRow::User(&user), &at).unwrap();
        let mut messages = 0;
        for (chat, rows) in chats {
            write_row(&mut out, ExportRow::Chat(chat), &at).unwrap();
            for row in rows {
                write_row(&mut out, ExportRow::Message(*row), &at).unwrap();
                messages += 1;
            }
        }
        let end = ExportRow::End {
            chats: chats.len() as u64,
            messages,
        };
        write_row(&mut out, end, &at).unwrap();
        out
    }

    fn chat(id: i64) -> Chat {
        Chat {
            id,
            name: format!("chat {id}"),
            model: "gpt".to_owned(),
            neptun_user_id: "u1".to_owned(),
            created_at: Timestamp::from_stored("2026-01-02T00:00:00.000Z".to_owned()),
            updated_at: Timestamp::from_stored("2026-01-03T00:00:00.000Z".to_owned()),
        }
    }

    fn message(id: i64, chat: i64, text: &'static str) -> MessageRef<'static> {
        MessageRef {
            id,
            chat_conversation_id: chat,
            neptun_user_id: "u1",
            message: text,
            actor: Role::User,
            created_at: "2026-01-02T10:00:00.123Z",
        }
    }

    #[test]
    fn an_export_is_one_json_object_per_line_with_the_header_first_and_the_end_last() {
        let out = export_of(&[(chat(7), vec![message(9, 7, "hi\nthere")])]);
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["format"], FORMAT);
        assert_eq!(lines[0]["version"], 1);
        assert_eq!(lines[0]["exported_at"], "2026-02-01T00:00:00.000Z");
        assert_eq!(lines[0]["user"]["id"], "u1");
        assert!(lines[0]["user"].get("password_hash").is_none());
        assert_eq!(lines[1]["chat"]["id"], 7);
        assert_eq!(lines[1]["chat"]["name"], "chat 7");
        assert_eq!(lines[2]["message"]["id"], 9);
        assert_eq!(lines[2]["message"]["message"], "hi\nthere");
        assert_eq!(lines[2]["message"]["actor"], "user");
        assert_eq!(
            lines[3],
            serde_json::json!({"end": {"chats": 1, "messages": 1}})
        );
    }

    #[test]
    fn what_is_written_reads_back_with_order_and_times_kept() {
        let out = export_of(&[
            (
                chat(1),
                vec![message(3, 1, "first"), message(4, 1, "second")],
            ),
            (chat(2), vec![]),
        ]);
        let chats = read(out.as_slice()).unwrap();
        assert_eq!(chats.len(), 2);
        assert_eq!(chats[0].name, "chat 1");
        assert_eq!(chats[0].model, "gpt");
        assert_eq!(chats[0].created_at.as_str(), "2026-01-02T00:00:00.000Z");
        assert_eq!(chats[0].updated_at.as_str(), "2026-01-03T00:00:00.000Z");
        let texts: Vec<&str> = chats[0]
            .messages
            .iter()
            .map(|m| m.content.as_str())
            .collect();
        assert_eq!(texts, ["first", "second"]);
        assert_eq!(
            chats[0].messages[0].created_at.as_str(),
            "2026-01-02T10:00:00.123Z"
        );
        assert!(chats[1].messages.is_empty());
    }

    #[test]
    fn a_bad_file_is_refused_naming_the_line() {
        let good = String::from_utf8(export_of(&[(chat(1), vec![message(3, 1, "x")])])).unwrap();
        let lines: Vec<&str> = good.lines().collect();
        let with = |index: usize, replacement: &str| {
            let mut changed = lines.clone();
            changed[index] = replacement;
            changed.join("\n")
        };
        let message_line = |field: &str, value: &str| {
            let mut line: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
            line["message"][field] = serde_json::from_str(value).unwrap();
            line.to_string()
        };
        let cases = [
            ("", "line 1", "an empty file"),
            (
                &with(0, r#"{"format":"other","version":1,"user":{}}"#)[..],
                "line 1",
                "another format",
            ),
            (
                &with(
                    0,
                    r#"{"format":"neptun-chat-export","version":2,"user":{}}"#,
                )[..],
                "line 1",
                "a newer version",
            ),
            (
                &with(1, "{not json")[..],
                "line 2",
                "a line that is not JSON",
            ),
            (
                &with(1, r#"{"chat":{}}"#)[..],
                "line 2",
                "a chat without fields",
            ),
            (
                &with(2, &message_line("actor", r#""tool""#))[..],
                "line 3",
                "an unknown actor",
            ),
            (
                &with(2, &message_line("chat_conversation_id", "2"))[..],
                "line 3",
                "a message of another chat",
            ),
            (
                &with(2, &message_line("created_at", r#""yesterday""#))[..],
                "line 3",
                "a bad time",
            ),
            (
                &with(2, &message_line("message", r#""""#))[..],
                "line 3",
                "an empty message",
            ),
            (
                &with(3, r#"{"end":{"chats":1,"messages":2}}"#)[..],
                "line 4",
                "wrong end counts",
            ),
            (&lines[..3].join("\n")[..], "line 4", "no end line"),
            (
                &format!("{good}{}", lines[1])[..],
                "line 5",
                "a line after the end",
            ),
            (
                &with(
                    1,
                    r#"{"chat":{"id":1,"name":"a","model":"","created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"},"end":{"chats":0,"messages":0}}"#,
                )[..],
                "line 2",
                "two keys in one line",
            ),
        ];
        for (file, place, case) in cases {
            let err = read(file.as_bytes())
                .err()
                .unwrap_or_else(|| panic!("{case}: was read"));
            assert_eq!(err.place, place, "{case}: {err}");
        }
    }
}
