//! TD and vCPU management leaves and teardown: TDH.MNG.*, TDH.VP.CREATE/ADDCX/INIT/RD/WR/FLUSH,
//! TDH.PHYMEM.*.

use tdx_abi::call::Regs;
use tdx_abi::measure::MrtdBuilder;

use super::abi_shim::*;
use super::sept;
use super::state::*;
use super::sys::{
    check_field_id, field_key, ATTRIBUTES_FIXED0, ATTRIBUTES_FIXED1, CONFIG_FLAGS_FIXED0,
    CPUID1_EAX, CPUID_CONFIG_LEAVES, MAX_VCPUS_PER_TD, XFAM_FIXED0, XFAM_FIXED1,
};

fn zero_page(st: &State, pa: u64) {
    st.arena.fill(pa, 4096, 0);
}

// tdh_mng_create.c
pub(crate) fn tdh_mng_create(st: &mut State, regs: &mut Regs) -> LeafResult {
    let (tdr, hkid) = (regs.rcx, regs.rdx);
    if hkid >> 16 != 0 || !st.is_private_hkid(hkid) || st.global_hkid == Some(hkid as u16) {
        return fail(OPERAND_INVALID, OP_RDX);
    }
    st.check_page(tdr, OP_RCX, PamtPageType::Nda, true)?;
    if st.kot[hkid as usize].0 != KotState::Free {
        return fail(HKID_NOT_FREE, 0);
    }
    zero_page(st, tdr);
    st.kot[hkid as usize] = (KotState::Assigned, 0);
    st.tds.insert(tdr, Td::new(hkid as u16));
    st.set_pamt(tdr, PamtPageType::Tdr, 0, 0, tdr);
    Ok(0)
}

// tdh_mng_key_config.c
pub(crate) fn tdh_mng_key_config(st: &mut State, lp: u32, regs: &mut Regs) -> LeafResult {
    let tdr = st.check_tdr(regs.rcx, OP_RCX, true)?;
    let pkg = st.package_of(lp);
    let all = st.all_packages();
    let td = st.td_mut(tdr)?;
    if td.fatal {
        return fail(TD_FATAL, 0);
    }
    if td.lifecycle != Lifecycle::HkidAssigned {
        return fail(LIFECYCLE_STATE_INCORRECT, 0);
    }
    if td.pkg_config_bitmap & (1 << pkg) != 0 {
        return Ok(status(KEY_CONFIGURED, 0));
    }
    td.pkg_config_bitmap |= 1 << pkg;
    if td.pkg_config_bitmap == all {
        td.lifecycle = Lifecycle::KeysConfigured;
    }
    Ok(0)
}

// tdh_mng_add_cx.c
pub(crate) fn tdh_mng_addcx(st: &mut State, regs: &mut Regs) -> LeafResult {
    let (page, tdr) = (regs.rcx, regs.rdx);
    let tdr = st.check_tdr(tdr, OP_RDX, true)?;
    let td = st.td(tdr)?;
    if td.fatal {
        return fail(TD_FATAL, 0);
    }
    if td.lifecycle != Lifecycle::KeysConfigured {
        return fail(TD_KEYS_NOT_CONFIGURED, 0);
    }
    if td.tdcx.len() >= MIN_TDCS_PAGES && td.op_state != OP_UNINITIALIZED {
        return fail(OP_STATE_INCORRECT, 0);
    }
    if td.tdcx.len() >= MAX_TDCS_PAGES {
        return fail(TDCX_NUM_INCORRECT, OP_RCX);
    }
    st.check_page(page, OP_RCX, PamtPageType::Nda, true)?;
    let idx = st.td(tdr)?.tdcx.len();
    if idx == 2 {
        st.arena.fill(page, 4096, 0xFF); // MSR bitmaps: intercept everything
    } else {
        zero_page(st, page);
    }
    if idx == TDCS_SEPT_ROOT_PAGE {
        st.sept_pages
            .insert(page, Box::new([sept::FREE_ENTRY; sept::ENTRIES]));
    }
    st.set_pamt(page, PamtPageType::Tdcx, tdr, 0, page);
    let td = st.td_mut(tdr)?;
    td.tdcx.push(page);
    td.chldcnt += 1;
    Ok(0)
}

