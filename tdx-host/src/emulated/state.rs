//! The module's global state: platform, KOT, PAMT, TDs, vCPUs and SEPT pages, and the common
//! checks leaves share (`helpers.c` of the module).

use std::collections::{BTreeMap, HashMap, HashSet};

use tdx_abi::call::Regs;
use tdx_abi::measure::MrtdBuilder;

use super::abi_shim::*;
use super::arena::Arena;
use super::sept;

/// PAMT page type (tdx-module-abi.md §7.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PamtPageType {
    /// PT_NDA (0): free.
    Nda = 0,
    /// PT_RSVD (1): TDMR reserved area or PAMT.
    Rsvd = 1,
    /// PT_REG (3): TD private data page.
    Reg = 3,
    /// PT_TDR (4).
    Tdr = 4,
    /// PT_TDCX (5): TDCS page or TDVPS page other than the TDVPR.
    Tdcx = 5,
    /// PT_TDVPR (6).
    Tdvpr = 6,
    /// PT_EPT (8): Secure-EPT page.
    Ept = 8,
}

/// Key Ownership Table state of one HKID (tdx-module-abi.md §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum KotState {
    /// FREE (0).
    Free = 0,
    /// ASSIGNED (1) to a TD by TDH.MNG.CREATE.
    Assigned = 1,
    /// FLUSHED (2) by TDH.MNG.VPFLUSHDONE, waiting for TDH.PHYMEM.CACHE.WB.
    Flushed = 2,
    /// RESERVED (3): the global private HKID of TDH.SYS.CONFIG.
    Reserved = 3,
}

impl From<PamtPageType> for tdx_abi::state::PamtPageType {
    /// The architectural (open) value of a page type the emulator tracks.
    fn from(t: PamtPageType) -> Self {
        tdx_abi::state::PamtPageType::from_raw(t as u64)
    }
}

impl From<KotState> for tdx_abi::state::KotState {
    /// The architectural (open) value of a KOT state the emulator tracks.
    fn from(s: KotState) -> Self {
        tdx_abi::state::KotState::from_raw(s as u8)
    }
}

#[cfg(test)]
mod abi_agreement {
    use super::{KotState, PamtPageType};
    use tdx_abi::state as abi;

    #[test]
    fn emulator_states_have_the_architectural_values() {
        let pt: [(PamtPageType, abi::PamtPageType); 7] = [
            (PamtPageType::Nda, abi::PamtPageType::PT_NDA),
            (PamtPageType::Rsvd, abi::PamtPageType::PT_RSVD),
            (PamtPageType::Reg, abi::PamtPageType::PT_REG),
            (PamtPageType::Tdr, abi::PamtPageType::PT_TDR),
            (PamtPageType::Tdcx, abi::PamtPageType::PT_TDCX),
            (PamtPageType::Tdvpr, abi::PamtPageType::PT_TDVPR),
            (PamtPageType::Ept, abi::PamtPageType::PT_EPT),
        ];
        for (e, a) in pt {
            assert_eq!(abi::PamtPageType::from(e), a);
        }
        let kot: [(KotState, abi::KotState); 4] = [
            (KotState::Free, abi::KotState::FREE),
            (KotState::Assigned, abi::KotState::ASSIGNED),
            (KotState::Flushed, abi::KotState::FLUSHED),
            (KotState::Reserved, abi::KotState::RESERVED),
        ];
        for (e, a) in kot {
            assert_eq!(abi::KotState::from(e), a);
        }
    }
}

/// Platform state (`sysinit_state_e`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SysState {
    SysinitPending = 0,
    SysinitDone = 1,
    SysconfigDone = 2,
    SysReady = 3,
}

/// TD lifecycle (tdx-module-abi.md §7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    HkidAssigned = 0,
    KeysConfigured = 1,
    Blocked = 2,
    Teardown = 3,
}

/// OP_STATE values used by a non-migrating TD (§7.3).
pub(crate) const OP_UNINITIALIZED: u8 = 0;
pub(crate) const OP_INITIALIZED: u8 = 1;
pub(crate) const OP_RUNNABLE: u8 = 2;

/// vCPU states (§7.4).
pub(crate) const VCPU_UNINITIALIZED: u8 = 0x0;
pub(crate) const VCPU_READY: u8 = 0x2;
pub(crate) const VCPU_ACTIVE: u8 = 0x4;

/// TDCS pages (`TDCS_BASE_SIZE / 4096`) and the maximum with L2 VMs.
pub(crate) const MIN_TDCS_PAGES: usize = 6;
pub(crate) const MAX_TDCS_PAGES: usize = 9;
/// TDVPS pages (TDVPR + 5 TDCX).
pub(crate) const TDVPS_PAGES: usize = 6;
/// Index of the SEPT root among the TDCS pages (§5.17).
pub(crate) const TDCS_SEPT_ROOT_PAGE: usize = 3;

