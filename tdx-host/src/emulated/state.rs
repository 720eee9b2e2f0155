//! The module's objects (emulation-notes.md §3.3): platform state, LPs, KOT, TDMRs with their
//! PAMT, TDs (TDR + TDCS) and vCPUs (TDVPS), and the checks that several leaves share.

use std::collections::{BTreeMap, VecDeque};

use tdx_abi::call::Regs;
use tdx_abi::measure::{Measurement, MrtdBuilder};
use tdx_abi::status::TdxStatus;

use super::codes::{self, with_operand, OperandId, StatusCode};
use super::locks::{Held, LockKey, LockTable, Mode};
use super::phys::PhysicalMemory;
use super::sept::Sept;

/// Module state (`sysinit_state_e`, tdx-module-abi.md §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SysState {
    SysinitPending = 0,
    SysinitDone = 1,
    SysconfigDone = 2,
    SysReady = 3,
}

/// PAMT page types (§7.5), raw values.
pub(crate) mod pt {
    pub(crate) const NDA: u8 = 0;
    pub(crate) const RSVD: u8 = 1;
    pub(crate) const REG: u8 = 3;
    pub(crate) const TDR: u8 = 4;
    pub(crate) const TDCX: u8 = 5;
    pub(crate) const TDVPR: u8 = 6;
    pub(crate) const EPT: u8 = 8;
    /// Emulator-internal: a 4K entry of a TDMR whose PAMT block is not initialised yet.
    pub(crate) const UNINIT: u8 = 0xFF;
}

/// KOT entry states (§7.1).
pub(crate) mod kot {
    pub(crate) const FREE: u8 = 0;
    pub(crate) const ASSIGNED: u8 = 1;
    pub(crate) const FLUSHED: u8 = 2;
    pub(crate) const RESERVED: u8 = 3;
}

/// TD lifecycle states (§7.2).
pub(crate) mod lc {
    pub(crate) const HKID_ASSIGNED: u8 = 0;
    pub(crate) const KEYS_CONFIGURED: u8 = 1;
    pub(crate) const BLOCKED: u8 = 2;
    pub(crate) const TEARDOWN: u8 = 3;
}

/// OP_STATE values (§7.3).
pub(crate) mod ops {
    pub(crate) const UNINITIALIZED: u8 = 0;
    pub(crate) const INITIALIZED: u8 = 1;
    pub(crate) const RUNNABLE: u8 = 2;
}

/// vCPU states (§7.4).
pub(crate) mod vs {
    pub(crate) const UNINITIALIZED: u8 = 0x0;
    pub(crate) const READY: u8 = 0x2;
    pub(crate) const ACTIVE: u8 = 0x4;
}

/// One PAMT entry (4 KiB granularity; a 2 MiB page marks its 512 entries with size 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PamtEntry {
    pub(crate) ty: u8,
    /// 0 = 4K, 1 = 2M.
    pub(crate) size: u8,
    /// Owner TDR PA (0 for TDR pages and free pages).
    pub(crate) owner: u64,
    pub(crate) bepoch: u64,
}

impl PamtEntry {
    pub(crate) const UNINIT_PUBLIC: PamtEntry = PamtEntry {
        ty: pt::UNINIT,
        size: 0,
        owner: 0,
        bepoch: 0,
    };
}

/// A configured TDMR and its PAMT.
#[derive(Debug)]
pub(crate) struct Tdmr {
    pub(crate) base: u64,
    pub(crate) size: u64,
    /// Reserved areas (absolute base, size).
    pub(crate) reserved: Vec<(u64, u64)>,
    /// Bytes from `base` whose PAMT is initialised (TDH.SYS.TDMR.INIT progress).
    pub(crate) initialized: u64,
    pub(crate) pamt: Vec<PamtEntry>,
}

/// One HKID in the key ownership table.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KotEntry {
    pub(crate) state: u8,
    /// Packages that still need TDH.PHYMEM.CACHE.WB for this HKID.
    pub(crate) wbinvd_pending: u64,
}

/// A TD exit the scripted engine queued for the next TDH.VP.ENTER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PendingExit {
    /// TDG.VP.VMCALL: the guest's registers and the GPR select mask.
    Vmcall { regs: Regs, mask: u64 },
    /// Asynchronous exit: VMX exit reason, qualification, extended qualification, GPA.
    Async {
        reason: u32,
        qual: u64,
        ext_qual: u64,
        gpa: u64,
    },
}

/// LAST_TD_EXIT of a vCPU (§7.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum LastExit {
    #[default]
    AsyncFault,
    AsyncTrap,
    TdVmCall,
}

