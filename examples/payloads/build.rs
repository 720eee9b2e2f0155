//! Builds `examples/td-payload` (its own cargo workspace) with a nested `cargo build --release`
//! for `x86_64-unknown-linux-gnu` as a static, non-PIE, no_std ELF linked by `link.ld`, into a
//! target directory under OUT_DIR, and copies the ELF to `$OUT_DIR/td-payload.elf`.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let payload_dir = manifest_dir.join("../td-payload");
    let payload_dir = payload_dir
        .canonicalize()
        .unwrap_or_else(|e| panic!("payload sources {}: {e}", payload_dir.display()));
    let abi_dir = manifest_dir.join("../../tdx-abi");

    for p in ["Cargo.toml", "Cargo.lock", "link.ld", "src"] {
        println!("cargo:rerun-if-changed={}", payload_dir.join(p).display());
    }
    for p in ["Cargo.toml", "src"] {
        println!("cargo:rerun-if-changed={}", abi_dir.join(p).display());
    }

    let linker_script = payload_dir.join("link.ld");
    let flags = [
        "-C".to_string(),
        "relocation-model=static".to_string(),
        "-C".to_string(),
        "link-arg=-nostartfiles".to_string(),
        "-C".to_string(),
        "link-arg=-nostdlib".to_string(),
        "-C".to_string(),
        "link-arg=-static".to_string(),
        "-C".to_string(),
        "link-arg=-no-pie".to_string(),
        "-C".to_string(),
        format!("link-arg=-Wl,-T,{}", linker_script.display()),
        "-C".to_string(),
        "link-arg=-Wl,--build-id=none".to_string(),
    ];
    let target = "x86_64-unknown-linux-gnu";
    let target_dir = out_dir.join("td-payload-target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    let mut cmd = Command::new(cargo);
    cmd.current_dir(&payload_dir)
        .arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--target")
        .arg(target)
        .arg("--manifest-path")
        .arg(payload_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"));
    // The outer build's settings must not leak into the nested one (clippy's driver, the
    // outer target's flags, the outer target dir, coverage/profile wrappers).
    for var in [
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_PROFILE_RELEASE_PANIC",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    for (k, _) in env::vars_os() {
        if let Some(k) = k.to_str() {
            if k.starts_with("CARGO_TARGET_") && k.ends_with("_RUSTFLAGS") {
                cmd.env_remove(k);
            }
        }
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running the nested cargo build of td-payload: {e}"));
    if !status.success() {
        panic!(
            "nested cargo build of {} failed: {status}",
            payload_dir.display()
        );
    }
    let elf = target_dir.join(target).join("release").join("td-payload");
    let dst = out_dir.join("td-payload.elf");
    std::fs::copy(&elf, &dst)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", elf.display(), dst.display()));
}
