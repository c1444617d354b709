//! Benchmark baseline (b): the storage ceiling. Inserts the same `chat_messages` rows
//! the service stores, straight through rusqlite on one connection, with no HTTP, no
//! JSON and no threads, and prints rows per second as one JSON object per line.
//!
//! It is a bench-only example, not part of the product. The database is a fresh file
//! in a temporary folder with the service's `schema.sql`, in WAL mode with foreign keys
//! on, at `synchronous=NORMAL` and `FULL` — the pragmas the service sets. Cases:
//! - `rows_per_tx` 1, 10 and 100: that many inserts in one IMMEDIATE transaction;
//! - `request`: one request's work — the session lookup, then in one transaction the
//!   chat ownership check, one insert and the chat's `updated_at` — as the service does
//!   it for a single message without group commit;
//! - `group64`: 64 requests' work, each in its own savepoint, committed together: what
//!   group commit can reach at most with 64 writers waiting.
//!
//! Each case runs for `--seconds` on its own fresh database. `bench/run.sh` runs it and
//! reports W3 against the 100-rows-per-transaction figure at the same sync level.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use neptun_chat::domain::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;

/// The service's schema, applied as it is to each fresh database.
const SCHEMA_SQL: &str = include_str!("../schema.sql");

/// The owner of the chat every row goes to.
const USER: &str = "bench";

/// The hash of the session every `request` case looks up.
const TOKEN_HASH: [u8; 32] = [7; 32];

/// Times raw SQLite inserts of chat messages; prints one JSON line per case.
#[derive(Debug, Parser)]
#[command(name = "bench_sqlite")]
struct Args {
    /// How long each case runs.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Which `synchronous` levels to measure.
    #[arg(long, value_enum, num_args = 1.., default_values_t = [Sync::Normal, Sync::Full])]
    sync: Vec<Sync>,
    /// The text of every message (the HTTP workloads send the same).
    #[arg(
        long,
        default_value = "Benchmark message: the quick brown fox jumps over the lazy dog while the chat store appends it to a conversation."
    )]
    text: String,
    /// A folder for the temporary databases (default: the system's temporary folder).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

/// SQLite's `synchronous` level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Sync {
    Normal,
    Full,
}

impl Sync {
    fn name(self) -> &'static str {
        match self {
            Sync::Normal => "normal",
            Sync::Full => "full",
        }
    }
}

/// What one case does per transaction.
#[derive(Debug, Clone, Copy)]
enum Case {
    RowsPerTx(usize),
    Request,
    Group(usize),
}

impl Case {
    fn name(self) -> String {
        match self {
            Case::RowsPerTx(n) => format!("rows_per_tx_{n}"),
            Case::Request => "request".to_owned(),
            Case::Group(n) => format!("group{n}"),
        }
    }

    /// How many rows one transaction stores.
    fn rows(self) -> usize {
        match self {
            Case::RowsPerTx(n) | Case::Group(n) => n,
            Case::Request => 1,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cases = [
        Case::RowsPerTx(1),
        Case::RowsPerTx(10),
        Case::RowsPerTx(100),
        Case::Request,
        Case::Group(64),
    ];
    let duration = Duration::from_secs_f64(args.seconds);
    for &sync in &args.sync {
        for case in cases {
            let dir = match &args.dir {
                Some(dir) => tempfile::tempdir_in(dir),
                None => tempfile::tempdir(),
            }
            .context("cannot create a temporary folder")?;
            let (chat_id, conn) = fresh_database(&dir.path().join("bench.db"), sync)?;
            let (transactions, elapsed) = run_case(&conn, case, chat_id, &args.text, duration)?;
            let rows = transactions * case.rows();
            let seconds = elapsed.as_secs_f64();
            println!(
                "{}",
                json!({
                    "kind": "sqlite",
                    "sync": sync.name(),
                    "case": case.name(),
                    "rows_per_tx": case.rows(),
                    "transactions": transactions,
                    "rows": rows,
                    "seconds": seconds,
                    "rows_per_sec": rows as f64 / seconds,
                    "tx_per_sec": transactions as f64 / seconds,
                })
            );
        }
    }
    Ok(())
}

/// A new database at `path` with the schema, one user, their session and one chat, on
/// a connection set up as the service sets up its writer.
fn fresh_database(path: &Path, sync: Sync) -> anyhow::Result<(i64, Connection)> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "synchronous", sync.name())?;
    conn.execute_batch(SCHEMA_SQL)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
        row.get::<_, String>(0)
    })?;
    let now = Timestamp::now();
    conn.execute(
        "INSERT INTO users (id, created_at) VALUES (?1, ?2)",
        params![USER, now.as_str()],
    )?;
    conn.execute(
        "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) \
         VALUES (?1, ?2, ?3, '9999-12-31T00:00:00.000Z')",
        params![&TOKEN_HASH[..], USER, now.as_str()],
    )?;
    conn.execute(
        "INSERT INTO chat_conversations (neptun_user_id, name, model, created_at, updated_at) \
         VALUES (?1, 'bench', 'bench', ?2, ?2)",
        params![USER, now.as_str()],
    )?;
    Ok((conn.last_insert_rowid(), conn))
}

