//! The throwaway PostgreSQL cluster itself: each test gets an empty database of its own
//! on one shared server, reachable on its Unix socket only; a dropped database is gone;
//! and a private cluster stops and starts again on its data.

use crate::database::{Backend, Database};
use crate::postgres_cluster::{self, Cluster};

#[test]
fn two_fresh_databases_are_separate_empty_databases_on_one_socket_only_server() {
    // Arrange
    let cluster = postgres_cluster::shared();
    let dir = tempfile::tempdir().unwrap();

    // Act
    let first = Database::fresh_in(dir.path());
    let second = Database::fresh_in(dir.path());

    // Assert: PostgreSQL, two names, nothing in either, and no TCP listener.
    assert_eq!(first.backend(), Backend::Postgres);
    let name = |db: &Database| db.value("SELECT current_database()").unwrap();
    assert_ne!(name(&first), name(&second));
    first.execute("CREATE TABLE only_here (id bigint)");
    let tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'";
    assert_eq!(first.integer(tables), 1);
    assert_eq!(second.integer(tables), 0);
    assert_eq!(
        first.value("SHOW listen_addresses").as_deref(),
        Some(""),
        "socket only"
    );
    let url = first.arg().into_string().unwrap();
    assert!(
        url.starts_with("postgresql:///t_")
            && url.ends_with(&format!(
                "?host={}&user=postgres",
                cluster.socket_dir().display()
            )),
        "{url}"
    );
    assert!(
        cluster.socket_dir().join(".s.PGSQL.5432").exists(),
        "the socket is in the cluster's folder"
    );
}

#[test]
fn a_dropped_database_is_removed_from_the_cluster() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let db = Database::fresh_in(dir.path());
    let name = db.value("SELECT current_database()").unwrap();
    let exists = format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'");
    let other = Database::fresh_in(dir.path());
    assert_eq!(other.integer(&exists), 1);

    // Act
    drop(db);

    // Assert
    assert_eq!(other.integer(&exists), 0);
}

#[test]
fn raw_values_read_the_same_as_on_sqlite() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let db = Database::fresh_in(dir.path());

    // Act
    let row = db.row("SELECT 42::bigint, NULL, 'text', '\\x01ff'::bytea");

    // Assert: the text forms the SQLite side writes too.
    assert_eq!(
        row,
        [
            Some("42".to_owned()),
            None,
            Some("text".to_owned()),
            Some("\\x01ff".to_owned())
        ]
    );
}

#[test]
fn a_private_cluster_keeps_its_data_across_a_stop_and_a_start_and_is_removed_when_dropped() {
    // Arrange
    postgres_cluster::shared();
    let cluster = Cluster::start().unwrap_or_else(|err| panic!("{err}"));
    cluster
        .simple_query(
            "postgres",
            "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('x')",
        )
        .unwrap();
    let folder = cluster.socket_dir().to_owned();

    // Act
    cluster.stop();
    let while_stopped = cluster.simple_query("postgres", "SELECT 1");
    cluster.restart();
    let kept = cluster
        .simple_query("postgres", "SELECT v FROM kept")
        .unwrap();
    drop(cluster);

    // Assert
    assert!(while_stopped.is_err(), "no server while stopped");
    assert_eq!(kept, [[Some("x".to_owned())]]);
    assert!(!folder.exists(), "{} is removed", folder.display());
}

/// Runs this test binary again on one harness test, with PostgreSQL's programs looked
/// for where there are none, and `NEPTUN_TEST_POSTGRES` as given.
fn run_without_postgres(required: Option<&str>) -> std::process::Output {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "harness::raw_values_read_the_same_as_on_sqlite",
            "--test-threads",
            "1",
        ])
        .env("PG_BIN", "/nonexistent/postgresql/bin")
        .env_remove(postgres_cluster::REQUIRED_VARIABLE);
    if let Some(value) = required {
        command.env(postgres_cluster::REQUIRED_VARIABLE, value);
    }
    command.output().unwrap()
}

#[test]
fn without_postgres_the_tests_pass_with_a_banner_unless_postgres_is_required() {
    // Act
    let skipped = run_without_postgres(None);
    let required = run_without_postgres(Some("required"));

    // Assert
    let stderr = String::from_utf8_lossy(&skipped.stderr);
    assert!(skipped.status.success(), "{skipped:#?}");
    assert!(
        stderr.contains(
            "PostgreSQL not available: ran SQLite only: PG_BIN=/nonexistent/postgresql/bin has no initdb"
        ),
        "{stderr}"
    );
    assert!(!required.status.success(), "{required:#?}");
    let stdout = String::from_utf8_lossy(&required.stdout);
    assert!(stdout.contains("1 failed"), "{stdout}");
    assert!(
        stdout.contains("PostgreSQL is required (NEPTUN_TEST_POSTGRES=required) but PG_BIN="),
        "{stdout}"
    );
}
