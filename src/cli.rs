//! The command line: the one global option (`--database`), the server's options (on
//! `serve` and on the bare command, each also read from the environment), the
//! subcommands, and the admin commands, which work on the database file directly (also
//! while the server runs). Admin commands print exactly the value asked for on stdout,
//! one line, so scripts can capture it; problems go to stderr with a non-zero exit.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::auth::{SessionToken, hash_token};
use crate::config::{
    Backoff, Durability, EventSettings, HashSettings, Limits, Quota, SessionSettings, Settings,
    ThrottleSettings, TrustedProxies,
};
use crate::db::{self, Admin, Entity, Location, PrefixMatch};
use crate::domain::Timestamp;
use crate::startup::Application;

/// neptun-chat: a self-hosted chat-message store with a JSON HTTP API.
///
/// With no subcommand it serves, taking the server options below; the admin
/// subcommands take only `--database` and their own options.
#[derive(Debug, Parser)]
#[command(name = "neptun-chat", version, about)]
pub struct Cli {
    /// The database: an SQLite file (its folder is created if missing) or a PostgreSQL
    /// URL, `postgresql://[user[:password]@][host][:port]/dbname[?host=/socket/dir&sslmode=...]`
    #[arg(
        long,
        global = true,
        env = "NEPTUN_DATABASE",
        // The variable may hold a password: --help never shows its value.
        hide_env_values = true,
        default_value = "data/neptun.db",
        value_parser = parse_location,
    )]
    pub database: Location,

    /// The server options for `neptun-chat` without a subcommand. They are not global,
    /// so the admin commands' `--help` shows only what those commands use.
    #[command(flatten, next_help_heading = "Server options")]
    pub serve: ServeArgs,

    /// What to do; serves when left out.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The options of the server (`serve`, or no subcommand at all).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address the server listens on (port 0 picks a free one).
    #[arg(long, env = "NEPTUN_BIND", default_value = DEFAULT_BIND)]
    pub bind: String,

    /// Request size, connection and write-queue limits.
    #[command(flatten)]
    pub limits: LimitArgs,

    /// Sessions made by sign-up and login.
    #[command(flatten)]
    pub sessions: SessionArgs,

    /// The per-user storage quota.
    #[command(flatten)]
    pub quota: QuotaArgs,

    /// Login and sign-up throttling, hashing and the trusted proxies.
    #[command(flatten)]
    pub logins: LoginArgs,

    /// The events stream.
    #[command(flatten)]
    pub events: EventArgs,

    /// What an acknowledged write survives: `full` (power loss) or `normal` (a crash of
    /// the process; faster, but the last writes before a power loss may be lost).
    #[arg(long, env = "NEPTUN_SYNC", value_enum, default_value_t = SyncArg::Full)]
    pub sync: SyncArg,

    /// Seconds SIGTERM / SIGINT wait for requests in flight before stopping anyway.
    #[arg(long, env = "NEPTUN_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// A web origin (scheme://host or scheme://host:port, e.g. http://localhost:3000)
    /// whose pages may call the API with the user's session cookie (CORS). Repeat it, or
    /// separate origins with commas; '*' is refused. None by default: no cross-origin access.
    #[arg(
        long = "cors-origin",
        value_name = "ORIGIN",
        env = "NEPTUN_CORS_ORIGIN",
        value_delimiter = ',',
        value_parser = cors_origin
    )]
    pub cors_origins: Vec<String>,
}

/// An allowed CORS origin, lower-cased as browsers send it. `*` is refused: the API
/// authenticates with a cookie, and a wildcard would let every site act with its
/// visitors' sessions (browsers refuse `*` with credentials anyway). A path or a
/// trailing '/' is refused too, since no browser's `Origin` has one and it would
/// never match.
fn cors_origin(text: &str) -> Result<String, String> {
    let example = "give scheme://host[:port], e.g. http://localhost:3000";
    let origin = text.trim().to_ascii_lowercase();
    if origin == "*" {
        return Err(format!(
            "'*' would let every web site use the API with its visitors' sessions; list each origin ({example})"
        ));
    }
    let Some((scheme, authority)) = origin.split_once("://") else {
        return Err(example.to_owned());
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "only http and https origins exist for the API; {example}"
        ));
    }
    if authority.contains(['/', '?', '#']) {
        return Err(format!(
            "an origin has no path, not even a trailing '/'; {example}"
        ));
    }
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c));
    if !valid_host || port.is_some_and(|port| port.parse::<u16>().is_err()) {
        return Err(example.to_owned());
    }
    Ok(origin)
}

/// The address the server listens on, and `healthcheck` probes, unless told otherwise.
const DEFAULT_BIND: &str = "127.0.0.1:8080";

