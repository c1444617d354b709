//! Benchmark baseline (c): the PostgreSQL storage ceiling. Runs one request's storage
//! work, with no HTTP, no JSON and no actix in front, against a database the benchmark
//! seeded through the server, and prints one JSON object per case.
//!
//! It is a bench-only example, not part of the product. Cases (`--workload`):
//! - `append`: the append of one request, as the server sends it when there is no
//!   idempotency key and no quota: one statement (`APPEND_ONE`, or `APPEND_MANY` for
//!   more than one message) that checks the session, takes the chat's locks, stores
//!   `--rows` messages and counts them, its own transaction, in one round trip. W1 is
//!   measured against it with `--rows 1`, W3 with `--rows 100`.
//! - `page`: one page read, as the server asks for it: the session-and-chat check and
//!   the newest `--limit` + 1 messages before `i64::MAX` in one round trip, each row
//!   decoded as the server decodes it (text borrowed and checked as UTF-8, timestamp
//!   formatted).
//!
//! # Design
//! The statements are not copied: they are read, at build time, from the PostgreSQL
//! backend's source (`src/db/postgres/mod.rs`) by the names it gives them, so the
//! baseline always runs the SQL the server runs, and fails loudly if a name goes away.
//! They go through the same client library and pool (tokio-postgres, deadpool-postgres
//! with its statement cache and the same pool size), over the same socket, with the
//! connection settings the server gives its connections (`synchronous_commit` from
//! `--sync`, `lock_timeout`). `--connections` tasks run at once on a runtime with as many
//! threads as the server has workers; each takes a pooled connection per transaction,
//! as each request does.

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Parser, ValueEnum};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::join;
use neptun_chat::auth::hash_token;
use neptun_chat::domain::Timestamp;
use neptun_chat::search;
use serde_json::json;
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

/// The PostgreSQL backend's source: where the statements come from.
const BACKEND_SOURCE: &str = include_str!("../src/db/postgres/mod.rs");

/// Times the server's PostgreSQL statements without the server; prints one JSON line.
#[derive(Debug, Parser)]
#[command(name = "bench_postgres")]
struct Args {
    /// The database, as a `postgresql://` URL (a Unix-socket host is fine; no TLS).
    #[arg(long)]
    url: String,
    /// What one transaction does.
    #[arg(long, value_enum)]
    workload: Workload,
    /// Messages per append.
    #[arg(long, default_value_t = 1)]
    rows: usize,
    /// Messages per page read (one more is fetched, as the server does).
    #[arg(long, default_value_t = 100)]
    limit: i64,
    /// Transactions in flight at once.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Pooled connections (the server's default).
    #[arg(long, default_value_t = neptun_chat::db::DEFAULT_POOL_SIZE as usize)]
    pool_size: usize,
    /// Runtime threads (default: the server's worker count, one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// How long the case runs.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// The server's `--sync`: `synchronous_commit` on (full) or off (normal).
    #[arg(long, value_enum, default_value_t = Sync::Full)]
    sync: Sync,
    /// The user that owns the chat.
    #[arg(long)]
    user: String,
    /// That user's session token (as the cookie carries it).
    #[arg(long)]
    token: String,
    /// The chat to append to or read from.
    #[arg(long)]
    chat: i64,
    /// The text of every message (the HTTP workloads send the same).
    #[arg(
        long,
        default_value = "Benchmark message: the quick brown fox jumps over the lazy dog while the chat store appends it to a conversation."
    )]
    text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    Append,
    Page,
}

/// The server's `--sync` level.
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

    /// What the server sets `synchronous_commit` to at this level.
    fn synchronous_commit(self) -> &'static str {
        match self {
            Sync::Normal => "off",
            Sync::Full => "on",
        }
    }
}

/// The server's statements this baseline runs, read from the backend's source.
#[derive(Debug, Clone)]
struct Statements {
    append_one: String,
    append_many: String,
    claimed_chat: String,
    page_before: String,
}

impl Statements {
    fn from_backend() -> anyhow::Result<Statements> {
        Ok(Statements {
            append_one: sql_constant(BACKEND_SOURCE, "APPEND_ONE")?,
            append_many: sql_constant(BACKEND_SOURCE, "APPEND_MANY")?,
            claimed_chat: sql_constant(BACKEND_SOURCE, "CLAIMED_CHAT")?,
            page_before: sql_constant(BACKEND_SOURCE, "PAGE_BEFORE")?,
        })
    }
}

