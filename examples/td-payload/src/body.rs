//! The ring-3 body: ordinary `no_std` Rust, every TDCALL through [`GateTdcall`].
//!
//! The BSP runs the checks of issue 5 in order and prints one machine-readable summary line
//! (`td-payload: summary ok=1 accepted_pages=.. ve_count=.. gp_count=.. ve_test=ran|skipped aps=..
//! blk=ok|none rtmr2=.. reportdata=..`),
//! then writes exit status 0 to port 0x501. APs print one line, raise a flag and halt. Any
//! failure goes to [`fatal`]: TDVMCALL<ReportFatalError> with the message.

use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

use tdx_abi::measure::{rtmr_extend, sha384, Measurement};
use tdx_abi::report::{TdReport, TD_REPORT_SIZE};
use tdx_abi::tdg::{self, AcceptError};
use tdx_abi::tdvmcall;
use tdx_abi::{EptLevel, Gpa};

use crate::gate::GateTdcall;
use crate::hob;
use crate::println;
use crate::ring0::{BOOT_CR3, BOOT_GPAW, BOOT_HOB, GP_COUNT, GP_EXPECT_RIP, SHARED_MASK, VE_COUNT};

/// The port whose byte write the VMM treats as shutdown with that status.
pub const EXIT_PORT: u16 = 0x501;
/// The fixed message measured into RTMR[2] and bound into REPORTDATA.
pub const MESSAGE: &[u8] = b"tdx-host-crates example TD payload";
/// Pages in the shared bounce pool (64 KiB).
pub const POOL_PAGES: usize = 16;
/// Virtual base of the shared-alias window (PML4 slot 1); PT slot `i` maps VA base + i * 4 KiB.
pub const SHARED_VA: u64 = 0x80_0000_0000;
/// PT slot of the round-trip page's shared alias.
const RT_SLOT: usize = POOL_PAGES;
/// PTE bits: present, writable, user.
const PTE_PWU: u64 = 0x7;
/// MapGPA retries allowed per call.
const MAP_GPA_RETRIES: usize = 64;
/// Pause iterations the BSP waits for an AP.
const AP_WAIT_SPINS: u64 = 1 << 30;

/// A 4 KiB page.
#[repr(C, align(4096))]
pub struct Page(pub [u8; 4096]);

/// Memory shared between ring 3 and the TD module/VMM, written only through raw pointers.
struct Bss<T>(UnsafeCell<T>);
// SAFETY: the body is single-threaded per buffer (only the BSP touches these) and all access
// goes through raw pointers whose users document their exclusivity.
unsafe impl<T> Sync for Bss<T> {}
impl<T> Bss<T> {
    const fn new(v: T) -> Self {
        Bss(UnsafeCell::new(v))
    }
    fn addr(&self) -> u64 {
        self.0.get() as u64
    }
}

#[repr(C, align(1024))]
struct Report([u8; TD_REPORT_SIZE]);
#[repr(C, align(64))]
struct Aligned64<const N: usize>([u8; N]);

static POOL: Bss<[Page; POOL_PAGES]> = Bss::new([const { Page([0; 4096]) }; POOL_PAGES]);
static RT_PAGE: Bss<Page> = Bss::new(Page([0; 4096]));
static VE_PAGE: Bss<Page> = Bss::new(Page([0; 4096]));
static PDPT: Bss<Page> = Bss::new(Page([0; 4096]));
static PD: Bss<Page> = Bss::new(Page([0; 4096]));
static PT: Bss<Page> = Bss::new(Page([0; 4096]));
static RTMR_DATA: Bss<Aligned64<48>> = Bss::new(Aligned64([0; 48]));
static REPORT_DATA: Bss<Aligned64<64>> = Bss::new(Aligned64([0; 64]));
static REPORT: Bss<Report> = Bss::new(Report([0; TD_REPORT_SIZE]));
/// Bit `i` set when AP `i` has printed its line.
static AP_DONE: AtomicU64 = AtomicU64::new(0);

/// A fixed-capacity text buffer for the fatal-error message.
struct Msg {
    buf: [u8; tdvmcall::FATAL_ERROR_MESSAGE_MAX],
    len: usize,
}

