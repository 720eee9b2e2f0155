//! TD and vCPU management leaves: MNG.CREATE … MNG.INIT, MNG.RD/WR, VP.CREATE/ADDCX/INIT,
//! VP.RD/WR, and the teardown leaves (VP.FLUSH, MNG.VPFLUSHDONE, PHYMEM.CACHE.WB,
//! MNG.KEY.FREEID, PHYMEM.PAGE.RECLAIM/WBINVD/RDMD).

use tdx_abi::call::Regs;
use tdx_abi::measure::{Measurement, MrtdBuilder};
use tdx_abi::metadata::{td as T, vp as V};
use tdx_abi::status::TdxStatus;

use super::codes::{self, OperandId, StatusCode};
use super::locks::{LockKey, Mode};
use super::state::{
    kot, lc, ops, pt, vs, State, Td, TdConfig, Vcpu, VeInfoState, MAX_TDVPS_PAGES, MIN_TDCX,
    MIN_TDVPS_PAGES,
};
use super::sys::{
    normalize_field_id, ATTRIBUTES_FIXED0, ATTRIBUTES_FIXED1, CONFIG_FLAGS_FIXED0,
    CPUID_CONFIG_LEAVES, CPUID_CONFIG_VALUES, PLATFORM_FMS, XFAM_FIXED0, XFAM_FIXED1,
};
use super::{Ctx, EmulatedModule, LeafResult};

/// Maximum TDCS pages (`MAX_NUM_TDCS_PAGES`: 6 + 3 L2 VMs).
const MAX_TDCX: usize = 9;
/// Maximum number of L2 VMs.
const MAX_L2_VMS: u8 = 3;

fn ok() -> LeafResult {
    Ok(TdxStatus::SUCCESS)
}

/// TDH.MNG.CREATE (`tdh_mng_create.c`): RCX = TDR PA, RDX = HKID.
pub(crate) fn tdh_mng_create(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    let (tdr, hkid) = (regs.rcx, regs.rdx);
    if hkid >> 16 != 0 || !m.geo.is_private_hkid(hkid) {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RDX);
    }
    st.lock_explicit_page(
        &m.geo,
        &mut ctx.held,
        tdr,
        OperandId::RCX,
        Mode::Exclusive,
        pt::NDA,
    )?;
    ctx.held
        .lock(&mut st.locks, LockKey::Kot, Mode::Exclusive, OperandId::KOT)?;
    let hkid = hkid as u16;
    match st.kot_mut(&m.geo, hkid) {
        Some(k) if k.state == kot::FREE => k.state = kot::ASSIGNED,
        _ => return Err(codes::code(StatusCode::HKID_NOT_FREE)),
    }
    let _ = m.mem.raw_fill(tdr, 4096, 0);
    m.mem.clear_poison(tdr, 1);
    st.tds.insert(tdr, Td::new(hkid));
    st.set_pages(&m.mem, tdr, 1, pt::TDR, 0, 0);
    ok()
}

/// TDH.MNG.KEY.CONFIG (`tdh_mng_key_config.c`): RCX = TDR; once per package.
pub(crate) fn tdh_mng_key_config(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    let tdr = st.lock_tdr(
        &m.geo,
        &mut ctx.held,
        regs.rcx,
        OperandId::RCX,
        Mode::Exclusive,
    )?;
    let all = m.geo.all_packages();
    let td = st.td_mut(tdr);
    if td.fatal {
        return Err(codes::code(StatusCode::TD_FATAL));
    }
    if td.lifecycle != lc::HKID_ASSIGNED {
        return Err(codes::code(StatusCode::LIFECYCLE_STATE_INCORRECT));
    }
    let bit = 1u64 << ctx.pkg;
    if td.pkg_config_bitmap & bit != 0 {
        return Ok(codes::code(StatusCode::KEY_CONFIGURED));
    }
    td.pkg_config_bitmap |= bit;
    if td.pkg_config_bitmap == all {
        td.lifecycle = lc::KEYS_CONFIGURED;
    }
    ok()
}

/// TDH.MNG.ADDCX (`tdh_mng_add_cx.c`): RCX = new TDCS page, RDX = TDR.
pub(crate) fn tdh_mng_addcx(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    let tdr = st.lock_tdr(
        &m.geo,
        &mut ctx.held,
        regs.rdx,
        OperandId::RDX,
        Mode::Exclusive,
    )?;
    let td = st.td(tdr);
    if td.fatal {
        return Err(codes::code(StatusCode::TD_FATAL));
    }
    if td.lifecycle != lc::KEYS_CONFIGURED {
        return Err(codes::code(StatusCode::TD_KEYS_NOT_CONFIGURED));
    }
    if td.tdcx.len() >= MAX_TDCX {
        return Err(codes::code(StatusCode::TDCX_NUM_INCORRECT));
    }
    let page = regs.rcx;
    st.lock_explicit_page(
        &m.geo,
        &mut ctx.held,
        page,
        OperandId::RCX,
        Mode::Exclusive,
        pt::NDA,
    )?;
    // Beyond the minimum the TDCS (and OP_STATE) exists: it must still be UNINITIALIZED.
    let td = st.td(tdr);
    if td.tdcx.len() >= MIN_TDCX && td.op_state != ops::UNINITIALIZED {
        return Err(codes::code(StatusCode::OP_STATE_INCORRECT));
    }
    let idx = st.td(tdr).tdcx.len();
    // Page 2 holds the MSR bitmaps (all ones = intercept everything); the others start zeroed
    // (page 3, the SEPT root, is kept in module memory, see `sept`).
    let _ = m.mem.raw_fill(page, 4096, if idx == 2 { 0xFF } else { 0 });
    m.mem.clear_poison(page, 1);
    st.set_pages(&m.mem, page, 1, pt::TDCX, tdr, 0);
    let td = st.td_mut(tdr);
    td.tdcx.push(page);
    td.chldcnt += 1;
    ok()
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap_or([0; 8]))
}
fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap_or([0; 4]))
}
fn zero(b: &[u8]) -> bool {
    b.iter().all(|x| *x == 0)
}
fn meas(b: &[u8]) -> Measurement {
    let mut m = [0u8; 48];
    m.copy_from_slice(&b[..48]);
    Measurement(m)
}

