//! The example TD payload (`tdx_payloads::TD_PAYLOAD_ELF`, built from source) launched on the
//! emulated backend with the KVM execution engine: its ring-0 shim and ring-3 body run under
//! KVM and must end with the summary line and exit status 0. Skipped, loudly, where the KVM
//! engine is unusable.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tdx_host::backend::emulated::{EmulatedBackend, EmulatedBackendConfig, EngineChoice};
use tdx_host::emulated::PlatformConfig;
use tdx_vmm::config::TdConfig;
use tdx_vmm::vmm::{self, ExitStatus, LaunchOptions};

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

/// Launches the payload (16 MiB, optionally with a virtio-blk disk holding `disk`) and
/// checks the common results; returns the console and the summary line.
fn run_payload(disk: Option<&[u8]>) -> Option<(String, String)> {
    let backend = kvm_backend()?;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("payload.elf"), tdx_payloads::TD_PAYLOAD_ELF).unwrap();
    let toml = dir.path().join("td.toml");
    let mut text =
        "memory = \"16M\"\npayload = \"payload.elf\"\n[td]\nsept_ve_disable = false\n".to_string();
    if let Some(d) = disk {
        std::fs::write(dir.path().join("disk.img"), d).unwrap();
        text.push_str("[[disk]]\npath = \"disk.img\"\n");
    }
    std::fs::write(&toml, text).unwrap();
    let plan = tdx_vmm::image::build_plan(&TdConfig::from_file(&toml).unwrap()).unwrap();
    let o = LaunchOptions {
        quiet: true,
        stop: Arc::new(AtomicBool::new(false)),
        quote: Some(Arc::new(vmm::EmulatedQuoteProvider::new([7; 32]))),
    };
    let out = vmm::launch(&backend, &plan, &o).expect("launch");
    let console = String::from_utf8_lossy(&out.console).into_owned();
    eprintln!("payload console:\n{console}");
    assert_eq!(out.status, ExitStatus::Exited(0), "console:\n{console}");
    let summary = console
        .lines()
        .find(|l| l.starts_with(tdx_payloads::TD_PAYLOAD_SUMMARY_PREFIX))
        .unwrap_or_else(|| panic!("no summary line in:\n{console}"));
    let field = |k: &str| {
        summary
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .unwrap_or_else(|| panic!("{k} missing in {summary}"))
            .to_string()
    };
    assert!(field("ve_count").parse::<u64>().unwrap() >= 1, "{summary}");
    assert_eq!(field("gp_count"), "1", "{summary}");
    let report = out.report.expect("the TD handed out a TDREPORT");
    let hex: String = report.rtmr[2]
        .0
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        field("rtmr2"),
        hex,
        "RTMR[2] printed vs the report the VMM received"
    );
    assert!(
        field("accepted_pages").parse::<u64>().unwrap() > 0,
        "{summary}"
    );
    let summary = summary.to_string();
    Some((console, summary))
}

#[test]
fn example_payload_runs_every_check_and_exits_cleanly() {
    let Some((_, summary)) = run_payload(None) else {
        return;
    };
    assert!(summary.contains(" blk=none "), "{summary}");
}

#[test]
fn example_payload_drives_virtio_blk_through_request_mmio() {
    let mut disk = b"payload disk #0!".to_vec();
    disk.resize(64 * 1024, 0xEE);
    let Some((console, summary)) = run_payload(Some(&disk)) else {
        return;
    };
    assert!(summary.contains(" blk=ok "), "{summary}");
    let hex: String = disk[..16].iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        console.contains(&format!("sector0[0..16]={hex} ")),
        "sector 0 bytes not printed:\n{console}"
    );
}
