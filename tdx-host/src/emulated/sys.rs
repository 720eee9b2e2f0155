//! Platform leaves: TDH.SYS.INIT, LP.INIT, RD, RDALL, CONFIG, KEY.CONFIG, TDMR.INIT, and the
//! global (SYS-context) metadata of the emulated 1.5.01 module.

use tdx_abi::call::Regs;
use tdx_abi::metadata::{sys as S, MetadataFieldId, MetadataListWriter};
use tdx_abi::status::TdxStatus;
use tdx_abi::tdmr::{CmrInfoEntry, TdmrInfo};
use tdx_memory::tdmr::{validate, TdmrConstraints, TdmrValidationErrorKind};
use zerocopy::FromBytes;

use super::codes::{self, OperandId, StatusCode};
use super::state::{kot, pt, PamtEntry, State, SysState, Tdmr};
use super::{Ctx, EmulatedModule, LeafResult};

/// Number of 4K PAMT entries TDH.SYS.TDMR.INIT initialises per call
/// (`TDMR_4K_PAMT_INIT_COUNT`): 4 MiB of TDMR.
pub const TDMR_4K_PAMT_INIT_COUNT: u64 = 1024;

/// The configurable CPUID leaves of the emulated module (CPUID_CONFIG_LEAVES, the 1.5.01
/// order of tdx-module-abi.md §5.1): (leaf, subleaf; `u32::MAX` = no subleaf).
pub const CPUID_CONFIG_LEAVES: [(u32, u32); 12] = [
    (0x1, u32::MAX),
    (0x4, 0),
    (0x4, 1),
    (0x4, 2),
    (0x4, 3),
    (0x7, 0),
    (0x7, 1),
    (0xA, u32::MAX),
    (0x1C, u32::MAX),
    (0x8000_0008, u32::MAX),
    (0x7, 2),
    (0x23, 0),
];

/// Bits of each configurable leaf the VMM may set (CPUID_CONFIG_VALUES, EAX/EBX/ECX/EDX).
/// Emulator-defined masks (the real ones depend on the CPU): leaf 1 EAX (F/M/S) and the
/// feature words of leaf 7 are configurable, leaf 0xA (PMU) and 0x23 are not.
pub const CPUID_CONFIG_VALUES: [[u32; 4]; 12] = [
    [0x0FFF_3FFF, 0, 0x0000_0000, 0x0000_0000],
    [0xFFFF_C3FF, 0xFFFF_FFFF, 0xFFFF_FFFF, 0x0000_0007],
    [0xFFFF_C3FF, 0xFFFF_FFFF, 0xFFFF_FFFF, 0x0000_0007],
    [0xFFFF_C3FF, 0xFFFF_FFFF, 0xFFFF_FFFF, 0x0000_0007],
    [0xFFFF_C3FF, 0xFFFF_FFFF, 0xFFFF_FFFF, 0x0000_0007],
    [0, 0xFFFF_FFFF, 0xFFFF_FFFF, 0xFFFF_FFFF],
    [0, 0, 0, 0],
    [0, 0, 0, 0],
    [0, 0, 0, 0],
    [0x0000_FFFF, 0, 0, 0],
    [0, 0, 0, 0],
    [0, 0, 0, 0],
];

