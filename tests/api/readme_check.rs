//! `scripts/readme-check.sh`, the check that keeps the README pasteable, run against small
//! Markdown files written here: it passes when every block works in order, and fails,
//! naming the line, on each kind of breakage it exists to catch. (CI runs it on the real
//! README; that run builds and starts the server through `cargo run` as a reader does.)
//!
//! The script bounds its own waits (the server's start-up, its stop), so these tests run
//! it with `Command::output`, which drains both pipes while it runs.

use std::path::Path;
use std::process::{Command, Output};

/// A server block that starts this build's binary, as `cargo run` would.
fn server_block() -> String {
    format!(
        "```sh server\n'{}'\n```\n",
        env!("CARGO_BIN_EXE_neptun-chat")
    )
}

/// The quick-start set-up every fixture shares: the address, the binary, a user and
/// their session.
fn setup_block() -> String {
    format!(
        "```sh\nAPI=${{API:-http://localhost:8080}}\nNC='{}'\n$NC user create alice\nTOKEN=$($NC session create alice)\n```\n",
        env!("CARGO_BIN_EXE_neptun-chat")
    )
}

/// Runs the check on `markdown`, written to a file named `GUIDE.md`, with a
/// `NEPTUN_DATABASE` set that the check must clear (the file must never appear).
fn check(markdown: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let stray = dir.path().join("must-not-be-used.db");
    let file = dir.path().join("GUIDE.md");
    std::fs::write(&file, markdown).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/readme-check.sh");
    let output = Command::new("bash")
        .arg(script)
        .arg(&file)
        .env("README_CHECK_START_DEADLINE_SECS", "60")
        .env("NEPTUN_DATABASE", &stray)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        !stray.exists(),
        "the caller's NEPTUN_DATABASE leaked into the check"
    );
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The line of `markdown` (1-based) that contains `needle`.
fn line_of(markdown: &str, needle: &str) -> usize {
    markdown
        .lines()
        .position(|line| line.contains(needle))
        .map(|index| index + 1)
        .unwrap_or_else(|| panic!("{needle:?} is in the fixture"))
}

#[test]
fn a_guide_whose_blocks_all_work_in_order_passes_with_state_carried_across_a_restart() {
    // Arrange: state set in one block is used in later ones, an expected error status
    // is marked, the server is stopped for one block and started again.
    let markdown = format!(
        "# Guide\n\n{server}\nSet up:\n\n{setup}\n```sh\nCHAT=$($NC chat create alice)\ncurl -sS --fail-with-body $API/api/users/alice/chats/$CHAT/messages -H 'Content-Type: application/json' \\\n  -b \"neptun-session=$TOKEN\" -d '{{\"message\": \"kept\", \"actor\": \"user\"}}'\ncurl -sS $API/api/users/bob/chats -b \"neptun-session=$TOKEN\"   # expect: 403\n```\n\n```sh stopped\nls data/neptun.db\n```\n\n{server}\n```sh\ncurl -sS --fail-with-body $API/api/users/alice/chats/$CHAT/messages -b \"neptun-session=$TOKEN\"\n```\n\n```sh no-check (needs a Docker daemon)\ndocker ps\n```\n\n```json\n{{\"not\": \"run\"}}\n```\n",
        server = server_block(),
        setup = setup_block(),
    );

    // Act
    let output = check(&markdown);

    // Assert
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("every block of GUIDE.md ran as pasted"),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#""message":"kept""#),
        "the message posted before the restart is read back after it: {stdout}"
    );
    assert!(stdout.contains(r#""statusCode":403"#), "{stdout}");
    let skipped = line_of(&markdown, "no-check");
    assert!(
        stdout.contains(&format!(
            "skipped GUIDE.md:{skipped}: (needs a Docker daemon)"
        )),
        "{stdout}"
    );
    assert!(
        !stdout.contains("docker"),
        "the skipped block does not run: {stdout}"
    );
}

#[test]
fn a_request_answered_with_an_error_status_fails_the_check_with_its_line() {
    // Arrange: the session is revoked, as a logout would, before a request that needs it.
    let markdown = format!(
        "{server}\n{setup}\n```sh\n$NC session revoke \"$TOKEN\"\ncurl -sS --fail-with-body $API/api/users/alice/chats -b \"neptun-session=$TOKEN\"\necho never reached\n```\n",
        server = server_block(),
        setup = setup_block(),
    );

    // Act
    let output = check(&markdown);

    // Assert
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(!output.status.success(), "{stdout}\n{stderr}");
    let line = line_of(&markdown, "--fail-with-body $API/api/users/alice/chats");
    assert!(
        stderr.contains(&format!("GUIDE.md:{line}: the command failed (exit 22)")),
        "{stderr}"
    );
    assert!(!stdout.contains("never reached"), "{stdout}");
}

#[test]
fn an_expected_error_status_that_does_not_come_fails_the_check() {
    let markdown = format!(
        "{server}\n{setup}\n```sh\ncurl -sS $API/api/users/alice/chats -b \"neptun-session=$TOKEN\"   # expect: 401\n```\n",
        server = server_block(),
        setup = setup_block(),
    );

    let output = check(&markdown);

    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(!output.status.success(), "{stdout}\n{stderr}");
    let line = line_of(&markdown, "# expect: 401");
    assert!(
        stderr.contains(&format!("GUIDE.md:{line}: expected status 401")),
        "{stderr}"
    );
    assert!(
        stdout.contains(r#"{"chats":[]}"#),
        "the answer is shown: {stdout}"
    );
}

#[test]
fn blocks_that_could_fail_unnoticed_are_refused_before_anything_runs() {
    // A curl that exits 0 on a 401, an `a && b` whose `a` may fail silently, a server
    // started where the check would wait for it forever, an address the check cannot
    // point at its own server, a no-check block without a reason, a mark the check does
    // not know, and a shell block in a language the check would skip.
    // Each with the line the check must name: the fence (0) or the command (1).
    let cases = [
        (
            "```sh\ncurl -s http://localhost:8080/api/auth/session\n```\n",
            1,
            "curl without --fail-with-body",
        ),
        (
            "```sh\ncp backup.db data/neptun.db && rm -f data/neptun.db-wal\n```\n",
            1,
            "'&&' hides a failure",
        ),
        (
            "```sh\ncargo run --release\n```\n",
            1,
            "mark the block 'sh server'",
        ),
        (
            "```sh\nAPI=http://localhost:8080\n```\n",
            1,
            "set the address as API=${API:-...}",
        ),
        (
            "```sh\ncurl -sS --fail-with-body http://localhost:8080/healthz\n```\n",
            1,
            "a fixed address; use $API",
        ),
        ("```sh no-check\ndocker ps\n```\n", 0, "must say why"),
        ("```sh sometimes\ntrue\n```\n", 0, "unknown block mark"),
        (
            "```console\n$ curl http://localhost:8080/healthz\n```\n",
            0,
            "would be skipped unnoticed",
        ),
    ];
    for (block, offset, problem) in cases {
        let before = format!("{}\n```sh\ntouch ran\n```\n\n", server_block());
        let markdown = format!("{before}{block}");

        let output = check(&markdown);

        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert!(!output.status.success(), "{block}: {stdout}\n{stderr}");
        let line = before.lines().count() + 1 + offset;
        assert!(
            stderr.contains(&format!("GUIDE.md:{line}: ")) && stderr.contains(problem),
            "{block}: wants {problem:?} at line {line}: {stderr}"
        );
        assert!(
            !stdout.contains("serving"),
            "{block}: nothing ran: {stdout}"
        );
    }
}