impl Write for Msg {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

/// Reports a failure: prints it, then TDVMCALL<ReportFatalError> with the (truncated)
/// message, then spins (the VMM stops the TD).
pub fn fatal(args: fmt::Arguments<'_>) -> ! {
    let _ = println!("td-payload: FATAL: {}", args);
    let mut m = Msg {
        buf: [0; tdvmcall::FATAL_ERROR_MESSAGE_MAX],
        len: 0,
    };
    let _ = m.write_fmt(args);
    let _ = tdvmcall::tdvmcall_report_fatal_error(&GateTdcall, 1, None, &m.buf[..m.len]);
    loop {
        core::hint::spin_loop();
    }
}

/// `?` for the body: a failed step is fatal with its context.
macro_rules! check {
    ($e:expr, $($ctx:tt)*) => {
        match $e {
            Ok(v) => v,
            Err(e) => fatal(format_args!("{}: {}", format_args!($($ctx)*), e)),
        }
    };
}

fn hex(bytes: &[u8]) -> Hex<'_> {
    Hex(bytes)
}

struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The ring-3 entry (`iretq` target of `_start`); `cpu` is the vCPU index.
pub extern "C" fn body_main(cpu: u64) -> ! {
    if cpu != 0 {
        ap_main(cpu)
    }
    bsp_main()
}

fn ap_main(cpu: u64) -> ! {
    let _ = println!("td-payload: ap {cpu} up");
    AP_DONE.fetch_or(1 << cpu, Ordering::SeqCst);
    loop {
        // Halt until the BSP shuts the TD down.
        let _ = tdvmcall::tdvmcall_hlt(&GateTdcall, true);
        core::hint::spin_loop();
    }
}

/// Accepts `[start, start + length)` (4 KiB-aligned), 2 MiB at a time where aligned while
/// the module takes 2 MiB accepts (`try_2m`, cleared on the first refusal); returns the
/// 4 KiB pages accepted and how many of them were accepted 2 MiB at a time.
fn accept_range(start: u64, length: u64, try_2m: &mut bool) -> (u64, u64) {
    const K4: u64 = 4096;
    const M2: u64 = 2 << 20;
    if !start.is_multiple_of(K4) || !length.is_multiple_of(K4) {
        fatal(format_args!(
            "unaccepted range {start:#x}+{length:#x} unaligned"
        ));
    }
    let Some(end) = start.checked_add(length) else {
        fatal(format_args!(
            "unaccepted range {start:#x}+{length:#x} overflows"
        ));
    };
    let mut gpa = start;
    let mut pages = 0;
    let mut pages_2m = 0;
    while gpa < end {
        if *try_2m && gpa.is_multiple_of(M2) && end - gpa >= M2 {
            match tdg::tdg_mem_page_accept(&GateTdcall, Gpa(gpa), EptLevel::Pd) {
                Ok(_) => {
                    gpa += M2;
                    pages += M2 / K4;
                    pages_2m += M2 / K4;
                    continue;
                }
                // Fall back to 4 KiB pages (e.g. the host maps private memory at 4 KiB).
                Err(AcceptError::Tdcall(_)) | Err(AcceptError::Operand(_)) => *try_2m = false,
            }
        }
        check!(
            tdg::tdg_mem_page_accept(&GateTdcall, Gpa(gpa), EptLevel::Pt),
            "accept {gpa:#x}"
        );
        gpa += K4;
        pages += 1;
    }
    (pages, pages_2m)
}

/// Maps PT slot `slot` of the shared-alias window to the shared alias of `gpa`; returns the VA.
fn map_shared_alias(slot: usize, gpa: u64, shared: u64) -> *mut u8 {
    let pt = PT.addr() as *mut u64;
    // SAFETY: slot < 512 (callers use < POOL_PAGES + 1) and PT is this body's own page table
    // page, identity-mapped; the entry is not present before, so no TLB entry can be stale.
    unsafe { pt.add(slot).write_volatile(gpa | shared | PTE_PWU) };
    (SHARED_VA + slot as u64 * 4096) as *mut u8
}

