//! A throwaway PostgreSQL cluster for the tests: `initdb` into a temporary folder (as the
//! `postgres` user when the tests run as root), served on a Unix socket in that folder
//! only (no TCP port to collide with anything), and a fresh database per test.
//!
//! One cluster per test binary is started lazily by [`shared`]; a test that must stop or
//! restart PostgreSQL starts a private one with [`Cluster::start`]. Every cluster is
//! stopped (`pg_ctl stop -m immediate`) and its folder removed by a small watchdog
//! process that waits for its standard input to close: when the [`Cluster`] is dropped,
//! or when the test process exits in any way, even killed, since the kernel closes the
//! pipe then. No `atexit` handler (which would need `unsafe`) is involved.
//!
//! The binaries come from `PG_BIN` if set, else from the newest
//! `/usr/lib/postgresql/<version>/bin`. The cluster runs with `fsync=off`: the tests
//! kill and restart processes, never the machine, so what PostgreSQL has written to the
//! kernel survives them all the same; `synchronous_commit` keeps its default, so that
//! what the application asks for is what it gets.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The environment variable that makes PostgreSQL mandatory: set to `required`, a
/// cluster that cannot start fails the tests instead of skipping them.
pub(crate) const REQUIRED_VARIABLE: &str = "NEPTUN_TEST_POSTGRES";

/// How long `pg_ctl` may take to start or stop the server.
const PG_CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// A running PostgreSQL server on a Unix socket in its own temporary folder.
pub(crate) struct Cluster {
    bin: PathBuf,
    /// The temporary folder: `data/` (the cluster), the socket, and `server.log`.
    dir: PathBuf,
    /// The watchdog's standard input; closing it stops the cluster and removes `dir`.
    watchdog_input: Option<ChildStdin>,
    watchdog: Child,
    /// Whether the tests run as root, so PostgreSQL's commands run as `postgres`.
    as_postgres: bool,
    /// Server options after the defaults (see [`Setup::options`]).
    options: String,
}

/// What a test changes in a cluster's default set-up (a socket-only server that trusts
/// every local connection).
#[derive(Default)]
pub(crate) struct Setup<'a> {
    /// More server options (`-c name=value ...`), after the defaults, which they override.
    pub options: &'a str,
    /// A `pg_hba.conf` to use instead of `initdb`'s.
    pub hba: Option<&'a str>,
}

/// A database of its own in a [`Cluster`], dropped (with its connections) when this is.
pub(crate) struct TestDatabase {
    cluster: &'static Cluster,
    name: String,
}

/// The cluster every test of this binary shares, started on first use. Without it the
/// tests cannot run: if it cannot start, this fails the test when PostgreSQL is
/// required ([`REQUIRED_VARIABLE`]), and otherwise says so loudly once and ends the
/// test process with success, so that the PostgreSQL tests pass trivially.
pub(crate) fn shared() -> &'static Cluster {
    static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match SHARED.get_or_init(Cluster::start) {
        Ok(cluster) => cluster,
        Err(reason) => unavailable(reason),
    }
}

/// Whether this run must test PostgreSQL rather than skip it.
pub(crate) fn required() -> bool {
    std::env::var(REQUIRED_VARIABLE).is_ok_and(|value| value == "required")
}

/// Fails (PostgreSQL required) or skips the whole binary, saying why.
fn unavailable(reason: &str) -> ! {
    if required() {
        panic!("PostgreSQL is required ({REQUIRED_VARIABLE}=required) but {reason}");
    }
    let line = "=".repeat(78);
    // Straight to the process's stderr: libtest captures only the print macros.
    let _ = writeln!(
        std::io::stderr(),
        "\n{line}\nPostgreSQL not available: ran SQLite only: {reason}\n\
         (set {REQUIRED_VARIABLE}=required to make this a failure)\n{line}\n"
    );
    std::process::exit(0)
}

impl Cluster {
    /// Initialises and starts a new cluster, or says why it could not.
    pub(crate) fn start() -> Result<Cluster, String> {
        Cluster::start_with(&Setup::default())
    }

