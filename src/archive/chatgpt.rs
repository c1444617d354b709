//! Reads the `conversations.json` of a ChatGPT data export ("Export data" in ChatGPT's
//! settings) into [`ImportChat`]s. It owns the export's shape: the node tree of each
//! conversation, which branch of it to keep, and which messages are tool plumbing rather
//! than chat. Pure: bytes in, chats out; it must not touch storage or the file system.
//!
//! Every conversation is a tree (each edit or regeneration starts a branch); the chat
//! imported is the branch from the root to `current_node`, the one the user last saw.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::archive::{ArchiveError, ImportChat, ImportMessage};
use crate::domain::{Role, Timestamp};

/// What a ChatGPT export holds that can be imported.
#[derive(Debug)]
pub struct ChatGptImport {
    /// The chats, in the order of the file, leaving out conversations with no message
    /// left to import.
    pub chats: Vec<ImportChat>,
    /// Messages on the imported branches that were left out: tool calls and their
    /// results, hidden messages and empty ones. Messages on other branches are not
    /// counted: they were never part of the chat the user last saw.
    pub skipped_messages: usize,
}

/// The name of a chat whose conversation has no title.
const UNTITLED: &str = "Untitled chat";

/// The longest chat name, in characters, as the API accepts names.
const NAME_MAX_CHARS: usize = 200;

/// 10000-01-01T00:00:00Z in seconds and milliseconds: timestamps are stored with
/// four-digit years, so that they sort as text.
const END_SECONDS: f64 = 253_402_300_800.0;
/// [`END_SECONDS`] in milliseconds.
const END_MILLIS: i64 = 253_402_300_800_000;

/// Reads a `conversations.json`: an array of conversations, each a tree of messages.
pub fn read(json: &[u8]) -> Result<ChatGptImport, ArchiveError> {
    let document: Value = serde_json::from_slice(json).map_err(json_error)?;
    let conversations = match &document {
        Value::Array(conversations) => conversations,
        other => {
            return Err(ArchiveError::at(
                "conversations",
                format!("must be an array of conversations, found {}", kind(other)),
            ));
        }
    };
    let mut import = ChatGptImport {
        chats: Vec::new(),
        skipped_messages: 0,
    };
    for (index, conversation) in conversations.iter().enumerate() {
        let place = format!("conversations[{index}]");
        if let Some(chat) = read_conversation(&place, conversation, &mut import.skipped_messages)? {
            import.chats.push(chat);
        }
    }
    Ok(import)
}

/// serde_json's error, with its position moved from the message into the place.
fn json_error(error: serde_json::Error) -> ArchiveError {
    let (line, column) = (error.line(), error.column());
    let message = error.to_string();
    let position = format!(" at line {line} column {column}");
    let problem = message.strip_suffix(&position).unwrap_or(&message);
    ArchiveError::at(format!("line {line}, column {column}"), problem)
}

