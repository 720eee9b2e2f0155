//! The example TD payload: a `no_std` program for the emulated backend's KVM engine (the ELF
//! payload contract of `tdx-vmm`). `start` is its small ring-0 part (GDT/TSS, IDT with #UD,
//! #GP, #VE handlers, the TDCALL gate); everything below runs at ring 3 and reaches the TDX
//! module only through the gate ([`gate::Gate`], typed with `tdx_abi::tdg` / `tdvmcall`).
//!
//! The bootstrap vCPU (index 0): TDG.VP.INFO; accepts 1 MiB of the memory the TD HOB lists as
//! unaccepted; MapGPAs a 64 KiB bounce pool shared; extends RTMR[2] with SHA-384 of
//! [`MESSAGE`]; gets a TDREPORT with REPORTDATA = that hash (zero padded) and hands it out with
//! TDG.VP.VMCALL<GetQuote> through the pool; converts one page private→shared→private and
//! checks it reads zero after the re-accept; touches an unaccepted page so that a #VE is taken
//! and handled; executes `tdcall` at ring 3 and checks the #GP arrived; waits for the other
//! vCPUs; prints one `key=value` summary line on the serial port and exits with status 0 on
//! port 0x501. Other vCPUs print a line and halt. Any failure: TDG.VP.VMCALL<ReportFatalError>.
#![no_std]
#![no_main]

mod blk;
mod gate;
mod mem;
mod start;

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use gate::Gate;
use sha2::{Digest, Sha384};
use tdx_abi::gpa::{EptLevel, Gpa};
use tdx_abi::tdg;
use tdx_abi::tdvmcall;

/// The message whose SHA-384 goes into RTMR[2] and REPORTDATA.
pub const MESSAGE: &[u8] = b"tdx-host example TD payload";

/// RIP of the body's deliberate CPL-3 `tdcall`, for the #GP handler.
#[no_mangle]
pub static GP_EXPECT_RIP: AtomicU64 = AtomicU64::new(0);
/// #GP taken for the deliberate CPL-3 `tdcall`.
#[no_mangle]
pub static GP_COUNT: AtomicU64 = AtomicU64::new(0);
/// #VE taken (pending pages accepted by the handler).
#[no_mangle]
pub static VE_COUNT: AtomicU64 = AtomicU64::new(0);
/// vCPUs other than 0 that reported in.
static APS_UP: AtomicU64 = AtomicU64::new(0);
static CONSOLE_LOCK: AtomicBool = AtomicBool::new(false);

/// First GPA the payload accepts (2 MiB aligned, inside unaccepted RAM).
const ACCEPT_BASE: u64 = 0x20_0000;
/// Pages accepted.
const ACCEPT_PAGES: u64 = 256;
/// The bounce pool (shared after MapGPA): the first 64 KiB of the accepted range.
const POOL: u64 = ACCEPT_BASE;
const POOL_SIZE: u64 = 0x1_0000;
/// The page converted private→shared→private.
const ROUND_TRIP: u64 = ACCEPT_BASE + 0x2_0000;
/// An unaccepted page touched to take a #VE.
const VE_PAGE: u64 = 0x40_0000;
/// Virtual address of the shared alias of [`ACCEPT_BASE`]'s 2 MiB region.
/// (Lower half: PVM hosts keep the upper half away from guest ring 3.)
const ALIAS_VA: u64 = 0x0000_4000_0000_0000 | ACCEPT_BASE;

#[repr(C, align(4096))]
struct Page([u64; 512]);
static mut ALIAS_PDPT: Page = Page([0; 512]);
static mut ALIAS_PD: Page = Page([0; 512]);

#[repr(C, align(1024))]
struct ReportBuf([u8; 1024]);
static mut REPORT: ReportBuf = ReportBuf([0; 1024]);
#[repr(C, align(64))]
struct Aligned64([u8; 64]);
static mut REPORT_DATA: Aligned64 = Aligned64([0; 64]);
static mut EXTEND: Aligned64 = Aligned64([0; 64]);

/// The serial console over TDG.VP.VMCALL<Instruction.IO>.
struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            tdvmcall::tdvmcall_io_write(&Gate, 0x3F8, 1, u32::from(b))
                .map_err(|_| core::fmt::Error)?;
        }
        Ok(())
    }
}

macro_rules! println {
    ($($t:tt)*) => {{
        while CONSOLE_LOCK.swap(true, Ordering::Acquire) {
            core::hint::spin_loop();
        }
        let _ = writeln!(Console, $($t)*);
        CONSOLE_LOCK.store(false, Ordering::Release);
    }};
}

