//! The real binary and SQLite's files: stopping under load checkpoints the WAL into the
//! database file, `backup` (`VACUUM INTO`) while clients write, `check` on a file with a
//! damaged page, refusing files it must not touch (a text file, another application's
//! database, a newer schema, a damaged header, a read-only file), migrating a version 1
//! file, starting quickly on a large file, and the files' permissions. Only the SQLite
//! test binary runs these: PostgreSQL has none of these files.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use neptun_chat::auth::SESSION_COOKIE;
use neptun_chat::auth::SessionToken;
use reqwest::header::{CONTENT_TYPE, COOKIE};
use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};

use crate::durability::{
    Answer, Load, Stored, assert_acknowledged_batches_are_stored,
    assert_batches_are_all_or_nothing, fetch_chat, seeded_db, wait_for_log,
};
use crate::process::{ServerProcess, TempDb, neptun, run, unprivileged};

// ---- database files ------------------------------------------------------------------

/// The schema version the binary writes, read from a fresh database it made.
fn current_schema_version() -> i64 {
    let db = TempDb::sqlite();
    db.create_user("probe");
    user_version(db.path())
}

/// `PRAGMA user_version` of a database. (A read-write connection: a read-only one
/// would leave `-wal` and `-shm` files behind.)
fn user_version(path: &Path) -> i64 {
    Connection::open(path)
        .expect("the database opens")
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("the user version")
}

/// The names of the files in `dir`, sorted.
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("the folder lists")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .into_string()
                .expect("a UTF-8 name")
        })
        .collect();
    names.sort();
    names
}

/// `path` with `suffix` appended: the `-wal` and `-shm` files beside a database.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A chat's messages in id order, read straight from a database file (read-only).
fn read_chat(path: &Path, chat: i64) -> Vec<Stored> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("the database opens read-only");
    conn.prepare(
        "SELECT id, message, actor FROM chat_messages WHERE chat_conversation_id = ?1 ORDER BY id",
    )
    .expect("the query prepares")
    .query_map([chat], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
    .expect("the query runs")
    .collect::<Result<_, _>>()
    .expect("the rows read")
}

/// Adds `count` messages to `chat` in one transaction, straight through SQLite (the
/// repository functions would take far longer for this many).
fn bulk_insert_messages(path: &Path, chat: i64, count: u32) {
    let mut conn = Connection::open(path).expect("the database opens");
    let tx = conn.transaction().expect("a transaction");
    tx.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2) \
         INSERT INTO chat_messages (chat_conversation_id, neptun_user_id, message, actor, created_at) \
         SELECT ?1, 'alice', 'bulk message ' || i || ' ' || substr(hex(randomblob(40)), 1, i % 80), \
                CASE i % 2 WHEN 0 THEN 'user' ELSE 'assistant' END, '2026-01-01T00:00:00.000Z' \
         FROM n",
        rusqlite::params![chat, count],
    )
    .expect("the messages are inserted");
    tx.commit().expect("the insert commits");
}

