//! Platform leaves: TDH.SYS.INIT, TDH.SYS.LP.INIT, TDH.SYS.RD, TDH.SYS.RDALL, TDH.SYS.CONFIG,
//! TDH.SYS.KEY.CONFIG, TDH.SYS.TDMR.INIT, and the global metadata table (§5.11).

use tdx_abi::call::Regs;
use tdx_abi::tdmr::{CmrInfoEntry, TdmrInfo};
use tdx_memory::tdmr::{validate, TdmrConstraints};
use zerocopy::FromBytes;

use super::abi_shim::*;
use super::state::{fail, KotState, LeafResult, State, SysState, Tdmr};

/// Bytes of TDMR initialised per TDH.SYS.TDMR.INIT call (1024 PAMT_4K entries).
pub(crate) const TDMR_INIT_CHUNK: u64 = 4 << 20;
/// Maximum vCPUs per TD.
pub(crate) const MAX_VCPUS_PER_TD: u64 = 576;
/// ATTRIBUTES_FIXED0 of 1.5.01: bits {0, 28, 29, 30, 63}.
pub(crate) const ATTRIBUTES_FIXED0: u64 = (1 << 0) | (1 << 28) | (1 << 29) | (1 << 30) | (1 << 63);
/// ATTRIBUTES_FIXED1.
pub(crate) const ATTRIBUTES_FIXED1: u64 = 0;
/// XFAM_FIXED0 (bits allowed).
pub(crate) const XFAM_FIXED0: u64 = 0x6DBE7;
/// XFAM_FIXED1 (bits required).
pub(crate) const XFAM_FIXED1: u64 = 0x3;
/// CONFIG_FLAGS_FIXED0 (GPAW, FLEXIBLE_PENDING_VE, NO_RBP_MOD).
pub(crate) const CONFIG_FLAGS_FIXED0: u64 = 0x7;
/// TDX_FEATURES0 advertised: only NO_RBP_MOD (bit 18) — the emulator implements none of the
/// optional features (migration, service TDs, partitioning, host-priority locks, ...).
pub(crate) const TDX_FEATURES0: u64 = 1 << 18;
/// Configurable CPUID leaves of the 1.5.01 build (leaf, subleaf; `u32::MAX` = no subleaf).
pub(crate) const CPUID_CONFIG_LEAVES: [(u32, u32); 12] = [
    (1, u32::MAX),
    (4, 0),
    (4, 1),
    (4, 2),
    (4, 3),
    (7, 0),
    (7, 1),
    (0xA, u32::MAX),
    (0x1C, u32::MAX),
    (0x8000_0008, u32::MAX),
    (7, 2),
    (0x23, 0),
];
/// Emulator-defined CPUID(1).EAX returned in RDX by TDH.VP.INIT (a Sapphire Rapids stepping).
pub(crate) const CPUID1_EAX: u64 = 0x0008_06F8;