/// Runs `case` in a loop for `duration`; how many transactions committed, in how long.
fn run_case(
    conn: &Connection,
    case: Case,
    chat_id: i64,
    text: &str,
    duration: Duration,
) -> anyhow::Result<(usize, Duration)> {
    let started = Instant::now();
    let mut transactions = 0;
    while started.elapsed() < duration {
        match case {
            Case::RowsPerTx(n) => {
                let now = Timestamp::now();
                conn.execute_batch("BEGIN IMMEDIATE")?;
                for _ in 0..n {
                    insert_message(conn, chat_id, text, &now)?;
                }
                conn.execute_batch("COMMIT")?;
            }
            Case::Request => {
                let now = Timestamp::now();
                find_session_user(conn, &now)?;
                conn.execute_batch("BEGIN IMMEDIATE")?;
                request_work(conn, chat_id, text, &now)?;
                conn.execute_batch("COMMIT")?;
            }
            Case::Group(n) => {
                let now = Timestamp::now();
                for _ in 0..n {
                    find_session_user(conn, &now)?;
                }
                conn.execute_batch("BEGIN IMMEDIATE")?;
                for _ in 0..n {
                    conn.execute_batch("SAVEPOINT job")?;
                    request_work(conn, chat_id, text, &now)?;
                    conn.execute_batch("RELEASE job")?;
                }
                conn.execute_batch("COMMIT")?;
            }
        }
        transactions += 1;
    }
    Ok((transactions, started.elapsed()))
}

/// The session lookup every authenticated request makes.
fn find_session_user(conn: &Connection, now: &Timestamp) -> anyhow::Result<()> {
    conn.prepare_cached("SELECT user_id FROM sessions WHERE token_hash = ?1 AND expires_at > ?2")?
        .query_row(params![&TOKEN_HASH[..], now.as_str()], |row| {
            row.get::<_, String>(0)
        })
        .optional()?
        .context("the session is missing")?;
    Ok(())
}

/// What the writer does for one single-message request: the ownership check, the
/// insert and the chat's `updated_at`.
fn request_work(
    conn: &Connection,
    chat_id: i64,
    text: &str,
    now: &Timestamp,
) -> anyhow::Result<()> {
    conn.prepare_cached("SELECT 1 FROM chat_conversations WHERE id = ?1 AND neptun_user_id = ?2")?
        .query_row(params![chat_id, USER], |_| Ok(()))
        .optional()?
        .context("the chat is missing")?;
    insert_message(conn, chat_id, text, now)?;
    conn.prepare_cached("UPDATE chat_conversations SET updated_at = ?2 WHERE id = ?1")?
        .execute(params![chat_id, now.as_str()])?;
    Ok(())
}

fn insert_message(
    conn: &Connection,
    chat_id: i64,
    text: &str,
    now: &Timestamp,
) -> anyhow::Result<()> {
    conn.prepare_cached(
        "INSERT INTO chat_messages (chat_conversation_id, neptun_user_id, message, actor, created_at) \
         VALUES (?1, ?2, ?3, 'user', ?4)",
    )?
    .execute(params![chat_id, USER, text, now.as_str()])?;
    Ok(())
}
