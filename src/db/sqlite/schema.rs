//! The schema: `schema.sql` compiled in, applied once to a new database, and the checks
//! that keep this program from touching a file it did not create.

use rusqlite::{Connection, TransactionBehavior};

use super::{Error, Result};

/// The whole schema at its newest version.
const SCHEMA_SQL: &str = include_str!("../../../schema.sql");

/// The migrations, in order: `MIGRATIONS[i]` takes a database from version `i + 1` to
/// `i + 2`. A new database gets `SCHEMA_SQL` whole instead.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/002_idempotency_keys.sql"),
    include_str!("migrations/003_actor_check.sql"),
    include_str!("migrations/004_storage_counts_and_slim_keys.sql"),
    include_str!("migrations/005_deleted_chats.sql"),
    include_str!("migrations/006_changes.sql"),
    include_str!("migrations/007_search.sql"),
    include_str!("migrations/008_deleted_users.sql"),
];

/// The schema version this binary writes and understands (`PRAGMA user_version`).
pub(super) const SCHEMA_VERSION: i64 = 1 + MIGRATIONS.len() as i64;

/// Marks a database file as this program's (`PRAGMA application_id`): "NPTC".
const APPLICATION_ID: i64 = 0x4E50_5443;

/// Brings the database to [`SCHEMA_VERSION`] in one transaction, or refuses it.
///
/// A new, empty file gets the whole schema; an older one gets the migrations it lacks,
/// all or none of them. The checks read only the header and the schema table, so
/// start-up stays fast on a large database. A file with another application's mark,
/// an unmarked file that already has tables, or a file from a newer version of this
/// program is refused and left untouched.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let application_id: i64 = tx.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if application_id != APPLICATION_ID {
        let tables: i64 = tx.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        if application_id != 0 || tables > 0 {
            return Err(Error::Incompatible(
                "the file is an SQLite database of another application; refusing to use it"
                    .to_owned(),
            ));
        }
    }
    if version > SCHEMA_VERSION {
        return Err(Error::Incompatible(format!(
            "the database has schema version {version}, newer than this program's \
             {SCHEMA_VERSION}; use a newer neptun-chat"
        )));
    }
    if version == 0 {
        tx.execute_batch(SCHEMA_SQL)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    } else {
        // Version v (1-based) still needs MIGRATIONS[v - 1..].
        let applied = usize::try_from(version - 1).unwrap_or(0);
        for (from, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
            log::info!(
                "migrating the database from schema version {} to {}",
                from + 1,
                from + 2
            );
            tx.execute_batch(migration)?;
        }
        if applied < MIGRATIONS.len() {
            check_edited_definitions(&tx)?;
            // A migration that edits a definition in place (003) must change the schema
            // cookie itself, or connections keep the definition they parsed before.
            let cookie: i64 = tx.pragma_query_value(None, "schema_version", |r| r.get(0))?;
            tx.pragma_update(None, "schema_version", cookie + 1)?;
        }
    }
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}