/// The global metadata (id, value) in iteration order.
pub(crate) fn global_metadata(st: &State) -> Vec<(u64, u64)> {
    let mut m: Vec<(u64, u64)> = vec![
        (0x0000_0002_0000_0000, u64::from(st.num_packages)), // NUM_PKGS
    ];
    for p in 0..st.num_packages.min(8) {
        m.push((0x0000_0002_0000_0001 + u64::from(p), CPUID1_EAX)); // PKG_FMS[p]
    }
    m.extend_from_slice(&[
        (0x0800_0002_0000_0000, 0x8086),   // VENDOR_ID
        (0x8800_0002_0000_0001, 20240101), // BUILD_DATE (emulator-defined)
        (0x8800_0001_0000_0002, 0),        // BUILD_NUM (emulator-defined)
        (0x0800_0001_0000_0003, 5),        // MINOR_VERSION
        (0x0800_0001_0000_0004, 1),        // MAJOR_VERSION
        (0x0800_0001_0000_0005, 1),        // UPDATE_VERSION
        (0x0800_0001_0000_0006, 0),        // INTERNAL_VERSION
        (0x0A00_0002_0000_0000, 0),        // SYS_ATTRIBUTES
        (0x0A00_0000_0000_0001, 1),        // NUM_TDX_FEATURES
        (0x0A00_0003_0000_0008, TDX_FEATURES0),
        (0x9000_0001_0000_0000, st.cmrs.len() as u64), // NUM_CMRS
    ]);
    for (i, &(b, _)) in st.cmrs.iter().enumerate() {
        m.push((0x9000_0003_0000_0080 + i as u64, b));
    }
    for (i, &(_, s)) in st.cmrs.iter().enumerate() {
        m.push((0x9000_0003_0000_0100 + i as u64, s));
    }
    m.extend_from_slice(&[
        (0x9100_0001_0000_0008, 64),       // MAX_TDMRS
        (0x9100_0001_0000_0009, 16),       // MAX_RESERVED_PER_TDMR
        (0x9100_0001_0000_0010, 16),       // PAMT_4K_ENTRY_SIZE
        (0x9100_0001_0000_0011, 16),       // PAMT_2M_ENTRY_SIZE
        (0x9100_0001_0000_0012, 16),       // PAMT_1G_ENTRY_SIZE
        (0x9800_0001_0000_0000, 4096),     // TDR_BASE_SIZE
        (0x9800_0001_0000_0100, 6 * 4096), // TDCS_BASE_SIZE
        (0x9800_0001_0000_0101, 4096),     // TDCS_SIZE_PER_L2_VM
        (0x9800_0001_0000_0200, 6 * 4096), // TDVPS_BASE_SIZE
        (0x9800_0001_0000_0201, 3 * 4096), // TDVPS_SIZE_PER_L2_VM
        (0x1900_0003_0000_0000, ATTRIBUTES_FIXED0),
        (0x1900_0003_0000_0001, ATTRIBUTES_FIXED1),
        (0x1900_0003_0000_0002, XFAM_FIXED0),
        (0x1900_0003_0000_0003, XFAM_FIXED1),
        (0x9900_0001_0000_0004, CPUID_CONFIG_LEAVES.len() as u64), // NUM_CPUID_CONFIG
        (0x9900_0003_0000_0006, CONFIG_FLAGS_FIXED0),
        (0x9900_0003_0000_0007, 0),                // CONFIG_FLAGS_FIXED1
        (0x9900_0001_0000_0008, MAX_VCPUS_PER_TD), // MAX_VCPUS_PER_TD
    ]);
    for (i, &(leaf, sub)) in CPUID_CONFIG_LEAVES.iter().enumerate() {
        m.push((
            0x9900_0003_0000_0400 + i as u64,
            u64::from(leaf) | (u64::from(sub) << 32),
        ));
    }
    for i in 0..CPUID_CONFIG_LEAVES.len() as u64 {
        // Every bit configurable (emulator-defined masks).
        m.push((0x9900_0003_0000_0500 + 2 * i, u64::MAX));
        m.push((0x9900_0003_0000_0500 + 2 * i + 1, u64::MAX));
    }
    m.push((0x9900_0003_0000_0600, 0)); // IA32_ARCH_CAPABILITIES_CONFIG_MASK
    m.push((0xA100_0001_0000_0000, 0)); // MAX_SERV_TDS
    m
}

/// Bits a single-element field id may carry that the module ignores (§5.10): element size,
/// INC_SIZE, WRITE_MASK_VALID, CONTEXT_CODE.
const IGNORED_BITS: u64 = (3 << 32) | (1 << 50) | (1 << 51) | (7 << 52);
/// Bits that must be zero: 31:24, LAST_ELEMENT 37:34, LAST_FIELD 46:38, 49:47, 55, 62.
const MUST_BE_ZERO: u64 =
    (0xFF << 24) | (0xF << 34) | (0x1FF << 38) | (7 << 47) | (1 << 55) | (1 << 62);

/// Canonical key of a field id for lookups.
pub(crate) fn field_key(id: u64) -> u64 {
    id & !IGNORED_BITS
}

/// Checks a single-element field id: reserved / sequence bits zero.
pub(crate) fn check_field_id(id: u64) -> Result<(), u64> {
    if id & MUST_BE_ZERO != 0 {
        return fail(METADATA_FIELD_ID_INCORRECT, OP_RDX);
    }
    Ok(())
}

/// True if `id` is the all-ones "first field" request (context bits ignored).
pub(crate) fn is_first_field_request(id: u64) -> bool {
    id | (7 << 52) == u64::MAX
}

/// Reads field `id` of `table`: returns (value, next id or all-ones).
pub(crate) fn table_read(table: &[(u64, u64)], id: u64) -> Result<(u64, u64), u64> {
    check_field_id(id)?;
    let key = field_key(id);
    let Some(i) = table.iter().position(|&(f, _)| field_key(f) == key) else {
        return fail(METADATA_FIELD_ID_INCORRECT, OP_RDX);
    };
    let next = table.get(i + 1).map_or(u64::MAX, |&(f, _)| f);
    Ok((table[i].1, next))
}

// tdh_sys_init.c
pub(crate) fn tdh_sys_init(st: &mut State, regs: &mut Regs) -> LeafResult {
    if st.sys_state != SysState::SysinitPending {
        return fail(SYS_INIT_NOT_PENDING, 0);
    }
    if regs.rcx != 0 {
        return fail(OPERAND_INVALID, OP_RCX);
    }
    st.sys_state = SysState::SysinitDone;
    Ok(0)
}