/// Installs the shared-alias window: PML4[1] → PDPT → PD → PT (all in the image).
fn install_alias_window() {
    let cr3 = BOOT_CR3.load(Ordering::SeqCst) & 0x000F_FFFF_FFFF_F000;
    if cr3 == 0 || cr3 >= (4 << 30) {
        fatal(format_args!("CR3 {cr3:#x} is not in the identity map"));
    }
    let pml4 = cr3 as *mut u64;
    // SAFETY: the loader's PML4 is identity-mapped, writable and user-accessible (entry
    // contract); entry 1 (VA 512 GiB) is outside the identity map and checked free first.
    unsafe {
        if pml4.add(1).read_volatile() != 0 {
            fatal(format_args!("PML4[1] is in use"));
        }
        (PDPT.addr() as *mut u64).write_volatile(PD.addr() | PTE_PWU);
        (PD.addr() as *mut u64).write_volatile(PT.addr() | PTE_PWU);
        pml4.add(1).write_volatile(PDPT.addr() | PTE_PWU);
    }
}

fn map_gpa(gpa: u64, size: u64, shared: u64, to_shared: bool) {
    let start = if to_shared { gpa | shared } else { gpa };
    check!(
        tdvmcall::tdvmcall_map_gpa(&GateTdcall, Gpa(start), size, MAP_GPA_RETRIES),
        "MapGPA {start:#x}+{size:#x}"
    );
}

/// Executes `tdcall` at CPL 3; the engine turns it into #GP(0), which ring 0 counts and skips.
fn tdcall_at_cpl3() {
    // SAFETY: the marker tells the #GP handler that exactly this instruction may fault; the
    // handler skips its 4 bytes and changes no register, so the asm has no outputs.
    unsafe {
        core::arch::asm!(
            "lea {tmp}, [rip + 2f]",
            "mov qword ptr [rip + {marker}], {tmp}",
            "2:",
            ".byte 0x66, 0x0f, 0x01, 0xcc",
            tmp = out(reg) _,
            marker = sym GP_EXPECT_RIP,
            out("rax") _,
        );
    }
}