    /// [`Cluster::start`] with a set-up of its own.
    pub(crate) fn start_with(setup: &Setup<'_>) -> Result<Cluster, String> {
        let bin = find_bin()?;
        let as_postgres = rustix::process::geteuid().is_root();
        let dir = tempfile::Builder::new()
            .prefix("neptun-pg-")
            .tempdir()
            .map_err(|err| format!("no temporary folder: {err}"))?
            // The watchdog removes it, even after this process is gone.
            .keep();
        if as_postgres {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|err| format!("chown {} to postgres: {err}", dir.display()))?;
        }
        let mut cluster = Cluster::with_watchdog(bin, dir, as_postgres)?;
        cluster.options = setup.options.to_owned();
        cluster.init()?;
        if let Some(hba) = setup.hba {
            // Written over initdb's file, so it keeps the server's ownership.
            let path = cluster.data_dir().join("pg_hba.conf");
            std::fs::write(&path, hba)
                .map_err(|err| format!("writing {}: {err}", path.display()))?;
        }
        cluster.start_server()?;
        Ok(cluster)
    }

    /// Spawns the watchdog first, so that a cluster that fails halfway through its
    /// start is cleaned up all the same.
    fn with_watchdog(bin: PathBuf, dir: PathBuf, as_postgres: bool) -> Result<Cluster, String> {
        let pg_ctl = bin.join("pg_ctl");
        // The watchdog ignores the signals a Ctrl-C or a hang-up sends the whole process
        // group, so that it outlives the tests and cleans up after them.
        let script = r#"trap '' INT TERM HUP QUIT
cat >/dev/null
if [ -f "$3/data/postmaster.pid" ]; then $1 "$2" stop -D "$3/data" -m immediate -w >/dev/null 2>&1; fi
rm -rf "$3""#;
        let runner = if as_postgres {
            "runuser -u postgres --"
        } else {
            "env"
        };
        let watchdog_cmd = Command::new("sh")
            .args(["-c", script, "pg-watchdog", runner])
            .arg(&pg_ctl)
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut watchdog = match watchdog_cmd {
            Ok(child) => child,
            Err(err) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("the cluster's watchdog (sh) did not start: {err}"));
            }
        };
        let watchdog_input = watchdog.stdin.take();
        Ok(Cluster {
            bin,
            dir,
            watchdog_input,
            watchdog,
            as_postgres,
            options: String::new(),
        })
    }

    fn init(&self) -> Result<(), String> {
        self.pg_command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "--auth=trust",
                "-U",
                "postgres",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output_ok("initdb")
    }

    fn start_server(&self) -> Result<(), String> {
        let options = format!(
            "-k {} -c listen_addresses='' -c max_connections=300 -c fsync=off \
             -c full_page_writes=off {}",
            self.dir.display(),
            self.options
        );
        self.pg_ctl("start")
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .arg("-o")
            .arg(options)
            .output_ok("pg_ctl start")
            .map_err(|err| format!("{err}\nserver log:\n{}", self.server_log()))
    }

    /// Stops the server as a crash would (`-m immediate`), keeping its data.
    #[allow(dead_code)] // For tests of the PostgreSQL binary only.
    pub(crate) fn stop(&self) {
        if let Err(err) = self
            .pg_ctl("stop")
            .args(["-m", "immediate"])
            .output_ok("pg_ctl stop")
        {
            panic!("{err}");
        }
    }

    /// Starts the server again after [`Cluster::stop`], on the same socket and data.
    #[allow(dead_code)] // For tests of the PostgreSQL binary only.
    pub(crate) fn restart(&self) {
        if let Err(err) = self.start_server() {
            panic!("{err}");
        }
    }

    /// `pg_ctl <action> -D <data> -w -t <timeout>`.
    fn pg_ctl(&self, action: &str) -> Command {
        let mut command = self.pg_command("pg_ctl");
        command
            .arg(action)
            .arg("-D")
            .arg(self.data_dir())
            .arg("-w")
            .arg("-t")
            .arg(PG_CTL_TIMEOUT.as_secs().to_string());
        command
    }

    /// A PostgreSQL program, run as `postgres` when the tests run as root.
    fn pg_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        };
        // From a folder `postgres` may enter, whatever the tests' working folder is.
        command.current_dir(&self.dir).stdin(Stdio::null());
        command
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The folder of the server's Unix socket.
    pub(crate) fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The server's log so far, for a failure message.
    pub(crate) fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// The libpq URL of database `name` on this cluster.
    pub(crate) fn url(&self, name: &str) -> String {
        format!(
            "postgresql:///{name}?host={}&user=postgres",
            self.socket_dir().display()
        )
    }

    /// Runs `sql` (one or more statements, no parameters) on database `name` and
    /// returns the rows of its results, every value as text (`None` for NULL), as
    /// PostgreSQL's simple query protocol gives them.
    pub(crate) fn simple_query(
        &self,
        name: &str,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, String> {
        let config = format!("host={} user=postgres dbname={name}", self.dir.display());
        let sql = sql.to_owned();
        // On a thread of its own with its own runtime: the callers are often already on
        // a runtime's worker, where blocking on another runtime is refused.
        let worker = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| format!("a runtime: {err}"))?;
            runtime.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
                    .await
                    .map_err(|err| format!("connecting to {config}: {err}"))?;
                let connection = tokio::spawn(connection);
                let messages = client
                    .simple_query(&sql)
                    .await
                    .map_err(|err| format!("{sql}: {}", describe(&err)))?;
                drop(client);
                let _ = connection.await;
                Ok(messages
                    .into_iter()
                    .filter_map(|message| match message {
                        tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                            (0..row.len())
                                .map(|i| row.get(i).map(str::to_owned))
                                .collect(),
                        ),
                        _ => None,
                    })
                    .collect())
            })
        });
        worker
            .join()
            .unwrap_or_else(|_| Err("the query thread panicked".to_owned()))
    }

    /// A fresh, empty database of its own for one test.
    pub(crate) fn create_database(&'static self) -> TestDatabase {
        static CREATED: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            CREATED.fetch_add(1, Ordering::Relaxed)
        );
        if let Err(err) = self.simple_query(
            "postgres",
            &format!("CREATE DATABASE {name} TEMPLATE template0"),
        ) {
            panic!("{err}\nserver log:\n{}", self.server_log());
        }
        TestDatabase {
            cluster: self,
            name,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Closing the watchdog's input makes it stop the server and remove the folder.
        drop(self.watchdog_input.take());
        let _ = self.watchdog.wait();
    }
}

