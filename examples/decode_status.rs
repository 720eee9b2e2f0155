//! Decodes TDX completion statuses given on the command line (hex, e.g. from a kernel log or
//! KVM's `hw_error`), the way `tdx-abi` names them:
//!
//! ```sh
//! cargo run -p tdx-examples --example decode_status -- 0x8000020000000092 0xC000010000000001
//! ```

use tdx_abi::status::TdxStatus;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let inputs = if args.is_empty() {
        vec![
            "0x8000020000000092".to_string(),
            "0xC000010000000001".to_string(),
        ]
    } else {
        args
    };
    let mut bad = false;
    for arg in inputs {
        let digits = arg.trim_start_matches("0x").trim_start_matches("0X");
        match u64::from_str_radix(digits, 16) {
            Ok(raw) => {
                let s = TdxStatus::from_raw(raw);
                println!("{raw:#018x}  {s}  ({:?})", s.disposition());
            }
            Err(e) => {
                eprintln!("decode_status: '{arg}' is not a 64-bit hex value: {e}");
                bad = true;
            }
        }
    }
    if bad {
        std::process::exit(2);
    }
}
