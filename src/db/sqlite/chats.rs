//! The `chat_conversations` table.
//!
//! A deleted chat is only marked (`deleted_at`) by the request that deletes it, unless it
//! is small enough to purge at once; every query here treats a marked chat as absent.
//! The writer purges marked chats a slice at a time between groups of writes
//! ([`purge_deleted_chats`]), so deleting a huge chat never holds the other writes up
//! for long, and a purge cut short by a restart carries on at the next start.

use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};

use super::{Entity, Error, Result, changes, messages, sessions, users};
use crate::domain::{ChangeKind, Chat, ChatOrder, ChatSortField, SessionClaim, Timestamp};

pub(super) const CHAT_COLUMNS: &str = "id, name, model, neptun_user_id, created_at, updated_at";

pub(super) fn chat_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Chat> {
    Ok(Chat {
        id: row.get(0)?,
        name: row.get(1)?,
        model: row.get(2)?,
        neptun_user_id: row.get(3)?,
        created_at: Timestamp::from_stored(row.get(4)?),
        updated_at: Timestamp::from_stored(row.get(5)?),
    })
}

/// Inserts a chat owned by `owner` and returns it.
pub(super) fn insert_chat(
    conn: &Connection,
    owner: &str,
    name: &str,
    model: &str,
    now: &Timestamp,
) -> Result<Chat> {
    conn.prepare_cached(
        "INSERT INTO chat_conversations (neptun_user_id, name, model, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?4)",
    )?
    .execute(params![owner, name, model, now.as_str()])?;
    let chat = Chat {
        id: conn.last_insert_rowid(),
        name: name.to_owned(),
        model: model.to_owned(),
        neptun_user_id: owner.to_owned(),
        created_at: now.clone(),
        updated_at: now.clone(),
    };
    let kind = ChangeKind::ChatCreated;
    changes::record(conn, owner, kind, Some(chat.id), None, None, now)?;
    Ok(chat)
}

/// `owner`'s chat `chat_id`; [`Error::NotFound`] if it does not exist or is someone
/// else's (the same error, so a caller cannot learn that another user's chat exists).
pub(super) fn find_owned_chat(conn: &Connection, owner: &str, chat_id: i64) -> Result<Chat> {
    conn.prepare_cached(&format!(
        "SELECT {CHAT_COLUMNS} FROM chat_conversations \
         WHERE id = ?1 AND neptun_user_id = ?2 AND deleted_at IS NULL"
    ))?
    .query_row(params![chat_id, owner], chat_from_row)
    .optional()?
    .ok_or(Error::NotFound(Entity::Chat))
}

/// Checks `claim` and that chat `chat_id` is the claimed user's, in one statement (a
/// read runs it for every page): [`Error::NotFound`]`(Session)` if the session is unknown
/// or expired at `now`, [`Error::WrongUser`] if it is another user's, then
/// [`Error::NotFound`]`(Chat)` if the chat is not the user's.
pub(super) fn require_claimed_chat(
    conn: &Connection,
    claim: &SessionClaim,
    chat_id: i64,
    now: &Timestamp,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.user_id, EXISTS (SELECT 1 FROM chat_conversations c \
         WHERE c.id = ?3 AND c.neptun_user_id = s.user_id AND c.deleted_at IS NULL) \
         FROM sessions s WHERE s.token_hash = ?1 AND s.expires_at > ?2",
    )?;
    let mut rows = stmt.query(params![&claim.token_hash[..], now.as_str(), chat_id])?;
    let Some(row) = rows.next()? else {
        return Err(Error::NotFound(Entity::Session));
    };
    sessions::check_claimed_user(row.get_ref(0)?, claim)?;
    if row.get::<_, bool>(1)? {
        Ok(())
    } else {
        Err(Error::NotFound(Entity::Chat))
    }
}

/// Like [`find_owned_chat`], without reading the row.
pub(super) fn require_owned_chat(conn: &Connection, owner: &str, chat_id: i64) -> Result<()> {
    conn.prepare_cached(
        "SELECT 1 FROM chat_conversations \
         WHERE id = ?1 AND neptun_user_id = ?2 AND deleted_at IS NULL",
    )?
    .query_row(params![chat_id, owner], |_| Ok(()))
    .optional()?
    .ok_or(Error::NotFound(Entity::Chat))
}

