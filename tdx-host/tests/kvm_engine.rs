//! The KVM execution engine running hand-assembled 64-bit guest code in a TD built by the
//! host driver on the emulated module. Skips loudly when /dev/kvm is unusable.

use std::sync::Arc;
use std::time::Duration;

use tdx_abi::call::{Regs, Seamcall};
use tdx_abi::gpa::Gpa;
use tdx_abi::leaf::SeamcallLeaf;
use tdx_abi::phys::Hpa;
use tdx_host::backend::GuestEntry;
use tdx_host::driver::module::RetryPolicy;
use tdx_host::driver::{bring_up, EmulatedTdxModule, TdBuilder};
use tdx_host::emulated::kvm::KvmEngine;
use tdx_host::emulated::{
    EmulatedModule, ExecutionEngine, LogicalProcessor, PlatformConfig, TdEngineConfig,
};

fn platform() -> (Arc<EmulatedModule>, Arc<EmulatedTdxModule>) {
    bring_up(PlatformConfig::default(), RetryPolicy::default()).unwrap()
}

/// The engine, or `None` (with a loud message) when KVM cannot be used here.
fn engine(m: &Arc<EmulatedModule>) -> Option<Arc<KvmEngine>> {
    match KvmEngine::new(m) {
        Ok(e) => Some(e),
        Err(e) => {
            eprintln!("SKIPPED: KVM engine tests need a usable /dev/kvm: {e}");
            None
        }
    }
}

/// Guest code, loaded at [`CODE`] (assembled with GNU as, `.intel_syntax`, `.code64`).
/// Every report is a TDG.VP.VMCALL through the doorbell with mask 0xF000 (R12..R15).
const GUEST: &[u8] = &[
    0x0f, 0x01, 0x14, 0x25, 0x00, 0x51, 0x00, 0x00, // 00 lgdt [0x5100]
    0x0f, 0x01, 0x1c, 0x25, 0x10, 0x51, 0x00, 0x00, // 08 lidt [0x5110]
    0x48, 0xc7, 0xc4, 0x00, 0x80, 0x00, 0x00, //       10 mov rsp, 0x8000
    // Step 1: doorbell TDG.VP.INFO, report RCX (GPAW), R8 (vCPUs), R9 (index), RAX.
    0xb8, 0x01, 0x00, 0x00, 0x00, // 17 mov eax, 1 (TDG.VP.INFO)
    0xe6, 0xdc, //                   1c out 0xdc, al (doorbell)
    0x49, 0x89, 0xcc, //             1e mov r12, rcx
    0x4d, 0x89, 0xc5, //             21 mov r13, r8
    0x4d, 0x89, 0xce, //             24 mov r14, r9
    0x49, 0x89, 0xc7, //             27 mov r15, rax
    0x31, 0xc0, //                   2a xor eax, eax (TDG.VP.VMCALL)
    0xb9, 0x00, 0xf0, 0x00, 0x00, // 2c mov ecx, 0xf000
    0xe6, 0xdc, //                   31 out 0xdc, al
    // Step 2: the real TDCALL opcode (trapped by the engine); R13 = the host's R12 answer.
    0x4c, 0x89, 0xe3, //             33 mov rbx, r12
    0xb8, 0x01, 0x00, 0x00, 0x00, // 36 mov eax, 1
    0x66, 0x0f, 0x01, 0xcc, //       3b tdcall
    0x49, 0x89, 0xcc, //             3f mov r12, rcx
    0x49, 0x89, 0xdd, //             42 mov r13, rbx
    0x4d, 0x89, 0xce, //             45 mov r14, r9
    0x49, 0x89, 0xc7, //             48 mov r15, rax
    0x31, 0xc0, //                   4b xor eax, eax
    0xb9, 0x00, 0xf0, 0x00, 0x00, // 4d mov ecx, 0xf000
    0xe6, 0xdc, //                   52 out 0xdc, al
    // Step 3: ACCEPT 0x400000 (not AUGed yet: EPT-violation exit, re-executed), read, write.
    0xb9, 0x00, 0x00, 0x40, 0x00, // 54 mov ecx, 0x400000
    0xb8, 0x06, 0x00, 0x00, 0x00, // 59 mov eax, 6 (TDG.MEM.PAGE.ACCEPT)
    0xe6, 0xdc, //                   5e out 0xdc, al
    0x49, 0x89, 0xc7, //             60 mov r15, rax
    0x4c, 0x8b, 0x24, 0x25, 0x00, 0x00, 0x40, 0x00, // 63 mov r12, [0x400000]
    0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // 6b movabs rax, 0x1122..88
    0x48, 0x89, 0x04, 0x25, 0x00, 0x00, 0x40, 0x00, // 75 mov [0x400000], rax
    0x4c, 0x8b, 0x2c, 0x25, 0x00, 0x00, 0x40, 0x00, // 7d mov r13, [0x400000]
    0x31, 0xc0, //                   85 xor eax, eax
    0xb9, 0x00, 0xf0, 0x00, 0x00, // 87 mov ecx, 0xf000
    0xe6, 0xdc, //                   8c out 0xdc, al
    // Step 4: read the pending page 0x500000: #VE, the handler fills R12..R14 and accepts.
    0x4c, 0x8b, 0x3c, 0x25, 0x00, 0x00, 0x50, 0x00, // 8e mov r15, [0x500000]
    0x31, 0xc0, //                   96 xor eax, eax
    0xb9, 0x00, 0xf0, 0x00, 0x00, // 98 mov ecx, 0xf000
    0xe6, 0xdc, //                   9d out 0xdc, al
    // Step 5: read 0x400000 again (the host removed it: EPT-violation exit; re-AUGed: #VE).
    0x4c, 0x8b, 0x24, 0x25, 0x00, 0x00, 0x40, 0x00, // 9f mov r12, [0x400000]
    0x31, 0xc0, //                   a7 xor eax, eax
    0xb9, 0x00, 0xf0, 0x00, 0x00, // a9 mov ecx, 0xf000
    0xe6, 0xdc, //                   ae out 0xdc, al
    // Step 6: spin until the host kicks.
    0xeb, 0xfe, //                   b0 spin: jmp spin
    // #VE handler (VE_HANDLER = 0xb2): VE_INFO into R12..R14, then ACCEPT the GPA.
    0xb8, 0x03, 0x00, 0x00, 0x00, // b2 mov eax, 3 (TDG.VP.VEINFO.GET)
    0xe6, 0xdc, //                   b7 out 0xdc, al
    0x49, 0x89, 0xcc, //             b9 mov r12, rcx (exit reason)
    0x4d, 0x89, 0xcd, //             bc mov r13, r9 (GPA)
    0x49, 0x89, 0xc6, //             bf mov r14, rax (status)
    0x4c, 0x89, 0xc9, //             c2 mov rcx, r9
    0xb8, 0x06, 0x00, 0x00, 0x00, // c5 mov eax, 6 (ACCEPT)
    0xe6, 0xdc, //                   ca out 0xdc, al
    0x48, 0xcf, //                   cc iretq
];
const VE_HANDLER: u64 = 0xb2;

