-- Schema version 1 -> 2: the change feed that the events stream reads. Every change to
-- a user's chats and messages, and every end of one of their sessions, numbered 1, 2,
-- 3, ... per user, recorded in the same transaction as the write. The number is taken
-- by moving users.last_change, which locks the user's row until the commit: the next
-- change of that user takes its number after this one has committed, so numbers follow
-- commit order and a reader at number N never misses a smaller one committed later.
-- Kept for the replay window (24 hours by default); users.last_change keeps counting.
ALTER TABLE users ADD COLUMN last_change bigint NOT NULL DEFAULT 0;

CREATE TABLE changes (
    user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    seq        bigint NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('messages_added', 'messages_deleted',
        'chat_created', 'chat_renamed', 'chat_deleted', 'session_ended')),
    -- The chat changed; NULL for a session's end.
    chat_id    bigint,
    -- messages_added: the ids of the messages stored, first to last (one batch: within
    -- the chat nothing lies between them); the messages are read from chat_messages.
    first_id   bigint,
    last_id    bigint,
    -- JSON: the deleted ids (messages_deleted); session_ended: the session's token hash,
    -- in hex. (A chat's or a message's content is read from its own table.)
    detail     text,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, seq)
);

CREATE INDEX changes_by_age ON changes (created_at);
