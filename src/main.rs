//! The `pgsnapfs` executable: parse, run, print the error, exit with its code.

use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = pgsnapfs::cli::Cli::parse();
    let default = match cli.verbose {
        0 => "warn,fuser=off",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in logs or pipes.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .init();
    let result = pgsnapfs::cli::run(cli);
    // A reader that closed the pipe early is not a failure (src/cli/out.rs); a full disk is.
    if let Some(e) = pgsnapfs::cli::out::failure() {
        eprintln!("pgsnapfs: error: cannot write the output: {e}");
        return ExitCode::FAILURE;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Each error's message already names its cause, so one line says it all.
            // A missing WAL file is routine for restore_command: not worth the word "error".
            match &err {
                pgsnapfs::Error::NotFound(_) => eprintln!("pgsnapfs: {err}"),
                _ => eprintln!("pgsnapfs: error: {err}"),
            }
            ExitCode::from(err.exit_code())
        }
    }
}
