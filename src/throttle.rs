//! Throttling of password guessing and mass sign-up, in memory, per process.
//!
//! Three records, each with its own [`Backoff`](crate::throttle::Backoff):
//!
//! - failed logins per **account and client address** (default: 5 free, then 1 s, 2 s,
//!   4 s ... up to 15 min between attempts),
//! - failed logins per **client address**, whatever the account (20 free, same delays),
//! - sign-ups per **client address** (10 free, then 1 min doubling up to 1 h).
//!
//! While a record is locked, every attempt it covers is refused with 429 and
//! `Retry-After`, the right password included: otherwise a "locked" answer would only
//! mean "wrong password" and guessing would go on at full speed. The password is not
//! even checked then, so a refused attempt costs no hash. An attempt counts as failed
//! from the moment it is let through until it succeeds, so many attempts sent at once
//! cannot all slip past the count.
//!
//! There is deliberately no lock per account alone: anyone could then lock a user out
//! everywhere with a handful of requests. A lock covers that account *from that
//! address*, so the real user logging in from elsewhere is not affected; guessing one
//! account from many addresses is still bounded per address. A success clears the
//! record of that account and address (not the address's own record, or an attacker
//! with an account of their own could clear it between guesses). A record is forgotten
//! after [`Backoff::forget_after`](crate::throttle::Backoff::forget_after) without a new failure.
//!
//! Addresses are counted per IPv4 address and per IPv6 /64 (one host usually holds a
//! whole /64). Emails are kept as SHA-256 digests, never in clear.
//!
//! # Memory
//!
//! At most [`ThrottleSettings::max_records`](crate::throttle::ThrottleSettings::max_records) records (about 100 bytes each). When the
//! table is full, forgotten and unlocked records are dropped (that gives a few free
//! attempts back to the keys dropped); if every record is a live lock, an attempt that
//! needs a new record is refused with 429 until locks expire: guessing must not become
//! free because the table is full.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How many attempts a record lets through before it starts locking, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Attempts let through before the first lock; 0 turns this record off.
    pub free: u32,
    /// The first lock; each further attempt doubles it.
    pub first_lock: Duration,
    /// The longest lock.
    pub max_lock: Duration,
    /// A record with no attempt for this long is forgotten (once unlocked).
    pub forget_after: Duration,
}

impl Backoff {
    /// No throttling.
    pub const OFF: Backoff = Backoff {
        free: 0,
        first_lock: Duration::ZERO,
        max_lock: Duration::ZERO,
        forget_after: Duration::ZERO,
    };

    /// The lock after `count` counted attempts: none below `free`, then `first_lock`
    /// doubling per attempt, at most `max_lock`.
    fn lock_after(&self, count: u32) -> Option<Duration> {
        let beyond = count.checked_sub(self.free)?;
        let factor = 1u32.checked_shl(beyond).unwrap_or(u32::MAX);
        Some(
            self.first_lock
                .checked_mul(factor)
                .map_or(self.max_lock, |lock| lock.min(self.max_lock)),
        )
    }
}

/// The three backoffs, and how many records they may keep in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failed logins per account and client address.
    pub login_per_account: Backoff,
    /// Failed logins per client address, whatever the account.
    pub login_per_address: Backoff,
    /// Sign-ups per client address.
    pub sign_up_per_address: Backoff,
    /// The most records kept in memory.
    pub max_records: usize,
}

impl ThrottleSettings {
    /// No throttling at all.
    pub const OFF: ThrottleSettings = ThrottleSettings {
        login_per_account: Backoff::OFF,
        login_per_address: Backoff::OFF,
        sign_up_per_address: Backoff::OFF,
        max_records: 0,
    };
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        let logins = Backoff {
            free: 5,
            first_lock: Duration::from_secs(1),
            max_lock: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(60 * 60),
        };
        ThrottleSettings {
            login_per_account: logins,
            login_per_address: Backoff { free: 20, ..logins },
            sign_up_per_address: Backoff {
                free: 10,
                first_lock: Duration::from_secs(60),
                max_lock: Duration::from_secs(60 * 60),
                forget_after: Duration::from_secs(60 * 60),
            },
            max_records: 100_000,
        }
    }
}