/// A value allowed by a FIXED0/FIXED1 pair: only FIXED0 bits may be 1, FIXED1 bits must be 1.
fn fixed_bits_ok(v: u64, fixed0: u64, fixed1: u64) -> bool {
    v & !fixed0 == 0 && v & fixed1 == fixed1
}

/// `check_xfam`: fixed bits, and the XCR0 groups that must be enabled together
/// (AVX-512 bits 5–7, AMX bits 17–18, CET bits 11–12) and AVX requiring SSE.
fn check_xfam(x: u64) -> bool {
    let group = |m: u64| x & m == 0 || x & m == m;
    fixed_bits_ok(x, XFAM_FIXED0, XFAM_FIXED1)
        && group(0b111 << 5)
        && group(0b11 << 17)
        && group(0b11 << 11)
        && (x & (1 << 5) == 0 || x & (1 << 2) != 0)
}

/// Reads and checks TD_PARAMS (`read_and_set_td_configurations` then
/// `read_and_set_cpuid_configurations`, in the module's order).
fn parse_td_params(
    p: &[u8; 1024],
    num_tdcx: usize,
    regs: &mut Regs,
) -> Result<TdConfig, TdxStatus> {
    let attributes = u64_at(p, 0);
    // verify_td_attributes: fixed bits; a MIGRATABLE TD can be neither DEBUG nor PERFMON.
    let migratable_conflict = attributes & (1 << 29) != 0 && attributes & (1 | 1 << 63) != 0;
    if !fixed_bits_ok(attributes, ATTRIBUTES_FIXED0, ATTRIBUTES_FIXED1) || migratable_conflict {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::ATTRIBUTES);
    }
    let xfam = u64_at(p, 8);
    if !check_xfam(xfam) {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::XFAM);
    }
    let max_vcpus = u16_at(p, 16);
    if max_vcpus == 0 {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::MAX_VCPUS);
    }
    let num_l2 = p[18];
    if num_l2 > MAX_L2_VMS {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::NUM_L2_VMS);
    }
    if num_tdcx < MIN_TDCX + usize::from(num_l2) {
        return Err(codes::code(StatusCode::TDCS_NOT_ALLOCATED));
    }
    if !zero(&p[20..24]) {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RDX);
    }
    let config_flags = u64_at(p, 32);
    if config_flags & !CONFIG_FLAGS_FIXED0 != 0 {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::EXEC_CONTROLS);
    }
    let gpaw52 = config_flags & 1 != 0;
    let eptp = u64_at(p, 24);
    let pwl = (eptp >> 3) & 7;
    let eptp_ok =
        eptp & 7 == 6 && (pwl == 3 || pwl == 4) && eptp >> 6 == 0 && (!gpaw52 || pwl == 4);
    if !eptp_ok {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::EPTP_CONTROLS);
    }
    let tsc = u16_at(p, 40);
    if !(4..=400).contains(&tsc) {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::TSC_FREQUENCY);
    }
    if !zero(&p[42..80]) {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RDX);
    }
    let msr_config_ctls = p[19];
    if msr_config_ctls & !1 != 0 {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RDX);
    }
    if !zero(&p[232..256]) {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RDX);
    }
    let mut cpuid_values = Vec::with_capacity(CPUID_CONFIG_LEAVES.len());
    for (i, ((leaf, sub), mask)) in CPUID_CONFIG_LEAVES
        .iter()
        .zip(CPUID_CONFIG_VALUES)
        .enumerate()
    {
        let off = 256 + 16 * i;
        let v = [
            u32_at(p, off),
            u32_at(p, off + 4),
            u32_at(p, off + 8),
            u32_at(p, off + 12),
        ];
        if v.iter().zip(mask).any(|(v, m)| v & !m != 0) {
            regs.rcx = u64::from(*leaf) | (u64::from(*sub) << 32);
            return codes::err(StatusCode::OPERAND_INVALID, OperandId::CPUID_CONFIG);
        }
        cpuid_values.push(v);
    }
    let cpuid_end = 256 + 16 * CPUID_CONFIG_LEAVES.len();
    if !zero(&p[cpuid_end..]) {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RDX);
    }
    // IA32_ARCH_CAPABILITIES_CONFIG_MASK is 0: no bit may be configured.
    if msr_config_ctls & 1 != 0 && u64_at(p, 224) != 0 {
        return codes::err(
            StatusCode::OPERAND_INVALID,
            OperandId::IA32_ARCH_CAPABILITIES_CONFIG,
        );
    }
    Ok(TdConfig {
        attributes,
        xfam,
        max_vcpus,
        eptp_controls: eptp,
        config_flags,
        tsc_frequency: tsc,
        gpaw52,
        mrconfigid: meas(&p[80..128]),
        mrowner: meas(&p[128..176]),
        mrownerconfig: meas(&p[176..224]),
        cpuid_values,
    })
}