/// TD_PARAMS offsets (§5.1).
const TD_PARAMS_SIZE: usize = 1024;

fn le64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// FIXED0/FIXED1 rule: no bit outside FIXED0, every FIXED1 bit set.
fn fixed_bits_ok(value: u64, fixed0: u64, fixed1: u64) -> bool {
    value & !fixed0 == 0 && value & fixed1 == fixed1
}

// tdh_mng_init.c
pub(crate) fn tdh_mng_init(st: &mut State, regs: &mut Regs) -> LeafResult {
    let tdr = st.check_tdr(regs.rcx, OP_RCX, true)?;
    st.check_td_state(tdr, &[OP_UNINITIALIZED])?;
    let params_pa = regs.rdx;
    if params_pa % 1024 != 0 {
        return fail(OPERAND_INVALID, OP_RDX);
    }
    st.check_shared_hpa(params_pa, TD_PARAMS_SIZE as u64, OP_RDX)?;
    let mut p = [0u8; TD_PARAMS_SIZE];
    if !st.arena.read(params_pa, &mut p) {
        return fail(OPERAND_INVALID, OP_RDX);
    }
    let attributes = le64(&p, 0);
    if !fixed_bits_ok(attributes, ATTRIBUTES_FIXED0, ATTRIBUTES_FIXED1) {
        return fail(OPERAND_INVALID, OP_ATTRIBUTES);
    }
    let xfam = le64(&p, 8);
    if !fixed_bits_ok(xfam, XFAM_FIXED0, XFAM_FIXED1) {
        return fail(OPERAND_INVALID, OP_XFAM);
    }
    let max_vcpus = u16::from_le_bytes([p[16], p[17]]);
    if max_vcpus == 0 || u64::from(max_vcpus) > MAX_VCPUS_PER_TD {
        return fail(OPERAND_INVALID, OP_MAX_VCPUS);
    }
    // L2 VMs (TD partitioning) are not emulated.
    if p[18] != 0 {
        return fail(OPERAND_INVALID, OP_NUM_L2_VMS);
    }
    // MSR_CONFIG_CTLS: only bit 0 defined; IA32_ARCH_CAPABILITIES_CONFIG must be 0 (mask 0).
    if p[19] & !1 != 0 || le64(&p, 224) != 0 {
        return fail(OPERAND_INVALID, OP_IA32_ARCH_CAPABILITIES_CONFIG);
    }
    let eptp = le64(&p, 24);
    let pwl_minus_1 = (eptp >> 3) & 7;
    if eptp & 7 != 6 || !(3..=4).contains(&pwl_minus_1) || eptp >> 6 != 0 {
        return fail(OPERAND_INVALID, OP_EPTP_CONTROLS);
    }
    let config_flags = le64(&p, 32);
    if config_flags & !CONFIG_FLAGS_FIXED0 != 0 {
        return fail(OPERAND_INVALID, OP_EXEC_CONTROLS);
    }
    // GPAW 52 needs a 5-level SEPT and GPAW 48 a 4-level one.
    if (config_flags & 1 == 1) != (pwl_minus_1 == 4) {
        return fail(OPERAND_INVALID, OP_EPTP_CONTROLS);
    }
    let tsc = u16::from_le_bytes([p[40], p[41]]);
    if !(4..=400).contains(&tsc) {
        return fail(OPERAND_INVALID, OP_TSC_FREQUENCY);
    }
    // CPUID_VALUES: every bit is configurable on this platform (SYS.RD CPUID_CONFIG_VALUES).
    let cpuid_end = 256 + 16 * CPUID_CONFIG_LEAVES.len();
    let reserved_zero = p[20..24].iter().all(|b| *b == 0)
        && p[42..80].iter().all(|b| *b == 0)
        && p[232..256].iter().all(|b| *b == 0)
        && p[cpuid_end..].iter().all(|b| *b == 0);
    if !reserved_zero {
        return fail(OPERAND_INVALID, OP_RDX);
    }
    let mut cfg = TdConfig {
        attributes,
        xfam,
        max_vcpus,
        eptp_controls: eptp,
        config_flags,
        tsc_frequency: tsc,
        ..TdConfig::default()
    };
    cfg.mrconfigid.copy_from_slice(&p[80..128]);
    cfg.mrowner.copy_from_slice(&p[128..176]);
    cfg.mrownerconfig.copy_from_slice(&p[176..224]);
    let td = st.td_mut(tdr)?;
    td.cfg = cfg;
    td.mrtd_builder = Some(MrtdBuilder::new());
    td.rtmr = [[0; 48]; 4];
    td.op_state = OP_INITIALIZED;
    Ok(0)
}

