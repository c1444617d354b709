//! Load check: many concurrent clients post single messages and batches to a real
//! `neptun-chat` server for a fixed time, then the database file is checked against
//! everything the server acknowledged.
//!
//! It seeds users, sessions and chats into a fresh temporary database through
//! [`Admin`] (the admin commands' code), starts the release binary as a child process
//! on a free loopback port with `RUST_LOG=warn`, and runs one task per client, each with
//! its own keep-alive connection. Several clients share each chat, so their writes
//! interleave. While the load runs it samples the server's resident memory from
//! `/proc/<pid>/status` (Linux only), then stops the server with SIGTERM.
//!
//! The check passes when no request failed or answered anything but 200, every
//! acknowledged message is stored exactly once with its exact text, chat and role, each
//! batch occupies consecutive ids of its chat in array order, and nothing else is
//! stored. It exits 1 otherwise. Run it through `scripts/load-check.sh`.
//!
//! This is a measuring tool, not a test: it never touches the network beyond
//! 127.0.0.1, stops by itself after `--duration` seconds, and only ever signals the one
//! server process it started.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use clap::builder::RangedU64ValueParser;
use neptun_chat::auth::{SESSION_COOKIE, SessionToken};
use neptun_chat::db::Admin;
use neptun_chat::domain::Timestamp;
use reqwest::header::{CONTENT_TYPE, COOKIE};
use serde::Deserialize;
use serde_json::json;

/// Every fourth request is a batch; the others post one message.
const BATCH_EVERY: u64 = 4;
/// How long the server may take to answer /healthz after it is started.
const STARTUP_DEADLINE: Duration = Duration::from_secs(15);
/// How long the server may take to shut down after SIGTERM before it is killed.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(15);
/// How often the server's resident memory is sampled during the load.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// No single request may take longer than this; a slower one counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How many problems of each kind are printed in full (all are counted).
const SHOWN_PROBLEMS: usize = 10;