/// Checks that the definitions migrations edit in place as text (003) were found and
/// changed: a definition spelled otherwise than this program ever wrote it would be left
/// as it was, silently.
fn check_edited_definitions(conn: &Connection) -> Result<()> {
    let unchanged: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'chat_messages' \
         AND sql NOT LIKE '%CHECK (actor = ''user'' OR actor = ''assistant'' OR actor = ''system'')%'",
        [],
        |r| r.get(0),
    )?;
    if unchanged > 0 {
        return Err(Error::Incompatible(
            "the chat_messages table is not defined as neptun-chat defines it; refusing to migrate it"
                .to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Connection {
        Connection::open_in_memory().unwrap()
    }

    /// The schema as the first release wrote it.
    const V1_SCHEMA: &str = include_str!("../../../tests/fixtures/schema_v1.sql");

    /// An in-memory database made with `schema` and marked as this program's version 1.
    fn version_1_database(schema: &str) -> Connection {
        let conn = fresh();
        conn.execute_batch(schema).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn
    }

    #[test]
    fn a_new_database_gets_the_schema_and_the_mark() {
        let mut conn = fresh();
        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN \
                 ('users', 'sessions', 'chat_conversations', 'chat_messages')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 4);
    }

    #[test]
    fn migrating_twice_changes_nothing() {
        let mut conn = fresh();
        migrate(&mut conn).unwrap();
        let cookie = |conn: &Connection| -> i64 {
            conn.pragma_query_value(None, "schema_version", |r| r.get(0))
                .unwrap()
        };
        let before = cookie(&conn);
        migrate(&mut conn).unwrap();
        assert_eq!(cookie(&conn), before, "the schema was rewritten");
    }

    #[test]
    fn a_version_2_database_with_an_unexpected_definition_is_refused_unchanged() {
        let mut conn =
            version_1_database(&V1_SCHEMA.replace("CHECK (actor IN (", "CHECK (actor  IN ("));

        let err = migrate(&mut conn).unwrap_err();

        assert!(matches!(err, Error::Incompatible(_)), "{err}");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 1, "the failed migration was rolled back");
    }

    #[test]
    fn another_applications_database_is_refused_untouched() {
        let mut conn = fresh();
        conn.execute_batch("CREATE TABLE notes (body TEXT)")
            .unwrap();
        assert!(matches!(migrate(&mut conn), Err(Error::Incompatible(_))));
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 0);
    }

    /// The tables, columns and indexes of a database, to compare two of them.
    fn shape(conn: &Connection) -> Vec<(String, String)> {
        conn.prepare(
            "SELECT m.name, group_concat(p.name || ' ' || p.type || ' ' || p.pk, ', ') \
             FROM sqlite_schema m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table' GROUP BY m.name ORDER BY m.name",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
    }

    #[test]
    fn a_version_1_database_is_migrated_to_the_current_schema_keeping_its_data() {
        // Arrange: a database as the first release made it, with a message in it.
        let mut old = version_1_database(V1_SCHEMA);
        old.execute_batch(
            "INSERT INTO users (id, created_at) VALUES ('alice', '2026-01-01T00:00:00.000Z');
             INSERT INTO chat_conversations (neptun_user_id, name, model, created_at, updated_at)
                 VALUES ('alice', 'chat', 'm', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z');
             INSERT INTO chat_messages (chat_conversation_id, neptun_user_id, message, actor, created_at)
                 VALUES (1, 'alice', 'kept', 'user', '2026-01-01T00:00:00.000Z');",
        )
        .unwrap();

        // Act
        migrate(&mut old).unwrap();

        // Assert: the same shape as a new database, and the message is still there.
        let mut new = fresh();
        migrate(&mut new).unwrap();
        assert_eq!(shape(&old), shape(&new));
        let version: i64 = old
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let text: String = old
            .query_row("SELECT message FROM chat_messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(text, "kept");
    }

    /// The stored definition of `chat_messages`.
    fn messages_table_sql(conn: &Connection) -> String {
        conn.query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'chat_messages'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn the_actor_check_is_spelled_with_or_in_new_and_migrated_databases_and_still_holds() {
        let mut old = version_1_database(V1_SCHEMA);
        assert!(messages_table_sql(&old).contains("actor IN ("));
        let mut new = fresh();

        migrate(&mut old).unwrap();
        migrate(&mut new).unwrap();

        for conn in [&old, &new] {
            let sql = messages_table_sql(conn);
            assert!(!sql.contains(" IN ("), "{sql}");
            assert!(
                sql.contains("CHECK (actor = 'user' OR actor = 'assistant' OR actor = 'system')"),
                "{sql}"
            );
            conn.execute_batch(
                "INSERT INTO users (id, created_at) VALUES ('u', 'now');
                 INSERT INTO chat_conversations (neptun_user_id, name, model, created_at, updated_at)
                     VALUES ('u', 'c', 'm', 'now', 'now');
                 INSERT INTO chat_messages (chat_conversation_id, neptun_user_id, message, actor, created_at)
                     VALUES (1, 'u', 'ok', 'system', 'now');",
            )
            .unwrap();
            let refused = conn.execute(
                "INSERT INTO chat_messages (chat_conversation_id, neptun_user_id, message, actor, created_at) \
                 VALUES (1, 'u', 'no', 'User', 'now')",
                [],
            );
            assert!(refused.is_err(), "an unknown actor was stored");
            let check: String = conn
                .query_row("PRAGMA quick_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(check, "ok");
        }
    }

    /// A database as schema version 3 left it: version 1 and the first two migrations.
    fn version_3_database() -> Connection {
        let conn = version_1_database(V1_SCHEMA);
        for migration in &MIGRATIONS[..2] {
            conn.execute_batch(migration).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn
    }

    #[test]
    fn a_version_3_database_gets_storage_counts_and_keys_that_keep_only_ids() {
        // Arrange: two users' messages, and two kept answers in the old form (a copy of
        // the response), one single, one a batch; and a third the old code could not
        // have written, which cannot be kept.
        let mut old = version_3_database();
        old.execute_batch(
            "INSERT INTO users (id, created_at) VALUES ('ada', 'now'), ('bob', 'now'), ('cy', 'now');
             INSERT INTO chat_conversations (neptun_user_id, name, model, created_at, updated_at)
                 VALUES ('ada', 'c', 'm', 'now', 'now'), ('bob', 'c', 'm', 'now', 'now');
             INSERT INTO chat_messages (chat_conversation_id, neptun_user_id, message, actor, created_at)
                 VALUES (1, 'ada', 'héllo', 'user', 'now'), (1, 'ada', 'hi', 'assistant', 'now'),
                        (1, 'ada', 'more', 'user', 'now'), (2, 'bob', 'x', 'user', 'now');
             INSERT INTO idempotency_keys VALUES
                 ('ada', 'one', zeroblob(32), '{\"chatMessage\":{\"id\":1,\"message\":\"héllo\"}}', 'now'),
                 ('ada', 'batch', zeroblob(32), '{\"chatMessages\":[{\"id\":2},{\"id\":3}]}', 'now'),
                 ('bob', 'odd', zeroblob(32), 'not json', 'now');",
        )
        .unwrap();

        // Act
        migrate(&mut old).unwrap();

        // Assert: counts as stored, keys as ids, and deletes keep the counts.
        let counts = |conn: &Connection| -> Vec<(String, i64, i64)> {
            conn.prepare("SELECT id, stored_messages, stored_bytes FROM users ORDER BY id")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        assert_eq!(
            counts(&old),
            [
                ("ada".to_owned(), 3, 6 + 2 + 4),
                ("bob".to_owned(), 1, 1),
                ("cy".to_owned(), 0, 0)
            ]
        );
        let keys: Vec<(String, i64, i64, i64)> = old
            .prepare(
                "SELECT key, first_message_id, last_message_id, message_count \
                 FROM idempotency_keys ORDER BY key",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            keys,
            [("batch".to_owned(), 2, 3, 2), ("one".to_owned(), 1, 1, 1)]
        );
        old.execute("DELETE FROM chat_messages WHERE id = 1", [])
            .unwrap();
        old.execute("DELETE FROM chat_conversations WHERE id = 2", [])
            .unwrap();
        assert_eq!(
            counts(&old),
            [
                ("ada".to_owned(), 2, 2 + 4),
                ("bob".to_owned(), 0, 0),
                ("cy".to_owned(), 0, 0)
            ]
        );
        let mut new = fresh();
        migrate(&mut new).unwrap();
        assert_eq!(shape(&old), shape(&new));
        let triggers = |conn: &Connection| -> Vec<String> {
            conn.prepare("SELECT sql FROM sqlite_schema WHERE type = 'trigger' ORDER BY name")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        // The storage counts' and the search index's.
        assert_eq!(triggers(&old).len(), 2);
        let plain = |sql: Vec<String>| -> Vec<String> {
            sql.iter()
                .map(|s| s.replace(" IF NOT EXISTS", ""))
                .collect()
        };
        assert_eq!(plain(triggers(&old)), plain(triggers(&new)));
    }

    #[test]
    fn a_newer_schema_version_is_refused() {
        let mut conn = fresh();
        migrate(&mut conn).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
    }
}
