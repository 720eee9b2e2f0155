//! Secure-EPT and memory leaves: MEM.SEPT.ADD/REMOVE/RD, MEM.PAGE.ADD/AUG/REMOVE,
//! MEM.RANGE.BLOCK/UNBLOCK, MEM.TRACK, MR.EXTEND, MR.FINALIZE.
//!
//! On S-EPT failures (EPT_WALK_FAILED, EPT_ENTRY_STATE_INCORRECT) RCX = the architectural
//! S-EPT entry and RDX = level (bits 2:0) | public state (bits 15:8) of the entry where the
//! walk stopped or of the target entry (`set_arch_septe_details_in_vmm_regs`).

use tdx_abi::call::Regs;
use tdx_abi::gpa::Gpa;
use tdx_abi::status::TdxStatus;

use super::codes::{self, OperandId, StatusCode};
use super::locks::{LockKey, Mode};
use super::sept::{self, St, Walk};
use super::state::{ops, pt, State, Td};
use super::{Ctx, EmulatedModule, LeafResult};

/// OP_STATEs in which a leaf is legal (§7.3; only 0..=2 occur without migration).
const I: &[u8] = &[ops::INITIALIZED];
const I_R: &[u8] = &[ops::INITIALIZED, ops::RUNNABLE, 3, 9];
const SEPT_ADD_STATES: &[u8] = &[1, 2, 3, 6, 7, 8, 9];
const BLOCK_STATES: &[u8] = &[1, 2, 3, 4, 5, 8, 9];
const REMOVE_STATES: &[u8] = &[1, 2, 3, 4, 5, 8, 9, 10];
const TRACK_STATES: &[u8] = &[1, 2, 3, 4, 5, 6, 7, 8, 9];
const ALL_BUT_U: &[u8] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10];

/// OP_STATEs that require blocking + TLB tracking before removal (RUNNABLE, LIVE_EXPORT,
/// LIVE_IMPORT).
fn tracking_required(op_state: u8) -> bool {
    matches!(op_state, 2 | 3 | 9)
}

fn ok() -> LeafResult {
    Ok(TdxStatus::SUCCESS)
}

/// Decodes and checks a GPA+level operand (`verify_page_info_input` and
/// `check_gpa_validity`): reserved bits 11:3 and 63:52 zero, level in range, GPA aligned to
/// the level, private (shared bit clear) and below GPAW. Failure: OPERAND_INVALID(RCX).
fn gpa_level(td: &Td, raw: u64, min: u8, max: u8) -> Result<(u64, u8), TdxStatus> {
    if raw & 0xFF8 != 0 || raw >> 52 != 0 {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
    }
    let level = (raw & 7) as u8;
    if level < min || level > max {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
    }
    let gpa = raw & sept::HPA_MASK;
    let size_mask = (1u64 << (12 + 9 * u32::from(level))) - 1;
    if gpa & size_mask != 0 {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
    }
    check_private_gpa(td, gpa)?;
    Ok((gpa, level))
}

fn check_private_gpa(td: &Td, gpa: u64) -> Result<(), TdxStatus> {
    let bits = if td.config.gpaw52 { 52 } else { 48 };
    if gpa >> bits != 0 || gpa & (1u64 << (bits - 1)) != 0 {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
    }
    Ok(())
}

/// A failing S-EPT status with the entry details in RCX/RDX.
fn sept_fail(regs: &mut Regs, code: StatusCode, level: u8, entry: u64) -> TdxStatus {
    regs.rcx = sept::arch_entry(entry);
    regs.rdx = sept::level_state(level, entry);
    codes::with_operand(code, OperandId::RCX)
}

/// The target entry of a leaf, found and entry-locked.
struct Target {
    table: u64,
    idx: usize,
    entry: u64,
    gpa: u64,
}

/// Walks to the entry for (`gpa`, `level`) and takes its entry lock
/// (`lock_sept_check_and_walk_private_gpa` + `sept_lock_acquire_host`).
fn walk_and_lock(
    st: &mut State,
    ctx: &mut Ctx,
    tdr: u64,
    gpa: u64,
    level: u8,
    regs: &mut Regs,
) -> Result<Target, TdxStatus> {
    match st.td(tdr).sept.walk(gpa, level) {
        Walk::Failed { level: l, entry } => {
            Err(sept_fail(regs, StatusCode::EPT_WALK_FAILED, l, entry))
        }
        Walk::Found { table, idx, entry } => {
            ctx.held.lock(
                &mut st.locks,
                LockKey::SeptEntry(tdr, gpa, level),
                Mode::Exclusive,
                OperandId::RCX,
            )?;
            Ok(Target {
                table,
                idx,
                entry,
                gpa,
            })
        }
    }
}