/// TDVPS.
#[derive(Debug)]
pub(crate) struct Vcpu {
    /// PEND_NMI: the host asked for an NMI to be injected at the next entry.
    pub(crate) pend_nmi: bool,
    pub(crate) last_exit: LastExit,
    pub(crate) tdr: u64,
    pub(crate) tdcx: Vec<u64>,
    pub(crate) state: u8,
    pub(crate) assoc_lp: Option<u32>,
    pub(crate) index: u32,
    /// Guest GPRs (architectural order RAX..R15, RSP slot unused).
    pub(crate) gprs: [u64; 16],
    pub(crate) ve_info: VeInfoState,
    pub(crate) exits: VecDeque<PendingExit>,
    /// Mask of the TDG.VP.VMCALL the host is answering with the next VP.ENTER.
    pub(crate) vmcall_in_progress: Option<u64>,
    /// The host's answer to the last TDG.VP.VMCALL (set by VP.ENTER).
    pub(crate) vmcall_response: Option<Regs>,
    /// Epoch sampled by the last VP.ENTER.
    pub(crate) epoch: u64,
    pub(crate) vp_enter_count: u64,
}

/// VE_INFO of a vCPU (tdx-module-abi.md §5.7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct VeInfoState {
    pub(crate) valid: bool,
    pub(crate) exit_reason: u32,
    pub(crate) exit_qualification: u64,
    pub(crate) gla: u64,
    pub(crate) gpa: u64,
    pub(crate) eptp_index: u16,
    pub(crate) instruction_length: u32,
    pub(crate) instruction_info: u32,
}

/// TD-scope configuration stored by TDH.MNG.INIT.
#[derive(Clone, Debug, Default)]
pub(crate) struct TdConfig {
    pub(crate) attributes: u64,
    pub(crate) xfam: u64,
    pub(crate) max_vcpus: u16,
    pub(crate) eptp_controls: u64,
    pub(crate) config_flags: u64,
    pub(crate) tsc_frequency: u16,
    pub(crate) gpaw52: bool,
    pub(crate) mrconfigid: Measurement,
    pub(crate) mrowner: Measurement,
    pub(crate) mrownerconfig: Measurement,
    pub(crate) cpuid_values: Vec<[u32; 4]>,
}

/// TDR + TDCS of one TD.
#[derive(Debug)]
pub(crate) struct Td {
    // TDR
    pub(crate) fatal: bool,
    pub(crate) lifecycle: u8,
    pub(crate) hkid: u16,
    pub(crate) pkg_config_bitmap: u64,
    pub(crate) tdcx: Vec<u64>,
    pub(crate) chldcnt: u64,
    // TDCS
    pub(crate) op_state: u8,
    pub(crate) config: TdConfig,
    pub(crate) td_ctls: u64,
    pub(crate) notify_enables: u64,
    pub(crate) num_vcpus: u32,
    pub(crate) num_assoc_vcpus: u32,
    pub(crate) td_epoch: u64,
    pub(crate) refcount: [u64; 2],
    pub(crate) mrtd_builder: Option<MrtdBuilder>,
    pub(crate) mrtd: Measurement,
    pub(crate) rtmr: [Measurement; 4],
    pub(crate) sept: Sept,
}

impl Td {
    pub(crate) fn new(hkid: u16) -> Self {
        Td {
            fatal: false,
            lifecycle: lc::HKID_ASSIGNED,
            hkid,
            pkg_config_bitmap: 0,
            tdcx: Vec::new(),
            chldcnt: 0,
            op_state: ops::UNINITIALIZED,
            config: TdConfig::default(),
            td_ctls: 0,
            notify_enables: 0,
            num_vcpus: 0,
            num_assoc_vcpus: 0,
            td_epoch: 1,
            refcount: [0; 2],
            mrtd_builder: None,
            mrtd: Measurement::ZERO,
            rtmr: [Measurement::ZERO; 4],
            sept: Sept::default(),
        }
    }

    /// "Tracked" (`is_tlb_tracked`): the blocking epoch is older than the previous epoch, or is
    /// the previous epoch and no vCPU still runs in it.
    pub(crate) fn is_tracked(&self, bepoch: u64) -> bool {
        let prev = self.td_epoch.saturating_sub(1);
        bepoch < prev || (bepoch == prev && self.refcount[(prev & 1) as usize] == 0)
    }
}

/// Number of TDCS pages (`TDCS_BASE_SIZE / 4096`, 1.5.01).
pub(crate) const MIN_TDCX: usize = 6;
/// Number of TDVPS pages including TDVPR (`TDVPS_BASE_SIZE / 4096`).
pub(crate) const MIN_TDVPS_PAGES: usize = 6;
/// Maximum TDVPS pages.
pub(crate) const MAX_TDVPS_PAGES: usize = 15;