/// ATTRIBUTES_FIXED0 of 1.5.01: bits {0, 28, 29, 30, 63} may be 1.
pub const ATTRIBUTES_FIXED0: u64 = (1 << 0) | (1 << 28) | (1 << 29) | (1 << 30) | (1 << 63);
/// ATTRIBUTES_FIXED1: no bit must be 1.
pub const ATTRIBUTES_FIXED1: u64 = 0;
/// XFAM_FIXED0 of 1.5.01.
pub const XFAM_FIXED0: u64 = 0x6DBE7;
/// XFAM_FIXED1: x87 and SSE.
pub const XFAM_FIXED1: u64 = 0x3;
/// CONFIG_FLAGS_FIXED0: GPAW, FLEXIBLE_PENDING_VE, NO_RBP_MOD.
pub const CONFIG_FLAGS_FIXED0: u64 = 0x7;
/// MAX_VCPUS_PER_TD.
pub const MAX_VCPUS_PER_TD: u64 = 576;
/// TDX_FEATURES0 of the emulated module: only NO_RBP_MOD (bit 18) of the optional features.
pub const TDX_FEATURES0: u64 = 1 << 18;
/// Platform Family/Model/Stepping reported in PKG_FMS and used for CPUID(1).EAX = 0.
pub const PLATFORM_FMS: u32 = 0x000806F8;

/// Normalises a field ID for a single-element access: ELEMENT_SIZE_CODE, INC_SIZE,
/// WRITE_MASK_VALID and CONTEXT_CODE are ignored (§5.10). Returns None if LAST_ELEMENT /
/// LAST_FIELD or the reserved bits are set.
pub(crate) fn normalize_field_id(id: u64) -> Option<u64> {
    let reserved = (0xFF << 24) | (0xF << 34) | (0x1FF << 38) | (0x7 << 47) | (1 << 55) | (1 << 62);
    if id & reserved != 0 {
        return None;
    }
    Some(id & !((0x3 << 32) | (1 << 50) | (1 << 51) | (0x7 << 52)))
}

/// The global metadata: (field ID as listed in §5.11, value), in field-ID enumeration order.
pub(crate) fn sys_metadata(m: &EmulatedModule) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = vec![(S::NUM_PKGS.raw(), u64::from(m.geo.num_packages))];
    for p in 0..m.geo.num_packages.min(8) {
        v.push((S::PKG_FMS.raw() + u64::from(p), u64::from(PLATFORM_FMS)));
    }
    v.extend_from_slice(&[
        (S::VENDOR_ID.raw(), 0x8086),
        (S::BUILD_DATE.raw(), 20230920),
        (S::BUILD_NUM.raw(), 0x0215),
        (S::MINOR_VERSION.raw(), 5),
        (S::MAJOR_VERSION.raw(), 1),
        (S::UPDATE_VERSION.raw(), 1),
        (S::INTERNAL_VERSION.raw(), 0),
        (S::SYS_ATTRIBUTES.raw(), 0),
        (S::NUM_TDX_FEATURES.raw(), 1),
        (S::TDX_FEATURES0.raw(), TDX_FEATURES0),
    ]);
    let cmrs = m.mem.cmrs();
    v.push((S::NUM_CMRS.raw(), cmrs.len() as u64));
    for (i, c) in cmrs.iter().enumerate() {
        v.push((S::CMR_BASE.raw() + i as u64, c.0));
    }
    for (i, c) in cmrs.iter().enumerate() {
        v.push((S::CMR_SIZE.raw() + i as u64, c.1));
    }
    v.extend_from_slice(&[
        (S::MAX_TDMRS.raw(), 64),
        (S::MAX_RESERVED_PER_TDMR.raw(), 16),
        (S::PAMT_4K_ENTRY_SIZE.raw(), 16),
        (S::PAMT_2M_ENTRY_SIZE.raw(), 16),
        (S::PAMT_1G_ENTRY_SIZE.raw(), 16),
        (S::TDR_BASE_SIZE.raw(), 4096),
        (S::TDCS_BASE_SIZE.raw(), 6 * 4096),
        (S::TDCS_SIZE_PER_L2_VM.raw(), 4096),
        (S::TDVPS_BASE_SIZE.raw(), 6 * 4096),
        (S::TDVPS_SIZE_PER_L2_VM.raw(), 3 * 4096),
        (S::ATTRIBUTES_FIXED0.raw(), ATTRIBUTES_FIXED0),
        (S::ATTRIBUTES_FIXED1.raw(), ATTRIBUTES_FIXED1),
        (S::XFAM_FIXED0.raw(), XFAM_FIXED0),
        (S::XFAM_FIXED1.raw(), XFAM_FIXED1),
        (S::NUM_CPUID_CONFIG.raw(), CPUID_CONFIG_LEAVES.len() as u64),
        (S::CONFIG_FLAGS_FIXED0.raw(), CONFIG_FLAGS_FIXED0),
        (S::CONFIG_FLAGS_FIXED1.raw(), 0),
        (S::MAX_VCPUS_PER_TD.raw(), MAX_VCPUS_PER_TD),
    ]);
    for (i, (l, s)) in CPUID_CONFIG_LEAVES.iter().enumerate() {
        v.push((
            S::CPUID_CONFIG_LEAVES.raw() + i as u64,
            u64::from(*l) | (u64::from(*s) << 32),
        ));
    }
    for (i, c) in CPUID_CONFIG_VALUES.iter().enumerate() {
        let base = S::CPUID_CONFIG_VALUES.raw() + 2 * i as u64;
        v.push((base, u64::from(c[0]) | (u64::from(c[1]) << 32)));
        v.push((base + 1, u64::from(c[2]) | (u64::from(c[3]) << 32)));
    }
    v.push((S::IA32_ARCH_CAPABILITIES_CONFIG_MASK.raw(), 0));
    v.push((S::MAX_SERV_TDS.raw(), 1));
    v
}