/// One PAMT entry (module-internal; kept in a sparse map, absent = NDA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PamtEntry {
    pub(crate) ty: PamtPageType,
    /// Owner TDR PA (0 for a TDR or a free page).
    pub(crate) owner: u64,
    /// TD epoch at blocking time.
    pub(crate) bepoch: u64,
    /// Page size of the mapping this 4 KiB frame belongs to (0 = 4K, 1 = 2M).
    pub(crate) level: u8,
    /// First frame of that mapping.
    pub(crate) head: u64,
}

/// One TDMR as accepted by TDH.SYS.CONFIG.
#[derive(Clone, Debug)]
pub(crate) struct Tdmr {
    pub(crate) base: u64,
    pub(crate) size: u64,
    /// Absolute [start, end) ranges that are PT_RSVD: reserved areas and PAMT blocks.
    pub(crate) reserved: Vec<(u64, u64)>,
    /// First PA not yet initialised by TDH.SYS.TDMR.INIT.
    pub(crate) init_upto: u64,
}

/// TD configuration from TD_PARAMS.
#[derive(Clone, Debug)]
pub(crate) struct TdConfig {
    pub(crate) attributes: u64,
    pub(crate) xfam: u64,
    pub(crate) max_vcpus: u16,
    pub(crate) eptp_controls: u64,
    pub(crate) config_flags: u64,
    pub(crate) tsc_frequency: u16,
    pub(crate) mrconfigid: [u8; 48],
    pub(crate) mrowner: [u8; 48],
    pub(crate) mrownerconfig: [u8; 48],
}

impl Default for TdConfig {
    fn default() -> Self {
        TdConfig {
            attributes: 0,
            xfam: 0,
            max_vcpus: 0,
            eptp_controls: 6 | (3 << 3),
            config_flags: 0,
            tsc_frequency: 0,
            mrconfigid: [0; 48],
            mrowner: [0; 48],
            mrownerconfig: [0; 48],
        }
    }
}

impl TdConfig {
    /// True for GPAW 52 (CONFIG_FLAGS bit 0).
    pub(crate) fn gpaw52(&self) -> bool {
        self.config_flags & 1 != 0
    }
    /// GPA width in bits.
    pub(crate) fn gpaw_bits(&self) -> u32 {
        if self.gpaw52() {
            52
        } else {
            48
        }
    }
    /// Page-walk levels of the SEPT (4 or 5).
    pub(crate) fn pwl(&self) -> u8 {
        (((self.eptp_controls >> 3) & 7) + 1) as u8
    }
}

/// A TD: TDR and TDCS contents.
pub(crate) struct Td {
    pub(crate) hkid: u16,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) fatal: bool,
    pub(crate) pkg_config_bitmap: u64,
    pub(crate) tdcx: Vec<u64>,
    pub(crate) chldcnt: u64,
    pub(crate) op_state: u8,
    pub(crate) cfg: TdConfig,
    pub(crate) mrtd_builder: Option<MrtdBuilder>,
    pub(crate) mrtd: [u8; 48],
    pub(crate) rtmr: [[u8; 48]; 4],
    pub(crate) num_vcpus: u32,
    pub(crate) num_assoc_vcpus: u32,
    pub(crate) epoch: u64,
    /// Running vCPUs per epoch parity (`refcount[epoch & 1]`).
    pub(crate) refcount: [u64; 2],
    pub(crate) notify_enables: u64,
    pub(crate) td_ctls: u64,
}

impl Td {
    pub(crate) fn new(hkid: u16) -> Self {
        Td {
            hkid,
            lifecycle: Lifecycle::HkidAssigned,
            fatal: false,
            pkg_config_bitmap: 0,
            tdcx: Vec::new(),
            chldcnt: 0,
            op_state: OP_UNINITIALIZED,
            cfg: TdConfig::default(),
            mrtd_builder: None,
            mrtd: [0; 48],
            rtmr: [[0; 48]; 4],
            num_vcpus: 0,
            num_assoc_vcpus: 0,
            epoch: 1,
            refcount: [0; 2],
            notify_enables: 0,
            td_ctls: 0,
        }
    }

    /// The SEPT root page (TDCS page 3), once allocated.
    pub(crate) fn sept_root(&self) -> Option<u64> {
        self.tdcx.get(TDCS_SEPT_ROOT_PAGE).copied()
    }
}

/// #VE information (TDVPS VE_INFO, §5.7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct VeInfo {
    pub(crate) exit_reason: u32,
    pub(crate) valid: bool,
    pub(crate) exit_qualification: u64,
    pub(crate) gla: u64,
    pub(crate) gpa: u64,
    pub(crate) eptp_index: u16,
}