/// TDH.MNG.INIT (`tdh_mng_init.c`): RCX = TDR, RDX = TD_PARAMS PA (1 KiB aligned, shared).
/// On a CPUID configuration error RCX = the offending leaf | subleaf << 32.
pub(crate) fn tdh_mng_init(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    let tdr = st.lock_tdr(
        &m.geo,
        &mut ctx.held,
        regs.rcx,
        OperandId::RCX,
        Mode::Exclusive,
    )?;
    st.check_td_state(&mut ctx.held, tdr, None, &[ops::UNINITIALIZED])?;
    // TD_PARAMS is read through a shared HPA (shared_hpa_check_with_pwr_2_alignment), i.e.
    // with a host key: a TD-owned page reads as zeros here (ciphertext on hardware).
    let Some(pa) = m.geo.shared_hpa(regs.rdx, 1024) else {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RDX);
    };
    let mut p = [0u8; 1024];
    if m.mem.read(pa, &mut p).is_err() {
        return codes::err(StatusCode::OPERAND_ADDR_RANGE_ERROR, OperandId::RDX);
    }
    let num_tdcx = st.td(tdr).tdcx.len();
    let mut cfg = parse_td_params(&p, num_tdcx, regs)?;
    if cfg.cpuid_values.first().is_some_and(|v| v[0] == 0) {
        cfg.cpuid_values[0][0] = PLATFORM_FMS;
    }
    let td = st.td_mut(tdr);
    let root_level = ((cfg.eptp_controls >> 3) & 7) as u8;
    let root = td.tdcx[3];
    td.sept.init_root(root, root_level);
    td.config = cfg;
    td.num_vcpus = 0;
    td.num_assoc_vcpus = 0;
    td.td_epoch = 1;
    td.refcount = [0; 2];
    td.mrtd_builder = Some(MrtdBuilder::new());
    td.rtmr = [Measurement::ZERO; 4];
    td.op_state = ops::INITIALIZED;
    ok()
}

/// Metadata field of TD scope: (field ID, value, host-writable mask, guest-writable mask).
type Field = (u64, u64, u64, u64);

/// The TD-scope fields the emulator implements (tdx-module-abi.md §5.11b). TDR fields first
/// (readable in any state), then TDCS fields.
fn td_fields(td: &Td, tdcs: bool) -> Vec<Field> {
    let mut v: Vec<Field> = vec![
        (T::NUM_TDCX.raw(), td.tdcx.len() as u64, 0, 0),
        (T::CHLDCNT.raw(), td.chldcnt, 0, 0),
        (T::LIFECYCLE_STATE.raw(), u64::from(td.lifecycle), 0, 0),
        (T::HKID.raw(), u64::from(td.hkid), 0, 0),
    ];
    if !tdcs {
        return v;
    }
    let c = &td.config;
    v.extend_from_slice(&[
        (T::NUM_VCPUS.raw(), u64::from(td.num_vcpus), 0, 0),
        (
            T::NUM_ASSOC_VCPUS.raw(),
            u64::from(td.num_assoc_vcpus),
            0,
            0,
        ),
        (T::OP_STATE.raw(), u64::from(td.op_state), 0, 0),
        (T::ATTRIBUTES.raw(), c.attributes, 0, 0),
        (T::XFAM.raw(), c.xfam, 0, 0),
        (T::MAX_VCPUS.raw(), u64::from(c.max_vcpus), 0, 0),
        (T::GPAW.raw(), u64::from(c.gpaw52), 0, 0),
        (T::EPTP.raw(), c.eptp_controls, 0, 0),
        (T::TSC_OFFSET.raw(), 0, 0, 0),
        (T::TSC_MULTIPLIER.raw(), 1 << 48, 0, 0),
        (T::TSC_FREQUENCY.raw(), u64::from(c.tsc_frequency), 0, 0),
        (T::NOTIFY_ENABLES.raw(), td.notify_enables, 0, 1),
        (T::CONFIG_FLAGS.raw(), c.config_flags, 0, 0),
        (
            T::TD_CTLS.raw(),
            td.td_ctls,
            0,
            // PENDING_VE_DISABLE only with FLEXIBLE_PENDING_VE; ENUM_TOPOLOGY, REDUCE_VE.
            if c.config_flags & 2 != 0 {
                0b1011
            } else {
                0b1010
            },
        ),
        (T::TD_EPOCH.raw(), td.td_epoch, 0, 0),
    ]);
    let mut mr = |base: u64, m: &Measurement| {
        for (i, ch) in m.as_bytes().chunks_exact(8).enumerate() {
            v.push((base + i as u64, u64_at(ch, 0), 0, 0));
        }
    };
    mr(T::MRTD.raw(), &td.mrtd);
    mr(T::MRCONFIGID.raw(), &c.mrconfigid);
    mr(T::MROWNER.raw(), &c.mrowner);
    mr(T::MROWNERCONFIG.raw(), &c.mrownerconfig);
    for (r, m) in td.rtmr.iter().enumerate() {
        mr(T::RTMR.raw() + 6 * r as u64, m);
    }
    // CPUID_VALUES (§5.2): field code = element | subleaf << 1 | subleaf-N/A << 8 |
    // leaf[6:0] << 9 | leaf[31] << 16; element 0 = EAX | EBX << 32, 1 = ECX | EDX << 32.
    for ((leaf, sub), val) in CPUID_CONFIG_LEAVES.iter().zip(&c.cpuid_values) {
        let na = u64::from(*sub == u32::MAX);
        let sub_bits = if na == 1 { 0 } else { u64::from(*sub & 0x7F) };
        let code = (sub_bits << 1)
            | (na << 8)
            | (u64::from(leaf & 0x7F) << 9)
            | (u64::from(leaf >> 31) << 16);
        v.push((
            T::CPUID_VALUES.raw() + code,
            u64::from(val[0]) | (u64::from(val[1]) << 32),
            0,
            0,
        ));
        v.push((
            T::CPUID_VALUES.raw() + code + 1,
            u64::from(val[2]) | (u64::from(val[3]) << 32),
            0,
            0,
        ));
    }
    v
}

