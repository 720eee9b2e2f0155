//! The `tdx-vmm` binary on good and bad inputs: every bad input gives a `tdx-vmm: …` message
//! naming what is wrong and a nonzero exit, never a panic; `measure` equals an MRTD computed
//! here independently (sha2 over the TDX module's block format, not through the crate).
mod support;
use support::elf;

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha384};

const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_tdx-vmm"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run tdx-vmm");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs and expects a clean failure: exit 1, one `tdx-vmm:` message containing every
/// `needle`, no panic.
fn fails(args: &[&str], needles: &[&str]) -> String {
    let o = run(args);
    assert_eq!(
        o.code, 1,
        "args {args:?}: stdout {} stderr {}",
        o.stdout, o.stderr
    );
    assert!(o.stderr.starts_with("tdx-vmm: "), "stderr: {}", o.stderr);
    assert!(!o.stderr.contains("panicked"), "stderr: {}", o.stderr);
    for n in needles {
        assert!(o.stderr.contains(n), "expected {n:?} in: {}", o.stderr);
    }
    o.stderr
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---- independent builders -----------------------------------------------------------------

/// A payload: text (RX) at 2 MiB, data (RW, half .bss) at 2 MiB + 16 KiB.
fn good_elf() -> Vec<u8> {
    let body: Vec<u8> = (0..0x3000u32).map(|i| (i * 7 % 253) as u8).collect();
    elf(
        2,
        0x20_0000,
        &[
            (5, 0x1000, 0x20_0000, 0x2000, 0x2000),
            (6, 0x3000, 0x20_4000, 0x1000, 0x2000),
        ],
        &body,
    )
}

fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Vec<u8> {
    let mut g = d1.to_le_bytes().to_vec();
    g.extend_from_slice(&d2.to_le_bytes());
    g.extend_from_slice(&d3.to_le_bytes());
    g.extend_from_slice(&d4);
    g
}

/// A TDVF image of `size` bytes with `sections` (offset, raw size, gpa, mem size, type,
/// attributes) described at `size − 0x1000`.
fn tdvf(size: usize, sections: &[(u32, u32, u64, u64, u32, u32)]) -> Vec<u8> {
    let mut img = vec![0x5A; size];
    let d = size - 0x1000;
    img[d..d + 4].copy_from_slice(b"TDVF");
    img[d + 4..d + 8].copy_from_slice(&(16 + 32 * sections.len() as u32).to_le_bytes());
    img[d + 8..d + 12].copy_from_slice(&1u32.to_le_bytes());
    img[d + 12..d + 16].copy_from_slice(&(sections.len() as u32).to_le_bytes());
    for (i, x) in sections.iter().enumerate() {
        let e = d + 16 + 32 * i;
        img[e..e + 4].copy_from_slice(&x.0.to_le_bytes());
        img[e + 4..e + 8].copy_from_slice(&x.1.to_le_bytes());
        img[e + 8..e + 16].copy_from_slice(&x.2.to_le_bytes());
        img[e + 16..e + 24].copy_from_slice(&x.3.to_le_bytes());
        img[e + 24..e + 28].copy_from_slice(&x.4.to_le_bytes());
        img[e + 28..e + 32].copy_from_slice(&x.5.to_le_bytes());
    }
    let footer = guid(
        0x96b582de,
        0x1fb2,
        0x45f7,
        [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
    );
    let tdx = guid(
        0xe47a6535,
        0x984a,
        0x4798,
        [0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2],
    );
    img[size - 0x30..size - 0x20].copy_from_slice(&footer);
    img[size - 0x32..size - 0x30].copy_from_slice(&40u16.to_le_bytes());
    img[size - 0x42..size - 0x32].copy_from_slice(&tdx);
    img[size - 0x44..size - 0x42].copy_from_slice(&22u16.to_le_bytes());
    img[size - 0x48..size - 0x44].copy_from_slice(&0x1000u32.to_le_bytes());
    img
}

fn good_tdvf() -> Vec<u8> {
    tdvf(
        0x10000,
        &[
            (0x8000, 0x8000, 0xFFFF_8000, 0x8000, 0, 1),
            (0, 0x2000, 0xFFFF_0000, 0x2000, 1, 0),
            (0, 0, 0x80_9000, 0x2000, 2, 0),
            (0, 0, 0x80_0000, 0x6000, 3, 0),
        ],
    )
}

/// MRTD of (gpa, bytes, measured) regions, straight from the module's block format.
fn reference_mrtd(regions: &[(u64, Vec<u8>, bool)]) -> String {
    fn block(tag: &[u8], gpa: u64) -> [u8; 128] {
        let mut b = [0u8; 128];
        b[..tag.len()].copy_from_slice(tag);
        b[16..24].copy_from_slice(&gpa.to_le_bytes());
        b
    }
    let mut h = Sha384::new();
    for (gpa, data, measured) in regions {
        assert_eq!(data.len() % 4096, 0);
        for (i, page) in data.chunks(4096).enumerate() {
            let page_gpa = gpa + 4096 * i as u64;
            h.update(block(b"MEM.PAGE.ADD", page_gpa));
            if *measured {
                for (c, chunk) in page.chunks(256).enumerate() {
                    h.update(block(b"MR.EXTEND", page_gpa + 256 * c as u64));
                    h.update(chunk);
                }
            }
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn measure_json(config: &Path) -> serde_json::Value {
    let o = run(&["measure", s(config), "--json"]);
    assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    serde_json::from_str(&o.stdout).expect("measure --json is JSON")
}

fn toml(dir: &Path, name: &str, text: &str) -> PathBuf {
    write(dir, name, text.as_bytes())
}

// ---- td.toml ------------------------------------------------------------------------------

#[test]
fn version() {
    let o = run(&["--version"]);
    assert_eq!(o.code, 0);
    assert!(o.stdout.starts_with("tdx-vmm "), "{}", o.stdout);
}

#[test]
fn no_command_is_a_usage_error() {
    let o = run(&[]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("Usage"), "{}", o.stderr);
}

#[test]
fn bad_td_toml() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "p.elf", &good_elf());
    let c = toml(d, "a.toml", "payload = \"p.elf\"\nmemroy = \"256M\"\n");
    fails(&["measure", s(&c)], &["a.toml", "line 2", "memroy"]);
    let c = toml(
        d,
        "b.toml",
        "payload = \"p.elf\"\n[td]\ndebug = false\nfrobnicate = 1\n",
    );
    fails(&["measure", s(&c)], &["line 4", "frobnicate"]);
    let c = toml(
        d,
        "c.toml",
        "payload = \"p.elf\"\n[[disk]]\npath = \"x\"\nro = true\n",
    );
    fails(&["launch", s(&c)], &["line 4", "`ro`"]);
    let c = toml(d, "d.toml", "payload = \"p.elf\"\nmemory = \"12Q\"\n");
    fails(&["measure", s(&c)], &["line 2", "12Q"]);
    let c = toml(d, "e.toml", "payload = \"p.elf\"\nmemory = \"0M\"\n");
    fails(&["measure", s(&c)], &["0M", "zero"]);
    let c = toml(d, "f.toml", "payload = \"p.elf\"\nmemory = \"16G\"\n");
    fails(&["measure", s(&c)], &["16G", "larger"]);
    let c = toml(d, "g.toml", "payload = \"p.elf\"\nfirmware = \"fw.fd\"\n");
    fails(&["measure", s(&c)], &["both", "payload", "firmware"]);
    let c = toml(d, "h.toml", "memory = \"64M\"\n");
    fails(&["measure", s(&c)], &["neither"]);
    let c = toml(d, "i.toml", "payload = \"p.elf\"\nmemory = [1, 2]\n");
    fails(&["measure", s(&c)], &["line 2"]);
    let c = toml(d, "j.toml", "payload = \"p.elf\"\nmemory = \"256M\n");
    fails(&["measure", s(&c)], &["j.toml", "line 2"]);
}

#[test]
fn missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fails(
        &["measure", s(&d.join("nope.toml"))],
        &["cannot read", "nope.toml", "No such file"],
    );
    let c = toml(d, "a.toml", "payload = \"missing.elf\"\n");
    let missing = d.join("missing.elf");
    fails(
        &["measure", s(&c)],
        &["cannot read payload", s(&missing), "No such file"],
    );
    let c = toml(d, "b.toml", "firmware = \"sub/missing.fd\"\n");
    fails(
        &["launch", s(&c)],
        &["cannot read firmware", "sub/missing.fd"],
    );
    fails(
        &["inspect", s(&d.join("missing.fd"))],
        &["cannot read firmware", "missing.fd"],
    );
}

// ---- ELF payloads -------------------------------------------------------------------------

#[test]
fn bad_elf_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = toml(d, "td.toml", "payload = \"p.elf\"\nmemory = \"64M\"\n");
    let body = [0x90u8; 0x2000];
    let cases: Vec<(Vec<u8>, Vec<&str>)> = vec![
        (b"MZ\x90\x00 not an elf".to_vec(), vec!["not an ELF"]),
        (
            elf(
                1,
                0x20_0000,
                &[(5, 0x1000, 0x20_0000, 0x1000, 0x1000)],
                &body,
            ),
            vec!["32-bit"],
        ),
        (
            elf(
                2,
                0x20_0000,
                &[
                    (5, 0x1000, 0x20_0000, 0x1000, 0x1000),
                    (6, 0x2000, 0x20_0800, 0x1000, 0x1000),
                ],
                &body,
            ),
            vec!["segment #0", "overlaps", "segment #1", "0x200800"],
        ),
        (
            elf(2, 0x9_0000, &[(5, 0x1000, 0x9_0000, 0x1000, 0x1000)], &body),
            vec!["segment #0", "0x90000", "below 1 MiB"],
        ),
        (
            elf(
                2,
                0x20_0000,
                &[(5, 0x1000, 0x20_0000, 0x2000, 0x1000)],
                &body,
            ),
            vec!["segment #0", "p_filesz 0x2000", "p_memsz 0x1000"],
        ),
        (
            elf(
                2,
                0x20_0000,
                &[(5, 0x1000, 0x3FFF_0000, 0x1000, 0x1000)],
                &body,
            ),
            vec!["segment #0", "end of RAM"],
        ),
        (good_elf()[..0x30].to_vec(), vec!["malformed"]),
    ];
    for (bytes, needles) in cases {
        write(d, "p.elf", &bytes);
        let mut all = vec!["payload", "p.elf"];
        all.extend(needles);
        fails(&["measure", s(&c)], &all);
        fails(&["launch", s(&c)], &all);
    }
}

/// The identity page tables of the ELF payload contract, built here from the contract text.
fn contract_page_tables() -> Vec<u8> {
    let mut t = vec![0u8; 0x6000];
    t[0..8].copy_from_slice(&(0x2000u64 | 7).to_le_bytes());
    for gib in 0..4usize {
        let pd = 0x3000 + 0x1000 * gib as u64;
        t[0x1000 + 8 * gib..0x1008 + 8 * gib].copy_from_slice(&(pd | 7).to_le_bytes());
        for e in 0..512usize {
            let at = 0x2000 + 0x1000 * gib + 8 * e;
            let frame = ((gib as u64) << 30) | ((e as u64) << 21);
            t[at..at + 8].copy_from_slice(&(frame | 0x87).to_le_bytes());
        }
    }
    t
}

#[test]
fn measure_elf_payload_matches_an_independent_mrtd() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f = good_elf();
    write(d, "p.elf", &f);
    let c = toml(
        d,
        "td.toml",
        "payload = \"p.elf\"\nmemory = \"64M\"\n[td]\ndebug = true\n",
    );
    let v = measure_json(&c);
    let mut data = f[0x3000..0x4000].to_vec();
    data.resize(0x2000, 0);
    let expected = reference_mrtd(&[
        (0x1000, contract_page_tables(), true),
        (0x8000, vec![0; 0x1000], false),
        (0x20_0000, f[0x1000..0x3000].to_vec(), true),
        (0x20_4000, data, true),
    ]);
    assert_eq!(v["mrtd"], expected.as_str());
    assert_eq!(v["attributes"], "0x0000000010000001");
    assert_eq!(v["vcpu_rcx"], 0x8000);
    assert_eq!(v["pages_added"], 6 + 1 + 2 + 2);
    assert_eq!(v["initial"][1]["name"], "TD HOB");
    assert_eq!(v["initial"][1]["measured"], false);
    // Text output carries the same MRTD.
    let o = run(&["measure", s(&c)]);
    assert_eq!(o.code, 0);
    assert!(
        o.stdout.contains(&format!("MRTD        {expected}")),
        "{}",
        o.stdout
    );
    // A changed byte in a measured segment changes MRTD.
    let mut f2 = f.clone();
    f2[0x1234] ^= 0xFF;
    write(d, "p.elf", &f2);
    assert_ne!(measure_json(&c)["mrtd"], expected.as_str());
}