/// Request size limits, and the server's capacity. A zero would make the server refuse
/// everything it is there for (every body, every batch, every connection...), so the
/// parser refuses it, except for the rate limit, where 0 means "off".
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Largest accepted request body in bytes (larger ones get 413); at least 1.
    #[arg(long, env = "NEPTUN_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes, value_parser = at_least_one::<usize>("request body"))]
    pub max_body_bytes: usize,

    /// Most messages in one batch; at least 1.
    #[arg(long, env = "NEPTUN_MAX_BATCH", default_value_t = Limits::default().max_batch, value_parser = at_least_one::<usize>("batch"))]
    pub max_batch: usize,

    /// Longest accepted message text, in UTF-8 bytes; at least 1.
    #[arg(long, env = "NEPTUN_MAX_MESSAGE_BYTES", default_value_t = Limits::default().max_text_bytes, value_parser = at_least_one::<usize>("message text"))]
    pub max_message_bytes: usize,

    /// Seconds a request body may take to arrive (408 after); at least 1. Request headers get 5 s.
    #[arg(long, env = "NEPTUN_BODY_TIMEOUT_SECS", default_value_t = 20, value_parser = at_least_one::<u64>("request body"))]
    pub body_timeout_secs: u64,

    /// Most open connections, at least 1; more wait in the listen backlog.
    #[arg(long, env = "NEPTUN_MAX_CONNECTIONS", default_value_t = Settings::default().max_connections, value_parser = at_least_one::<usize>("connection"))]
    pub max_connections: usize,

    /// Database connections the server keeps, at least 1: SQLite's read connections
    /// (default: 2 per worker) or all of PostgreSQL's (default: 16). A request that waits
    /// longer than the busy timeout for one gets 503 with Retry-After.
    #[arg(long, env = "NEPTUN_DATABASE_POOL_SIZE", value_parser = at_least_one::<u32>("database request"))]
    pub database_pool_size: Option<u32>,

    /// Most writes waiting for the SQLite writer, at least 1; beyond it, 503 with Retry-After.
    #[arg(long, env = "NEPTUN_WRITE_QUEUE", default_value_t = Settings::default().write_queue, value_parser = at_least_one::<usize>("write"))]
    pub write_queue: usize,

    /// Writes allowed per user per minute (429 with Retry-After beyond); 0: no limit.
    #[arg(long, env = "NEPTUN_WRITE_RATE_LIMIT", default_value_t = 0)]
    pub write_rate_limit: u32,
}

/// The events stream's heartbeat, replay window and limits.
#[derive(Debug, Args)]
pub struct EventArgs {
    /// Seconds between heartbeats (an SSE comment) on an idle events stream; at least 1.
    #[arg(long, env = "NEPTUN_EVENTS_HEARTBEAT_SECS", default_value_t = 15, value_parser = at_least_one::<u64>("heartbeat"))]
    pub events_heartbeat_secs: u64,

    /// Hours changes are kept for an events stream to replay after a reconnect; at least 1.
    /// An older Last-Event-ID gets a `reset` event.
    #[arg(long, env = "NEPTUN_EVENTS_REPLAY_HOURS", default_value_t = 24, value_parser = at_least_one::<u64>("replay window"))]
    pub events_replay_hours: u64,

    /// Most open events streams in all, at least 1; beyond it, 503 with Retry-After.
    /// Default: half of --max-connections, so streams never take every connection.
    #[arg(long, env = "NEPTUN_EVENTS_MAX_STREAMS", value_parser = at_least_one::<usize>("events stream"))]
    pub events_max_streams: Option<usize>,

    /// Most open events streams per user, at least 1; beyond it, 429 with Retry-After.
    #[arg(long, env = "NEPTUN_EVENTS_MAX_PER_USER", default_value_t = EventSettings::default().max_per_user, value_parser = at_least_one::<usize>("events stream"))]
    pub events_max_per_user: usize,
}

/// What each user may keep, and for how long: off unless set.
#[derive(Debug, Args)]
pub struct QuotaArgs {
    /// Most messages one user may keep; a write past it gets 403. Off when not given.
    #[arg(long, env = "NEPTUN_MAX_USER_MESSAGES", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_user_messages: Option<u64>,

    /// Most bytes of message text (UTF-8) one user may keep; a write past it gets 403.
    /// Off when not given.
    #[arg(long, env = "NEPTUN_MAX_USER_BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_user_bytes: Option<u64>,

    /// Delete chats with no activity (created, renamed, a message appended or a last
    /// turn deleted) for this many days, in the background, a few at a time; each
    /// deletion reaches the user's events streams. Off when not given.
    #[arg(long, env = "NEPTUN_RETENTION_DAYS", value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub retention_days: Option<u32>,
}

/// A parser for a count or size that must not be 0, because 0 would refuse every
/// `what`; the message says so.
fn at_least_one<T>(what: &'static str) -> impl Fn(&str) -> Result<T, String> + Clone
where
    T: std::str::FromStr<Err = std::num::ParseIntError> + Default + PartialEq,
{
    move |text| {
        let value: T = text.trim().parse().map_err(|err| format!("{err}"))?;
        if value == T::default() {
            return Err(format!("0 would refuse every {what}; give at least 1"));
        }
        Ok(value)
    }
}

/// `--sync`: SQLite's `synchronous` level, or PostgreSQL's `synchronous_commit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SyncArg {
    /// Survives power loss: the WAL is synced at every commit (PostgreSQL:
    /// synchronous_commit=on).
    Full,
    /// Survives a crash of this server; SQLite syncs at checkpoints only, PostgreSQL
    /// commits before its WAL is flushed (synchronous_commit=off).
    Normal,
}

/// Sessions made by sign-up and login.
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// Days a session made by sign-up or login lives (the cookie's Max-Age).
    #[arg(long, env = "NEPTUN_SESSION_TTL_DAYS", default_value_t = SessionSettings::default().ttl_days, value_parser = ttl_days())]
    pub session_ttl_days: u32,

    /// Mark the session cookie Secure (HTTPS only; browsers also accept it on localhost).
    /// Set to false to serve plain HTTP to other hosts.
    #[arg(long, env = "NEPTUN_COOKIE_SECURE", default_value_t = true, action = ArgAction::Set)]
    pub cookie_secure: bool,
}