/// TD-scope metadata: (class, field code) → value (§5.11b); `None` if unknown.
fn td_field(st: &State, tdr: u64, class: u64, code: u64) -> Option<u64> {
    let td = st.tds.get(&tdr)?;
    let m48 = |a: &[u8; 48], i: u64| -> Option<u64> {
        let i = usize::try_from(i).ok()?;
        (i < 6).then(|| le64(a, i * 8))
    };
    Some(match (class, code) {
        (0x00, 2) => td.tdcx.len() as u64,
        (0x00, 4) => td.chldcnt,
        (0x00, 5) => td.lifecycle as u64,
        (0x01, 1) => u64::from(td.hkid),
        (0x10, 1) => u64::from(td.num_vcpus),
        (0x10, 2) => u64::from(td.num_assoc_vcpus),
        (0x10, 4) => u64::from(td.op_state),
        (0x11, 0) => td.cfg.attributes,
        (0x11, 1) => td.cfg.xfam,
        (0x11, 2) => u64::from(td.cfg.max_vcpus),
        (0x11, 3) => u64::from(td.cfg.gpaw52()),
        (0x11, 4) => td.cfg.eptp_controls,
        (0x11, 0xC) => u64::from(td.cfg.tsc_frequency),
        (0x11, 0x10) => td.notify_enables,
        (0x11, 0x16) => td.cfg.config_flags,
        (0x11, 0x17) => td.td_ctls,
        (0x12, 0) => td.epoch,
        (0x13, c @ 0..=5) => m48(&td.mrtd, c)?,
        (0x13, c @ 0x10..=0x15) => m48(&td.cfg.mrconfigid, c - 0x10)?,
        (0x13, c @ 0x18..=0x1D) => m48(&td.cfg.mrowner, c - 0x18)?,
        (0x13, c @ 0x20..=0x25) => m48(&td.cfg.mrownerconfig, c - 0x20)?,
        (0x13, c @ 0x40..=0x57) => {
            let i = (c - 0x40) as usize;
            m48(&td.rtmr[i / 6], (i % 6) as u64)?
        }
        _ => return None,
    })
}

/// TD-scope field value by full field id (for TDG.VM.RD).
pub(crate) fn td_field_value(st: &State, tdr: u64, id: u64) -> Result<u64, u64> {
    check_field_id(id)?;
    let (class, code) = class_code(field_key(id));
    td_field(st, tdr, class, code).ok_or(status(METADATA_FIELD_ID_INCORRECT, OP_RDX))
}

/// Splits a field id into (class, field code).
fn class_code(id: u64) -> (u64, u64) {
    ((id >> 56) & 0x3F, id & 0xFF_FFFF)
}