/// Whether chat `chat_id` exists and is not deleted (a whole-chat read checks it before
/// every slice after the first).
pub(super) fn chat_is_live(conn: &Connection, chat_id: i64) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM chat_conversations \
             WHERE id = ?1 AND deleted_at IS NULL)",
        )?
        .query_row([chat_id], |row| row.get(0))?)
}

/// All of `owner`'s chats in the given order (ties broken by id in the same direction).
pub(super) fn list_chats(conn: &Connection, owner: &str, order: ChatOrder) -> Result<Vec<Chat>> {
    let column = match order.field {
        ChatSortField::CreatedAt => "created_at",
        ChatSortField::UpdatedAt => "updated_at",
        ChatSortField::Name => "name COLLATE NOCASE",
    };
    let direction = if order.descending { "DESC" } else { "ASC" };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CHAT_COLUMNS} FROM chat_conversations \
         WHERE neptun_user_id = ?1 AND deleted_at IS NULL ORDER BY {column} {direction}, id {direction}"
    ))?;
    let chats = stmt
        .query_map([owner], chat_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(chats)
}

/// Renames `owner`'s chat and moves its `updated_at`; returns it as stored.
pub(super) fn rename_chat(
    conn: &Connection,
    owner: &str,
    chat_id: i64,
    name: &str,
    now: &Timestamp,
) -> Result<Chat> {
    let changed = conn
        .prepare_cached(
            "UPDATE chat_conversations SET name = ?3, updated_at = ?4 \
             WHERE id = ?1 AND neptun_user_id = ?2 AND deleted_at IS NULL",
        )?
        .execute(params![chat_id, owner, name, now.as_str()])?;
    if changed == 0 {
        return Err(Error::NotFound(Entity::Chat));
    }
    changes::record(
        conn,
        owner,
        ChangeKind::ChatRenamed,
        Some(chat_id),
        None,
        None,
        now,
    )?;
    find_owned_chat(conn, owner, chat_id)
}

/// Most messages one step of purging deletes, whether in the request that deletes the
/// chats or on the writer between groups: a few milliseconds of the writer's time.
pub(super) const PURGE_SLICE: usize = 256;

/// Deletes those of `chat_ids` that are `owner`'s: from now on they are gone for every
/// query of this module. Their messages go too: at once while they add up to at most
/// [`PURGE_SLICE`], the rest later, by [`purge_deleted_chats`]. The ids deleted, in the
/// order given, each once.
pub(super) fn delete_chats(
    conn: &Connection,
    owner: &str,
    chat_ids: &[i64],
    now: &Timestamp,
) -> Result<Vec<i64>> {
    let mut mark = conn.prepare_cached(
        "UPDATE chat_conversations SET deleted_at = ?3 \
         WHERE id = ?1 AND neptun_user_id = ?2 AND deleted_at IS NULL",
    )?;
    let mut deleted = Vec::new();
    let mut budget = PURGE_SLICE;
    // Once the budget is spent, the rest is left for the writer's purge.
    let mut left_over = false;
    for &chat_id in chat_ids {
        if mark.execute(params![chat_id, owner, now.as_str()])? == 0 {
            continue;
        }
        deleted.push(chat_id);
        let kind = ChangeKind::ChatDeleted;
        changes::record(conn, owner, kind, Some(chat_id), None, None, now)?;
        left_over = left_over || !purge_chat(conn, chat_id, &mut budget)?;
    }
    Ok(deleted)
}

/// Deletes up to `limit` chats of any user with no activity since `inactive_before`
/// (their `updated_at`), oldest first, as [`delete_chats`] does; the owner and id of
/// each. Messages left over are for [`purge_deleted_chats`].
pub(super) fn expire_chats(
    conn: &Connection,
    inactive_before: &Timestamp,
    limit: usize,
    now: &Timestamp,
) -> Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT neptun_user_id, id FROM chat_conversations \
         WHERE deleted_at IS NULL AND updated_at < ?1 ORDER BY updated_at LIMIT ?2",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut found = stmt
        .query_map(params![inactive_before.as_str(), limit], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    found.sort_unstable();
    for owned in found.chunk_by(|a, b| a.0 == b.0) {
        let ids: Vec<i64> = owned.iter().map(|(_, id)| *id).collect();
        delete_chats(conn, &owned[0].0, &ids, now)?;
    }
    Ok(found)
}

