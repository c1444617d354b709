-- Schema version 2 -> 3: full-text search. The words of each message (see
-- src/search.rs: folded, accents off, each Chinese, Japanese or Korean character a word
-- of its own), made by the program and stored with the message as a tsvector, in the
-- statement that stores it; a GIN index finds the messages that have a query's words.
-- Rows stored before this version have NULL here: the server indexes them in the
-- background, a few hundred per transaction, newest first, and the partial index tells
-- it (and a search, for its `complete`) what is left, without a scan.
ALTER TABLE chat_messages ADD COLUMN search tsvector;

CREATE INDEX chat_messages_search ON chat_messages USING gin (search);

CREATE INDEX chat_messages_unindexed ON chat_messages (id) WHERE search IS NULL;