/// Throttling of logins and sign-ups, and where the client address comes from.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// A reverse proxy whose X-Forwarded-For names the client (repeatable, or
    /// comma-separated in the variable). Without it the client is the TCP peer and
    /// X-Forwarded-For is ignored; behind a proxy, name it, or every client shares the
    /// proxy's login limits.
    #[arg(
        long = "trusted-proxy",
        value_name = "IP",
        env = "NEPTUN_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<std::net::IpAddr>,

    /// Failed logins to one account from one address before each further attempt
    /// waits (1 s, doubling up to 15 min); 0: no limit.
    #[arg(long, env = "NEPTUN_LOGIN_FAILURES", default_value_t = ThrottleSettings::default().login_per_account.free)]
    pub login_failures: u32,

    /// Failed logins from one address, to any accounts, before each further attempt
    /// waits (1 s, doubling up to 15 min); 0: no limit.
    #[arg(long, env = "NEPTUN_LOGIN_FAILURES_PER_ADDRESS", default_value_t = ThrottleSettings::default().login_per_address.free)]
    pub login_failures_per_address: u32,

    /// Sign-ups from one address before each further one waits (1 min, doubling up to
    /// 1 h); 0: no limit.
    #[arg(long, env = "NEPTUN_SIGN_UPS_PER_ADDRESS", default_value_t = ThrottleSettings::default().sign_up_per_address.free)]
    pub sign_ups_per_address: u32,

    /// Password hashes (logins, sign-ups) that may wait for a hashing thread; beyond
    /// it, 503 with Retry-After.
    #[arg(long, env = "NEPTUN_HASH_QUEUE", default_value_t = HashSettings::default().queue)]
    pub hash_queue: usize,
}

impl LoginArgs {
    fn throttle(&self) -> ThrottleSettings {
        let defaults = ThrottleSettings::default();
        let with_free = |backoff: Backoff, free: u32| Backoff { free, ..backoff };
        ThrottleSettings {
            login_per_account: with_free(defaults.login_per_account, self.login_failures),
            login_per_address: with_free(
                defaults.login_per_address,
                self.login_failures_per_address,
            ),
            sign_up_per_address: with_free(defaults.sign_up_per_address, self.sign_ups_per_address),
            ..defaults
        }
    }
}

/// Session lifetimes in days: up to 100 years, so expiry dates stay four-digit years.
fn ttl_days() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(0..=36_500)
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(ServeArgs),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage sessions.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Manage chats.
    #[command(subcommand)]
    Chat(ChatCommand),
    /// Exit 0 if the running server answers GET /healthz with 200 (for container health checks).
    Healthcheck(HealthcheckOpts),
    /// Write a consistent copy of an SQLite database to DEST (also while the server runs);
    /// prints DEST. (A PostgreSQL database is backed up with pg_dump.)
    Backup(BackupOpts),
    /// Check the database (SQLite: the full integrity and foreign-key checks; PostgreSQL:
    /// the schema version, constraints, indexes and storage counts); exit non-zero on any problem.
    Check,
    /// Copy the whole database into an empty one (a new SQLite file or an empty
    /// PostgreSQL database), then verify the copy; prints what it copied.
    ///
    /// Copies users (with their password hashes and storage counts), sessions, chats,
    /// messages and idempotency answers, keeping every id and timestamp, from one
    /// snapshot of --database into --to, in one transaction there: if anything fails,
    /// --to is left as it was (a new file is removed again). Either side may be SQLite or PostgreSQL. --to is set up if
    /// it is new, and refused, untouched, if it already holds a user, chat or message.
    /// Chats deleted but not yet purged are not copied. Logins, sessions and
    /// Idempotency-Key retries keep working on the copy; new chats and messages get ids
    /// above every copied one.
    ///
    /// Verifies afterwards, reading the copy back: every table's row count, and for
    /// every chat a SHA-256 over its messages' ids, authors, actors, times and texts in
    /// id order, must equal what was read from --database. A difference exits non-zero,
    /// naming the table or chat. Long copies print their progress on stderr.
    ///
    /// --database may be in use: the snapshot keeps the copy consistent, but what a
    /// running server writes after the snapshot is not copied. To move a deployment,
    /// stop its servers first, copy, then start them on --to.
    Copy(CopyOpts),
    /// Write everything of one user (profile without the password hash, chats, every
    /// message in order) as NDJSON, export format version 1, from one snapshot; the
    /// same file as GET /api/users/{user_id}/export. Safe while the server runs.
    Export(ExportOpts),
    /// Read chats into an existing user, in one transaction: all of the file or, on any
    /// error (named by line or JSON path), nothing. Takes a neptun-chat export or a
    /// ChatGPT data export's conversations.json; prints how many chats and messages it
    /// stored. Order and times are kept; ids are new. Safe while the server runs.
    Import(ImportOpts),
    /// Give the space of deleted data back; prints the database's size before and after.
    /// SQLite: rewrites the file (VACUUM) and switches it to incremental auto-vacuum,
    /// after which the server gives freed pages back by itself (new files start that
    /// way); safe while the server runs, whose writes wait meanwhile (and get 503 past
    /// the busy timeout), and needs free disk space the size of the file. PostgreSQL:
    /// VACUUM (ANALYZE) of the tables, which blocks nothing; autovacuum does the same.
    Compact,
}

/// `export`
#[derive(Debug, Args)]
pub struct ExportOpts {
    /// The user to export.
    pub user_id: String,
    /// Where to write the export (standard output if not given). The file is written
    /// beside it first and moved into place once complete.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `import`
#[derive(Debug, Args)]
pub struct ImportOpts {
    /// The user to import into (they must exist: `user create`).
    pub user_id: String,
    /// The file to read.
    pub file: PathBuf,
    /// What the file is; `auto` tells them apart by their first character (an export
    /// is NDJSON, one object per line; conversations.json is one JSON array).
    #[arg(long, value_enum, default_value_t = ImportFormat::Auto)]
    pub format: ImportFormat,
}

/// The kinds of file `import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// Tell from the file.
    Auto,
    /// A neptun-chat export (NDJSON).
    Neptun,
    /// A ChatGPT data export's conversations.json.
    Chatgpt,
}