/// Purges the marked chats of `owner`, an account being deleted, up to [`PURGE_SLICE`]
/// messages; whether some are left for [`purge_deleted_chats`].
pub(super) fn purge_user_chats(conn: &Connection, owner: &str) -> Result<bool> {
    let doomed = conn
        .prepare_cached("SELECT id FROM chat_conversations WHERE neptun_user_id = ?1")?
        .query_map([owner], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    let mut budget = PURGE_SLICE;
    for chat_id in doomed {
        if !purge_chat(conn, chat_id, &mut budget)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Deletes up to `budget` messages of the marked chat `chat_id`, and the chat's row once
/// none are left; takes what it deleted from `budget`. Whether the chat is gone.
fn purge_chat(conn: &Connection, chat_id: i64, budget: &mut usize) -> Result<bool> {
    let removed = messages::delete_chat_messages(conn, chat_id, *budget)?;
    *budget -= removed;
    if *budget == 0 {
        // Maybe more are left; the next step finds out.
        return Ok(false);
    }
    conn.prepare_cached("DELETE FROM chat_conversations WHERE id = ?1")?
        .execute([chat_id])?;
    Ok(true)
}

/// How long one step of [`purge_deleted_chats`] may go on deleting: a write that comes
/// in meanwhile waits for this (and the step's commit) at most.
pub(super) const PURGE_STEP_TIME: Duration = Duration::from_millis(2);

/// Free pages one step gives back to the file system once no deleted chat is left:
/// 4 MiB with SQLite's 4 KiB pages, a few milliseconds of the writer's time.
const RECLAIM_PAGES: u32 = 1024;

/// Messages deleted at a time within a step, between looks at the clock.
const PURGE_CHUNK: usize = 32;

/// One step of purging deleted chats: their messages, [`PURGE_CHUNK`] at a time, for
/// about [`PURGE_STEP_TIME`] or up to [`PURGE_SLICE`] of them, and the rows of those
/// left empty; once none is left, up to [`RECLAIM_PAGES`] of the pages freed are given
/// back to the file system. Whether there is more to do. The writer runs it in a
/// transaction of its own between groups of writes while this says there is more, and
/// once at every start, to finish a purge that a restart cut short.
pub(super) fn purge_deleted_chats(conn: &Connection) -> Result<bool> {
    let started = Instant::now();
    let mut deleted = 0;
    while deleted < PURGE_SLICE && started.elapsed() < PURGE_STEP_TIME {
        let mut chunk = PURGE_CHUNK;
        if !purge_some(conn, &mut chunk)? {
            let given = super::give_back_pages(conn, RECLAIM_PAGES)?;
            return Ok(given == u64::from(RECLAIM_PAGES));
        }
        deleted += PURGE_CHUNK - chunk;
    }
    Ok(true)
}

/// Deletes up to `budget` messages of deleted chats, and the rows of those left empty;
/// takes what it deleted from `budget`. Whether any deleted chat may be left.
fn purge_some(conn: &Connection, budget: &mut usize) -> Result<bool> {
    // Read first, then delete: not while a query over the same rows is still open.
    let doomed = conn
        .prepare_cached("SELECT id FROM chat_conversations WHERE deleted_at IS NOT NULL LIMIT 64")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    for &chat_id in &doomed {
        if !purge_chat(conn, chat_id, budget)? {
            return Ok(true);
        }
    }
    if doomed.is_empty() {
        // No deleted chat is left: the accounts being deleted can go.
        users::delete_purged_users(conn)?;
        return Ok(false);
    }
    // All of these are gone; the next round looks for more.
    Ok(true)
}

/// Moves the chat's `updated_at` to `now`.
pub(super) fn touch_chat(conn: &Connection, chat_id: i64, now: &Timestamp) -> Result<()> {
    conn.prepare_cached("UPDATE chat_conversations SET updated_at = ?2 WHERE id = ?1")?
        .execute(params![chat_id, now.as_str()])?;
    Ok(())
}