fn fatal(what: &str) -> ! {
    let _ = tdvmcall::tdvmcall_report_fatal_error(&Gate, 1, None, what.as_bytes());
    loop {
        core::hint::spin_loop();
    }
}

fn check<T, E>(r: Result<T, E>, what: &str) -> T {
    r.unwrap_or_else(|_| fatal(what))
}

/// The unaccepted RAM ranges of the TD HOB at `hob` (resource descriptors of type
/// EFI_RESOURCE_MEMORY_UNACCEPTED = 7), bounded walk; returns whether `gpa` lies in one.
fn hob_unaccepted_contains(hob: u64, gpa: u64) -> bool {
    let mut p = hob;
    for _ in 0..256 {
        // SAFETY: the HOB page is initial (accepted, identity-mapped) memory; every read stays
        // within the 4 KiB HOB area the VMM built and the walk is bounded.
        let (ty, len) = unsafe {
            (
                core::ptr::read_volatile(p as *const u16),
                core::ptr::read_volatile((p + 2) as *const u16),
            )
        };
        if ty == 0xFFFF || len < 8 || p + u64::from(len) > hob + 4096 {
            return false;
        }
        if ty == 3 && len >= 48 {
            // SAFETY: as above, inside the descriptor just checked.
            let (rtype, start, size) = unsafe {
                (
                    core::ptr::read_volatile((p + 24) as *const u32),
                    core::ptr::read_volatile((p + 32) as *const u64),
                    core::ptr::read_volatile((p + 40) as *const u64),
                )
            };
            if rtype == 7 && gpa >= start && gpa - start < size {
                return true;
            }
        }
        p += u64::from(len);
    }
    false
}

/// Maps [`ALIAS_VA`] to the shared alias (GPA | shared bit) of the 2 MiB region at
/// [`ACCEPT_BASE`]: PML4[128] → `ALIAS_PDPT` → `ALIAS_PD` → one 2 MiB page. The PML4 is the
/// loader's (at GPA 0x1000, user-writable like every identity page); ring 0 then reloads CR3
/// so a shadow-paging host picks the change up.
fn map_shared_alias(shared_bit: u64) {
    // SAFETY: the two tables are this payload's own statics, identity mapped (VA == GPA), and
    // only this vCPU (the BSP) writes them, before anything uses the alias.
    unsafe {
        let pdpt = core::ptr::addr_of_mut!(ALIAS_PDPT) as u64;
        let pd = core::ptr::addr_of_mut!(ALIAS_PD) as u64;
        let pd_table = &mut *core::ptr::addr_of_mut!(ALIAS_PD);
        pd_table.0[(ACCEPT_BASE >> 21) as usize & 511] = (ACCEPT_BASE | shared_bit) | 0x87;
        let pdpt_table = &mut *core::ptr::addr_of_mut!(ALIAS_PDPT);
        pdpt_table.0[0] = pd | 0x7;
        core::ptr::write_volatile((0x1000 + 8 * (ALIAS_VA >> 39)) as *mut u64, pdpt | 0x7);
        // Ask ring 0 for a CR3 reload (`int 0x81`, served by the #UD handler on hosts where
        // `int n` faults at CPL 3).
        core::arch::asm!("int 0x81", options(nostack));
    }
}

fn alias(gpa: u64) -> *mut u8 {
    (ALIAS_VA + (gpa - ACCEPT_BASE)) as *mut u8
}

fn hex(b: &[u8]) -> impl core::fmt::Display + '_ {
    struct H<'a>(&'a [u8]);
    impl core::fmt::Display for H<'_> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            for x in self.0 {
                write!(f, "{x:02x}")?;
            }
            Ok(())
        }
    }
    H(b)
}

/// A CPL-3 `tdcall`: the CPU (through the engine's #UD forward) raises #GP(0); the handler
/// recognises [`GP_EXPECT_RIP`] and resumes after the instruction.
fn ring3_tdcall() {
    // SAFETY: the instruction faults before doing anything; the #GP handler skips its 4
    // bytes. RAX is set to TDG.VP.INFO in case a CPU ever executed it (it would be harmless).
    unsafe {
        core::arch::asm!(
            "lea {t}, [rip + 2f]",
            "mov [{expect}], {t}",
            "xor eax, eax",
            "inc eax",
            "2:",
            ".byte 0x66, 0x0f, 0x01, 0xcc",
            t = out(reg) _,
            expect = sym GP_EXPECT_RIP,
            out("rax") _,
            out("rcx") _, out("rdx") _, out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        );
    }
}