const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
const PD: u64 = 0x3000;
const IDT: u64 = 0x4000;
const GDT: u64 = 0x5000;
const STACK: u64 = 0x7000;
const PD_SHARED: u64 = 0x6000;
const CODE: u64 = 0x10000;
const LAZY: u64 = 0x40_0000;
const PENDING: u64 = 0x50_0000;

fn page() -> Vec<u8> {
    vec![0u8; 4096]
}

fn put(p: &mut [u8], off: usize, v: u64) {
    p[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// The initial image: identity page tables (2 MiB pages, U = 1, first 1 GiB; linear 1 GiB
/// maps the shared GPAs at bit 47 | 0x600000), an IDT with
/// `gates` (vector, code offset), a GDT (0x08 code64, 0x10 data, 0x18 user data, 0x20 user
/// code64, 0x28 TSS at 0x5200 with RSP0 0x7F00) with GDTR/IDTR images at 0x5100/0x5110 and a
/// null IDTR at 0x5120, a stack page and `code` at [`CODE`].
fn image_with(code_bytes: &[u8], gates: &[(u64, u64)]) -> Vec<(u64, Vec<u8>)> {
    let mut pml4 = page();
    put(&mut pml4, 0, PDPT | 0x7);
    let mut pdpt = page();
    put(&mut pdpt, 0, PD | 0x7);
    put(&mut pdpt, 8, PD_SHARED | 0x7);
    let mut pd = page();
    for i in 0..512u64 {
        put(&mut pd, (i * 8) as usize, (i << 21) | 0x87);
    }
    // Linear 1 GiB: the 2 MiB of shared GPAs at SHARED_BIT | 0x600000.
    let mut pd_shared = page();
    put(&mut pd_shared, 0, SHARED_BIT | 0x60_0000 | 0x87);
    let mut idt = page();
    for &(vector, off) in gates {
        let h = CODE + off;
        let lo = (h & 0xFFFF) | (0x08 << 16) | (0x8E << 40) | (((h >> 16) & 0xFFFF) << 48);
        put(&mut idt, (vector * 16) as usize, lo);
        put(&mut idt, (vector * 16 + 8) as usize, h >> 32);
    }
    let mut gdt = page();
    put(&mut gdt, 0x08, 0x00AF_9B00_0000_FFFF);
    put(&mut gdt, 0x10, 0x00CF_9300_0000_FFFF);
    put(&mut gdt, 0x18, 0x00CF_F300_0000_FFFF);
    put(&mut gdt, 0x20, 0x00AF_FB00_0000_FFFF);
    let tss = GDT + 0x200;
    put(
        &mut gdt,
        0x28,
        0x67 | ((tss & 0xFF_FFFF) << 16) | (0x89 << 40),
    );
    put(&mut gdt, 0x30, 0);
    gdt[0x100..0x102].copy_from_slice(&0x37u16.to_le_bytes());
    put(&mut gdt, 0x102, GDT);
    gdt[0x110..0x112].copy_from_slice(&0xFFFu16.to_le_bytes());
    put(&mut gdt, 0x112, IDT);
    put(&mut gdt, 0x200 + 4, 0x7F00); // TSS.RSP0
    let mut code = page();
    code[..code_bytes.len()].copy_from_slice(code_bytes);
    vec![
        (PML4, pml4),
        (PDPT, pdpt),
        (PD, pd),
        (PD_SHARED, pd_shared),
        (IDT, idt),
        (GDT, gdt),
        (STACK, page()),
        (CODE, code),
    ]
}

fn image() -> Vec<(u64, Vec<u8>)> {
    image_with(GUEST, &[(20, VE_HANDLER)])
}

fn vp_enter(lp: &LogicalProcessor, tdvpr: u64, answer: Regs) -> Regs {
    let mut r = Regs {
        rax: u64::from(SeamcallLeaf::TDH_VP_ENTER.raw()),
        rcx: tdvpr,
        ..answer
    };
    lp.seamcall(&mut r);
    r
}

const TDCALL_EXIT: u64 = 77;
const EPT_VIOLATION: u64 = 48;
const EXTERNAL_INTERRUPT: u64 = 1;

#[test]
fn guest_code_runs_tdcalls_vmcalls_lazy_accept_ve_and_kick() {
    let (m, module) = platform();
    let Some(eng) = engine(&m) else { return };
    m.set_engine(eng.clone());
    let td = TdBuilder::new(&module).max_vcpus(1).build().unwrap();
    let vcpu = td.create_vcpu(0, 0x1234).unwrap();
    for (gpa, bytes) in image() {
        td.add_page(Gpa(gpa), bytes.as_slice().try_into().unwrap(), true)
            .unwrap();
    }
    td.finalize().unwrap();
    let tdr = Hpa(td.tdr());
    eng.configure_td(
        tdr,
        &TdEngineConfig {
            entry: GuestEntry::Long64 {
                rip: CODE,
                cr3: PML4,
            },
            shared: None,
        },
    )
    .unwrap();
    let tdvpr = td.vcpu(vcpu).unwrap().tdvpr;
    let lp = m.lp(0).unwrap();

    // Step 1: TDG.VP.INFO through the doorbell, reported by TDG.VP.VMCALL.
    let r = vp_enter(&lp, tdvpr, Regs::default());
    assert_eq!(r.rax, TDCALL_EXIT, "VMCALL exit: {r:x?}");
    assert_eq!(r.rcx, 0xF000, "GPR select mask");
    assert_eq!(r.r12, 48, "GPAW");
    assert_eq!(r.r13, 1 | (1 << 32), "NUM_VCPUS | MAX_VCPUS << 32");
    assert_eq!(r.r14, 0, "vCPU index");
    assert_eq!(r.r15, 0, "TDG.VP.INFO status");

    // Step 2: the real opcode, trapped at CPL 0; the host's R12 answer came back in.
    let r = vp_enter(
        &lp,
        tdvpr,
        Regs {
            r12: 0xABCD_0123,
            ..Regs::default()
        },
    );
    assert_eq!(r.rax, TDCALL_EXIT, "{r:x?}");
    assert_eq!(r.r12, 48, "GPAW through the trapped tdcall");
    assert_eq!(
        r.r13, 0xABCD_0123,
        "the host's VMCALL answer reached the guest"
    );
    assert_eq!(r.r15, 0);

    // Step 3: ACCEPT of an un-AUGed GPA is an EPT-violation exit; AUG, resume, accept.
    let r = vp_enter(&lp, tdvpr, Regs::default());
    assert_eq!(r.rax, EPT_VIOLATION, "{r:x?}");
    assert_eq!(r.r8, LAZY, "faulting GPA");
    assert_eq!(r.rdx & 0xF, 1, "extended exit qualification: ACCEPT");
    let hpa = td.aug_page(0, Gpa(LAZY), 0).unwrap();
    let r = vp_enter(&lp, tdvpr, Regs::default());
    assert_eq!(r.rax, TDCALL_EXIT, "{r:x?}");
    assert_eq!(r.r15, 0, "ACCEPT status");
    assert_eq!(r.r12, 0, "an accepted page reads zero");
    assert_eq!(
        r.r13, 0x1122_3344_5566_7788,
        "the guest reads back its data"
    );
    let mut host = [0xFFu8; 8];
    m.physical_memory().read(hpa, &mut host).unwrap();
    assert_eq!(host, [0; 8], "the host's view of a private page is zeros");

    // Step 4: a pending page: #VE to the guest's handler, which reads VE_INFO and accepts.
    td.aug_page(0, Gpa(PENDING), 0).unwrap();
    let r = vp_enter(&lp, tdvpr, Regs::default());
    assert_eq!(r.rax, TDCALL_EXIT, "{r:x?}");
    assert_eq!(r.r12, EPT_VIOLATION, "VE_INFO exit reason");
    assert_eq!(r.r13, PENDING, "VE_INFO GPA");
    assert_eq!(r.r14, 0, "TDG.VP.VEINFO.GET status");
    assert_eq!(r.r15, 0, "the access retried after ACCEPT reads zero");

    // Step 5: the host blocks, tracks and removes the page; the guest's next access is an
    // EPT-violation exit (the engine dropped the mapping); AUGed again it is pending: #VE,
    // the handler accepts it and the read returns the fresh page's zeros.
    td.remove_page(0, Gpa(LAZY)).unwrap();
    let r = vp_enter(&lp, tdvpr, Regs::default());
    assert_eq!(r.rax, EPT_VIOLATION, "access after REMOVE: {r:x?}");
    assert_eq!(r.r8, LAZY);
    assert_eq!(r.rcx & 3, 1, "qualification: read");
    td.aug_page(0, Gpa(LAZY), 0).unwrap();
    let r = vp_enter(&lp, tdvpr, Regs::default());
    assert_eq!(r.rax, TDCALL_EXIT, "{r:x?}");
    assert_eq!(r.r12, 0, "a re-AUGed page reads zero, not the old data");
    assert_eq!(r.r13, LAZY, "the #VE named the re-AUGed GPA");
    assert_eq!(r.r14, 0);

    // Step 6: the guest spins; a kick from another thread ends the VP.ENTER.
    let kicker = {
        let eng = eng.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            eng.kick(Hpa(tdvpr));
        })
    };
    let r = vp_enter(&lp, tdvpr, Regs::default());
    kicker.join().unwrap();
    assert_eq!(r.rax, EXTERNAL_INTERRUPT, "async exit after a kick: {r:x?}");
    // Kicks racing with entry and with KVM_RUN: every one ends exactly one VP.ENTER.
    for i in 0..20u64 {
        let eng2 = eng.clone();
        let k = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(i * 250));
            eng2.kick(Hpa(tdvpr));
        });
        let r = vp_enter(&lp, tdvpr, Regs::default());
        k.join().unwrap();
        assert_eq!(r.rax, EXTERNAL_INTERRUPT, "kick {i}: {r:x?}");
    }
    // A kick before the entry makes the next VP.ENTER return at once.
    eng.kick(Hpa(tdvpr));
    let r = vp_enter(&lp, tdvpr, Regs::default());
    assert_eq!(r.rax, EXTERNAL_INTERRUPT);
    m.check_invariants().unwrap();
    eng.release_td(tdr);
}

