//! Running the `neptun-chat` binary as a separate process: one-shot commands with their
//! output and exit status, and long-running servers that are killed and reaped when
//! their guard drops, so a failing assertion never leaves a process behind.
//!
//! Every command runs with the `NEPTUN_*` variables and `RUST_LOG` removed, and every
//! wait is bounded by [`DEADLINE`] (or a shorter limit the caller gives).

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use neptun_chat::auth::SESSION_COOKIE;
use reqwest::header::{CONTENT_TYPE, COOKIE};
use tempfile::TempDir;

use crate::database::Database;

/// The longest any single command or start-up may take before the test fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// How often a start-up or an exit is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The binary, with a clean environment: every `NEPTUN_*` variable of the test's own
/// environment and `RUST_LOG` removed, so the caller's settings cannot leak in.
pub(crate) fn neptun() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_neptun-chat"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("NEPTUN_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
    command.stdin(Stdio::null());
    command
}

/// How a finished command ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Asserts success with exactly one line on stdout, and returns that line.
    pub(crate) fn single_line(&self) -> &str {
        assert!(self.status.success(), "expected success: {self:#?}");
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "exactly one line on stdout: {self:#?}");
        assert!(
            self.stdout.ends_with('\n'),
            "the line is terminated: {self:#?}"
        );
        lines[0]
    }

    /// Asserts a non-zero exit with one `error: ...` line on stderr, nothing on stdout
    /// and no panic, and returns the error line.
    pub(crate) fn clear_error(&self) -> &str {
        assert!(!self.status.success(), "expected failure: {self:#?}");
        assert_ne!(
            self.status.code(),
            Some(101),
            "exit code of a panic: {self:#?}"
        );
        assert!(!self.stderr.contains("panicked"), "no panic: {self:#?}");
        assert_eq!(self.stdout, "", "nothing on stdout: {self:#?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "exactly one line on stderr: {self:#?}");
        assert!(lines[0].starts_with("error: "), "an error line: {self:#?}");
        lines[0]
    }
}

/// Runs `command` to completion within [`DEADLINE`], killing it if it overruns.
pub(crate) fn run(command: &mut Command) -> Outcome {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    wait_for(child, command)
}

/// [`run`], with `input` on the command's standard input.
pub(crate) fn run_with_input(command: &mut Command, input: &str) -> Outcome {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_owned();
    // On a thread of its own, so a command that does not read cannot block the test;
    // such a command breaks the pipe, which its exit status then explains.
    thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(input.as_bytes());
    });
    wait_for(child, command)
}