/// Which record: a digest of its kind, the client's network and, for logins per
/// account, the email.
type Key = [u8; 32];

#[derive(Debug, Clone, Copy)]
enum Kind {
    LoginPerAccount,
    LoginPerAddress,
    SignUpPerAddress,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// The throttle shared by all workers of a server.
pub struct Throttle {
    settings: ThrottleSettings,
    records: Mutex<HashMap<Key, Record>>,
}

/// An attempt let through, counted as failed until told otherwise. Dropped without a
/// verdict (the password was never checked: overload, a storage error, a client that
/// went away), it is not counted at all.
#[must_use = "say whether the attempt succeeded, or it is not counted"]
pub struct Attempt {
    throttle: Arc<Throttle>,
    charged: Vec<(Key, Kind)>,
    account: Option<Key>,
    settled: bool,
}

impl Attempt {
    /// The password was wrong: the attempt stays counted, and any lock it brings runs
    /// from now, not from when the attempt began.
    pub fn failed(self) {
        self.failed_at(Instant::now());
    }

    /// The sign-up was answered (made, or the email was taken): it stays counted, as
    /// [`failed`](Attempt::failed) does for a login.
    pub fn counted(self) {
        self.failed_at(Instant::now());
    }

    fn failed_at(mut self, now: Instant) {
        self.settled = true;
        let mut records = self.throttle.lock();
        for (key, kind) in &self.charged {
            let backoff = self.throttle.backoff(*kind);
            if let Some(record) = records.get_mut(key) {
                record.last = record.last.max(now);
                record.locked_until = backoff
                    .lock_after(record.count)
                    .map(|lock| record.last + lock);
            }
        }
    }

    /// The login succeeded: the record of this account and address is cleared, and the
    /// attempt is not counted against the address.
    pub fn succeeded(mut self) {
        self.settled = true;
        let mut records = self.throttle.lock();
        if let Some(account) = self.account {
            records.remove(&account);
        }
        for (key, kind) in &self.charged {
            if Some(*key) != self.account {
                self.throttle.refund(&mut records, key, *kind);
            }
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut records = self.throttle.lock();
        for (key, kind) in &self.charged {
            self.throttle.refund(&mut records, key, *kind);
        }
    }
}

impl Throttle {
    /// A throttle with these settings and no records.
    pub fn new(settings: ThrottleSettings) -> Throttle {
        Throttle {
            settings,
            records: Mutex::new(HashMap::new()),
        }
    }

    /// Lets a login for `email` from `client` through, counted, or says how long to wait.
    pub fn begin_login(self: &Arc<Self>, email: &str, client: IpAddr) -> Result<Attempt, Duration> {
        self.begin_login_at(email, client, Instant::now())
    }

    /// Lets a sign-up from `client` through, counted, or says how long to wait.
    pub fn begin_sign_up(self: &Arc<Self>, client: IpAddr) -> Result<Attempt, Duration> {
        self.begin_sign_up_at(client, Instant::now())
    }

    fn begin_login_at(
        self: &Arc<Self>,
        email: &str,
        client: IpAddr,
        now: Instant,
    ) -> Result<Attempt, Duration> {
        let account = key(Kind::LoginPerAccount, client, email);
        let mut attempt = self.begin(
            &[
                (account, Kind::LoginPerAccount),
                (
                    key(Kind::LoginPerAddress, client, ""),
                    Kind::LoginPerAddress,
                ),
            ],
            now,
        )?;
        attempt.account = Some(account);
        Ok(attempt)
    }

