//! Secure-EPT and TD memory leaves: TDH.MEM.SEPT.ADD/REMOVE/RD, TDH.MEM.PAGE.ADD/AUG/REMOVE,
//! TDH.MR.EXTEND/FINALIZE, TDH.MEM.RANGE.BLOCK/UNBLOCK, TDH.MEM.TRACK.
//!
//! The SEPT is a real tree: the root is TDCS page 3, every other table is a PT_EPT arena page
//! handed in by TDH.MEM.SEPT.ADD. Entry contents are kept module-side (keyed by the page PA;
//! the host reads zeros there anyway), in the module's 1.5 encoding ([`super::sept`]).

use tdx_abi::call::Regs;
use tdx_abi::gpa::Gpa;

use super::abi_shim::*;
use super::sept::{self, State as S};
use super::state::*;

/// Where an entry lives: (SEPT page PA, index).
pub(crate) type Slot = (u64, usize);

/// Index of `gpa` in a table holding entries of `level`.
fn index(gpa: u64, level: u8) -> usize {
    ((gpa >> (12 + 9 * u32::from(level))) & 511) as usize
}

impl State {
    /// Reads the entry in `slot`.
    pub(crate) fn entry(&self, slot: Slot) -> u64 {
        self.sept_pages
            .get(&slot.0)
            .map_or(sept::FREE_ENTRY, |p| p[slot.1])
    }

    /// Writes the entry in `slot`.
    pub(crate) fn set_entry(&mut self, slot: Slot, e: u64) {
        if let Some(p) = self.sept_pages.get_mut(&slot.0) {
            p[slot.1] = e;
        }
    }

    /// Walks the SEPT of `tdr` down to the entry of `level` for `gpa`. On failure returns the
    /// entry where the walk stopped and its level.
    pub(crate) fn sept_walk(&self, tdr: u64, gpa: u64, level: u8) -> Result<Slot, (u64, u8)> {
        let Some(td) = self.tds.get(&tdr) else {
            return Err((sept::FREE_ENTRY, level));
        };
        let Some(mut table) = td.sept_root() else {
            return Err((sept::FREE_ENTRY, level));
        };
        let top = td.cfg.pwl() - 1;
        let mut l = top;
        while l > level {
            let e = self.entry((table, index(gpa, l)));
            match S::of(e) {
                S::NlMapped | S::NlBlocked if self.sept_pages.contains_key(&sept::hpa(e)) => {
                    table = sept::hpa(e);
                }
                _ => return Err((e, l)),
            }
            l -= 1;
        }
        Ok((table, index(gpa, level)))
    }

    /// Walks to the leaf mapping `gpa` (any level): returns the slot and its level, or the
    /// entry where the walk stopped (non-present) and its level.
    pub(crate) fn sept_walk_leaf(&self, tdr: u64, gpa: u64) -> Result<(Slot, u8), (u64, u8)> {
        let td = self.tds.get(&tdr).ok_or((sept::FREE_ENTRY, 0))?;
        let mut table = td.sept_root().ok_or((sept::FREE_ENTRY, 0))?;
        let mut l = td.cfg.pwl() - 1;
        loop {
            let slot = (table, index(gpa, l));
            let e = self.entry(slot);
            match S::of(e) {
                S::NlMapped if l > 0 && self.sept_pages.contains_key(&sept::hpa(e)) => {
                    table = sept::hpa(e);
                    l -= 1;
                }
                s if s.is_leaf() => return Ok((slot, l)),
                _ => return Err((e, l)),
            }
        }
    }

    /// "Tracked" (`is_tlb_tracked`): BEPOCH older than epoch − 1, or equal to it with no vCPU
    /// still running in that epoch.
    pub(crate) fn is_tracked(&self, tdr: u64, bepoch: u64) -> bool {
        let Some(td) = self.tds.get(&tdr) else {
            return false;
        };
        let prev = td.epoch.saturating_sub(1);
        bepoch < prev || (bepoch == prev && td.refcount[(prev & 1) as usize] == 0)
    }
}