/// Collects the output of `child` (spawned from `command`) and waits for it to exit
/// within [`DEADLINE`], killing it if it overruns.
fn wait_for(mut child: Child, command: &Command) -> Outcome {
    let stdout = read_in_background(child.stdout.take().expect("stdout is piped"));
    let stderr = read_in_background(child.stderr.take().expect("stderr is piped"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("the child can be polled") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    Outcome {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Drains a pipe on its own thread, so a chatty child can never block on a full pipe.
fn read_in_background(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        pipe.read_to_string(&mut text).expect("the output is UTF-8");
        text
    })
}

/// A port that was free a moment ago. Another process could take it before the server
/// binds it; the start-up check then fails loudly rather than testing the wrong thing.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("an ephemeral port");
    listener.local_addr().expect("a local address").port()
}

/// A temporary folder (the commands' working folder, where server logs go too) and a
/// fresh database on this binary's backend: for SQLite a file in a not-yet-existing
/// subfolder of that folder.
pub(crate) struct TempDb {
    pub dir: TempDir,
    pub database: Database,
}

impl TempDb {
    /// A fresh database on this binary's backend.
    pub(crate) fn new() -> TempDb {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let database = Database::fresh_in(dir.path());
        TempDb { dir, database }
    }

    /// A fresh SQLite database, whatever this binary's backend, for tests about
    /// SQLite's files.
    pub(crate) fn sqlite() -> TempDb {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let database = Database::sqlite_in(dir.path());
        TempDb { dir, database }
    }

    /// The SQLite file, for tests about SQLite's files only.
    pub(crate) fn path(&self) -> &Path {
        self.database.sqlite_path()
    }

    /// What `--database` is given: the file's path or the PostgreSQL URL.
    pub(crate) fn arg(&self) -> OsString {
        self.database.arg()
    }

    /// Runs `neptun-chat --database <this db> <args...>` in the temporary folder.
    pub(crate) fn cli(&self, args: &[&str]) -> Outcome {
        run(neptun()
            .current_dir(self.dir.path())
            .arg("--database")
            .arg(self.arg())
            .args(args))
    }

    /// [`TempDb::cli`] with `input` on standard input.
    pub(crate) fn cli_with_input(&self, args: &[&str], input: &str) -> Outcome {
        run_with_input(
            neptun()
                .current_dir(self.dir.path())
                .arg("--database")
                .arg(self.arg())
                .args(args),
            input,
        )
    }

    /// Creates a user, asserting the command prints its id.
    pub(crate) fn create_user(&self, id: &str) {
        assert_eq!(self.cli(&["user", "create", id]).single_line(), id);
    }

    /// Creates a session, returning the printed token.
    pub(crate) fn create_session(&self, user_id: &str, extra: &[&str]) -> String {
        let mut args = vec!["session", "create", user_id];
        args.extend_from_slice(extra);
        self.cli(&args).single_line().to_owned()
    }

    /// Creates a chat, returning the printed id.
    pub(crate) fn create_chat(&self, user_id: &str) -> i64 {
        let line = self
            .cli(&["chat", "create", user_id])
            .single_line()
            .to_owned();
        line.parse()
            .unwrap_or_else(|_| panic!("a chat id, not {line:?}"))
    }

    /// Runs `compact`, expecting success; the sizes it prints, before and after, from
    /// its one line `N bytes before, M bytes after`.
    pub(crate) fn compact(&self) -> (u64, u64) {
        let outcome = self.cli(&["compact"]);
        let line = outcome.single_line();
        match line
            .strip_suffix(" bytes after")
            .and_then(|rest| rest.split_once(" bytes before, "))
            .map(|(before, after)| (before.parse(), after.parse()))
        {
            Some((Ok(before), Ok(after))) => (before, after),
            _ => panic!("not `N bytes before, M bytes after`: {line:?}"),
        }
    }

    /// A connection to the SQLite file, for tests about SQLite's files only.
    pub(crate) fn connection(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.path()).expect("the database opens")
    }

    /// The number of rows in `table`.
    pub(crate) fn count(&self, table: &str) -> i64 {
        self.database.count(table)
    }

    /// Starts `neptun-chat serve` on this database with extra environment variables and
    /// waits until it is healthy.
    pub(crate) fn serve(&self, env: &[(&str, &str)]) -> ServerProcess {
        self.serve_with(&[], env)
    }

    /// Starts `neptun-chat serve <args...>` on this database and waits until it is healthy.
    pub(crate) fn serve_with_args(&self, args: &[&str]) -> ServerProcess {
        self.serve_with(args, &[])
    }

    fn serve_with(&self, args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let mut command = neptun();
        command
            .current_dir(self.dir.path())
            .arg("--database")
            .arg(self.arg())
            .arg("serve")
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied());
        ServerProcess::start(command, self.dir.path())
    }
}