    fn begin_sign_up_at(
        self: &Arc<Self>,
        client: IpAddr,
        now: Instant,
    ) -> Result<Attempt, Duration> {
        self.begin(
            &[(
                key(Kind::SignUpPerAddress, client, ""),
                Kind::SignUpPerAddress,
            )],
            now,
        )
    }

    /// Refuses if any of `keys` is locked; otherwise counts the attempt on each.
    fn begin(self: &Arc<Self>, keys: &[(Key, Kind)], now: Instant) -> Result<Attempt, Duration> {
        let keys: Vec<(Key, Kind)> = keys
            .iter()
            .copied()
            .filter(|(_, kind)| self.backoff(*kind).free > 0)
            .collect();
        let mut records = self.lock();
        let wait = keys
            .iter()
            .filter_map(|(key, _)| records.get(key)?.locked_until)
            .filter_map(|until| until.checked_duration_since(now))
            .filter(|wait| !wait.is_zero())
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        let new_records = keys
            .iter()
            .filter(|(key, _)| !records.contains_key(key))
            .count();
        if records.len() + new_records > self.settings.max_records {
            self.make_room(&mut records, now);
            if records.len() + new_records > self.settings.max_records {
                log::warn!("the login throttle table is full of live locks; refusing new clients");
                return Err(self
                    .settings
                    .login_per_address
                    .first_lock
                    .max(Duration::from_secs(1)));
            }
        }
        for (key, kind) in &keys {
            let backoff = self.backoff(*kind);
            let record = records.entry(*key).or_insert(Record {
                count: 0,
                last: now,
                locked_until: None,
            });
            if forgotten(record, &backoff, now) {
                record.count = 0;
            }
            record.count = record.count.saturating_add(1);
            record.last = now;
            record.locked_until = backoff.lock_after(record.count).map(|lock| now + lock);
        }
        Ok(Attempt {
            throttle: Arc::clone(self),
            charged: keys,
            account: None,
            settled: false,
        })
    }

    /// Takes back one counted attempt from the record `key`.
    fn refund(&self, records: &mut HashMap<Key, Record>, key: &Key, kind: Kind) {
        let backoff = self.backoff(kind);
        if let Some(record) = records.get_mut(key) {
            record.count = record.count.saturating_sub(1);
            record.locked_until = backoff
                .lock_after(record.count)
                .map(|lock| record.last + lock);
            if record.count == 0 {
                records.remove(key);
            }
        }
    }

    /// Drops every record that is not a live lock.
    fn make_room(&self, records: &mut HashMap<Key, Record>, now: Instant) {
        let before = records.len();
        records.retain(|_, record| record.locked_until.is_some_and(|until| until > now));
        log::info!(
            "the login throttle table was full: dropped {} unlocked records",
            before - records.len()
        );
    }

