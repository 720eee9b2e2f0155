//! The typed SEAMCALL/TDCALL/TDVMCALL wrappers place their operands in the registers the
//! fact sheet gives for each leaf, and decode outputs and errors from the right registers.
// Scripted module answers read best as one register assignment per line.
#![allow(clippy::field_reassign_with_default)]

use std::cell::RefCell;

use tdx_abi::call::{Regs, Seamcall, Tdcall};
use tdx_abi::gpa::{EptLevel, Gpa, GpaAndLevel, Gpaw};
use tdx_abi::metadata::MetadataFieldId;
use tdx_abi::phys::{Hkid, Hpa};
use tdx_abi::status::TdxStatus;
use tdx_abi::tdg;
use tdx_abi::tdh::{self, CacheWbOutcome, VpEnterExit, VpEnterInput};
use tdx_abi::tdvmcall::{self, Direction, TdVmCallDecodeError, TdVmCallRequest, TdVmCallResponse};

/// A mock module: records the registers of each call and answers with a scripted status and
/// output registers.
struct Mock {
    calls: RefCell<Vec<Regs>>,
    answers: RefCell<Vec<(u64, Regs)>>,
}

impl Mock {
    fn new(answers: Vec<(u64, Regs)>) -> Self {
        let mut answers = answers;
        answers.reverse();
        Mock {
            calls: RefCell::new(Vec::new()),
            answers: RefCell::new(answers),
        }
    }
    fn ok() -> Self {
        Mock::new(vec![(0, Regs::default())])
    }
    fn answer(&self, regs: &mut Regs) -> TdxStatus {
        self.calls.borrow_mut().push(*regs);
        let (status, out) = self
            .answers
            .borrow_mut()
            .pop()
            .unwrap_or((0, Regs::default()));
        *regs = out;
        regs.rax = status;
        TdxStatus::from_raw(status)
    }
    fn last(&self) -> Regs {
        *self.calls.borrow().last().expect("a call was made")
    }
}

impl Seamcall for Mock {
    fn seamcall(&self, regs: &mut Regs) -> TdxStatus {
        self.answer(regs)
    }
}

impl Tdcall for Mock {
    fn tdcall(&self, regs: &mut Regs) -> TdxStatus {
        self.answer(regs)
    }
}

#[test]
fn page_add_places_operands_per_fact_sheet() {
    let m = Mock::ok();
    tdh::tdh_mem_page_add(&m, Gpa(0xffff_f000), Hpa(0x1000), Hpa(0x2000), Hpa(0x3000)).unwrap();
    let r = m.last();
    assert_eq!(r.rax, 2, "TDH.MEM.PAGE.ADD is leaf 2, version 0");
    assert_eq!(
        (r.rcx, r.rdx, r.r8, r.r9),
        (0xffff_f000, 0x1000, 0x2000, 0x3000)
    );
}

#[test]
fn versioned_leaves_carry_version_in_rax() {
    let m = Mock::ok();
    tdh::tdh_mng_rd(
        &m,
        Hpa(0x5000),
        MetadataFieldId::from_raw(0x1110_0003_0000_0000),
    )
    .unwrap();
    assert_eq!(m.last().rax, 11 | 1 << 16, "TDH.MNG.RD version 1");
    let m = Mock::ok();
    tdh::tdh_vp_rd(&m, Hpa(0x6000), MetadataFieldId::from_raw(0)).unwrap();
    assert_eq!(m.last().rax, 26 | 1 << 16, "TDH.VP.RD version 1");
    let m = Mock::ok();
    tdg::tdg_vm_rd(&m, MetadataFieldId::from_raw(0)).unwrap();
    assert_eq!(m.last().rax, 7 | 1 << 16, "TDG.VM.RD version 1");
}

#[test]
fn bring_up_leaves() {
    let m = Mock::ok();
    tdh::tdh_sys_config(&m, Hpa(0x10_0000), 3, Hkid(0x20)).unwrap();
    let r = m.last();
    assert_eq!((r.rax, r.rcx, r.rdx, r.r8), (45, 0x10_0000, 3, 0x20));

    let mut out = Regs::default();
    out.r8 = 64;
    out.rdx = 0x9100_0001_0000_0009;
    let m = Mock::new(vec![(0, out)]);
    let rd = tdh::tdh_sys_rd(&m, MetadataFieldId::from_raw(0x9100_0001_0000_0008)).unwrap();
    assert_eq!(m.last().rax, 34);
    assert_eq!(m.last().rdx, 0x9100_0001_0000_0008);
    assert_eq!(rd.value, 64);
    assert_eq!(rd.next.raw(), 0x9100_0001_0000_0009);

    // TDX_TDMR_ALREADY_INITIALIZED is success class and reported to the caller.
    let mut out = Regs::default();
    out.rdx = 0x8000_0000;
    let m = Mock::new(vec![(0x0000_0A03_0000_0000, out)]);
    let p = tdh::tdh_sys_tdmr_init(&m, Hpa(0x4000_0000)).unwrap();
    assert_eq!(m.last().rcx, 0x4000_0000);
    assert_eq!(p.next, 0x8000_0000);
    assert_eq!(p.status.raw(), 0x0000_0A03_0000_0000);

    let m = Mock::new(vec![(0x0000_0815_0000_0000, Regs::default())]);
    let st = tdh::tdh_sys_key_config(&m).unwrap();
    assert_eq!(
        st.raw(),
        0x0000_0815_0000_0000,
        "TDX_KEY_CONFIGURED is a success"
    );
}

