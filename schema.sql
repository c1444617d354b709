-- neptun-chat schema, version 3.
-- Compiled into the binary and applied at start-up inside one transaction when the
-- database is new (PRAGMA user_version = 0). Later changes are migrations keyed on
-- PRAGMA user_version; this file always describes the newest version as a whole.

CREATE TABLE IF NOT EXISTS users (
    id            TEXT PRIMARY KEY NOT NULL,
    -- Stored lower-cased; NULL for users made without an email.
    primary_email TEXT UNIQUE,
    -- Argon2id PHC string; NULL for users who cannot log in with a password.
    password_hash TEXT,
    created_at    TEXT NOT NULL
) STRICT;

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
    updated_at     TEXT NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS chat_conversations_by_user
    ON chat_conversations (neptun_user_id, updated_at);

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

-- Idempotency-Key support (schema version 2): the answer given to a create-messages
-- request, kept for 24 hours so a retry with the same key gets it again instead of
-- storing the messages twice. Scoped per user.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key          TEXT NOT NULL,
    -- SHA-256 of the request (chat id and messages); the same key with another request is refused.
    request_hash BLOB NOT NULL,
    response     TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (user_id, key)
) STRICT, WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (created_at);
