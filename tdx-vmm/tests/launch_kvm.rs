//! End to end on the emulated backend with the KVM execution engine: `tdx_vmm::vmm::launch`
//! and `tdx-vmm launch` run a small ELF payload whose guest code really executes under KVM
//! and talks to the VMM only through TDCALLs (TDG.VP.VMCALL via the engine's doorbell).
//! Skipped, loudly, where `/dev/kvm` is unusable.
mod support;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tdx_host::backend::emulated::{EmulatedBackend, EmulatedBackendConfig, EngineChoice};
use tdx_host::emulated::PlatformConfig;
use tdx_vmm::config::TdConfig;
use tdx_vmm::vmm::{self, ExitStatus, LaunchOptions};

/// Ring-0 guest code (64-bit; assembled with GNU as, bytes below): for each byte of
/// "hello from the TD\n", `TDG.VP.VMCALL<Instruction.IO>` write of 1 byte to port 0x3F8
/// (RAX 0, RCX 0xFC00 = R10..R15 exposed, R10 0, R11 30, R12 1, R13 1 = write, R14 port,
/// R15 data) through the doorbell `out 0xdc, al`; then the same call to port 0x501 with 0
/// (exit status) and `hlt`.
const HELLO: &[u8] = &[
    0x48, 0x8d, 0x35, 0x5a, 0x00, 0x00, 0x00, // lea rsi, [rip + msg]
    0x44, 0x0f, 0xb6, 0x3e, // next: movzx r15d, byte [rsi]
    0x45, 0x85, 0xff, // test r15d, r15d
    0x74, 0x29, // jz done
    0x41, 0xbe, 0xf8, 0x03, 0x00, 0x00, // mov r14d, 0x3f8
    0x31, 0xc0, // xor eax, eax
    0xb9, 0x00, 0xfc, 0x00, 0x00, // mov ecx, 0xfc00
    0x45, 0x31, 0xd2, // xor r10d, r10d
    0x41, 0xbb, 0x1e, 0x00, 0x00, 0x00, // mov r11d, 30
    0x41, 0xbc, 0x01, 0x00, 0x00, 0x00, // mov r12d, 1
    0x41, 0xbd, 0x01, 0x00, 0x00, 0x00, // mov r13d, 1
    0xe6, 0xdc, // out 0xdc, al (TDCALL doorbell)
    0x48, 0xff, 0xc6, // inc rsi
    0xeb, 0xce, // jmp next
    0x41, 0xbe, 0x01, 0x05, 0x00, 0x00, // done: mov r14d, 0x501
    0x45, 0x31, 0xff, // xor r15d, r15d
    0x31, 0xc0, // xor eax, eax
    0xb9, 0x00, 0xfc, 0x00, 0x00, // mov ecx, 0xfc00
    0x45, 0x31, 0xd2, // xor r10d, r10d
    0x41, 0xbb, 0x1e, 0x00, 0x00, 0x00, // mov r11d, 30
    0x41, 0xbc, 0x01, 0x00, 0x00, 0x00, // mov r12d, 1
    0x41, 0xbd, 0x01, 0x00, 0x00, 0x00, // mov r13d, 1
    0xe6, 0xdc, // out 0xdc, al
    0xf4, // hlt
    b'h', b'e', b'l', b'l', b'o', b' ', b'f', b'r', b'o', b'm', b' ', b't', b'h', b'e', b' ', b'T',
    b'D', b'\n', 0,
];

/// `TDG.VP.VMCALL<ReportFatalError>` (R11 0x10003, R12 error code 0x42, R13 0: no data), then
/// `hlt`.
const FATAL: &[u8] = &[
    0x31, 0xc0, // xor eax, eax
    0xb9, 0x00, 0x3c, 0x00, 0x00, // mov ecx, 0x3c00 (R10..R13)
    0x45, 0x31, 0xd2, // xor r10d, r10d
    0x41, 0xbb, 0x03, 0x00, 0x01, 0x00, // mov r11d, 0x10003
    0x41, 0xbc, 0x42, 0x00, 0x00, 0x00, // mov r12d, 0x42
    0x45, 0x31, 0xed, // xor r13d, r13d
    0xe6, 0xdc, // out 0xdc, al
    0xf4, // hlt
];

