//! [`Location`]: which database `--database` names, a file path (SQLite) or a
//! PostgreSQL URL in libpq's form, parsed once at start-up.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where the database is.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file; its folder is created if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(Box<PostgresUrl>),
}

impl Location {
    /// The SQLite file, if this is one.
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        match self {
            Location::Sqlite(path) => Some(path),
            Location::Postgres(_) => None,
        }
    }
}

impl Default for Location {
    fn default() -> Self {
        Location::Sqlite(PathBuf::from("data/neptun.db"))
    }
}

impl FromStr for Location {
    type Err = String;

    /// A `postgres://` or `postgresql://` URL is PostgreSQL; anything else is a path.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return text.parse().map(|url| Location::Postgres(Box::new(url)));
        }
        if text.is_empty() {
            return Err("the database path is empty".to_owned());
        }
        Ok(Location::Sqlite(PathBuf::from(text)))
    }
}

/// Shows a path as it is and a URL without its password.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => url.fmt(f),
        }
    }
}

/// Never shows the password, like [`Display`](fmt::Display).
impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Location::Postgres(url) => f.debug_tuple("Postgres").field(url).finish(),
        }
    }
}

/// How a PostgreSQL connection uses TLS: libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SslMode {
    /// Never.
    Disable,
    /// If the server offers it, without checking its certificate (libpq's default).
    Prefer,
    /// Always, without checking the certificate (as libpq does without a root
    /// certificate file).
    Require,
    /// Always, with a certificate signed by a trusted CA, for any host name.
    VerifyCa,
    /// Always, with a certificate signed by a trusted CA for the host connected to.
    VerifyFull,
}

/// A PostgreSQL URL (`postgresql://user:password@host:port/dbname?param=value`), checked
/// and split into what the client library takes and what this program handles itself
/// (TLS). Shown without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    /// The connection settings, password included.
    pub(super) config: tokio_postgres::Config,
    /// `sslmode`.
    pub(super) ssl_mode: SslMode,
    /// `sslrootcert`: a PEM file of the CAs to trust instead of the system's.
    pub(super) root_cert: Option<PathBuf>,
    /// The URL as given, with the password replaced.
    shown: String,
}

impl FromStr for PostgresUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let shown = without_password(url);
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut ssl_mode = SslMode::Prefer;
        let mut root_cert = None;
        let mut passed = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => {
                    ssl_mode = match value {
                        "disable" => SslMode::Disable,
                        "prefer" | "allow" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(format!(
                                "invalid sslmode {other:?} in the database URL {shown} \
                                 (disable, prefer, require, verify-ca or verify-full)"
                            ));
                        }
                    }
                }
                "sslrootcert" => root_cert = Some(PathBuf::from(percent_decode(value))),
                _ => passed.push(pair),
            }
        }
        // The client library knows disable, prefer and require; the verification of the
        // two verify modes is this program's (see the `postgres` module's TLS set-up).
        passed.push(match ssl_mode {
            SslMode::Disable => "sslmode=disable",
            SslMode::Prefer => "sslmode=prefer",
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "sslmode=require",
        });
        let given = format!("{base}?{}", passed.join("&"));
        let config: tokio_postgres::Config = given.parse().map_err(|err| {
            // The library's message does not echo the URL, so it cannot show the password.
            format!("invalid database URL {shown}: {err}")
        })?;
        if config.get_dbname().is_none() {
            return Err(format!(
                "the database URL {shown} names no database (postgresql://host/DBNAME)"
            ));
        }
        Ok(PostgresUrl {
            config,
            ssl_mode,
            root_cert,
            shown,
        })
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PostgresUrl").field(&self.shown).finish()
    }
}

/// `url` with the password of its user part and any `password=` parameter replaced by
/// `***`, for logs and error messages.
fn without_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let authority_end = before_query.find('/').unwrap_or(before_query.len());
    let (authority, path) = before_query.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, hosts)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{user}:***@{hosts}"),
            None => format!("{user_info}@{hosts}"),
        },
        None => authority.to_owned(),
    };
    let mut shown = format!("{scheme}://{authority}{path}");
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some(("password", _)) => "password=***".to_owned(),
                _ => pair.to_owned(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&pairs.join("&"));
    }
    shown
}

/// Decodes `%XX` escapes (a path in a URL parameter may carry them).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_sqlite_and_a_postgres_url_is_postgres() {
        assert_eq!(
            "data/x.db".parse::<Location>(),
            Ok(Location::Sqlite(PathBuf::from("data/x.db")))
        );
        let url: Location = "postgresql:///neptun?host=/run/postgresql&user=app"
            .parse()
            .unwrap_or_else(|err| panic!("{err}"));
        let Location::Postgres(url) = url else {
            panic!("not PostgreSQL: {url:?}");
        };
        assert_eq!(url.config.get_dbname(), Some("neptun"));
        assert_eq!(url.config.get_user(), Some("app"));
        assert_eq!(
            url.config.get_hosts(),
            [tokio_postgres::config::Host::Unix(PathBuf::from(
                "/run/postgresql"
            ))]
        );
        assert_eq!(url.ssl_mode, SslMode::Prefer);
    }

    #[test]
    fn the_password_is_never_shown() {
        for url in [
            "postgres://app:s3cret@db.example:5433/neptun?sslmode=verify-full",
            "postgresql://app@db.example/neptun?password=s3cret&sslmode=require",
        ] {
            let location: Location = url.parse().unwrap_or_else(|err| panic!("{err}"));
            let Location::Postgres(parsed) = &location else {
                panic!("not PostgreSQL");
            };
            assert_eq!(parsed.config.get_password(), Some(&b"s3cret"[..]));
            for shown in [location.to_string(), format!("{location:?}")] {
                assert!(!shown.contains("s3cret"), "{shown}");
                assert!(shown.contains("db.example"), "{shown}");
            }
        }
        let err = "postgres://app:s3cret@db/neptun?sslmode=sometimes"
            .parse::<Location>()
            .unwrap_err();
        assert!(err.contains("sslmode") && !err.contains("s3cret"), "{err}");
        let err = "postgres://app:s3cret@db/neptun?nonsense=1"
            .parse::<Location>()
            .unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn ssl_modes_and_the_root_certificate_are_read() {
        let url: PostgresUrl = "postgresql://db/n?sslmode=verify-ca&sslrootcert=/etc/ca%20x.pem"
            .parse()
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(url.ssl_mode, SslMode::VerifyCa);
        assert_eq!(url.root_cert, Some(PathBuf::from("/etc/ca x.pem")));
        assert_eq!(
            url.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn a_url_without_a_database_name_is_refused() {
        let err = "postgresql://db.example".parse::<Location>().unwrap_err();
        assert!(err.contains("names no database"), "{err}");
    }
}