// ---- TDVF firmware ------------------------------------------------------------------------

#[test]
fn bad_tdvf_images() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = toml(d, "td.toml", "firmware = \"fw.fd\"\nmemory = \"64M\"\n");
    let good = good_tdvf();
    let mut corrupt_sig = good.clone();
    corrupt_sig[0xF000..0xF004].copy_from_slice(b"XDVF");
    let mut corrupt_count = good.clone();
    corrupt_count[0xF00C..0xF010].copy_from_slice(&5000u32.to_le_bytes());
    let mut corrupt_offset = good.clone();
    let n = corrupt_offset.len();
    corrupt_offset[n - 0x48..n - 0x44].copy_from_slice(&0x7FFF_0000u32.to_le_bytes());
    let cases: Vec<(Vec<u8>, Vec<&str>)> = vec![
        (
            good[..good.len() - 0x100].to_vec(),
            vec!["no OVMF GUID table footer", "truncated"],
        ),
        (good[..0x20].to_vec(), vec!["too small"]),
        (
            tdvf(
                0x10000,
                &[
                    (0xC000, 0x8000, 0xFFFF_8000, 0x8000, 0, 1),
                    (0, 0, 0x80_9000, 0x2000, 2, 0),
                ],
            ),
            vec!["section #0 (BFV)", "0xc000", "0x8000", "past the end"],
        ),
        (
            tdvf(
                0x10000,
                &[
                    (0x8000, 0x8000, 0xFFFF_8000, 0x8000, 0, 1),
                    (0xF000, 0x2000, 0xFFFF_0000, 0x2000, 1, 0),
                ],
            ),
            vec!["section #1 (CFV)", "0xf000", "past the end"],
        ),
        (corrupt_sig, vec!["signature", "TDVF"]),
        (corrupt_count, vec!["5000 sections"]),
        (corrupt_offset, vec!["descriptor offset 0x7fff0000"]),
        (
            tdvf(0x10000, &[(0x8000, 0x8000, 0xFFFF_8001, 0x8000, 0, 1)]),
            vec!["section #0 (BFV)", "0xffff8001", "aligned"],
        ),
    ];
    for (bytes, needles) in cases {
        let fw = write(d, "fw.fd", &bytes);
        let mut all = vec!["firmware", "fw.fd"];
        all.extend(needles.iter().copied());
        fails(&["measure", s(&c)], &all);
        fails(&["launch", s(&c)], &all);
        fails(&["inspect", s(&fw)], &all);
        fails(&["inspect", s(&fw), "--json"], &all);
    }
    // A valid table whose layout does not fit the TD.
    write(
        d,
        "fw.fd",
        &tdvf(
            0x10000,
            &[
                (0x8000, 0x8000, 0xFFFF_8000, 0x8000, 0, 1),
                (0, 0, 0x1000_0000, 0x2000, 2, 0),
            ],
        ),
    );
    fails(&["measure", s(&c)], &["section #1 (TD_HOB)", "outside RAM"]);
}