/// MapGPA + TDG.MR.REPORT + GetQuote (GNU as source in the comment, bytes below):
/// maps VA 0xffff_8000_0020_0000 to the shared alias of GPA 0x200000 (PML4[256] → the PDPT
/// page at 0x103000 → the PD page at 0x104000, 2 MiB page at GPA 0x8000_0020_0000);
/// TDG.VP.VMCALL<MapGPA>(0x8000_0020_0000, 0x2000) to shared; TDG.MR.RTMR.EXTEND(48 bytes at
/// 0x102040, RTMR 2); TDG.MR.REPORT(report at
/// 0x101000, REPORTDATA at 0x102000); writes the GetQuote header {version 1, status 0,
/// in_len 1024, out_len 0} and `rep movsb`s the TDREPORT after it in the shared buffer;
/// TDG.VP.VMCALL<GetQuote>(0x8000_0020_0000, 0x2000); exit status 0 (1 if any step's R10/RAX
/// was nonzero) to port 0x501 through TDVMCALL IO.
const QUOTE: &[u8] = &[
    0xb8, 0x07, 0x30, 0x10, 0x00, 0x48, 0x89, 0x04, 0x25, 0x00, 0x18, 0x00, 0x00, 0x0f, 0x20, 0xd8,
    0x0f, 0x22, 0xd8, 0x31, 0xc0, 0xb9, 0x00, 0xfc, 0x00, 0x00, 0x45, 0x31, 0xd2, 0x41, 0xbb, 0x01,
    0x00, 0x01, 0x00, 0x49, 0xbc, 0x00, 0x00, 0x20, 0x00, 0x00, 0x80, 0x00, 0x00, 0x41, 0xbd, 0x00,
    0x20, 0x00, 0x00, 0xe6, 0xdc, 0x4d, 0x85, 0xd2, 0x0f, 0x85, 0x95, 0x00, 0x00, 0x00, 0xb8, 0x02,
    0x00, 0x00, 0x00, 0xb9, 0x40, 0x20, 0x10, 0x00, 0xba, 0x02, 0x00, 0x00, 0x00, 0xe6, 0xdc, 0x48,
    0x85, 0xc0, 0x75, 0x7f, 0xb8, 0x04, 0x00, 0x00, 0x00, 0xb9, 0x00, 0x10, 0x10, 0x00, 0xba, 0x00,
    0x20, 0x10, 0x00, 0x45, 0x31, 0xc0, 0xe6, 0xdc, 0x48, 0x85, 0xc0, 0x75, 0x66, 0x48, 0xbf, 0x00,
    0x00, 0x20, 0x00, 0x00, 0x80, 0xff, 0xff, 0x48, 0xc7, 0x07, 0x01, 0x00, 0x00, 0x00, 0x48, 0xc7,
    0x47, 0x08, 0x00, 0x00, 0x00, 0x00, 0xc7, 0x47, 0x10, 0x00, 0x04, 0x00, 0x00, 0xc7, 0x47, 0x14,
    0x00, 0x00, 0x00, 0x00, 0x48, 0x83, 0xc7, 0x18, 0xbe, 0x00, 0x10, 0x10, 0x00, 0xb9, 0x00, 0x04,
    0x00, 0x00, 0xf3, 0xa4, 0x31, 0xc0, 0xb9, 0x00, 0xfc, 0x00, 0x00, 0x45, 0x31, 0xd2, 0x41, 0xbb,
    0x02, 0x00, 0x01, 0x00, 0x49, 0xbc, 0x00, 0x00, 0x20, 0x00, 0x00, 0x80, 0x00, 0x00, 0x41, 0xbd,
    0x00, 0x20, 0x00, 0x00, 0xe6, 0xdc, 0x4d, 0x85, 0xd2, 0x75, 0x08, 0x41, 0xbf, 0x00, 0x00, 0x00,
    0x00, 0xeb, 0x06, 0x41, 0xbf, 0x01, 0x00, 0x00, 0x00, 0x31, 0xc0, 0xb9, 0x00, 0xfc, 0x00, 0x00,
    0x45, 0x31, 0xd2, 0x41, 0xbb, 0x1e, 0x00, 0x00, 0x00, 0x41, 0xbc, 0x01, 0x00, 0x00, 0x00, 0x41,
    0xbd, 0x01, 0x00, 0x00, 0x00, 0x41, 0xbe, 0x01, 0x05, 0x00, 0x00, 0xe6, 0xdc, 0xf4,
];

