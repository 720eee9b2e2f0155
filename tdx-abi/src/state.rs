//! State values of the TDX module's state machines (fact sheet §7): platform `sys_state`, KOT
//! entries, TD lifecycle (TDR), OP_STATE (TDCS), vCPU state (TDVPS), LAST_TD_EXIT and PAMT
//! page types.
//!
//! Every type is an *open* newtype over the raw number: values the specification does not name
//! survive a round trip, display as a number and have no [`name`](SysState::name).

use crate::open_enum::open_enum;

open_enum! {
    /// Platform (module) initialisation state, `sys_state` (§7.1).
    pub struct SysState(u8);
    /// 0: after module load; only TDH.SYS.INIT is allowed.
    SYSINIT_PENDING = 0,
    /// 1: after TDH.SYS.INIT; TDH.SYS.LP.INIT on each LP, then TDH.SYS.CONFIG.
    SYSINIT_DONE = 1,
    /// 2: after TDH.SYS.CONFIG; TDH.SYS.KEY.CONFIG on each package.
    SYSCONFIG_DONE = 2,
    /// 3: after the last TDH.SYS.KEY.CONFIG; every leaf is allowed.
    SYS_READY = 3,
    /// 4: after TDH.SYS.SHUTDOWN; only TDH.SYS.LP.SHUTDOWN is allowed.
    SYS_SHUTDOWN = 4,
}

open_enum! {
    /// State of a Key Ownership Table entry (one per HKID, §7.1).
    pub struct KotState(u8);
    /// 0: the HKID is free.
    FREE = 0,
    /// 1: assigned to a TD by TDH.MNG.CREATE.
    ASSIGNED = 1,
    /// 2: flushed by TDH.MNG.VPFLUSHDONE; freed by TDH.MNG.KEY.FREEID.
    FLUSHED = 2,
    /// 3: the module's global private HKID (set by TDH.SYS.CONFIG).
    RESERVED = 3,
}

open_enum! {
    /// TD lifecycle state kept in the TDR (`LIFECYCLE_STATE`, §7.2).
    pub struct TdLifecycleState(u64);
    /// 0 (TD_HKID_ASSIGNED): after TDH.MNG.CREATE; TDH.MNG.KEY.CONFIG is legal.
    HKID_ASSIGNED = 0,
    /// 1 (TD_KEYS_CONFIGURED): keys programmed on every package; TDCS leaves are legal.
    KEYS_CONFIGURED = 1,
    /// 2 (TD_BLOCKED): after TDH.MNG.VPFLUSHDONE; no more TD entries.
    BLOCKED = 2,
    /// 3 (TD_TEARDOWN): after TDH.MNG.KEY.FREEID; pages may be reclaimed.
    TEARDOWN = 3,
}

open_enum! {
    /// TD operation state kept in the TDCS (`OP_STATE`, module 1.5, §7.3).
    pub struct OpState(u64);
    /// 0: TDCS allocated, TDH.MNG.INIT not yet done.
    UNINITIALIZED = 0,
    /// 1: after TDH.MNG.INIT; the TD is being built and measured.
    INITIALIZED = 1,
    /// 2: after TDH.MR.FINALIZE; vCPUs may run.
    RUNNABLE = 2,
    /// 3: live export in progress (migration).
    LIVE_EXPORT = 3,
    /// 4: export with the TD paused.
    PAUSED_EXPORT = 4,
    /// 5: export finished.
    POST_EXPORT = 5,
    /// 6: importing memory.
    MEMORY_IMPORT = 6,
    /// 7: importing state.
    STATE_IMPORT = 7,
    /// 8: import finished.
    POST_IMPORT = 8,
    /// 9: live import.
    LIVE_IMPORT = 9,
    /// 10: import failed.
    FAILED_IMPORT = 10,
}