/// Everything the module keeps, guarded by one mutex in [`super::EmulatedModule`].
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) sys: SysState,
    pub(crate) lp_init: Vec<bool>,
    pub(crate) pkg_key_configured: Vec<bool>,
    pub(crate) tdmrs: Vec<Tdmr>,
    pub(crate) global_hkid: Option<u16>,
    pub(crate) kot: Vec<KotEntry>,
    pub(crate) tds: BTreeMap<u64, Td>,
    pub(crate) vcpus: BTreeMap<u64, Vcpu>,
    pub(crate) locks: LockTable,
}

/// Platform constants the state needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub(crate) first_hkid: u16,
    pub(crate) num_hkids: u16,
    /// First HKID bit of a physical address.
    pub(crate) hkid_shift: u32,
    pub(crate) num_packages: u32,
    pub(crate) lps_per_package: u32,
}

impl Geometry {
    /// True if `pa` has bits set at or above the HKID bits.
    pub(crate) fn has_hkid_bits(&self, pa: u64) -> bool {
        pa >> self.hkid_shift != 0
    }
    pub(crate) fn is_private_hkid(&self, hkid: u64) -> bool {
        hkid >= u64::from(self.first_hkid)
            && hkid < u64::from(self.first_hkid) + u64::from(self.num_hkids)
    }
    /// `shared_hpa_check_with_pwr_2_alignment`: aligned, below MAX_PA (2^52), HKID bits naming
    /// a shared (non-TDX) KeyID. Returns the PA without its HKID bits.
    pub(crate) fn shared_hpa(&self, pa: u64, align: u64) -> Option<u64> {
        let hkid_mask = ((1u64 << 52) - 1) & !((1u64 << self.hkid_shift) - 1);
        let hkid = (pa & hkid_mask) >> self.hkid_shift;
        (pa % align == 0 && pa >> 52 == 0 && hkid < u64::from(self.first_hkid))
            .then_some(pa & !hkid_mask)
    }

    /// Clears the HKID bits (`hkid_mask`) of a PA, keeping any bits above MAX_PA.
    pub(crate) fn strip_hkid(&self, pa: u64) -> u64 {
        pa & !(((1u64 << 52) - 1) & !((1u64 << self.hkid_shift) - 1))
    }

    pub(crate) fn all_packages(&self) -> u64 {
        if self.num_packages >= 64 {
            u64::MAX
        } else {
            (1u64 << self.num_packages) - 1
        }
    }
}

/// Where a page's PAMT entry lives: (TDMR index, entry index).
pub(crate) type PamtLoc = (usize, usize);

impl State {
    pub(crate) fn new(g: &Geometry) -> Self {
        let lps = (g.num_packages * g.lps_per_package) as usize;
        State {
            sys: SysState::SysinitPending,
            lp_init: vec![false; lps],
            pkg_key_configured: vec![false; g.num_packages as usize],
            tdmrs: Vec::new(),
            global_hkid: None,
            kot: vec![KotEntry::default(); g.num_hkids as usize],
            tds: BTreeMap::new(),
            vcpus: BTreeMap::new(),
            locks: LockTable::default(),
        }
    }

    /// PAMT location of a 4K-aligned PA, if inside an initialised part of a TDMR.
    pub(crate) fn pamt_loc(&self, pa: u64) -> Option<PamtLoc> {
        for (i, t) in self.tdmrs.iter().enumerate() {
            if pa >= t.base && pa - t.base < t.size {
                let off = pa - t.base;
                // TDH.SYS.TDMR.INIT makes memory usable 1 GiB block by block.
                if off >= t.initialized & !((1u64 << 30) - 1) {
                    return None;
                }
                return Some((i, (off / 4096) as usize));
            }
        }
        None
    }

    pub(crate) fn pamt(&self, loc: PamtLoc) -> &PamtEntry {
        &self.tdmrs[loc.0].pamt[loc.1]
    }

    pub(crate) fn pamt_mut(&mut self, loc: PamtLoc) -> &mut PamtEntry {
        &mut self.tdmrs[loc.0].pamt[loc.1]
    }

    /// The PAMT entry of `pa`, if any (introspection).
    pub(crate) fn pamt_of(&self, pa: u64) -> Option<PamtEntry> {
        self.pamt_loc(pa & !0xFFF).map(|l| *self.pamt(l))
    }

    /// Sets type/owner/size of `pages` consecutive entries from `pa` (all inside one TDMR,
    /// checked by the caller) and the TD-owner bits of physical memory.
    pub(crate) fn set_pages(
        &mut self,
        mem: &PhysicalMemory,
        pa: u64,
        pages: u64,
        ty: u8,
        owner: u64,
        size: u8,
    ) {
        for i in 0..pages {
            if let Some(loc) = self.pamt_loc(pa + i * 4096) {
                let e = self.pamt_mut(loc);
                e.ty = ty;
                e.owner = owner;
                e.size = size;
                e.bepoch = 0;
            }
        }
        let owned = matches!(ty, pt::REG | pt::TDR | pt::TDCX | pt::TDVPR | pt::EPT);
        mem.set_owned(pa, pages, owned);
    }