#[test]
fn two_vcpus_run_on_two_threads() {
    let (m, module) = platform();
    let Some(eng) = engine(&m) else { return };
    m.set_engine(eng.clone());
    let td = TdBuilder::new(&module).max_vcpus(2).build().unwrap();
    let v0 = td.create_vcpu(0, 0).unwrap();
    let v1 = td.create_vcpu(1, 0).unwrap();
    for (gpa, bytes) in image() {
        td.add_page(Gpa(gpa), bytes.as_slice().try_into().unwrap(), true)
            .unwrap();
    }
    td.finalize().unwrap();
    eng.configure_td(
        Hpa(td.tdr()),
        &TdEngineConfig {
            entry: GuestEntry::Long64 {
                rip: CODE,
                cr3: PML4,
            },
            shared: None,
        },
    )
    .unwrap();
    let handles: Vec<_> = [(v0, 0u32), (v1, 1u32)]
        .into_iter()
        .map(|(v, lp)| {
            let tdvpr = td.vcpu(v).unwrap().tdvpr;
            let lp = m.lp(lp).unwrap();
            std::thread::spawn(move || vp_enter(&lp, tdvpr, Regs::default()))
        })
        .collect();
    let mut seen: Vec<u64> = handles
        .into_iter()
        .map(|h| {
            let r = h.join().unwrap();
            assert_eq!(r.rax, TDCALL_EXIT, "{r:x?}");
            assert_eq!(r.r13, 2 | (2 << 32), "two vCPUs of two");
            r.r14
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, vec![0, 1], "each vCPU reports its own index");
    eng.release_td(Hpa(td.tdr()));
}

/// Second guest (GNU as, `.intel_syntax`): the `#UD` forward at CPL 0 (a `#UD` frame the code
/// pushes for the TDCALL bytes: `int n` is not emulated in 64-bit mode here), port I/O and HLT as #VE, shared memory at GPA | bit 47, MMIO to a shared
/// GPA without memory as #VE, a ring-3 TDCALL refused with #GP(0), and a triple fault. Every
/// report is a doorbell TDG.VP.VMCALL with mask 0xF000; the #VE handler reports VE_INFO (R12
/// exit reason, R13 qualification, R14 GPA, R15 instruction length) and skips as many bytes
/// as the host answers in R12.
const GUEST2: &[u8] = &[
    // start:
    0x0f, 0x01, 0x14, 0x25, 0x00, 0x51, 0x00, 0x00, // 0 lgdt ds:0x5100
    0x0f, 0x01, 0x1c, 0x25, 0x10, 0x51, 0x00, 0x00, // 8 lidt ds:0x5110
    0x48, 0xc7, 0xc4, 0x00, 0x80, 0x00, 0x00, // 10 mov rsp,0x8000
    0x66, 0xb8, 0x28, 0x00, // 17 mov ax,0x28
    0x0f, 0x00, 0xd8, // 1b ltr ax
    0xb8, 0x01, 0x00, 0x00, 0x00, // 1e mov eax,0x1
    0x48, 0x8d, 0x1d, 0x0c, 0x00, 0x00, 0x00, // 23 lea rbx,[rip+0xc] # 36 <tdc>
    0x48, 0x89, 0xe2, // 2a mov rdx,rsp
    0x6a, 0x10, // 2d push 0x10
    0x52, // 2f push rdx
    0x9c, // 30 pushf
    0x6a, 0x08, // 31 push 0x8
    0x53, // 33 push rbx
    0xeb, 0x5f, // 34 jmp 95 <ud_handler>
    // tdc:
    0x66, 0x0f, 0x01, 0xcc, // 36 tdcall
    0x49, 0x89, 0xcc, // 3a mov r12,rcx
    0x49, 0x89, 0xc7, // 3d mov r15,rax
    0x31, 0xc0, // 40 xor eax,eax
    0xb9, 0x00, 0xf0, 0x00, 0x00, // 42 mov ecx,0xf000
    0xe6, 0xdc, // 47 out 0xdc,al
    0xe6, 0x80, // 49 out 0x80,al
    0xf4, // 4b hlt
    0xbb, 0x00, 0x00, 0x00, 0x40, // 4c mov ebx,0x40000000
    0x48, 0xb8, 0xaa, 0xaa, 0x55, 0x55, 0xaa, 0xaa, 0x55,
    0x55, // 51 movabs rax,0x5555aaaa5555aaaa
    0x48, 0x89, 0x03, // 5b mov QWORD PTR [rbx],rax
    0x4c, 0x8b, 0x23, // 5e mov r12,QWORD PTR [rbx]
    0x31, 0xc0, // 61 xor eax,eax
    0xb9, 0x00, 0xf0, 0x00, 0x00, // 63 mov ecx,0xf000
    0xe6, 0xdc, // 68 out 0xdc,al
    0xbb, 0x00, 0x00, 0x10, 0x40, // 6a mov ebx,0x40100000
    0x48, 0x89, 0x03, // 6f mov QWORD PTR [rbx],rax
    0x48, 0x8b, 0x03, // 72 mov rax,QWORD PTR [rbx]
    0x6a, 0x1b, // 75 push 0x1b
    0x68, 0x00, 0x78, 0x00, 0x00, // 77 push 0x7800
    0x6a, 0x02, // 7c push 0x2
    0x6a, 0x23, // 7e push 0x23
    0x48, 0x8d, 0x05, 0x03, 0x00, 0x00, 0x00, // 80 lea rax,[rip+0x3] # 8a <user>
    0x50, // 87 push rax
    0x48, 0xcf, // 88 iretq
    // user:
    0xb8, 0x01, 0x00, 0x00, 0x00, // 8a mov eax,0x1
    0x66, 0x0f, 0x01, 0xcc, // 8f tdcall
    0xeb, 0xf5, // 93 jmp 8a <user>
    // ud_handler:
    0xe6, 0xdd, // 95 out 0xdd,al
    0x41, 0xbc, 0x06, 0x00, 0x00, 0x00, // 97 mov r12d,0x6
    0x31, 0xc0, // 9d xor eax,eax
    0xb9, 0x00, 0xf0, 0x00, 0x00, // 9f mov ecx,0xf000
    0xe6, 0xdc, // a4 out 0xdc,al
    // ud_spin:
    0xeb, 0xfe, // a6 jmp a6 <ud_spin>
    // gp_handler:
    0x41, 0xbc, 0x0d, 0x00, 0x00, 0x00, // a8 mov r12d,0xd
    0x4c, 0x8b, 0x2c, 0x24, // ae mov r13,QWORD PTR [rsp]
    0x4c, 0x8b, 0x74, 0x24, 0x08, // b2 mov r14,QWORD PTR [rsp+0x8]
    0x4c, 0x8b, 0x7c, 0x24, 0x10, // b7 mov r15,QWORD PTR [rsp+0x10]
    0x31, 0xc0, // bc xor eax,eax
    0xb9, 0x00, 0xf0, 0x00, 0x00, // be mov ecx,0xf000
    0xe6, 0xdc, // c3 out 0xdc,al
    0x0f, 0x01, 0x1c, 0x25, 0x20, 0x51, 0x00, 0x00, // c5 lidt ds:0x5120
    0x0f, 0x0b, // cd ud2
    // ve_handler:
    0xb8, 0x03, 0x00, 0x00, 0x00, // cf mov eax,0x3
    0xe6, 0xdc, // d4 out 0xdc,al
    0x49, 0x89, 0xcc, // d6 mov r12,rcx
    0x49, 0x89, 0xd5, // d9 mov r13,rdx
    0x4d, 0x89, 0xce, // dc mov r14,r9
    0x4d, 0x89, 0xd7, // df mov r15,r10
    0x31, 0xc0, // e2 xor eax,eax
    0xb9, 0x00, 0xf0, 0x00, 0x00, // e4 mov ecx,0xf000
    0xe6, 0xdc, // e9 out 0xdc,al
    0x4c, 0x01, 0x24, 0x24, // eb add QWORD PTR [rsp],r12
    0x48, 0xcf, // ef iretq
];
const G2_UD: u64 = 0x95;
const G2_GP: u64 = 0xa8;
const G2_VE: u64 = 0xcf;
const SHARED_PAGE: u64 = 0x60_0000;
const SHARED_BIT: u64 = 1 << 47;

#[test]
fn ud_forward_ve_for_io_hlt_mmio_shared_memory_ring3_gp_and_triple_fault() {
    use tdx_memory::{AttributeMap, GpaRange, PageState, SharedGuestMemory};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    let (m, module) = platform();
    let Some(eng) = engine(&m) else { return };
    m.set_engine(eng.clone());
    let td = TdBuilder::new(&module).max_vcpus(1).build().unwrap();
    let vcpu = td.create_vcpu(0, 0).unwrap();
    for (gpa, bytes) in image_with(GUEST2, &[(6, G2_UD), (13, G2_GP), (20, G2_VE)]) {
        td.add_page(Gpa(gpa), bytes.as_slice().try_into().unwrap(), true)
            .unwrap();
    }
    td.finalize().unwrap();
    let attrs = Arc::new(AttributeMap::new(tdx_abi::gpa::Gpaw::Gpaw48));
    let backing =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(SHARED_PAGE), 0x1000)]).unwrap();
    let shared = SharedGuestMemory::new(attrs.clone(), backing.clone()).unwrap();
    attrs
        .convert(
            GpaRange::new(Gpa(SHARED_PAGE), 0x1000).unwrap(),
            PageState::Shared,
        )
        .unwrap();
    let tdr = Hpa(td.tdr());
    eng.configure_td(
        tdr,
        &TdEngineConfig {
            entry: GuestEntry::Long64 {
                rip: CODE,
                cr3: PML4,
            },
            shared: Some(shared),
        },
    )
    .unwrap();
    let tdvpr = td.vcpu(vcpu).unwrap().tdvpr;
    let lp = m.lp(0).unwrap();
    let answer = |skip: u64| Regs {
        r12: skip,
        ..Regs::default()
    };

    // A: a CPL-0 #UD frame at the TDCALL bytes: the #UD forward performs it and unwinds.
    let r = vp_enter(&lp, tdvpr, Regs::default());
    assert_eq!(r.rax, TDCALL_EXIT, "{r:x?}");
    assert_eq!(
        (r.r12, r.r15),
        (48, 0),
        "TDG.VP.INFO through the #UD forward"
    );

    // B: `out 0x80, al` is a #VE with exit reason 30 and the I/O qualification.
    let r = vp_enter(&lp, tdvpr, Regs::default());
    assert_eq!(r.rax, TDCALL_EXIT, "{r:x?}");
    assert_eq!(r.r12, 30, "VE_INFO exit reason: I/O instruction");
    assert_eq!(
        r.r13,
        (0x80 << 16) | (1 << 6),
        "1 byte, OUT, immediate port 0x80"
    );
    assert_eq!(r.r15 & 0xFFFF_FFFF, 2, "instruction length");

    // C: HLT is a #VE with exit reason 12.
    let r = vp_enter(&lp, tdvpr, answer(2));
    assert_eq!(r.rax, TDCALL_EXIT, "{r:x?}");
    assert_eq!(r.r12, 12, "VE_INFO exit reason: HLT");
    assert_eq!(r.r15 & 0xFFFF_FFFF, 1);

    // D: the guest writes and reads its shared page at GPA | bit 47; the VMM sees the data.
    let r = vp_enter(&lp, tdvpr, answer(1));
    assert_eq!(r.rax, TDCALL_EXIT, "{r:x?}");
    assert_eq!(r.r12, 0x5555_AAAA_5555_AAAA, "guest read back");
    let v: u64 = backing.read_obj(GuestAddress(SHARED_PAGE)).unwrap();
    assert_eq!(
        v, 0x5555_AAAA_5555_AAAA,
        "the VMM's backing holds the guest's write"
    );

    // E: a store, then a load, at a shared GPA without memory: #VE (EPT violation, GPA in
    // VE_INFO) with RIP on the instruction, skipped by the handler (3 bytes each).
    let r = vp_enter(&lp, tdvpr, Regs::default());
    assert_eq!(r.rax, TDCALL_EXIT, "{r:x?}");
    assert_eq!(r.r12, EPT_VIOLATION, "VE_INFO exit reason");
    assert_eq!(r.r14, SHARED_BIT | 0x70_0000, "VE_INFO GPA");
    assert_eq!(r.r13 & 3, 2, "qualification: write");
    let r = vp_enter(&lp, tdvpr, answer(3));
    assert_eq!(r.rax, TDCALL_EXIT, "{r:x?}");
    assert_eq!(r.r12, EPT_VIOLATION, "VE_INFO exit reason");
    assert_eq!(r.r14, SHARED_BIT | 0x70_0000, "VE_INFO GPA");
    assert_eq!(r.r13 & 3, 1, "qualification: read");

    // F: TDCALL at CPL 3 raises #UD, forwarded and turned into #GP(0) at the instruction.
    let r = vp_enter(&lp, tdvpr, answer(3));
    assert_eq!(r.rax, TDCALL_EXIT, "{r:x?}");
    assert_eq!(r.r12, 13, "#GP handler reached (6 would be a genuine #UD)");
    assert_eq!(r.r13, 0, "#GP error code");
    assert_eq!(r.r14, CODE + 0x8f, "#GP at the ring-3 TDCALL");
    assert_eq!(r.r15 & 3, 3, "from CPL 3");

    // G: a fault with no IDT: triple fault, reported as exit reason 2.
    let r = vp_enter(&lp, tdvpr, Regs::default());
    assert_eq!(r.rax, 2, "triple fault: {r:x?}");
    eng.release_td(tdr);
}