/// A running server process, killed and reaped when dropped, so a failing assertion
/// never leaves it behind.
pub(crate) struct ServerProcess {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl ServerProcess {
    /// Spawns `command` (a server on some `127.0.0.1` port, 0 for any), logging to a file
    /// in `dir`; reads the port it bound from its start-up line and polls `healthcheck`
    /// until it answers, each within [`DEADLINE`].
    pub(crate) fn start(mut command: Command, dir: &Path) -> ServerProcess {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let log = dir.join(format!(
            "server-{}.log",
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let log_file = fs::File::create(&log).expect("the log file");
        let child = command
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("the server starts");
        let mut server = ServerProcess {
            child,
            port: 0,
            log,
        };
        server.port = server.wait_for_bound_port();
        server.wait_until_healthy();
        server
    }

    /// The port in the server's start-up line, `listening on 127.0.0.1:PORT`.
    fn wait_for_bound_port(&mut self) -> u16 {
        let started = Instant::now();
        loop {
            let log = self.log();
            let port = log.lines().find_map(|line| {
                let rest = line.split_once("listening on 127.0.0.1:")?.1;
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            });
            if let Some(port) = port {
                return port;
            }
            if let Some(status) = self.child.try_wait().expect("the server can be polled") {
                panic!("the server exited with {status} during start-up:\n{log}");
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the server logged no `listening on` line within {DEADLINE:?}:\n{log}"
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn wait_until_healthy(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("the server can be polled") {
                panic!(
                    "the server exited with {status} during start-up:\n{}",
                    self.log()
                );
            }
            let check = run(neptun().args(["healthcheck", "--url", &self.healthz_url()]));
            if check.status.success() {
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the server was not healthy within {DEADLINE:?}: {check:#?}\n{}",
                self.log()
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// The port the server reported it bound.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's process id, e.g. to read `/proc/PID/status`.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn healthz_url(&self) -> String {
        format!("{}/healthz", self.address())
    }

    pub(crate) fn messages_url(&self, user_id: &str, chat_id: i64) -> String {
        format!(
            "{}/api/users/{user_id}/chats/{chat_id}/messages",
            self.address()
        )
    }

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// POSTs `body` to a chat with a session cookie.
    pub(crate) async fn post(
        &self,
        user_id: &str,
        chat_id: i64,
        token: &str,
        body: String,
    ) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.messages_url(user_id, chat_id))
            .header(COOKIE, format!("{SESSION_COOKIE}={token}"))
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .expect("the request is sent")
    }

    /// Sends a signal (`"TERM"`, `"INT"`, ...) to the server with `kill(1)`.
    pub(crate) fn signal(&self, name: &str) {
        let outcome = run(Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string()));
        assert!(
            outcome.status.success(),
            "kill -{name} failed: {outcome:#?}"
        );
    }

    /// Kills the server with SIGKILL, as a crash or an out-of-memory kill would, and
    /// reaps it.
    pub(crate) fn kill(&mut self) {
        self.child.kill().expect("SIGKILL is sent");
        self.child.wait().expect("the killed server is reaped");
    }

    /// Waits up to `limit` for the server to exit by itself, and returns its status.
    pub(crate) fn wait_for_exit(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("the server can be polled") {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "the server did not exit within {limit:?}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The account [`unprivileged`] runs commands as when the tests run as root: `nobody`.
const NOBODY: u32 = 65534;

/// Makes `command` run without root's power to ignore file modes, so that a read-only
/// file or a folder it may not write is as unusable to it as to a service account: as
/// `nobody` (with `dir`, its working folder, handed to `nobody`) when the tests run as
/// root; unchanged otherwise.
pub(crate) fn unprivileged<'c>(command: &'c mut Command, dir: &Path) -> &'c mut Command {
    use std::os::unix::process::CommandExt;

    if !rustix::process::geteuid().is_root() {
        return command;
    }
    hand_over(dir);
    command.uid(NOBODY).gid(NOBODY).current_dir(dir)
}

/// Gives `path` and everything below it to `nobody`.
fn hand_over(path: &Path) {
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).expect("chown to nobody");
    if path.is_dir() {
        for entry in fs::read_dir(path).expect("the folder lists") {
            hand_over(&entry.expect("an entry").path());
        }
    }
}
