-- Schema version 4 -> 5: deleting a chat marks it (deleted_at) in the deleting
-- transaction, so it is gone for its user at once, and the writer purges its messages
-- a slice at a time between groups of writes, then the row itself. Deleting the messages
-- of a large chat in one statement held every other write for most of a second.
-- Adding a nullable column without a default only rewrites the table's definition.
ALTER TABLE chat_conversations ADD COLUMN deleted_at TEXT;

-- The purge finds the chats still to purge without a scan.
CREATE INDEX chat_conversations_deleted ON chat_conversations (id) WHERE deleted_at IS NOT NULL;
