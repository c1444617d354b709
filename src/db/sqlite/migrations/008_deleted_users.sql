-- Schema version 7 -> 8: accounts being deleted. Deleting an account ends its sessions,
-- drops its idempotency answers and changes, clears its email and password and marks
-- its chats deleted at once; the writer then purges the chats' messages a slice at a
-- time, as for any deleted chat, and deletes the user's row last. Meanwhile the user is
-- listed here, and every query treats them as gone.
CREATE TABLE IF NOT EXISTS users_deleted (
    id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
