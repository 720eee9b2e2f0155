//! The host driver building, running and tearing down a TD on the emulated module through
//! SEAMCALLs only; the emulator's introspection checks the result.

use std::sync::Arc;

use tdx_abi::gpa::Gpa;
use tdx_abi::measure::MrtdBuilder;
use tdx_host::driver::module::RetryPolicy;
use tdx_host::driver::{bring_up, EmulatedTdxModule, TdBuilder};
use tdx_host::emulated::{EmulatedModule, Fault, KotState, PamtPageType, PlatformConfig};

fn platform(packages: u32) -> (Arc<EmulatedModule>, Arc<EmulatedTdxModule>) {
    bring_up(
        PlatformConfig {
            num_packages: packages,
            ..PlatformConfig::default()
        },
        RetryPolicy::default(),
    )
    .unwrap()
}

#[test]
fn driver_lifecycle_on_the_emulated_module() {
    let (m, module) = platform(2);
    assert_eq!(m.hkid_state(32), Some(KotState::RESERVED));
    let free0 = module.frames().free_frames();
    // Host retry paths: forced resumable CACHE.WB and a forced BUSY on SEPT.ADD.
    m.faults()
        .force_seamcall(40, Fault::InterruptedResumable, 2);
    m.faults()
        .force_seamcall(3, Fault::Busy(tdx_abi::status::OperandId::SEPT_TREE), 1);
    let td = TdBuilder::new(&module).build().unwrap();
    let hkid = td.hkid();
    assert_eq!(m.hkid_state(hkid), Some(KotState::ASSIGNED));
    td.create_vcpu(1, 0x1234).unwrap();
    let a = [0xA5u8; 4096];
    let b: [u8; 4096] = core::array::from_fn(|i| i as u8);
    td.add_page(Gpa(0x10_0000), &a, true).unwrap();
    td.add_page(Gpa(0x10_1000), &b, false).unwrap();
    let mrtd = td.finalize().unwrap();
    let mut want = MrtdBuilder::new();
    want.add_page(Gpa(0x10_0000), &a, true).unwrap();
    want.add_page(Gpa(0x10_1000), &b, false).unwrap();
    assert_eq!(
        mrtd,
        want.finalize(),
        "MRTD equals an independent computation"
    );
    // Runtime memory.
    let aug = td.aug_page(0, Gpa(0x20_0000), 0).unwrap();
    assert_eq!(m.page_type(aug), Some(PamtPageType::PT_REG));
    td.remove_page(0, Gpa(0x20_0000)).unwrap();
    assert_eq!(m.page_type(aug), Some(PamtPageType::PT_NDA));
    m.check_invariants().unwrap();
    let owned = td.owned_pages();
    assert!(owned
        .iter()
        .all(|p| m.page_type(*p) != Some(PamtPageType::PT_NDA)));
    td.teardown().unwrap();
    for p in owned {
        assert_eq!(m.page_type(p), Some(PamtPageType::PT_NDA), "{p:#x}");
    }
    assert_eq!(m.hkid_state(hkid), Some(KotState::FREE));
    m.check_invariants().unwrap();
    drop(td);
    assert_eq!(module.frames().free_frames(), free0);
}

#[test]
fn private_page_lookups_cover_2m_pages() {
    let (_m, module) = platform(1);
    let td = TdBuilder::new(&module).build().unwrap();
    td.create_vcpu(0, 0).unwrap();
    td.add_page(Gpa(0x10_0000), &[0; 4096], false).unwrap();
    td.finalize().unwrap();
    td.aug_page(0, Gpa(0x40_0000), 1).unwrap();
    td.aug_page(0, Gpa(0x60_0000), 0).unwrap();
    let big = td
        .private_page_covering(0x5F_F123)
        .expect("inside the 2 MiB page");
    assert_eq!((big.0, big.1.level), (0x40_0000, 1));
    assert_eq!(
        td.private_page_covering(0x10_0FFF).map(|p| p.0),
        Some(0x10_0000)
    );
    assert_eq!(td.private_page_covering(0x10_1000), None);
    let gpas = |s, e| {
        td.private_pages_in(s, e)
            .into_iter()
            .map(|(g, _)| g)
            .collect::<Vec<_>>()
    };
    assert_eq!(gpas(0x40_1000, 0x40_2000), [0x40_0000]);
    assert_eq!(gpas(0x5F_F000, 0x60_1000), [0x40_0000, 0x60_0000]);
    assert_eq!(gpas(0x10_1000, 0x40_0000), Vec::<u64>::new());
    assert_eq!(gpas(0, u64::MAX), [0x10_0000, 0x40_0000, 0x60_0000]);
    td.teardown().unwrap();
}
