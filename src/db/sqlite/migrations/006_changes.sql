-- Schema version 5 -> 6: the change feed that the events stream reads.
ALTER TABLE users ADD COLUMN last_change INTEGER NOT NULL DEFAULT 0;

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
