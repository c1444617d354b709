//! Benchmark load for full-text search (issue 12), driven by `bench/search.sh`.
//!
//! It is a bench-only example, not part of the product.
//! - `seed`: creates `--chats` chats for the user and posts `--messages` messages into
//!   them in batches of `--batch` (through the API, so they are indexed as any message
//!   is), texts drawn from a fixed vocabulary of made-up words whose frequencies follow
//!   Zipf's law, as words of a language do.
//! - `query`: `--queries` two-word searches of words of middling frequency (ranks 50 to
//!   500 of the vocabulary: what people search for is neither "the" nor a word used
//!   once), `--concurrency` at a time; reports the latency quantiles and hits.
//!
//! Prints one JSON object. Every request goes to 127.0.0.1 and the work is bounded by
//! the counts given.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(name = "bench_search")]
struct Args {
    /// The server, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    address: String,
    /// The user and their session token.
    #[arg(long)]
    user: String,
    #[arg(long)]
    token: String,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Creates chats and fills them.
    Seed {
        #[arg(long, default_value_t = 1000)]
        chats: usize,
        #[arg(long, default_value_t = 1_000_000)]
        messages: usize,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Runs two-word searches.
    Query {
        #[arg(long, default_value_t = 2000)]
        queries: usize,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
}

/// Words in the vocabulary.
const VOCABULARY: usize = 5000;

/// A small deterministic generator (xorshift), so every run seeds the same texts.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The `rank`-th word: made of syllables, so every word is distinct and pronounceable.
fn word(rank: usize) -> String {
    const SYLLABLES: [&str; 20] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "pe", "da", "gu", "ho", "ja", "be", "fi",
        "zo", "we", "xa", "qu", "ye",
    ];
    let mut n = rank + 20;
    let mut out = String::new();
    while n > 0 {
        out.push_str(SYLLABLES[n % 20]);
        n /= 20;
    }
    out
}

/// Draws word ranks by Zipf's law (s = 1): rank r with probability proportional to 1/r.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize) -> Zipf {
        let mut sum = 0.0;
        let cumulative = (1..=n)
            .map(|r| {
                sum += 1.0 / r as f64;
                sum
            })
            .collect();
        Zipf { cumulative }
    }

    fn draw(&self, rng: &mut Rng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let x = (rng.next() as f64 / u64::MAX as f64) * total;
        self.cumulative.partition_point(|&c| c < x)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let cookie = format!("neptun-session={}", args.token);
    let base = format!("{}/api/users/{}", args.address, args.user);
    match args.mode {
        Mode::Seed {
            chats,
            messages,
            batch,
        } => seed(&client, &cookie, &base, chats, messages, batch).await,
        Mode::Query {
            queries,
            concurrency,
        } => query(&client, &cookie, &base, queries, concurrency).await,
    }
}

async fn seed(
    client: &reqwest::Client,
    cookie: &str,
    base: &str,
    chats: usize,
    messages: usize,
    batch: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut ids = Vec::with_capacity(chats);
    for n in 0..chats {
        let response = client
            .post(format!("{base}/chats"))
            .header("Cookie", cookie)
            .json(&json!({"name": format!("Chat {n}"), "model": "bench"}))
            .send()
            .await?;
        if response.status() != 200 {
            bail!("creating a chat: {}", response.status());
        }
        let body: Value = response.json().await?;
        ids.push(body["chat"]["id"].as_i64().context("a chat id")?);
    }
    let zipf = Arc::new(Zipf::new(VOCABULARY));
    let batches = messages.div_ceil(batch);
    let posted = futures_util::stream::iter(0..batches)
        .map(|n| {
            let (client, zipf) = (client.clone(), Arc::clone(&zipf));
            let url = format!("{base}/chats/{}/messages", ids[n % ids.len()]);
            let count = batch.min(messages - n * batch);
            let cookie = cookie.to_owned();
            async move {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1));
                let body: Vec<Value> = (0..count)
                    .map(|i| {
                        let words = 8 + rng.below(23);
                        let text: Vec<String> =
                            (0..words).map(|_| word(zipf.draw(&mut rng))).collect();
                        let role = if i % 2 == 0 { "user" } else { "assistant" };
                        json!({"content": text.join(" "), "role": role})
                    })
                    .collect();
                let response = client
                    .post(url)
                    .header("Cookie", cookie)
                    .json(&json!({ "messages": body }))
                    .send()
                    .await?;
                if response.status() != 200 {
                    bail!("posting a batch: {}", response.status());
                }
                Ok::<usize, anyhow::Error>(count)
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    let mut stored = 0;
    for batch in posted {
        stored += batch?;
    }
    println!(
        "{}",
        json!({"chats": chats, "messages": stored, "seconds": started.elapsed().as_secs_f64()})
    );
    Ok(())
}

async fn query(
    client: &reqwest::Client,
    cookie: &str,
    base: &str,
    queries: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let words: Vec<(String, String)> = (0..queries)
        .map(|_| (word(50 + rng.below(450)), word(50 + rng.below(450))))
        .collect();
    let started = Instant::now();
    let results = futures_util::stream::iter(words)
        .map(|(a, b)| {
            let url = format!("{base}/search?q={a}+{b}&limit=20");
            let (client, cookie) = (client.clone(), cookie.to_owned());
            async move {
                let sent = Instant::now();
                let response = client.get(url).header("Cookie", cookie).send().await?;
                if response.status() != 200 {
                    bail!("a search answered {}", response.status());
                }
                let body: Value = response.json().await?;
                let took = sent.elapsed();
                let hits = body["results"].as_array().map_or(0, Vec::len);
                Ok::<(Duration, usize, bool), anyhow::Error>((took, hits, body["complete"] == true))
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    let elapsed = started.elapsed();
    let mut latencies = Vec::with_capacity(results.len());
    let (mut hits, mut empty, mut incomplete) = (0, 0, 0);
    for result in results {
        let (took, found, complete) = result?;
        latencies.push(took.as_secs_f64() * 1000.0);
        hits += found;
        empty += usize::from(found == 0);
        incomplete += usize::from(!complete);
    }
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        let at = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies.get(at).copied()
    };
    println!(
        "{}",
        json!({
            "queries": latencies.len(),
            "concurrency": concurrency,
            "queries_s": latencies.len() as f64 / elapsed.as_secs_f64(),
            "p50_ms": quantile(0.5),
            "p99_ms": quantile(0.99),
            "max_ms": latencies.last(),
            "hits_per_page": hits as f64 / latencies.len().max(1) as f64,
            "empty_pages": empty,
            "incomplete_answers": incomplete,
        })
    );
    Ok(())
}