/// Field lookup shared by MNG.RD/WR and TDG.VM.RD/WR: (index, list).
pub(crate) fn find_field(fields: &[Field], id: u64) -> Option<usize> {
    let n = normalize_field_id(id)?;
    fields
        .iter()
        .position(|f| normalize_field_id(f.0) == Some(n))
}

/// Reads (and with `write = Some((value, mask))` writes) a TD-scope field; `guest` selects
/// the guest's write permissions. Returns (old value, next field ID).
pub(crate) fn td_field_access(
    td: &mut Td,
    id: u64,
    write: Option<(u64, u64)>,
    guest: bool,
) -> Result<(u64, u64), TdxStatus> {
    let tdcs = td.tdcx.len() >= MIN_TDCX && td.op_state != ops::UNINITIALIZED;
    let fields = td_fields(td, tdcs);
    let Some(i) = find_field(&fields, id) else {
        return Err(codes::code(StatusCode::METADATA_FIELD_ID_INCORRECT));
    };
    let (fid, old, host_w, guest_w) = fields[i];
    let next = fields.get(i + 1).map_or(u64::MAX, |f| f.0);
    if let Some((value, mask)) = write {
        let wmask = if guest { guest_w } else { host_w };
        if wmask == 0 {
            return Err(codes::code(StatusCode::METADATA_FIELD_NOT_WRITABLE));
        }
        if mask & !wmask != 0 {
            return Err(codes::code(StatusCode::METADATA_FIELD_NOT_WRITABLE));
        }
        let new = (old & !mask) | (value & mask);
        match normalize_field_id(fid) {
            x if x == normalize_field_id(T::NOTIFY_ENABLES.raw()) => td.notify_enables = new,
            x if x == normalize_field_id(T::TD_CTLS.raw()) => td.td_ctls = new,
            _ => return Err(codes::code(StatusCode::METADATA_FIELD_NOT_WRITABLE)),
        }
    }
    Ok((old, next))
}

/// TDH.MNG.RD / TDH.MNG.WR (`tdh_mng_rd_wr.c`): RCX = TDR (shared), RDX = field ID; WR: R8
/// = value, R9 = mask. Outputs R8 = value (old value for WR); v1 RD: RDX = next field ID (-1
/// by default), and an all-ones field ID asks for the first one. Every field, TDR ones
/// included, needs the TDCS (keys configured, TDCS allocated, OP_STATE other than
/// UNINITIALIZED; WR also not in the export states).
fn mng_rdwr(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
    write: bool,
) -> LeafResult {
    let field = regs.rdx;
    let (value, mask) = (regs.r8, regs.r9);
    if !write && ctx.version > 0 {
        regs.rdx = u64::MAX;
    }
    regs.r8 = 0;
    let tdr = st.lock_tdr(
        &m.geo,
        &mut ctx.held,
        regs.rcx,
        OperandId::RCX,
        Mode::Shared,
    )?;
    let legal: &[u8] = if write {
        &[1, 2, 3, 6, 7, 8, 9, 10]
    } else {
        &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    };
    st.check_td_state(&mut ctx.held, tdr, Some(Mode::Shared), legal)?;
    let td = st.td_mut(tdr);
    if !write && ctx.version > 0 && field | (0x7 << 52) == u64::MAX {
        let tdcs = td.tdcx.len() >= MIN_TDCX && td.op_state != ops::UNINITIALIZED;
        regs.rdx = td_fields(td, tdcs)[0].0;
        return Ok(codes::code(StatusCode::METADATA_FIRST_FIELD_ID_IN_CONTEXT));
    }
    let w = write.then_some((value, mask));
    let (old, next) = td_field_access(td, field, w, false)?;
    regs.r8 = old;
    if !write && ctx.version > 0 {
        regs.rdx = next;
    }
    ok()
}

/// TDH.MNG.RD (`tdh_mng_rd_wr.c`), see `mng_rdwr`.
pub(crate) fn tdh_mng_rd(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    mng_rdwr(m, ctx, st, regs, false)
}