/// The ring-3 body: RDI = vCPU index, RSI = TD HOB GPA, RDX = GPAW.
#[no_mangle]
pub extern "C" fn body_entry(cpu: u64, hob: u64, gpaw: u64) -> ! {
    if cpu != 0 {
        println!("td-payload: vcpu {cpu} up");
        APS_UP.fetch_add(1, Ordering::SeqCst);
        let _ = tdvmcall::tdvmcall_hlt(&Gate, true);
        loop {
            core::hint::spin_loop();
        }
    }
    let info = check(tdg::tdg_vp_info(&Gate), "TDG.VP.INFO");
    println!(
        "td-payload: TDG.VP.INFO gpaw={} vcpus={} max_vcpus={} (entry RDX gpaw {gpaw})",
        info.gpaw_raw, info.num_vcpus, info.max_vcpus
    );
    let shared_bit = 1u64 << (u32::from(info.gpaw_raw).clamp(48, 52) - 1);

    // Accept 1 MiB of the memory the HOB lists as unaccepted.
    if !hob_unaccepted_contains(hob, ACCEPT_BASE) {
        fatal("HOB: no unaccepted memory at 2 MiB");
    }
    let mut accepted = 0u64;
    for i in 0..ACCEPT_PAGES {
        match tdg::tdg_mem_page_accept(&Gate, Gpa(ACCEPT_BASE + i * 4096), EptLevel::Pt) {
            Ok(tdg::AcceptOutcome::Accepted) => accepted += 1,
            Ok(_) => {}
            Err(_) => fatal("TDG.MEM.PAGE.ACCEPT"),
        }
    }
    println!("td-payload: accepted {accepted} pages at {ACCEPT_BASE:#x}");

    // The bounce pool becomes shared.
    map_shared_alias(shared_bit);
    check(
        tdvmcall::tdvmcall_map_gpa(&Gate, Gpa(POOL | shared_bit), POOL_SIZE, 16),
        "MapGPA pool to shared",
    );

    // RTMR[2] and the TDREPORT.
    let digest = Sha384::digest(MESSAGE);
    // SAFETY: the statics are this vCPU's alone; their GPAs (== VAs) go to the module.
    let (extend_gpa, data_gpa, report_gpa) = unsafe {
        let extend = &mut *core::ptr::addr_of_mut!(EXTEND);
        extend.0[..48].copy_from_slice(&digest);
        let data = &mut *core::ptr::addr_of_mut!(REPORT_DATA);
        data.0[..48].copy_from_slice(&digest);
        (
            core::ptr::addr_of!(EXTEND) as u64,
            core::ptr::addr_of!(REPORT_DATA) as u64,
            core::ptr::addr_of!(REPORT) as u64,
        )
    };
    check(
        tdg::tdg_mr_rtmr_extend(&Gate, Gpa(extend_gpa), 2),
        "TDG.MR.RTMR.EXTEND",
    );
    check(
        tdg::tdg_mr_report(&Gate, Gpa(report_gpa), Gpa(data_gpa), 0),
        "TDG.MR.REPORT",
    );
    // SAFETY: REPORT was just written by the module; the pool is shared and mapped at the
    // alias; the header and report fit its 64 KiB.
    let rtmr2 = unsafe {
        let report = &(*core::ptr::addr_of!(REPORT)).0;
        let mut hdr = [0u8; 24];
        hdr[0..8].copy_from_slice(&1u64.to_le_bytes());
        hdr[16..20].copy_from_slice(&1024u32.to_le_bytes());
        core::ptr::copy_nonoverlapping(hdr.as_ptr(), alias(POOL), 24);
        core::ptr::copy_nonoverlapping(report.as_ptr(), alias(POOL).add(24), 1024);
        let mut r = [0u8; 48];
        // TDREPORT: TDINFO at 512; RTMR[i] at TDINFO + 208 + 48 i.
        r.copy_from_slice(&report[512 + 208 + 96..512 + 208 + 144]);
        r
    };
    check(
        tdvmcall::tdvmcall_get_quote(&Gate, Gpa(POOL | shared_bit), POOL_SIZE),
        "GetQuote",
    );
    // SAFETY: the VMM wrote the header back into the shared pool.
    let quote_status = unsafe { core::ptr::read_volatile(alias(POOL).add(8) as *const u64) };
    println!("td-payload: GetQuote status {quote_status:#x}");

    // virtio-blk through the bounce pool (queue at pool + 32 KiB, data at pool + 36 KiB).
    let blk_result = match blk::Blk::init(shared_bit, POOL + 0x8000, alias(POOL + 0x8000)) {
        None => "none",
        Some(mut dev) => {
            let mut sector = [0u8; 512];
            match dev.request(false, 0, &mut sector) {
                Some(0) => {}
                _ => fatal("virtio-blk read of sector 0"),
            }
            let text: &[u8] = &sector[..32];
            let end = text
                .iter()
                .position(|&b| b == 0 || b == b'\n')
                .unwrap_or(32);
            println!(
                "td-payload: virtio-blk sector 0: {:?}",
                core::str::from_utf8(&text[..end]).unwrap_or("<binary>")
            );
            if dev.read_only {
                "read-only"
            } else {
                let mut pattern = [0u8; 512];
                for (i, b) in pattern.iter_mut().enumerate() {
                    *b = (i as u8) ^ 0xA5;
                }
                let mut back = pattern;
                match dev.request(true, 1, &mut back) {
                    Some(0) => {}
                    _ => fatal("virtio-blk write of sector 1"),
                }
                back = [0; 512];
                match dev.request(false, 1, &mut back) {
                    Some(0) if back == pattern => "ok",
                    _ => fatal("virtio-blk read back of sector 1"),
                }
            }
        }
    };
    println!("td-payload: virtio-blk: {blk_result}");

    // Private → shared → private for one accepted page.
    let rt = ROUND_TRIP as *mut u64;
    // SAFETY: ROUND_TRIP is an accepted private page (identity mapped) of the accepted range,
    // and its shared alias lies in the mapped alias region; the page is used by nobody else.
    let round_trip_ok = unsafe {
        core::ptr::write_volatile(rt, 0x5EC2_E7DA_7A00_0001);
        check(
            tdvmcall::tdvmcall_map_gpa(&Gate, Gpa(ROUND_TRIP | shared_bit), 4096, 16),
            "MapGPA to shared",
        );
        core::ptr::write_volatile(alias(ROUND_TRIP) as *mut u64, 0x5AAE_D000_0000_0002);
        check(
            tdvmcall::tdvmcall_map_gpa(&Gate, Gpa(ROUND_TRIP), 4096, 16),
            "MapGPA to private",
        );
        match tdg::tdg_mem_page_accept(&Gate, Gpa(ROUND_TRIP), EptLevel::Pt) {
            Ok(tdg::AcceptOutcome::Accepted) => {}
            _ => fatal("re-accept after private conversion"),
        }
        core::ptr::read_volatile(rt) == 0
    };
    println!("td-payload: private->shared->private round trip reads zero: {round_trip_ok}");

    // A #VE: touch an unaccepted page; the host AUGs it, the access finds it PENDING, the #VE
    // handler accepts it and the load is retried. With SEPT_VE_DISABLE the module would exit
    // to the host instead of raising #VE, so the step is skipped.
    let ve_enabled = !info
        .attributes
        .contains(tdx_abi::attributes::TdAttributes::SEPT_VE_DISABLE);
    if ve_enabled {
        // SAFETY: VE_PAGE is guest RAM listed as unaccepted; the #VE handler makes it
        // accessible.
        let ve_value = unsafe { core::ptr::read_volatile(VE_PAGE as *const u64) };
        println!(
            "td-payload: #VE handled: {} (page read {ve_value:#x})",
            VE_COUNT.load(Ordering::SeqCst)
        );
    } else {
        println!("td-payload: SEPT_VE_DISABLE is set: #VE step skipped");
    }
    let ve = VE_COUNT.load(Ordering::SeqCst);

    // TDCALL from ring 3 is refused with #GP.
    ring3_tdcall();
    let gp = GP_COUNT.load(Ordering::SeqCst);
    println!("td-payload: ring-3 tdcall raised #GP: {gp}");

    // The other vCPUs.
    let others = u64::from(info.num_vcpus.saturating_sub(1));
    let mut spins = 0u64;
    while APS_UP.load(Ordering::SeqCst) < others && spins < 1 << 32 {
        core::hint::spin_loop();
        spins += 1;
    }
    let aps = APS_UP.load(Ordering::SeqCst);
    println!(
        "td-payload: result accepted={accepted} ve={ve} gp={gp} roundtrip={} blk={blk_result} vcpus={} rtmr2={} reportdata={}",
        if round_trip_ok { "ok" } else { "bad" },
        aps + 1,
        hex(&rtmr2),
        hex(&digest)
    );
    let ok =
        round_trip_ok && (ve >= 1 || !ve_enabled) && gp == 1 && aps == others && quote_status == 0;
    let _ = tdvmcall::tdvmcall_io_write(&Gate, 0x501, 1, u32::from(!ok));
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    fatal("panic")
}

/// `core` for the host target refers to the unwinding personality; with `panic = "abort"`
/// nothing ever unwinds, so an empty definition satisfies the linker.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
