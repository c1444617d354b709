//! TLS to PostgreSQL, against a real server that takes TLS connections only: a
//! private cluster on TCP 127.0.0.1 with a certificate for `localhost` signed by a CA
//! made here (with the `openssl` command), and a `pg_hba.conf` of one `hostssl` line,
//! so that a connection without TLS is refused. The real binary connects with each
//! `sslmode` and shows what libpq's meanings promise: `require` encrypts without
//! checking, `verify-ca` checks the chain only, `verify-full` the chain and the host
//! name, and every refusal is one clear error line without the password.
//!
//! Without PostgreSQL (or `openssl`) this test passes trivially, saying so, unless
//! `NEPTUN_TEST_POSTGRES=required`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::postgres_cluster::{self, Cluster, Setup};
use crate::process::{self, Outcome, neptun};

/// The password every URL carries: the server trusts the connection and never asks for
/// it, so it can only ever show up in an error line if the program leaks it.
const PASSWORD: &str = "s3cret-Pa55";

/// Certificates for one test: a CA with a server certificate for `localhost` that it
/// signed, and a second CA that signed nothing the server shows.
struct Certificates {
    dir: TempDir,
}

impl Certificates {
    /// Makes them with `openssl` in a temporary folder the server may read, its key
    /// owned by the server's account with mode 0600 as PostgreSQL demands.
    fn make() -> Result<Certificates, String> {
        let dir = tempfile::Builder::new()
            .prefix("neptun-tls-")
            .tempdir()
            .map_err(|err| format!("no temporary folder: {err}"))?;
        let certificates = Certificates { dir };
        for ca in ["ca", "other-ca"] {
            certificates.openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=neptun test {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
            ])?;
        }
        certificates.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ])?;
        let extensions = certificates.path("server.ext");
        std::fs::write(
            &extensions,
            "subjectAltName = DNS:localhost\nbasicConstraints = CA:FALSE\n\
             keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n",
        )
        .map_err(|err| format!("writing {}: {err}", extensions.display()))?;
        certificates.openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ])?;
        certificates.give_to_server()?;
        Ok(certificates)
    }

    fn openssl(&self, args: &[&str]) -> Result<(), String> {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .map_err(|err| format!("openssl did not run: {err}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "openssl {} failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Lets the server (run as `postgres` when the tests run as root) into the folder
    /// and makes the key its own, readable by nobody else.
    fn give_to_server(&self) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let key = self.path("server.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|err| format!("chmod {}: {err}", key.display()))?;
        if rustix::process::geteuid().is_root() {
            let (uid, gid) = postgres_cluster::postgres_ids()?;
            for path in [self.dir.path().to_owned(), key] {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(|err| format!("chown {} to postgres: {err}", path.display()))?;
            }
        }
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// The cluster and its certificates, or `None` (after saying why) when PostgreSQL or
/// `openssl` is missing and PostgreSQL is not required.
fn tls_cluster() -> Option<(Cluster, Certificates, u16)> {
    let started = Certificates::make().and_then(|certificates| {
        let port = free_port();
        let options = format!(
            "-c port={port} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={} \
             -c ssl_key_file={}",
            certificates.path("server.crt").display(),
            certificates.path("server.key").display(),
        );
        let cluster = Cluster::start_with(&Setup {
            options: &options,
            hba: Some("hostssl all all 127.0.0.1/32 trust\n"),
        })?;
        Ok((cluster, certificates, port))
    });
    match started {
        Ok(started) => Some(started),
        Err(reason) if postgres_cluster::required() => panic!(
            "PostgreSQL is required ({}=required) but {reason}",
            postgres_cluster::REQUIRED_VARIABLE
        ),
        Err(reason) => {
            eprintln!("PostgreSQL with TLS not available, the TLS test is skipped: {reason}");
            None
        }
    }
}

/// `neptun-chat --database URL user create USER`.
fn create_user(url: &str, user: &str) -> Outcome {
    process::run(
        neptun()
            .arg("--database")
            .arg(url)
            .args(["user", "create", user]),
    )
}

/// The URL of the cluster's `postgres` database on `host`, with the password and `query`.
fn url(host: &str, port: u16, query: &str) -> String {
    format!("postgresql://postgres:{PASSWORD}@{host}:{port}/postgres?{query}")
}

fn root_cert(path: &Path) -> String {
    path.display().to_string()
}

/// Asserts that the connection failed with one clear error line that says each of
/// `expected` and shows the URL with its password masked.
fn refused(outcome: &Outcome, expected: &[&str], cluster: &Cluster) {
    let line = outcome.clear_error();
    assert!(!line.contains(PASSWORD), "the password is shown: {line}");
    assert!(
        !outcome.stderr.contains(PASSWORD),
        "the password is shown: {outcome:#?}"
    );
    assert!(line.contains("postgres:***@"), "the URL, masked: {line}");
    for words in expected {
        assert!(
            line.contains(words),
            "the error does not say {words:?}: {line}\nserver log:\n{}",
            cluster.server_log()
        );
    }
}

#[test]
fn every_sslmode_against_a_server_that_takes_tls_only() {
    let Some((cluster, certificates, port)) = tls_cluster() else {
        return;
    };
    let ca = root_cert(&certificates.path("ca.crt"));
    let other_ca = root_cert(&certificates.path("other-ca.crt"));
    let works = |url: String, user: &str| {
        let outcome = create_user(&url, user);
        assert!(
            outcome.status.success(),
            "{url}: {outcome:#?}\nserver log:\n{}",
            cluster.server_log()
        );
        assert_eq!(outcome.single_line(), user, "{url}");
    };

    // Encrypted, the certificate unchecked.
    works(url("localhost", port, "sslmode=require"), "by-require");
    // The chain and the name `localhost` checked.
    works(
        url(
            "localhost",
            port,
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        "by-verify-full",
    );
    // The chain only: the certificate does not name 127.0.0.1, which verify-ca allows.
    works(
        url(
            "127.0.0.1",
            port,
            &format!("sslmode=verify-ca&sslrootcert={ca}"),
        ),
        "by-verify-ca",
    );

    // The certificate names localhost, not 127.0.0.1.
    refused(
        &create_user(
            &url(
                "127.0.0.1",
                port,
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            "mismatch",
        ),
        &[r#"certificate not valid for name "127.0.0.1""#],
        &cluster,
    );
    // A CA that did not sign the server's certificate.
    refused(
        &create_user(
            &url(
                "localhost",
                port,
                // A password parameter too, which must be masked as well.
                &format!("sslmode=verify-full&sslrootcert={other_ca}&password={PASSWORD}"),
            ),
            "stranger",
        ),
        &["invalid peer certificate: UnknownIssuer"],
        &cluster,
    );
    // No TLS at all: the only pg_hba.conf line is `hostssl`.
    refused(
        &create_user(&url("localhost", port, "sslmode=disable"), "plain"),
        &["no pg_hba.conf entry", "no encryption"],
        &cluster,
    );

    // What worked was stored, and nothing else.
    let listed = process::run(
        neptun()
            .arg("--database")
            .arg(url("localhost", port, "sslmode=require"))
            .args(["user", "list"]),
    );
    assert!(listed.status.success(), "{listed:#?}");
    let mut users: Vec<&str> = listed
        .stdout
        .lines()
        .filter_map(|line| line.split('\t').next())
        .collect();
    users.sort_unstable();
    assert_eq!(users, ["by-require", "by-verify-ca", "by-verify-full"]);
}