/// TDH.MNG.WR (`tdh_mng_rd_wr.c`), see `mng_rdwr`. No TD-scope field is host-writable in the
/// emulated subset (non-debug TDs).
pub(crate) fn tdh_mng_wr(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    mng_rdwr(m, ctx, st, regs, true)
}

/// Locks a TDVPR page named by a register and its owner TDR (implicit, shared).
fn lock_tdvpr(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    pa: u64,
    operand: OperandId,
    mode: Mode,
) -> Result<u64, TdxStatus> {
    let loc = st.lock_explicit_page(&m.geo, &mut ctx.held, pa, operand, mode, pt::TDVPR)?;
    let tdr = st.pamt(loc).owner;
    ctx.held.lock(
        &mut st.locks,
        LockKey::Page(tdr),
        Mode::Shared,
        OperandId::TDR,
    )?;
    if !st.vcpus.contains_key(&pa) || !st.tds.contains_key(&tdr) {
        return codes::err(StatusCode::PAGE_METADATA_INCORRECT, operand);
    }
    Ok(tdr)
}

/// TDH.VP.CREATE (`tdh_vp_create.c`): RCX = TDVPR page, RDX = TDR.
pub(crate) fn tdh_vp_create(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    let tdr = st.lock_tdr(
        &m.geo,
        &mut ctx.held,
        regs.rdx,
        OperandId::RDX,
        Mode::Shared,
    )?;
    st.check_td_state(
        &mut ctx.held,
        tdr,
        Some(Mode::Shared),
        &[ops::INITIALIZED, 7],
    )?;
    let page = regs.rcx;
    st.lock_explicit_page(
        &m.geo,
        &mut ctx.held,
        page,
        OperandId::RCX,
        Mode::Exclusive,
        pt::NDA,
    )?;
    let _ = m.mem.raw_fill(page, 4096, 0);
    m.mem.clear_poison(page, 1);
    st.set_pages(&m.mem, page, 1, pt::TDVPR, tdr, 0);
    st.chld_add(tdr, 1);
    st.vcpus.insert(
        page,
        Vcpu {
            pend_nmi: false,
            last_exit: Default::default(),
            tdr,
            tdcx: Vec::new(),
            state: vs::UNINITIALIZED,
            assoc_lp: None,
            index: 0,
            gprs: [0; 16],
            ve_info: VeInfoState::default(),
            exits: Default::default(),
            vmcall_in_progress: None,
            vmcall_response: None,
            epoch: 0,
            vp_enter_count: 0,
        },
    );
    ok()
}

/// TDH.VP.ADDCX (`tdh_vp_addcx.c`): RCX = new TDVPS page, RDX = TDVPR.
pub(crate) fn tdh_vp_addcx(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    let tdvpr = regs.rdx;
    let tdr = lock_tdvpr(m, ctx, st, tdvpr, OperandId::RDX, Mode::Exclusive)?;
    st.check_td_state(
        &mut ctx.held,
        tdr,
        Some(Mode::Shared),
        &[ops::INITIALIZED, 7],
    )?;
    let v = &st.vcpus[&tdvpr];
    if v.state != vs::UNINITIALIZED {
        return Err(codes::code(StatusCode::VCPU_STATE_INCORRECT));
    }
    if 1 + v.tdcx.len() >= MAX_TDVPS_PAGES {
        return Err(codes::code(StatusCode::TDCX_NUM_INCORRECT));
    }
    let page = regs.rcx;
    st.lock_explicit_page(
        &m.geo,
        &mut ctx.held,
        page,
        OperandId::RCX,
        Mode::Exclusive,
        pt::NDA,
    )?;
    let _ = m.mem.raw_fill(page, 4096, 0);
    m.mem.clear_poison(page, 1);
    st.set_pages(&m.mem, page, 1, pt::TDCX, tdr, 0);
    st.chld_add(tdr, 1);
    if let Some(v) = st.vcpus.get_mut(&tdvpr) {
        v.tdcx.push(page);
    }
    ok()
}

/// TDH.VP.INIT (`tdh_vp_init.c`): RCX = TDVPR, RDX = initial guest RCX/R8.
/// Initial guest GPRs: RBX = GPAW (48/52), RCX = R8 = RDX input, RDX = CPUID(1).EAX,
/// RSI = VCPU_INDEX, others 0. Like `associate_vcpu_initial` in the 1.5 source, the vCPU is
/// associated with the calling LP (VP.FLUSH must run there even if it never entered).
pub(crate) fn tdh_vp_init(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    let tdvpr = regs.rcx;
    let tdr = lock_tdvpr(m, ctx, st, tdvpr, OperandId::RCX, Mode::Exclusive)?;
    st.check_td_state(&mut ctx.held, tdr, Some(Mode::Shared), &[ops::INITIALIZED])?;
    let v = &st.vcpus[&tdvpr];
    if 1 + v.tdcx.len() < MIN_TDVPS_PAGES {
        return Err(codes::code(StatusCode::TDCX_NUM_INCORRECT));
    }
    if v.state != vs::UNINITIALIZED {
        return Err(codes::code(StatusCode::VCPU_STATE_INCORRECT));
    }
    let td = st.td(tdr);
    if td.num_vcpus >= u32::from(td.config.max_vcpus) {
        return Err(codes::code(StatusCode::MAX_VCPUS_EXCEEDED));
    }
    let gpaw = if td.config.gpaw52 { 52 } else { 48 };
    let fms = td
        .config
        .cpuid_values
        .first()
        .map_or(PLATFORM_FMS, |v| v[0]);
    let td = st.td_mut(tdr);
    let index = td.num_vcpus;
    td.num_vcpus += 1;
    // associate_vcpu_initial (helpers.c): the vCPU is associated with the calling LP.
    td.num_assoc_vcpus += 1;
    let host_value = regs.rdx;
    let v = st.vcpus.get_mut(&tdvpr).expect("locked vCPU");
    v.index = index;
    v.assoc_lp = Some(ctx.lp);
    v.gprs = [0; 16];
    v.gprs[3] = gpaw; // RBX
    v.gprs[1] = host_value; // RCX
    v.gprs[8] = host_value; // R8
    v.gprs[2] = u64::from(fms); // RDX
    v.gprs[6] = u64::from(index); // RSI
    v.state = vs::READY;
    ok()
}

