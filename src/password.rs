//! Password hashing with Argon2id (random salt, PHC string). Passwords are never stored
//! or logged in clear.
//!
//! # Design
//!
//! A hash is deliberately slow (tens of milliseconds) and takes ~19 MiB, so requests
//! never hash on the async workers or on the blocking threads that serve reads. They
//! hash on a fixed set of long-lived threads (one per core but one, at least one, at
//! most [`MAX_HASHING_THREADS`](crate::password::MAX_HASHING_THREADS)), started once per process and shared by every server
//! it builds. Waiting hashes are taken round-robin by client address. Each thread keeps its own Argon2 memory and reuses it for every hash, so a
//! flood of logins costs at most that many times 19 MiB, however long it lasts. (A new
//! thread per hash, as before, left each thread's freed 19 MiB in its own malloc arena:
//! 200 connections of bogus logins kept ~1 GB resident.)
//!
//! Each server bounds its own share with a [`Hasher`](crate::password::Hasher): at most the threads plus
//! [`HashSettings::queue`](crate::password::HashSettings::queue) hashes in flight, and at most [`HashSettings::per_client`](crate::password::HashSettings::per_client) of
//! them from one client address, so one address flooding logins cannot make everyone
//! else wait behind it. Beyond either bound the answer is [`HashError::Busy`](crate::password::HashError::Busy) at once
//! (503 with `Retry-After`), which costs nothing.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// The most hashing threads a process starts, whatever its core count: each keeps
/// ~19 MiB.
pub const MAX_HASHING_THREADS: usize = 4;

/// The most Argon2 memory a stored hash may ask for, in 1 KiB blocks (64 MiB). Ours ask
/// for 19 MiB; a hash asking for more is refused rather than allocated.
const MAX_BLOCKS: usize = 64 * 1024;

/// How many hashes a server lets wait, and how many of them one client may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashSettings {
    /// Hashes that may wait for a hashing thread, beyond those running.
    pub queue: usize,
    /// Hashes (running or waiting) one client address may have at once.
    pub per_client: usize,
}

impl Default for HashSettings {
    fn default() -> Self {
        HashSettings {
            queue: 32,
            per_client: 4,
        }
    }
}

/// Why hashing failed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Too many hashes are waiting, or this client already has its share; retry shortly.
    #[error("too many password hashes are waiting")]
    Busy,
    /// Hashing itself failed: always a server-side problem.
    #[error("password hashing failed")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn failed(err: impl std::fmt::Display) -> HashError {
    HashError::Failed(err.to_string().into())
}

/// One server's admission to the shared hashing threads.
#[derive(Clone)]
pub struct Hasher {
    settings: HashSettings,
    in_flight: Arc<Mutex<InFlight>>,
}

/// Hashes admitted and not yet finished, in total and per client. The map only holds
/// clients with a hash in flight, so it is never larger than the bound on the total.
#[derive(Default)]
struct InFlight {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// A hash's place among those in flight; given back when the hash is done (dropped on
/// the hashing thread, so a client that goes away does not free it early).
struct Ticket {
    client: IpAddr,
    in_flight: Arc<Mutex<InFlight>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut in_flight = lock(&self.in_flight);
        in_flight.total = in_flight.total.saturating_sub(1);
        if let Some(count) = in_flight.per_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                in_flight.per_client.remove(&self.client);
            }
        }
    }
}

impl Hasher {
    /// A server's admission with these bounds; starts the process's hashing threads if
    /// they are not running yet.
    pub fn new(settings: HashSettings) -> Hasher {
        pool();
        Hasher {
            settings,
            in_flight: Arc::default(),
        }
    }

    /// Hashes `password` with Argon2id and a random salt for `client`; returns the PHC
    /// string.
    pub async fn hash(&self, client: IpAddr, password: String) -> Result<String, HashError> {
        self.run(client, move |memory| hash_with(memory, &password))
            .await
    }

    /// Whether `password` matches the stored PHC string, checked for `client`. With no
    /// stored hash (unknown email, or a user without a password) it verifies against a
    /// fixed dummy hash and answers false, so both cases take about as long as a real
    /// check.
    pub async fn verify(
        &self,
        client: IpAddr,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
        self.run(client, move |memory| {
            let known = stored.is_some();
            let phc = stored.as_deref().unwrap_or(DUMMY_HASH);
            let matches = verify_with(memory, &password, phc)?;
            Ok(known && matches)
        })
        .await
    }