fn lock_sept_tree(st: &mut State, ctx: &mut Ctx, tdr: u64, mode: Mode) -> Result<(), TdxStatus> {
    ctx.held.lock(
        &mut st.locks,
        LockKey::SeptTree(tdr),
        mode,
        OperandId::SEPT_TREE,
    )
}

/// Number of 4K pages of a leaf at `level`.
fn pages_of(level: u8) -> u64 {
    1u64 << (9 * u32::from(level))
}

/// TDH.MEM.SEPT.ADD (`tdh_mem_sept_add.c`): RCX = GPA+lvl of the entry that will point to
/// the new table, RDX = TDR | bit 0 "allow an existing NL_MAPPED entry" (bits 11:1 and 63:52
/// reserved), R8 = new page (bit 63 ignored; all ones = none, version 1 only). With an
/// existing table and "allow existing" the leaf succeeds without using the page and returns
/// R8 with bit 63 set. RCX/RDX are 0 unless S-EPT details are returned.
pub(crate) fn tdh_mem_sept_add(
    m: &EmulatedModule,
    ctx: &mut Ctx,
    st: &mut State,
    regs: &mut Regs,
) -> LeafResult {
    const NULL_PA: u64 = u64::MAX;
    let (gpa_in, handle) = (regs.rcx, regs.rdx);
    let new_page = if regs.r8 == NULL_PA {
        NULL_PA
    } else {
        regs.r8 & !(1 << 63)
    };
    regs.rcx = 0;
    regs.rdx = 0;
    if handle & (0xFFE | (0xFFF << 52)) != 0 {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RDX);
    }
    let allow_existing = handle & 1 != 0;
    let tdr = st.lock_tdr(
        &m.geo,
        &mut ctx.held,
        handle & sept::HPA_MASK,
        OperandId::RDX,
        Mode::Shared,
    )?;
    st.check_td_state(&mut ctx.held, tdr, Some(Mode::Shared), SEPT_ADD_STATES)?;
    let root = st.td(tdr).sept.root_level;
    let (gpa, level) = gpa_level(st.td(tdr), gpa_in, 1, root)?;
    lock_sept_tree(st, ctx, tdr, Mode::Shared)?;
    let t = walk_and_lock(st, ctx, tdr, gpa, level, regs)?;
    let s = sept::state(t.entry);
    if !matches!(s, St::Free | St::NlMapped) {
        return Err(sept_fail(
            regs,
            StatusCode::EPT_ENTRY_STATE_INCORRECT,
            level,
            t.entry,
        ));
    }
    // process_l1_page
    if new_page == NULL_PA {
        if ctx.version == 0 {
            return codes::err(StatusCode::OPERAND_INVALID, OperandId::R8);
        }
        if s != St::NlMapped {
            return Err(sept_fail(
                regs,
                StatusCode::EPT_ENTRY_STATE_INCORRECT,
                level,
                t.entry,
            ));
        }
        return ok();
    }
    if s == St::NlMapped {
        if allow_existing {
            regs.r8 = new_page | (1 << 63);
            return ok();
        }
        return Err(sept_fail(
            regs,
            StatusCode::EPT_ENTRY_STATE_INCORRECT,
            level,
            t.entry,
        ));
    }
    st.lock_explicit_page(
        &m.geo,
        &mut ctx.held,
        new_page,
        OperandId::R8,
        Mode::Exclusive,
        pt::NDA,
    )?;
    m.mem.clear_poison(new_page, 1);
    st.set_pages(&m.mem, new_page, 1, pt::EPT, tdr, 0);
    st.chld_add(tdr, 1);
    let td = st.td_mut(tdr);
    td.sept
        .tables
        .insert(new_page, Box::new([sept::FREE_ENTRY; 512]));
    td.sept.set(t.table, t.idx, sept::nl_mapped(new_page));
    ok()
}