#[test]
fn sept_ve_disable_turns_a_pending_access_into_an_ept_violation_exit() {
    let (m, module) = platform();
    let Some(eng) = engine(&m) else { return };
    m.set_engine(eng.clone());
    let td = TdBuilder::new(&module)
        .max_vcpus(1)
        .attributes(1 << 28)
        .build()
        .unwrap();
    let vcpu = td.create_vcpu(0, 0).unwrap();
    for (gpa, bytes) in image() {
        td.add_page(Gpa(gpa), bytes.as_slice().try_into().unwrap(), true)
            .unwrap();
    }
    td.finalize().unwrap();
    eng.configure_td(
        Hpa(td.tdr()),
        &TdEngineConfig {
            entry: GuestEntry::Long64 {
                rip: CODE,
                cr3: PML4,
            },
            shared: None,
        },
    )
    .unwrap();
    let tdvpr = td.vcpu(vcpu).unwrap().tdvpr;
    let lp = m.lp(0).unwrap();
    for _ in 0..2 {
        let r = vp_enter(&lp, tdvpr, Regs::default());
        assert_eq!(r.rax, TDCALL_EXIT, "{r:x?}");
    }
    let r = vp_enter(&lp, tdvpr, Regs::default());
    assert_eq!(r.rax, EPT_VIOLATION, "{r:x?}");
    td.aug_page(0, Gpa(LAZY), 0).unwrap();
    let r = vp_enter(&lp, tdvpr, Regs::default());
    assert_eq!(r.rax, TDCALL_EXIT, "{r:x?}");
    td.aug_page(0, Gpa(PENDING), 0).unwrap();
    let r = vp_enter(&lp, tdvpr, Regs::default());
    assert_eq!(
        r.rax, EPT_VIOLATION,
        "pending access with SEPT_VE_DISABLE: {r:x?}"
    );
    assert_eq!(r.r8, PENDING);
    let r = vp_enter(&lp, tdvpr, Regs::default());
    assert_eq!(
        (r.rax, r.r8),
        (EPT_VIOLATION, PENDING),
        "the guest stays on the access"
    );
    eng.release_td(Hpa(td.tdr()));
}