/// The value of `const NAME: &str = "...";` in `source`: a plain string literal, whose
/// escapes (`\` at a line end, `\"`, `\\`, `\n`) are undone as the compiler does.
fn sql_constant(source: &str, name: &str) -> anyhow::Result<String> {
    let head = format!("const {name}: &str =");
    let start = source
        .find(&head)
        .with_context(|| format!("the PostgreSQL backend has no statement {name}"))?;
    let rest = &source[start + head.len()..];
    let open = rest
        .find('"')
        .with_context(|| format!("{name} is not a string literal"))?;
    let mut sql = String::new();
    let mut chars = rest[open + 1..].chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Ok(sql),
            '\\' => match chars.next() {
                Some('\n') => {
                    while chars.peek().is_some_and(|c| c.is_whitespace()) {
                        chars.next();
                    }
                }
                Some('n') => sql.push('\n'),
                Some(other @ ('"' | '\\' | '\'')) => sql.push(other),
                other => bail!("{name}: an escape this reader does not know: {other:?}"),
            },
            c => sql.push(c),
        }
    }
    bail!("{name}: the string literal does not end")
}

/// What every task needs, shared.
struct Work {
    pool: Pool,
    statements: Statements,
    workload: Workload,
    user: String,
    token_hash: [u8; 32],
    chat: i64,
    texts: Vec<String>,
    actors: Vec<&'static str>,
    fetch: i64,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
    args.threads = Some(threads);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = tokio_postgres::Config::from_str(&args.url)
        .with_context(|| format!("cannot parse the database URL {:?}", args.url))?;
    // The settings the server gives each of its connections (see
    // src/db/postgres/mod.rs, `connection_config`).
    config.application_name("neptun-bench");
    config.options(format!(
        "-c synchronous_commit={} -c lock_timeout=5000",
        args.sync.synchronous_commit()
    ));
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(args.pool_size.max(1))
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .runtime(Runtime::Tokio1)
        .build()
        .context("cannot set up the pool")?;
    let rows = args.rows.max(1);
    let work = std::sync::Arc::new(Work {
        pool,
        statements: Statements::from_backend()?,
        workload: args.workload,
        user: args.user.clone(),
        token_hash: hash_token(&args.token),
        chat: args.chat,
        texts: vec![args.text.clone(); rows],
        actors: (0..rows)
            .map(|i| if i % 2 == 0 { "user" } else { "assistant" })
            .collect(),
        fetch: args.limit + 1,
    });
    // One transaction first, so that a wrong setting fails here, not 64 times over.
    transaction(&work).await.context("the first transaction")?;
    let duration = Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..args.connections.max(1) {
        let work = work.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies_us = Vec::new();
            while Instant::now() < deadline {
                let began = Instant::now();
                transaction(&work).await?;
                latencies_us.push(began.elapsed().as_micros() as u64);
            }
            anyhow::Ok(latencies_us)
        }));
    }
    let mut latencies_us = Vec::new();
    for task in tasks {
        latencies_us.extend(task.await.context("a task panicked")??);
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies_us.sort_unstable();
    let percentile = |p: f64| -> u64 {
        if latencies_us.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * latencies_us.len() as f64).ceil() as usize;
        latencies_us[rank.clamp(1, latencies_us.len()) - 1]
    };
    let transactions = latencies_us.len();
    let rows_per_tx = match args.workload {
        Workload::Append => rows,
        Workload::Page => usize::try_from(args.limit).unwrap_or(0),
    };
    println!(
        "{}",
        json!({
            "kind": "pg_baseline",
            "workload": match args.workload { Workload::Append => "append", Workload::Page => "page" },
            "sync": args.sync.name(),
            "rows_per_tx": rows_per_tx,
            "connections": args.connections,
            "pool_size": args.pool_size,
            "threads": args.threads,
            "transactions": transactions,
            "seconds": seconds,
            "tx_per_sec": transactions as f64 / seconds,
            "rows_per_sec": (transactions * rows_per_tx) as f64 / seconds,
            "latency_us": {
                "p50": percentile(50.0),
                "p99": percentile(99.0),
                "max": latencies_us.last().copied().unwrap_or(0),
            },
        })
    );
    Ok(())
}