    /// Admits `work` for `client` if there is room, runs it on a hashing thread and
    /// waits for its answer.
    async fn run<T: Send + 'static>(
        &self,
        client: IpAddr,
        work: impl FnOnce(&mut Vec<Block>) -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let ticket = self.admit(client)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let answer = work(memory);
            // Given back before the answer, so a client that sends its next request as
            // soon as it has this answer finds its place free.
            drop(ticket);
            // The caller may have gone away; then nobody wants the answer.
            let _ = reply.send(answer);
        });
        pool().submit(client, job)?;
        answer
            .await
            .map_err(|_| failed("a hashing thread stopped"))?
    }

    fn admit(&self, client: IpAddr) -> Result<Ticket, HashError> {
        let capacity = pool().threads + self.settings.queue;
        let mut in_flight = lock(&self.in_flight);
        let of_client = in_flight.per_client.get(&client).copied().unwrap_or(0);
        if in_flight.total >= capacity || of_client >= self.settings.per_client {
            return Err(HashError::Busy);
        }
        in_flight.total += 1;
        *in_flight.per_client.entry(client).or_insert(0) += 1;
        Ok(Ticket {
            client,
            in_flight: Arc::clone(&self.in_flight),
        })
    }
}

/// Work for a hashing thread, given that thread's Argon2 memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// The process's hashing threads and the queue that feeds them.
struct Pool {
    threads: usize,
    queue: Mutex<FairQueue>,
    ready: Condvar,
}

/// Waiting jobs, taken round-robin by client: each client with jobs waiting gets one
/// turn per round, so a real user's login waits behind at most one job of each other
/// client, not behind every job a flooding client queued first.
#[derive(Default)]
struct FairQueue {
    jobs: HashMap<IpAddr, VecDeque<Job>>,
    turns: VecDeque<IpAddr>,
}

impl FairQueue {
    fn push(&mut self, client: IpAddr, job: Job) {
        let jobs = self.jobs.entry(client).or_default();
        if jobs.is_empty() {
            self.turns.push_back(client);
        }
        jobs.push_back(job);
    }

    fn pop(&mut self) -> Option<Job> {
        let client = self.turns.pop_front()?;
        let jobs = self.jobs.get_mut(&client)?;
        let job = jobs.pop_front();
        if jobs.is_empty() {
            self.jobs.remove(&client);
        } else {
            self.turns.push_back(client);
        }
        job
    }
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        // One core is left to everything else, so a flood of logins cannot take the
        // whole machine from the other routes.
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .saturating_sub(1)
            .clamp(1, MAX_HASHING_THREADS);
        let mut started = 0;
        for _ in 0..threads {
            let spawned = std::thread::Builder::new()
                .name("neptun-password".to_owned())
                .spawn(hash_forever);
            match spawned {
                Ok(_) => started += 1,
                Err(err) => log::error!("cannot start a password hashing thread: {err}"),
            }
        }
        Pool {
            threads: started,
            queue: Mutex::default(),
            ready: Condvar::new(),
        }
    })
}

impl Pool {
    fn submit(&self, client: IpAddr, job: Job) -> Result<(), HashError> {
        if self.threads == 0 {
            return Err(failed("no password hashing thread is running"));
        }
        lock(&self.queue).push(client, job);
        self.ready.notify_one();
        Ok(())
    }
}

/// A hashing thread: takes jobs one at a time, always with the same memory, for as long
/// as the process runs.
fn hash_forever() {
    let pool = pool();
    let mut memory = Vec::new();
    loop {
        let job = {
            let mut queue = lock(&pool.queue);
            loop {
                if let Some(job) = queue.pop() {
                    break job;
                }
                queue = pool.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
        };
        job(&mut memory);
    }
}

/// A poisoned lock only means a thread panicked while holding it; the counters and
/// channels inside are still consistent, and hashing must not stop for it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hashes `password` with the default Argon2id parameters and a random salt, in
/// `memory` (grown to what the parameters need, and kept).
fn hash_with(memory: &mut Vec<Block>, password: &str) -> Result<String, HashError> {
    let mut salt_bytes = [0u8; 16];
    getrandom::fill(&mut salt_bytes).map_err(failed)?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(failed)?;
    let params = Params::default();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2_into(
        &Argon2::default(),
        memory,
        password.as_bytes(),
        &salt_bytes,
        &mut out,
    )?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params).try_into().map_err(failed)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(failed)?),
    };
    Ok(phc.to_string())
}

/// Whether `password` hashes to the stored PHC string `phc`, with its own parameters,
/// in `memory`. The comparison is constant-time ([`Output`]'s `PartialEq`).
fn verify_with(memory: &mut Vec<Block>, password: &str, phc: &str) -> Result<bool, HashError> {
    let parsed = PasswordHash::new(phc).map_err(failed)?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(failed("the stored hash has no salt or no output"));
    };
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(failed)?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(failed)?
        .unwrap_or_default();
    let params = Params::try_from(&parsed).map_err(failed)?;
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(failed)?;
    let mut out = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params);
    argon2_into(&argon2, memory, password.as_bytes(), salt_bytes, &mut out)?;
    Ok(Output::new(&out).map_err(failed)? == expected)
}

