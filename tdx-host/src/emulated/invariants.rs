//! `EmulatedModule::check_invariants`: the module's bookkeeping agrees with itself.

use std::collections::HashMap;

use super::sept;
use super::state::{kot, lc, pt, State};
use super::{EmulatedModule, InvariantViolation};

fn fail<T>(msg: String) -> Result<T, InvariantViolation> {
    Err(InvariantViolation(msg))
}

impl EmulatedModule {
    /// Checks, between calls (no SEAMCALL in flight):
    /// * every page claimed by a TD structure (TDR, TDCS pages, TDVPR and TDVPS pages, S-EPT
    ///   tables, mapped or pending private pages) is claimed once, and its PAMT entry has the
    ///   matching type and owner (S-EPT leaves are checked for TDs not yet being torn down);
    /// * every TD-owned PAMT entry belongs to an existing TD, and each TD's CHLDCNT equals the
    ///   number of 4 KiB PAMT entries it owns;
    /// * the host view's owner bits agree with the PAMT types;
    /// * KOT states agree with the TDs' lifecycle (ASSIGNED ↔ HKID_ASSIGNED/KEYS_CONFIGURED,
    ///   FLUSHED ↔ BLOCKED, one TD per HKID), NUM_ASSOC_VCPUS with the vCPUs' association,
    ///   and no try-lock is left held.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let st = self.lock();
        check(self, &st)
    }
}

fn check(m: &EmulatedModule, st: &State) -> Result<(), InvariantViolation> {
    if st.locks.held() != 0 {
        return fail(format!("{} try-locks held between calls", st.locks.held()));
    }
    // Claims: page -> (expected type, owner, what).
    let mut claims: HashMap<u64, (u8, u64, String)> = HashMap::new();
    let mut claim = |pa: u64, ty: u8, owner: u64, what: String| -> Result<(), InvariantViolation> {
        if let Some(prev) = claims.insert(pa, (ty, owner, what.clone())) {
            return fail(format!("page {pa:#x} claimed twice: {} and {what}", prev.2));
        }
        Ok(())
    };
    for (&tdr, td) in &st.tds {
        claim(tdr, pt::TDR, 0, format!("TDR of TD {tdr:#x}"))?;
        for (i, &p) in td.tdcx.iter().enumerate() {
            claim(p, pt::TDCX, tdr, format!("TDCS page {i} of TD {tdr:#x}"))?;
        }
        for &t in td.sept.tables.keys() {
            if t != td.sept.root {
                claim(t, pt::EPT, tdr, format!("S-EPT page of TD {tdr:#x}"))?;
            }
        }
        if td.lifecycle <= lc::KEYS_CONFIGURED {
            for (gpa, level, e) in td.sept.leaves() {
                if sept::state(e).is_leaf() {
                    let n = 1u64 << (9 * u32::from(level));
                    for i in 0..n {
                        claim(
                            sept::hpa(e) + i * 4096,
                            pt::REG,
                            tdr,
                            format!("GPA {gpa:#x} level {level} of TD {tdr:#x}"),
                        )?;
                    }
                } else if !td.sept.tables.contains_key(&sept::hpa(e)) {
                    return fail(format!(
                        "TD {tdr:#x}: non-leaf entry at GPA {gpa:#x} level {level} points to unknown table {:#x}",
                        sept::hpa(e)
                    ));
                }
            }
        }
        // HKID.
        let k = usize::from(td.hkid.wrapping_sub(m.geo.first_hkid));
        let ks = st.kot.get(k).map(|x| x.state);
        let want = match td.lifecycle {
            lc::HKID_ASSIGNED | lc::KEYS_CONFIGURED => Some(kot::ASSIGNED),
            lc::BLOCKED => Some(kot::FLUSHED),
            _ => None,
        };
        if want.is_some() && ks != want {
            return fail(format!(
                "TD {tdr:#x} lifecycle {} but KOT[{}] = {ks:?}",
                td.lifecycle, td.hkid
            ));
        }
        let assoc = st
            .vcpus
            .values()
            .filter(|v| v.tdr == tdr && v.assoc_lp.is_some())
            .count() as u32;
        if assoc != td.num_assoc_vcpus {
            return fail(format!(
                "TD {tdr:#x}: NUM_ASSOC_VCPUS {} but {assoc} vCPUs associated",
                td.num_assoc_vcpus
            ));
        }
    }
    for (&tdvpr, v) in &st.vcpus {
        if !st.tds.contains_key(&v.tdr) {
            return fail(format!("vCPU {tdvpr:#x} of missing TD {:#x}", v.tdr));
        }
        claim(tdvpr, pt::TDVPR, v.tdr, format!("TDVPR {tdvpr:#x}"))?;
        for &p in &v.tdcx {
            claim(p, pt::TDCX, v.tdr, format!("TDVPS page of vCPU {tdvpr:#x}"))?;
        }
    }
    // KOT: one live TD per assigned/flushed HKID.
    for (i, k) in st.kot.iter().enumerate() {
        let hkid = m.geo.first_hkid + i as u16;
        let users = st
            .tds
            .values()
            .filter(|t| t.hkid == hkid && t.lifecycle != lc::TEARDOWN)
            .count();
        let expect = usize::from(matches!(k.state, kot::ASSIGNED | kot::FLUSHED));
        if users != expect {
            return fail(format!(
                "KOT[{hkid}] state {} with {users} live TDs",
                k.state
            ));
        }
    }
    // PAMT walk: owners, counts, owner bits.
    let bitmap = m.mem.owner_bitmap();
    let mut owned: HashMap<u64, u64> = HashMap::new();
    for t in &st.tdmrs {
        let init = t.initialized & !((1u64 << 30) - 1);
        for (i, e) in t.pamt.iter().enumerate() {
            let pa = t.base + i as u64 * 4096;
            if pa - t.base >= init {
                break;
            }
            let td_owned = matches!(e.ty, pt::REG | pt::TDR | pt::TDCX | pt::TDVPR | pt::EPT);
            let page = pa / 4096;
            let bit = bitmap
                .get((page / 64) as usize)
                .is_some_and(|w| w & (1 << (page % 64)) != 0);
            if pa < m.mem.size() && bit != td_owned {
                return fail(format!(
                    "owner bit of {pa:#x} disagrees with PAMT type {}",
                    e.ty
                ));
            }
            if !td_owned {
                continue;
            }
            if e.ty == pt::TDR {
                if !st.tds.contains_key(&pa) {
                    return fail(format!("PAMT TDR page {pa:#x} without a TD"));
                }
            } else {
                if !st.tds.contains_key(&e.owner) {
                    return fail(format!(
                        "page {pa:#x} (type {}) owned by missing TD {:#x}",
                        e.ty, e.owner
                    ));
                }
                *owned.entry(e.owner).or_default() += 1;
            }
        }
    }
    // Claims against the PAMT.
    for (pa, (ty, owner, what)) in &claims {
        let Some(e) = st.pamt_of(*pa) else {
            return fail(format!("{what} at {pa:#x} is outside the initialised PAMT"));
        };
        if e.ty != *ty || (*ty != pt::TDR && e.owner != *owner) {
            return fail(format!(
                "{what} at {pa:#x}: PAMT type {} owner {:#x}, expected type {ty} owner {owner:#x}",
                e.ty, e.owner
            ));
        }
    }
    for (&tdr, td) in &st.tds {
        let n = owned.get(&tdr).copied().unwrap_or(0);
        if n != td.chldcnt {
            return fail(format!(
                "TD {tdr:#x}: CHLDCNT {} but owns {n} pages",
                td.chldcnt
            ));
        }
    }
    Ok(())
}