/// Sets the SEPT details (RCX = architectural entry, RDX = level/state) and returns `code`
/// with operand RCX.
fn sept_fail<T>(regs: &mut Regs, code: u32, entry: u64, level: u8) -> Result<T, u64> {
    regs.rcx = sept::arch_entry(entry);
    regs.rdx = sept::level_state(entry, level);
    fail(code, OP_RCX)
}

/// Decodes a GPA+level operand (§5.12) for a TD: reserved bits, allowed levels, alignment,
/// private GPA inside GPAW. Errors are OPERAND_INVALID on RCX.
fn gpa_level(st: &State, tdr: u64, raw: u64, min: u8, max: u8) -> Result<(u64, u8), u64> {
    let level = (raw & 7) as u8;
    let gpa = raw & !0xFFF;
    let td = st.td(tdr)?;
    let max = max.min(td.cfg.pwl() - 1);
    if raw & 0xFF8 != 0 || raw >> 52 != 0 || level < min || level > max {
        return fail(OPERAND_INVALID, OP_RCX);
    }
    if gpa & ((1u64 << (12 + 9 * u32::from(level))) - 1) != 0 {
        return fail(OPERAND_INVALID, OP_RCX);
    }
    if gpa >> (td.cfg.gpaw_bits() - 1) != 0 {
        return fail(OPERAND_INVALID, OP_RCX);
    }
    Ok((gpa, level))
}

const IR: &[u8] = &[OP_INITIALIZED, OP_RUNNABLE];

// tdh_mem_sept_add.c
pub(crate) fn tdh_mem_sept_add(st: &mut State, version: u8, regs: &mut Regs) -> LeafResult {
    let allow_existing = version >= 1 && regs.rdx & 1 != 0;
    let tdr = st.check_tdr(regs.rdx & !1, OP_RDX, false)?;
    st.check_td_state(tdr, IR)?;
    let (gpa, level) = gpa_level(st, tdr, regs.rcx, 1, 4)?;
    let slot = match st.sept_walk(tdr, gpa, level) {
        Ok(s) => s,
        Err((e, l)) => return sept_fail(regs, EPT_WALK_FAILED, e, l),
    };
    let e = st.entry(slot);
    match S::of(e) {
        S::Free => {}
        S::NlMapped if allow_existing => return Ok(0),
        _ => return sept_fail(regs, EPT_ENTRY_STATE_INCORRECT, e, level),
    }
    let page = regs.r8;
    st.check_page(page, OP_R8, PamtPageType::Nda, true)?;
    st.arena.fill(page, 4096, 0);
    st.sept_pages
        .insert(page, Box::new([sept::FREE_ENTRY; sept::ENTRIES]));
    st.set_entry(slot, sept::nl_mapped(page));
    st.set_pamt(page, PamtPageType::Ept, tdr, 0, page);
    st.td_mut(tdr)?.chldcnt += 1;
    Ok(0)
}

// tdh_mem_page_add.c
pub(crate) fn tdh_mem_page_add(st: &mut State, regs: &mut Regs) -> LeafResult {
    let tdr = st.check_tdr(regs.rdx, OP_RDX, true)?;
    st.check_td_state(tdr, &[OP_INITIALIZED])?;
    let (gpa, _) = gpa_level(st, tdr, regs.rcx, 0, 0)?;
    let slot = match st.sept_walk(tdr, gpa, 0) {
        Ok(s) => s,
        Err((e, l)) => return sept_fail(regs, EPT_WALK_FAILED, e, l),
    };
    let e = st.entry(slot);
    if S::of(e) != S::Free {
        return sept_fail(regs, EPT_ENTRY_STATE_INCORRECT, e, 0);
    }
    let (target, source) = (regs.r8, regs.r9);
    if source & 0xFFF != 0 {
        return fail(OPERAND_INVALID, OP_R9);
    }
    st.check_shared_hpa(source, 4096, OP_R9)?;
    st.check_page(target, OP_R8, PamtPageType::Nda, true)?;
    let mut buf = vec![0u8; 4096];
    st.arena.read(source, &mut buf);
    st.arena.write(target, &buf);
    st.set_entry(slot, sept::mapped(target));
    st.set_pamt(target, PamtPageType::Reg, tdr, 0, target);
    let td = st.td_mut(tdr)?;
    if let Some(b) = td.mrtd_builder.as_mut() {
        // GPA is 4 KiB aligned (checked), so this cannot fail.
        let _ = b.mem_page_add(Gpa(gpa));
    }
    td.chldcnt += 1;
    Ok(0)
}