// tdh_mng_rd.c
pub(crate) fn tdh_mng_rd(st: &mut State, regs: &mut Regs) -> LeafResult {
    let tdr = st.check_tdr(regs.rcx, OP_RCX, false)?;
    check_field_id(regs.rdx)?;
    let (class, code) = class_code(field_key(regs.rdx));
    // TDR fields (classes 0, 1) are readable in any lifecycle; TDCS fields need a TDCS.
    if class > 1 {
        st.check_td_state(tdr, &[OP_INITIALIZED, OP_RUNNABLE])?;
    }
    let Some(v) = td_field(st, tdr, class, code) else {
        return fail(METADATA_FIELD_ID_INCORRECT, OP_RDX);
    };
    regs.r8 = v;
    Ok(0)
}

// tdh_mng_wr.c: the host may write NOTIFY_ENABLES only (non-debug TD).
pub(crate) fn tdh_mng_wr(st: &mut State, regs: &mut Regs) -> LeafResult {
    let tdr = st.check_tdr(regs.rcx, OP_RCX, false)?;
    st.check_td_state(tdr, &[OP_INITIALIZED, OP_RUNNABLE])?;
    check_field_id(regs.rdx)?;
    let (class, code) = class_code(field_key(regs.rdx));
    if td_field(st, tdr, class, code).is_none() {
        return fail(METADATA_FIELD_ID_INCORRECT, OP_RDX);
    }
    if (class, code) != (0x11, 0x10) {
        return fail(METADATA_FIELD_NOT_WRITABLE, OP_RDX);
    }
    let (value, mask) = (regs.r8, regs.r9);
    let td = st.td_mut(tdr)?;
    let old = td.notify_enables;
    td.notify_enables = (old & !mask) | (value & mask & 1);
    regs.r8 = old;
    Ok(0)
}

// tdh_vp_create.c
pub(crate) fn tdh_vp_create(st: &mut State, regs: &mut Regs) -> LeafResult {
    let (tdvpr, tdr) = (regs.rcx, regs.rdx);
    let tdr = st.check_tdr(tdr, OP_RDX, false)?;
    st.check_td_state(tdr, &[OP_INITIALIZED])?;
    st.check_page(tdvpr, OP_RCX, PamtPageType::Nda, true)?;
    zero_page(st, tdvpr);
    st.set_pamt(tdvpr, PamtPageType::Tdvpr, tdr, 0, tdvpr);
    st.vcpus.insert(
        tdvpr,
        Vcpu {
            tdr,
            tdcx: Vec::new(),
            state: VCPU_UNINITIALIZED,
            index: 0,
            assoc_lp: None,
            running: false,
            entry_epoch: 0,
            gprs: Regs::default(),
            ve_info: VeInfo::default(),
        },
    );
    st.td_mut(tdr)?.chldcnt += 1;
    Ok(0)
}

// tdh_vp_addcx.c
pub(crate) fn tdh_vp_addcx(st: &mut State, regs: &mut Regs) -> LeafResult {
    let (page, tdvpr) = (regs.rcx, regs.rdx);
    let tdr = st.check_tdvpr(tdvpr, OP_RDX, true)?;
    st.check_td_state(tdr, &[OP_INITIALIZED])?;
    let v = &st.vcpus[&tdvpr];
    if v.state != VCPU_UNINITIALIZED {
        return fail(VCPU_STATE_INCORRECT, 0);
    }
    if v.tdcx.len() + 1 >= TDVPS_PAGES {
        return fail(TDCX_NUM_INCORRECT, OP_RCX);
    }
    st.check_page(page, OP_RCX, PamtPageType::Nda, true)?;
    zero_page(st, page);
    st.set_pamt(page, PamtPageType::Tdcx, tdr, 0, page);
    if let Some(v) = st.vcpus.get_mut(&tdvpr) {
        v.tdcx.push(page);
    }
    st.td_mut(tdr)?.chldcnt += 1;
    Ok(0)
}