/// A 5-page RWX payload at 1 MiB: `code`, then (after `fill` adds its data) the PDPT at
/// 0x103000 and the PD at 0x104000 whose 2 MiB entry maps the shared alias of GPA 0x200000
/// (GPA 0x8000_0020_0000), for guests that reach shared memory at VA 0xffff_8000_0020_0000.
fn alias_payload(code: &[u8], fill: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut body = vec![0u8; 5 * 4096];
    body[..code.len()].copy_from_slice(code);
    fill(&mut body);
    body[0x3000..0x3008].copy_from_slice(&(0x10_4000u64 | 7).to_le_bytes());
    body[0x4008..0x4010].copy_from_slice(&(0x8000_0020_0000u64 | 0x87).to_le_bytes());
    support::elf(
        2,
        0x10_0000,
        &[(7, 0x1000, 0x10_0000, 0x5000, 0x5000)],
        &body,
    )
}

/// `jmp $`: runs until the host stops it.
const SPIN: &[u8] = &[0xeb, 0xfe];

fn kvm_backend() -> Option<EmulatedBackend> {
    match EmulatedBackend::new(EmulatedBackendConfig {
        platform: PlatformConfig {
            memory_size: 96 << 20,
            ..PlatformConfig::default()
        },
        engine: EngineChoice::Kvm,
        ..EmulatedBackendConfig::default()
    }) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("SKIPPED: the KVM execution engine is unavailable here: {e}");
            None
        }
    }
}

/// A td.toml + payload in a temp dir running `code` at 1 MiB.
fn setup(dir: &Path, code: &[u8]) -> std::path::PathBuf {
    let mut body = code.to_vec();
    body.resize(0x1000, 0);
    let elf = support::elf(
        2,
        0x10_0000,
        &[(5, 0x1000, 0x10_0000, 0x1000, 0x1000)],
        &body,
    );
    std::fs::write(dir.join("payload.elf"), elf).unwrap();
    let toml = dir.join("td.toml");
    std::fs::write(
        &toml,
        "memory = \"16M\"\npayload = \"payload.elf\"\n[td]\nsept_ve_disable = false\n",
    )
    .unwrap();
    toml
}

fn opts() -> LaunchOptions {
    LaunchOptions {
        quiet: true,
        stop: Arc::new(AtomicBool::new(false)),
        quote: None,
    }
}

#[test]
fn hello_payload_runs_to_a_clean_exit_with_the_predicted_mrtd() {
    let Some(backend) = kvm_backend() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = TdConfig::from_file(&setup(dir.path(), HELLO)).unwrap();
    let plan = tdx_vmm::image::build_plan(&config).unwrap();
    let predicted = tdx_vmm::measure::mrtd(&plan).unwrap().mrtd;
    let out = vmm::launch(&backend, &plan, &opts()).expect("launch");
    assert_eq!(out.status, ExitStatus::Exited(0));
    assert_eq!(String::from_utf8_lossy(&out.console), "hello from the TD\n");
    assert_eq!(out.mrtd, Some(predicted), "launch MRTD vs offline measure");
}