/// `copy`
#[derive(Debug, Args)]
pub struct CopyOpts {
    /// The database to copy into: an SQLite file path or a postgresql:// URL (as
    /// --database takes them). It must hold no users, chats or messages.
    #[arg(long, value_name = "PATH_OR_URL", value_parser = parse_location)]
    pub to: Location,
}

/// `backup`
#[derive(Debug, Args)]
pub struct BackupOpts {
    /// Where to write the copy; an existing file there is replaced only once the copy is complete.
    pub dest: PathBuf,
}

/// `user ...`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; prints its id.
    Create(UserCreateOpts),
    /// List every user, oldest first: id, email (empty if none), created (tab-separated).
    List,
    /// Delete a user with all their sessions, chats, messages, idempotency answers and
    /// recorded changes; prints what was deleted. The user is gone at once; on SQLite the
    /// messages of a large account are then purged a slice per transaction.
    Delete(UserDeleteOpts),
    /// Set a user's password from standard input and revoke all of the user's sessions;
    /// prints how many sessions were revoked.
    SetPassword(UserSetPasswordOpts),
}

/// `user delete`
#[derive(Debug, Args)]
pub struct UserDeleteOpts {
    /// The user to delete.
    pub user_id: String,
}

/// `user set-password`
#[derive(Debug, Args)]
pub struct UserSetPasswordOpts {
    /// The user whose password to set; they must have an email to log in with.
    pub user_id: String,
    /// Read the password (8 to 1024 characters) from the first line of standard input
    /// (required: a password on the command line would show in `ps` and shell history).
    #[arg(long, required = true)]
    pub password_stdin: bool,
}

/// `user create`
#[derive(Debug, Args)]
pub struct UserCreateOpts {
    /// The new user's id (1 to 128 printable characters, no '/').
    pub user_id: String,
    /// The user's email address (stored lower-cased).
    #[arg(long)]
    pub email: Option<String>,
    /// Read a password (8 to 1024 characters) from the first line of standard input, so
    /// the user can log in with the email; needs --email.
    #[arg(long, requires = "email")]
    pub password_stdin: bool,
}

/// `session ...`
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Create a session for a user; prints the new token (shown only this once).
    Create(SessionCreateOpts),
    /// List a user's sessions, newest first: hash prefix, created, expires (tab-separated).
    List(SessionListOpts),
    /// Revoke one session by its token or its hash prefix, or all of a user's; prints how
    /// many were revoked.
    Revoke(SessionRevokeOpts),
}

/// `session list`
#[derive(Debug, Args)]
pub struct SessionListOpts {
    /// The user whose sessions to list.
    pub user_id: String,
}

/// `session revoke`
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct SessionRevokeOpts {
    /// The session token to revoke (tokens may start with '-').
    #[arg(allow_hyphen_values = true)]
    pub token: Option<String>,
    /// Revoke the one session whose hash starts with these hex digits, as `session list`
    /// shows them; an unknown prefix, or one that several sessions share, revokes nothing.
    #[arg(long, value_name = "HEX", value_parser = hex_prefix)]
    pub prefix: Option<String>,
    /// Revoke every session of this user instead.
    #[arg(long, value_name = "USER_ID")]
    pub all: Option<String>,
}

/// The argument of `session revoke --prefix`: 1 to 64 hex digits (a SHA-256 has 64).
fn hex_prefix(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 64 || !text.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("give 1 to 64 hex digits, as `session list` shows them".to_owned());
    }
    Ok(text.to_owned())
}

/// `session create`
#[derive(Debug, Args)]
pub struct SessionCreateOpts {
    /// The user the session is for.
    pub user_id: String,
    /// Days until the session expires; 0 makes one that is already expired.
    #[arg(long, default_value_t = 30, value_parser = ttl_days())]
    pub ttl_days: u32,
}

/// `chat ...`
#[derive(Debug, Subcommand)]
pub enum ChatCommand {
    /// Create a chat for a user; prints its id.
    Create(ChatCreateOpts),
}

/// `chat create`
#[derive(Debug, Args)]
pub struct ChatCreateOpts {
    /// The owner of the chat.
    pub user_id: String,
    /// The chat's name (1 to 200 characters, trimmed, as in the API).
    #[arg(long, default_value = "New chat")]
    pub name: String,
    /// The model the chat talks to (1 to 200 characters, trimmed, as in the API).
    #[arg(long, default_value = "default")]
    pub model: String,
}

/// `healthcheck`
#[derive(Debug, Args)]
pub struct HealthcheckOpts {
    /// The address the server listens on (the server's --bind; 0.0.0.0 is probed as 127.0.0.1).
    #[arg(long, env = "NEPTUN_BIND", default_value = DEFAULT_BIND)]
    pub bind: String,
    /// The URL to probe [default: http://BIND/healthz]
    #[arg(long)]
    pub url: Option<String>,
}

impl Cli {
    /// Parses the process's arguments, or prints the problem (or the help) and exits.
    pub fn parse_or_exit() -> Cli {
        Cli::try_parse_checked_from(std::env::args_os()).unwrap_or_else(|err| err.exit())
    }