#[test]
fn synthetic_tdvf_inspect_and_measure() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = good_tdvf();
    let fw = write(d, "fw.fd", &img);
    let o = run(&["inspect", s(&fw)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for t in ["BFV", "CFV", "TD_HOB", "TempMem", "MR.EXTEND", "0xffff8000"] {
        assert!(o.stdout.contains(t), "{t} missing in {}", o.stdout);
    }
    let c = toml(d, "td.toml", "firmware = \"fw.fd\"\nmemory = \"64M\"\n");
    let v = measure_json(&c);
    let expected = reference_mrtd(&[
        (0xFFFF_8000, img[0x8000..0x10000].to_vec(), true),
        (0xFFFF_0000, vec![0; 0x2000], false),
        (0x80_9000, vec![0; 0x2000], false),
        (0x80_0000, vec![0; 0x6000], false),
    ]);
    assert_eq!(v["mrtd"], expected.as_str());
    assert_eq!(v["vcpu_rcx"], 0x80_9000);
}

/// Skips (loudly) when Debian's ovmf package is not installed.
fn ovmf() -> Option<Vec<u8>> {
    match std::fs::read(OVMF) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!(
                "SKIPPED: {OVMF} unavailable ({e}); install Debian's `ovmf` package (.ci/run does) \
                 to test against the real TDVF image"
            );
            None
        }
    }
}