fn lp_init_done(st: &State, ctx: &Ctx) -> bool {
    st.lp_init.get(ctx.lp as usize).copied().unwrap_or(false)
}

/// TDH.SYS.INIT (`tdh_sys_init.c`).
pub(crate) fn tdh_sys_init(
    _m: &EmulatedModule,
    _ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    if st.sys != SysState::SysinitPending {
        return Err(codes::code(StatusCode::SYS_INIT_NOT_PENDING));
    }
    if regs.rcx != 0 {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
    }
    st.sys = SysState::SysinitDone;
    Ok(TdxStatus::SUCCESS)
}

/// TDH.SYS.LP.INIT (`tdh_sys_lp_init.c`): once per LP, only in SYSINIT_DONE.
pub(crate) fn tdh_sys_lp_init(
    _m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    regs.rcx = 0;
    regs.rdx = 0;
    regs.r8 = 0;
    if st.sys != SysState::SysinitDone {
        return Err(codes::code(StatusCode::SYS_LP_INIT_NOT_PENDING));
    }
    let Some(done) = st.lp_init.get_mut(ctx.lp as usize) else {
        return Err(codes::code(StatusCode::SYS_LP_INIT_NOT_PENDING));
    };
    if *done {
        return Err(codes::code(StatusCode::SYS_LP_INIT_DONE));
    }
    *done = true;
    Ok(TdxStatus::SUCCESS)
}

/// TDH.SYS.RD (`tdh_sys_rd.c`): RDX = field ID → R8 = value, RDX = next field ID.
pub(crate) fn tdh_sys_rd(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    let field = regs.rdx;
    regs.rdx = u64::MAX;
    regs.r8 = 0;
    if st.sys == SysState::SysinitPending || !lp_init_done(st, ctx) {
        return Err(codes::code(StatusCode::SYS_LP_INIT_NOT_DONE));
    }
    let md = sys_metadata(m);
    // An all-ones ID (context bits ignored) asks for the first field.
    if field | (0x7 << 52) == u64::MAX {
        regs.rdx = md[0].0;
        return Ok(codes::code(StatusCode::METADATA_FIRST_FIELD_ID_IN_CONTEXT));
    }
    let Some(norm) = normalize_field_id(field) else {
        regs.rdx = u64::MAX;
        return Err(codes::code(StatusCode::METADATA_FIELD_ID_INCORRECT));
    };
    let Some(pos) = md
        .iter()
        .position(|(id, _)| normalize_field_id(*id) == Some(norm))
    else {
        regs.rdx = u64::MAX;
        return Err(codes::code(StatusCode::METADATA_FIELD_ID_INCORRECT));
    };
    regs.r8 = md[pos].1;
    regs.rdx = md.get(pos + 1).map_or(u64::MAX, |x| x.0);
    Ok(TdxStatus::SUCCESS)
}