open_enum! {
    /// vCPU state kept in the TDVPS (`VCPU_STATE`, §7.4).
    pub struct VcpuState(u8);
    /// 0x0: after TDH.VP.CREATE; TDH.VP.ADDCX and TDH.VP.INIT are allowed.
    UNINITIALIZED = 0x0,
    /// 0x2: after TDH.VP.INIT or a TD exit; TDH.VP.ENTER is allowed (1.0: READY_ASYNC).
    READY = 0x2,
    /// 0x3: TDX 1.0 only, ready after a TDG.VP.VMCALL exit.
    READY_TDVMCALL = 0x3,
    /// 0x4: running in the guest.
    ACTIVE = 0x4,
    /// 0x8: disabled after a non-recoverable vCPU error; cannot be entered.
    DISABLED = 0x8,
    /// 0x10: migration import.
    IMPORT = 0x10,
}

open_enum! {
    /// Kind of the vCPU's last TD exit (`LAST_TD_EXIT`, §7.4).
    pub struct LastTdExit(u64);
    /// 0: asynchronous exit caused by a fault.
    ASYNC_FAULT = 0,
    /// 1: asynchronous exit caused by a trap.
    ASYNC_TRAP = 1,
    /// 2: synchronous exit by TDG.VP.VMCALL.
    TDVMCALL = 2,
}

open_enum! {
    /// PAMT page type of a physical page (§7.5).
    pub struct PamtPageType(u64);
    /// 0: not assigned to any TD (free, or after REMOVE/RECLAIM).
    PT_NDA = 0,
    /// 1: inside a TDMR reserved area.
    PT_RSVD = 1,
    /// 3: TD private data page (TDH.MEM.PAGE.ADD / AUG).
    PT_REG = 3,
    /// 4: TD root page (TDH.MNG.CREATE).
    PT_TDR = 4,
    /// 5: TDCS page (TDH.MNG.ADDCX) or, in 1.5, TDVPS page (TDH.VP.ADDCX).
    PT_TDCX = 5,
    /// 6: TDVPR page (TDH.VP.CREATE).
    PT_TDVPR = 6,
    /// 7: TDX 1.0 TDVPX page (reserved in 1.5).
    PT_TDVPX = 7,
    /// 8: Secure EPT page (TDH.MEM.SEPT.ADD / DEMOTE).
    PT_EPT = 8,
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    #[test]
    fn values_match_fact_sheet() {
        assert_eq!(SysState::SYS_READY.raw(), 3);
        assert_eq!(SysState::SYS_SHUTDOWN.raw(), 4);
        assert_eq!(KotState::RESERVED.raw(), 3);
        assert_eq!(TdLifecycleState::TEARDOWN.raw(), 3);
        assert_eq!(OpState::RUNNABLE.raw(), 2);
        assert_eq!(OpState::FAILED_IMPORT.raw(), 10);
        assert_eq!(VcpuState::DISABLED.raw(), 8);
        assert_eq!(VcpuState::IMPORT.raw(), 0x10);
        assert_eq!(LastTdExit::TDVMCALL.raw(), 2);
        assert_eq!(PamtPageType::PT_REG.raw(), 3);
        assert_eq!(PamtPageType::PT_EPT.raw(), 8);
    }

    #[test]
    fn unknown_values_round_trip_and_print_as_numbers() {
        let s = OpState::from_raw(77);
        assert_eq!(s.raw(), 77);
        assert_eq!(s.name(), None);
        assert_eq!(format!("{s}"), "0x4d");
        assert_eq!(format!("{s:?}"), "OpState(0x4d)");
        assert_eq!(format!("{}", PamtPageType::from_raw(2)), "0x2");
        assert_eq!(format!("{}", PamtPageType::PT_TDR), "PT_TDR");
        assert_eq!(format!("{:?}", VcpuState::READY), "VcpuState::READY");
        assert_eq!(
            format!("{}", TdLifecycleState::KEYS_CONFIGURED),
            "KEYS_CONFIGURED"
        );
        assert!(KotState::FLUSHED.is_known());
    }
}