/// One conversation as a chat, or `None` when none of its messages is left to import.
/// Counts the messages it leaves out in `skipped`.
fn read_conversation(
    place: &str,
    conversation: &Value,
    skipped: &mut usize,
) -> Result<Option<ImportChat>, ArchiveError> {
    let conversation = conversation.as_object().ok_or_else(|| {
        ArchiveError::at(
            place,
            format!("must be an object, found {}", kind(conversation)),
        )
    })?;
    let created = instant(conversation.get("create_time"), || {
        format!("{place}.create_time")
    })?;
    let updated = instant(conversation.get("update_time"), || {
        format!("{place}.update_time")
    })?;

    let mut messages = Vec::new();
    // The time of the latest message on the path that has one: a message without a
    // time was written after it.
    let mut previous_time = None;
    // The model of the latest answer kept that names one, for exports that predate
    // `default_model_slug`.
    let mut last_model = None;
    for (id, node) in message_path(place, conversation)? {
        let message = match node.get("message") {
            None | Some(Value::Null) => continue,
            Some(Value::Object(message)) => message,
            Some(other) => {
                return Err(ArchiveError::at(
                    format!("{}.message", node_place(place, id)),
                    format!("must be an object or null, found {}", kind(other)),
                ));
            }
        };
        let message_place = || format!("{}.message", node_place(place, id));
        let own_time = instant(message.get("create_time"), || {
            format!("{}.create_time", message_place())
        })?;
        let time = own_time
            .or(previous_time)
            .or(created)
            .unwrap_or(DateTime::UNIX_EPOCH);
        if own_time.is_some() {
            previous_time = own_time;
        }

        let Some(actor) = actor(message, message_place)? else {
            *skipped += 1;
            continue;
        };
        let content = text(message);
        if is_plumbing(message) || is_blank(&content) {
            *skipped += 1;
            continue;
        }
        if actor == Role::Assistant {
            let slug = message
                .get("metadata")
                .and_then(|metadata| metadata.get("model_slug"))
                .and_then(Value::as_str)
                .filter(|slug| !slug.is_empty());
            if slug.is_some() {
                last_model = slug;
            }
        }
        messages.push((content, actor, time));
    }

    let (Some(first), Some(last)) = (messages.first(), messages.last()) else {
        return Ok(None);
    };
    let created_at = created.unwrap_or(first.2);
    let updated_at = updated.unwrap_or(created_at).max(last.2).max(created_at);
    let model = conversation
        .get("default_model_slug")
        .and_then(Value::as_str)
        .filter(|slug| !slug.is_empty())
        .or(last_model)
        .unwrap_or("");
    Ok(Some(ImportChat {
        name: chat_name(conversation.get("title")),
        model: model.to_owned(),
        created_at: Timestamp::from_datetime(created_at),
        updated_at: Timestamp::from_datetime(updated_at),
        messages: messages
            .into_iter()
            .map(|(content, actor, time)| ImportMessage {
                content,
                actor,
                created_at: Timestamp::from_datetime(time),
            })
            .collect(),
    }))
}

/// A node of a conversation's mapping: its key, and its fields.
type Node<'a> = (&'a str, &'a Map<String, Value>);

/// The nodes from the root to `current_node`, root first, each with its key in
/// `mapping`.
fn message_path<'a>(
    place: &str,
    conversation: &'a Map<String, Value>,
) -> Result<Vec<Node<'a>>, ArchiveError> {
    let mapping = match conversation.get("mapping") {
        Some(Value::Object(mapping)) => mapping,
        other => {
            return Err(ArchiveError::at(
                format!("{place}.mapping"),
                format!("must be an object of nodes, found {}", kind_of(other)),
            ));
        }
    };
    // The place of the link being followed, to name it if it leads nowhere.
    let mut link = format!("{place}.current_node");
    let mut id = match conversation.get("current_node") {
        Some(Value::String(id)) => id.as_str(),
        other => {
            return Err(ArchiveError::at(
                link,
                format!(
                    "must name the message the chat was last showing, found {}",
                    kind_of(other)
                ),
            ));
        }
    };
    // Each step takes a node not taken before, so the walk ends within
    // `mapping.len()` steps even when the parent links form a cycle.
    let mut taken = HashSet::new();
    let mut path = Vec::new();
    loop {
        let Some((key, node)) = mapping.get_key_value(id) else {
            return Err(ArchiveError::at(
                link,
                format!("names {}, which is not in the mapping", quoted(id)),
            ));
        };
        if !taken.insert(key) {
            return Err(ArchiveError::at(
                link,
                format!(
                    "names {}, which is already on the path: the parent links form a cycle",
                    quoted(id)
                ),
            ));
        }
        let node = node.as_object().ok_or_else(|| {
            ArchiveError::at(
                node_place(place, key),
                format!("must be an object, found {}", kind(node)),
            )
        })?;
        path.push((key.as_str(), node));
        match node.get("parent") {
            None | Some(Value::Null) => break,
            Some(Value::String(parent)) => {
                id = parent;
                link = format!("{}.parent", node_place(place, key));
            }
            Some(other) => {
                return Err(ArchiveError::at(
                    format!("{}.parent", node_place(place, key)),
                    format!("must be a node id or null, found {}", kind(other)),
                ));
            }
        }
    }
    path.reverse();
    Ok(path)
}

