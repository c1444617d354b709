//! Benchmark load for the events stream (issue 11), driven by `bench/events.sh`: opens
//! events streams on a running server, writes W1 (one message per request) into a chat
//! meanwhile, and prints one JSON object with what it measured.
//!
//! It is a bench-only example, not part of the product.
//! - `--streams N --stream-user U --stream-token T [--stream-chat C]`: N streams of U
//!   (narrowed to chat C if given), opened before the writes start.
//! - The writers: `--connections` tasks, each posting one message at a time to
//!   `--chat` of `--user` for `--duration` seconds, as wrk does for W1.
//! - Latency: for every 16th message id, the time from the writer's 200 to the event's
//!   arrival at each stream that gets it (0 when the event came first).
//!
//! Every request goes to 127.0.0.1; everything stops after `--duration` (and the streams
//! are dropped), so the run is bounded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::StreamExt;
use serde_json::json;

/// Opens events streams and writes W1 meanwhile; prints one JSON line.
#[derive(Debug, Parser)]
#[command(name = "bench_events")]
struct Args {
    /// The server, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    address: String,
    /// The writing user, their session token and chat.
    #[arg(long)]
    user: String,
    #[arg(long)]
    token: String,
    #[arg(long)]
    chat: i64,
    /// Writer tasks (W1's connections).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds of writing.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Streams to open before writing.
    #[arg(long, default_value_t = 0)]
    streams: usize,
    /// Whose streams they are (default: the writing user).
    #[arg(long)]
    stream_user: Option<String>,
    #[arg(long)]
    stream_token: Option<String>,
    /// Narrow the streams to this chat.
    #[arg(long)]
    stream_chat: Option<i64>,
}

/// Message ids whose latency is recorded: one in this many.
const SAMPLE: i64 = 16;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let start = Instant::now();
    let acked: Arc<Mutex<HashMap<i64, Duration>>> = Arc::default();
    let arrived: Arc<Mutex<Vec<(i64, Duration)>>> = Arc::default();
    let events = Arc::new(AtomicU64::new(0));
    let stream_user = args
        .stream_user
        .clone()
        .unwrap_or_else(|| args.user.clone());
    let stream_token = args
        .stream_token
        .clone()
        .unwrap_or_else(|| args.token.clone());
    let query = args
        .stream_chat
        .map_or(String::new(), |chat| format!("?chat_id={chat}"));

    // Open the streams, a few at a time, and wait until each has sent its first frame.
    let mut streams = Vec::with_capacity(args.streams);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let opening = Instant::now();
    let clients: Vec<reqwest::Client> = (0..16).map(|_| reqwest::Client::new()).collect();
    let mut pending = futures_util::stream::iter(0..args.streams)
        .map(|n| {
            let client = clients[n % clients.len()].clone();
            let url = format!("{}/api/users/{stream_user}/events{query}", args.address);
            let cookie = format!("neptun-session={stream_token}");
            async move {
                let response = client.get(url).header("Cookie", cookie).send().await?;
                if response.status() != 200 {
                    bail!("a stream was refused: {}", response.status());
                }
                let mut bytes = response.bytes_stream();
                match bytes.next().await {
                    Some(Ok(_)) => Ok(bytes),
                    _ => bail!("a stream ended before its first frame"),
                }
            }
        })
        .buffer_unordered(64);
    while let Some(opened) = pending.next().await {
        let mut bytes = opened?;
        let (events, arrived) = (Arc::clone(&events), Arc::clone(&arrived));
        let mut stopped = stopped.clone();
        streams.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            // What is left of the last chunk: the start of a frame still coming.
            let mut rest: Vec<u8> = Vec::new();
            loop {
                let chunk = tokio::select! {
                    chunk = bytes.next() => chunk,
                    _ = stopped.changed() => break,
                };
                let Some(Ok(chunk)) = chunk else { break };
                let now = start.elapsed();
                rest.extend_from_slice(&chunk);
                // Every frame that ended in this chunk, read in place; what remains of
                // the last one is kept once, not moved per frame.
                let mut at = 0;
                while let Some(end) = rest[at..].windows(2).position(|w| w == b"\n\n") {
                    let frame = &rest[at..at + end];
                    at += end + 2;
                    let Some(id) = frame.strip_prefix(b"id: ") else {
                        continue;
                    };
                    events.fetch_add(1, Ordering::Relaxed);
                    let id = id.split(|&b| b == b'\n').next().unwrap_or_default();
                    let message = std::str::from_utf8(id)
                        .ok()
                        .and_then(|id| id.split_once('.'))
                        .and_then(|(_, m)| m.parse::<i64>().ok());
                    if let Some(message) = message.filter(|m| m % SAMPLE == 0) {
                        seen.push((message, now));
                    }
                }
                rest.drain(..at);
            }
            arrived
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(seen);
        }));
    }
    let opened_in = opening.elapsed();

    // W1 for `duration`.
    let client = reqwest::Client::new();
    let url = format!(
        "{}/api/users/{}/chats/{}/messages",
        args.address, args.user, args.chat
    );
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let body = json!({"message": "A benchmark message of about the length of a short chat turn, sent to see it arrive.", "actor": "user"}).to_string();
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writing = Instant::now();
    let writers: Vec<_> = (0..args.connections)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            let cookie = format!("neptun-session={}", args.token);
            let (ok, failed, acked) = (Arc::clone(&ok), Arc::clone(&failed), Arc::clone(&acked));
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let sent = client
                        .post(&url)
                        .header("Cookie", &cookie)
                        .header("Content-Type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    let Ok(response) = sent else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let at = start.elapsed();
                    if response.status() != 200 {
                        failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let id = response
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|body| body["chatMessage"]["id"].as_i64());
                    ok.fetch_add(1, Ordering::Relaxed);
                    if let Some(id) = id.filter(|id| id % SAMPLE == 0) {
                        acked
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(id, at);
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await?;
    }
    let wrote_for = writing.elapsed();
    // Events of the last writes still on their way.
    if args.streams > 0 && args.stream_chat.is_some() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.send_replace(true);
    for stream in streams {
        let _ = stream.await;
    }

    let acked = acked.lock().unwrap_or_else(|e| e.into_inner());
    let arrived = arrived.lock().unwrap_or_else(|e| e.into_inner());
    let mut latencies: Vec<f64> = arrived
        .iter()
        .filter_map(|(id, at)| {
            let acked = acked.get(id)?;
            Some(at.saturating_sub(*acked).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        (!latencies.is_empty()).then(|| {
            let at = ((latencies.len() as f64 - 1.0) * q).round() as usize;
            latencies[at]
        })
    };
    let ok = ok.load(Ordering::Relaxed);
    println!(
        "{}",
        json!({
            "streams": args.streams,
            "streams_opened_in_s": opened_in.as_secs_f64(),
            "w1_requests": ok,
            "w1_failed": failed.load(Ordering::Relaxed),
            "w1_req_s": ok as f64 / wrote_for.as_secs_f64(),
            "events_received": events.load(Ordering::Relaxed),
            "latency_samples": latencies.len(),
            "latency_p50_ms": quantile(0.5),
            "latency_p99_ms": quantile(0.99),
            "latency_max_ms": latencies.last(),
        })
    );
    Ok(())
}