/// TDH.MEM.PAGE.ADD (`tdh_mem_page_add.c`): RCX = GPA (level 0), RDX = TDR, R8 = target
/// page, R9 = source page (shared). Copies the source, maps the GPA, extends MRTD with the
/// "MEM.PAGE.ADD" block.
pub(crate) fn tdh_mem_page_add(
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
    st.check_td_state(&mut ctx.held, tdr, None, I)?;
    let (gpa, level) = gpa_level(st.td(tdr), regs.rcx, 0, 0)?;
    let t = walk_and_lock(st, ctx, tdr, gpa, level, regs)?;
    if sept::state(t.entry) != St::Free {
        return Err(sept_fail(
            regs,
            StatusCode::EPT_ENTRY_STATE_INCORRECT,
            level,
            t.entry,
        ));
    }
    // The source is a shared HPA, read with a host key (a TD-owned page reads as zeros).
    let Some(src) = m.geo.shared_hpa(regs.r9, 4096) else {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::R9);
    };
    let page = regs.r8;
    st.lock_explicit_page(
        &m.geo,
        &mut ctx.held,
        page,
        OperandId::R8,
        Mode::Exclusive,
        pt::NDA,
    )?;
    let mut buf = [0u8; 4096];
    if m.mem.read(src, &mut buf).is_err() {
        return codes::err(StatusCode::OPERAND_ADDR_RANGE_ERROR, OperandId::R9);
    }
    if m.mem.raw_write(page, &buf).is_err() {
        return codes::err(StatusCode::OPERAND_ADDR_RANGE_ERROR, OperandId::R8);
    }
    m.mem.clear_poison(page, 1);
    st.set_pages(&m.mem, page, 1, pt::REG, tdr, 0);
    st.chld_add(tdr, 1);
    let td = st.td_mut(tdr);
    td.sept.set(t.table, t.idx, sept::mapped(page));
    if let Some(b) = td.mrtd_builder.as_mut() {
        let _ = b.mem_page_add(Gpa(gpa));
    }
    ok()
}

/// Finds the leaf mapping `gpa` (any level) without locks.
fn find_leaf(td: &Td, gpa: u64) -> Result<(u8, u64), (u8, u64)> {
    let mut level = td.sept.root_level;
    loop {
        match td.sept.walk(gpa, level) {
            Walk::Failed { level, entry } => return Err((level, entry)),
            Walk::Found { entry, .. } => {
                let s = sept::state(entry);
                if s.is_nl() && level > 0 {
                    level -= 1;
                    continue;
                }
                if s.is_leaf() {
                    return Ok((level, entry));
                }
                return Err((level, entry));
            }
        }
    }
}

/// TDH.MR.EXTEND (`tdh_mr_extend.c`): RCX = GPA (256-byte aligned, in a MAPPED page), RDX =
/// TDR. Extends MRTD with the header block and the 256 bytes. No leaf on the walk →
/// EPT_ENTRY_NOT_PRESENT(RCX) with the entry details; a leaf not MAPPED →
/// EPT_ENTRY_NOT_PRESENT.
pub(crate) fn tdh_mr_extend(
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
    st.check_td_state(&mut ctx.held, tdr, None, I)?;
    let gpa = regs.rcx;
    if gpa % 256 != 0 {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::RCX);
    }
    check_private_gpa(st.td(tdr), gpa)?;
    let (level, entry) = match find_leaf(st.td(tdr), gpa) {
        Ok(x) => x,
        // The walk to the leaf failed: EPT_ENTRY_NOT_PRESENT(RCX) with the details.
        Err((l, e)) => return Err(sept_fail(regs, StatusCode::EPT_ENTRY_NOT_PRESENT, l, e)),
    };
    if sept::state(entry) != St::Mapped {
        return Err(codes::code(StatusCode::EPT_ENTRY_NOT_PRESENT));
    }
    let offset = gpa & ((1u64 << (12 + 9 * u32::from(level))) - 1);
    let hpa = sept::hpa(entry) + offset;
    let mut chunk = [0u8; 256];
    if m.mem.raw_read(hpa, &mut chunk).is_err() {
        return codes::err(StatusCode::OPERAND_ADDR_RANGE_ERROR, OperandId::RCX);
    }
    if m.mem.is_poisoned(hpa & !0xFFF) {
        st.td_mut(tdr).fatal = true;
        return Err(codes::code(StatusCode::TD_FATAL));
    }
    if let Some(b) = st.td_mut(tdr).mrtd_builder.as_mut() {
        let _ = b.mr_extend(Gpa(gpa), &chunk);
    }
    ok()
}