#[test]
fn sept_error_carries_entry_and_level_state() {
    let mut out = Regs::default();
    out.rcx = 0x8000_0000_0000_0000; // FREE architectural entry: only bit 63
    out.rdx = 0x0000; // level 0, state FREE
                      // TDX_EPT_ENTRY_STATE_INCORRECT on RCX
    let m = Mock::new(vec![(0xC000_0B0D_0000_0001, out)]);
    let op = GpaAndLevel::new(Gpa(0x20_0000), EptLevel::Pt).unwrap();
    let err = tdh::tdh_mem_range_block(&m, op, Hpa(0x1000)).unwrap_err();
    assert_eq!(m.last().rax, 7);
    assert_eq!(m.last().rcx, 0x20_0000);
    let (entry, info) = err.sept_details().expect("SEPT class error has details");
    assert_eq!(entry.raw(), 1 << 63);
    assert_eq!(info.raw(), 0);
    let text = err.to_string();
    assert!(
        text.starts_with("TDH.MEM.RANGE.BLOCK failed: TDX_EPT_ENTRY_STATE_INCORRECT"),
        "{text}"
    );
    assert!(text.contains("SEPT entry 0x8000000000000000"), "{text}");
}

#[test]
fn mng_init_error_exposes_extended_info() {
    let mut out = Regs::default();
    out.rcx = 0x0000_0007_0000_0000; // leaf 7 subleaf 0 (the offending CPUID)
    let m = Mock::new(vec![(0xC000_0100_0000_0045, out)]); // OPERAND_INVALID, CPUID_CONFIG
    let err = tdh::tdh_mng_init(&m, Hpa(0x1000), Hpa(0x2000)).unwrap_err();
    assert_eq!(err.extended_error_info(), 0x0000_0007_0000_0000);
    assert!(!err.is_recoverable());
    assert!(err.to_string().contains("TDX_OPERAND_INVALID"), "{err}");
}

#[test]
fn busy_is_recoverable() {
    let m = Mock::new(vec![(0x8000_0200_0000_0092, Regs::default())]);
    let op = GpaAndLevel::new(Gpa(0x1000), EptLevel::Pt).unwrap();
    let err = tdh::tdh_mem_page_aug(&m, op, Hpa(0x1000), Hpa(0x9000)).unwrap_err();
    assert!(err.is_recoverable());
    assert_eq!(m.last().r8, 0x9000);
}

#[test]
fn cache_wb_interrupted_is_not_an_error() {
    let m = Mock::new(vec![(0x8000_0003_0000_0000, Regs::default())]);
    assert_eq!(
        tdh::tdh_phymem_cache_wb(&m, false).unwrap(),
        CacheWbOutcome::Interrupted
    );
    assert_eq!(m.last().rcx, 0);
    let m = Mock::ok();
    assert!(matches!(
        tdh::tdh_phymem_cache_wb(&m, true).unwrap(),
        CacheWbOutcome::Done(_)
    ));
    assert_eq!(m.last().rcx, 1);
}

#[test]
fn reclaim_decodes_page_metadata() {
    let mut out = Regs::default();
    out.rcx = 3; // PT_REG
    out.rdx = 0x7000; // owner TDR
    out.r8 = 0; // 4K
    let m = Mock::new(vec![(0, out)]);
    let md = tdh::tdh_phymem_page_reclaim(&m, Hpa(0xa000)).unwrap();
    assert_eq!(m.last().rax, 28);
    assert_eq!(md.page_type.raw(), 3);
    assert_eq!(md.owner, Hpa(0x7000));
    assert_eq!(md.page_size, Some(tdx_abi::PageSize::Size4K));
}

