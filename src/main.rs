use std::process::ExitCode;

use clap::Parser;

use radio::cli::{Cli, Command, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The clients reach wss:// servers; pick rustls' ring provider once.
    // Err only means a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ansi = cli.color.on_stderr();
    let result = match cli.command {
        Command::Serve(args) => {
            radio::logging::init(args.log_format, "info", ansi);
            runtime()
                .and_then(|rt| rt.block_on(radio::server::serve(*args)))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Broadcast(args) => {
            radio::logging::init(LogFormat::Pretty, "warn", ansi);
            radio::client::trust_ca(args.client.ca_cert.as_deref())
                .and_then(|()| runtime())
                .and_then(|rt| rt.block_on(radio::client::broadcast::run(args)))
        }
        Command::Listen(args) => {
            radio::logging::init(LogFormat::Pretty, "warn", ansi);
            radio::client::trust_ca(args.client.ca_cert.as_deref())
                .and_then(|()| runtime())
                .and_then(|rt| rt.block_on(radio::client::listen::run(args)))
        }
        Command::Loadtest(args) => {
            radio::logging::init(LogFormat::Pretty, "warn", ansi);
            runtime().and_then(|rt| rt.block_on(radio::loadtest::run(args)))
        }
        Command::LoadtestWorker => {
            radio::logging::init(LogFormat::Pretty, "warn", ansi);
            runtime().and_then(|rt| rt.block_on(radio::loadtest::worker_main()))
        }
        // Made whole, then written: a reader that goes away is no panic.
        Command::Completions { shell } => {
            let mut cmd = radio::cli::command();
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut cmd, "radio", &mut text);
            radio::errors::to_stdout(&text).map(|()| ExitCode::SUCCESS)
        }
        Command::Man { subcommand } => {
            let mut text = Vec::new();
            radio::man::write(subcommand.as_deref(), &mut text)
                .and_then(|()| radio::errors::to_stdout(&text))
                .map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) if radio::errors::is_closed_stdout(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("radio: {}", radio::errors::text(&e));
            radio::errors::exit_code(&e)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