/// TDH.MR.FINALIZE (`tdh_mr_finalize.c`): RCX = TDR. Needs at least one initialised vCPU.
pub(crate) fn tdh_mr_finalize(
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
    st.check_td_state(&mut ctx.held, tdr, None, I)?;
    let td = st.td_mut(tdr);
    if td.num_vcpus == 0 {
        return Err(codes::code(StatusCode::NO_VCPUS));
    }
    if let Some(b) = td.mrtd_builder.take() {
        td.mrtd = b.finalize();
    }
    td.op_state = ops::RUNNABLE;
    ok()
}

/// TDH.MEM.PAGE.AUG (`tdh_mem_page_aug.c`): RCX = GPA+lvl (4K or 2M), RDX = TDR, R8 = page.
/// The entry becomes PENDING; the page contents are not cleared (TDG.MEM.PAGE.ACCEPT does).
pub(crate) fn tdh_mem_page_aug(
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
    st.check_td_state(&mut ctx.held, tdr, Some(Mode::Shared), I_R)?;
    let (gpa, level) = gpa_level(st.td(tdr), regs.rcx, 0, 1)?;
    lock_sept_tree(st, ctx, tdr, Mode::Shared)?;
    let t = walk_and_lock(st, ctx, tdr, gpa, level, regs)?;
    if !matches!(sept::state(t.entry), St::Free | St::Removed) {
        return Err(sept_fail(
            regs,
            StatusCode::EPT_ENTRY_STATE_INCORRECT,
            level,
            t.entry,
        ));
    }
    // check_and_lock_free_range_hpa: aligned to the page size, every 4K entry free.
    let page = regs.r8;
    let n = pages_of(level);
    if page & (n * 4096 - 1) != 0 || m.geo.has_hkid_bits(page) {
        return codes::err(StatusCode::OPERAND_INVALID, OperandId::R8);
    }
    for i in 0..n {
        let Some(loc) = page.checked_add(i * 4096).and_then(|p| st.pamt_loc(p)) else {
            return codes::err(StatusCode::OPERAND_ADDR_RANGE_ERROR, OperandId::R8);
        };
        if i == 0 {
            ctx.held.lock(
                &mut st.locks,
                LockKey::Page(page),
                Mode::Exclusive,
                OperandId::R8,
            )?;
        }
        if st.pamt(loc).ty != pt::NDA {
            return codes::err(StatusCode::PAGE_METADATA_INCORRECT, OperandId::R8);
        }
    }
    st.set_pages(&m.mem, page, n, pt::REG, tdr, level);
    st.chld_add(tdr, n);
    st.td_mut(tdr).sept.set(t.table, t.idx, sept::pending(page));
    ok()
}

/// The PAMT BEPOCH of the page an entry maps (leaf page or child S-EPT page).
/// PAGE.REMOVE / SEPT.REMOVE in a TD that needs TLB tracking: the entry must be blocked
/// (`blocked`), else GPA_RANGE_NOT_BLOCKED, and its blocking epoch tracked, else
/// TLB_TRACKING_NOT_DONE (both with the SEPT entry details in RCX/RDX).
fn require_blocked_and_tracked(
    st: &State,
    tdr: u64,
    blocked: bool,
    regs: &mut Regs,
    level: u8,
    entry: u64,
) -> Result<(), TdxStatus> {
    let td = st.td(tdr);
    if !tracking_required(td.op_state) {
        return Ok(());
    }
    if !blocked {
        return Err(sept_fail(
            regs,
            StatusCode::GPA_RANGE_NOT_BLOCKED,
            level,
            entry,
        ));
    }
    if !td.is_tracked(bepoch_of(st, entry)) {
        return Err(sept_fail(
            regs,
            StatusCode::TLB_TRACKING_NOT_DONE,
            level,
            entry,
        ));
    }
    Ok(())
}

fn bepoch_of(st: &State, entry: u64) -> u64 {
    st.pamt_of(sept::hpa(entry)).map_or(0, |e| e.bepoch)
}

