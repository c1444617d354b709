//! The PostgreSQL schema: versioned migrations of its own (`migrations/`), applied at
//! start-up in one transaction under an advisory lock, so that several instances starting
//! at the same moment migrate once: the first applies them, the others wait for its lock
//! and then find the schema up to date.
//!
//! The table `neptun_schema` marks a database as this program's and holds its version.
//! A database without it is set up only when its schema (the first of the search path,
//! `public` by default) has no tables at all: another application's tables are refused,
//! untouched. A newer version than this program knows is refused too.

use tokio_postgres::Client;

use super::{Error, Result};

/// The schema version this program expects.
pub(super) const SCHEMA_VERSION: i32 = 3;

/// The migrations, in order: entry `i` brings version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/001_initial.sql"),
    include_str!("migrations/002_changes.sql"),
    include_str!("migrations/003_search.sql"),
];

/// The key of the advisory lock that migrations take (any constant of this program's).
const MIGRATION_LOCK: i64 = 0x6e65_7074_756e; // "neptun"

/// Brings the database's schema up to date, or refuses a database that is not this
/// program's or is newer.
pub(super) async fn migrate(client: &mut Client) -> Result<()> {
    let tx = client.transaction().await?;
    // Held to the end of the transaction: a second instance waits here until the first
    // has committed its migrations, then sees them.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let version = current_version(&tx).await?;
    if version > SCHEMA_VERSION {
        return Err(Error::Incompatible(format!(
            "the database has schema version {version}, newer than this program's \
             {SCHEMA_VERSION}; run a newer neptun-chat"
        )));
    }
    let first = usize::try_from(version).unwrap_or_default();
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(first) {
        tx.batch_execute(migration).await?;
        let reached = i32::try_from(index + 1).unwrap_or(i32::MAX);
        tx.execute("UPDATE neptun_schema SET version = $1", &[&reached])
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The schema version of the database: 0 for an empty one. An error for one that holds
/// other tables and no `neptun_schema`.
async fn current_version(tx: &tokio_postgres::Transaction<'_>) -> Result<i32> {
    let marked: bool = tx
        .query_one("SELECT to_regclass('neptun_schema') IS NOT NULL", &[])
        .await?
        .try_get(0)?;
    if marked {
        let row = tx
            .query_opt("SELECT version FROM neptun_schema", &[])
            .await?;
        return match row {
            Some(row) => Ok(row.try_get(0)?),
            None => Err(Error::Incompatible(
                "the table neptun_schema is empty: the database was changed by hand".to_owned(),
            )),
        };
    }
    let tables: Vec<String> = tx
        .query(
            "SELECT c.relname FROM pg_class c \
             WHERE c.relnamespace = current_schema()::regnamespace \
             AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY c.relname LIMIT 5",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    if tables.is_empty() {
        return Ok(0);
    }
    Err(Error::Incompatible(format!(
        "the database holds tables of another application ({}), so it is left untouched; \
         give neptun-chat a database of its own",
        tables.join(", ")
    )))
}

/// The schema version of the database, for `/readyz` and `check`.
pub(super) async fn stored_version(client: &Client) -> Result<i32> {
    Ok(client
        .query_one("SELECT version FROM neptun_schema", &[])
        .await?
        .try_get(0)?)
}