/// VP-scope fields: (ID, value, host-writable).
fn vp_fields(v: &Vcpu, debug: bool) -> Vec<(u64, u64, bool)> {
    let mut f = vec![
        (
            V::VE_INFO_EXIT_REASON.raw(),
            u64::from(v.ve_info.exit_reason),
            false,
        ),
        (
            V::VE_INFO_VALID.raw(),
            if v.ve_info.valid { 0xFFFF_FFFF } else { 0 },
            false,
        ),
        (
            V::VE_INFO_EXIT_QUALIFICATION.raw(),
            v.ve_info.exit_qualification,
            false,
        ),
        (V::VE_INFO_GLA.raw(), v.ve_info.gla, false),
        (V::VE_INFO_GPA.raw(), v.ve_info.gpa, false),
        (
            V::VE_INFO_EPTP_INDEX.raw(),
            u64::from(v.ve_info.eptp_index),
            false,
        ),
    ];
    if debug {
        for (i, g) in v.gprs.iter().enumerate() {
            if i != 4 {
                f.push((V::GPR_BASE.raw() + i as u64, *g, true));
            }
        }
    }
    // XCR0 starts as the x87|SSE reset value; VCPU_STATE_DETAILS bit 0 (virtual interrupt
    // pending) is never set by the scripted engine; PEND_NMI is the host's NMI request.
    f.push((V::XCR0.raw(), 0x3, false));
    f.push((V::VCPU_STATE_DETAILS.raw(), 0, false));
    f.push((V::PEND_NMI.raw(), u64::from(v.pend_nmi), true));
    f.push((V::VCPU_STATE.raw(), u64::from(v.state), false));
    f.push((V::VCPU_INDEX.raw(), u64::from(v.index), false));
    f
}

fn vp_rdwr(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
    write: bool,
) -> LeafResult {
    let field = regs.rdx;
    let (value, mask) = (regs.r8, regs.r9);
    if !write && ctx.version > 0 {
        regs.rdx = u64::MAX;
    }
    regs.r8 = 0;
    let tdvpr = regs.rcx;
    let tdr = lock_tdvpr(m, ctx, st, tdvpr, OperandId::RCX, Mode::Shared)?;
    let legal: &[u8] = if write {
        &[1, 2, 3, 6, 7, 8, 9, 10]
    } else {
        &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    };
    st.check_td_state(&mut ctx.held, tdr, Some(Mode::Shared), legal)?;
    let debug = st.td(tdr).config.attributes & 1 != 0;
    let v = &st.vcpus[&tdvpr];
    if 1 + v.tdcx.len() < MIN_TDVPS_PAGES {
        return Err(codes::code(StatusCode::TDCX_NUM_INCORRECT));
    }
    let fields = vp_fields(v, debug);
    if !write && ctx.version > 0 && field | (0x7 << 52) == u64::MAX {
        regs.rdx = fields[0].0;
        return Ok(codes::code(StatusCode::METADATA_FIRST_FIELD_ID_IN_CONTEXT));
    }
    let Some(n) = normalize_field_id(field) else {
        return Err(codes::code(StatusCode::METADATA_FIELD_ID_INCORRECT));
    };
    let Some(i) = fields
        .iter()
        .position(|f| normalize_field_id(f.0) == Some(n))
    else {
        return Err(codes::code(StatusCode::METADATA_FIELD_ID_INCORRECT));
    };
    let (id, old, writable) = fields[i];
    if write {
        if !writable {
            return Err(codes::code(StatusCode::METADATA_FIELD_NOT_WRITABLE));
        }
        let new = (old & !mask) | (value & mask);
        let is_pend_nmi = normalize_field_id(id) == normalize_field_id(V::PEND_NMI.raw());
        if is_pend_nmi && new > 1 {
            return Err(codes::code(StatusCode::METADATA_FIELD_VALUE_NOT_VALID));
        }
        if let Some(v) = st.vcpus.get_mut(&tdvpr) {
            if is_pend_nmi {
                v.pend_nmi = new != 0;
            } else {
                v.gprs[(id & 0xF) as usize] = new;
            }
        }
    } else if ctx.version > 0 {
        regs.rdx = fields.get(i + 1).map_or(u64::MAX, |f| f.0);
    }
    regs.r8 = old;
    ok()
}

