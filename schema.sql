-- neptun-chat schema, version 8.
-- Compiled into the binary and applied at start-up inside one transaction when the
-- database is new (PRAGMA user_version = 0). Later changes are migrations keyed on
-- PRAGMA user_version; this file always describes the newest version as a whole.

CREATE TABLE IF NOT EXISTS users (
    id            TEXT PRIMARY KEY NOT NULL,
    -- Stored lower-cased; NULL for users made without an email.
    primary_email TEXT UNIQUE,
    -- Argon2id PHC string; NULL for users who cannot log in with a password.
    password_hash TEXT,
    created_at    TEXT NOT NULL,
    -- How many messages the user keeps, and their text's UTF-8 bytes, for the storage
    -- quota (schema version 4): added to once per stored batch by the program,
    -- taken from by the trigger chat_messages_uncount, whatever deletes the rows.
    stored_messages INTEGER NOT NULL DEFAULT 0,
    stored_bytes    INTEGER NOT NULL DEFAULT 0,
    -- The number of the user's newest change (schema version 6): see `changes`.
    last_change     INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Accounts being deleted (schema version 8). Deleting an account ends its sessions,
-- drops its idempotency answers and changes, clears its email and password and marks
-- its chats deleted at once; the writer then purges the chats' messages a slice at a
-- time, as for any deleted chat, and deletes the user's row last. Meanwhile the user is
-- listed here, and every query treats them as gone.
CREATE TABLE IF NOT EXISTS users_deleted (
    id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- Only the SHA-256 of a session token is stored, never the token.
CREATE TABLE IF NOT EXISTS sessions (
    token_hash BLOB PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_id);

CREATE TABLE IF NOT EXISTS chat_conversations (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    neptun_user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    model          TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    -- Set when the chat is deleted (schema version 5): from then on it is gone for its
    -- user, and the writer purges its messages a slice at a time, then this row.
    deleted_at     TEXT
) STRICT;

CREATE INDEX IF NOT EXISTS chat_conversations_by_user
    ON chat_conversations (neptun_user_id, updated_at);

CREATE INDEX IF NOT EXISTS chat_conversations_deleted
    ON chat_conversations (id) WHERE deleted_at IS NOT NULL;

-- AUTOINCREMENT: ids are never reused after a delete, so an id is a stable cursor.
CREATE TABLE IF NOT EXISTS chat_messages (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_conversation_id INTEGER NOT NULL
        REFERENCES chat_conversations (id) ON DELETE CASCADE,
    neptun_user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    message              TEXT NOT NULL,
    -- Spelled with OR, not IN: SQLite checks an IN list of three with a temporary
    -- B-tree built for every row (schema version 3).
    actor                TEXT NOT NULL
        CHECK (actor = 'user' OR actor = 'assistant' OR actor = 'system'),
    created_at           TEXT NOT NULL
) STRICT;

-- Reading a chat in order walks this index.
CREATE INDEX IF NOT EXISTS chat_messages_by_chat
    ON chat_messages (chat_conversation_id, id);

-- Lets deleting a user cascade to their messages without a full scan.
CREATE INDEX IF NOT EXISTS chat_messages_by_user ON chat_messages (neptun_user_id);

-- The users' storage counts. Inserts are counted once per batch by the program, not
-- by a trigger: a trigger per inserted row doubled the CPU time of an insert. Deletes
-- come from several places (a turn, a chat, cascades), so this trigger counts them,
-- whichever it is (about 1.3 us more per deleted row).
CREATE TRIGGER IF NOT EXISTS chat_messages_uncount AFTER DELETE ON chat_messages
BEGIN
    UPDATE users SET
        stored_messages = stored_messages - 1,
        stored_bytes = stored_bytes - length(CAST(OLD.message AS BLOB))
    WHERE id = OLD.neptun_user_id;
END;

-- Idempotency-Key support (schema version 2): what a create-messages request stored,
-- kept for 24 hours so a retry with the same key gets the same answer instead of
-- storing the messages twice. Scoped per user. Since version 4 only the ids of the
-- stored messages are kept, not the answer: the answer is rendered from them again.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    user_id          TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key              TEXT NOT NULL,
    -- SHA-256 of the request (chat id, form and messages); the same key with another
    -- request is refused.
    request_hash     BLOB NOT NULL,
    -- The stored messages: ids first to last (one batch, stored in one transaction).
    first_message_id INTEGER NOT NULL,
    last_message_id  INTEGER NOT NULL,
    message_count    INTEGER NOT NULL,
    created_at       TEXT NOT NULL,
    PRIMARY KEY (user_id, key)
) STRICT, WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (created_at);

-- The change feed (schema version 6): every change to a user's chats and messages, and
-- every end of one of their sessions, numbered 1, 2, 3, ... per user in the order the
-- writes committed, recorded in the same transaction as the write. The events stream
-- reads it to send each change once and in order, and to resume after a reconnect.
-- Kept for the replay window (24 hours by default); users.last_change keeps counting.
CREATE TABLE IF NOT EXISTS changes (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL CHECK (kind = 'messages_added' OR kind = 'messages_deleted'
        OR kind = 'chat_created' OR kind = 'chat_renamed' OR kind = 'chat_deleted'
        OR kind = 'session_ended'),
    -- The chat changed; NULL for a session's end.
    chat_id    INTEGER,
    -- messages_added: the ids of the messages stored, first to last (one batch: within
    -- the chat nothing lies between them); the messages themselves are read from
    -- chat_messages.
    first_id   INTEGER,
    last_id    INTEGER,
    -- JSON: the deleted ids (messages_deleted); session_ended: the session's token hash,
    -- in hex. (A chat's or a message's content is read from its own table.)
    detail     TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (user_id, seq)
) STRICT, WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS changes_by_age ON changes (created_at);

-- Full-text search (schema version 7): the words of every message (see src/search.rs:
-- folded, accents off, each Chinese, Japanese or Korean character a word of its own),
-- indexed by FTS5 under the message's id. Contentless: the text lives in chat_messages
-- only, and the program writes the words in the transaction that stores the message;
-- contentless_delete lets a row go by its id alone, which the trigger below does
-- whatever deletes the message (a turn, a chat's purge, a user's cascade).
CREATE VIRTUAL TABLE IF NOT EXISTS message_words USING fts5 (
    words,
    content = '',
    contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 0'
);

CREATE TRIGGER IF NOT EXISTS chat_messages_unindex AFTER DELETE ON chat_messages
BEGIN
    DELETE FROM message_words WHERE rowid = OLD.id;
END;

-- Messages stored before schema version 7 are indexed by the server in the background,
-- newest first, a few hundred per write transaction: this one row, while it is there,
-- says that the messages with ids below `below` are still to be done.
CREATE TABLE IF NOT EXISTS search_backfill (
    below INTEGER NOT NULL
) STRICT;