#[test]
fn gpaw52_tds_are_refused_with_a_reason() {
    let (m, module) = platform();
    let Some(eng) = engine(&m) else { return };
    let td = TdBuilder::new(&module)
        .gpaw(tdx_abi::gpa::Gpaw::Gpaw52)
        .build()
        .unwrap();
    let err = eng
        .configure_td(Hpa(td.tdr()), &TdEngineConfig::default())
        .unwrap_err();
    assert!(err.to_string().contains("GPAW 52"), "{err}");
}

/// Third guest: a pending-page load whose #VE handler (at 0x1f) loads it again without
/// reading VE_INFO, so the second #VE becomes #DF; the #DF handler (at 0x27) reports.
const GUEST3: &[u8] = &[
    // start:
    0x0f, 0x01, 0x14, 0x25, 0x00, 0x51, 0x00, 0x00, // 0 lgdt ds:0x5100
    0x0f, 0x01, 0x1c, 0x25, 0x10, 0x51, 0x00, 0x00, // 8 lidt ds:0x5110
    0x48, 0xc7, 0xc4, 0x00, 0x80, 0x00, 0x00, // 10 mov rsp,0x8000
    0x48, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x50, 0x00, // 17 mov rax,QWORD PTR ds:0x500000
    // ve_handler:
    0x48, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x50, 0x00, // 1f mov rax,QWORD PTR ds:0x500000
    // df_handler:
    0x41, 0xbc, 0x08, 0x00, 0x00, 0x00, // 27 mov r12d,0x8
    0x4c, 0x8b, 0x2c, 0x24, // 2d mov r13,QWORD PTR [rsp]
    0x31, 0xc0, // 31 xor eax,eax
    0xb9, 0x00, 0xf0, 0x00, 0x00, // 33 mov ecx,0xf000
    0xe6, 0xdc, // 38 out 0xdc,al
    // spin:
    0xeb, 0xfe, // 3a jmp 3a <spin>
];