// tdh_vp_init.c (version 1: R8 = x2APIC ID, accepted and ignored beyond the version check)
pub(crate) fn tdh_vp_init(st: &mut State, lp: u32, regs: &mut Regs) -> LeafResult {
    let tdvpr = regs.rcx;
    let tdr = st.check_tdvpr(tdvpr, OP_RCX, true)?;
    st.check_td_state(tdr, &[OP_INITIALIZED])?;
    let v = &st.vcpus[&tdvpr];
    if v.tdcx.len() + 1 < TDVPS_PAGES {
        return fail(TDCX_NUM_INCORRECT, OP_RCX);
    }
    if v.state != VCPU_UNINITIALIZED {
        return fail(VCPU_STATE_INCORRECT, 0);
    }
    if v.assoc_lp.is_some_and(|a| a != lp) {
        return fail(VCPU_ASSOCIATED, 0);
    }
    let td = st.td(tdr)?;
    if td.num_vcpus >= u32::from(td.cfg.max_vcpus) {
        return fail(MAX_VCPUS_EXCEEDED, 0);
    }
    let gpaw = u64::from(td.cfg.gpaw_bits());
    let td = st.td_mut(tdr)?;
    let index = td.num_vcpus;
    td.num_vcpus += 1;
    td.num_assoc_vcpus += 1;
    let init = regs.rdx;
    let v = st
        .vcpus
        .get_mut(&tdvpr)
        .ok_or(status(PAGE_METADATA_INCORRECT, OP_RCX))?;
    v.index = index;
    v.assoc_lp = Some(lp);
    v.gprs = Regs {
        rbx: gpaw,
        rcx: init,
        r8: init,
        rdx: CPUID1_EAX,
        rsi: u64::from(index),
        ..Regs::default()
    };
    v.state = VCPU_READY;
    Ok(0)
}

/// VP-scope fields (§5.11b): (class, code) → value.
fn vp_field(st: &State, tdvpr: u64, class: u64, code: u64) -> Option<Result<u64, u64>> {
    let v = st.vcpus.get(&tdvpr)?;
    let debug = st
        .tds
        .get(&v.tdr)
        .is_some_and(|t| t.cfg.attributes & 1 != 0);
    Some(Ok(match (class, code) {
        (0x20, 0) => u64::from(v.state),
        (0x20, 2) => u64::from(v.index),
        (0x02, 0) => u64::from(v.ve_info.exit_reason),
        (0x02, 1) => {
            if v.ve_info.valid {
                0xFFFF_FFFF
            } else {
                0
            }
        }
        (0x02, 2) => v.ve_info.exit_qualification,
        (0x02, 3) => v.ve_info.gla,
        (0x02, 4) => v.ve_info.gpa,
        (0x02, 5) => u64::from(v.ve_info.eptp_index),
        (0x10, n @ 0..=15) => {
            if !debug {
                return Some(fail(METADATA_FIELD_NOT_READABLE, OP_RDX));
            }
            v.gprs.gpr(n as u8).unwrap_or(0)
        }
        _ => return None,
    }))
}

// tdh_vp_rd.c
pub(crate) fn tdh_vp_rd(st: &mut State, regs: &mut Regs) -> LeafResult {
    let tdvpr = regs.rcx;
    let tdr = st.check_tdvpr(tdvpr, OP_RCX, false)?;
    st.check_td_state(tdr, &[OP_INITIALIZED, OP_RUNNABLE])?;
    check_field_id(regs.rdx)?;
    let (class, code) = class_code(field_key(regs.rdx));
    match vp_field(st, tdvpr, class, code) {
        None => fail(METADATA_FIELD_ID_INCORRECT, OP_RDX),
        Some(r) => {
            regs.r8 = r?;
            Ok(0)
        }
    }
}