    /// Parses `args` like [`Parser::try_parse_from`], and also refuses a server option
    /// given before a subcommand (`neptun-chat --bind X serve`): clap would take it for
    /// the top level, where a subcommand ignores it, so the server would quietly use
    /// another address.
    pub fn try_parse_checked_from<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut command = Cli::command();
        let matches = command.try_get_matches_from_mut(args)?;
        if let Some(subcommand) = matches.subcommand_name() {
            let misplaced = ServeArgs::augment_args(clap::Command::new("serve"))
                .get_arguments()
                .find(|arg| {
                    matches.value_source(arg.get_id().as_str())
                        == Some(clap::parser::ValueSource::CommandLine)
                })
                .map(|arg| arg.get_long().unwrap_or(arg.get_id().as_str()).to_owned());
            if let Some(option) = misplaced {
                let advice = if subcommand == "serve" {
                    format!("put it after the subcommand: neptun-chat serve --{option} ...")
                } else {
                    format!("it is an option of 'serve', not of '{subcommand}'")
                };
                return Err(command.error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("'--{option}' before the subcommand '{subcommand}': {advice}"),
                ));
            }
        }
        Cli::from_arg_matches(&matches).map_err(|err| err.format(&mut command))
    }
}

impl Cli {
    /// The server settings, when the command is to serve (`serve` or no subcommand).
    pub fn serve_settings(&self) -> Option<Settings> {
        match &self.command {
            None => Some(self.serve.settings(&self.database)),
            Some(Command::Serve(args)) => Some(args.settings(&self.database)),
            Some(_) => None,
        }
    }
}

impl ServeArgs {
    /// The server settings these options describe, for the database at `database`.
    pub fn settings(&self, database: &Location) -> Settings {
        Settings {
            database: database.clone(),
            database_pool_size: self.limits.database_pool_size,
            bind: self.bind.clone(),
            limits: Limits {
                max_body_bytes: self.limits.max_body_bytes,
                max_batch: self.limits.max_batch,
                max_text_bytes: self.limits.max_message_bytes,
                body_timeout: Duration::from_secs(self.limits.body_timeout_secs),
            },
            sessions: SessionSettings {
                ttl_days: self.sessions.session_ttl_days,
                cookie_secure: self.sessions.cookie_secure,
            },
            durability: match self.sync {
                SyncArg::Full => Durability::Full,
                SyncArg::Normal => Durability::Normal,
            },
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            max_connections: self.limits.max_connections,
            write_queue: self.limits.write_queue,
            write_rate_limit: std::num::NonZeroU32::new(self.limits.write_rate_limit),
            throttle: self.logins.throttle(),
            hashing: HashSettings {
                queue: self.logins.hash_queue,
                ..HashSettings::default()
            },
            trusted_proxies: TrustedProxies(self.logins.trusted_proxies.clone()),
            cors_origins: self.cors_origins.clone(),
            quota: Quota {
                max_messages: self.quota.max_user_messages,
                max_bytes: self.quota.max_user_bytes,
            },
            retention_days: self.quota.retention_days,
            events: EventSettings {
                heartbeat: Duration::from_secs(self.events.events_heartbeat_secs),
                replay_window: Duration::from_secs(
                    self.events.events_replay_hours.saturating_mul(3600),
                ),
                max_streams: self
                    .events
                    .events_max_streams
                    .unwrap_or((self.limits.max_connections / 2).max(1)),
                max_per_user: self.events.events_max_per_user,
            },
            ..Settings::default()
        }
    }
}

/// Runs the command the user asked for.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        None => serve(cli.serve.settings(&cli.database)),
        Some(Command::Serve(args)) => serve(args.settings(&cli.database)),
        Some(Command::User(UserCommand::Create(opts))) => create_user(&cli, opts),
        Some(Command::User(UserCommand::List)) => list_users(&cli),
        Some(Command::User(UserCommand::Delete(opts))) => delete_user(&cli, opts),
        Some(Command::User(UserCommand::SetPassword(opts))) => set_password(&cli, opts),
        Some(Command::Session(SessionCommand::Create(opts))) => create_session(&cli, opts),
        Some(Command::Chat(ChatCommand::Create(opts))) => create_chat(&cli, opts),
        Some(Command::Session(SessionCommand::List(opts))) => list_sessions(&cli, opts),
        Some(Command::Session(SessionCommand::Revoke(opts))) => revoke_sessions(&cli, opts),
        Some(Command::Healthcheck(opts)) => healthcheck(opts),
        Some(Command::Backup(opts)) => backup(&cli, opts),
        Some(Command::Check) => check(&cli),
        Some(Command::Copy(opts)) => copy(&cli, opts),
        Some(Command::Export(opts)) => export(&cli, opts),
        Some(Command::Import(opts)) => import(&cli, opts),
        Some(Command::Compact) => compact(&cli),
    }
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings).await?;
        app.run_until_stopped().await
    })
}

fn open_admin(cli: &Cli) -> anyhow::Result<Admin> {
    Admin::open(&cli.database).map_err(|err| crate::startup::database_error(err, &cli.database))
}

/// `--database`: a path or a PostgreSQL URL. The error never shows a password.
fn parse_location(text: &str) -> Result<Location, String> {
    text.parse()
}

/// Prints `value` as the command's one line of output.
fn print_line(value: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")?;
    out.flush()?;
    Ok(())
}

