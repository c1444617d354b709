//! The schema: `schema.sql` compiled in, applied once to a new database, and the checks
//! that keep this program from touching a file it did not create.

use rusqlite::{Connection, TransactionBehavior};

use super::{Error, Result};

/// The whole schema at its newest version.
const SCHEMA_SQL: &str = include_str!("../../schema.sql");

/// The schema version this binary writes and understands (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// Marks a database file as this program's (`PRAGMA application_id`): "NPTC".
const APPLICATION_ID: i64 = 0x4E50_5443;

/// Brings the database to [`SCHEMA_VERSION`] in one transaction, or refuses it.
///
/// A new, empty file gets the whole schema. A file with another application's mark,
/// an unmarked file that already has tables, or a file from a newer version of this
/// program is refused and left untouched.
pub fn migrate(conn: &mut Connection) -> Result<()> {
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
    if version < SCHEMA_VERSION {
        tx.execute_batch(SCHEMA_SQL)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Connection {
        Connection::open_in_memory().unwrap()
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
        migrate(&mut conn).unwrap();
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