fn bsp_main() -> ! {
    let t = GateTdcall;
    let _ = println!("td-payload: bsp up");

    // TDG.VP.INFO.
    let info = check!(tdg::tdg_vp_info(&t), "TDG.VP.INFO");
    let Some(gpaw) = info.gpaw else {
        fatal(format_args!(
            "TDG.VP.INFO GPAW {} unsupported",
            info.gpaw_raw
        ))
    };
    let shared = gpaw.shared_mask();
    SHARED_MASK.store(shared, Ordering::SeqCst);
    let _ = println!(
        "td-payload: gpaw={} boot_gpaw={} vcpus={} max_vcpus={} shared_bit={:#x}",
        info.gpaw_raw,
        BOOT_GPAW.load(Ordering::SeqCst),
        info.num_vcpus,
        info.max_vcpus,
        shared
    );

    // Accept the unaccepted memory the HOB lists.
    let hob_gpa = BOOT_HOB.load(Ordering::SeqCst);
    let mut ranges = [(0u64, 0u64); 32];
    let mut n_ranges = 0usize;
    let mut too_many = false;
    check!(
        hob::for_each_resource(hob_gpa, |r| {
            if r.kind == hob::RESOURCE_MEMORY_UNACCEPTED {
                if n_ranges < ranges.len() {
                    ranges[n_ranges] = (r.start, r.length);
                    n_ranges += 1;
                } else {
                    too_many = true;
                }
            }
        }),
        "HOB at {hob_gpa:#x}"
    );
    if too_many {
        fatal(format_args!(
            "HOB lists more than {} unaccepted ranges",
            ranges.len()
        ));
    }
    let (mut accepted_pages, mut pages_2m, mut try_2m) = (0, 0, true);
    for &(start, length) in &ranges[..n_ranges] {
        let (p, p2) = accept_range(start, length, &mut try_2m);
        accepted_pages += p;
        pages_2m += p2;
    }
    let _ = println!(
        "td-payload: accepted {accepted_pages} pages in {n_ranges} ranges ({pages_2m} by 2 MiB accepts)"
    );

    // The shared bounce pool.
    install_alias_window();
    let pool = POOL.addr();
    map_gpa(pool, (POOL_PAGES * 4096) as u64, shared, true);
    let mut pool_va = [core::ptr::null_mut(); POOL_PAGES];
    for (i, va) in pool_va.iter_mut().enumerate() {
        *va = map_shared_alias(i, pool + i as u64 * 4096, shared);
    }
    let _ = println!("td-payload: shared pool {pool:#x}+{:#x}", POOL_PAGES * 4096);

    // RTMR[2] and the TDREPORT.
    let digest = sha384(MESSAGE);
    let rtmr_data = RTMR_DATA.addr();
    let report_data = REPORT_DATA.addr();
    let report = REPORT.addr();
    // SAFETY: the three buffers are this body's own private statics, touched only here.
    unsafe {
        (rtmr_data as *mut [u8; 48]).write_volatile(digest.0);
        let mut rd = [0u8; 64];
        rd[..48].copy_from_slice(&digest.0);
        (report_data as *mut [u8; 64]).write_volatile(rd);
    }
    check!(
        tdg::tdg_mr_rtmr_extend(&t, Gpa(rtmr_data), 2),
        "TDG.MR.RTMR.EXTEND"
    );
    check!(
        tdg::tdg_mr_report(&t, Gpa(report), Gpa(report_data), 0),
        "TDG.MR.REPORT"
    );
    // SAFETY: the module wrote the 1024-byte TDREPORT into the private static.
    let report_bytes: [u8; TD_REPORT_SIZE] =
        unsafe { (report as *const [u8; TD_REPORT_SIZE]).read_volatile() };
    let parsed = check!(TdReport::from_bytes(&report_bytes), "TDREPORT");
    let expected_rtmr2 = rtmr_extend(&Measurement::ZERO, &digest.0);
    let rtmr2 = parsed.td_info.rtmr[2];
    if rtmr2 != expected_rtmr2.0 {
        fatal(format_args!(
            "RTMR[2] in the report is not SHA384(0^48||SHA384(msg))"
        ));
    }
    let reportdata = parsed.report_mac_struct.report_data;
    if reportdata[..48] != digest.0 || reportdata[48..] != [0; 16] {
        fatal(format_args!(
            "REPORTDATA in the report is not SHA384(msg)||0"
        ));
    }

    // GetQuote: header (version 1, status 0, in_len, out_len 0) + TDREPORT in two pool pages.
    let quote_len = 2 * 4096u64;
    // SAFETY: pool pages 0 and 1 are shared now and mapped at consecutive VAs (slots 0, 1);
    // only the shared alias is touched.
    let quote_status = unsafe {
        let q = pool_va[0];
        (q as *mut u64).write_volatile(1);
        (q.add(8) as *mut u64).write_volatile(0);
        (q.add(16) as *mut u32).write_volatile(TD_REPORT_SIZE as u32);
        (q.add(20) as *mut u32).write_volatile(0);
        core::ptr::copy_nonoverlapping(report_bytes.as_ptr(), q.add(24), TD_REPORT_SIZE);
        check!(
            tdvmcall::tdvmcall_get_quote(&t, Gpa(pool | shared), quote_len),
            "GetQuote"
        );
        (q.add(8) as *const u64).read_volatile()
    };
    let _ = println!("td-payload: GetQuote accepted, buffer status {quote_status:#x}");

    round_trip(shared);
    // With SEPT_VE_DISABLE a pending-page access is a TD exit, not a #VE: nothing to test.
    let ve_test_ran = if info
        .attributes
        .contains(tdx_abi::attributes::TdAttributes::SEPT_VE_DISABLE)
    {
        let _ = println!("td-payload: SEPT_VE_DISABLE set: #VE test skipped");
        false
    } else {
        ve_test(shared);
        true
    };

    let gp_before = GP_COUNT.load(Ordering::SeqCst);
    tdcall_at_cpl3();
    let gp_count = GP_COUNT.load(Ordering::SeqCst);
    if gp_count != gp_before + 1 {
        fatal(format_args!(
            "CPL-3 tdcall: #GP count {gp_before} -> {gp_count}"
        ));
    }
    let _ = println!("td-payload: CPL-3 tdcall raised #GP");

    // virtio-blk (issue 8): queue in pool page 2, data in page 3, write pattern in page 4.
    let page = |i: usize| crate::virtio::SharedPage {
        va: pool_va[i],
        gpa: pool + i as u64 * 4096,
    };
    let blk = match check!(
        crate::virtio::run(shared, page(2), page(3), page(4)),
        "virtio-blk"
    ) {
        crate::virtio::BlkOutcome::NoDevice => {
            let _ = println!("td-payload: virtio-blk: no device");
            "none"
        }
        crate::virtio::BlkOutcome::Ok(first) => {
            let _ = println!(
                "td-payload: virtio-blk sector0[0..16]={} sector1 write/read-back ok",
                hex(&first)
            );
            "ok"
        }
    };

    // SMP: wait (bounded) for every AP's line.
    let aps = info.num_vcpus.clamp(1, crate::ring0::MAX_CPUS as u32) as u64 - 1;
    let want = ((1u64 << (aps + 1)) - 1) & !1;
    let mut spins = 0u64;
    while AP_DONE.load(Ordering::SeqCst) & want != want {
        spins += 1;
        if spins > AP_WAIT_SPINS {
            fatal(format_args!(
                "APs {:#x} of {want:#x} did not report",
                AP_DONE.load(Ordering::SeqCst)
            ));
        }
        core::hint::spin_loop();
    }

    let _ = println!(
        "td-payload: summary ok=1 accepted_pages={} ve_count={} gp_count={} ve_test={} aps={} blk={} rtmr2={} reportdata={}",
        accepted_pages,
        VE_COUNT.load(Ordering::SeqCst),
        gp_count,
        if ve_test_ran { "ran" } else { "skipped" },
        aps,
        blk,
        hex(&rtmr2),
        hex(&reportdata)
    );
    let _ = tdvmcall::tdvmcall_io_write(&t, EXIT_PORT, 1, 0);
    fatal(format_args!("exit port {EXIT_PORT:#x} returned"))
}

