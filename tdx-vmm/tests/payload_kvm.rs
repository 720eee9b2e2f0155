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

/// The message the payload measures (`MESSAGE` in examples/td-payload/src/body.rs).
const TD_PAYLOAD_MESSAGE: &[u8] = b"tdx-host-crates example TD payload";

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
fn run_payload(disk: Option<&[u8]>, vcpus: u32, sept_ve_disable: bool) -> Option<(String, String)> {
    let backend = kvm_backend()?;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("payload.elf"), tdx_payloads::TD_PAYLOAD_ELF).unwrap();
    let toml = dir.path().join("td.toml");
    let mut text = format!(
        "memory = \"16M\"\nvcpus = {vcpus}\npayload = \"payload.elf\"\n[td]\nsept_ve_disable = {sept_ve_disable}\n"
    );
    if let Some(d) = disk {
        std::fs::write(dir.path().join("disk.img"), d).unwrap();
        text.push_str("[[disk]]\npath = \"disk.img\"\n");
    }
    std::fs::write(&toml, text).unwrap();
    let plan = tdx_vmm::image::build_plan(&TdConfig::from_file(&toml).unwrap()).unwrap();
    let predicted_mrtd = tdx_vmm::measure::mrtd(&plan).unwrap().mrtd;
    let provider = Arc::new(vmm::EmulatedQuoteProvider::new([7; 32]));
    let o = LaunchOptions {
        quiet: true,
        stop: Arc::new(AtomicBool::new(false)),
        quote: Some(provider.clone()),
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
    if sept_ve_disable {
        assert_eq!(field("ve_test"), "skipped", "{summary}");
        assert_eq!(field("ve_count"), "0", "{summary}");
    } else {
        assert_eq!(field("ve_test"), "ran", "{summary}");
        assert!(field("ve_count").parse::<u64>().unwrap() >= 1, "{summary}");
    }
    assert_eq!(field("gp_count"), "1", "{summary}");
    assert_eq!(
        out.mrtd,
        Some(predicted_mrtd),
        "launch MRTD vs offline measure"
    );
    let report = out.report.expect("the TD handed out a TDREPORT");
    assert_eq!(Some(report.mrtd), out.mrtd, "REPORT MRTD vs finalize");
    // REPORTDATA = SHA-384(message) || 16 zero bytes, RTMR[2] = SHA-384(0^48 || that digest),
    // both computed here with sha2 independently of the guest.
    use sha2::{Digest, Sha384};
    let digest = Sha384::digest(TD_PAYLOAD_MESSAGE);
    assert_eq!(report.report_data[..48], digest[..], "REPORTDATA");
    assert_eq!(report.report_data[48..], [0; 16], "REPORTDATA padding");
    let mut h = Sha384::new();
    h.update([0u8; 48]);
    h.update(digest);
    assert_eq!(report.rtmr[2].0[..], h.finalize()[..], "RTMR[2]");
    let quote = out.quote.expect("a quote");
    let carried = provider.verify(&quote).expect("the quote verifies");
    let tdreport = tdx_abi::report::TdReport::from_bytes(&carried).unwrap();
    assert!(
        backend
            .module()
            .verify_report_mac(&tdreport.report_mac_struct),
        "the TDREPORT MAC verifies on the platform"
    );
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
    // Every 4 KiB page of RAM the loader did not add up front is listed unaccepted in the HOB
    // and accepted by the payload.
    let initial_pages: u64 = plan
        .initial
        .iter()
        .filter(|r| r.gpa < plan.memory_size)
        .map(|r| (r.data.len() as u64).div_ceil(4096))
        .sum();
    assert_eq!(
        field("accepted_pages").parse::<u64>().unwrap(),
        plan.memory_size / 4096 - initial_pages,
        "{summary}"
    );
    let summary = summary.to_string();
    Some((console, summary))
}

#[test]
fn example_payload_runs_every_check_and_exits_cleanly() {
    let Some((_, summary)) = run_payload(None, 1, false) else {
        return;
    };
    assert!(summary.contains(" blk=none "), "{summary}");
}

#[test]
fn example_payload_drives_virtio_blk_through_request_mmio() {
    let mut disk = b"payload disk #0!".to_vec();
    disk.resize(64 * 1024, 0xEE);
    let Some((console, summary)) = run_payload(Some(&disk), 1, true) else {
        return;
    };
    assert!(summary.contains(" blk=ok "), "{summary}");
    let hex: String = disk[..16].iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        console.contains(&format!("sector0[0..16]={hex} ")),
        "sector 0 bytes not printed:\n{console}"
    );
}

#[test]
fn example_payload_runs_on_two_vcpus() {
    let Some((console, summary)) = run_payload(None, 2, false) else {
        return;
    };
    assert!(summary.contains(" aps=1 "), "{summary}");
    assert!(console.contains("td-payload: ap 1 up"), "{console}");
}