#[test]
fn vp_enter_flags_and_exits() {
    // A TDVMCALL exit: status = success with exit reason 77 (TDCALL).
    let mut out = Regs::default();
    out.rcx = 0xfc00;
    out.r11 = 0x10001;
    let m = Mock::new(vec![(77, out)]);
    let input = VpEnterInput {
        tdvpr: Hpa(0x1234_5000),
        host_recoverability_hint: true,
        ..Default::default()
    };
    let exit = tdh::tdh_vp_enter(&m, &input).unwrap();
    assert_eq!(m.last().rax, 0);
    assert_eq!(m.last().rcx, 0x1234_5000 | 1 << 52);
    match exit {
        VpEnterExit::Tdvmcall { regs } => assert_eq!(regs.r11, 0x10001),
        other => panic!("expected a TDVMCALL exit, got {other:?}"),
    }

    // An EPT-violation async exit: reason 48, GPA in R8.
    let mut out = Regs::default();
    out.rcx = 0x181;
    out.rdx = 1; // ACCEPT type
    out.r8 = 0x5000;
    let m = Mock::new(vec![(48, out)]);
    match tdh::tdh_vp_enter(&m, &input).unwrap() {
        VpEnterExit::Async {
            exit_reason,
            exit_qualification,
            gpa,
            ..
        } => {
            assert_eq!(exit_reason.raw(), 48);
            assert_eq!(exit_qualification, 0x181);
            assert_eq!(gpa, Gpa(0x5000));
        }
        other => panic!("expected an async exit, got {other:?}"),
    }
}

#[test]
fn tdg_vp_info_decodes_registers() {
    let mut out = Regs::default();
    out.rcx = 48;
    out.rdx = 1 << 28;
    out.r8 = 2 | 8 << 32;
    out.r9 = 1;
    out.r10 = 1;
    let m = Mock::new(vec![(0, out)]);
    let info = tdg::tdg_vp_info(&m).unwrap();
    assert_eq!(m.last().rax, 1);
    assert_eq!(info.gpaw, Some(Gpaw::Gpaw48));
    assert_eq!(info.attributes.bits(), 1 << 28);
    assert_eq!((info.num_vcpus, info.max_vcpus, info.vcpu_index), (2, 8, 1));
    assert!(info.sys_rd_available);
}

#[test]
fn accept_reports_already_accepted_level() {
    let m = Mock::new(vec![(0x0000_0B0A_0000_0001, Regs::default())]);
    let out = tdg::tdg_mem_page_accept(&m, Gpa(0x20_0000), EptLevel::Pd).unwrap();
    assert_eq!(m.last().rax, 6);
    assert_eq!(m.last().rcx, 0x20_0001);
    assert_eq!(out, tdg::AcceptOutcome::AlreadyAccepted(1));
    assert!(tdg::tdg_mem_page_accept(&m, Gpa(0x1000), EptLevel::Pd).is_err());
}

#[test]
fn rtmr_extend_and_report_registers() {
    let m = Mock::ok();
    tdg::tdg_mr_rtmr_extend(&m, Gpa(0x3000), 2).unwrap();
    assert_eq!((m.last().rax, m.last().rcx, m.last().rdx), (2, 0x3000, 2));
    let m = Mock::ok();
    tdg::tdg_mr_report(&m, Gpa(0x4000), Gpa(0x5000), 0).unwrap();
    assert_eq!(
        (m.last().rax, m.last().rcx, m.last().rdx, m.last().r8),
        (4, 0x4000, 0x5000, 0)
    );
}

// ------------------------------------------------------------------------------------------
// TDG.VP.VMCALL
// ------------------------------------------------------------------------------------------

fn request_round_trip(req: TdVmCallRequest) {
    let regs = req.encode();
    assert_eq!(regs.rax, 0, "TDG.VP.VMCALL is leaf 0");
    assert_eq!(regs.rcx & tdvmcall::select::MUST_BE_ZERO, 0);
    let back = TdVmCallRequest::decode(&regs, Gpaw::Gpaw48).unwrap();
    assert_eq!(back, req);
}