/// TDH.SYS.RDALL (`tdh_sys_rdall.c`): RDX = 4K-aligned shared PA of a list buffer, R8 = first
/// field ID (-1 = from the first). Writes a metadata list with `tdx_abi`'s
/// [`MetadataListWriter`] (one sequence per field); R8 = next field ID (-1 when done,
/// `TDX_METADATA_LIST_OVERFLOW` when the 4 KiB buffer filled up first).
pub(crate) fn tdh_sys_rdall(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    if st.sys == SysState::SysinitPending || !lp_init_done(st, ctx) {
        return Err(codes::code(StatusCode::SYS_LP_INIT_NOT_DONE));
    }
    // The list buffer is a shared HPA (HKID bits may name a shared KeyID).
    let Some(pa) = m.geo.shared_hpa(regs.rdx, 4096) else {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RDX);
    };
    if pa.checked_add(4096).is_none_or(|e| e > m.mem.size()) {
        return codes::err(StatusCode::OPERAND_ADDR_RANGE_ERROR, OperandId::RDX);
    }
    let md = sys_metadata(m);
    let start = if regs.r8 | (0x7 << 52) == u64::MAX {
        0
    } else {
        let Some(norm) = normalize_field_id(regs.r8) else {
            return Err(codes::code(StatusCode::METADATA_FIELD_ID_INCORRECT));
        };
        match md
            .iter()
            .position(|(id, _)| normalize_field_id(*id) == Some(norm))
        {
            Some(p) => p,
            None => return Err(codes::code(StatusCode::METADATA_FIELD_ID_INCORRECT)),
        }
    };
    // md_dump_list: one sequence per field, each value at the field's element size.
    let mut buf = vec![0u8; 4096];
    let mut w = MetadataListWriter::new(&mut buf);
    let mut next = start;
    while let Some(&(id, v)) = md.get(next) {
        if w.push(MetadataFieldId::from_raw(id), &[v]).is_err() {
            break;
        }
        next += 1;
    }
    let len = w.finish();
    // Written with a shared key: over a TD-owned page this is a host write (it poisons it).
    if m.mem.write(pa, &buf[..len]).is_err() {
        return codes::err(StatusCode::OPERAND_ADDR_RANGE_ERROR, OperandId::RDX);
    }
    regs.r8 = md.get(next).map_or(u64::MAX, |x| x.0);
    if next < md.len() {
        // The list did not fit: METADATA_LIST_OVERFLOW with R8 = the next field to read.
        return Err(codes::code(StatusCode::METADATA_LIST_OVERFLOW));
    }
    Ok(TdxStatus::SUCCESS)
}

/// Maps a tdx-memory validation failure to the module's status.
fn validation_status(e: &tdx_memory::tdmr::TdmrValidationError) -> TdxStatus {
    if e.kind == TdmrValidationErrorKind::InvalidTdmrCount {
        return codes::with_operand(StatusCode::OPERAND_INVALID, OperandId::RDX);
    }
    TdxStatus::from_raw(e.status())
}