#[test]
fn a_ve_while_ve_info_is_valid_is_a_double_fault() {
    let (m, module) = platform();
    let Some(eng) = engine(&m) else { return };
    m.set_engine(eng.clone());
    let td = TdBuilder::new(&module).max_vcpus(1).build().unwrap();
    let vcpu = td.create_vcpu(0, 0).unwrap();
    for (gpa, bytes) in image_with(GUEST3, &[(20, 0x1f), (8, 0x27)]) {
        td.add_page(Gpa(gpa), bytes.as_slice().try_into().unwrap(), true)
            .unwrap();
    }
    td.finalize().unwrap();
    td.aug_page(0, Gpa(PENDING), 0).unwrap();
    eng.configure_td(
        Hpa(td.tdr()),
        &TdEngineConfig {
            entry: GuestEntry::Long64 {
                rip: CODE,
                cr3: PML4,
            },
            shared: None,
        },
    )
    .unwrap();
    let tdvpr = td.vcpu(vcpu).unwrap().tdvpr;
    let r = vp_enter(&m.lp(0).unwrap(), tdvpr, Regs::default());
    assert_eq!(r.rax, TDCALL_EXIT, "{r:x?}");
    assert_eq!((r.r12, r.r13), (8, 0), "#DF with error code 0");
    eng.release_td(Hpa(td.tdr()));
}