// tdh_sys_lp_init.c
pub(crate) fn tdh_sys_lp_init(st: &mut State, lp: u32) -> LeafResult {
    if st.sys_state == SysState::SysinitPending {
        return fail(SYS_INIT_NOT_PENDING, 0);
    }
    let Some(done) = st.lp_init.get_mut(lp as usize) else {
        return fail(OPERAND_INVALID, OP_RAX);
    };
    if *done {
        return fail(SYS_LP_INIT_DONE, 0);
    }
    *done = true;
    Ok(0)
}

/// Common SYS.RD/RDALL gate: SYS.INIT done and this LP initialised.
fn check_sys_rd(st: &State, lp: u32) -> Result<(), u64> {
    if st.sys_state == SysState::SysinitPending {
        return fail(SYS_STATE_INCORRECT, 0);
    }
    if !st.lp_init.get(lp as usize).copied().unwrap_or(false) {
        return fail(SYS_LP_INIT_NOT_DONE, 0);
    }
    Ok(())
}

// tdh_sys_rd.c
pub(crate) fn tdh_sys_rd(st: &mut State, lp: u32, regs: &mut Regs) -> LeafResult {
    check_sys_rd(st, lp)?;
    let table = global_metadata(st);
    if is_first_field_request(regs.rdx) {
        regs.rdx = table.first().map_or(u64::MAX, |f| f.0);
        regs.r8 = 0;
        return Ok(st_code(METADATA_FIRST_FIELD_ID_IN_CONTEXT));
    }
    let (value, next) = table_read(&table, regs.rdx)?;
    regs.r8 = value;
    regs.rdx = next;
    Ok(0)
}

fn st_code(code: u32) -> u64 {
    status(code, 0)
}

// tdh_sys_rdall.c: a 4 KiB list {u16 buffer size, u16 number of sequences, u32 reserved} then one
// sequence per field {field id (8 B), value (8 B)}; R8 = next field id.
pub(crate) fn tdh_sys_rdall(st: &mut State, lp: u32, regs: &mut Regs) -> LeafResult {
    check_sys_rd(st, lp)?;
    let pa = regs.rdx;
    if pa & 0xFFF != 0 {
        return fail(OPERAND_INVALID, OP_RDX);
    }
    st.check_shared_hpa(pa, 4096, OP_RDX)?;
    let table = global_metadata(st);
    let start = if is_first_field_request(regs.r8) {
        0
    } else {
        check_field_id(regs.r8).map_err(|_| status(METADATA_FIELD_ID_INCORRECT, OP_R8))?;
        let key = field_key(regs.r8);
        match table.iter().position(|&(f, _)| field_key(f) == key) {
            Some(i) => i,
            None => return fail(METADATA_FIELD_ID_INCORRECT, OP_R8),
        }
    };
    let mut buf = vec![0u8; 4096];
    let mut off = 8usize;
    let mut n = 0u16;
    let mut i = start;
    while i < table.len() && off + 16 <= buf.len() {
        buf[off..off + 8].copy_from_slice(&table[i].0.to_le_bytes());
        buf[off + 8..off + 16].copy_from_slice(&table[i].1.to_le_bytes());
        off += 16;
        n += 1;
        i += 1;
    }
    buf[0..2].copy_from_slice(&(off as u16).to_le_bytes());
    buf[2..4].copy_from_slice(&n.to_le_bytes());
    st.arena.write(pa, &buf);
    regs.r8 = table.get(i).map_or(u64::MAX, |f| f.0);
    Ok(0)
}