fn create_user(cli: &Cli, opts: &UserCreateOpts) -> anyhow::Result<()> {
    let id = opts.user_id.as_str();
    if id.is_empty()
        || id.chars().count() > 128
        || id.contains('/')
        || id.chars().any(char::is_control)
    {
        bail!("invalid user id {id:?}: use 1 to 128 printable characters without '/'");
    }
    let email = match &opts.email {
        Some(email) => Some(
            crate::validation::normalize_email(email)
                .with_context(|| format!("invalid email address {email:?}"))?,
        ),
        None => None,
    };
    let password_hash = if opts.password_stdin {
        Some(read_password_hash()?)
    } else {
        None
    };
    match open_admin(cli)?.create_user(id, email.as_deref(), password_hash.as_deref()) {
        Err(db::Error::Conflict(db::Taken::UserId)) => {
            bail!("a user with id {id:?} already exists")
        }
        Err(db::Error::Conflict(db::Taken::UserEmail)) => {
            bail!(
                "a user with the email {:?} already exists",
                email.as_deref().unwrap_or_default()
            )
        }
        other => other?,
    }
    print_line(id)
}

/// Reads a password from the first line of standard input, checks its length as sign-up
/// does, and hashes it.
fn read_password_hash() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    let (min, max) = crate::validation::PASSWORD_CHARS;
    if !(min..=max).contains(&password.chars().count()) {
        bail!("the password must be {min} to {max} characters");
    }
    crate::password::hash_now(password).context("hashing the password failed")
}

fn list_users(cli: &Cli) -> anyhow::Result<()> {
    for user in open_admin(cli)?.list_users()? {
        print_line(&format!(
            "{}\t{}\t{}",
            user.id,
            user.primary_email.as_deref().unwrap_or_default(),
            user.created_at.as_str()
        ))?;
    }
    Ok(())
}

fn delete_user(cli: &Cli, opts: &UserDeleteOpts) -> anyhow::Result<()> {
    let deleted = match open_admin(cli)?.delete_user(&opts.user_id) {
        Err(db::Error::NotFound(Entity::User)) => bail!("no user with id {:?}", opts.user_id),
        other => other?,
    };
    print_line(&format!(
        "deleted user {}: {} sessions, {} chats, {} messages, {} idempotency keys",
        opts.user_id, deleted.sessions, deleted.chats, deleted.messages, deleted.idempotency_keys
    ))
}

/// Sets the password and revokes the user's sessions: an operator sets a password when
/// the old one is forgotten or leaked, and whoever logged in with the old one must not
/// stay logged in.
fn set_password(cli: &Cli, opts: &UserSetPasswordOpts) -> anyhow::Result<()> {
    let mut admin = open_admin(cli)?;
    match admin.find_user(&opts.user_id)? {
        None => bail!("no user with id {:?}", opts.user_id),
        Some(user) if user.primary_email.is_none() => bail!(
            "user {:?} has no email to log in with, so a password would never be used",
            opts.user_id
        ),
        Some(_) => {}
    }
    let password_hash = read_password_hash()?;
    let revoked = match admin.set_password(&opts.user_id, &password_hash) {
        Err(db::Error::NotFound(Entity::User)) => bail!("no user with id {:?}", opts.user_id),
        other => other?,
    };
    print_line(&revoked.to_string())
}

fn create_session(cli: &Cli, opts: &SessionCreateOpts) -> anyhow::Result<()> {
    let token = SessionToken::generate().context("the OS random source failed")?;
    let expires_at = Timestamp::from_datetime(
        chrono::Utc::now() + chrono::Duration::days(i64::from(opts.ttl_days)),
    );
    match open_admin(cli)?.create_session(&opts.user_id, &token.hash(), &expires_at) {
        Err(db::Error::NotFound(Entity::User)) => bail!("no user with id {:?}", opts.user_id),
        other => other?,
    }
    print_line(token.expose())
}

fn create_chat(cli: &Cli, opts: &ChatCreateOpts) -> anyhow::Result<()> {
    // The API's own validation, so a chat made here is one the API would have made.
    let chat = crate::validation::parse_new_chat(serde_json::json!({
        "name": opts.name,
        "model": opts.model,
    }))
    .map_err(|issues| {
        let issues: Vec<String> = issues.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid chat: {}", issues.join("; "))
    })?;
    let chat_id = match open_admin(cli)?.create_chat(&opts.user_id, &chat.name, &chat.model) {
        Err(db::Error::NotFound(Entity::User)) => bail!("no user with id {:?}", opts.user_id),
        other => other?,
    };
    print_line(&chat_id.to_string())
}

fn list_sessions(cli: &Cli, opts: &SessionListOpts) -> anyhow::Result<()> {
    let sessions = match open_admin(cli)?.list_sessions(&opts.user_id) {
        Err(db::Error::NotFound(Entity::User)) => bail!("no user with id {:?}", opts.user_id),
        other => other?,
    };
    let now = Timestamp::now();
    for session in sessions {
        let state = if session.expires_at > now {
            "live"
        } else {
            "expired"
        };
        print_line(&format!(
            "{}\t{}\t{}\t{state}",
            session.hash_prefix,
            session.created_at.as_str(),
            session.expires_at.as_str()
        ))?;
    }
    Ok(())
}

fn revoke_sessions(cli: &Cli, opts: &SessionRevokeOpts) -> anyhow::Result<()> {
    let mut admin = open_admin(cli)?;
    let revoked = match (&opts.token, &opts.prefix, &opts.all) {
        (Some(token), _, _) => usize::from(admin.revoke_session(&hash_token(token))?),
        (None, Some(prefix), _) => match admin.revoke_session_by_prefix(prefix)? {
            PrefixMatch::Revoked => 1,
            PrefixMatch::None => bail!("no session's hash starts with {prefix}"),
            PrefixMatch::Ambiguous(n) => {
                bail!("{n} sessions' hashes start with {prefix}; give more digits to pick one")
            }
        },
        (None, None, Some(user_id)) => match admin.revoke_all_sessions(user_id) {
            Err(db::Error::NotFound(Entity::User)) => bail!("no user with id {user_id:?}"),
            other => other?,
        },
        (None, None, None) => bail!("give a TOKEN, --prefix HEX or --all USER_ID"),
    };
    print_line(&revoked.to_string())
}