#[test]
fn mapgpa_report_and_getquote_round_trip_through_shared_memory() {
    let Some(backend) = kvm_backend() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Code, report page, REPORTDATA page, PDPT, PD.
    let elf = alias_payload(QUOTE, |body| {
        body[0x2000..0x2040].fill(0x5A);
        body[0x2040..0x2070].fill(0xA5);
    });
    std::fs::write(dir.path().join("payload.elf"), elf).unwrap();
    let toml = dir.path().join("td.toml");
    std::fs::write(&toml, "memory = \"16M\"\npayload = \"payload.elf\"\n").unwrap();
    let plan = tdx_vmm::image::build_plan(&TdConfig::from_file(&toml).unwrap()).unwrap();
    let provider = Arc::new(vmm::EmulatedQuoteProvider::new([9; 32]));
    let o = LaunchOptions {
        quote: Some(provider.clone()),
        ..opts()
    };
    let out = vmm::launch(&backend, &plan, &o).expect("launch");
    assert_eq!(
        out.status,
        ExitStatus::Exited(0),
        "console {:?}",
        out.console
    );
    let report = out.report.expect("the TD handed out a TDREPORT");
    assert_eq!(report.report_data, [0x5A; 64]);
    assert_eq!(Some(report.mrtd), out.mrtd, "REPORT MRTD vs finalize");
    let quote = out.quote.expect("a quote");
    let carried = provider.verify(&quote).expect("the quote verifies");
    let tdreport = tdx_abi::report::TdReport::from_bytes(&carried).unwrap();
    assert!(
        backend
            .module()
            .verify_report_mac(&tdreport.report_mac_struct),
        "the TDREPORT MAC verifies on the platform"
    );
    assert_eq!(tdreport.report_mac_struct.report_data, [0x5A; 64]);
    // RTMR[2] = SHA-384(48 zero bytes || the 48 extended bytes), computed here with sha2.
    use sha2::{Digest, Sha384};
    let mut h = Sha384::new();
    h.update([0u8; 48]);
    h.update([0xA5u8; 48]);
    assert_eq!(report.rtmr[2].0[..], h.finalize()[..], "RTMR[2]");
    assert_eq!(report.rtmr[0].0, [0; 48]);
}