// tdh_mr_extend.c
pub(crate) fn tdh_mr_extend(st: &mut State, regs: &mut Regs) -> LeafResult {
    let tdr = st.check_tdr(regs.rdx, OP_RDX, true)?;
    st.check_td_state(tdr, &[OP_INITIALIZED])?;
    let gpa = regs.rcx;
    let gpaw = st.td(tdr)?.cfg.gpaw_bits();
    if gpa & 0xFF != 0 || gpa >> (gpaw - 1) != 0 {
        return fail(OPERAND_INVALID, OP_RCX);
    }
    let (slot, level) = match st.sept_walk_leaf(tdr, gpa) {
        Ok(x) => x,
        Err((e, l)) => return sept_fail(regs, EPT_ENTRY_NOT_PRESENT, e, l),
    };
    let e = st.entry(slot);
    if S::of(e) != S::Mapped {
        return sept_fail(regs, EPT_ENTRY_NOT_PRESENT, e, level);
    }
    let page_mask = (1u64 << (12 + 9 * u32::from(level))) - 1;
    let hpa = sept::hpa(e) + (gpa & page_mask);
    if st.poisoned.contains(&(hpa & !0xFFF)) {
        st.td_mut(tdr)?.fatal = true;
        return fail(TD_FATAL, 0);
    }
    let mut chunk = [0u8; 256];
    st.arena.read(hpa, &mut chunk);
    let td = st.td_mut(tdr)?;
    if let Some(b) = td.mrtd_builder.as_mut() {
        let _ = b.mr_extend(Gpa(gpa), &chunk);
    }
    Ok(0)
}

// tdh_mr_finalize.c
pub(crate) fn tdh_mr_finalize(st: &mut State, regs: &mut Regs) -> LeafResult {
    let tdr = st.check_tdr(regs.rcx, OP_RCX, true)?;
    st.check_td_state(tdr, &[OP_INITIALIZED])?;
    let td = st.td_mut(tdr)?;
    if td.num_vcpus == 0 {
        return fail(NO_VCPUS, 0);
    }
    if let Some(b) = td.mrtd_builder.take() {
        td.mrtd = b.finalize().to_bytes();
    }
    td.op_state = OP_RUNNABLE;
    Ok(0)
}

// tdh_mem_page_aug.c
pub(crate) fn tdh_mem_page_aug(st: &mut State, regs: &mut Regs) -> LeafResult {
    let tdr = st.check_tdr(regs.rdx, OP_RDX, false)?;
    st.check_td_state(tdr, IR)?;
    let (gpa, level) = gpa_level(st, tdr, regs.rcx, 0, 1)?;
    let slot = match st.sept_walk(tdr, gpa, level) {
        Ok(s) => s,
        Err((e, l)) => return sept_fail(regs, EPT_WALK_FAILED, e, l),
    };
    let e = st.entry(slot);
    if !matches!(S::of(e), S::Free | S::Removed) {
        return sept_fail(regs, EPT_ENTRY_STATE_INCORRECT, e, level);
    }
    let page = regs.r8;
    let frames: u64 = if level == 1 { 512 } else { 1 };
    if page >> st.hkid_shift != 0 || (level == 1 && page & ((2 << 20) - 1) != 0) {
        return fail(OPERAND_INVALID, OP_R8);
    }
    for i in 0..frames {
        st.check_page(page + i * 4096, OP_R8, PamtPageType::Nda, true)?;
    }
    for i in 0..frames {
        st.set_pamt(page + i * 4096, PamtPageType::Reg, tdr, level, page);
    }
    st.set_entry(slot, sept::pending(page));
    st.td_mut(tdr)?.chldcnt += frames;
    Ok(0)
}