/// TDH.VP.RD (`tdh_vp_rd_wr.c`): RCX = TDVPR, RDX = field → R8 (v1: RDX = next). Implemented:
/// VE_INFO (class 2), XCR0, VCPU_STATE_DETAILS, PEND_NMI, VCPU_STATE, VCPU_INDEX, and the guest
/// GPRs for DEBUG TDs.
pub(crate) fn tdh_vp_rd(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    vp_rdwr(m, ctx, st, regs, false)
}

/// TDH.VP.WR (`tdh_vp_rd_wr.c`): RCX = TDVPR, RDX = field, R8 = value, R9 = mask → R8 = old.
/// Writable in the emulated subset: PEND_NMI (0/1), and the guest GPRs of DEBUG TDs.
pub(crate) fn tdh_vp_wr(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    vp_rdwr(m, ctx, st, regs, true)
}

/// TDH.VP.FLUSH (`tdh_vp_flush.c`): RCX = TDVPR; must run on the LP the vCPU is associated
/// with.
pub(crate) fn tdh_vp_flush(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    let tdvpr = regs.rcx;
    let tdr = lock_tdvpr(m, ctx, st, tdvpr, OperandId::RCX, Mode::Exclusive)?;
    if st.td(tdr).lifecycle != lc::KEYS_CONFIGURED {
        return Err(codes::code(StatusCode::TD_KEYS_NOT_CONFIGURED));
    }
    let v = &st.vcpus[&tdvpr];
    if 1 + v.tdcx.len() < MIN_TDVPS_PAGES {
        // map_tdvps fails on an incomplete TDVPS.
        return Err(codes::code(StatusCode::TDCX_NUM_INCORRECT));
    }
    if v.assoc_lp != Some(ctx.lp) {
        return Err(codes::code(StatusCode::VCPU_NOT_ASSOCIATED));
    }
    if let Some(v) = st.vcpus.get_mut(&tdvpr) {
        v.assoc_lp = None;
    }
    let td = st.td_mut(tdr);
    td.num_assoc_vcpus = td.num_assoc_vcpus.saturating_sub(1);
    ok()
}

/// TDH.MNG.VPFLUSHDONE (`tdh_mng_vpflushdone.c`): RCX = TDR.
pub(crate) fn tdh_mng_vpflushdone(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    let tdr = st.lock_tdr(
        &m.geo,
        &mut ctx.held,
        regs.rcx,
        OperandId::RCX,
        Mode::Exclusive,
    )?;
    ctx.held
        .lock(&mut st.locks, LockKey::Kot, Mode::Exclusive, OperandId::KOT)?;
    let td = st.td(tdr);
    if td.lifecycle != lc::KEYS_CONFIGURED && td.lifecycle != lc::HKID_ASSIGNED {
        return Err(codes::code(StatusCode::LIFECYCLE_STATE_INCORRECT));
    }
    if td.tdcx.len() >= MIN_TDCX && td.op_state != ops::UNINITIALIZED && td.num_assoc_vcpus != 0 {
        return Err(codes::code(StatusCode::FLUSHVP_NOT_DONE));
    }
    let hkid = td.hkid;
    let all = m.geo.all_packages();
    if let Some(k) = st.kot_mut(&m.geo, hkid) {
        k.state = kot::FLUSHED;
        k.wbinvd_pending = all;
    }
    st.td_mut(tdr).lifecycle = lc::BLOCKED;
    ok()
}

/// TDH.PHYMEM.CACHE.WB (`tdh_phymem_cache_wb.c`): RCX = 0 start / 1 resume; per package.
/// The emulated write-back completes in one call (a forced INTERRUPTED_RESUMABLE, see
/// `FaultInjector`, leaves it undone; resuming with RCX = 1 is then accepted).
pub(crate) fn tdh_phymem_cache_wb(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    if regs.rcx > 1 {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
    }
    ctx.held
        .lock(&mut st.locks, LockKey::Kot, Mode::Shared, OperandId::KOT)?;
    let bit = 1u64 << ctx.pkg;
    let mut any = false;
    for k in st.kot.iter_mut() {
        if k.state == kot::FLUSHED && k.wbinvd_pending & bit != 0 {
            k.wbinvd_pending &= !bit;
            any = true;
        }
    }
    let _ = m;
    if !any {
        return Ok(codes::code(StatusCode::NO_HKID_READY_TO_WBCACHE));
    }
    ok()
}

/// TDH.MNG.KEY.FREEID (`tdh_mng_key_freeid.c`): RCX = TDR.
pub(crate) fn tdh_mng_key_freeid(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    let tdr = st.lock_tdr(
        &m.geo,
        &mut ctx.held,
        regs.rcx,
        OperandId::RCX,
        Mode::Exclusive,
    )?;
    if st.td(tdr).lifecycle != lc::BLOCKED {
        return Err(codes::code(StatusCode::LIFECYCLE_STATE_INCORRECT));
    }
    ctx.held
        .lock(&mut st.locks, LockKey::Kot, Mode::Exclusive, OperandId::KOT)?;
    let hkid = st.td(tdr).hkid;
    match st.kot_mut(&m.geo, hkid) {
        Some(k) if k.wbinvd_pending != 0 => {
            return Err(codes::code(StatusCode::WBCACHE_NOT_COMPLETE))
        }
        Some(k) => {
            k.state = kot::FREE;
        }
        None => {}
    }
    st.td_mut(tdr).lifecycle = lc::TEARDOWN;
    ok()
}