/// A vCPU: TDVPS contents.
pub(crate) struct Vcpu {
    pub(crate) tdr: u64,
    pub(crate) tdcx: Vec<u64>,
    pub(crate) state: u8,
    pub(crate) index: u32,
    pub(crate) assoc_lp: Option<u32>,
    /// True while TDH.VP.ENTER is in progress (the TD runs); the TDVPR and TDR are then held
    /// shared.
    pub(crate) running: bool,
    /// Epoch sampled at the last entry.
    pub(crate) entry_epoch: u64,
    pub(crate) gprs: Regs,
    pub(crate) ve_info: VeInfo,
}

/// The whole module state, behind one mutex (each leaf is atomic with respect to others;
/// long-held locks — a running vCPU — are modelled explicitly, see `held_shared`).
pub(crate) struct State {
    #[allow(dead_code)]
    pub(crate) num_lps: u32,
    pub(crate) lps_per_package: u32,
    pub(crate) num_packages: u32,
    pub(crate) first_tdx_hkid: u16,
    pub(crate) num_tdx_hkids: u16,
    /// First HKID bit in a PA (HKID bits are `hkid_shift..52`).
    pub(crate) hkid_shift: u32,
    pub(crate) cmrs: Vec<(u64, u64)>,
    pub(crate) sys_state: SysState,
    pub(crate) lp_init: Vec<bool>,
    pub(crate) pkg_key_config: Vec<bool>,
    pub(crate) global_hkid: Option<u16>,
    pub(crate) tdmrs: Vec<Tdmr>,
    /// Sparse PAMT keyed by PA >> 12; absent = PT_NDA (inside initialised, non-reserved TDMR
    /// memory).
    pub(crate) pamt: BTreeMap<u64, PamtEntry>,
    /// KOT indexed by HKID (all HKIDs below first+num; only the TDX range is used).
    pub(crate) kot: Vec<(KotState, u64)>,
    pub(crate) tds: HashMap<u64, Td>,
    pub(crate) vcpus: HashMap<u64, Vcpu>,
    /// SEPT pages (and the TDCS root page) by PA.
    pub(crate) sept_pages: HashMap<u64, Box<[u64; sept::ENTRIES]>>,
    /// Frames written by the host while TD-owned: the TD's next access is fatal.
    pub(crate) poisoned: HashSet<u64>,
    pub(crate) arena: std::sync::Arc<Arena>,
}

/// Result of a leaf body: `Ok(status)` for success-class completions, `Err(status)` for errors.
pub(crate) type LeafResult = Result<u64, u64>;

/// Error helper: the status with an operand id (or other low bits).
pub(crate) fn fail<T>(code: u32, low: u32) -> Result<T, u64> {
    Err(status(code, low))
}

impl State {
    /// Bitmap with one bit per package.
    pub(crate) fn all_packages(&self) -> u64 {
        if self.num_packages >= 64 {
            u64::MAX
        } else {
            (1u64 << self.num_packages) - 1
        }
    }

    /// The package of an LP.
    pub(crate) fn package_of(&self, lp: u32) -> u32 {
        lp / self.lps_per_package.max(1)
    }

    /// True if `hkid` is a TDX private HKID.
    pub(crate) fn is_private_hkid(&self, hkid: u64) -> bool {
        let first = u64::from(self.first_tdx_hkid);
        hkid >= first && hkid < first + u64::from(self.num_tdx_hkids)
    }

    /// The TDMR containing `pa`.
    pub(crate) fn tdmr_of(&self, pa: u64) -> Option<&Tdmr> {
        self.tdmrs
            .iter()
            .find(|t| pa >= t.base && pa - t.base < t.size)
    }

    /// The PAMT type of the 4 KiB frame at `pa`, `None` outside TDMRs or before its PAMT block
    /// is initialised.
    pub(crate) fn page_type(&self, pa: u64) -> Option<PamtPageType> {
        let t = self.tdmr_of(pa)?;
        if pa >= t.init_upto {
            return None;
        }
        if t.reserved.iter().any(|&(s, e)| pa >= s && pa < e) {
            return Some(PamtPageType::Rsvd);
        }
        Some(
            self.pamt
                .get(&(pa >> 12))
                .map_or(PamtPageType::Nda, |e| e.ty),
        )
    }

    /// The PAMT entry of a frame (an NDA entry if absent).
    pub(crate) fn pamt_entry(&self, pa: u64) -> PamtEntry {
        self.pamt.get(&(pa >> 12)).copied().unwrap_or(PamtEntry {
            ty: PamtPageType::Nda,
            owner: 0,
            bepoch: 0,
            level: 0,
            head: pa & !0xFFF,
        })
    }