#[test]
fn tdvmcall_requests_round_trip() {
    let shared = Gpa(0x1000).to_shared(Gpaw::Gpaw48);
    for req in [
        TdVmCallRequest::Cpuid {
            leaf: 0x21,
            subleaf: 0,
        },
        TdVmCallRequest::Hlt {
            interrupts_blocked: true,
        },
        TdVmCallRequest::Io {
            size: 1,
            direction: Direction::Write,
            port: 0x3f8,
            data: 0x41,
        },
        TdVmCallRequest::Io {
            size: 4,
            direction: Direction::Read,
            port: 0xcf8,
            data: 0,
        },
        TdVmCallRequest::Rdmsr { index: 0x1b },
        TdVmCallRequest::Wrmsr {
            index: 0x6e0,
            value: 0x1234,
        },
        TdVmCallRequest::Mmio {
            size: 8,
            direction: Direction::Write,
            gpa: shared,
            data: u64::MAX,
        },
        TdVmCallRequest::Wbinvd { invalidate: false },
        TdVmCallRequest::GetTdVmCallInfo { leaf: 1 },
        TdVmCallRequest::MapGpa {
            start: shared,
            size: 0x20_0000,
        },
        TdVmCallRequest::GetQuote {
            gpa: shared,
            size: 0x2000,
        },
        TdVmCallRequest::SetupEventNotifyInterrupt { vector: 0x40 },
    ] {
        request_round_trip(req);
    }
}

#[test]
fn tdvmcall_register_layout_matches_ghci() {
    let r = TdVmCallRequest::Io {
        size: 2,
        direction: Direction::Write,
        port: 0x80,
        data: 0xbeef,
    }
    .encode();
    assert_eq!(
        (r.r10, r.r11, r.r12, r.r13, r.r14, r.r15),
        (0, 30, 2, 1, 0x80, 0xbeef)
    );
    assert_eq!(r.rcx, 0xfc00, "standard calls expose R10..R15");
    let r = TdVmCallRequest::MapGpa {
        start: Gpa(0x8000_0000_0000),
        size: 0x1000,
    }
    .encode();
    assert_eq!((r.r11, r.r12, r.r13), (0x10001, 0x8000_0000_0000, 0x1000));
}

#[test]
fn fatal_error_message_uses_ghci_register_order() {
    let msg = *b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!?";
    let req = TdVmCallRequest::ReportFatalError {
        code: 0,
        gpa: Gpa(0),
        message: msg,
    };
    let r = req.encode();
    assert_eq!(r.r14.to_le_bytes(), *b"01234567");
    assert_eq!(r.r15.to_le_bytes(), *b"89abcdef");
    assert_eq!(r.rbx.to_le_bytes(), *b"ghijklmn");
    assert_eq!(r.rdi.to_le_bytes(), *b"opqrstuv");
    assert_eq!(r.rsi.to_le_bytes(), *b"wxyzABCD");
    assert_eq!(r.r8.to_le_bytes(), *b"EFGHIJKL");
    assert_eq!(r.r9.to_le_bytes(), *b"MNOPQRST");
    assert_eq!(r.rdx.to_le_bytes(), *b"UVWXYZ!?");
    let back = TdVmCallRequest::decode(&r, Gpaw::Gpaw48).unwrap();
    assert_eq!(back, req);
    let short = TdVmCallRequest::ReportFatalError {
        code: 0,
        gpa: Gpa(0),
        message: {
            let mut m = [0u8; 64];
            m[..5].copy_from_slice(b"panic");
            m
        },
    };
    assert_eq!(short.fatal_error_message(), Some("panic"));
}

