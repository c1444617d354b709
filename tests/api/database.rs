//! The database a test runs against, on the backend its test binary was built for
//! (`crate::BACKEND`): a SQLite file in the test's temporary folder, or a fresh
//! database in the binary's throwaway PostgreSQL cluster. Raw reads and writes for
//! assertions and fault injection go through here in SQL both backends understand,
//! every value coming back as text, as PostgreSQL's simple query protocol gives it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use neptun_chat::db::{Admin, Location};

use crate::postgres_cluster::{self, TestDatabase};

/// The storage backend a test binary runs its tests against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// A SQLite file per test.
    Sqlite,
    /// A database per test in a throwaway PostgreSQL cluster.
    #[allow(dead_code)] // Only the PostgreSQL binary's root names it.
    Postgres,
}

/// One row of a raw query: each value as text, `None` for NULL. Integers are in
/// decimal, blobs (`bytea`) as `\x` and lower-case hex, as PostgreSQL writes them.
pub(crate) type Row = Vec<Option<String>>;

/// A test's database.
pub(crate) enum Database {
    /// The path of a SQLite file (in a folder that the owner of this value keeps).
    Sqlite(PathBuf),
    /// A database of its own in the shared PostgreSQL cluster.
    Postgres(TestDatabase),
}

impl Database {
    /// A fresh database on this binary's backend; a SQLite one is to be made at
    /// `dir/data/neptun.db`, a folder that does not exist yet.
    pub(crate) fn fresh_in(dir: &Path) -> Database {
        match crate::BACKEND {
            Backend::Sqlite => Database::sqlite_in(dir),
            Backend::Postgres => Database::Postgres(postgres_cluster::shared().create_database()),
        }
    }

    /// A SQLite database at `dir/data/neptun.db`, whatever this binary's backend.
    pub(crate) fn sqlite_in(dir: &Path) -> Database {
        Database::Sqlite(dir.join("data").join("neptun.db"))
    }