    /// Sets the PAMT entry of the frame at `pa` (NDA removes it).
    pub(crate) fn set_pamt(&mut self, pa: u64, ty: PamtPageType, owner: u64, level: u8, head: u64) {
        if ty == PamtPageType::Nda {
            self.pamt.remove(&(pa >> 12));
        } else {
            self.pamt.insert(
                pa >> 12,
                PamtEntry {
                    ty,
                    owner,
                    bepoch: 0,
                    level,
                    head,
                },
            );
        }
    }

    /// True if the PAMT lock of the frame is held shared by a long-running operation (a vCPU in
    /// TDH.VP.ENTER holds its TDVPR and, implicitly, its TDR).
    pub(crate) fn held_shared(&self, pa: u64) -> bool {
        if let Some(v) = self.vcpus.get(&pa) {
            if v.running {
                return true;
            }
        }
        self.tds.contains_key(&pa) && self.vcpus.values().any(|v| v.running && v.tdr == pa)
    }

    /// Explicit page operand check (`check_and_lock_explicit_4k_private_hpa`): 4 KiB aligned,
    /// no HKID bits, inside an initialised TDMR, lock, then the expected PAMT type.
    pub(crate) fn check_page(
        &self,
        pa: u64,
        operand: u32,
        want: PamtPageType,
        exclusive: bool,
    ) -> Result<(), u64> {
        if pa & 0xFFF != 0 || pa >> self.hkid_shift != 0 {
            return fail(OPERAND_INVALID, operand);
        }
        let Some(ty) = self.page_type(pa) else {
            return fail(OPERAND_ADDR_RANGE_ERROR, operand);
        };
        if exclusive && self.held_shared(pa) {
            return fail(OPERAND_BUSY, operand);
        }
        if ty != want {
            return fail(PAGE_METADATA_INCORRECT, operand);
        }
        Ok(())
    }

    /// TDR operand check; returns the TDR PA.
    pub(crate) fn check_tdr(&self, pa: u64, operand: u32, exclusive: bool) -> Result<u64, u64> {
        self.check_page(pa, operand, PamtPageType::Tdr, exclusive)?;
        if !self.tds.contains_key(&pa) {
            return fail(PAGE_METADATA_INCORRECT, operand);
        }
        Ok(pa)
    }

    /// `check_td_in_correct_build_state` + OP_STATE check (§7.2, §7.3): not fatal,
    /// KEYS_CONFIGURED, TDCS allocated, OP_STATE in `allowed`.
    pub(crate) fn check_td_state(&self, tdr: u64, allowed: &[u8]) -> Result<(), u64> {
        let Some(td) = self.tds.get(&tdr) else {
            return fail(PAGE_METADATA_INCORRECT, OP_TDR);
        };
        if td.fatal {
            return fail(TD_FATAL, 0);
        }
        if td.lifecycle != Lifecycle::KeysConfigured {
            return fail(TD_KEYS_NOT_CONFIGURED, 0);
        }
        if td.tdcx.len() < MIN_TDCS_PAGES {
            return fail(TDCS_NOT_ALLOCATED, 0);
        }
        if !allowed.contains(&td.op_state) {
            return fail(OP_STATE_INCORRECT, 0);
        }
        Ok(())
    }

    /// The TD owning `tdr` (callers checked it exists).
    pub(crate) fn td(&self, tdr: u64) -> Result<&Td, u64> {
        self.tds
            .get(&tdr)
            .ok_or(status(PAGE_METADATA_INCORRECT, OP_TDR))
    }

    /// Mutable TD.
    pub(crate) fn td_mut(&mut self, tdr: u64) -> Result<&mut Td, u64> {
        self.tds
            .get_mut(&tdr)
            .ok_or(status(PAGE_METADATA_INCORRECT, OP_TDR))
    }

    /// TDVPR operand check (type TDVPR); returns the owner TDR.
    pub(crate) fn check_tdvpr(&self, pa: u64, operand: u32, exclusive: bool) -> Result<u64, u64> {
        self.check_page(pa, operand, PamtPageType::Tdvpr, exclusive)?;
        match self.vcpus.get(&pa) {
            Some(v) => Ok(v.tdr),
            None => fail(PAGE_METADATA_INCORRECT, operand),
        }
    }

    /// A source/parameter page the host owns ("shared HPA"): no HKID bits, inside the arena and
    /// not owned by a TD.
    pub(crate) fn check_shared_hpa(&self, pa: u64, len: u64, operand: u32) -> Result<(), u64> {
        if pa >> self.hkid_shift != 0 || pa.checked_add(len).is_none_or(|e| e > self.arena.size()) {
            return fail(OPERAND_INVALID, operand);
        }
        if matches!(
            self.page_type(pa),
            Some(t) if t != PamtPageType::Nda && t != PamtPageType::Rsvd
        ) {
            return fail(OPERAND_INVALID, operand);
        }
        Ok(())
    }
}