/// TDH.SYS.CONFIG (`tdh_sys_config.c`): RCX = PA of the TDMR_INFO pointer array, RDX = number
/// of TDMRs, R8 = global private HKID.
pub(crate) fn tdh_sys_config(
    m: &EmulatedModule,
    _ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    if st.sys != SysState::SysinitDone {
        return Err(codes::code(StatusCode::SYS_CONFIG_NOT_PENDING));
    }
    if st.lp_init.iter().any(|d| !d) {
        return Err(codes::code(StatusCode::SYS_CONFIG_NOT_PENDING));
    }
    let Some(arr) = m.geo.shared_hpa(regs.rcx, 512) else {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
    };
    let n = regs.rdx;
    if !(1..=64).contains(&n) {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RDX);
    }
    let hkid = regs.r8;
    if hkid >> 16 != 0 || !m.geo.is_private_hkid(hkid) {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::R8);
    }
    let mut tdmrs = Vec::with_capacity(n as usize);
    for i in 0..n {
        let Ok(entry_pa) = m.mem.raw_read_u64(arr + 8 * i) else {
            return codes::err(StatusCode::OPERAND_ADDR_RANGE_ERROR, OperandId::RCX);
        };
        let Some(entry_pa) = m.geo.shared_hpa(entry_pa, 512) else {
            return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
        };
        let mut raw = [0u8; core::mem::size_of::<TdmrInfo>()];
        if m.mem.raw_read(entry_pa, &mut raw).is_err() {
            return codes::err(StatusCode::OPERAND_ADDR_RANGE_ERROR, OperandId::RCX);
        }
        let Ok(info) = TdmrInfo::read_from_bytes(&raw) else {
            return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
        };
        tdmrs.push(info);
    }
    let cmrs: Vec<CmrInfoEntry> = m
        .mem
        .cmrs()
        .iter()
        .map(|&(b, s)| CmrInfoEntry {
            cmr_base: b,
            cmr_size: s,
        })
        .collect();
    let constraints = TdmrConstraints {
        max_pa_bits: m.geo.hkid_shift.min(52) as u8,
        ..TdmrConstraints::default()
    };
    if let Err(e) = validate(&tdmrs, &cmrs, &constraints) {
        return Err(validation_status(&e));
    }
    // Effects: TDMR table (PAMT allocated lazily, uninitialised), global HKID reserved.
    for t in &tdmrs {
        let pages = (t.tdmr_size / 4096) as usize;
        st.tdmrs.push(Tdmr {
            base: t.tdmr_base,
            size: t.tdmr_size,
            reserved: t
                .used_reserved_areas()
                .iter()
                .map(|r| (t.tdmr_base + r.offset, r.size))
                .collect(),
            initialized: 0,
            pamt: vec![PamtEntry::UNINIT_PUBLIC; pages],
        });
    }
    st.global_hkid = Some(hkid as u16);
    if let Some(k) = st.kot_mut(&m.geo, hkid as u16) {
        k.state = kot::RESERVED;
    }
    st.sys = SysState::SysconfigDone;
    Ok(TdxStatus::SUCCESS)
}

/// TDH.SYS.KEY.CONFIG (`tdh_sys_key_config.c`): once per package; after the last,
/// SYS_READY.
pub(crate) fn tdh_sys_key_config(
    _m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    _regs: &mut Regs,
) -> LeafResult {
    if st.sys != SysState::SysconfigDone {
        return Err(codes::code(StatusCode::SYS_KEY_CONFIG_NOT_PENDING));
    }
    let Some(done) = st.pkg_key_configured.get_mut(ctx.pkg as usize) else {
        return Err(codes::code(StatusCode::SYS_KEY_CONFIG_NOT_PENDING));
    };
    if *done {
        return Ok(codes::code(StatusCode::KEY_CONFIGURED));
    }
    *done = true;
    if st.pkg_key_configured.iter().all(|d| *d) {
        st.sys = SysState::SysReady;
    }
    Ok(TdxStatus::SUCCESS)
}