    /// Which backend this database is on.
    #[allow(dead_code)] // For the PostgreSQL binary's own tests of the harness.
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Database::Sqlite(_) => Backend::Sqlite,
            Database::Postgres(_) => Backend::Postgres,
        }
    }

    /// What `--database` / `NEPTUN_DATABASE` are given: the file's path or the URL.
    pub(crate) fn arg(&self) -> OsString {
        match self {
            Database::Sqlite(path) => path.clone().into_os_string(),
            Database::Postgres(db) => db.url().into(),
        }
    }

    /// The SQLite file. Only for tests about SQLite's files, which only the SQLite
    /// binary runs.
    pub(crate) fn sqlite_path(&self) -> &Path {
        match self {
            Database::Sqlite(path) => path,
            Database::Postgres(db) => panic!(
                "a test about SQLite's files ran on PostgreSQL (database {}); \
                 it belongs in a module only tests/api/main.rs includes",
                db.name()
            ),
        }
    }

    /// Runs `work` with a handle for seeding, as the admin commands use it, on a
    /// thread of its own: [`Admin`] is synchronous (on PostgreSQL it runs a runtime of
    /// its own, which may not be dropped on a test's async worker).
    pub(crate) fn with_admin<T: Send>(&self, work: impl FnOnce(&mut Admin) -> T + Send) -> T {
        let location = self.location();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let mut admin = Admin::open(&location).expect("the database opens");
                    work(&mut admin)
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Where the application is told its database is.
    pub(crate) fn location(&self) -> Location {
        match self {
            Database::Sqlite(path) => Location::Sqlite(path.clone()),
            Database::Postgres(db) => db.url().parse().expect("the cluster's URL parses"),
        }
    }

    /// Whether nothing has made or changed this database yet: no SQLite file, or no
    /// table in the PostgreSQL database.
    pub(crate) fn is_untouched(&self) -> bool {
        match self {
            Database::Sqlite(path) => !path.exists(),
            Database::Postgres(_) => {
                self.integer("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
            }
        }
    }

    /// Runs `sql` (one statement or several, no parameters) and returns the rows of
    /// its results.
    pub(crate) fn rows(&self, sql: &str) -> Vec<Row> {
        match self {
            Database::Sqlite(path) => sqlite_rows(path, sql),
            Database::Postgres(db) => db.query(sql),
        }
    }

    /// Runs `sql` for its effect.
    pub(crate) fn execute(&self, sql: &str) {
        self.rows(sql);
    }

    /// Runs `sqlite` or `postgres` for its effect, whichever is this database's dialect:
    /// for the fault injections (triggers) that the two write differently.
    pub(crate) fn execute_each(&self, sqlite: &str, postgres: &str) {
        match self {
            Database::Sqlite(_) => self.execute(sqlite),
            Database::Postgres(_) => self.execute(postgres),
        }
    }

    /// An SQL expression for timestamp `column` as the API writes timestamps
    /// (`2026-01-02T03:04:05.678Z`): SQLite stores that text, PostgreSQL a `timestamptz`.
    pub(crate) fn timestamp(&self, column: &str) -> String {
        match self {
            Database::Sqlite(_) => column.to_owned(),
            Database::Postgres(_) => {
                format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
            }
        }
    }

    /// An SQL literal for `bytes` (a `BLOB` in SQLite, a `bytea` in PostgreSQL).
    pub(crate) fn blob(&self, bytes: &[u8]) -> String {
        match self {
            Database::Sqlite(_) => format!("x'{}'", hex(bytes)),
            Database::Postgres(_) => format!("'\\x{}'::bytea", hex(bytes)),
        }
    }

    /// The single row `sql` returns.
    pub(crate) fn row(&self, sql: &str) -> Row {
        let mut rows = self.rows(sql);
        assert_eq!(rows.len(), 1, "exactly one row from {sql}: {rows:?}");
        rows.remove(0)
    }

    /// The single value `sql` returns, `None` for NULL.
    pub(crate) fn value(&self, sql: &str) -> Option<String> {
        let mut row = self.row(sql);
        assert_eq!(row.len(), 1, "exactly one column from {sql}: {row:?}");
        row.remove(0)
    }

    /// The single integer `sql` returns.
    pub(crate) fn integer(&self, sql: &str) -> i64 {
        let value = self.value(sql);
        value
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("an integer from {sql}, not {value:?}"))
    }

    /// The number of rows in `table`.
    pub(crate) fn count(&self, table: &str) -> i64 {
        self.integer(&format!("SELECT count(*) FROM {table}"))
    }

    /// A chat's stored messages in id order, as `(id, text, actor)`.
    pub(crate) fn stored_messages(&self, chat_id: i64) -> Vec<(i64, String, String)> {
        self.rows(&format!(
            "SELECT id, message, actor FROM chat_messages \
             WHERE chat_conversation_id = {chat_id} ORDER BY id"
        ))
        .into_iter()
        .map(|row| match row.as_slice() {
            [Some(id), text @ Some(_), Some(actor)] => (
                id.parse().expect("an integer id"),
                self.text(text).expect("a text"),
                actor.clone(),
            ),
            other => panic!("a message row: {other:?}"),
        })
        .collect()
    }

    /// A client's text (a message, a chat's name or model) as read by [`Database::rows`]:
    /// SQLite keeps it as `TEXT`, PostgreSQL as its UTF-8 bytes in a `bytea` (its `text`
    /// cannot hold U+0000), which come back in hex.
    pub(crate) fn text(&self, value: &Option<String>) -> Option<String> {
        match self {
            Database::Sqlite(_) => value.clone(),
            Database::Postgres(_) => value.as_deref().map(|hex| {
                let digits = hex.strip_prefix("\\x").expect("a bytea in hex");
                let bytes = (0..digits.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex digits"))
                    .collect();
                String::from_utf8(bytes).expect("UTF-8 text")
            }),
        }
    }
}

/// `bytes` as a value of a [`Row`]: `\x` and lower-case hex.
pub(crate) fn blob_text(bytes: &[u8]) -> String {
    format!("\\x{}", hex(bytes))
}

/// Lower-case hex digits.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// [`Database::rows`] on a SQLite file.
fn sqlite_rows(path: &Path, sql: &str) -> Vec<Row> {
    use rusqlite::types::ValueRef;

    let conn = rusqlite::Connection::open(path).expect("the database opens");
    // As the application's own connections: foreign keys enforced (PostgreSQL always
    // does), and a wait for a lock the running server holds.
    conn.execute_batch("PRAGMA foreign_keys = ON")
        .expect("foreign keys on");
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .expect("a busy timeout");
    let mut stmt = match conn.prepare(sql) {
        Ok(stmt) => stmt,
        // Several statements: run for their effect, as PostgreSQL would, whose last
        // result the callers never read.
        Err(rusqlite::Error::MultipleStatement) => {
            conn.execute_batch(sql)
                .unwrap_or_else(|err| panic!("{sql}: {err}"));
            return Vec::new();
        }
        Err(err) => panic!("{sql}: {err}"),
    };
    let columns = stmt.column_count();
    let mut result = stmt.raw_query();
    let mut rows = Vec::new();
    while let Some(row) = result.next().unwrap_or_else(|err| panic!("{sql}: {err}")) {
        rows.push(
            (0..columns)
                .map(|i| match row.get_ref(i).expect("a column") {
                    ValueRef::Null => None,
                    ValueRef::Integer(n) => Some(n.to_string()),
                    ValueRef::Real(x) => Some(x.to_string()),
                    ValueRef::Text(text) => Some(String::from_utf8_lossy(text).into_owned()),
                    ValueRef::Blob(bytes) => Some(blob_text(bytes)),
                })
                .collect(),
        );
    }
    rows
}