#[test]
fn reset_vector_entry_starts_at_0xfffffff0_with_the_tdx_initial_gprs() {
    let (m, module) = platform();
    let Some(eng) = engine(&m) else { return };
    m.set_engine(eng.clone());
    let td = TdBuilder::new(&module).max_vcpus(1).build().unwrap();
    // VP.INIT's RCX doubles as the VMCALL's GPR mask: RDX, RBX, RSI (bits 2, 3, 6).
    let vcpu = td.create_vcpu(0, 0x4C).unwrap();
    let mut top = page();
    // 0xFFFFFFF0: out 0xdc, al (32-bit protected mode, EAX = 0: TDG.VP.VMCALL).
    top[0xFF0..0xFF2].copy_from_slice(&[0xE6, 0xDC]);
    td.add_page(Gpa(0xFFFF_F000), top.as_slice().try_into().unwrap(), true)
        .unwrap();
    td.finalize().unwrap();
    eng.configure_td(Hpa(td.tdr()), &TdEngineConfig::default())
        .unwrap();
    let tdvpr = td.vcpu(vcpu).unwrap().tdvpr;
    let r = vp_enter(&m.lp(0).unwrap(), tdvpr, Regs::default());
    assert_eq!(r.rax, TDCALL_EXIT, "{r:x?}");
    assert_eq!(r.rcx, 0x4C, "the mask is VP.INIT's RCX");
    assert_eq!(r.rbx, 48, "RBX = GPAW");
    assert_eq!(r.rsi, 0, "RSI = vCPU index");
    assert_ne!(r.rdx, 0, "RDX = CPUID(1).EAX");
    eng.release_td(Hpa(td.tdr()));
}

/// Fourth guest, for the backend: ACCEPT 0x400000 (the backend AUGs it lazily), then
/// TDVMCALL<Instruction.IO> writing 'A' + the ACCEPT status to port 0x3F8, then a triple
/// fault (null IDT, `ud2`).
const GUEST4: &[u8] = &[
    0xb9, 0x00, 0x00, 0x40, 0x00, // 00 mov ecx, 0x400000
    0xb8, 0x06, 0x00, 0x00, 0x00, // 05 mov eax, 6 (TDG.MEM.PAGE.ACCEPT)
    0xe6, 0xdc, //                   0a out 0xdc, al
    0x41, 0xbf, 0x41, 0x00, 0x00, 0x00, // 0c mov r15d, 'A'
    0x49, 0x01, 0xc7, //             12 add r15, rax
    0x45, 0x31, 0xd2, //             15 xor r10d, r10d (GHCI standard)
    0x41, 0xbb, 0x1e, 0x00, 0x00, 0x00, // 18 mov r11d, 30 (Instruction.IO)
    0x41, 0xbc, 0x01, 0x00, 0x00, 0x00, // 1e mov r12d, 1 (size)
    0x41, 0xbd, 0x01, 0x00, 0x00, 0x00, // 24 mov r13d, 1 (write)
    0x41, 0xbe, 0xf8, 0x03, 0x00, 0x00, // 2a mov r14d, 0x3f8
    0x31, 0xc0, //                   30 xor eax, eax (TDG.VP.VMCALL)
    0xb9, 0x00, 0xfc, 0x00, 0x00, // 32 mov ecx, 0xfc00 (R10..R15)
    0xe6, 0xdc, //                   37 out 0xdc, al
    0x8a, 0x04, 0x25, 0x00, 0x00, 0x40, 0x00, // 39 mov al, [0x400000]
    0x0f, 0x01, 0x1c, 0x25, 0x20, 0x51, 0x00, 0x00, // 40 lidt [0x5120] (limit 0)
    0x0f, 0x0b, //                   48 ud2
];

#[test]
fn the_emulated_backend_runs_guest_code_with_the_kvm_engine() {
    use tdx_host::backend::emulated::{EmulatedBackend, EmulatedBackendConfig, EngineChoice};
    use tdx_host::backend::{TdExit, TdVcpu, TdVm, TdVmConfig, TdxBackend};
    use tdx_memory::{AttributeMap, SharedGuestMemory};
    use vm_memory::{GuestAddress, GuestMemoryMmap};
    {
        let (m, _) = platform();
        if engine(&m).is_none() {
            return;
        }
    }
    let backend = EmulatedBackend::new(EmulatedBackendConfig {
        engine: EngineChoice::Kvm,
        ..EmulatedBackendConfig::default()
    })
    .unwrap();
    let config = TdVmConfig {
        entry: GuestEntry::Long64 {
            rip: CODE,
            cr3: PML4,
        },
        ..TdVmConfig::default()
    };
    let vm = backend.create_vm(&config).unwrap();
    let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap();
    let mem = SharedGuestMemory::new(Arc::new(AttributeMap::new(config.gpaw)), ram).unwrap();
    vm.set_memory(&mem).unwrap();
    let mut vcpu = vm.create_vcpu(0, 0).unwrap();
    for (gpa, bytes) in image_with(GUEST4, &[]) {
        vm.add_initial_pages(gpa, &bytes, true).unwrap();
    }
    vm.finalize().unwrap();
    match vcpu.run().unwrap() {
        TdExit::IoOut { port, data } => {
            assert_eq!(port, 0x3F8);
            assert_eq!(data, b"A", "'A' + ACCEPT status 0");
        }
        other => panic!("expected the serial write, got {other:?}"),
    }
    match vcpu.run().unwrap() {
        TdExit::Shutdown => {}
        other => panic!("expected the triple fault, got {other:?}"),
    }
}