/// The PAMT frame whose BEPOCH records the blocking of `entry`.
fn bepoch_of(st: &State, entry: u64) -> u64 {
    st.pamt_entry(sept::hpa(entry)).bepoch
}

// tdh_mem_range_block.c
pub(crate) fn tdh_mem_range_block(st: &mut State, regs: &mut Regs) -> LeafResult {
    let tdr = st.check_tdr(regs.rdx, OP_RDX, false)?;
    st.check_td_state(tdr, IR)?;
    let (gpa, level) = gpa_level(st, tdr, regs.rcx, 0, 4)?;
    let slot = match st.sept_walk(tdr, gpa, level) {
        Ok(s) => s,
        Err((e, l)) => return sept_fail(regs, EPT_WALK_FAILED, e, l),
    };
    let e = st.entry(slot);
    if matches!(S::of(e), S::Blocked | S::PendingBlocked | S::NlBlocked) {
        regs.rcx = sept::arch_entry(e);
        regs.rdx = sept::level_state(e, level);
        return Ok(status(GPA_RANGE_ALREADY_BLOCKED, OP_RCX));
    }
    let Some(blocked) = sept::block(e) else {
        return sept_fail(regs, EPT_ENTRY_STATE_INCORRECT, e, level);
    };
    st.set_entry(slot, blocked);
    let epoch = st.td(tdr)?.epoch;
    let h = sept::hpa(e);
    if let Some(p) = st.pamt.get_mut(&(h >> 12)) {
        p.bepoch = epoch;
    }
    Ok(0)
}

// tdh_mem_track.c
pub(crate) fn tdh_mem_track(st: &mut State, regs: &mut Regs) -> LeafResult {
    let tdr = st.check_tdr(regs.rcx, OP_RCX, false)?;
    st.check_td_state(tdr, IR)?;
    let td = st.td_mut(tdr)?;
    let prev = td.epoch.saturating_sub(1);
    if td.refcount[(prev & 1) as usize] != 0 {
        return fail(PREVIOUS_TLB_EPOCH_BUSY, 0);
    }
    td.epoch += 1;
    Ok(0)
}

// tdh_mem_range_unblock.c
pub(crate) fn tdh_mem_range_unblock(st: &mut State, regs: &mut Regs) -> LeafResult {
    let tdr = st.check_tdr(regs.rdx, OP_RDX, false)?;
    st.check_td_state(tdr, IR)?;
    let (gpa, level) = gpa_level(st, tdr, regs.rcx, 0, 4)?;
    let slot = match st.sept_walk(tdr, gpa, level) {
        Ok(s) => s,
        Err((e, l)) => return sept_fail(regs, EPT_WALK_FAILED, e, l),
    };
    let e = st.entry(slot);
    let Some(unblocked) = sept::unblock(e) else {
        return sept_fail(regs, EPT_ENTRY_STATE_INCORRECT, e, level);
    };
    if !st.is_tracked(tdr, bepoch_of(st, e)) {
        return sept_fail(regs, TLB_TRACKING_NOT_DONE, e, level);
    }
    st.set_entry(slot, unblocked);
    Ok(0)
}