#[test]
fn virtio_blk_read_through_shared_bounce_buffers() {
    let Some(backend) = kvm_backend() else { return };
    let Some(code) = support::assemble("virtio_blk", include_str!("guests/virtio_blk.s")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Code, then the PDPT and PD pages that map the shared alias (as in the GetQuote test).
    let elf = alias_payload(&code, |_| {});
    std::fs::write(dir.path().join("payload.elf"), elf).unwrap();
    let mut disk = b"TDX virtio-blk!\n".to_vec();
    disk.resize(64 * 1024, 0xEE);
    std::fs::write(dir.path().join("disk.img"), &disk).unwrap();
    let toml = dir.path().join("td.toml");
    std::fs::write(
        &toml,
        "memory = \"16M\"\npayload = \"payload.elf\"\n[[disk]]\npath = \"disk.img\"\n",
    )
    .unwrap();
    let plan = tdx_vmm::image::build_plan(&TdConfig::from_file(&toml).unwrap()).unwrap();
    let out = vmm::launch(&backend, &plan, &opts()).expect("launch");
    assert_eq!(
        out.status,
        ExitStatus::Exited(0),
        "console {:?}",
        String::from_utf8_lossy(&out.console)
    );
    assert_eq!(String::from_utf8_lossy(&out.console), "TDX virtio-blk!\n");
}

/// Kills qemu-storage-daemon and removes its directory when dropped.
struct Daemon(std::process::Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn vhost_user_blk_disk_served_by_qemu_storage_daemon() {
    const QSD: &str = "/usr/bin/qemu-storage-daemon";
    if !Path::new(QSD).exists() {
        eprintln!("SKIPPED: {QSD} not found (Debian's qemu-utils); vhost-user-blk launch not run");
        return;
    }
    let Some(backend) = kvm_backend() else { return };
    let Some(code) = support::assemble("virtio_blk_vu", include_str!("guests/virtio_blk.s")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut disk = b"served by qsd!!\n".to_vec();
    disk.resize(64 * 1024, 0x11);
    let img = dir.path().join("disk.img");
    std::fs::write(&img, &disk).unwrap();
    let sock = dir.path().join("vhost.sock");
    let child = Command::new(QSD)
        .arg("--blockdev")
        .arg(format!(
            "driver=file,node-name=f,filename={}",
            img.display()
        ))
        .arg("--export")
        .arg(format!(
            "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path={}",
            sock.display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn qemu-storage-daemon");
    let _daemon = Daemon(child);
    for _ in 0..500 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let elf = alias_payload(&code, |_| {});
    std::fs::write(dir.path().join("payload.elf"), elf).unwrap();
    let toml = dir.path().join("td.toml");
    std::fs::write(
        &toml,
        format!(
            "memory = \"16M\"\npayload = \"payload.elf\"\n[[vhost_user_blk]]\nsocket = {:?}\n",
            sock.display().to_string()
        ),
    )
    .unwrap();
    let plan = tdx_vmm::image::build_plan(&TdConfig::from_file(&toml).unwrap()).unwrap();
    let out = vmm::launch(&backend, &plan, &opts()).expect("launch");
    assert_eq!(
        out.status,
        ExitStatus::Exited(0),
        "console {:?}",
        String::from_utf8_lossy(&out.console)
    );
    assert_eq!(String::from_utf8_lossy(&out.console), "served by qsd!!\n");
}

#[test]
fn guest_fatal_error_ends_the_td_with_its_code() {
    let Some(backend) = kvm_backend() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = TdConfig::from_file(&setup(dir.path(), FATAL)).unwrap();
    let plan = tdx_vmm::image::build_plan(&config).unwrap();
    let out = vmm::launch(&backend, &plan, &opts()).expect("launch");
    match &out.status {
        ExitStatus::Fatal { code, .. } => assert_eq!(*code, 0x42),
        other => panic!("expected a fatal error, got {other}"),
    }
    assert_eq!(out.status.exit_code(), 3);
}

#[test]
fn stop_flag_kicks_a_spinning_guest_out() {
    let Some(backend) = kvm_backend() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = TdConfig::from_file(&setup(dir.path(), SPIN)).unwrap();
    let plan = tdx_vmm::image::build_plan(&config).unwrap();
    let o = opts();
    let stop = Arc::clone(&o.stop);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
    });
    let out = vmm::launch(&backend, &plan, &o).expect("launch");
    t.join().unwrap();
    assert_eq!(out.status, ExitStatus::Stopped);
}

#[test]
fn cli_launch_prints_the_console_and_the_report() {
    if kvm_backend().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = setup(dir.path(), HELLO);
    let out = Command::new(env!("CARGO_BIN_EXE_tdx-vmm"))
        .args(["launch", "--json"])
        .arg(&toml)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout {stdout} stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("hello from the TD"), "{stdout}");
    let json_start = stdout.find('{').expect("JSON report");
    let v: serde_json::Value = serde_json::from_str(&stdout[json_start..]).unwrap();
    assert_eq!(v["exit_code"], 0);
    let measured = Command::new(env!("CARGO_BIN_EXE_tdx-vmm"))
        .args(["measure", "--json"])
        .arg(&toml)
        .output()
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&measured.stdout).unwrap();
    assert!(v["mrtd_vmm"].is_string(), "{v}");
    assert_eq!(v["mrtd_vmm"], m["mrtd"], "launch MRTD vs measure: {m}");
}

#[test]
fn bench_json_reports_every_ratio() {
    if kvm_backend().is_none() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_tdx-vmm"))
        .args([
            "bench",
            "--json",
            "--exits",
            "20",
            "--pages",
            "8",
            "--repeats",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 7);
    for r in rows {
        assert!(r["td_us"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["floor_us"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["ratio"].as_f64().unwrap().is_finite(), "{r}");
    }
}

#[test]
fn kvm_backend_without_tdx_refuses_with_a_reason() {
    const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
    if !Path::new(OVMF).exists() {
        eprintln!("SKIPPED: {OVMF} not found (Debian's ovmf); the kvm-backend refusal not run");
        return;
    }
    if tdx_host::backend::kvm::KvmTdxBackend::open().is_ok() {
        eprintln!("SKIPPED: this host runs TDs; the refusal path cannot be shown here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("td.toml");
    std::fs::write(
        &toml,
        format!("backend = \"kvm\"\nmemory = \"128M\"\nfirmware = \"{OVMF}\"\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tdx-vmm"))
        .arg("launch")
        .arg(&toml)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("tdx-vmm: backend kvm: TDX unavailable"),
        "{stderr}"
    );
    assert!(
        stderr.contains("KVM_X86_TDX_VM (5)") || stderr.contains("cannot open"),
        "{stderr}"
    );
}
