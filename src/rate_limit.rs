//! A per-session limit on write requests (off by default): a token bucket per session
//! that holds `per_minute` tokens and refills continuously. A write that finds the
//! bucket empty is refused with 429 and a `Retry-After` saying when a token will be back.
//!
//! Buckets live in memory, so the limit is per process and restarts with it; that is
//! enough to stop a runaway client, which is what it is for.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Drop idle, full buckets once the map holds this many.
const PRUNE_AT: usize = 10_000;

/// The limiter shared by all workers.
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<[u8; 32], Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` writes per session, in bursts of up to as many.
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for the session with this token hash: `Ok` if it may write now,
    /// `Err(wait)` with the time until it may.
    pub fn check(&self, session: &[u8; 32]) -> Result<(), Duration> {
        self.check_at(session, Instant::now())
    }

    fn check_at(&self, session: &[u8; 32], now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            // No writes at all: say to come back in a minute rather than never.
            return Err(Duration::from_secs(60));
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        // A poisoned lock only means another thread panicked mid-update; the map is
        // still usable, and a rate limiter must not take the service down.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= PRUNE_AT {
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * per_second < capacity
            });
        }
        let bucket = buckets.entry(*session).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let refilled =
            bucket.tokens + now.duration_since(bucket.updated).as_secs_f64() * per_second;
        bucket.tokens = refilled.min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_up_to_the_limit_passes_then_writes_wait_for_the_refill() {
        let limiter = RateLimiter::new(60);
        let session = [7u8; 32];
        let start = Instant::now();
        for _ in 0..60 {
            assert!(limiter.check_at(&session, start).is_ok());
        }
        let wait = limiter.check_at(&session, start).unwrap_err();
        assert!((0.99..=1.01).contains(&wait.as_secs_f64()), "{wait:?}");
        assert!(
            limiter
                .check_at(&session, start + Duration::from_secs(1))
                .is_ok()
        );
    }

    #[test]
    fn sessions_have_their_own_buckets() {
        let limiter = RateLimiter::new(1);
        let start = Instant::now();
        assert!(limiter.check_at(&[1; 32], start).is_ok());
        assert!(limiter.check_at(&[1; 32], start).is_err());
        assert!(limiter.check_at(&[2; 32], start).is_ok());
    }
}