/// Private → shared → private with an explicit accept: the page must read zero afterwards.
fn round_trip(shared: u64) {
    let page = RT_PAGE.addr();
    // SAFETY: RT_PAGE is this body's own private page, touched only here.
    unsafe { (page as *mut u8).write_volatile(0xA5) };
    map_gpa(page, 4096, shared, true);
    let alias = map_shared_alias(RT_SLOT, page, shared);
    // SAFETY: the page is shared now; only its shared alias is written.
    unsafe { core::ptr::write_bytes(alias, 0x5A, 4096) };
    map_gpa(page, 4096, shared, false);
    check!(
        tdg::tdg_mem_page_accept(&GateTdcall, Gpa(page), EptLevel::Pt),
        "accept round-trip page {page:#x}"
    );
    // SAFETY: the page is private and accepted again.
    let bytes: [u8; 4096] = unsafe { (page as *const [u8; 4096]).read_volatile() };
    if let Some(i) = bytes.iter().position(|&b| b != 0) {
        fatal(format_args!(
            "round-trip page byte {i} = {:#x}, not 0",
            bytes[i]
        ));
    }
    let _ = println!("td-payload: private->shared->private round trip ok");
}

/// Converts a page to shared and back without accepting it, then touches it: the #VE handler
/// must accept it (one #VE at least) and the page must read zero.
fn ve_test(shared: u64) {
    let page = VE_PAGE.addr();
    map_gpa(page, 4096, shared, true);
    map_gpa(page, 4096, shared, false);
    let before = VE_COUNT.load(Ordering::SeqCst);
    // SAFETY: the page is private and pending; the read takes a #VE that accepts it.
    let first = unsafe { (page as *const u64).read_volatile() };
    let after = VE_COUNT.load(Ordering::SeqCst);
    if after <= before || first != 0 {
        fatal(format_args!(
            "#VE test: count {before} -> {after}, word {first:#x}"
        ));
    }
    let _ = println!("td-payload: pending page touched, #VE handled ({after} total)");
}