// tdh_sys_config.c
pub(crate) fn tdh_sys_config(st: &mut State, regs: &mut Regs) -> LeafResult {
    match st.sys_state {
        SysState::SysinitPending => return fail(SYS_STATE_INCORRECT, 0),
        SysState::SysinitDone => {}
        _ => return fail(SYS_CONFIG_NOT_PENDING, 0),
    }
    if st.lp_init.iter().any(|d| !d) {
        return fail(SYS_LP_INIT_NOT_DONE, 0);
    }
    let (array, count, hkid) = (regs.rcx, regs.rdx, regs.r8);
    if array % 512 != 0 || array >> st.hkid_shift != 0 {
        return fail(OPERAND_INVALID, OP_RCX);
    }
    if count == 0 || count > 64 {
        return fail(OPERAND_INVALID, OP_RDX);
    }
    if hkid >> 16 != 0 || !st.is_private_hkid(hkid) {
        return fail(OPERAND_INVALID, OP_R8);
    }
    let mut tdmrs = Vec::with_capacity(count as usize);
    for i in 0..count {
        let Some(pa) = st.arena.read_u64(array + 8 * i) else {
            return fail(OPERAND_INVALID, OP_RCX);
        };
        if pa % 512 != 0 || pa >> st.hkid_shift != 0 {
            return fail(OPERAND_INVALID, OP_RCX);
        }
        let mut raw = [0u8; core::mem::size_of::<TdmrInfo>()];
        if !st.arena.read(pa, &mut raw) {
            return fail(OPERAND_INVALID, OP_RCX);
        }
        let Ok(info) = TdmrInfo::read_from_bytes(&raw) else {
            return fail(OPERAND_INVALID, OP_RCX);
        };
        tdmrs.push(info);
    }
    let cmrs: Vec<CmrInfoEntry> = st
        .cmrs
        .iter()
        .map(|&(b, s)| CmrInfoEntry {
            cmr_base: b,
            cmr_size: s,
        })
        .collect();
    let constraints = TdmrConstraints {
        max_pa_bits: st.hkid_shift as u8,
        ..TdmrConstraints::default()
    };
    if let Err(e) = validate(&tdmrs, &cmrs, &constraints) {
        return Err(e.status());
    }
    st.tdmrs = tdmrs
        .iter()
        .map(|t| {
            let mut reserved: Vec<(u64, u64)> = t
                .used_reserved_areas()
                .iter()
                .map(|a| {
                    let s = t.tdmr_base.saturating_add(a.offset);
                    (s, s.saturating_add(a.size))
                })
                .collect();
            // Every PAMT block lying in any TDMR is PT_RSVD there.
            for p in &tdmrs {
                for (b, s) in [
                    (p.pamt_1g_base, p.pamt_1g_size),
                    (p.pamt_2m_base, p.pamt_2m_size),
                    (p.pamt_4k_base, p.pamt_4k_size),
                ] {
                    if s != 0 {
                        reserved.push((b, b.saturating_add(s)));
                    }
                }
            }
            Tdmr {
                base: t.tdmr_base,
                size: t.tdmr_size,
                reserved,
                init_upto: t.tdmr_base,
            }
        })
        .collect();
    st.global_hkid = Some(hkid as u16);
    st.kot[hkid as usize] = (KotState::Reserved, 0);
    st.sys_state = SysState::SysconfigDone;
    Ok(0)
}

// tdh_sys_key_config.c
pub(crate) fn tdh_sys_key_config(st: &mut State, lp: u32) -> LeafResult {
    if st.sys_state != SysState::SysconfigDone {
        return fail(SYS_KEY_CONFIG_NOT_PENDING, 0);
    }
    let pkg = st.package_of(lp) as usize;
    let Some(done) = st.pkg_key_config.get_mut(pkg) else {
        return fail(OPERAND_INVALID, OP_RAX);
    };
    if *done {
        return Ok(st_code(KEY_CONFIGURED));
    }
    *done = true;
    if st.pkg_key_config.iter().all(|d| *d) {
        st.sys_state = SysState::SysReady;
    }
    Ok(0)
}

// tdh_sys_tdmr_init.c
pub(crate) fn tdh_sys_tdmr_init(st: &mut State, regs: &mut Regs) -> LeafResult {
    let base = regs.rcx;
    let Some(t) = st.tdmrs.iter_mut().find(|t| t.base == base) else {
        return fail(OPERAND_INVALID, OP_RCX);
    };
    let end = t.base + t.size;
    if t.init_upto >= end {
        regs.rdx = end;
        return Ok(st_code(TDMR_ALREADY_INITIALIZED));
    }
    t.init_upto = t.init_upto.saturating_add(TDMR_INIT_CHUNK).min(end);
    // Progress: next address to initialise, rounded down to 1 GiB (end when complete).
    regs.rdx = if t.init_upto >= end {
        end
    } else {
        t.init_upto & !((1 << 30) - 1)
    };
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_ids() {
        assert!(is_first_field_request(u64::MAX));
        assert!(is_first_field_request(!(7u64 << 52)));
        assert!(!is_first_field_request(0x0800_0002_0000_0000));
        // Element size is ignored: MAX_TDMRS read as 8-byte element.
        assert_eq!(
            field_key(0x9100_0003_0000_0008),
            field_key(0x9100_0001_0000_0008)
        );
        assert!(check_field_id(0x9100_0001_0000_0008).is_ok());
        assert_eq!(
            check_field_id(0x9100_0001_0100_0008),
            Err(0xC000_0C00_0000_0002)
        );
    }
}