/// The section table of a TDVF image, found independently of the crate: by scanning for the
/// TDX metadata GUID e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae followed by "TDVF".
fn sections_by_scan(img: &[u8]) -> Vec<(u32, u32, u64, u64, u32, u32)> {
    let mut needle = guid(
        0xe9eaf9f3,
        0x168e,
        0x44d5,
        [0xa8, 0xeb, 0x7f, 0x4d, 0x87, 0x38, 0xf6, 0xae],
    );
    needle.extend_from_slice(b"TDVF");
    let at = img
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .expect("TDX metadata GUID + TDVF in the image")
        + 16;
    let u32_at = |o: usize| u32::from_le_bytes(img[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(img[o..o + 8].try_into().unwrap());
    (0..u32_at(at + 12) as usize)
        .map(|i| {
            let e = at + 16 + 32 * i;
            (
                u32_at(e),
                u32_at(e + 4),
                u64_at(e + 8),
                u64_at(e + 16),
                u32_at(e + 24),
                u32_at(e + 28),
            )
        })
        .collect()
}

#[test]
fn real_ovmf_inspect() {
    let Some(img) = ovmf() else { return };
    let o = run(&["inspect", OVMF]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for t in ["BFV", "CFV", "TD_HOB", "TempMem", "MR.EXTEND"] {
        assert!(o.stdout.contains(t), "{t} missing in {}", o.stdout);
    }
    let o = run(&["inspect", OVMF, "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let listed = v["sections"].as_array().unwrap();
    let scanned = sections_by_scan(&img);
    assert_eq!(listed.len(), scanned.len());
    let names = ["BFV", "CFV", "TD_HOB", "TempMem"];
    for (l, sc) in listed.iter().zip(&scanned) {
        assert_eq!(l["data_offset"], sc.0);
        assert_eq!(l["raw_data_size"], sc.1);
        assert_eq!(l["memory_address"], sc.2);
        assert_eq!(l["memory_data_size"], sc.3);
        assert_eq!(l["type"], names[sc.4 as usize]);
        assert_eq!(l["attributes"], sc.5);
    }
    for n in names {
        assert!(listed.iter().any(|l| l["type"] == n), "no {n} section");
    }
}

#[test]
fn real_ovmf_measure_is_stable_and_independently_reproduced() {
    let Some(img) = ovmf() else { return };
    let dir = tempfile::tempdir().unwrap();
    let c = toml(
        dir.path(),
        "td.toml",
        &format!("firmware = \"{OVMF}\"\nmemory = \"512M\"\nvcpus = 2\n"),
    );
    let v = measure_json(&c);
    // Sections in table order; raw bytes zero-padded; only MR.EXTEND sections extended; HOB
    // and TempMem contents are not measured, so zeros stand in for them.
    let regions: Vec<(u64, Vec<u8>, bool)> = sections_by_scan(&img)
        .into_iter()
        .map(|(off, raw, gpa, size, _ty, attr)| {
            let mut data = img[off as usize..(off + raw) as usize].to_vec();
            data.resize(size as usize, 0);
            (gpa, data, attr & 1 != 0)
        })
        .collect();
    let expected = reference_mrtd(&regions);
    assert_eq!(v["mrtd"], expected.as_str());
    assert_eq!(
        measure_json(&c)["mrtd"],
        expected.as_str(),
        "stable across runs"
    );
    assert!(v["pages_measured"].as_u64().unwrap() > 0);
}

// ---- the shipped examples -----------------------------------------------------------------

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn shipped_examples_parse() {
    use tdx_vmm::config::{Boot, TdConfig};
    let ex = examples_dir();
    let c = TdConfig::from_file(&ex.join("td.toml")).expect("examples/td.toml is valid");
    assert!(matches!(c.boot, Boot::Payload(ref p) if p.ends_with("td-payload.elf")));
    assert_eq!(c.td.attributes(), 1 << 28);
    let c = TdConfig::from_file(&ex.join("td-ovmf.toml")).expect("examples/td-ovmf.toml");
    assert_eq!(c.boot, Boot::Firmware(PathBuf::from(OVMF)));
}

#[test]
fn ovmf_example_measures() {
    if ovmf().is_none() {
        return;
    }
    let v = measure_json(&examples_dir().join("td-ovmf.toml"));
    assert_eq!(v["firmware"], OVMF);
    assert_eq!(v["mrtd"].as_str().unwrap().len(), 96);
}

#[test]
fn real_ovmf_truncated() {
    let Some(img) = ovmf() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The tail cut off: the footer table is gone.
    let fw = write(dir.path(), "tail.fd", &img[..img.len() - 4096]);
    fails(
        &["inspect", s(&fw)],
        &["tail.fd", "no OVMF GUID table footer"],
    );
    // The head cut off: the footer survives, but the BFV's bytes now run past the end.
    let fw = write(dir.path(), "head.fd", &img[img.len() / 2..]);
    fails(
        &["inspect", s(&fw)],
        &["head.fd", "section #0 (BFV)", "past the end"],
    );
    let c = toml(dir.path(), "td.toml", "firmware = \"head.fd\"\n");
    fails(
        &["measure", s(&c)],
        &["head.fd", "section #0 (BFV)", "past the end"],
    );
}