// tdh_vp_wr.c: nothing is host-writable in a non-debug TD in this emulator.
pub(crate) fn tdh_vp_wr(st: &mut State, regs: &mut Regs) -> LeafResult {
    let tdvpr = regs.rcx;
    let tdr = st.check_tdvpr(tdvpr, OP_RCX, true)?;
    st.check_td_state(tdr, &[OP_INITIALIZED, OP_RUNNABLE])?;
    check_field_id(regs.rdx)?;
    let (class, code) = class_code(field_key(regs.rdx));
    match vp_field(st, tdvpr, class, code) {
        None => fail(METADATA_FIELD_ID_INCORRECT, OP_RDX),
        Some(_) => fail(METADATA_FIELD_NOT_WRITABLE, OP_RDX),
    }
}

// tdh_vp_flush.c
pub(crate) fn tdh_vp_flush(st: &mut State, lp: u32, regs: &mut Regs) -> LeafResult {
    let tdvpr = regs.rcx;
    let tdr = st.check_tdvpr(tdvpr, OP_RCX, true)?;
    let td = st.td(tdr)?;
    if td.fatal {
        return fail(TD_FATAL, 0);
    }
    if td.lifecycle != Lifecycle::KeysConfigured {
        return fail(TD_KEYS_NOT_CONFIGURED, 0);
    }
    if st.vcpus[&tdvpr].assoc_lp != Some(lp) {
        return fail(VCPU_NOT_ASSOCIATED, 0);
    }
    if let Some(v) = st.vcpus.get_mut(&tdvpr) {
        v.assoc_lp = None;
    }
    let td = st.td_mut(tdr)?;
    td.num_assoc_vcpus = td.num_assoc_vcpus.saturating_sub(1);
    Ok(0)
}

// tdh_mng_vpflushdone.c
pub(crate) fn tdh_mng_vpflushdone(st: &mut State, regs: &mut Regs) -> LeafResult {
    let tdr = st.check_tdr(regs.rcx, OP_RCX, true)?;
    let all = st.all_packages();
    let td = st.td(tdr)?;
    if !matches!(
        td.lifecycle,
        Lifecycle::HkidAssigned | Lifecycle::KeysConfigured
    ) {
        return fail(LIFECYCLE_STATE_INCORRECT, 0);
    }
    if td.lifecycle == Lifecycle::KeysConfigured
        && td.tdcx.len() >= MIN_TDCS_PAGES
        && td.num_assoc_vcpus != 0
    {
        return fail(FLUSHVP_NOT_DONE, 0);
    }
    let hkid = td.hkid as usize;
    st.kot[hkid] = (KotState::Flushed, all);
    st.td_mut(tdr)?.lifecycle = Lifecycle::Blocked;
    Ok(0)
}

// tdh_phymem_cache_wb.c (an emulated cache needs no flushing: every call completes, unless a
// fault injector forces TDX_INTERRUPTED_RESUMABLE first)
pub(crate) fn tdh_phymem_cache_wb(st: &mut State, lp: u32, regs: &mut Regs) -> LeafResult {
    if regs.rcx > 1 {
        return fail(OPERAND_INVALID, OP_RCX);
    }
    let bit = 1u64 << st.package_of(lp);
    let mut any = false;
    for (state, bitmap) in st.kot.iter_mut() {
        if *state == KotState::Flushed && *bitmap & bit != 0 {
            *bitmap &= !bit;
            any = true;
        }
    }
    if !any {
        return Ok(status(NO_HKID_READY_TO_WBCACHE, 0));
    }
    Ok(0)
}

// tdh_mng_key_freeid.c
pub(crate) fn tdh_mng_key_freeid(st: &mut State, regs: &mut Regs) -> LeafResult {
    let tdr = st.check_tdr(regs.rcx, OP_RCX, true)?;
    let td = st.td(tdr)?;
    if td.lifecycle != Lifecycle::Blocked {
        return fail(LIFECYCLE_STATE_INCORRECT, 0);
    }
    let hkid = td.hkid as usize;
    if st.kot[hkid].1 != 0 {
        return fail(WBCACHE_NOT_COMPLETE, 0);
    }
    st.kot[hkid] = (KotState::Free, 0);
    st.td_mut(tdr)?.lifecycle = Lifecycle::Teardown;
    Ok(0)
}