fn set_bepoch(st: &mut State, entry: u64, level: u8, epoch: u64) {
    let base = sept::hpa(entry);
    let n = if sept::state(entry).is_leaf() {
        pages_of(level)
    } else {
        1
    };
    for i in 0..n {
        if let Some(loc) = st.pamt_loc(base + i * 4096) {
            st.pamt_mut(loc).bepoch = epoch;
        }
    }
}

/// TDH.MEM.RANGE.BLOCK (`tdh_mem_range_block.c`): RCX = GPA+lvl, RDX = TDR.
pub(crate) fn tdh_mem_range_block(
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
    st.check_td_state(&mut ctx.held, tdr, Some(Mode::Shared), BLOCK_STATES)?;
    let root = st.td(tdr).sept.root_level;
    let (gpa, level) = gpa_level(st.td(tdr), regs.rcx, 0, root)?;
    lock_sept_tree(st, ctx, tdr, Mode::Exclusive)?;
    let t = walk_and_lock(st, ctx, tdr, gpa, level, regs)?;
    match sept::state(t.entry) {
        St::NlMapped | St::Mapped | St::BlockedW | St::Pending | St::PendingBlockedW => {}
        St::Blocked | St::NlBlocked | St::PendingBlocked => {
            // Success-class, with the entry details like the error cases.
            return Ok(sept_fail(
                regs,
                StatusCode::GPA_RANGE_ALREADY_BLOCKED,
                level,
                t.entry,
            ));
        }
        _ => {
            return Err(sept_fail(
                regs,
                StatusCode::EPT_ENTRY_STATE_INCORRECT,
                level,
                t.entry,
            ))
        }
    }
    let epoch = st.td(tdr).td_epoch;
    set_bepoch(st, t.entry, level, epoch);
    st.td_mut(tdr)
        .sept
        .set(t.table, t.idx, sept::blocked(t.entry));
    ok()
}

/// TDH.MEM.RANGE.UNBLOCK (`tdh_mem_range_unblock.c`): RCX = GPA+lvl, RDX = TDR.
pub(crate) fn tdh_mem_range_unblock(
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
    st.check_td_state(&mut ctx.held, tdr, Some(Mode::Shared), BLOCK_STATES)?;
    let root = st.td(tdr).sept.root_level;
    let (gpa, level) = gpa_level(st.td(tdr), regs.rcx, 0, root)?;
    lock_sept_tree(st, ctx, tdr, Mode::Exclusive)?;
    let t = walk_and_lock(st, ctx, tdr, gpa, level, regs)?;
    if !matches!(
        sept::state(t.entry),
        St::NlBlocked | St::Blocked | St::PendingBlocked
    ) {
        return Err(sept_fail(
            regs,
            StatusCode::EPT_ENTRY_STATE_INCORRECT,
            level,
            t.entry,
        ));
    }
    let td = st.td(tdr);
    if tracking_required(td.op_state) && !td.is_tracked(bepoch_of(st, t.entry)) {
        return Err(codes::code(StatusCode::TLB_TRACKING_NOT_DONE));
    }
    st.td_mut(tdr)
        .sept
        .set(t.table, t.idx, sept::unblocked(t.entry));
    ok()
}

/// TDH.MEM.TRACK (`tdh_mem_track.c`): RCX = TDR. Increments the TD epoch unless vCPUs still
/// run in the previous one.
pub(crate) fn tdh_mem_track(
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
        Mode::Shared,
    )?;
    st.check_td_state(&mut ctx.held, tdr, Some(Mode::Shared), TRACK_STATES)?;
    ctx.held.lock(
        &mut st.locks,
        LockKey::Epoch(tdr),
        Mode::Exclusive,
        OperandId::TD_EPOCH,
    )?;
    let td = st.td_mut(tdr);
    let prev = td.td_epoch.wrapping_sub(1);
    if td.refcount[(prev & 1) as usize] != 0 {
        return Err(codes::code(StatusCode::PREVIOUS_TLB_EPOCH_BUSY));
    }
    td.td_epoch += 1;
    ok()
}