/// TDH.MNG.KEY.RECLAIMID: a no-op in 1.5.
pub(crate) fn tdh_mng_key_reclaimid(
    _m: &EmulatedModule,
    _ctx: &mut Ctx,
    _st: &mut State,
    _regs: &mut Regs,
) -> LeafResult {
    ok()
}

/// TDH.PHYMEM.PAGE.RECLAIM (`tdh_phymem_page_reclaim.c`): RCX = page PA → RCX = PAMT type,
/// RDX = owner TDR, R8 = page size (set before the lifecycle checks, as the module does).
pub(crate) fn tdh_phymem_page_reclaim(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    let pa = regs.rcx;
    regs.rcx = 0;
    regs.rdx = 0;
    regs.r8 = 0;
    regs.r9 = 0;
    regs.r10 = 0;
    regs.r11 = 0;
    if pa & 0xFFF != 0 || m.geo.has_hkid_bits(pa) {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
    }
    let Some(loc) = st.pamt_loc(pa) else {
        return codes::err(StatusCode::OPERAND_ADDR_RANGE_ERROR, OperandId::RCX);
    };
    // The PAMT lock of a 2M page is its head's.
    let e = *st.pamt(loc);
    let head = if e.size == 1 { pa & !0x1F_FFFF } else { pa };
    ctx.held.lock(
        &mut st.locks,
        LockKey::Page(head),
        Mode::Exclusive,
        OperandId::RCX,
    )?;
    if e.ty == pt::NDA || e.ty == pt::RSVD {
        return codes::err(StatusCode::PAGE_METADATA_INCORRECT, OperandId::RCX);
    }
    regs.rcx = u64::from(e.ty);
    regs.rdx = e.owner;
    regs.r8 = u64::from(e.size);
    if e.size == 1 && pa != head {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
    }
    let pages = if e.size == 1 { 512 } else { 1 };
    if e.ty != pt::TDR {
        ctx.held.lock(
            &mut st.locks,
            LockKey::Page(e.owner),
            Mode::Shared,
            OperandId::TDR,
        )?;
        if st
            .tds
            .get(&e.owner)
            .is_none_or(|t| t.lifecycle != lc::TEARDOWN)
        {
            return Err(codes::code(StatusCode::LIFECYCLE_STATE_INCORRECT));
        }
        st.chld_sub(e.owner, pages);
        match e.ty {
            pt::TDVPR => {
                st.vcpus.remove(&pa);
            }
            pt::EPT => {
                if let Some(td) = st.tds.get_mut(&e.owner) {
                    td.sept.tables.remove(&pa);
                }
            }
            pt::TDCX => {
                if let Some(td) = st.tds.get_mut(&e.owner) {
                    td.tdcx.retain(|p| *p != pa);
                }
                for v in st.vcpus.values_mut() {
                    v.tdcx.retain(|p| *p != pa);
                }
            }
            _ => {}
        }
    } else {
        let Some(td) = st.tds.get(&pa) else {
            return codes::err(StatusCode::PAGE_METADATA_INCORRECT, OperandId::RCX);
        };
        if td.lifecycle != lc::TEARDOWN {
            return Err(codes::code(StatusCode::LIFECYCLE_STATE_INCORRECT));
        }
        if td.chldcnt != 0 {
            return Err(codes::code(StatusCode::TD_ASSOCIATED_PAGES_EXIST));
        }
        st.tds.remove(&pa);
    }
    st.set_pages(&m.mem, head, pages, pt::NDA, 0, 0);
    ok()
}

/// TDH.PHYMEM.PAGE.WBINVD (`tdh_phymem_page_wbinvd.c`): RCX = page PA with the HKID bits.
/// The page (HKID bits removed) must be a free (PT_NDA) TDMR page: Linux calls it after
/// RECLAIM. Cache maintenance itself is a no-op here.
pub(crate) fn tdh_phymem_page_wbinvd(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    let pa = m.geo.strip_hkid(regs.rcx);
    st.lock_explicit_page(
        &m.geo,
        &mut ctx.held,
        pa,
        OperandId::RCX,
        Mode::Shared,
        pt::NDA,
    )?;
    ok()
}

/// TDH.PHYMEM.PAGE.RDMD (`tdh_phymem_page_rdmd.c`): RCX = page PA → RCX = type, RDX =
/// owner, R8 = size, R9 = BEPOCH.
pub(crate) fn tdh_phymem_page_rdmd(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    let pa = regs.rcx;
    if pa & 0xFFF != 0 || m.geo.has_hkid_bits(pa) {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
    }
    let Some(loc) = st.pamt_loc(pa) else {
        return codes::err(StatusCode::OPERAND_ADDR_RANGE_ERROR, OperandId::RCX);
    };
    let e = *st.pamt(loc);
    let head = if e.size == 1 { pa & !0x1F_FFFF } else { pa };
    ctx.held.lock(
        &mut st.locks,
        LockKey::Page(head),
        Mode::Shared,
        OperandId::RCX,
    )?;
    regs.rcx = u64::from(e.ty);
    regs.rdx = e.owner;
    regs.r8 = u64::from(e.size);
    regs.r9 = e.bepoch;
    regs.r10 = 0;
    regs.r11 = 0;
    ok()
}
