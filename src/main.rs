//! The `neptun-chat` binary: parse the command line, start logging, dispatch.

use std::process::ExitCode;

use neptun_chat::{cli, telemetry};

fn main() -> ExitCode {
    let cli = cli::Cli::parse_or_exit();
    telemetry::init_logging();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