/// TDH.SYS.TDMR.INIT (`tdh_sys_tdmr_init.c`): RCX = TDMR base; initialises 1024 PAMT_4K
/// entries per call (reserved areas → PT_RSVD, the rest PT_NDA); RDX = next address to
/// initialise rounded down to 1 GiB (memory of a 1 GiB block is usable once it is complete).
pub(crate) fn tdh_sys_tdmr_init(
    m: &EmulatedModule,
    _ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    regs.rdx = 0;
    let base = regs.rcx;
    if base % (1 << 30) != 0 || m.geo.has_hkid_bits(base) {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
    }
    let Some(t) = st.tdmrs.iter_mut().find(|t| t.base == base) else {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
    };
    if t.initialized >= t.size {
        return Ok(codes::code(StatusCode::TDMR_ALREADY_INITIALIZED));
    }
    let first = (t.initialized / 4096) as usize;
    let last = (first + TDMR_4K_PAMT_INIT_COUNT as usize).min(t.pamt.len());
    for i in first..last {
        let pa = t.base + i as u64 * 4096;
        let rsvd = t.reserved.iter().any(|&(b, s)| pa >= b && pa - b < s);
        t.pamt[i] = PamtEntry {
            ty: if rsvd { pt::RSVD } else { pt::NDA },
            size: 0,
            owner: 0,
            bepoch: 0,
        };
    }
    t.initialized = t
        .initialized
        .saturating_add(TDMR_4K_PAMT_INIT_COUNT * 4096)
        .min(t.size);
    regs.rdx = (t.base + t.initialized) & !((1u64 << 30) - 1);
    Ok(TdxStatus::SUCCESS)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use tdx_abi::call::{Regs, Seamcall};
    use tdx_abi::tdmr::TdmrReservedArea;
    use zerocopy::IntoBytes;

    use super::*;
    use crate::emulated::{EmulatedModule, LogicalProcessor, PlatformConfig};

    pub(crate) fn call(lp: &LogicalProcessor, leaf: u64, f: impl FnOnce(&mut Regs)) -> (u64, Regs) {
        let mut r = Regs::with_leaf(leaf);
        f(&mut r);
        let s = lp.seamcall(&mut r);
        (s.raw(), r)
    }

    /// A 64 MiB platform with 2 packages x 1 LP; TDMR [0, 1 GiB) with the part above memory
    /// and the first 1 MiB reserved; PAMT at 60 MiB (inside a reserved hole).
    pub(crate) fn small_platform() -> Arc<EmulatedModule> {
        EmulatedModule::new(PlatformConfig {
            memory_size: 64 << 20,
            num_packages: 2,
            lps_per_package: 1,
            report_mac_key: [7; 32],
            ..PlatformConfig::default()
        })
        .unwrap()
    }

    /// Brings the platform up as Linux does; returns LP 0.
    pub(crate) fn bring_up(m: &Arc<EmulatedModule>) -> LogicalProcessor {
        let lp0 = m.lp(0).unwrap();
        assert_eq!(call(&lp0, 33, |_| {}).0, 0);
        for i in 0..m.num_lps() {
            assert_eq!(call(&m.lp(i).unwrap(), 35, |_| {}).0, 0);
        }
        let pamt_base = 56u64 << 20;
        let mut t = TdmrInfo {
            tdmr_base: 0,
            tdmr_size: 1 << 30,
            pamt_1g_base: pamt_base,
            pamt_1g_size: 4096,
            pamt_2m_base: pamt_base + 4096,
            pamt_2m_size: 8192,
            pamt_4k_base: pamt_base + 3 * 4096,
            pamt_4k_size: 4 << 20,
            ..TdmrInfo::default()
        };
        t.reserved_areas[0] = TdmrReservedArea {
            offset: 0,
            size: 1 << 20,
        };
        t.reserved_areas[1] = TdmrReservedArea {
            offset: pamt_base,
            size: (1 << 30) - pamt_base,
        };
        let info_pa = 0x20_0000u64;
        let arr_pa = 0x1F_F000u64;
        m.physical_memory().write(info_pa, t.as_bytes()).unwrap();
        m.physical_memory()
            .write(arr_pa, &info_pa.to_le_bytes())
            .unwrap();
        let (s, _) = call(&lp0, 45, |r| {
            r.rcx = arr_pa;
            r.rdx = 1;
            r.r8 = 32;
        });
        assert_eq!(s, 0, "SYS.CONFIG {s:#x}");
        for p in 0..m.num_packages() {
            let lp = m.lp(p * m.geo.lps_per_package).unwrap();
            assert_eq!(call(&lp, 31, |_| {}).0, 0);
        }
        let mut calls = 0;
        loop {
            let (s, r) = call(&lp0, 36, |r| r.rcx = 0);
            calls += 1;
            if s == 0x0000_0A03_0000_0000 {
                break;
            }
            assert_eq!(s, 0);
            assert!(r.rdx <= 1 << 30);
            assert!(calls < 1000);
        }
        assert_eq!(calls, 257, "256 chunks of 4 MiB then ALREADY_INITIALIZED");
        lp0
    }

    #[test]
    fn not_ready_gating_and_rax_decode() {
        let m = small_platform();
        let lp = m.lp(0).unwrap();
        assert_eq!(call(&lp, 36, |_| {}).0, 0xC000_0505_0000_0000);
        assert_eq!(call(&lp, 1 << 24 | 33, |_| {}).0, 0xC000_0100_0000_0000);
        assert_eq!(call(&lp, 1 << 16 | 33, |_| {}).0, 0xC000_0100_0000_0000);
        assert_eq!(
            call(&lp, 0xFFFF, |_| {}).0,
            0xC000_0505_0000_0000,
            "unknown leaf: readiness first"
        );
        assert_eq!(call(&lp, 33, |r| r.rcx = 1).0, 0xC000_0100_0000_0001);
        assert_eq!(call(&lp, 33, |_| {}).0, 0);
        assert_eq!(call(&lp, 33, |_| {}).0, 0xC000_0500_0000_0000);
        // SYS.RD needs LP.INIT on this LP.
        assert_eq!(
            call(&lp, 34, |r| r.rdx = 0x0800_0002_0000_0000).0,
            0xC000_0502_0000_0000
        );
        assert_eq!(call(&lp, 35, |_| {}).0, 0);
        assert_eq!(call(&lp, 35, |_| {}).0, 0xC000_0503_0000_0000);
        // SYS.CONFIG before every LP is initialised.
        assert_eq!(call(&lp, 45, |_| {}).0, 0xC000_050C_0000_0000);
    }

    #[test]
    fn sys_rd_values_and_iteration() {
        let m = small_platform();
        let lp = m.lp(0).unwrap();
        call(&lp, 33, |_| {});
        call(&lp, 35, |_| {});
        let (s, r) = call(&lp, 34, |r| r.rdx = 0x0800_0002_0000_0000);
        assert_eq!((s, r.r8), (0, 0x8086));
        // Element-size code ignored (Linux passes the ID as in the table anyway).
        let (s, r) = call(&lp, 34, |r| r.rdx = 0x9100_0000_0000_0008);
        assert_eq!((s, r.r8), (0, 64));
        let (s, r) = call(&lp, 34, |r| r.rdx = 0x9800_0001_0000_0100);
        assert_eq!((s, r.r8), (0, 0x6000));
        let (s, r) = call(&lp, 34, |r| r.rdx = 0x1900_0003_0000_0000);
        assert_eq!((s, r.r8), (0, 0x8000_0000_7000_0001));
        let (s, r) = call(&lp, 34, |r| r.rdx = 0x9000_0003_0000_0080);
        assert_eq!((s, r.r8), (0, 1 << 20));
        let (s, _) = call(&lp, 34, |r| r.rdx = 0x0800_0002_0000_7777);
        assert_eq!(s, 0xC000_0C00_0000_0000);
        let (s, r) = call(&lp, 34, |r| r.rdx = u64::MAX);
        assert_eq!(s, 0x0000_0C0B_0000_0000);
        // Walk the whole table with "next".
        let mut id = r.rdx;
        let mut n = 0;
        while id != u64::MAX && n < 500 {
            let (s, r) = call(&lp, 34, |r| r.rdx = id);
            assert_eq!(s, 0);
            id = r.rdx;
            n += 1;
        }
        assert_eq!(n, sys_metadata(&m).len());
    }

    #[test]
    fn full_bring_up_and_pamt() {
        let m = small_platform();
        let lp0 = bring_up(&m);
        assert_eq!(m.page_type(0), Some(crate::emulated::PamtPageType::PT_RSVD));
        assert_eq!(
            m.page_type(2 << 20),
            Some(crate::emulated::PamtPageType::PT_NDA)
        );
        assert_eq!(
            m.page_type(57 << 20),
            Some(crate::emulated::PamtPageType::PT_RSVD)
        );
        assert_eq!(m.hkid_state(32), Some(crate::emulated::KotState::RESERVED));
        assert_eq!(m.hkid_state(33), Some(crate::emulated::KotState::FREE));
        // Second KEY.CONFIG on a package: success-class KEY_CONFIGURED... after READY the
        // leaf's own state check answers first.
        assert_eq!(call(&lp0, 31, |_| {}).0, 0xC000_0507_0000_0000);
        // Unknown leaf once ready: OPERAND_INVALID(RAX). LP.INIT after SYS.CONFIG:
        // SYS_LP_INIT_NOT_PENDING (tdh_sys_lp_init.c checks sys_state == SYSINIT_DONE first).
        assert_eq!(call(&lp0, 0xFFFF, |_| {}).0, 0xC000_0100_0000_0000);
        assert_eq!(call(&lp0, 35, |_| {}).0, 0xC000_050B_0000_0000);
        // RDALL into a page.
        let (s, r) = call(&lp0, 37, |r| {
            r.rdx = 0x30_0000;
            r.r8 = u64::MAX;
        });
        assert_eq!(s, 0);
        assert_eq!(r.r8, u64::MAX);
        let mut list = vec![0u8; 4096];
        m.physical_memory().read(0x30_0000, &mut list).unwrap();
        let parsed = tdx_abi::metadata::MetadataList::parse(&list).unwrap();
        let items: Vec<_> = parsed.iter().map(|x| x.unwrap()).collect();
        assert_eq!(items.len(), sys_metadata(&m).len());
        assert_eq!(items[0].0.raw(), 0x0000_0002_0000_0000, "NUM_PKGS first");
        assert_eq!(items[0].1, 2);
        assert!(items
            .iter()
            .any(|(id, v)| id.raw() == 0x0800_0002_0000_0000 && *v == 0x8086));
    }

    #[test]
    fn sys_config_maps_validator_errors() {
        let m = small_platform();
        let lp = m.lp(0).unwrap();
        call(&lp, 33, |_| {});
        for i in 0..m.num_lps() {
            call(&m.lp(i).unwrap(), 35, |_| {});
        }
        // Misaligned TDMR base.
        let t = TdmrInfo {
            tdmr_base: 4096,
            tdmr_size: 1 << 30,
            ..TdmrInfo::default()
        };
        m.physical_memory().write(0x20_0000, t.as_bytes()).unwrap();
        m.physical_memory()
            .write(0x1F_F000, &0x20_0000u64.to_le_bytes())
            .unwrap();
        let (s, _) = call(&lp, 45, |r| {
            r.rcx = 0x1F_F000;
            r.rdx = 1;
            r.r8 = 32;
        });
        assert_eq!(s, 0xC000_0A00_0000_0000);
        let (s, _) = call(&lp, 45, |r| {
            r.rcx = 0x1F_F000;
            r.rdx = 0;
            r.r8 = 32;
        });
        assert_eq!(s, 0xC000_0100_0000_0002);
        let (s, _) = call(&lp, 45, |r| {
            r.rcx = 0x1F_F000;
            r.rdx = 1;
            r.r8 = 5;
        });
        assert_eq!(s, 0xC000_0100_0000_0008);
    }
}