/// Posts messages from many concurrent clients for a while, then checks that the
/// server answered every request with 200 and stored exactly what it acknowledged.
#[derive(Debug, Parser)]
#[command(name = "load_check")]
struct Args {
    /// The neptun-chat binary to start.
    #[arg(long, default_value = "target/release/neptun-chat")]
    server: PathBuf,
    /// Concurrent clients, each with its own keep-alive connection.
    #[arg(long, default_value_t = 64, value_parser = RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    clients: usize,
    /// Seconds the clients keep posting.
    #[arg(long, default_value_t = 30, value_parser = RangedU64ValueParser::<u64>::new().range(1..=3600))]
    duration: u64,
    /// Messages in each batch request (the server accepts up to 1000 by default).
    #[arg(long, default_value_t = 10, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1000))]
    batch: usize,
    /// Users, each with one chat; client `n` posts to the chat of user `n % users`.
    #[arg(long, default_value_t = 16, value_parser = RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    users: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("load check could not run: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the whole check and prints the report; `Ok(false)` when the check failed.
fn run(args: &Args) -> anyhow::Result<bool> {
    let dir = tempfile::tempdir().context("cannot create a temporary folder")?;
    let db_path = dir.path().join("load.db");
    let log_path = dir.path().join("server.log");
    let accounts = seed(&db_path, args.users)?;

    let mut server = Server::start(&args.server, &db_path, &log_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    if let Err(err) = runtime.block_on(wait_until_healthy(&mut server)) {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.trim().is_empty() {
            return Err(err);
        }
        bail!("{err:#}; the server's log:\n{}", log.trim_end());
    }
    let idle_rss_kib = server.status_kib("VmRSS");

    let sampler = RssSampler::start(server.pid);
    let load = runtime.block_on(run_load(args, &server, &accounts));
    let sampled = sampler.stop();
    // Read the high-water mark while the process still exists.
    let peak_rss_kib = server.status_kib("VmHWM");
    let exit = server.stop()?;
    let load = load?;

    let server_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let verification = verify(&db_path, &load.acks)?;
    let mut problems = load.problems();
    problems.extend(verification.problems.iter().cloned());
    if !exit.success() {
        problems.push(format!(
            "the server did not exit cleanly after SIGTERM: {exit}"
        ));
    }

    let report = Report {
        args,
        load: &load,
        verification: &verification,
        idle_rss_kib,
        peak_rss_kib,
        sampled,
        server_log: &server_log,
        problems: &problems,
    };
    report.print();
    Ok(problems.is_empty())
}

/// A user with a live session and the chat its clients post to.
#[derive(Debug, Clone)]
struct Account {
    user_id: String,
    token: String,
    chat_id: i64,
}

/// Creates `users` users, each with a one-day session and one chat.
fn seed(db_path: &Path, users: usize) -> anyhow::Result<Vec<Account>> {
    let location = neptun_chat::db::Location::Sqlite(db_path.to_path_buf());
    let mut admin = Admin::open(&location).context("cannot create the database")?;
    let expires_at = Timestamp::from_datetime(chrono::Utc::now() + chrono::Duration::days(1));
    (0..users)
        .map(|n| {
            let user_id = format!("load-user-{n:04}");
            admin
                .create_user(&user_id, None, None)
                .with_context(|| format!("cannot create user {user_id}"))?;
            let token = SessionToken::generate().context("the OS random source failed")?;
            admin
                .create_session(&user_id, &token.hash(), &expires_at)
                .with_context(|| format!("cannot create a session for {user_id}"))?;
            let chat_id = admin
                .create_chat(&user_id, "Load check", "load-model")
                .with_context(|| format!("cannot create a chat for {user_id}"))?;
            Ok(Account {
                user_id,
                token: token.expose().to_owned(),
                chat_id,
            })
        })
        .collect()
}

/// The server child process. Dropping it kills the process if it still runs, so a
/// panic or an early return never leaves a server behind.
struct Server {
    child: Child,
    pid: u32,
    base_url: String,
}

impl Server {
    /// Starts `binary` serving `db_path` on a free loopback port, logging to `log_path`.
    fn start(binary: &Path, db_path: &Path, log_path: &Path) -> anyhow::Result<Server> {
        let port = free_port()?;
        let log = File::create(log_path).context("cannot create the server log file")?;
        let child = Command::new(binary)
            .arg("--database")
            .arg(db_path)
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(Server {
            pid: child.id(),
            child,
            base_url: format!("http://127.0.0.1:{port}"),
        })
    }

    /// A `kB` field of `/proc/<pid>/status`, such as `VmRSS` or `VmHWM`.
    fn status_kib(&self, field: &str) -> Option<u64> {
        status_kib(self.pid, field)
    }

    /// Sends SIGTERM (actix then drains its connections) and waits for the exit; kills
    /// the process if it has not exited by [`SHUTDOWN_DEADLINE`].
    fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        let signalled = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .context("cannot run kill")?;
        if signalled.success() {
            let deadline = Instant::now() + SHUTDOWN_DEADLINE;
            while Instant::now() < deadline {
                if let Some(status) = self.child.try_wait()? {
                    return Ok(status);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!("the server ignored SIGTERM for {SHUTDOWN_DEADLINE:?}; killing it");
        }
        self.child.kill().context("cannot kill the server")?;
        Ok(self.child.wait()?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A port that was free a moment ago: bound on 127.0.0.1:0, read back, released.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Polls `GET /healthz` until it answers 200; fails if the server exits first or the
/// [`STARTUP_DEADLINE`] passes.
async fn wait_until_healthy(server: &mut Server) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()?;
    let url = format!("{}/healthz", server.base_url);
    let deadline = Instant::now() + STARTUP_DEADLINE;
    loop {
        if let Some(status) = server.child.try_wait()? {
            bail!("the server exited during start-up ({status})");
        }
        match client.get(&url).send().await {
            Ok(response) if response.status() == reqwest::StatusCode::OK => return Ok(()),
            Ok(_) | Err(_) if Instant::now() >= deadline => {
                bail!("the server did not answer {url} with 200 within {STARTUP_DEADLINE:?}")
            }
            Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// A `kB` field of `/proc/<pid>/status`, in KiB; `None` if the process or field is gone.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// What the memory sampler saw.
#[derive(Debug, Clone, Copy, Default)]
struct RssSamples {
    /// The largest `VmRSS` sampled, in KiB.
    max_kib: u64,
    /// The last `VmRSS` sampled, at the end of the load, in KiB.
    last_kib: u64,
    /// How many samples were taken.
    count: u64,
}

/// A thread that samples the server's `VmRSS` every [`RSS_SAMPLE_EVERY`] until stopped.
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<RssSamples>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = RssSamples::default();
            while !flag.load(Ordering::Relaxed) {
                if let Some(kib) = status_kib(pid, "VmRSS") {
                    samples.max_kib = samples.max_kib.max(kib);
                    samples.last_kib = kib;
                    samples.count += 1;
                }
                std::thread::sleep(RSS_SAMPLE_EVERY);
            }
            samples
        });
        RssSampler { stop, thread }
    }

    fn stop(self) -> RssSamples {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// One acknowledged request: what the server said it stored, as it was sent.
#[derive(Debug)]
struct Ack {
    chat_id: i64,
    /// Whether it was a batch (whose ids must then be consecutive in the chat).
    batch: bool,
    /// `(id, text, role)` in the order sent.
    messages: Vec<(i64, String, &'static str)>,
}

/// What one client did.
#[derive(Debug, Default)]
struct ClientStats {
    requests: u64,
    batches: u64,
    /// Answers by HTTP status.
    statuses: BTreeMap<u16, u64>,
    /// Requests that got no HTTP answer at all (connection error, timeout).
    transport_errors: u64,
    /// Request latencies, sending to the end of the body, in microseconds.
    latencies_us: Vec<u64>,
    acks: Vec<Ack>,
    /// 200 answers whose body was unreadable or did not match what was sent.
    wrong_answers: u64,
    /// The first few failed requests of any kind, described.
    problems: Vec<String>,
}

impl ClientStats {
    fn note(&mut self, text: String) {
        if self.problems.len() < SHOWN_PROBLEMS {
            self.problems.push(text);
        }
    }
}

/// Everything the clients did together.
#[derive(Debug, Default)]
struct LoadResult {
    elapsed: Duration,
    requests: u64,
    batches: u64,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
    /// Sorted ascending.
    latencies_us: Vec<u64>,
    acks: Vec<Ack>,
    wrong_answers: u64,
    client_problems: Vec<String>,
}

impl LoadResult {
    fn acked_messages(&self) -> usize {
        self.acks.iter().map(|ack| ack.messages.len()).sum()
    }

    fn server_errors(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(status, _)| **status >= 500)
            .map(|(_, count)| count)
            .sum()
    }

    /// The reasons this load failed, before looking at the database.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let server_errors = self.server_errors();
        if server_errors > 0 {
            problems.push(format!("{server_errors} responses were 5xx"));
        }
        let other: u64 = self
            .statuses
            .iter()
            .filter(|(status, _)| **status != 200 && **status < 500)
            .map(|(_, count)| count)
            .sum();
        if other > 0 {
            problems.push(format!(
                "{other} valid requests were answered with a status other than 200 or 5xx"
            ));
        }
        if self.transport_errors > 0 {
            problems.push(format!(
                "{} requests got no answer (connection error or timeout); their outcome is unknown",
                self.transport_errors
            ));
        }
        if self.wrong_answers > 0 {
            problems.push(format!(
                "{} 200 answers did not match what was sent (see 'client problems')",
                self.wrong_answers
            ));
        }
        problems
    }

    /// The latency at `percent` (nearest rank), in milliseconds.
    fn percentile_ms(&self, percent: usize) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let rank = (self.latencies_us.len() * percent).div_ceil(100).max(1);
        self.latencies_us[rank - 1] as f64 / 1000.0
    }
}

/// Runs one client task per `--clients` until `--duration` has passed and gathers
/// what they saw.
async fn run_load(
    args: &Args,
    server: &Server,
    accounts: &[Account],
) -> anyhow::Result<LoadResult> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let mut tasks = Vec::with_capacity(args.clients);
    for index in 0..args.clients {
        let account = accounts[index % accounts.len()].clone();
        let url = format!(
            "{}/api/users/{}/chats/{}/messages",
            server.base_url, account.user_id, account.chat_id
        );
        tasks.push(tokio::spawn(run_client(
            index, account, url, deadline, args.batch,
        )));
    }
    let mut result = LoadResult::default();
    for task in tasks {
        let stats = task.await.context("a client task panicked")??;
        result.requests += stats.requests;
        result.batches += stats.batches;
        for (status, count) in stats.statuses {
            *result.statuses.entry(status).or_default() += count;
        }
        result.transport_errors += stats.transport_errors;
        result.latencies_us.extend(stats.latencies_us);
        result.acks.extend(stats.acks);
        result.wrong_answers += stats.wrong_answers;
        let room = SHOWN_PROBLEMS.saturating_sub(result.client_problems.len());
        result
            .client_problems
            .extend(stats.problems.into_iter().take(room));
    }
    result.elapsed = started.elapsed();
    result.latencies_us.sort_unstable();
    Ok(result)
}

/// A stored message as the API returns it (the fields checked here).
#[derive(Debug, Deserialize)]
struct StoredMessage {
    id: i64,
    chat_conversation_id: i64,
    message: String,
    actor: String,
}

/// The answer to a create: exactly one of the two fields is present.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Created {
    #[serde(rename = "chatMessage")]
    chat_message: Option<StoredMessage>,
    #[serde(rename = "chatMessages")]
    chat_messages: Option<Vec<StoredMessage>>,
}

/// One client: its own keep-alive connection, posting three single messages and then
/// one batch, over and over, until `deadline`.
async fn run_client(
    index: usize,
    account: Account,
    url: String,
    deadline: Instant,
    batch_len: usize,
) -> anyhow::Result<ClientStats> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let cookie = format!("{SESSION_COOKIE}={}", account.token);
    let mut stats = ClientStats::default();
    let mut round = 0u64;
    while Instant::now() < deadline {
        let batch = round % BATCH_EVERY == BATCH_EVERY - 1;
        let sent: Vec<(String, &'static str)> = if batch {
            (0..batch_len)
                .map(|i| {
                    let role = if i % 2 == 0 { "user" } else { "assistant" };
                    (message_text(index, round, i), role)
                })
                .collect()
        } else {
            vec![(message_text(index, round, 0), "user")]
        };
        let body = if batch {
            let messages: Vec<_> = sent
                .iter()
                .map(|(content, role)| json!({"content": content, "role": role}))
                .collect();
            json!({ "messages": messages })
        } else {
            json!({"message": sent[0].0, "actor": sent[0].1})
        };
        round += 1;
        stats.requests += 1;
        stats.batches += u64::from(batch);

        let started = Instant::now();
        let answer = async {
            let response = client
                .post(&url)
                .header(CONTENT_TYPE, "application/json")
                .header(COOKIE, &cookie)
                .body(body.to_string())
                .send()
                .await?;
            let status = response.status().as_u16();
            let bytes = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, bytes))
        }
        .await;
        let latency = started.elapsed();
        let (status, bytes) = match answer {
            Ok(answer) => answer,
            Err(err) => {
                stats.transport_errors += 1;
                stats.note(format!("client {index} round {round}: no answer: {err}"));
                continue;
            }
        };
        stats
            .latencies_us
            .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        *stats.statuses.entry(status).or_default() += 1;
        if status != 200 {
            let text = String::from_utf8_lossy(&bytes);
            stats.note(format!("client {index} round {round}: {status}: {text}"));
            continue;
        }
        match check_answer(&bytes, batch, account.chat_id, &sent) {
            Ok(messages) => stats.acks.push(Ack {
                chat_id: account.chat_id,
                batch,
                messages,
            }),
            Err(err) => {
                stats.wrong_answers += 1;
                stats.note(format!("client {index} round {round}: {err:#}"));
            }
        }
    }
    Ok(stats)
}