/// Who wrote `message`, or `None` for a tool's output (browsing results, code output),
/// which is plumbing between the model and its tools rather than chat.
fn actor(
    message: &Map<String, Value>,
    message_place: impl Fn() -> String,
) -> Result<Option<Role>, ArchiveError> {
    let role = match message.get("author").and_then(|author| author.get("role")) {
        Some(Value::String(role)) => role.as_str(),
        other => {
            return Err(ArchiveError::at(
                format!("{}.author.role", message_place()),
                format!("must be a string, found {}", kind_of(other)),
            ));
        }
    };
    if role == "tool" {
        return Ok(None);
    }
    match Role::parse(role) {
        Some(actor) => Ok(Some(actor)),
        None => Err(ArchiveError::at(
            format!("{}.author.role", message_place()),
            format!(
                "is {}, not one of user, assistant, system or tool",
                quoted(role)
            ),
        )),
    }
}

/// Whether `message` is one the export keeps but ChatGPT does not show: hidden ones
/// (the empty system prompt, custom instructions) and the model's calls to a tool,
/// which are addressed to the tool rather than to everyone.
fn is_plumbing(message: &Map<String, Value>) -> bool {
    let hidden = message
        .get("metadata")
        .and_then(|metadata| metadata.get("is_visually_hidden_from_conversation"))
        == Some(&Value::Bool(true));
    let to_a_tool = match message.get("recipient") {
        None | Some(Value::Null) => false,
        Some(recipient) => recipient.as_str() != Some("all"),
    };
    hidden || to_a_tool
}

/// The text of `message`: its string parts joined by line breaks (other parts are
/// attachments such as images), or else its `text`, or else nothing.
fn text(message: &Map<String, Value>) -> String {
    let content = message.get("content");
    if let Some(parts) = content
        .and_then(|content| content.get("parts"))
        .and_then(Value::as_array)
    {
        let strings: Vec<&str> = parts.iter().filter_map(Value::as_str).collect();
        return strings.join("\n");
    }
    content
        .and_then(|content| content.get("text"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

/// Whether `text` is empty once trimmed as the API trims (U+FEFF counts as white space,
/// as in JavaScript): the API refuses such messages.
fn is_blank(text: &str) -> bool {
    trim(text).is_empty()
}

/// `text` without leading and trailing white space, U+FEFF included, as the API trims
/// chat names and checks message texts.
fn trim(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || c == '\u{FEFF}')
}

/// The conversation's title as a chat name: trimmed and cut to the length the API
/// accepts, or a stand-in when that leaves nothing.
fn chat_name(title: Option<&Value>) -> String {
    let title = trim(title.and_then(Value::as_str).unwrap_or(""));
    let name: String = title.chars().take(NAME_MAX_CHARS).collect();
    // The cut may end on white space from the middle of the title.
    let name = trim(&name);
    if name.is_empty() {
        UNTITLED.to_owned()
    } else {
        name.to_owned()
    }
}

/// A time given as seconds since 1970 (a float, as Python's `time.time()` wrote it),
/// to the millisecond; `None` when absent or null.
fn instant(
    value: Option<&Value>,
    place: impl FnOnce() -> String,
) -> Result<Option<DateTime<Utc>>, ArchiveError> {
    let seconds = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(number)) => number.as_f64().unwrap_or(f64::NAN),
        Some(other) => {
            return Err(ArchiveError::at(
                place(),
                format!("must be seconds since 1970, found {}", kind(other)),
            ));
        }
    };
    // The range check comes first so that `millis` cannot overflow; NaN fails it.
    let millis = (0.0..END_SECONDS)
        .contains(&seconds)
        .then(|| millis(seconds))
        .filter(|millis| *millis < END_MILLIS);
    match millis.and_then(DateTime::from_timestamp_millis) {
        Some(instant) => Ok(Some(instant)),
        None => Err(ArchiveError::at(
            place(),
            format!("is {seconds}, not a time from 1970 to the end of year 9999"),
        )),
    }
}

/// Whole milliseconds in `seconds` (at least 0, less than [`END_SECONDS`]). The fraction
/// is first rounded to the microsecond: a float like 1718351240.1 is really
/// 1718351240.0999999, and cutting that to milliseconds would lose one.
fn millis(seconds: f64) -> i64 {
    let whole = seconds.trunc();
    let micros = ((seconds - whole) * 1_000_000.0).round() as i64;
    whole as i64 * 1000 + micros / 1000
}

/// Where node `id` of a conversation's mapping is, its key quoted as in JSON.
fn node_place(place: &str, id: &str) -> String {
    format!("{place}.mapping[{}]", quoted(id))
}

/// `text` as a JSON string, so that quotes and control characters in it stay readable.
fn quoted(text: &str) -> String {
    Value::from(text).to_string()
}

