//! `radio loadtest`: not built yet (issue 3). Kept as an honest refusal so the
//! CLI surface is in place.

use std::process::ExitCode;

use crate::cli::LoadtestArgs;

pub async fn run(_args: LoadtestArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("radio loadtest is not implemented yet")
}

pub async fn worker_main() -> anyhow::Result<ExitCode> {
    anyhow::bail!("radio loadtest-worker is not implemented yet")
}
