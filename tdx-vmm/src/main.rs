//! `tdx-vmm`: the reference VMM of the TDX host crate family.
//!
//! `tdx-vmm launch td.toml`, `tdx-vmm measure td.toml`, `tdx-vmm inspect FIRMWARE`; see
//! `tdx-vmm --help` and the crate README. Logs go to stderr, filtered by `RUST_LOG`
//! (default `warn`). Errors are printed as `tdx-vmm: <message>: <cause>…` with a nonzero exit.

use std::process::ExitCode;

use clap::Parser;
use tdx_vmm::cli::{self, Cli};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // Not locked for the run: vCPU threads write the serial console to stdout meanwhile.
    let mut stdout = std::io::stdout();
    match cli::run(cli, &mut stdout) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("tdx-vmm: {}", cli::error_chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}
