//! `tdx-vmm`: the reference VMM of the TDX host crate family.
//!
//! `tdx-vmm launch td.toml` is coming (see the workspace README); for now the binary reports
//! its version and the crate versions it is built from.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-V") => {
            println!("tdx-vmm {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!(
                "tdx-vmm: '{other}' is not available yet: `launch`, `measure` and `inspect` are \
                 being built (see README.md)"
            );
            ExitCode::from(2)
        }
        None => {
            eprintln!("usage: tdx-vmm --version  (launch/measure/inspect are being built)");
            ExitCode::from(2)
        }
    }
}