impl TestDatabase {
    /// The database's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The libpq URL the application is given.
    pub(crate) fn url(&self) -> String {
        self.cluster.url(&self.name)
    }

    /// [`Cluster::simple_query`] on this database, failing the test on an error.
    pub(crate) fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.cluster
            .simple_query(&self.name, sql)
            .unwrap_or_else(|err| panic!("{err}"))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // An empty database takes about 7 MiB; hundreds of tests would fill a disk.
        // FORCE ends the connections of a server that is still winding down.
        let _ = self.cluster.simple_query(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A PostgreSQL error with its server-side message, which `Display` leaves out.
fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => err.to_string(),
    }
}

/// `PG_BIN`, or the newest `/usr/lib/postgresql/<version>/bin` that has `initdb`.
fn find_bin() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("PG_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.join("initdb").is_file() {
            Ok(bin)
        } else {
            Err(format!("PG_BIN={} has no initdb", bin.display()))
        };
    }
    let root = Path::new("/usr/lib/postgresql");
    let entries = std::fs::read_dir(root).map_err(|err| format!("no {}: {err}", root.display()))?;
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
        .ok_or_else(|| format!("no {}/<version>/bin/initdb", root.display()))
}

/// The `postgres` account's user and group ids, from `id`.
pub(crate) fn postgres_ids() -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let output = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|err| format!("id {flag} postgres: {err}"))?;
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|_| "no `postgres` account to run the cluster as".to_owned())
    };
    Ok((id("-u")?, id("-g")?))
}

/// Running a command to completion, its failure as a message with its output.
trait OutputOk {
    fn output_ok(&mut self, what: &str) -> Result<(), String>;
}

impl OutputOk for Command {
    fn output_ok(&mut self, what: &str) -> Result<(), String> {
        let output = self
            .output()
            .map_err(|err| format!("{what} did not run: {err}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }
}
