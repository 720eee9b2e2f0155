//! The example TD payload (`examples/td-payload`, built from source by `tdx-payloads`) run to
//! completion under KVM on the emulated backend, through `tdx_vmm::vmm::launch`, with two
//! vCPUs, a writable virtio-blk disk and the emulated quote provider. Checks what the payload
//! prints and, independently of it, the measurements, the TDREPORT's MAC on the platform, the
//! quote and the disk contents it wrote. Skipped, loudly, where `/dev/kvm` is unusable.
use std::sync::Arc;

use sha2::{Digest, Sha384};
use tdx_host::backend::emulated::{EmulatedBackend, EmulatedBackendConfig, EngineChoice};
use tdx_host::emulated::PlatformConfig;
use tdx_vmm::config::TdConfig;
use tdx_vmm::vmm::{self, EmulatedQuoteProvider, ExitStatus, LaunchOptions};

#[test]
fn example_payload_runs_to_completion() {
    let backend = match EmulatedBackend::new(EmulatedBackendConfig {
        platform: PlatformConfig {
            memory_size: 160 << 20,
            ..PlatformConfig::default()
        },
        engine: EngineChoice::Kvm,
        ..EmulatedBackendConfig::default()
    }) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("SKIPPED: the KVM execution engine is unavailable here: {e}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let mut disk = b"sector zero of the test disk\n".to_vec();
    disk.resize(64 * 1024, 0);
    std::fs::write(dir.path().join("disk.img"), &disk).unwrap();
    let toml = dir.path().join("td.toml");
    std::fs::write(
        &toml,
        "memory = \"64M\"\nvcpus = 2\npayload = \"builtin:td-payload\"\n\
         [td]\nsept_ve_disable = false\n[[disk]]\npath = \"disk.img\"\n",
    )
    .unwrap();
    let config = TdConfig::from_file(&toml).unwrap();
    let plan = tdx_vmm::image::build_plan(&config).unwrap();
    let predicted = tdx_vmm::measure::mrtd(&plan).unwrap().mrtd;
    let quotes = Arc::new(EmulatedQuoteProvider::new([3; 32]));
    let opts = LaunchOptions {
        quiet: true,
        quote: Some(quotes.clone()),
        ..LaunchOptions::default()
    };
    let out = vmm::launch(&backend, &plan, &opts).expect("launch");
    let console = String::from_utf8_lossy(&out.console).into_owned();
    assert_eq!(out.status, ExitStatus::Exited(0), "console:\n{console}");

    // What the payload saw: TDG.VP.INFO, 256 pages accepted, a #VE handled, the ring-3
    // TDCALL refused with #GP, the round trip, virtio-blk, both vCPUs.
    assert!(console.contains("TDG.VP.INFO gpaw=48 vcpus=2"), "{console}");
    assert!(console.contains("td-payload: vcpu 1 up"), "{console}");
    assert!(
        console.contains("virtio-blk sector 0: \"sector zero of the test disk\""),
        "{console}"
    );
    assert!(
        console.contains("result accepted=256 ve=1 gp=1 roundtrip=ok blk=ok vcpus=2"),
        "{console}"
    );

    // MRTD: finalize = offline prediction = the TDREPORT's.
    assert_eq!(out.mrtd, Some(predicted));
    let report = out.report.expect("the payload handed out its TDREPORT");
    assert_eq!(report.mrtd, predicted);

    // RTMR[2] = SHA-384(0^48 || SHA-384(message)); REPORTDATA = SHA-384(message) || 0^16.
    let digest = Sha384::digest(tdx_payloads::TD_PAYLOAD_MESSAGE);
    let mut h = Sha384::new();
    h.update([0u8; 48]);
    h.update(digest);
    assert_eq!(report.rtmr[2].0[..], h.finalize()[..], "RTMR[2]");
    assert_eq!(report.report_data[..48], digest[..]);
    assert_eq!(report.report_data[48..], [0; 16]);
    assert!(
        console.contains(&format!("rtmr2={}", report.rtmr[2])),
        "{console}"
    );

    // The quote carries the TDREPORT, whose MAC verifies on the platform.
    let quote = out.quote.expect("a quote");
    let carried = quotes.verify(&quote).expect("the quote verifies");
    let tdreport = tdx_abi::report::TdReport::from_bytes(&carried).unwrap();
    assert!(backend
        .module()
        .verify_report_mac(&tdreport.report_mac_struct));

    // The disk: sector 1 now holds the payload's pattern (written through bounce buffers).
    let disk = std::fs::read(dir.path().join("disk.img")).unwrap();
    let want: Vec<u8> = (0..512).map(|i| (i as u8) ^ 0xA5).collect();
    assert_eq!(&disk[512..1024], &want[..]);
}
