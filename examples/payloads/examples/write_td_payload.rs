//! Writes the example TD payload ELF to a file, e.g. for `examples/td.toml`:
//! `cargo run -p tdx-payloads --example write_td_payload -- examples/td-payload.elf`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: write_td_payload OUTPUT.elf");
        return ExitCode::from(2);
    };
    match std::fs::write(&path, tdx_payloads::TD_PAYLOAD_ELF) {
        Ok(()) => {
            println!(
                "wrote {} bytes to {}",
                tdx_payloads::TD_PAYLOAD_ELF.len(),
                path.to_string_lossy()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("writing {}: {e}", path.to_string_lossy());
            ExitCode::FAILURE
        }
    }
}