// ---- graceful shutdown, and the WAL ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_the_requests_in_flight_checkpoints_and_exits_0_within_the_grace_period()
 {
    // Arrange: clients writing; then the test holds the database's write lock, so that
    // every client's next request stays in flight, waiting for the database.
    let grace = Duration::from_secs(5);
    let (db, token, chat) = seeded_db();
    let mut server = db.serve_with_args(&["--shutdown-grace-secs", "5"]);
    let mut load = Load::start(server.messages_url("alice", chat), &token);
    load.wait_for_acks(100).await;
    let blocker = db.connection();
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("the write lock");
    let committed: i64 = blocker
        .query_row("SELECT count(*) FROM chat_messages", [], |r| r.get(0))
        .expect("the committed messages");
    load.wait_until_all_wait_for_the_database(usize::try_from(committed).expect("a count"))
        .await;
    load.stop_sending();

    // Act: SIGTERM while they wait, then let them through.
    let signalled = Instant::now();
    server.signal("TERM");
    wait_for_log(&server, "SIGTERM received");
    blocker
        .execute_batch("ROLLBACK")
        .expect("the lock is released");
    drop(blocker);
    let sent = load.finish().await;
    let status = server.wait_for_exit(grace + Duration::from_secs(2));
    let took = signalled.elapsed();

    // Assert
    assert_eq!(status.code(), Some(0), "exit status:\n{}", server.log());
    assert!(
        took <= grace,
        "exited {took:?} after SIGTERM; the grace is {grace:?}"
    );
    for batch in &sent {
        if let Answer::Refused(status, body) = &batch.answer {
            panic!("only 200s or no answer, not {status}: {body}");
        }
    }
    // A request the server had not yet started on when the signal came may be closed
    // unanswered (actix-http starts no new request once it drains a connection); those
    // waiting inside the server for the database are answered, after the signal.
    let finished_after_sigterm = sent
        .iter()
        .filter(|b| b.stored_ids().is_some() && b.answered_at > signalled)
        .count();
    let unanswered: Vec<&str> = sent
        .iter()
        .filter_map(|b| match &b.answer {
            Answer::Lost(error) => Some(error.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        finished_after_sigterm > 0,
        "requests in flight at SIGTERM were answered 200; unanswered: {unanswered:#?}"
    );
    let wal = beside(db.path(), "-wal");
    let wal_len = fs::metadata(&wal).map_or(0, |meta| meta.len());
    assert_eq!(wal_len, 0, "{} is absent or empty", wal.display());
    let stored = read_chat(db.path(), chat);
    assert_acknowledged_batches_are_stored(&sent, &stored, "after SIGTERM");
    assert_batches_are_all_or_nothing(&sent, &stored, "after SIGTERM");
    let acknowledged: usize = sent
        .iter()
        .filter(|b| b.stored_ids().is_some())
        .map(|b| b.messages.len())
        .sum();
    assert_eq!(
        stored.len(),
        acknowledged,
        "nothing but the answered batches: an unanswered request was never started"
    );
    assert_eq!(db.cli(&["check"]).single_line(), "ok");
}

#[tokio::test]
async fn sigint_stops_an_idle_server_at_once_with_exit_0_and_its_writes_checkpointed_into_the_file()
{
    // Arrange: one acknowledged write, still only in the WAL.
    let (db, token, chat) = seeded_db();
    let grace = Duration::from_secs(30);
    let mut server = db.serve_with_args(&["--shutdown-grace-secs", "30"]);
    let response = server
        .post(
            "alice",
            chat,
            &token,
            json!({"message": "kept", "actor": "user"}).to_string(),
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);
    let wal = beside(db.path(), "-wal");
    assert!(
        fs::metadata(&wal).map_or(0, |meta| meta.len()) > 0,
        "the write is in the WAL"
    );

    // Act
    let signalled = Instant::now();
    server.signal("INT");
    let status = server.wait_for_exit(grace);
    let took = signalled.elapsed();

    // Assert: no waiting for the grace period when nothing is in flight (a third of
    // it is generous for a loaded machine).
    assert_eq!(status.code(), Some(0), "exit status:\n{}", server.log());
    assert!(took < grace / 3, "exited {took:?} after SIGINT");
    assert_eq!(fs::metadata(&wal).map_or(0, |meta| meta.len()), 0);
    let stored: Vec<String> = read_chat(db.path(), chat)
        .into_iter()
        .map(|(_, text, _)| text)
        .collect();
    assert_eq!(stored, ["kept"]);
}

// ---- 3. backup during writes -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_prints_dest_and_makes_a_sound_copy_holding_everything_acknowledged_before_it()
 {
    // Arrange
    let (db, token, chat) = seeded_db();
    let server = db.serve_with_args(&[]);
    let mut load = Load::start(server.messages_url("alice", chat), &token);
    load.wait_for_acks(100).await;
    let backups = db.dir.path().join("backups");
    fs::create_dir(&backups).expect("the backup folder");
    let dest = backups.join("copy.db");

    // Act: back up while the clients keep writing.
    let before_backup = load.acknowledged();
    let outcome = tokio::task::spawn_blocking({
        let (database, dest) = (db.path().to_owned(), dest.clone());
        move || {
            run(neptun()
                .arg("--database")
                .arg(database)
                .arg("backup")
                .arg(dest))
        }
    })
    .await
    .expect("the backup command ran");
    let after_backup = load.acknowledged().len();
    load.wait_for_acks(after_backup + 50).await;
    load.stop_sending();
    let sent = load.finish().await;

    // Assert
    assert_eq!(outcome.single_line(), dest.to_str().expect("a UTF-8 path"));
    assert_eq!(
        file_names(&backups),
        ["copy.db"],
        "no temporary file is left beside the copy"
    );
    let copy = read_chat(&dest, chat);
    assert_acknowledged_batches_are_stored(&before_backup, &copy, "the copy");
    assert_batches_are_all_or_nothing(&sent, &copy, "the copy");
    let integrity: String = Connection::open_with_flags(&dest, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("the copy opens")
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("the integrity check runs");
    assert_eq!(integrity, "ok");
    let check = run(neptun().arg("--database").arg(&dest).arg("check"));
    assert_eq!(check.single_line(), "ok");
    let all_acknowledged = read_chat(db.path(), chat);
    assert_acknowledged_batches_are_stored(&sent, &all_acknowledged, "the live database");
    assert!(
        all_acknowledged.len() > copy.len(),
        "the server kept storing after the backup: {} > {}",
        all_acknowledged.len(),
        copy.len()
    );
}

#[test]
fn backup_over_an_existing_file_replaces_it_with_the_copy() {
    // Arrange
    let (db, _, chat) = seeded_db();
    bulk_insert_messages(db.path(), chat, 10);
    let dest = db.dir.path().join("copy.db");
    fs::write(&dest, "an older backup, to be replaced").expect("the old file");

    // Act
    let outcome = db.cli(&["backup", dest.to_str().expect("a UTF-8 path")]);

    // Assert
    assert_eq!(outcome.single_line(), dest.to_str().expect("a UTF-8 path"));
    assert_eq!(read_chat(&dest, chat), read_chat(db.path(), chat));
    assert_eq!(read_chat(&dest, chat).len(), 10);
    assert_eq!(
        file_names(db.dir.path()),
        ["copy.db", "data"],
        "no temporary file is left beside the copy"
    );
}

#[test]
fn backup_into_a_folder_that_does_not_exist_yet_creates_it() {
    // Arrange
    let (db, _, chat) = seeded_db();
    bulk_insert_messages(db.path(), chat, 3);
    let dest = db
        .dir
        .path()
        .join("backups")
        .join("nightly")
        .join("copy.db");

    // Act
    let outcome = db.cli(&["backup", dest.to_str().expect("a UTF-8 path")]);

    // Assert
    assert_eq!(outcome.single_line(), dest.to_str().expect("a UTF-8 path"));
    assert_eq!(read_chat(&dest, chat), read_chat(db.path(), chat));
    assert_eq!(read_chat(&dest, chat).len(), 3);
}

#[test]
fn backup_of_a_missing_database_fails_clearly_and_creates_no_file() {
    // Arrange
    let db = TempDb::sqlite();
    let dest = db.dir.path().join("copy.db");

    // Act
    let outcome = db.cli(&["backup", dest.to_str().expect("a UTF-8 path")]);

    // Assert
    let error = outcome.clear_error();
    assert!(
        error.contains("no database") && error.contains(db.path().to_str().expect("a UTF-8 path")),
        "{error}"
    );
    assert_eq!(
        file_names(db.dir.path()),
        Vec::<String>::new(),
        "neither the database, its folder nor the copy was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_onto_the_live_database_itself_is_refused_and_loses_no_acknowledged_write() {
    // Arrange: a server with writes in its WAL.
    let (db, token, chat) = seeded_db();
    let mut server = db.serve_with_args(&[]);
    let url = server.messages_url("alice", chat);
    let mut load = Load::start(url.clone(), &token);
    load.wait_for_acks(50).await;
    load.stop_sending();
    let mut sent = load.finish().await;

    // Act: a "backup" whose destination is the database, then more writes and a crash.
    let outcome = db.cli(&["backup", db.path().to_str().expect("a UTF-8 path")]);
    let mut load = Load::start(url, &token);
    load.wait_for_acks(50).await;
    load.stop_sending();
    sent.extend(load.finish().await);
    server.kill();
    let server = db.serve_with_args(&[]);
    let stored = fetch_chat(&server, "alice", chat, &token).await;

    // Assert
    assert_acknowledged_batches_are_stored(&sent, &stored, "after backup onto itself");
    assert_eq!(db.cli(&["check"]).single_line(), "ok");
    let error = outcome.clear_error();
    assert!(error.contains("database"), "{error}");
}

// ---- 4. check --------------------------------------------------------------------------

/// A database with a few thousand messages, and a copy of it with a page of garbage in
/// the middle of the file (not the header): `(db, healthy, corrupted)`.
fn corrupted_copy() -> (TempDb, PathBuf, PathBuf) {
    const PAGE: u64 = 4096;
    let (db, _, chat) = seeded_db();
    bulk_insert_messages(db.path(), chat, 3000);
    assert!(
        !beside(db.path(), "-wal").exists(),
        "the last connection checkpointed everything into the file"
    );
    let corrupted = db.dir.path().join("corrupted.db");
    fs::copy(db.path(), &corrupted).expect("the copy");
    let mut bytes = fs::read(&corrupted).expect("the copy reads");
    let pages = bytes.len() as u64 / PAGE;
    assert!(pages > 50, "a database of {pages} pages");
    // Half a page of noise into the cells of a page in the middle (its header intact),
    // from a fixed seed so every run breaks the same bytes.
    let start = usize::try_from(pages / 2 * PAGE + PAGE / 2).expect("a small offset");
    let mut seed: u32 = 0x2545_F491;
    for byte in &mut bytes[start..start + PAGE as usize / 2] {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *byte = (seed >> 24) as u8;
    }
    fs::write(&corrupted, bytes).expect("the corruption is written");
    let healthy = db.path().to_owned();
    (db, healthy, corrupted)
}

/// The problems SQLite's own `integrity_check` reports for a file.
fn integrity_problems(path: &Path) -> Vec<String> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("the database opens read-only");
    let mut stmt = conn
        .prepare("PRAGMA integrity_check")
        .expect("the check prepares");
    let mut rows = stmt.query([]).expect("the check runs");
    let mut problems = Vec::new();
    // The check may stop with an error on damage it cannot step over, after listing
    // what it found before.
    while let Ok(Some(row)) = rows.next() {
        let line: String = row.get(0).expect("a text row");
        if line != "ok" {
            problems.push(line);
        }
    }
    problems
}

#[test]
fn check_prints_ok_for_a_healthy_database() {
    let (db, _, chat) = seeded_db();
    bulk_insert_messages(db.path(), chat, 3000);

    let outcome = db.cli(&["check"]);

    assert_eq!(outcome.single_line(), "ok");
    assert_eq!(outcome.stderr, "", "nothing on stderr");
}

#[test]
fn check_fails_on_a_page_of_garbage_without_a_panic_and_leaves_the_healthy_original_ok() {
    // Arrange
    let (_db, healthy, corrupted) = corrupted_copy();

    // Act
    let broken = run(neptun().arg("--database").arg(&corrupted).arg("check"));
    let sound = run(neptun().arg("--database").arg(&healthy).arg("check"));

    // Assert
    assert!(!broken.status.success(), "{broken:#?}");
    assert_ne!(broken.status.code(), Some(101), "no panic: {broken:#?}");
    assert!(!broken.stderr.contains("panicked"), "{broken:#?}");
    assert_eq!(broken.stdout, "", "no \"ok\": {broken:#?}");
    let last = broken.stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{broken:#?}");
    assert_eq!(sound.single_line(), "ok");
}

#[test]
fn check_lists_on_stderr_every_problem_sqlite_finds_in_a_corrupted_page() {
    // Arrange
    let (_db, _, corrupted) = corrupted_copy();
    let expected = integrity_problems(&corrupted);
    assert!(!expected.is_empty(), "SQLite sees the damage");

    // Act
    let outcome = run(neptun().arg("--database").arg(&corrupted).arg("check"));

    // Assert
    assert!(!outcome.status.success(), "{outcome:#?}");
    for problem in &expected {
        assert!(
            outcome.stderr.contains(problem.as_str()),
            "stderr lists {problem:?}: {outcome:#?}"
        );
    }
    let last = outcome.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: the database has ") && last.ends_with(" problem(s)"),
        "{outcome:#?}"
    );
}

#[test]
fn check_refuses_a_missing_database_without_creating_it() {
    let db = TempDb::sqlite();

    let outcome = db.cli(&["check"]);

    let error = outcome.clear_error();
    assert!(
        error.contains("no database") && error.contains(db.path().to_str().expect("a UTF-8 path")),
        "{error}"
    );
    assert!(!db.path().exists(), "the database was not created");
    assert!(
        !db.path().parent().expect("a parent").exists(),
        "nor its folder"
    );
}

// ---- 5. start-up refusals --------------------------------------------------------------

/// Each way of spoiling the file at `db.path()`, with what the error must say.
type Spoil = fn(&TempDb);

fn a_text_file(db: &TempDb) {
    fs::create_dir_all(db.path().parent().expect("a parent")).expect("the folder");
    fs::write(db.path(), "my notes, not a database\n".repeat(200)).expect("the file");
}

fn another_applications_database(db: &TempDb) {
    fs::create_dir_all(db.path().parent().expect("a parent")).expect("the folder");
    db.connection()
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me');")
        .expect("a foreign database");
}

fn a_database_of_a_newer_version(db: &TempDb) {
    db.create_user("alice");
    let newer = current_schema_version() + 1;
    db.connection()
        .pragma_update(None, "user_version", newer)
        .expect("the version is raised");
    assert_eq!(user_version(db.path()), newer);
}

fn a_database_with_a_damaged_header(db: &TempDb) {
    db.create_user("alice");
    let mut bytes = fs::read(db.path()).expect("the file reads");
    assert_eq!(&bytes[..16], b"SQLite format 3\0");
    bytes[..16].copy_from_slice(b"SQLite format 9\0");
    fs::write(db.path(), bytes).expect("the header is damaged");
}

#[test]
fn the_server_refuses_files_it_must_not_use_with_one_error_line_leaving_them_byte_for_byte_unchanged()
 {
    let cases: [(Spoil, &str, &str); 4] = [
        (a_text_file, "a text file", "file is not a database"),
        (
            another_applications_database,
            "another application's SQLite database",
            "another application",
        ),
        (
            a_database_of_a_newer_version,
            "a neptun database of a newer version",
            "newer",
        ),
        (
            a_database_with_a_damaged_header,
            "a neptun database with a damaged header",
            "file is not a database",
        ),
    ];

    for (spoil, case, expected) in cases {
        // Arrange
        let db = TempDb::sqlite();
        spoil(&db);
        let before = fs::read(db.path()).expect("the file reads");
        let folder = db.path().parent().expect("a parent");
        assert_eq!(file_names(folder), ["neptun.db"], "{case}: a lone file");

        for args in [
            &["serve", "--bind", "127.0.0.1:0"][..],
            &["user", "create", "bob"][..],
        ] {
            // Act
            let outcome = db.cli(args);

            // Assert
            let error = outcome.clear_error();
            assert!(error.contains(expected), "{case}, {args:?}: {error}");
            assert!(
                error.contains(db.path().to_str().expect("a UTF-8 path")),
                "{case}, {args:?} names the file: {error}"
            );
            assert!(
                fs::read(db.path()).expect("the file reads") == before,
                "{case}, {args:?}: the file is byte-for-byte unchanged"
            );
            assert_eq!(
                file_names(folder),
                ["neptun.db"],
                "{case}, {args:?}: no journal, -wal or -shm file is left beside it"
            );
        }
    }
}

// ---- 6. migration ----------------------------------------------------------------------

#[tokio::test]
async fn the_server_migrates_a_version_1_database_keeping_its_messages_and_sessions() {
    // Arrange: a database as the first release made it, with a message and a session.
    let db = TempDb::sqlite();
    fs::create_dir_all(db.path().parent().expect("a parent")).expect("the folder");
    let token = SessionToken::generate().expect("a token");
    {
        let conn = db.connection();
        conn.execute_batch(include_str!("../fixtures/schema_v1.sql"))
            .expect("the version 1 schema");
        conn.pragma_update(None, "application_id", 0x4E50_5443)
            .expect("the mark");
        conn.pragma_update(None, "user_version", 1)
            .expect("the version");
        conn.execute_batch(
            "INSERT INTO users (id, created_at) VALUES ('alice', '2026-01-01T00:00:00.000Z');
             INSERT INTO chat_conversations (neptun_user_id, name, model, created_at, updated_at)
                 VALUES ('alice', 'Old chat', 'm', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z');
             INSERT INTO chat_messages (chat_conversation_id, neptun_user_id, message, actor, created_at)
                 VALUES (1, 'alice', 'written by version 1 «ü»', 'assistant', '2026-01-01T00:00:01.000Z');",
        )
        .expect("the old rows");
        conn.execute(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) \
             VALUES (?1, 'alice', '2026-01-01T00:00:00.000Z', '2999-01-01T00:00:00.000Z')",
            [&token.hash()[..]],
        )
        .expect("the old session");
    }
    let current = current_schema_version();
    assert!(current > 1, "the binary is past version 1: {current}");

    // Act: the server is the first to open it.
    let server = db.serve_with_args(&[]);
    let old = reqwest::Client::new()
        .get(server.messages_url("alice", 1))
        .header(COOKIE, format!("{SESSION_COOKIE}={}", token.expose()))
        .send()
        .await
        .expect("the chat is read");
    let retry = |http: reqwest::Client| {
        http.post(server.messages_url("alice", 1))
            .header(COOKIE, format!("{SESSION_COOKIE}={}", token.expose()))
            .header(CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", "after-the-migration")
            .body(json!({"message": "new", "actor": "user"}).to_string())
            .send()
    };
    let first = retry(reqwest::Client::new()).await.expect("the first post");
    let again = retry(reqwest::Client::new()).await.expect("the retry");

    // Assert
    assert_eq!(old.status().as_u16(), 200);
    let page: Value = old.json().await.expect("a JSON page");
    assert_eq!(
        page,
        json!({"chatMessages": [{
            "id": 1,
            "chat_conversation_id": 1,
            "neptun_user_id": "alice",
            "message": "written by version 1 «ü»",
            "actor": "assistant",
            "created_at": "2026-01-01T00:00:01.000Z",
        }], "next": null})
    );
    assert_eq!(
        first.status().as_u16(),
        200,
        "the migrated schema takes writes"
    );
    let first: Value = first.json().await.expect("JSON");
    let again: Value = again.json().await.expect("JSON");
    assert_eq!(first["chatMessage"]["id"], 2);
    assert_eq!(
        again, first,
        "the idempotency table from the migration is used"
    );
    assert_eq!(db.count("chat_messages"), 2);
    assert_eq!(user_version(db.path()), current);
    assert!(
        server
            .log()
            .contains("migrating the database from schema version 1 to 2"),
        "{}",
        server.log()
    );
    assert_eq!(db.cli(&["check"]).single_line(), "ok");
}

// ---- 8. start-up on a large database ---------------------------------------------------

#[test]
fn the_server_answers_healthz_on_a_database_of_200k_messages_about_as_soon_as_on_an_empty_one() {
    // Arrange: the baseline is the same start-up, on this machine, now, on an empty
    // database (a loaded machine slows both).
    let empty = TempDb::sqlite();
    let spawned = Instant::now();
    drop(empty.serve_with_args(&[]));
    let baseline = spawned.elapsed();
    let (db, _, chat) = seeded_db();
    bulk_insert_messages(db.path(), chat, 200_000);
    assert_eq!(db.count("chat_messages"), 200_000);

    // Act: start-up includes polling /healthz until it answers.
    let spawned = Instant::now();
    let server = db.serve_with_args(&[]);
    let took = spawned.elapsed();

    // Assert: nothing at start-up reads the messages (a full integrity check, a count).
    let bound = baseline * 4 + Duration::from_secs(1);
    assert!(
        took < bound,
        "healthy {took:?} after the spawn, {baseline:?} on an empty database:\n{}",
        server.log()
    );
}

// ---- 9. files of the database ------------------------------------------------------------

/// The permission bits of a file or folder.
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

#[tokio::test]
async fn the_database_its_wal_and_shm_and_backups_are_readable_by_their_owner_only() {
    // Arrange: a server that creates its folder and database.
    let db = TempDb::sqlite();
    let server = db.serve(&[]);

    // Act
    let backup = db
        .dir
        .path()
        .join("backups")
        .join("daily")
        .join("neptun.db");
    let printed = db
        .cli(&["backup", backup.to_str().expect("a UTF-8 path")])
        .single_line()
        .to_owned();

    // Assert
    assert_eq!(printed, backup.display().to_string());
    let folder = db.path().parent().expect("the data folder");
    let mut modes = vec![(folder.to_path_buf(), mode(folder))];
    for file in [
        db.path().to_owned(),
        beside(db.path(), "-wal"),
        beside(db.path(), "-shm"),
    ] {
        modes.push((file.clone(), mode(&file)));
    }
    for folder in [
        backup.parent().unwrap(),
        backup.parent().unwrap().parent().unwrap(),
    ] {
        modes.push((folder.to_path_buf(), mode(folder)));
    }
    modes.push((backup.clone(), mode(&backup)));
    let expected: Vec<(PathBuf, u32)> = modes
        .iter()
        .map(|(path, _)| (path.clone(), if path.is_dir() { 0o700 } else { 0o600 }))
        .collect();
    assert_eq!(modes, expected, "{}", server.log());
}

#[test]
fn a_database_the_server_cannot_write_is_refused_at_start_up_and_left_unchanged() {
    // Arrange: a database made read-only after it was made. (As root, the server runs
    // as nobody: root writes a 0444 file all the same.)
    let (db, _, _) = seeded_db();
    set_mode(db.path(), 0o444);
    let before = fs::read(db.path()).expect("the database");

    // Act
    let outcome = run(unprivileged(&mut neptun(), db.dir.path())
        .arg("--database")
        .arg(db.path())
        .args(["serve", "--bind", "127.0.0.1:0"]));

    // Assert: an error at once, rather than a server whose writes all fail.
    assert_eq!(
        outcome.clear_error(),
        format!(
            "error: cannot write the database {}: the file is read-only (for this user)",
            db.path().display()
        )
    );
    assert_eq!(fs::read(db.path()).expect("the database"), before);
    assert_eq!(file_names(db.path().parent().unwrap()), ["neptun.db"]);
}

#[test]
fn start_up_errors_about_the_database_file_say_the_reason_once_in_words() {
    let db = TempDb::sqlite();
    let root = db.dir.path();
    let locked = root.join("locked");
    fs::create_dir(&locked).expect("a folder");
    let read_only_folder = root.join("read-only-folder");
    let kept_in_read_only_folder = read_only_folder.join("neptun.db");
    let outcome = run(neptun()
        .arg("--database")
        .arg(&kept_in_read_only_folder)
        .args(["user", "create", "alice"]));
    assert!(outcome.status.success(), "{outcome:#?}");
    set_mode(&read_only_folder, 0o555);
    set_mode(&locked, 0o555);
    let plain = root.join("plain");
    fs::write(&plain, "x").expect("a file");
    let new_in_locked = locked.join("neptun.db");
    let below_locked = locked.join("sub").join("neptun.db");
    let below_a_file = plain.join("sub").join("neptun.db");
    let cases = [
        (
            &new_in_locked,
            format!(
                "cannot create the database {}: the folder is not writable",
                new_in_locked.display()
            ),
        ),
        (
            &below_locked,
            format!(
                "cannot create the folder {} for the database {}: a folder above it is not writable",
                below_locked.parent().unwrap().display(),
                below_locked.display()
            ),
        ),
        (
            &kept_in_read_only_folder,
            format!(
                "cannot write the database {}: the folder is not writable, and SQLite keeps its -wal and -shm files in it",
                kept_in_read_only_folder.display()
            ),
        ),
        (
            &below_a_file,
            format!(
                "cannot create the folder {} for the database {}: a part of the path is a file, not a folder",
                below_a_file.parent().unwrap().display(),
                below_a_file.display()
            ),
        ),
    ];

    for (database, expected) in cases {
        for command in [
            &["serve", "--bind", "127.0.0.1:0"][..],
            &["user", "create", "bob"],
        ] {
            // Act
            let outcome = run(unprivileged(&mut neptun(), root)
                .arg("--database")
                .arg(database)
                .args(command));

            // Assert
            assert_eq!(
                outcome.clear_error(),
                format!("error: {expected}"),
                "{command:?}"
            );
        }
    }
    assert!(!new_in_locked.exists() && !below_locked.parent().unwrap().exists());
    // Without root, the temporary folder could not be removed otherwise.
    set_mode(&read_only_folder, 0o700);
    set_mode(&locked, 0o700);
}

#[test]
fn running_without_arguments_serves_the_default_database_on_the_bind_address_from_the_environment()
{
    // Arrange
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut command = neptun();
    command
        .current_dir(dir.path())
        .env("NEPTUN_BIND", "127.0.0.1:0");

    // Act: the healthcheck finds the port the server reported through NEPTUN_BIND.
    let server = ServerProcess::start(command, dir.path());
    let check = run(neptun()
        .current_dir(dir.path())
        .env("NEPTUN_BIND", format!("127.0.0.1:{}", server.port()))
        .arg("healthcheck"));

    // Assert
    assert!(
        check.status.success(),
        "healthcheck via NEPTUN_BIND: {check:#?}"
    );
    assert_eq!(check.stdout, "");
    assert!(
        dir.path().join("data").join("neptun.db").is_file(),
        "the default database data/neptun.db was created:\n{}",
        server.log()
    );
}

#[test]
fn serving_a_plain_text_file_as_the_database_fails_clearly_and_leaves_it_untouched() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let text = dir.path().join("notes.txt");
    let content = "these are my notes, not a database\n".repeat(100);
    fs::write(&text, &content).expect("the text file is written");
    let path = text.to_str().expect("a UTF-8 path");

    for args in [
        &["serve", "--bind", "127.0.0.1:0"][..],
        &["user", "create", "alice"][..],
    ] {
        let outcome = run(neptun()
            .current_dir(dir.path())
            .args(["--database", path])
            .args(args));

        let error = outcome.clear_error();
        assert!(error.contains("database"), "{args:?}: {error}");
        assert!(error.contains(path), "{args:?} names the file: {error}");
    }
    assert_eq!(
        fs::read_to_string(&text).expect("the file is still there"),
        content
    );
    let names: Vec<_> = fs::read_dir(dir.path())
        .expect("the folder lists")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert_eq!(
        names,
        ["notes.txt"],
        "no -wal or -shm files were left beside it"
    );
}

#[test]
fn a_database_under_a_regular_file_fails_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = dir.path().join("plain");
    fs::write(&file, "x").expect("the file is written");
    let database = file.join("sub").join("neptun.db");
    let path = database.to_str().expect("a UTF-8 path");

    for args in [
        &["serve", "--bind", "127.0.0.1:0"][..],
        &["user", "create", "alice"][..],
    ] {
        let outcome = run(neptun()
            .current_dir(dir.path())
            .args(["--database", path])
            .args(args));

        let error = outcome.clear_error();
        assert!(error.contains("database"), "{args:?}: {error}");
        assert!(error.contains(path), "{args:?} names the path: {error}");
    }
}

#[test]
fn a_database_of_another_application_is_refused_and_left_untouched() {
    let db = TempDb::new();
    fs::create_dir_all(db.path().parent().expect("a parent")).expect("the folder");
    db.connection()
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me');")
        .expect("a foreign database");

    for args in [
        &["serve", "--bind", "127.0.0.1:0"][..],
        &["user", "create", "alice"][..],
    ] {
        let outcome = db.cli(args);

        let error = outcome.clear_error();
        assert!(error.contains("another application"), "{args:?}: {error}");
    }
    let tables: Vec<String> = db
        .connection()
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")
        .expect("query prepares")
        .query_map([], |r| r.get(0))
        .expect("query runs")
        .collect::<Result<_, _>>()
        .expect("rows read");
    assert_eq!(tables, ["notes"]);
    assert_eq!(db.count("notes"), 1);
}

#[test]
fn a_database_of_another_application_is_left_byte_for_byte_unchanged() {
    let db = TempDb::new();
    fs::create_dir_all(db.path().parent().expect("a parent")).expect("the folder");
    db.connection()
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me');")
        .expect("a foreign database");
    let before = fs::read(db.path()).expect("the file reads");

    db.cli(&["user", "create", "alice"]).clear_error();

    assert!(
        fs::read(db.path()).expect("the file reads") == before,
        "the file changed"
    );
    let mode: String = db
        .connection()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("the journal mode");
    assert_eq!(mode, "delete", "the journal mode is still the default");
}

#[test]
fn neptun_database_from_the_environment_is_used_and_its_missing_folders_are_created() {
    // Arrange
    let dir = tempfile::tempdir().expect("a temporary folder");
    let database = dir.path().join("deep").join("er").join("env.db");

    // Act
    let outcome = run(neptun()
        .current_dir(dir.path())
        .env("NEPTUN_DATABASE", &database)
        .args(["user", "create", "alice"]));

    // Assert
    assert_eq!(outcome.single_line(), "alice");
    assert!(database.is_file(), "{} was created", database.display());
    assert!(
        !dir.path().join("data").exists(),
        "the default path was not used"
    );
    let id: String = rusqlite::Connection::open(&database)
        .expect("the database opens")
        .query_row("SELECT id FROM users", [], |r| r.get(0))
        .expect("one user");
    assert_eq!(id, "alice");
}

#[test]
fn without_a_database_option_the_default_is_data_neptun_db_in_the_working_folder() {
    let dir = tempfile::tempdir().expect("a temporary folder");

    let outcome = run(neptun()
        .current_dir(dir.path())
        .args(["user", "create", "alice"]));

    assert_eq!(outcome.single_line(), "alice");
    assert!(dir.path().join("data").join("neptun.db").is_file());
}

// ---- space ---------------------------------------------------------------------------

/// `PRAGMA page_count` and `PRAGMA freelist_count` of a database.
fn pages(path: &Path) -> (i64, i64) {
    let conn = Connection::open(path).expect("the database opens");
    let count = |pragma| {
        conn.pragma_query_value(None, pragma, |r| r.get(0))
            .expect("a page count")
    };
    (count("page_count"), count("freelist_count"))
}

#[tokio::test]
async fn the_server_gives_the_space_of_a_deleted_chat_back_to_the_file_system() {
    // Arrange: about 4 MB of messages in one chat.
    let app = crate::helpers::spawn_app().await;
    let user = app.seed_user("ada");
    let text = "x".repeat(2000);
    let batch: Vec<Value> = (0..100)
        .map(|_| json!({"content": text, "role": "user"}))
        .collect();
    for _ in 0..20 {
        let stored = app
            .post_messages(&user, &json!({ "messages": batch }))
            .await;
        assert_eq!(stored.status(), 200);
    }
    let (full, _) = pages(app.db_path());

    // Act
    let deleted = app
        .delete(
            &format!("/api/users/ada/chats/{}", user.chat_id),
            Some(&user.token),
            None,
        )
        .await;

    // Assert: the pages come back without a restart or a compact.
    assert_eq!(deleted.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (now, free) = pages(app.db_path());
        if free == 0 && now < full / 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {now} pages ({free} free) of {full}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn compact_shrinks_an_older_file_and_switches_it_to_incremental_vacuum() {
    // Arrange: a file made before incremental auto-vacuum, with the space of deleted
    // messages in it.
    let db = TempDb::sqlite();
    db.create_user("ada");
    let chat = db.create_chat("ada");
    {
        let conn = db.connection();
        conn.execute_batch("PRAGMA auto_vacuum = NONE; VACUUM;")
            .unwrap();
        let text = "y".repeat(4000);
        for _ in 0..1000 {
            conn.execute(
                "INSERT INTO chat_messages (chat_conversation_id, neptun_user_id, message, actor, created_at) \
                 VALUES (?1, 'ada', ?2, 'user', '2026-01-01T00:00:00.000Z')",
                rusqlite::params![chat, text],
            )
            .unwrap();
        }
        conn.execute("DELETE FROM chat_messages", []).unwrap();
        let mode: i64 = conn
            .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, 0, "the older kind of file");
    }
    let before = fs::metadata(db.path()).unwrap().len();

    // Act
    let (said_before, said_after) = db.compact();

    // Assert
    assert!(
        said_before >= before / 2,
        "{said_before} said, file {before}"
    );
    assert!(
        said_after * 10 < said_before,
        "{said_before} -> {said_after}"
    );
    assert!(fs::metadata(db.path()).unwrap().len() * 10 < before);
    let conn = db.connection();
    let mode: i64 = conn
        .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, 2, "incremental from now on");
    assert_eq!(db.cli(&["check"]).single_line(), "ok");
}