/// A text unique to (client, round, position) that storage must keep byte for byte:
/// non-ASCII, inner and trailing spaces, and a length that varies.
fn message_text(client: usize, round: u64, position: usize) -> String {
    let padding = "·".repeat((client * 7 + position * 3 + round as usize) % 40);
    format!("load c{client} r{round} m{position} ünï ✓ 🚀 {padding}  ")
}

/// Checks a 200 answer against what was sent and returns `(id, text, role)` per message.
fn check_answer(
    bytes: &[u8],
    batch: bool,
    chat_id: i64,
    sent: &[(String, &'static str)],
) -> anyhow::Result<Vec<(i64, String, &'static str)>> {
    let created: Created = serde_json::from_slice(bytes).with_context(|| {
        format!(
            "unexpected 200 body: {}",
            String::from_utf8_lossy(bytes)
                .chars()
                .take(300)
                .collect::<String>()
        )
    })?;
    let stored = match (batch, created.chat_message, created.chat_messages) {
        (false, Some(one), None) => vec![one],
        (true, None, Some(many)) => many,
        _ => bail!(
            "a {} got the other answer shape",
            if batch { "batch" } else { "single message" }
        ),
    };
    if stored.len() != sent.len() {
        bail!("sent {} messages, {} came back", sent.len(), stored.len());
    }
    if stored.windows(2).any(|pair| pair[0].id >= pair[1].id) {
        bail!("the returned ids do not increase in array order");
    }
    stored
        .into_iter()
        .zip(sent)
        .map(|(stored, (text, role))| {
            if stored.chat_conversation_id != chat_id
                || stored.message != *text
                || stored.actor != *role
            {
                bail!(
                    "message {} came back as chat {} / {:?} / {:?}, sent chat {chat_id} / {text:?} / {role:?}",
                    stored.id,
                    stored.chat_conversation_id,
                    stored.actor,
                    stored.message
                );
            }
            Ok((stored.id, stored.message, *role))
        })
        .collect()
}

/// What was found in the database file.
#[derive(Debug, Default)]
struct Verification {
    stored: usize,
    acked: usize,
    problems: Vec<String>,
}

/// Checks the database file against the acknowledgements: each acked message stored
/// once, exactly as sent, in its chat; each batch on consecutive ids of its chat in
/// array order; no message stored that was not acked.
fn verify(db_path: &Path, acks: &[Ack]) -> anyhow::Result<Verification> {
    let conn =
        rusqlite::Connection::open(db_path).context("cannot open the database to check it")?;
    let mut stmt = conn.prepare(
        "SELECT id, chat_conversation_id, message, actor FROM chat_messages ORDER BY id",
    )?;
    let rows = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;

    let mut by_id: HashMap<i64, (i64, &str, &str)> = HashMap::with_capacity(rows.len());
    let mut positions: HashMap<i64, usize> = HashMap::with_capacity(rows.len());
    let mut per_chat: HashMap<i64, usize> = HashMap::new();
    let mut texts: HashMap<&str, usize> = HashMap::with_capacity(rows.len());
    for (id, chat, text, actor) in &rows {
        by_id.insert(*id, (*chat, text, actor));
        let next = per_chat.entry(*chat).or_default();
        positions.insert(*id, *next);
        *next += 1;
        *texts.entry(text).or_default() += 1;
    }

    let mut found = Problems::default();
    let mut acked_ids = HashSet::new();
    for ack in acks {
        for (id, text, role) in &ack.messages {
            if !acked_ids.insert(*id) {
                found.add("acknowledged twice", format!("id {id}"));
            }
            match by_id.get(id) {
                None => found.add(
                    "acknowledged but not stored (lost)",
                    format!("id {id} {text:?}"),
                ),
                Some((chat, stored, actor)) => {
                    if *chat != ack.chat_id || stored != text || actor != role {
                        found.add(
                            "stored differently than acknowledged",
                            format!("id {id}: stored chat {chat} {actor} {stored:?}, acked chat {} {role} {text:?}", ack.chat_id),
                        );
                    }
                    if texts.get(text.as_str()).copied().unwrap_or(0) > 1 {
                        found.add("text stored more than once", format!("{text:?}"));
                    }
                }
            }
        }
        if ack.batch {
            let spots: Vec<Option<usize>> = ack
                .messages
                .iter()
                .map(|(id, _, _)| positions.get(id).copied())
                .collect();
            let contiguous = spots
                .windows(2)
                .all(|pair| matches!(pair, [Some(a), Some(b)] if *b == *a + 1));
            if !contiguous {
                let ids: Vec<i64> = ack.messages.iter().map(|(id, _, _)| *id).collect();
                found.add(
                    "batch not contiguous and in order in its chat",
                    format!("chat {} ids {ids:?}", ack.chat_id),
                );
            }
        }
    }
    for (id, chat, text, _) in &rows {
        if !acked_ids.contains(id) {
            found.add(
                "stored but never acknowledged (extra)",
                format!("id {id} chat {chat} {text:?}"),
            );
        }
    }
    let acked = acked_ids.len();
    if rows.len() != acked {
        found.add(
            "stored count differs from acknowledged count",
            format!("{} stored, {acked} acknowledged", rows.len()),
        );
    }
    Ok(Verification {
        stored: rows.len(),
        acked,
        problems: found.into_lines(),
    })
}

/// Verification problems grouped by kind, with the first few examples of each.
#[derive(Debug, Default)]
struct Problems {
    kinds: BTreeMap<&'static str, (usize, Vec<String>)>,
}

impl Problems {
    fn add(&mut self, kind: &'static str, example: String) {
        let (count, examples) = self.kinds.entry(kind).or_default();
        *count += 1;
        if examples.len() < 3 {
            examples.push(example);
        }
    }

    fn into_lines(self) -> Vec<String> {
        self.kinds
            .into_iter()
            .map(|(kind, (count, examples))| {
                format!("{kind}: {count} (e.g. {})", examples.join("; "))
            })
            .collect()
    }
}

/// Everything the report shows.
struct Report<'a> {
    args: &'a Args,
    load: &'a LoadResult,
    verification: &'a Verification,
    idle_rss_kib: Option<u64>,
    peak_rss_kib: Option<u64>,
    sampled: RssSamples,
    server_log: &'a str,
    problems: &'a [String],
}

impl Report<'_> {
    fn print(&self) {
        let load = self.load;
        let seconds = load.elapsed.as_secs_f64();
        let per_second = |count: f64| if seconds > 0.0 { count / seconds } else { 0.0 };
        let statuses: Vec<String> = load
            .statuses
            .iter()
            .map(|(status, count)| format!("{status}: {count}"))
            .collect();
        println!("neptun-chat load check");
        println!(
            "  clients            {} ({} users/chats, batches of {}, every {}th request a batch)",
            self.args.clients, self.args.users, self.args.batch, BATCH_EVERY
        );
        println!(
            "  duration           {seconds:.1} s (asked {} s)",
            self.args.duration
        );
        println!(
            "  requests           {} ({} single, {} batch)",
            load.requests,
            load.requests - load.batches,
            load.batches
        );
        println!(
            "  requests/s         {:.0}",
            per_second(load.requests as f64)
        );
        println!(
            "  messages acked     {} ({:.0}/s)",
            load.acked_messages(),
            per_second(load.acked_messages() as f64)
        );
        println!(
            "  statuses           {}{}",
            if statuses.is_empty() {
                "none".to_owned()
            } else {
                statuses.join(", ")
            },
            if load.transport_errors > 0 {
                format!(", no answer: {}", load.transport_errors)
            } else {
                String::new()
            }
        );
        println!(
            "  latency ms         p50 {:.2}, p99 {:.2}, max {:.2}",
            load.percentile_ms(50),
            load.percentile_ms(99),
            load.latencies_us.last().copied().unwrap_or(0) as f64 / 1000.0
        );
        println!(
            "  server RSS idle    {} (after start-up)",
            mib(self.idle_rss_kib)
        );
        println!(
            "  server RSS peak    {} (VmHWM; sampled max {}, at end of load {}, {} samples)",
            mib(self.peak_rss_kib),
            mib(Some(self.sampled.max_kib)),
            mib(Some(self.sampled.last_kib)),
            self.sampled.count
        );
        println!(
            "  stored / acked     {} / {}",
            self.verification.stored, self.verification.acked
        );
        let log_lines: Vec<&str> = self.server_log.lines().collect();
        if !log_lines.is_empty() {
            println!(
                "  server log         {} lines at warn or above; first ones:",
                log_lines.len()
            );
            for line in log_lines.iter().take(SHOWN_PROBLEMS) {
                println!("    {line}");
            }
        }
        if !load.client_problems.is_empty() {
            println!("  client problems (first {}):", load.client_problems.len());
            for problem in &load.client_problems {
                println!("    {problem}");
            }
        }
        if self.problems.is_empty() {
            println!(
                "PASS: no 5xx, every acknowledged message stored exactly once, batches contiguous, nothing extra"
            );
        } else {
            println!("FAIL:");
            for problem in self.problems {
                println!("  - {problem}");
            }
        }
    }
}

/// KiB as MiB with one decimal, or "n/a" when it could not be read.
fn mib(kib: Option<u64>) -> String {
    match kib {
        Some(kib) => format!("{:.1} MiB", kib as f64 / 1024.0),
        None => "n/a".to_owned(),
    }
}