/// The module-side engine API, without KVM: guest TDCALLs that complete or become exits,
/// and the S-EPT mirror API with its generation.
#[test]
fn guest_tdcall_and_sept_mappings_api() {
    use tdx_host::emulated::{EngineExit, GuestTdcall};
    let (m, module) = platform();
    let td = TdBuilder::new(&module).max_vcpus(1).build().unwrap();
    let vcpu = td.create_vcpu(0, 0).unwrap();
    td.add_page(Gpa(0x1000), &[7u8; 4096], true).unwrap();
    td.finalize().unwrap();
    let tdr = Hpa(td.tdr());
    let tdvpr = Hpa(td.vcpu(vcpu).unwrap().tdvpr);

    let mut r = Regs {
        rax: 1,
        ..Regs::default()
    };
    assert!(matches!(m.guest_tdcall(tdvpr, &mut r), GuestTdcall::Done(s) if s.raw() == 0));
    assert_eq!((r.rax, r.rcx, r.r9), (0, 48, 0), "TDG.VP.INFO outputs");

    let mut r = Regs {
        rax: 0,
        rcx: 0xFC00,
        r11: 30,
        ..Regs::default()
    };
    assert_eq!(
        m.guest_tdcall(tdvpr, &mut r),
        GuestTdcall::Exit(EngineExit::Vmcall { mask: 0xFC00 })
    );

    let g0 = m.sept_generation(tdr).unwrap();
    let maps = m.sept_mappings(tdr).unwrap();
    assert_eq!(maps.generation, g0);
    assert_eq!(maps.pages.len(), 1);
    assert_eq!(maps.pages[0].0, 0x1000);
    assert_eq!(maps.pages[0].2, 4096);

    let mut r = Regs {
        rax: 6,
        rcx: LAZY,
        ..Regs::default()
    };
    match m.guest_tdcall(tdvpr, &mut r) {
        GuestTdcall::Exit(EngineExit::Async {
            exit_reason,
            ext_exit_qualification,
            gpa,
            ..
        }) => {
            assert_eq!((exit_reason, gpa), (48, LAZY));
            assert_eq!(ext_exit_qualification & 0xF, 1, "ACCEPT type");
        }
        other => panic!("{other:?}"),
    }
    td.aug_page(0, Gpa(LAZY), 0).unwrap();
    assert_ne!(m.sept_generation(tdr), Some(g0), "AUG changed the S-EPT");
    assert_eq!(
        m.sept_mappings(tdr).unwrap().pages.len(),
        1,
        "a pending page is not mapped"
    );
    let mut r = Regs {
        rax: 6,
        rcx: LAZY,
        ..Regs::default()
    };
    assert!(matches!(m.guest_tdcall(tdvpr, &mut r), GuestTdcall::Done(s) if s.raw() == 0));
    let pages = m.sept_mappings(tdr).unwrap().pages;
    assert_eq!(pages.len(), 2, "accepted: mapped");
    assert_eq!(pages[1].0, LAZY);
}

/// Fifth guest: a genuine `#UD` (`ud2`); the handler's `out 0xdd, al` forward finds no
/// TDCALL at the frame's RIP and the handler goes on to report the vector and RIP.
const GUEST5: &[u8] = &[
    0x0f, 0x01, 0x14, 0x25, 0x00, 0x51, 0x00, 0x00, // 00 lgdt [0x5100]
    0x0f, 0x01, 0x1c, 0x25, 0x10, 0x51, 0x00, 0x00, // 08 lidt [0x5110]
    0x48, 0xc7, 0xc4, 0x00, 0x80, 0x00, 0x00, //       10 mov rsp, 0x8000
    0x0f, 0x0b, //                                     17 ud2
    // #UD handler (0x19).
    0xe6, 0xdd, //                   19 out 0xdd, al (#UD forward)
    0x41, 0xbc, 0x06, 0x00, 0x00, 0x00, // 1b mov r12d, 6
    0x4c, 0x8b, 0x2c, 0x24, //       21 mov r13, [rsp] (faulting RIP)
    0x31, 0xc0, //                   25 xor eax, eax
    0xb9, 0x00, 0xf0, 0x00, 0x00, // 27 mov ecx, 0xf000
    0xe6, 0xdc, //                   2c out 0xdc, al
    0xeb, 0xfe, //                   2e spin: jmp spin
];

#[test]
fn a_genuine_ud_passes_through_the_forward_to_the_guest_handler() {
    let (m, module) = platform();
    let Some(eng) = engine(&m) else { return };
    m.set_engine(eng.clone());
    let td = TdBuilder::new(&module).max_vcpus(1).build().unwrap();
    let vcpu = td.create_vcpu(0, 0).unwrap();
    for (gpa, bytes) in image_with(GUEST5, &[(6, 0x19)]) {
        td.add_page(Gpa(gpa), bytes.as_slice().try_into().unwrap(), true)
            .unwrap();
    }
    td.finalize().unwrap();
    eng.configure_td(
        Hpa(td.tdr()),
        &TdEngineConfig {
            entry: GuestEntry::Long64 {
                rip: CODE,
                cr3: PML4,
            },
            shared: None,
        },
    )
    .unwrap();
    let tdvpr = td.vcpu(vcpu).unwrap().tdvpr;
    let r = vp_enter(&m.lp(0).unwrap(), tdvpr, Regs::default());
    assert_eq!(r.rax, TDCALL_EXIT, "{r:x?}");
    assert_eq!(
        (r.r12, r.r13),
        (6, CODE + 0x17),
        "#UD at the ud2, handled by the guest"
    );
    eng.release_td(Hpa(td.tdr()));
}

#[test]
fn an_instruction_fetch_from_a_hole_is_an_ept_violation() {
    let (m, module) = platform();
    let Some(eng) = engine(&m) else { return };
    m.set_engine(eng.clone());
    let td = TdBuilder::new(&module).max_vcpus(1).build().unwrap();
    let vcpu = td.create_vcpu(0, 0).unwrap();
    // mov eax, 0x400000 ; jmp rax
    let code = [0xb8, 0x00, 0x00, 0x40, 0x00, 0xff, 0xe0];
    for (gpa, bytes) in image_with(&code, &[]) {
        td.add_page(Gpa(gpa), bytes.as_slice().try_into().unwrap(), true)
            .unwrap();
    }
    td.finalize().unwrap();
    eng.configure_td(
        Hpa(td.tdr()),
        &TdEngineConfig {
            entry: GuestEntry::Long64 {
                rip: CODE,
                cr3: PML4,
            },
            shared: None,
        },
    )
    .unwrap();
    let tdvpr = td.vcpu(vcpu).unwrap().tdvpr;
    let lp = m.lp(0).unwrap();
    let r = vp_enter(&lp, tdvpr, Regs::default());
    assert_eq!((r.rax, r.r8), (EPT_VIOLATION, LAZY), "{r:x?}");
    assert_eq!(r.rcx & 7, 4, "qualification: instruction fetch");
    // AUGed but not accepted: the fetch is a #VE, which the IDT-less guest cannot take.
    td.aug_page(0, Gpa(LAZY), 0).unwrap();
    let r = vp_enter(&lp, tdvpr, Regs::default());
    assert_eq!(r.rax, 2, "#VE without an IDT: triple fault: {r:x?}");
    eng.release_td(Hpa(td.tdr()));
}
