//! A per-user limit on write requests (off by default): a token bucket per user that
//! holds `per_minute` tokens and refills continuously. A write that finds the bucket
//! empty is refused with 429 and a `Retry-After` saying when a token will be back.
//!
//! The bucket is the user's, not the session's: logging in again must not buy a fresh
//! allowance. Buckets live in memory, so the limit is per process and restarts with it;
//! that is enough to stop a runaway client, which is what it is for.
//!
//! Full buckets carry no information (a new one starts full), so they are dropped. The
//! map is swept only when it has doubled since the last sweep, so however many users
//! hold partly used buckets, a check costs the same on average: a sweep of `n` buckets
//! is paid for by the `n / 2` or more new users that came since the previous one.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The map is not swept before it holds this many buckets.
const FIRST_SWEEP_AT: usize = 10_000;

/// The limiter shared by all workers.
pub struct RateLimiter {
    per_minute: NonZeroU32,
    buckets: Mutex<Buckets>,
}

/// The buckets, and the size at which the next sweep is due.
struct Buckets {
    by_user: HashMap<String, Bucket>,
    sweep_at: usize,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` writes per user, in bursts of up to as many. "No
    /// limit" is no limiter at all, so there is no zero to mean it.
    pub fn new(per_minute: NonZeroU32) -> RateLimiter {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(Buckets {
                by_user: HashMap::new(),
                sweep_at: FIRST_SWEEP_AT,
            }),
        }
    }

    /// Takes a token for `user_id`: `Ok` if they may write now, `Err(wait)` with the
    /// time until they may.
    pub fn check(&self, user_id: &str) -> Result<(), Duration> {
        self.check_at(user_id, Instant::now())
    }

    fn check_at(&self, user_id: &str, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(self.per_minute.get());
        let per_second = capacity / 60.0;
        let refilled = |b: &Bucket| {
            b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * per_second
        };
        // A poisoned lock only means another thread panicked mid-update; the map is
        // still usable, and a rate limiter must not take the service down.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.by_user.len() >= buckets.sweep_at {
            buckets.by_user.retain(|_, b| refilled(b) < capacity);
            buckets.sweep_at = FIRST_SWEEP_AT.max(buckets.by_user.len() * 2);
        }
        let bucket = match buckets.by_user.get_mut(user_id) {
            Some(bucket) => bucket,
            None => buckets.by_user.entry(user_id.to_owned()).or_insert(Bucket {
                tokens: capacity,
                updated: now,
            }),
        };
        bucket.tokens = refilled(bucket).min(capacity);
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

    fn per_minute(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn a_burst_up_to_the_limit_passes_then_writes_wait_for_the_refill() {
        let limiter = RateLimiter::new(per_minute(60));
        let start = Instant::now();
        for _ in 0..60 {
            assert!(limiter.check_at("ada", start).is_ok());
        }
        let wait = limiter.check_at("ada", start).unwrap_err();
        assert!((0.99..=1.01).contains(&wait.as_secs_f64()), "{wait:?}");
        assert!(
            limiter
                .check_at("ada", start + Duration::from_secs(1))
                .is_ok()
        );
    }

    #[test]
    fn users_have_their_own_buckets() {
        let limiter = RateLimiter::new(per_minute(1));
        let start = Instant::now();
        assert!(limiter.check_at("ada", start).is_ok());
        assert!(limiter.check_at("ada", start).is_err());
        assert!(limiter.check_at("bob", start).is_ok());
    }

    /// The fastest of a few runs of `checks` checks cycling over `keys`, so that a busy
    /// machine slows a run down without failing the comparison.
    fn fastest_run(limiter: &RateLimiter, keys: &[String], checks: usize, now: Instant) -> f64 {
        (0..5)
            .map(|_| {
                let started = Instant::now();
                for i in 0..checks {
                    let _ = limiter.check_at(&keys[i * 7919 % keys.len()], now);
                }
                started.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    }

    #[test]
    fn a_check_costs_about_the_same_with_100_000_partly_used_buckets_as_with_10() {
        // Arrange: every user has written once, so no bucket is full and none can go.
        let now = Instant::now();
        let keys = |n: usize| (0..n).map(|i| format!("user-{i}")).collect::<Vec<_>>();
        let (few, many) = (keys(10), keys(100_000));
        let small = RateLimiter::new(per_minute(1_000_000));
        let large = RateLimiter::new(per_minute(1_000_000));
        for key in &few {
            small.check_at(key, now).unwrap();
        }
        for key in &many {
            large.check_at(key, now).unwrap();
        }

        // Act
        let baseline = fastest_run(&small, &few, 2_000, now);
        let loaded = fastest_run(&large, &many, 2_000, now);

        // Assert: cache misses in a large map cost something; a sweep per check would
        // cost thousands of times the baseline.
        assert!(
            loaded < baseline * 50.0 + 0.005,
            "2000 checks: {loaded:.6} s with 100,000 buckets, {baseline:.6} s with 10"
        );
    }

    #[test]
    fn full_buckets_are_dropped_when_the_map_has_doubled() {
        let limiter = RateLimiter::new(per_minute(60));
        let start = Instant::now();
        for i in 0..FIRST_SWEEP_AT {
            limiter.check_at(&format!("user-{i}"), start).unwrap();
        }
        // A minute later every bucket is full again: the next check sweeps them all.
        limiter
            .check_at("late", start + Duration::from_secs(60))
            .unwrap();
        let buckets = limiter.buckets.lock().unwrap();
        assert_eq!(buckets.by_user.len(), 1);
        assert_eq!(buckets.sweep_at, FIRST_SWEEP_AT);
    }
}
