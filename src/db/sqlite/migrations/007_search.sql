-- Schema version 6 -> 7: full-text search.
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

INSERT INTO search_backfill (below)
    SELECT max(id) + 1 FROM chat_messages HAVING count(*) > 0;
