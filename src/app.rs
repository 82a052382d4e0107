//! The program: parse the command line, set up logging, dispatch to the
//! subcommand, and turn its outcome into an exit status.

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::logging::LogFormat;
use crate::server::ServerConfig;
use crate::server::config::Startup;

/// `radio`'s `main`: everything the binary does.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The clients reach wss:// servers; pick rustls' ring provider once.
    // Err only means a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ansi = cli.color.on_stderr();
    let result = match cli.command {
        Command::Serve(args) => {
            crate::logging::init(args.log_format, "info", ansi);
            let startup = Startup::from(&*args);
            ServerConfig::try_from(*args)
                .map_err(anyhow::Error::from)
                .and_then(|config| {
                    runtime().and_then(|rt| rt.block_on(crate::server::serve(startup, config)))
                })
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Broadcast(args) => {
            crate::logging::init(LogFormat::Pretty, "warn", ansi);
            crate::client::trust_ca(args.client.ca_cert.as_deref())
                .and_then(|()| runtime())
                .and_then(|rt| rt.block_on(crate::client::broadcast::run(args)))
        }
        Command::Listen(args) => {
            crate::logging::init(LogFormat::Pretty, "warn", ansi);
            crate::client::trust_ca(args.client.ca_cert.as_deref())
                .and_then(|()| runtime())
                .and_then(|rt| rt.block_on(crate::client::listen::run(args)))
        }
        Command::Loadtest(args) => {
            crate::logging::init(LogFormat::Pretty, "warn", ansi);
            crate::client::trust_ca(args.ca_cert.as_deref())
                .and_then(|()| runtime())
                .and_then(|rt| rt.block_on(crate::loadtest::run(args)))
        }
        Command::LoadtestWorker => {
            crate::logging::init(LogFormat::Pretty, "warn", ansi);
            runtime().and_then(|rt| rt.block_on(crate::loadtest::worker_main()))
        }
        // Made whole, then written: a reader that goes away is no panic.
        Command::Completions { shell } => {
            let mut cmd = crate::cli::command();
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut cmd, "radio", &mut text);
            crate::errors::to_stdout(&text).map(|()| ExitCode::SUCCESS)
        }
        Command::Man { subcommand } => {
            crate::man::show(subcommand.as_deref()).map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) if crate::errors::is_closed_stdout(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("radio: {}", crate::errors::text(&e));
            crate::errors::exit_code(&e)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
