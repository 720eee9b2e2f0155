//! Assembles the bench's guest programs (`guests/*.s`, GNU as syntax) into flat binaries in
//! OUT_DIR. Built from source on every build; no binaries are checked in. Without binutils
//! the files are left empty and `tdx-vmm bench` reports those rows as unavailable.
use std::path::Path;
use std::process::Command;

fn assemble(src: &Path, out_dir: &Path, name: &str, defs: &[&str]) -> bool {
    let obj = out_dir.join(format!("{name}.o"));
    let bin = out_dir.join(format!("{name}.bin"));
    let mut as_cmd = Command::new(std::env::var("AS").unwrap_or_else(|_| "as".into()));
    for d in defs {
        as_cmd.args(["--defsym", d]);
    }
    let ok = as_cmd
        .arg(src)
        .arg("-o")
        .arg(&obj)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("objcopy")
            .args(["-O", "binary"])
            .arg(&obj)
            .arg(&bin)
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        println!("cargo:warning=could not assemble {} ({name}): the bench row that needs it will be unavailable", src.display());
        let _ = std::fs::write(&bin, []);
    }
    ok
}

fn main() {
    let out = std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR");
    let out = Path::new(&out);
    let src = Path::new("guests/blk_bench.s");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-env-changed=AS");
    assemble(src, out, "blk_bench_td", &["TD=1"]);
    assemble(src, out, "blk_bench_vm", &[]);
}