/// One request's storage work.
async fn transaction(work: &Work) -> anyhow::Result<()> {
    match work.workload {
        Workload::Append => append(work).await,
        Workload::Page => page(work).await,
    }
}

/// The append of one request, as the server sends it without an idempotency key or a
/// quota: one statement in one round trip, its own transaction.
async fn append(work: &Work) -> anyhow::Result<()> {
    let conn = work.pool.get().await?;
    let statements = &work.statements;
    let now = Utc::now();
    let token_hash = &work.token_hash[..];
    let bytes: i64 = work.texts.iter().map(|t| t.len() as i64).sum();
    // Messages are stored as UTF-8 bytes (`bytea`), as the server binds them.
    let texts: Vec<&[u8]> = work.texts.iter().map(String::as_bytes).collect();
    // Their words for the search index, made as the server makes them.
    let words: Vec<String> = work.texts.iter().map(|t| search::tsvector(t)).collect();
    let rows = match (texts.as_slice(), work.actors.as_slice()) {
        ([text], [actor]) => {
            let append = conn.prepare_cached(&statements.append_one).await?;
            let params: [&(dyn ToSql + std::marker::Sync); 8] = [
                &work.chat,
                &work.user,
                &token_hash,
                &now,
                text,
                actor,
                &bytes,
                &words[0],
            ];
            conn.query(&append, &params).await?
        }
        _ => {
            let append = conn.prepare_cached(&statements.append_many).await?;
            let params: [&(dyn ToSql + std::marker::Sync); 8] = [
                &work.chat,
                &work.user,
                &token_hash,
                &now,
                &texts,
                &work.actors,
                &bytes,
                &words,
            ];
            conn.query(&append, &params).await?
        }
    };
    let first = rows.first().context("the append answered no row")?;
    if first.try_get::<_, Option<&str>>(0)? != Some(work.user.as_str()) {
        bail!("the session is not the user's");
    }
    let ids = rows
        .iter()
        .map(|row| row.try_get::<_, Option<i64>>(1))
        .collect::<Result<Option<Vec<i64>>, _>>()?
        .context("the chat is not the user's")?;
    if ids.len() != texts.len() {
        bail!("stored {} of {} messages", ids.len(), texts.len());
    }
    Ok(())
}

/// One page read: the claim and the page in one round trip, rows decoded.
async fn page(work: &Work) -> anyhow::Result<()> {
    let conn = work.pool.get().await?;
    let statements = &work.statements;
    let claimed = conn.prepare_cached(&statements.claimed_chat).await?;
    let page = conn.prepare_cached(&statements.page_before).await?;
    let now = Utc::now();
    let token_hash = &work.token_hash[..];
    let fetch = Some(work.fetch);
    let (claim, rows) = join!(
        async {
            conn.query_opt(&claimed, &[&token_hash, &now, &work.chat])
                .await
        },
        async { conn.query(&page, &[&work.chat, &i64::MAX, &fetch]).await },
    );
    let claim = claim?.context("the session is missing")?;
    let user: &str = claim.try_get(0)?;
    if user != work.user || !claim.try_get::<_, bool>(1)? {
        bail!("the session or the chat is not the user's");
    }
    let mut text_bytes = 0;
    for row in &rows? {
        let _: i64 = row.try_get(0)?;
        let _: &str = row.try_get(1)?;
        let message = std::str::from_utf8(row.try_get::<_, &[u8]>(2)?)?;
        let _: &str = row.try_get(3)?;
        let created_at: DateTime<Utc> = row.try_get(4)?;
        text_bytes += message.len() + Timestamp::from_datetime(created_at).as_str().len();
    }
    std::hint::black_box(text_bytes);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_is_found_in_the_backend_source() {
        let statements = Statements::from_backend().expect("the statements");
        assert!(
            statements
                .append_many
                .starts_with("WITH claimed AS ( SELECT user_id")
        );
        assert!(!statements.append_many.contains('\\'));
        assert!(
            statements
                .append_one
                .contains("FROM (VALUES (1)) AS one LEFT JOIN stored")
        );
        assert!(statements.page_before.ends_with("ORDER BY id"));
    }

    #[test]
    fn line_continuations_and_quotes_are_undone() {
        let source = "const A: &str = \"x \\\n      y \\\"z\\\"\";";
        assert_eq!(sql_constant(source, "A").expect("A"), "x y \"z\"");
        assert!(sql_constant(source, "B").is_err());
    }
}