/// Runs `argon2` into `out`, growing `memory` to what its parameters need (up to
/// [`MAX_BLOCKS`]); the memory is overwritten, never freed.
fn argon2_into(
    argon2: &Argon2<'_>,
    memory: &mut Vec<Block>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), HashError> {
    let blocks = argon2.params().block_count();
    if blocks > MAX_BLOCKS {
        return Err(failed(format!(
            "the hash asks for {blocks} KiB of memory, more than {MAX_BLOCKS}"
        )));
    }
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    argon2
        .hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
        .map_err(failed)
}

/// Hashes `password` on the calling thread: for the command line, never for a request.
pub fn hash_now(password: &str) -> Result<String, HashError> {
    hash_with(&mut Vec::new(), password)
}

/// An Argon2id hash (default parameters) of a random password nobody knows.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$x6fH8hS3hDq6mPq2fa9T8Q0b1dJ7t0o0r8cY9xYk0aE";

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordVerifier;

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let hasher = Hasher::new(HashSettings::default());
        let phc = hasher
            .hash(CLIENT, "correct horse".to_owned())
            .await
            .unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        let verify = |password: &str| hasher.verify(CLIENT, password.to_owned(), Some(phc.clone()));
        assert!(verify("correct horse").await.unwrap());
        assert!(!verify("wrong horse").await.unwrap());
    }

    #[tokio::test]
    async fn an_unknown_user_never_verifies() {
        let hasher = Hasher::new(HashSettings::default());
        assert!(
            !hasher
                .verify(CLIENT, "anything".to_owned(), None)
                .await
                .unwrap()
        );
    }

    #[test]
    fn hashes_in_reused_memory_are_the_argon2_crates_own() {
        // A hash made in reused memory verifies with the argon2 crate's own code, and
        // one the crate made (as the command line does) verifies in reused memory:
        // stored hashes keep working across the change.
        let mut memory = Vec::new();
        let ours = hash_with(&mut memory, "correct horse").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        let theirs = hash_now("battery staple").unwrap();
        assert!(verify_with(&mut memory, "battery staple", &theirs).unwrap());
        assert!(!verify_with(&mut memory, "battery stable", &theirs).unwrap());
        assert_eq!(memory.len(), Params::default().block_count(), "memory kept");
    }

    #[test]
    fn a_stored_hash_asking_for_too_much_memory_is_refused_unallocated() {
        let greedy = "$argon2id$v=19$m=1048576,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$x6fH8hS3hDq6mPq2fa9T8Q0b1dJ7t0o0r8cY9xYk0aE";
        let mut memory = Vec::new();
        assert!(matches!(
            verify_with(&mut memory, "anything", greedy),
            Err(HashError::Failed(_))
        ));
        assert!(memory.is_empty());
    }

    #[test]
    fn waiting_jobs_are_taken_round_robin_by_client() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let job = |name: &'static str| -> Job {
            let order = Arc::clone(&order);
            Box::new(move |_| lock(&order).push(name))
        };
        let flooder = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
        let real_user = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1));
        let mut queue = FairQueue::default();
        for name in ["flood 1", "flood 2", "flood 3"] {
            queue.push(flooder, job(name));
        }
        queue.push(real_user, job("real"));
        let mut memory = Vec::new();
        while let Some(job) = queue.pop() {
            job(&mut memory);
        }
        assert_eq!(*lock(&order), ["flood 1", "real", "flood 2", "flood 3"]);
        assert!(queue.jobs.is_empty() && queue.turns.is_empty());
    }

    #[test]
    fn a_server_admits_its_bound_in_total_and_per_client() {
        let hasher = Hasher::new(HashSettings {
            queue: 1,
            per_client: 2,
        });
        let capacity = pool().threads + 1;
        let a = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
        let first = hasher.admit(a).unwrap();
        let _second = hasher.admit(a).unwrap();
        assert!(
            matches!(hasher.admit(a), Err(HashError::Busy)),
            "a's share is used"
        );
        drop(first);
        let _third = hasher.admit(a).expect("a finished hash frees its place");
        let others: Vec<Ticket> = (2..u8::try_from(capacity).unwrap())
            .map(|n| hasher.admit(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, n))))
            .collect::<Result<_, _>>()
            .expect("other clients fill the rest");
        let busy = hasher.admit(IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1)));
        assert!(
            matches!(busy, Err(HashError::Busy)),
            "the server's bound is used"
        );
        drop(others);
        assert_eq!(
            lock(&hasher.in_flight).per_client.len(),
            1,
            "only a is left"
        );
    }
}
