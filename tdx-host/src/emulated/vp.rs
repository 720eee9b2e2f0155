//! TDH.VP.ENTER (`td_transitions/tdh_vp_enter.c`, `td_exit.c`) and the execution-engine hook.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

use tdx_abi::call::Regs;

use super::abi_shim::*;
use super::state::*;
use super::{lock, EmulatedModule};

/// Execution engines attached to vCPUs (by TDVPR PA).
#[derive(Default)]
pub(crate) struct Engines {
    pub(crate) by_tdvpr: Mutex<HashMap<u64, Arc<Channel>>>,
}

/// Who runs: the host (inside or outside TDH.VP.ENTER) or the guest.
#[derive(Debug)]
pub(crate) enum Turn {
    /// No TDH.VP.ENTER in progress.
    Idle,
    /// TDH.VP.ENTER is in progress: the guest runs; the host's entry registers.
    Guest(Regs),
    /// The guest exited: the status and output registers TDH.VP.ENTER returns.
    Exit(u64, Regs),
}

/// The rendezvous between a host thread in TDH.VP.ENTER and the (test) thread acting as the
/// guest. Turns strictly alternate, so the interleaving is deterministic.
pub(crate) struct Channel {
    pub(crate) turn: Mutex<Turn>,
    pub(crate) cv: Condvar,
}

impl Channel {
    pub(crate) fn new() -> Self {
        Channel {
            turn: Mutex::new(Turn::Idle),
            cv: Condvar::new(),
        }
    }

    /// Host side: hands the CPU to the guest and waits for its exit.
    fn run(&self, entry: Regs) -> (u64, Regs) {
        let mut t = lock(&self.turn);
        *t = Turn::Guest(entry);
        self.cv.notify_all();
        loop {
            if let Turn::Exit(s, r) = &*t {
                let out = (*s, *r);
                *t = Turn::Idle;
                self.cv.notify_all();
                return out;
            }
            t = self
                .cv
                .wait(t)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Guest side: waits until the vCPU runs; returns the host's entry registers.
    pub(crate) fn wait_running(&self) -> Regs {
        let mut t = lock(&self.turn);
        loop {
            if let Turn::Guest(r) = &*t {
                return *r;
            }
            t = self
                .cv
                .wait(t)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Guest side: exits to the host with `status`/`regs` and waits for the next entry; returns
    /// the host's registers of that entry.
    pub(crate) fn exit_and_wait(&self, status: u64, regs: Regs) -> Regs {
        {
            let mut t = lock(&self.turn);
            *t = Turn::Exit(status, regs);
            self.cv.notify_all();
            // Wait for the host to take the exit before waiting for the next entry.
            while matches!(*t, Turn::Exit(..)) {
                t = self
                    .cv
                    .wait(t)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }
        self.wait_running()
    }
}

/// VP.ENTER RCX: bits 51:12 TDVPR, bit 52 host recoverability hint, bit 53 resume L1.
const VP_ENTER_RCX_VALID: u64 = (((1u64 << 52) - 1) & !0xFFF) | (1 << 52) | (1 << 53);

/// Entry checks (`tdh_vp_enter.c`); on success the vCPU is ACTIVE, associated with `lp`, and
/// counted in the refcount of the epoch it entered.
fn enter_checks(st: &mut State, lp: u32, regs: &Regs) -> Result<u64, u64> {
    if regs.rcx & !VP_ENTER_RCX_VALID != 0 {
        return fail(OPERAND_INVALID, OP_RCX);
    }
    let tdvpr = regs.rcx & !0xFFF & ((1 << 52) - 1);
    let tdr = st.check_tdvpr(tdvpr, OP_RCX, false)?;
    st.check_td_state(tdr, &[OP_RUNNABLE])?;
    let v = &st.vcpus[&tdvpr];
    // check_and_associate_vcpu (helpers.c): the low bits carry the current vCPU state.
    if v.state != VCPU_READY {
        return fail(VCPU_STATE_INCORRECT, u32::from(v.state));
    }
    if v.assoc_lp.is_some_and(|a| a != lp) {
        return fail(VCPU_ASSOCIATED, 0);
    }
    let newly = v.assoc_lp.is_none();
    let td = st.td_mut(tdr)?;
    if newly {
        td.num_assoc_vcpus += 1;
    }
    let epoch = td.epoch;
    td.refcount[(epoch & 1) as usize] += 1;
    let v = st
        .vcpus
        .get_mut(&tdvpr)
        .ok_or(status(PAGE_METADATA_INCORRECT, OP_RCX))?;
    v.assoc_lp = Some(lp);
    v.state = VCPU_ACTIVE;
    v.running = true;
    v.entry_epoch = epoch;
    Ok(tdvpr)
}

/// TD exit bookkeeping (`td_exit.c`): READY, not running, epoch refcount released.
pub(crate) fn td_exit(st: &mut State, tdvpr: u64) {
    let Some(v) = st.vcpus.get_mut(&tdvpr) else {
        return;
    };
    v.state = VCPU_READY;
    v.running = false;
    let (tdr, epoch) = (v.tdr, v.entry_epoch);
    if let Some(td) = st.tds.get_mut(&tdr) {
        let c = &mut td.refcount[(epoch & 1) as usize];
        *c = c.saturating_sub(1);
    }
}

// tdh_vp_enter.c
pub(crate) fn tdh_vp_enter(m: &EmulatedModule, lp: u32, regs: &mut Regs) -> u64 {
    let mut st = m.state();
    if st.sys_state != SysState::SysReady {
        return super::abi_shim::status(SYS_NOT_READY, 0);
    }
    if !st.lp_init.get(lp as usize).copied().unwrap_or(false) {
        return super::abi_shim::status(SYS_LP_INIT_NOT_DONE, 0);
    }
    if let Some(f) = m.faults().take(TDH_VP_ENTER) {
        return f.status();
    }
    let tdvpr = match enter_checks(&mut st, lp, regs) {
        Ok(t) => t,
        Err(s) => return s,
    };
    let engine = lock(&m.engines.by_tdvpr).get(&tdvpr).cloned();
    if let Some(chan) = engine {
        drop(st);
        let (status, out) = chan.run(*regs);
        let mut st = m.state();
        td_exit(&mut st, tdvpr);
        *regs = out;
        return status;
    }
    // No engine attached: the vCPU is kicked before executing anything — an asynchronous exit
    // with VMX exit reason EXTERNAL_INTERRUPT.
    td_exit(&mut st, tdvpr);
    *regs = Regs::default();
    super::abi_shim::status(SUCCESS, EXIT_REASON_EXTERNAL_INTERRUPT)
}