/// Fails unless the database file exists: `backup`, `check`, `export`, `import` and
/// `compact` must not create one. (A PostgreSQL database exists once it is created;
/// its schema is then set up.)
fn require_existing(cli: &Cli) -> anyhow::Result<()> {
    if let Some(path) = cli.database.sqlite_path() {
        if !path.is_file() {
            bail!("no database at {}", path.display());
        }
    }
    Ok(())
}

/// [`Admin`] on the existing database (see [`require_existing`]).
fn existing_database(cli: &Cli) -> anyhow::Result<Admin> {
    require_existing(cli)?;
    open_admin(cli)
}

/// Runs `work` with the server's handle on the existing database, on a runtime of its
/// own: the admin commands that share the server's storage paths (export, import).
fn with_db<T>(
    cli: &Cli,
    work: impl AsyncFnOnce(&db::Db) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    require_existing(cli)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the database client")?;
    runtime.block_on(async {
        let db = db::Db::open(&cli.database, Durability::Full)
            .await
            .map_err(|err| crate::startup::database_error(err, &cli.database))?;
        let result = work(&db).await;
        db.close().await?;
        result
    })
}

fn export(cli: &Cli, opts: &ExportOpts) -> anyhow::Result<()> {
    let (mut out, partial): (Box<dyn Write>, _) = match &opts.out {
        Some(path) => {
            let partial = partial_path(path);
            let file = std::fs::File::create(&partial)
                .with_context(|| format!("cannot create {}", partial.display()))?;
            (Box::new(std::io::BufWriter::new(file)), Some(partial))
        }
        None => (Box::new(std::io::stdout().lock()), None),
    };
    let written = with_db(cli, async |db| {
        let exported_at = Timestamp::now();
        let mut rest = match db
            .export(opts.user_id.clone(), move |out: &mut Vec<u8>, row| {
                crate::archive::format::write_row(out, row, &exported_at)
                    .map_err(db::BoxError::from)
            })
            .await
        {
            Err(db::Error::NotFound(Entity::User)) => bail!("no user with id {:?}", opts.user_id),
            other => other?,
        };
        while let Some(slice) = rest.next().await {
            out.write_all(&slice?)?;
        }
        out.flush()?;
        Ok(())
    });
    drop(out);
    match (written, partial, &opts.out) {
        (Ok(()), Some(partial), Some(path)) => std::fs::rename(&partial, path)
            .with_context(|| format!("cannot move the export to {}", path.display())),
        (Err(err), Some(partial), _) => {
            let _ = std::fs::remove_file(partial);
            Err(err)
        }
        (result, _, _) => result,
    }
}