#[test]
fn hostile_tdvmcall_registers_are_refused_with_typed_errors() {
    let mut r = TdVmCallRequest::Io {
        size: 1,
        direction: Direction::Read,
        port: 0x60,
        data: 0,
    }
    .encode();
    r.r12 = 3;
    assert!(matches!(
        TdVmCallRequest::decode(&r, Gpaw::Gpaw48),
        Err(TdVmCallDecodeError::InvalidSize { size: 3, .. })
    ));
    r.r12 = 1;
    r.r13 = 2;
    assert_eq!(
        TdVmCallRequest::decode(&r, Gpaw::Gpaw48),
        Err(TdVmCallDecodeError::InvalidDirection(2))
    );
    r.r13 = 0;
    r.r14 = 0x1_0000;
    assert_eq!(
        TdVmCallRequest::decode(&r, Gpaw::Gpaw48),
        Err(TdVmCallDecodeError::InvalidPort(0x1_0000))
    );

    // MMIO to a private GPA is refused; so is one above GPAW.
    let mut r = TdVmCallRequest::Mmio {
        size: 4,
        direction: Direction::Read,
        gpa: Gpa(0),
        data: 0,
    }
    .encode();
    r.r14 = 0xfee0_0000;
    assert_eq!(
        TdVmCallRequest::decode(&r, Gpaw::Gpaw48),
        Err(TdVmCallDecodeError::GpaNotShared(0xfee0_0000))
    );
    r.r14 = 1 << 50;
    assert_eq!(
        TdVmCallRequest::decode(&r, Gpaw::Gpaw48),
        Err(TdVmCallDecodeError::GpaOutOfRange(1 << 50))
    );

    // MapGPA: misaligned, zero, wrapping, crossing the SHARED bit.
    let mut r = TdVmCallRequest::MapGpa {
        start: Gpa(0),
        size: 0x1000,
    }
    .encode();
    r.r12 = 0x1001;
    let e = TdVmCallRequest::decode(&r, Gpaw::Gpaw48).unwrap_err();
    assert_eq!(e.status(), tdx_abi::leaf::TdVmCallStatus::ALIGN_ERROR);
    r.r12 = 0x1000;
    r.r13 = 0;
    assert!(TdVmCallRequest::decode(&r, Gpaw::Gpaw48).is_err());
    r.r12 = (1 << 47) - 0x1000;
    r.r13 = 0x2000;
    assert!(matches!(
        TdVmCallRequest::decode(&r, Gpaw::Gpaw48),
        Err(TdVmCallDecodeError::MapGpaInvalidRange { .. })
    ));
    r.r12 = !0xfff;
    assert!(TdVmCallRequest::decode(&r, Gpaw::Gpaw48).is_err());

    let mut r = TdVmCallRequest::SetupEventNotifyInterrupt { vector: 32 }.encode();
    r.r12 = 31;
    assert_eq!(
        TdVmCallRequest::decode(&r, Gpaw::Gpaw48),
        Err(TdVmCallDecodeError::InvalidVector(31))
    );

    // Unknown sub-functions and vendor calls are passed through, not refused.
    let mut r = Regs::default();
    r.r11 = 0x12345;
    assert!(matches!(
        TdVmCallRequest::decode(&r, Gpaw::Gpaw48),
        Ok(TdVmCallRequest::Other { .. })
    ));
    r.r10 = 1;
    assert!(matches!(
        TdVmCallRequest::decode(&r, Gpaw::Gpaw48),
        Ok(TdVmCallRequest::Vendor { .. })
    ));
}

/// A host that answers TDVMCALLs by decoding them, as a backend does.
struct Host {
    retries: RefCell<u32>,
}

impl Tdcall for Host {
    fn tdcall(&self, regs: &mut Regs) -> TdxStatus {
        let req = TdVmCallRequest::decode(regs, Gpaw::Gpaw48);
        let resp = match req {
            Ok(TdVmCallRequest::Io {
                direction: Direction::Read,
                port: 0x71,
                ..
            }) => TdVmCallResponse::value(0xab),
            Ok(TdVmCallRequest::Cpuid { leaf: 0x21, .. }) => {
                TdVmCallResponse::cpuid(0, u32::from_le_bytes(*b"Inte"), 0, 0)
            }
            Ok(TdVmCallRequest::MapGpa { start, size }) => {
                let mut n = self.retries.borrow_mut();
                if *n < 2 {
                    *n += 1;
                    TdVmCallResponse {
                        status: tdx_abi::leaf::TdVmCallStatus::RETRY,
                        r11: start.raw() + 0x1000,
                        r12_r15: [0; 4],
                    }
                } else {
                    assert_eq!(size, 0x1000, "resumed at the GPA the host returned");
                    TdVmCallResponse::success()
                }
            }
            Ok(_) => {
                TdVmCallResponse::with_status(tdx_abi::leaf::TdVmCallStatus::SUBFUNC_UNSUPPORTED)
            }
            Err(e) => TdVmCallResponse::with_status(e.status()),
        };
        resp.apply(regs);
        regs.rax = 0;
        TdxStatus::SUCCESS
    }
}

#[test]
fn guest_helpers_talk_to_a_decoding_host() {
    let host = Host {
        retries: RefCell::new(0),
    };
    assert_eq!(tdvmcall::tdvmcall_io_read(&host, 0x71, 1).unwrap(), 0xab);
    assert_eq!(
        tdvmcall::tdvmcall_cpuid(&host, 0x21, 0).unwrap()[1],
        u32::from_le_bytes(*b"Inte")
    );
    let shared = Gpa(0x10_0000).to_shared(Gpaw::Gpaw48);
    tdvmcall::tdvmcall_map_gpa(&host, shared, 0x3000, 8).unwrap();
    let err = tdvmcall::tdvmcall_wrmsr(&host, 0x10, 1).unwrap_err();
    assert!(err.to_string().contains("Instruction.WRMSR"), "{err}");
    // The decoder refuses a bad size and the guest sees INVALID_OPERAND.
    let err = tdvmcall::tdvmcall_io_read(&host, 0x71, 3).unwrap_err();
    assert!(matches!(
        err,
        tdvmcall::TdVmCallError::Host { status, .. } if status == tdx_abi::leaf::TdVmCallStatus::INVALID_OPERAND
    ));
}
