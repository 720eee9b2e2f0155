//! Builds `examples/td-payload` (its own cargo workspace, `no_std`, `panic = "abort"`) for
//! the host's x86-64 target as a static, non-PIE ELF linked with its linker script, and copies
//! it to OUT_DIR/td-payload.elf. Uses the same cargo and rustc as the outer build; the nested
//! build has its own target directory under OUT_DIR.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let payload = manifest.join("../td-payload");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    for f in ["Cargo.toml", "Cargo.lock", "link.ld", "src"] {
        println!("cargo:rerun-if-changed={}", payload.join(f).display());
    }
    for f in ["src", "Cargo.toml"] {
        println!(
            "cargo:rerun-if-changed={}",
            manifest.join("../../tdx-abi").join(f).display()
        );
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = out.join("td-payload-target");
    let link_ld = payload.join("link.ld");
    let flags = [
        "-C",
        "relocation-model=static",
        "-C",
        "link-arg=-nostartfiles",
        "-C",
        "link-arg=-nostdlib",
        "-C",
        "link-arg=-static",
        "-C",
        "link-arg=-no-pie",
        "-C",
        &format!("link-arg=-Wl,-T,{}", link_ld.display()),
        "-C",
        "link-arg=-Wl,--build-id=none",
    ]
    .join("\u{1f}");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&payload)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", flags);
    // The outer build's settings must not leak into the payload's.
    for v in [
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PROFILE_RELEASE_PANIC",
        "CARGO_PROFILE_DEV_PANIC",
    ] {
        cmd.env_remove(v);
    }
    let status = cmd.status().expect("run cargo for examples/td-payload");
    assert!(
        status.success(),
        "building examples/td-payload failed ({status})"
    );
    let elf = target_dir.join("x86_64-unknown-linux-gnu/release/td-payload");
    std::fs::copy(&elf, out.join("td-payload.elf")).expect("copy the payload ELF");
}
