-- Schema version 2 -> 3: the same CHECK on chat_messages.actor, spelled with OR.
-- SQLite evaluates `actor IN ('user', 'assistant', 'system')` by building and dropping
-- a temporary B-tree for every inserted row (22% of the writer's time on batches of 100,
-- see BENCHMARKS.md); three comparisons cost almost nothing. Every stored row satisfies
-- both spellings, so only the table's definition changes, in place, as SQLite documents
-- for changes that leave the stored data valid (https://sqlite.org/lang_altertable.html,
-- "Making Other Kinds Of Table Schema Changes"). `migrate` then bumps the schema cookie
-- so that every connection re-reads the definition.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
SET sql = replace(sql,
    'CHECK (actor IN (''user'', ''assistant'', ''system''))',
    'CHECK (actor = ''user'' OR actor = ''assistant'' OR actor = ''system'')')
WHERE type = 'table' AND name = 'chat_messages';
PRAGMA writable_schema = OFF;