/// Address checks shared by the PHYMEM leaves; returns the PA without HKID bits.
fn phymem_pa(st: &State, raw: u64, allow_hkid: bool) -> Result<u64, u64> {
    let pa = raw & ((1u64 << st.hkid_shift) - 1);
    let hkid = raw >> st.hkid_shift;
    if raw & 0xFFF != 0 || (!allow_hkid && hkid != 0) || raw >> 52 != 0 {
        return fail(OPERAND_INVALID, OP_RCX);
    }
    if allow_hkid && hkid != 0 && !st.is_private_hkid(hkid) {
        return fail(OPERAND_INVALID, OP_RCX);
    }
    if st.page_type(pa).is_none() {
        return fail(OPERAND_ADDR_RANGE_ERROR, OP_RCX);
    }
    Ok(pa)
}

// tdh_phymem_page_reclaim.c
pub(crate) fn tdh_phymem_page_reclaim(st: &mut State, regs: &mut Regs) -> LeafResult {
    let pa = phymem_pa(st, regs.rcx, false)?;
    if st.held_shared(pa) {
        return fail(OPERAND_BUSY, OP_RCX);
    }
    let ty = st.page_type(pa).unwrap_or(PamtPageType::Rsvd);
    if matches!(ty, PamtPageType::Nda | PamtPageType::Rsvd) {
        return fail(PAGE_METADATA_INCORRECT, OP_RCX);
    }
    let e = st.pamt_entry(pa);
    if e.head != pa {
        return fail(PAGE_METADATA_INCORRECT, OP_RCX);
    }
    let owner = if ty == PamtPageType::Tdr { pa } else { e.owner };
    let td = st.td(owner)?;
    if td.lifecycle != Lifecycle::Teardown {
        return fail(LIFECYCLE_STATE_INCORRECT, 0);
    }
    if ty == PamtPageType::Tdr && td.chldcnt != 0 {
        return fail(TD_ASSOCIATED_PAGES_EXIST, 0);
    }
    let frames: u64 = if e.level == 1 { 512 } else { 1 };
    for i in 0..frames {
        st.set_pamt(pa + i * 4096, PamtPageType::Nda, 0, 0, 0);
        st.poisoned.remove(&(pa + i * 4096));
    }
    match ty {
        PamtPageType::Tdr => {
            st.tds.remove(&pa);
        }
        PamtPageType::Tdvpr => {
            st.vcpus.remove(&pa);
        }
        PamtPageType::Ept | PamtPageType::Tdcx => {
            st.sept_pages.remove(&pa);
        }
        _ => {}
    }
    if ty != PamtPageType::Tdr {
        let td = st.td_mut(owner)?;
        td.chldcnt = td.chldcnt.saturating_sub(frames);
    }
    regs.rcx = ty as u64;
    regs.rdx = if ty == PamtPageType::Tdr { 0 } else { owner };
    regs.r8 = u64::from(e.level);
    Ok(0)
}

// tdh_phymem_page_wbinvd.c: RCX carries the HKID bits. Linux calls it after RECLAIM, so any
// PAMT type is accepted; the HKID must be a TDX private HKID (the global one for a TDR).
pub(crate) fn tdh_phymem_page_wbinvd(st: &mut State, regs: &mut Regs) -> LeafResult {
    phymem_pa(st, regs.rcx, true)?;
    Ok(0)
}

// tdh_phymem_page_rdmd.c
pub(crate) fn tdh_phymem_page_rdmd(st: &mut State, regs: &mut Regs) -> LeafResult {
    let pa = phymem_pa(st, regs.rcx, false)?;
    let ty = st.page_type(pa).unwrap_or(PamtPageType::Rsvd);
    let e = st.pamt_entry(pa);
    regs.rcx = ty as u64;
    regs.rdx = e.owner;
    regs.r8 = u64::from(e.level);
    regs.r9 = e.bepoch;
    Ok(0)
}