// tdh_mem_page_remove.c
pub(crate) fn tdh_mem_page_remove(st: &mut State, regs: &mut Regs) -> LeafResult {
    let tdr = st.check_tdr(regs.rdx, OP_RDX, false)?;
    st.check_td_state(tdr, IR)?;
    let (gpa, level) = gpa_level(st, tdr, regs.rcx, 0, 2)?;
    let slot = match st.sept_walk(tdr, gpa, level) {
        Ok(s) => s,
        Err((e, l)) => return sept_fail(regs, EPT_WALK_FAILED, e, l),
    };
    let e = st.entry(slot);
    let s = S::of(e);
    if !matches!(
        s,
        S::Mapped | S::Blocked | S::BlockedW | S::Pending | S::PendingBlocked | S::PendingBlockedW
    ) {
        return sept_fail(regs, EPT_ENTRY_STATE_INCORRECT, e, level);
    }
    let page = sept::hpa(e);
    if st.held_shared(page) {
        return fail(OPERAND_BUSY, OP_RCX);
    }
    // TLB tracking is required while RUNNABLE for guest-accessible states (MAPPED, BLOCKEDW):
    // they must be blocked first, and every blocked state must be tracked.
    if st.td(tdr)?.op_state == OP_RUNNABLE {
        if matches!(s, S::Mapped | S::BlockedW) {
            return sept_fail(regs, GPA_RANGE_NOT_BLOCKED, e, level);
        }
        if matches!(s, S::Blocked | S::PendingBlocked) && !st.is_tracked(tdr, bepoch_of(st, e)) {
            return sept_fail(regs, TLB_TRACKING_NOT_DONE, e, level);
        }
    }
    let frames: u64 = if level == 1 { 512 } else { 1 };
    for i in 0..frames {
        st.set_pamt(page + i * 4096, PamtPageType::Nda, 0, 0, 0);
        st.poisoned.remove(&(page + i * 4096));
    }
    st.set_entry(slot, sept::FREE_ENTRY);
    let td = st.td_mut(tdr)?;
    td.chldcnt = td.chldcnt.saturating_sub(frames);
    Ok(0)
}

// tdh_mem_sept_remove.c
pub(crate) fn tdh_mem_sept_remove(st: &mut State, regs: &mut Regs) -> LeafResult {
    let tdr = st.check_tdr(regs.rdx, OP_RDX, false)?;
    st.check_td_state(tdr, IR)?;
    let (gpa, level) = gpa_level(st, tdr, regs.rcx, 1, 4)?;
    let slot = match st.sept_walk(tdr, gpa, level) {
        Ok(s) => s,
        Err((e, l)) => return sept_fail(regs, EPT_WALK_FAILED, e, l),
    };
    let e = st.entry(slot);
    let s = S::of(e);
    if !matches!(s, S::NlMapped | S::NlBlocked) {
        return sept_fail(regs, EPT_ENTRY_STATE_INCORRECT, e, level);
    }
    if st.td(tdr)?.op_state == OP_RUNNABLE {
        if s == S::NlMapped {
            return sept_fail(regs, GPA_RANGE_NOT_BLOCKED, e, level);
        }
        if !st.is_tracked(tdr, bepoch_of(st, e)) {
            return sept_fail(regs, TLB_TRACKING_NOT_DONE, e, level);
        }
    }
    let child = sept::hpa(e);
    let all_free = st
        .sept_pages
        .get(&child)
        .is_none_or(|p| p.iter().all(|&c| S::of(c) == S::Free));
    if !all_free {
        return sept_fail(regs, EPT_PAGE_NOT_FREE, e, level);
    }
    st.sept_pages.remove(&child);
    st.set_pamt(child, PamtPageType::Nda, 0, 0, 0);
    st.set_entry(slot, sept::FREE_ENTRY);
    let td = st.td_mut(tdr)?;
    td.chldcnt = td.chldcnt.saturating_sub(1);
    Ok(0)
}

// tdh_mem_sept_rd.c
pub(crate) fn tdh_mem_sept_rd(st: &mut State, regs: &mut Regs) -> LeafResult {
    let tdr = st.check_tdr(regs.rdx, OP_RDX, false)?;
    st.check_td_state(tdr, IR)?;
    let (gpa, level) = gpa_level(st, tdr, regs.rcx, 0, 4)?;
    let slot = match st.sept_walk(tdr, gpa, level) {
        Ok(s) => s,
        Err((e, l)) => return sept_fail(regs, EPT_WALK_FAILED, e, l),
    };
    let e = st.entry(slot);
    regs.rcx = sept::arch_entry(e);
    regs.rdx = sept::level_state(e, level);
    Ok(0)
}