/// TDH.MEM.PAGE.REMOVE (`tdh_mem_page_remove.c`): RCX = GPA+lvl (0..2), RDX = TDR. While
/// RUNNABLE the leaf must be blocked and TLB-tracked.
pub(crate) fn tdh_mem_page_remove(
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
    st.check_td_state(&mut ctx.held, tdr, Some(Mode::Shared), REMOVE_STATES)?;
    let (gpa, level) = gpa_level(st.td(tdr), regs.rcx, 0, 2)?;
    lock_sept_tree(st, ctx, tdr, Mode::Shared)?;
    let t = walk_and_lock(st, ctx, tdr, gpa, level, regs)?;
    let s = sept::state(t.entry);
    if !s.is_leaf() {
        return Err(sept_fail(
            regs,
            StatusCode::EPT_ENTRY_STATE_INCORRECT,
            level,
            t.entry,
        ));
    }
    let page = sept::hpa(t.entry);
    ctx.held.lock(
        &mut st.locks,
        LockKey::Page(page),
        Mode::Exclusive,
        OperandId::RCX,
    )?;
    require_blocked_and_tracked(
        st,
        tdr,
        matches!(s, St::Blocked | St::PendingBlocked),
        regs,
        level,
        t.entry,
    )?;
    let n = pages_of(level);
    st.set_pages(&m.mem, page, n, pt::NDA, 0, 0);
    st.chld_sub(tdr, n);
    st.td_mut(tdr).sept.set(t.table, t.idx, sept::FREE_ENTRY);
    regs.rcx = sept::arch_entry(t.entry);
    regs.rdx = sept::level_state(level, t.entry);
    let _ = t.gpa;
    ok()
}

/// TDH.MEM.SEPT.REMOVE (`tdh_mem_sept_remove.c`): RCX = GPA+lvl of the entry pointing to the
/// table to remove, RDX = TDR. The table's 512 entries must all be FREE.
pub(crate) fn tdh_mem_sept_remove(
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
    st.check_td_state(&mut ctx.held, tdr, Some(Mode::Shared), ALL_BUT_U)?;
    let root = st.td(tdr).sept.root_level;
    let (gpa, level) = gpa_level(st.td(tdr), regs.rcx, 1, root)?;
    lock_sept_tree(st, ctx, tdr, Mode::Exclusive)?;
    let t = walk_and_lock(st, ctx, tdr, gpa, level, regs)?;
    let s = sept::state(t.entry);
    if !s.is_nl() {
        return Err(sept_fail(
            regs,
            StatusCode::EPT_ENTRY_STATE_INCORRECT,
            level,
            t.entry,
        ));
    }
    require_blocked_and_tracked(st, tdr, s == St::NlBlocked, regs, level, t.entry)?;
    let child = sept::hpa(t.entry);
    let all_free = st
        .td(tdr)
        .sept
        .tables
        .get(&child)
        .is_none_or(|c| c.iter().all(|e| sept::state(*e) == St::Free));
    if !all_free {
        return Err(sept_fail(
            regs,
            StatusCode::EPT_PAGE_NOT_FREE,
            level,
            t.entry,
        ));
    }
    st.set_pages(&m.mem, child, 1, pt::NDA, 0, 0);
    st.chld_sub(tdr, 1);
    let td = st.td_mut(tdr);
    td.sept.tables.remove(&child);
    td.sept.set(t.table, t.idx, sept::FREE_ENTRY);
    ok()
}

/// TDH.MEM.SEPT.RD (`tdh_mem_sept_rd.c`): RCX = GPA+lvl, RDX = TDR → RCX = architectural
/// entry, RDX = level | state << 8.
pub(crate) fn tdh_mem_sept_rd(
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
    st.check_td_state(&mut ctx.held, tdr, None, ALL_BUT_U)?;
    let root = st.td(tdr).sept.root_level;
    let (gpa, level) = gpa_level(st.td(tdr), regs.rcx, 0, root)?;
    lock_sept_tree(st, ctx, tdr, Mode::Shared)?;
    match st.td(tdr).sept.walk(gpa, level) {
        Walk::Failed { level: l, entry } => {
            Err(sept_fail(regs, StatusCode::EPT_WALK_FAILED, l, entry))
        }
        Walk::Found { entry, .. } => {
            regs.rcx = sept::arch_entry(entry);
            regs.rdx = sept::level_state(level, entry);
            ok()
        }
    }
}