/// Where `export --out PATH` writes until the export is complete.
fn partial_path(path: &std::path::Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

fn import(cli: &Cli, opts: &ImportOpts) -> anyhow::Result<()> {
    let file = std::fs::File::open(&opts.file)
        .with_context(|| format!("cannot open {}", opts.file.display()))?;
    let mut input = std::io::BufReader::new(file);
    let format = match opts.format {
        ImportFormat::Auto => {
            let start = std::io::BufRead::fill_buf(&mut input)
                .with_context(|| format!("cannot read {}", opts.file.display()))?;
            match start.iter().find(|byte| !byte.is_ascii_whitespace()) {
                Some(b'[') => ImportFormat::Chatgpt,
                _ => ImportFormat::Neptun,
            }
        }
        chosen => chosen,
    };
    let in_file = |err: crate::archive::ArchiveError| {
        anyhow::anyhow!("{}, {err}: nothing was imported", opts.file.display())
    };
    let (chats, skipped) = match format {
        ImportFormat::Chatgpt => {
            let mut json = Vec::new();
            input
                .read_to_end(&mut json)
                .with_context(|| format!("cannot read {}", opts.file.display()))?;
            let read = crate::archive::chatgpt::read(&json).map_err(in_file)?;
            (read.chats, read.skipped_messages)
        }
        _ => (crate::archive::format::read(input).map_err(in_file)?, 0),
    };
    let imported = with_db(cli, async |db| {
        match db.import(opts.user_id.clone(), chats).await {
            Err(db::Error::NotFound(Entity::User)) => bail!("no user with id {:?}", opts.user_id),
            other => Ok(other?),
        }
    })?;
    let skipped = if skipped > 0 {
        format!(" ({skipped} hidden, tool or empty messages left out)")
    } else {
        String::new()
    };
    print_line(&format!(
        "imported {} chats and {} messages into user {}{skipped}",
        imported.chats, imported.messages, opts.user_id
    ))
}

fn compact(cli: &Cli) -> anyhow::Result<()> {
    let compacted = existing_database(cli)?.compact()?;
    print_line(&format!(
        "{} bytes before, {} bytes after",
        compacted.before, compacted.after
    ))
}

fn backup(cli: &Cli, opts: &BackupOpts) -> anyhow::Result<()> {
    existing_database(cli)?.backup(&opts.dest)?;
    print_line(&opts.dest.display().to_string())
}

fn check(cli: &Cli) -> anyhow::Result<()> {
    let problems = existing_database(cli)?.check()?;
    if problems.is_empty() {
        return print_line("ok");
    }
    for problem in &problems {
        eprintln!("{problem}");
    }
    bail!("the database has {} problem(s)", problems.len())
}

/// How often a long copy reports its progress.
const COPY_PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// The progress line of a long copy, at most once per [`COPY_PROGRESS_EVERY`].
struct CopyProgress {
    reported: std::time::Instant,
}

impl CopyProgress {
    fn new(started: std::time::Instant) -> CopyProgress {
        CopyProgress { reported: started }
    }

    /// The line to print at `now`, if it is time for one.
    fn line(&mut self, copied: u64, total: u64, now: std::time::Instant) -> Option<String> {
        if now.duration_since(self.reported) < COPY_PROGRESS_EVERY {
            return None;
        }
        self.reported = now;
        Some(format!("copied {copied} of {total} messages"))
    }
}

fn copy(cli: &Cli, opts: &CopyOpts) -> anyhow::Result<()> {
    let (from, to) = (&cli.database, &opts.to);
    let mut reporter = CopyProgress::new(std::time::Instant::now());
    let mut progress = |copied: u64, total: u64| {
        if let Some(line) = reporter.line(copied, total, std::time::Instant::now()) {
            eprintln!("{line}");
        }
    };
    let copied = db::copy_database(from, to, &mut progress).map_err(|err| match err {
        db::Error::Unusable { .. } => anyhow::Error::new(err),
        other => anyhow::Error::new(other).context(format!("cannot copy {from} into {to}")),
    })?;
    for (table, rows) in copied.counts.tables() {
        print_line(&format!("{table}\t{rows}"))?;
    }
    if !copied.problems.is_empty() {
        for problem in &copied.problems {
            eprintln!("{problem}");
        }
        bail!(
            "the copy in {to} does not match {from}: {} difference(s), the first: {}",
            copied.problems.len(),
            copied.problems[0]
        );
    }
    eprintln!(
        "verified: every table's row count, and the messages of {} chats, match",
        copied.checked_chats
    );
    Ok(())
}

fn healthcheck(opts: &HealthcheckOpts) -> anyhow::Result<()> {
    let url = match &opts.url {
        Some(url) => url.clone(),
        None => format!(
            "http://{}/healthz",
            opts.bind.replacen("0.0.0.0", "127.0.0.1", 1)
        ),
    };
    let status = http_get_status(&url).with_context(|| format!("GET {url} failed"))?;
    if status != 200 {
        bail!("GET {url} answered {status}");
    }
    Ok(())
}

/// A minimal HTTP/1.1 GET that returns the status code. The health check needs nothing
/// more, and this keeps an HTTP client library (and curl in the image) out of the binary.
fn http_get_status(url: &str) -> anyhow::Result<u16> {
    let rest = url
        .strip_prefix("http://")
        .context("only http:// URLs are supported")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let timeout = Duration::from_secs(3);
    let addr = authority
        .to_socket_addrs()?
        .next()
        .with_context(|| format!("cannot resolve {authority}"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < 12 {
        let n = stream.read(&mut head[len..])?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let line = String::from_utf8_lossy(&head[..len]);
    line.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response: {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_copy_reports_its_progress_every_two_seconds() {
        let start = std::time::Instant::now();
        let mut progress = CopyProgress::new(start);
        let at = |millis| start + Duration::from_millis(millis);
        assert_eq!(progress.line(2000, 9000, at(1000)), None);
        assert_eq!(
            progress.line(4000, 9000, at(2100)).as_deref(),
            Some("copied 4000 of 9000 messages")
        );
        assert_eq!(progress.line(6000, 9000, at(3000)), None);
        assert!(progress.line(8000, 9000, at(4200)).is_some());
    }

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_means_serve_with_the_defaults() {
        let cli = Cli::try_parse_checked_from(["neptun-chat"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve_settings(), Some(Settings::default()));
    }

    #[test]
    fn a_write_rate_limit_of_zero_means_no_limit() {
        let settings = |args: &[&str]| {
            let cli = Cli::try_parse_checked_from(args).unwrap();
            cli.serve_settings().unwrap().write_rate_limit
        };

        assert_eq!(settings(&["neptun-chat"]), None, "off by default");
        assert_eq!(settings(&["neptun-chat", "--write-rate-limit", "0"]), None);
        assert_eq!(
            settings(&["neptun-chat", "serve", "--write-rate-limit", "5"]),
            std::num::NonZeroU32::new(5)
        );
    }

    #[test]
    fn the_secure_cookie_flag_can_be_turned_off() {
        let cli = Cli::try_parse_checked_from(["neptun-chat", "--cookie-secure", "false"]).unwrap();
        assert!(!cli.serve_settings().unwrap().sessions.cookie_secure);
    }

    #[test]
    fn login_options_set_the_throttle_the_hash_queue_and_the_trusted_proxies() {
        let cli = Cli::try_parse_checked_from([
            "neptun-chat",
            "serve",
            "--login-failures",
            "0",
            "--login-failures-per-address",
            "7",
            "--sign-ups-per-address",
            "3",
            "--hash-queue",
            "9",
            "--trusted-proxy",
            "10.0.0.1",
            "--trusted-proxy",
            "::1",
        ])
        .unwrap();
        let Some(Command::Serve(args)) = &cli.command else {
            panic!("serve");
        };
        let settings = args.settings(&cli.database);
        assert_eq!(
            settings.throttle.login_per_account.free, 0,
            "0 turns it off"
        );
        assert_eq!(settings.throttle.login_per_address.free, 7);
        assert_eq!(settings.throttle.sign_up_per_address.free, 3);
        assert_eq!(settings.hashing.queue, 9);
        let proxies: Vec<std::net::IpAddr> =
            vec!["10.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        assert_eq!(settings.trusted_proxies, TrustedProxies(proxies));
    }
}