    fn backoff(&self, kind: Kind) -> Backoff {
        match kind {
            Kind::LoginPerAccount => self.settings.login_per_account,
            Kind::LoginPerAddress => self.settings.login_per_address,
            Kind::SignUpPerAddress => self.settings.sign_up_per_address,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Record>> {
        // A poisoned lock only means a thread panicked mid-update; the records are
        // still usable, and the throttle must not take logins down.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether `record` has gone long enough without an attempt to start over.
fn forgotten(record: &Record, backoff: &Backoff, now: Instant) -> bool {
    let unlocked = record.locked_until.is_none_or(|until| until <= now);
    unlocked && now.duration_since(record.last) >= backoff.forget_after
}

/// The record key of `kind` for `client` (its /64 for IPv6) and `email`.
fn key(kind: Kind, client: IpAddr, email: &str) -> Key {
    let mut digest = Sha256::new();
    digest.update([kind as u8]);
    match crate::client_ip::bucket(client) {
        IpAddr::V4(v4) => digest.update(v4.octets()),
        IpAddr::V6(v6) => digest.update(v6.octets()),
    }
    digest.update(email.as_bytes());
    digest.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const HOME: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const AWAY: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));

    fn new_throttle(settings: ThrottleSettings) -> Arc<Throttle> {
        Arc::new(Throttle::new(settings))
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn locks_start_after_the_free_attempts_and_double_up_to_the_most() {
        let backoff = ThrottleSettings::default().login_per_account;
        let locks: Vec<Option<Duration>> = (3..=16).map(|n| backoff.lock_after(n)).collect();
        let mut expected = vec![None, None, Some(secs(1)), Some(secs(2)), Some(secs(4))];
        expected.extend([8, 16, 32, 64, 128, 256, 512, 900, 900].map(|s| Some(secs(s))));
        assert_eq!(locks, expected);
        assert_eq!(backoff.lock_after(u32::MAX), Some(secs(900)), "no overflow");
    }

    #[test]
    fn failed_logins_lock_the_account_from_that_address_for_any_password() {
        let throttle = new_throttle(ThrottleSettings::default());
        let start = Instant::now();
        for n in 0..5 {
            let attempt = throttle.begin_login_at("ada@example.org", HOME, start);
            attempt
                .unwrap_or_else(|_| panic!("attempt {n} is free"))
                .failed_at(start);
        }
        let wait = throttle
            .begin_login_at("ada@example.org", HOME, start)
            .err()
            .expect("the sixth attempt waits, whatever its password");
        assert_eq!(wait, secs(1));
        assert!(
            throttle
                .begin_login_at("ada@example.org", AWAY, start)
                .is_ok(),
            "the same account from another address"
        );
        let outwaited = throttle.begin_login_at("ada@example.org", HOME, start + secs(1));
        outwaited
            .expect("the lock is outwaited")
            .failed_at(start + secs(1));
        let wait = throttle
            .begin_login_at("ada@example.org", HOME, start + secs(1))
            .err()
            .expect("locked again, for longer");
        assert_eq!(wait, secs(2));
    }

    #[test]
    fn a_lock_runs_from_the_failure_not_from_the_start_of_the_attempt() {
        let throttle = new_throttle(ThrottleSettings {
            login_per_account: Backoff {
                free: 1,
                ..ThrottleSettings::default().login_per_account
            },
            ..ThrottleSettings::default()
        });
        let start = Instant::now();
        let slow_check = start + secs(5);
        let attempt = throttle.begin_login_at("ada@example.org", HOME, start);
        attempt.unwrap().failed_at(slow_check);
        let wait = throttle.begin_login_at("ada@example.org", HOME, slow_check);
        assert_eq!(wait.err(), Some(secs(1)));
    }

    #[test]
    fn a_success_clears_the_account_but_not_the_address() {
        let throttle = new_throttle(ThrottleSettings::default());
        let now = Instant::now();
        for _ in 0..4 {
            throttle
                .begin_login_at("ada@example.org", HOME, now)
                .unwrap()
                .failed_at(now);
        }
        throttle
            .begin_login_at("ada@example.org", HOME, now)
            .unwrap()
            .succeeded();
        for n in 0..5 {
            let attempt = throttle.begin_login_at("ada@example.org", HOME, now);
            attempt
                .unwrap_or_else(|_| panic!("attempt {n} after the success"))
                .failed_at(now);
        }
        // 4 + 5 failures from HOME so far; the address locks after 20 of any account.
        for n in 0..11 {
            let email = format!("user{n}@example.org");
            throttle
                .begin_login_at(&email, HOME, now)
                .unwrap()
                .failed_at(now);
        }
        assert!(
            throttle
                .begin_login_at("new@example.org", HOME, now)
                .is_err()
        );
        assert!(
            throttle
                .begin_login_at("new@example.org", AWAY, now)
                .is_ok()
        );
    }

    #[test]
    fn attempts_at_once_are_counted_before_they_finish_and_refunded_unanswered() {
        let throttle = new_throttle(ThrottleSettings::default());
        let now = Instant::now();
        let in_flight: Vec<Attempt> = (0..5)
            .map(|_| {
                throttle
                    .begin_login_at("ada@example.org", HOME, now)
                    .unwrap()
            })
            .collect();
        assert!(
            throttle
                .begin_login_at("ada@example.org", HOME, now)
                .is_err(),
            "five unfinished attempts use the free ones"
        );
        drop(in_flight);
        assert!(
            throttle
                .begin_login_at("ada@example.org", HOME, now)
                .is_ok(),
            "attempts never answered do not count"
        );
    }

    #[test]
    fn records_are_forgotten_after_a_quiet_while() {
        let throttle = new_throttle(ThrottleSettings::default());
        let start = Instant::now();
        for _ in 0..6 {
            if let Ok(attempt) = throttle.begin_login_at("ada@example.org", HOME, start) {
                attempt.failed_at(start);
            }
        }
        let later = start + secs(60 * 60);
        for n in 0..5 {
            let attempt = throttle.begin_login_at("ada@example.org", HOME, later);
            attempt
                .unwrap_or_else(|_| panic!("attempt {n} an hour later"))
                .failed_at(later);
        }
    }

    #[test]
    fn sign_ups_are_counted_per_address() {
        let throttle = new_throttle(ThrottleSettings::default());
        let now = Instant::now();
        for _ in 0..10 {
            throttle.begin_sign_up_at(HOME, now).unwrap().failed_at(now);
        }
        assert_eq!(throttle.begin_sign_up_at(HOME, now).err(), Some(secs(60)));
        assert!(throttle.begin_sign_up_at(AWAY, now).is_ok());
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64_and_a_mapped_ipv4_is_the_ipv4() {
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let kind = Kind::LoginPerAddress;
        assert_eq!(key(kind, one, ""), key(kind, same_64, ""));
        assert_ne!(key(kind, one, ""), key(kind, other_64, ""));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(key(kind, mapped, ""), key(kind, HOME, ""));
        assert_ne!(
            key(kind, IpAddr::V6(Ipv6Addr::LOCALHOST), ""),
            key(kind, HOME, "")
        );
    }

    #[test]
    fn a_full_table_drops_unlocked_records_and_refuses_when_all_are_locks() {
        let throttle = new_throttle(ThrottleSettings {
            max_records: 4,
            ..ThrottleSettings::default()
        });
        let now = Instant::now();
        let client = |n: u8| IpAddr::V4(Ipv4Addr::new(203, 0, 113, n));
        // Two records (account, address) per client.
        throttle
            .begin_login_at("a@example.org", client(1), now)
            .unwrap()
            .failed_at(now);
        throttle
            .begin_login_at("a@example.org", client(2), now)
            .unwrap()
            .failed_at(now);
        throttle
            .begin_login_at("a@example.org", client(3), now)
            .unwrap()
            .failed_at(now);
        assert_eq!(throttle.lock().len(), 2, "the unlocked records made room");
        let locks = new_throttle(ThrottleSettings {
            max_records: 2,
            login_per_account: Backoff {
                free: 1,
                ..ThrottleSettings::default().login_per_account
            },
            login_per_address: Backoff {
                free: 1,
                ..ThrottleSettings::default().login_per_address
            },
            ..ThrottleSettings::default()
        });
        locks
            .begin_login_at("a@example.org", client(1), now)
            .unwrap()
            .failed_at(now);
        assert!(
            locks
                .begin_login_at("a@example.org", client(2), now)
                .is_err(),
            "no room and nothing to drop: refused, not let through unthrottled"
        );
    }

    #[test]
    fn a_backoff_with_no_free_attempts_is_off() {
        let throttle = new_throttle(ThrottleSettings {
            login_per_account: Backoff::OFF,
            login_per_address: Backoff::OFF,
            ..ThrottleSettings::default()
        });
        let now = Instant::now();
        for _ in 0..100 {
            throttle
                .begin_login_at("ada@example.org", HOME, now)
                .unwrap()
                .failed_at(now);
        }
        assert!(throttle.lock().is_empty());
    }
}