/// What kind of JSON value `value` is, for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// [`kind`] of a field that may be absent.
fn kind_of(value: Option<&Value>) -> &'static str {
    value.map_or("nothing", kind)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/chatgpt/conversations.json");

    /// A chat's messages as (actor, content) pairs.
    fn pairs(chat: &ImportChat) -> Vec<(Role, &str)> {
        chat.messages
            .iter()
            .map(|message| (message.actor, message.content.as_str()))
            .collect()
    }

    /// An export of one conversation with `mapping` and `current_node`, and `extra`
    /// fields merged in.
    fn export(mapping: Value, current_node: Value, extra: Value) -> Vec<u8> {
        let mut conversation = json!({
            "title": "Test",
            "create_time": 1_700_000_000.0,
            "update_time": 1_700_000_100.0,
            "mapping": mapping,
            "current_node": current_node,
        });
        if let (Some(conversation), Some(extra)) = (conversation.as_object_mut(), extra.as_object())
        {
            conversation.extend(extra.clone());
        }
        serde_json::to_vec(&json!([conversation])).unwrap()
    }

    /// A node holding a message from `role` saying `text`.
    fn node(id: &str, parent: Value, role: &str, text: &str) -> Value {
        json!({
            "id": id,
            "message": {
                "id": id,
                "author": { "role": role },
                "create_time": 1_700_000_050.0,
                "content": { "content_type": "text", "parts": [text] },
                "metadata": {},
                "recipient": "all"
            },
            "parent": parent,
            "children": []
        })
    }

    /// A two-message export whose user message has `message` fields merged in.
    fn export_with_user_message(message: Value) -> Vec<u8> {
        let mut user = node("u", json!("root"), "user", "Hi");
        if let (Some(fields), Some(extra)) = (
            user.get_mut("message").and_then(Value::as_object_mut),
            message.as_object(),
        ) {
            fields.extend(extra.clone());
        }
        export(
            json!({
                "root": { "id": "root", "message": null, "parent": null, "children": ["u"] },
                "u": user,
                "a": node("a", json!("u"), "assistant", "Hello"),
            }),
            json!("a"),
            json!({}),
        )
    }

    #[test]
    fn the_fixture_imports_three_chats_and_counts_four_skipped_messages() {
        let import = read(FIXTURE).unwrap();
        assert_eq!(import.chats.len(), 3);
        assert_eq!(import.skipped_messages, 4);
    }

    #[test]
    fn a_branched_conversation_keeps_only_the_branch_of_its_current_node() {
        let chat = &read(FIXTURE).unwrap().chats[0];
        assert_eq!(chat.name, "Sourdough starter ratios");
        assert_eq!(chat.model, "gpt-4o");
        assert_eq!(chat.created_at.as_str(), "2024-06-14T07:47:14.567Z");
        assert_eq!(chat.updated_at.as_str(), "2024-06-14T07:48:26.000Z");
        // The hidden system prompt, the call to the browser and its result are left out,
        // and so is the first answer, regenerated on another branch.
        assert_eq!(
            pairs(chat),
            vec![
                (
                    Role::User,
                    "What ratio of flour to water should I feed a sourdough starter?"
                ),
                (
                    Role::Assistant,
                    concat!(
                        "Most bakers feed **1:1:1** by weight: starter, flour, water.\n",
                        "\nA stiffer starter uses less water."
                    )
                ),
                (Role::User, "And in grams for 50 g of starter?"),
                (Role::Assistant, "Add 50 g of flour and 50 g of water."),
            ]
        );
        assert!(
            chat.messages
                .iter()
                .all(|message| !message.content.contains("Equal weights"))
        );
        let times: Vec<&str> = chat
            .messages
            .iter()
            .map(|m| m.created_at.as_str())
            .collect();
        assert_eq!(
            times,
            vec![
                "2024-06-14T07:47:14.570Z",
                "2024-06-14T07:47:50.987Z",
                "2024-06-14T07:48:20.400Z",
                "2024-06-14T07:48:25.550Z",
            ]
        );
    }

    #[test]
    fn an_untitled_conversation_keeps_the_text_parts_of_a_message_with_an_image() {
        let chat = &read(FIXTURE).unwrap().chats[1];
        assert_eq!(chat.name, "Untitled chat");
        assert_eq!(chat.model, "gpt-4o");
        assert_eq!(chat.created_at.as_str(), "2024-04-01T19:33:20.250Z");
        assert_eq!(chat.updated_at.as_str(), "2024-04-01T19:33:30.000Z");
        assert_eq!(
            pairs(chat),
            vec![
                (Role::User, "What dessert is this? Crème brûlée? 日本語も"),
                (
                    Role::Assistant,
                    concat!(
                        "Yes, that is crème brûlée: a baked custard under a caramelised sugar crust.\n",
                        "はい、クレームブリュレです。"
                    )
                ),
            ]
        );
        assert_eq!(
            chat.messages[0].created_at.as_str(),
            "2024-04-01T19:33:20.400Z"
        );
        assert_eq!(
            chat.messages[1].created_at.as_str(),
            "2024-04-01T19:33:29.125Z"
        );
    }

    #[test]
    fn an_old_conversation_falls_back_to_its_answers_model_and_the_previous_message_time() {
        let chat = &read(FIXTURE).unwrap().chats[2];
        assert_eq!(chat.name, "Packing list for Kyoto");
        assert_eq!(chat.model, "text-davinci-002-render-sha");
        assert_eq!(chat.created_at.as_str(), "2023-07-22T04:26:40.000Z");
        assert_eq!(chat.updated_at.as_str(), "2023-07-22T04:26:53.000Z");
        assert_eq!(
            pairs(chat),
            vec![
                (Role::User, "What should I pack for Kyoto in November?"),
                (
                    Role::Assistant,
                    "Layers: a light down jacket, a sweater, and shoes you can slip off at temples."
                ),
            ]
        );
        assert_eq!(
            chat.messages[0].created_at.as_str(),
            "2023-07-22T04:26:41.200Z"
        );
        assert_eq!(
            chat.messages[1].created_at.as_str(),
            "2023-07-22T04:26:41.200Z"
        );
    }

    #[test]
    fn blank_messages_are_skipped_and_a_conversation_left_empty_is_left_out() {
        let json = export(
            json!({
                "root": { "id": "root", "message": null, "parent": null, "children": ["u"] },
                "u": node("u", json!("root"), "user", " \n\t\u{FEFF}"),
            }),
            json!("u"),
            json!({}),
        );
        let import = read(&json).unwrap();
        assert!(import.chats.is_empty());
        assert_eq!(import.skipped_messages, 1);
    }

    #[test]
    fn a_message_without_parts_is_read_from_its_text_exactly() {
        let json = export_with_user_message(json!({
            "content": { "content_type": "code", "text": "  print(1)\n" }
        }));
        let chat = &read(&json).unwrap().chats[0];
        assert_eq!(
            pairs(chat),
            vec![(Role::User, "  print(1)\n"), (Role::Assistant, "Hello")]
        );
    }

    #[test]
    fn times_without_a_conversation_time_fall_back_to_the_messages_and_then_to_1970() {
        let mut first = node("u", json!(null), "user", "Hi");
        first["message"]["create_time"] = json!(null);
        let json = export(
            json!({ "u": first }),
            json!("u"),
            json!({ "create_time": null, "update_time": null }),
        );
        let chat = &read(&json).unwrap().chats[0];
        assert_eq!(chat.created_at.as_str(), "1970-01-01T00:00:00.000Z");
        assert_eq!(chat.updated_at.as_str(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            chat.messages[0].created_at.as_str(),
            "1970-01-01T00:00:00.000Z"
        );

        let json = export_with_user_message(json!({ "create_time": 1_718_351_240.1 }));
        let json = String::from_utf8(json)
            .unwrap()
            .replace("\"create_time\":1700000000.0", "\"create_time\":null");
        let chat = &read(json.as_bytes()).unwrap().chats[0];
        // The float is 1718351240.0999999…; it still reads as .100.
        assert_eq!(chat.created_at.as_str(), "2024-06-14T07:47:20.100Z");
        assert_eq!(
            chat.messages[0].created_at.as_str(),
            "2024-06-14T07:47:20.100Z"
        );
    }

    #[test]
    fn the_last_update_is_never_before_the_creation_nor_the_last_message() {
        let json = export_with_user_message(json!({}));
        let json = String::from_utf8(json).unwrap().replace(
            "\"update_time\":1700000100.0",
            "\"update_time\":1600000000.0",
        );
        let chat = &read(json.as_bytes()).unwrap().chats[0];
        assert_eq!(chat.created_at.as_str(), "2023-11-14T22:13:20.000Z");
        assert_eq!(chat.updated_at.as_str(), "2023-11-14T22:14:10.000Z");
    }

    #[test]
    fn a_long_title_is_cut_to_200_characters_and_a_blank_one_is_untitled() {
        let long = format!("  {}", "é".repeat(250));
        let json = export_with_user_message(json!({}));
        let retitled = |title: &str| {
            String::from_utf8(json.clone()).unwrap().replace(
                "\"title\":\"Test\"",
                &format!("\"title\":{}", quoted(title)),
            )
        };
        let chat = &read(retitled(&long).as_bytes()).unwrap().chats[0];
        assert_eq!(chat.name, "é".repeat(200));
        let chat = &read(retitled(" \n ").as_bytes()).unwrap().chats[0];
        assert_eq!(chat.name, "Untitled chat");
    }

    #[test]
    fn malformed_exports_are_refused_at_the_place_of_the_fault() {
        let root = || json!({ "id": "root", "message": null, "parent": null, "children": [] });
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "a top level that is not an array",
                br#"{"conversations": []}"#.to_vec(),
                "conversations",
            ),
            (
                "text that is not JSON",
                b"[\n  {\"title\": }\n]".to_vec(),
                "line 2, column 13",
            ),
            (
                "a conversation without a current node",
                br#"[{"title": "Draft", "mapping": {}}]"#.to_vec(),
                "conversations[0].current_node",
            ),
            (
                "a conversation whose current node is null",
                export(json!({ "root": root() }), json!(null), json!({})),
                "conversations[0].current_node",
            ),
            (
                "a current node that is not in the mapping",
                export(json!({ "root": root() }), json!("gone"), json!({})),
                "conversations[0].current_node",
            ),
            (
                "a parent that is not in the mapping",
                export(
                    json!({ "a": node("a", json!("gone"), "user", "Hi") }),
                    json!("a"),
                    json!({}),
                ),
                r#"conversations[0].mapping["a"].parent"#,
            ),
            (
                "parent links that form a cycle",
                export(
                    json!({
                        "a": node("a", json!("b"), "user", "Hi"),
                        "b": node("b", json!("a"), "assistant", "Hello"),
                    }),
                    json!("b"),
                    json!({}),
                ),
                r#"conversations[0].mapping["a"].parent"#,
            ),
            (
                "an author with an unknown role",
                export(
                    json!({ "a": node("a", json!(null), "critic", "Hmm") }),
                    json!("a"),
                    json!({}),
                ),
                r#"conversations[0].mapping["a"].message.author.role"#,
            ),
            (
                "a negative message time",
                export_with_user_message(json!({ "create_time": -5.0 })),
                r#"conversations[0].mapping["u"].message.create_time"#,
            ),
            (
                "a message time after year 9999",
                export_with_user_message(json!({ "create_time": 1e12 })),
                r#"conversations[0].mapping["u"].message.create_time"#,
            ),
            (
                "a message time that is not a number",
                export_with_user_message(json!({ "create_time": "2024-06-14" })),
                r#"conversations[0].mapping["u"].message.create_time"#,
            ),
            (
                "a conversation time that is not a number",
                export(
                    json!({ "root": root() }),
                    json!("root"),
                    json!({ "create_time": "yesterday" }),
                ),
                "conversations[0].create_time",
            ),
        ];
        for (case, json, place) in cases {
            let error = read(&json).expect_err(case);
            assert_eq!(error.place, place, "{case}: {error}");
        }
    }

    #[test]
    fn a_json_error_says_what_is_wrong_without_repeating_where() {
        let error = read(b"[\n  {\"title\": }\n]").unwrap_err();
        assert_eq!(error.place, "line 2, column 13");
        assert_eq!(error.problem, "expected value");
    }

    #[test]
    fn an_unknown_role_is_named_in_the_error() {
        let json = export(
            json!({ "a": node("a", json!(null), "critic", "Hmm") }),
            json!("a"),
            json!({}),
        );
        let error = read(&json).unwrap_err();
        assert_eq!(
            error.problem,
            r#"is "critic", not one of user, assistant, system or tool"#
        );
    }
}
