//! A flood of bogus logins against the real binary: memory stays bounded (the hashing
//! threads are few and reuse their Argon2 memory) and a real user's login, from another
//! address, still answers in about the time it takes when the server is idle.
//!
//! Throttling of failed logins is turned off here, so every bogus login reaches the
//! hashing threads: this is about what a flood from many addresses, or from one
//! before any lock, can cost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::client_from;
use crate::process::{ServerProcess, TempDb};

/// Connections sending bogus logins at once.
const FLOODERS: usize = 200;

/// Most the flood may add to the server's resident memory. One hashing thread's Argon2
/// memory is 19 MiB; a new thread per hash kept ~1 GB resident under this flood.
const MAX_GROWTH_KB: u64 = 200 * 1024;

/// A real login under the flood may take this many times its idle time.
const MAX_SLOWDOWN: f64 = 25.0;

/// A value from `/proc/PID/status` in kB (`VmRSS`, `VmHWM`): the kernel always reports
/// these in kB, whatever the page size.
fn status_kb(server: &ServerProcess, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in {status}"))
}

/// One real login from `client`; its status and how long it took.
async fn timed_login(client: &reqwest::Client, url: &str) -> (u16, Duration) {
    let started = Instant::now();
    let response = client
        .post(url)
        .json(&json!({"email": "ada@example.org", "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), started.elapsed())
}

/// The median of three timed logins, each asserted to succeed.
async fn median_login(client: &reqwest::Client, url: &str, when: &str) -> Duration {
    let mut times = Vec::new();
    for _ in 0..3 {
        let (status, took) = timed_login(client, url).await;
        assert_eq!(status, 200, "a real login {when}");
        times.push(took);
    }
    times.sort();
    times[1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bogus_logins_keeps_memory_bounded_and_real_logins_fast() {
    // Arrange: a user, and the idle cost of its login once every hashing thread has
    // hashed (so the baseline already holds their memory, as a busy server's would).
    let db = TempDb::new();
    let server = db.serve_with_args(&[
        "--login-failures",
        "0",
        "--login-failures-per-address",
        "0",
        "--sign-ups-per-address",
        "0",
    ]);
    let sign_up = format!("{}/api/auth/sign-up", server.address());
    let login = format!("{}/api/auth/login", server.address());
    let real_user = client_from("127.0.0.2");
    let response = real_user
        .post(&sign_up)
        .json(&json!({"email": "ada@example.org", "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let warm_up: Vec<_> = (0..4)
        .map(|_| {
            let client = real_user.clone();
            let login = login.clone();
            tokio::spawn(async move { timed_login(&client, &login).await })
        })
        .collect();
    for task in warm_up {
        task.await.unwrap();
    }
    let idle = median_login(&real_user, &login, "when idle").await;
    let rss_before = status_kb(&server, "VmRSS");

    // Act: 200 connections from 127.0.0.1 send bogus logins back to back until the
    // real user's logins are done.
    let stop = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicUsize::new(0));
    let busy = Arc::new(AtomicUsize::new(0));
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|n| {
            let (stop, checked, busy) = (stop.clone(), checked.clone(), busy.clone());
            let login = login.clone();
            tokio::spawn(async move {
                // One client each: its own connection, as 200 attackers' would be.
                let client = client_from("127.0.0.1");
                let body = json!({"email": format!("bogus{n}@example.org"), "password": "not the password"});
                while !stop.load(Ordering::Relaxed) {
                    let Ok(response) = client.post(&login).json(&body).send().await else {
                        continue;
                    };
                    match response.status().as_u16() {
                        401 => checked.fetch_add(1, Ordering::Relaxed),
                        503 => {
                            let retry_after = response.headers().get("retry-after").cloned();
                            assert_eq!(retry_after.unwrap(), "1");
                            busy.fetch_add(1, Ordering::Relaxed);
                            // Told to retry in a second, and doing so: the flood is meant
                            // to keep the hashing threads busy, which it does, not to
                            // measure how fast 503s go out on a shared 2-core machine.
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            0
                        }
                        other => panic!("a bogus login answered {other}"),
                    };
                }
            })
        })
        .collect();
    // The flood is on once many bogus logins have been hashed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while checked.load(Ordering::Relaxed) < 20 {
        assert!(Instant::now() < deadline, "the flood never got going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let flooded = median_login(&real_user, &login, "under the flood").await;
    let hashed_meanwhile = checked.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        flooder.await.unwrap();
    }

    // Assert
    let peak = status_kb(&server, "VmHWM");
    let growth = peak.saturating_sub(rss_before);
    let (checked, busy) = (
        checked.load(Ordering::Relaxed),
        busy.load(Ordering::Relaxed),
    );
    eprintln!(
        "idle login {idle:?}, under the flood {flooded:?}; RSS {rss_before} kB, peak {peak} kB; \
         {checked} bogus logins checked ({hashed_meanwhile} before the real ones ended), {busy} told 503"
    );
    assert!(
        growth < MAX_GROWTH_KB,
        "the flood grew RSS by {growth} kB (from {rss_before} kB to a peak of {peak} kB)"
    );
    assert!(busy > 0, "the flood filled the bounded queue");
    assert!(
        flooded.as_secs_f64() < idle.as_secs_f64() * MAX_SLOWDOWN,
        "a real login took {flooded:?} under the flood, {idle:?} idle"
    );
}
