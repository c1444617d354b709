-- Schema version 3 -> 4: what each user stores, for the storage quota, and idempotency
-- keys that keep the ids of the messages they stored instead of a copy of the answer
-- (up to 4 MiB each, for 24 hours); the answer is rendered again from the messages.

ALTER TABLE users ADD COLUMN stored_messages INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN stored_bytes INTEGER NOT NULL DEFAULT 0;

UPDATE users SET
    stored_messages = (SELECT count(*) FROM chat_messages WHERE neptun_user_id = users.id),
    stored_bytes = (SELECT coalesce(sum(length(CAST(message AS BLOB))), 0)
                    FROM chat_messages WHERE neptun_user_id = users.id);

CREATE TRIGGER chat_messages_uncount AFTER DELETE ON chat_messages
BEGIN
    UPDATE users SET
        stored_messages = stored_messages - 1,
        stored_bytes = stored_bytes - length(CAST(OLD.message AS BLOB))
    WHERE id = OLD.neptun_user_id;
END;

CREATE TABLE idempotency_keys_4 (
    user_id          TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key              TEXT NOT NULL,
    request_hash     BLOB NOT NULL,
    first_message_id INTEGER NOT NULL,
    last_message_id  INTEGER NOT NULL,
    message_count    INTEGER NOT NULL,
    created_at       TEXT NOT NULL,
    PRIMARY KEY (user_id, key)
) STRICT, WITHOUT ROWID;

-- A kept answer is `{"chatMessage": {...}}` or `{"chatMessages": [...]}` (never empty).
INSERT INTO idempotency_keys_4
SELECT user_id, key, request_hash, first, last, count, created_at FROM (
    SELECT user_id, key, request_hash, created_at,
        coalesce(json_extract(response, '$.chatMessage.id'),
                 json_extract(response, '$.chatMessages[0].id')) AS first,
        coalesce(json_extract(response, '$.chatMessage.id'),
                 json_extract(response, '$.chatMessages[#-1].id')) AS last,
        CASE WHEN json_type(response, '$.chatMessage') IS NOT NULL THEN 1
             ELSE json_array_length(response, '$.chatMessages') END AS count
    FROM idempotency_keys WHERE json_valid(response)
) WHERE first IS NOT NULL AND last IS NOT NULL AND count > 0;

DROP TABLE idempotency_keys;
ALTER TABLE idempotency_keys_4 RENAME TO idempotency_keys;
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