    /// The explicit-page checks of `check_and_lock_explicit_4k_private_hpa` and
    /// `check_lock_and_map_explicit_tdr`, in order: 4K aligned and no HKID bits
    /// (OPERAND_INVALID), inside an initialised TDMR (OPERAND_ADDR_RANGE_ERROR), PAMT lock
    /// (OPERAND_BUSY), page type (PAGE_METADATA_INCORRECT). All with `operand`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn lock_explicit_page(
        &mut self,
        g: &Geometry,
        held: &mut Held,
        pa: u64,
        operand: OperandId,
        mode: Mode,
        expected_type: u8,
    ) -> Result<PamtLoc, TdxStatus> {
        if pa & 0xFFF != 0 || g.has_hkid_bits(pa) {
            return codes::err(StatusCode::OPERAND_INVALID, operand);
        }
        let Some(loc) = self.pamt_loc(pa) else {
            return codes::err(StatusCode::OPERAND_ADDR_RANGE_ERROR, operand);
        };
        held.lock(&mut self.locks, LockKey::Page(pa), mode, operand)?;
        let e = self.pamt(loc);
        if e.ty != expected_type || (expected_type == pt::NDA && e.size != 0) {
            return codes::err(StatusCode::PAGE_METADATA_INCORRECT, operand);
        }
        Ok(loc)
    }

    /// Locks the TDR named by a register and returns its PA after the type check.
    pub(crate) fn lock_tdr(
        &mut self,
        g: &Geometry,
        held: &mut Held,
        tdr_pa: u64,
        operand: OperandId,
        mode: Mode,
    ) -> Result<u64, TdxStatus> {
        self.lock_explicit_page(g, held, tdr_pa, operand, mode, pt::TDR)?;
        if !self.tds.contains_key(&tdr_pa) {
            // A PAMT TDR entry without a TD: cannot happen; report as wrong metadata.
            return codes::err(StatusCode::PAGE_METADATA_INCORRECT, operand);
        }
        Ok(tdr_pa)
    }

    pub(crate) fn td(&self, tdr: u64) -> &Td {
        &self.tds[&tdr]
    }

    pub(crate) fn td_mut(&mut self, tdr: u64) -> &mut Td {
        self.tds.get_mut(&tdr).expect("TD present after lock_tdr")
    }

    /// `check_state_map_tdcs_and_lock` (§7.2/§7.3): fatal, lifecycle KEYS_CONFIGURED,
    /// TDCS allocated, then the OP_STATE lock and the leaf's legal OP_STATE set.
    pub(crate) fn check_td_state(
        &mut self,
        held: &mut Held,
        tdr: u64,
        op_lock: Option<Mode>,
        legal: &[u8],
    ) -> Result<(), TdxStatus> {
        let td = self.td(tdr);
        if td.fatal {
            return Err(codes::code(StatusCode::TD_FATAL));
        }
        if td.lifecycle != lc::KEYS_CONFIGURED {
            return Err(codes::code(StatusCode::TD_KEYS_NOT_CONFIGURED));
        }
        if td.tdcx.len() < MIN_TDCX {
            return Err(codes::code(StatusCode::TDCS_NOT_ALLOCATED));
        }
        if let Some(m) = op_lock {
            held.lock(
                &mut self.locks,
                LockKey::OpState(tdr),
                m,
                OperandId::OP_STATE,
            )?;
        }
        if !legal.contains(&self.td(tdr).op_state) {
            return Err(codes::code(StatusCode::OP_STATE_INCORRECT));
        }
        Ok(())
    }

    /// Adds `pages` to the owner TD's CHLDCNT.
    pub(crate) fn chld_add(&mut self, tdr: u64, pages: u64) {
        if let Some(td) = self.tds.get_mut(&tdr) {
            td.chldcnt = td.chldcnt.saturating_add(pages);
        }
    }

    /// Subtracts `pages` from the owner TD's CHLDCNT.
    pub(crate) fn chld_sub(&mut self, tdr: u64, pages: u64) {
        if let Some(td) = self.tds.get_mut(&tdr) {
            td.chldcnt = td.chldcnt.saturating_sub(pages);
        }
    }

    /// The KOT entry of `hkid`, if it is a private HKID.
    pub(crate) fn kot_mut(&mut self, g: &Geometry, hkid: u16) -> Option<&mut KotEntry> {
        if !g.is_private_hkid(u64::from(hkid)) {
            return None;
        }
        self.kot.get_mut(usize::from(hkid - g.first_hkid))
    }
}

/// Convenience for handlers: an `Err` status with an operand.
pub(crate) fn invalid(operand: OperandId) -> TdxStatus {
    with_operand(StatusCode::OPERAND_INVALID, operand)
}
