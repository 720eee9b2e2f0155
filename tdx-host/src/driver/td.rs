//! Building, running memory for, and tearing down one TD (tdx-module-abi.md §7.7).
//!
//! # Pages when a SEAMCALL fails midway
//! Each leaf is atomic: when it fails, the page it named was not taken by the module, so the
//! driver gives that frame straight back to the allocator. Pages the module did take are
//! recorded in the TD before the next SEAMCALL and are only given back after
//! TDH.PHYMEM.PAGE.RECLAIM succeeded for them. When teardown itself fails (for example
//! TDH.MNG.KEY.FREEID because a cache write-back did not complete), the pages stay recorded
//! in the TD and stay allocated in the frame allocator: they are never handed to anyone else
//! while the module may still own them; calling [`Td::teardown`] again resumes where it
//! stopped. A TD dropped without a successful teardown is torn down best-effort by `Drop`;
//! what cannot be reclaimed then is leaked (visible in [`FrameAllocator::leaks`]).
//!
//! [`FrameAllocator::leaks`]: super::memory::FrameAllocator::leaks

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tdx_abi::call::{Regs, Seamcall};
use tdx_abi::gpa::{Gpa, Gpaw};
use tdx_abi::measure::{Measurement, MrtdBuilder, MEASUREMENT_SIZE};

use super::memory::{HostMemory, FRAME_SIZE};
use super::module::TdxModule;
use super::seam::{self, code, leaf, SeamcallFailure};
use super::DriverError;

/// TD_PARAMS size and alignment.
pub const TD_PARAMS_SIZE: usize = 1024;
/// TDCS execution-control field MRTD (TDH.MNG.RD; six 8-byte elements).
pub const FIELD_MRTD: u64 = 0x1310_0003_0000_0000;
/// TDR field LIFECYCLE_STATE (non-architectural).
pub const FIELD_LIFECYCLE_STATE: u64 = 0x8010_0002_0000_0005;
/// TDCS field OP_STATE.
pub const FIELD_OP_STATE: u64 = 0x9010_0002_0000_0004;
/// Most TDH.MEM.PAGE.REMOVE attempts [`Td::remove_page_kicking`] makes while vCPUs are still
/// in the previous TLB epoch (50 µs apart: about one second in all).
pub const MAX_TRACKING_WAITS: u32 = 20_000;
const TLB_TRACKING_NOT_DONE: u16 = tdx_abi::status::StatusCode::TLB_TRACKING_NOT_DONE.raw();

/// One CPUID value the host configures for the TD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidValue {
    /// Leaf.
    pub leaf: u32,
    /// Subleaf, `None` for leaves without subleaves.
    pub subleaf: Option<u32>,
    /// EAX, EBX, ECX, EDX.
    pub regs: [u32; 4],
}

/// A TD's configuration, turned into TD_PARAMS for TDH.MNG.INIT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdConfig {
    /// ATTRIBUTES.
    pub attributes: u64,
    /// XFAM.
    pub xfam: u64,
    /// MAX_VCPUS (1..=576).
    pub max_vcpus: u16,
    /// Guest physical-address width (selects the shared bit and the S-EPT depth).
    pub gpaw: Gpaw,
    /// TSC_FREQUENCY in 25 MHz units (4..=400).
    pub tsc_frequency: u16,
    /// MRCONFIGID.
    pub mrconfigid: [u8; 48],
    /// MROWNER.
    pub mrowner: [u8; 48],
    /// MROWNERCONFIG.
    pub mrownerconfig: [u8; 48],
    /// CPUID values; each must name a leaf the module lets the host configure and set only
    /// allowed bits. Leaves not listed are configured as zero.
    pub cpuid: Vec<CpuidValue>,
}

impl Default for TdConfig {
    fn default() -> Self {
        Self {
            attributes: 0,
            // x87 | SSE: the bits every module requires (XFAM_FIXED1).
            xfam: 0x3,
            max_vcpus: 8,
            gpaw: Gpaw::Gpaw48,
            // 2.5 GHz.
            tsc_frequency: 100,
            mrconfigid: [0; 48],
            mrowner: [0; 48],
            mrownerconfig: [0; 48],
            cpuid: Vec::new(),
        }
    }
}

/// Builds a TD: configuration plus the SEAMCALLs up to TDH.MNG.INIT.
#[derive(Debug)]
pub struct TdBuilder<S, M> {
    module: Arc<TdxModule<S, M>>,
    config: TdConfig,
}

impl<S: Seamcall, M: HostMemory> TdBuilder<S, M> {
    /// A builder with the default configuration. The TD keeps a reference on `module`.
    pub fn new(module: &Arc<TdxModule<S, M>>) -> Self {
        Self {
            module: Arc::clone(module),
            config: TdConfig::default(),
        }
    }
    /// Replaces the whole configuration.
    pub fn config(mut self, config: TdConfig) -> Self {
        self.config = config;
        self
    }
    /// Sets ATTRIBUTES.
    pub fn attributes(mut self, attributes: u64) -> Self {
        self.config.attributes = attributes;
        self
    }
    /// Sets XFAM.
    pub fn xfam(mut self, xfam: u64) -> Self {
        self.config.xfam = xfam;
        self
    }
    /// Sets MAX_VCPUS.
    pub fn max_vcpus(mut self, n: u16) -> Self {
        self.config.max_vcpus = n;
        self
    }
    /// Sets the GPA width.
    pub fn gpaw(mut self, gpaw: Gpaw) -> Self {
        self.config.gpaw = gpaw;
        self
    }
    /// Adds a CPUID value.
    pub fn cpuid(mut self, value: CpuidValue) -> Self {
        self.config.cpuid.push(value);
        self
    }

    /// TDR → TDH.MNG.CREATE → TDH.MNG.KEY.CONFIG on every package → TDH.MNG.ADDCX ×
    /// TDCS pages → TDH.MNG.INIT. On failure everything done so far is torn down.
    pub fn build(self) -> Result<Td<S, M>, DriverError> {
        let td_params = encode_td_params(&self.config, &self.module)?;
        let m = &*self.module;
        let hkid = m.hkids().allocate()?;
        let tdr = match m.frames().allocate() {
            Ok(p) => p,
            Err(e) => {
                let _ = m.hkids().free(hkid);
                return Err(e.into());
            }
        };
        let lp0 = m.lp(0).ok_or(DriverError::NoLogicalCpus)?;
        let regs = Regs {
            rcx: tdr,
            rdx: u64::from(hkid),
            ..Default::default()
        };
        if let Err(e) = seam::call_retry(
            lp0,
            leaf::MNG_CREATE,
            0,
            regs,
            &[],
            m.retry_policy().max_retries,
        ) {
            let _ = m.frames().free(tdr);
            let _ = m.hkids().free(hkid);
            return Err(e.into());
        }
        let mut td = Td {
            module: Arc::clone(&self.module),
            tdr,
            hkid,
            gpaw: self.config.gpaw,
            config: self.config,
            state: Mutex::new(TdState::default()),
        };
        // From here a failure tears the TD down (Drop does it if `teardown` is not reached).
        td.configure(&td_params)?;
        Ok(td)
    }
}

/// Encodes TD_PARAMS (tdx-module-abi.md §5.1) with the CPUID values in the module's
/// configurable-leaf order, checking the configuration against the module's metadata first.
pub fn encode_td_params<S: Seamcall, M: HostMemory>(
    config: &TdConfig,
    module: &TdxModule<S, M>,
) -> Result<[u8; TD_PARAMS_SIZE], DriverError> {
    let info = module.info();
    let bad = |what: &'static str, value: u64| Err(DriverError::InvalidTdConfig { what, value });
    if config.attributes & !info.attributes_fixed0 != 0
        || config.attributes & info.attributes_fixed1 != info.attributes_fixed1
    {
        return bad("ATTRIBUTES", config.attributes);
    }
    if config.xfam & !info.xfam_fixed0 != 0 || config.xfam & info.xfam_fixed1 != info.xfam_fixed1 {
        return bad("XFAM", config.xfam);
    }
    let max = info.max_vcpus_per_td.unwrap_or(576);
    if config.max_vcpus == 0 || config.max_vcpus > max {
        return bad("MAX_VCPUS", u64::from(config.max_vcpus));
    }
    if !(4..=400).contains(&config.tsc_frequency) {
        return bad("TSC_FREQUENCY", u64::from(config.tsc_frequency));
    }
    let n = info.cpuid_configs.len();
    if 256 + 16 * n > TD_PARAMS_SIZE {
        return bad("NUM_CPUID_CONFIG", n as u64);
    }
    let mut p = [0u8; TD_PARAMS_SIZE];
    p[0..8].copy_from_slice(&config.attributes.to_le_bytes());
    p[8..16].copy_from_slice(&config.xfam.to_le_bytes());
    p[16..18].copy_from_slice(&config.max_vcpus.to_le_bytes());
    // EPTP_CONTROLS: WB memory type (6), page-walk length - 1 in bits 5:3.
    let (pwl_minus_1, gpaw_flag) = match config.gpaw {
        Gpaw::Gpaw48 => (3u64, 0u64),
        Gpaw::Gpaw52 => (4u64, 1u64),
    };
    p[24..32].copy_from_slice(&(6 | (pwl_minus_1 << 3)).to_le_bytes());
    p[32..40].copy_from_slice(&gpaw_flag.to_le_bytes());
    p[40..42].copy_from_slice(&config.tsc_frequency.to_le_bytes());
    p[80..128].copy_from_slice(&config.mrconfigid);
    p[128..176].copy_from_slice(&config.mrowner);
    p[176..224].copy_from_slice(&config.mrownerconfig);
    for v in &config.cpuid {
        let Some(i) = info
            .cpuid_configs
            .iter()
            .position(|c| c.leaf == v.leaf && c.subleaf == v.subleaf)
        else {
            return bad(
                "CPUID leaf not configurable",
                u64::from(v.leaf) | (u64::from(v.subleaf.unwrap_or(u32::MAX)) << 32),
            );
        };
        let allowed = info.cpuid_configs[i].allowed;
        for (r, (val, ok)) in v.regs.iter().zip(allowed).enumerate() {
            if val & !ok != 0 {
                return bad("CPUID value sets a bit the module does not allow", {
                    (u64::from(v.leaf) << 32) | (r as u64)
                });
            }
        }
        let off = 256 + 16 * i;
        for (r, val) in v.regs.iter().enumerate() {
            p[off + 4 * r..off + 4 * r + 4].copy_from_slice(&val.to_le_bytes());
        }
    }
    Ok(p)
}

/// The pages of one vCPU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VcpuPages {
    /// TDVPR page.
    pub tdvpr: u64,
    /// TDVPS pages added with TDH.VP.ADDCX.
    pub tdcx: Vec<u64>,
    /// The logical processor the vCPU was initialised on / last entered on.
    pub lp: Option<u32>,
    /// Whether TDH.VP.INIT succeeded.
    pub initialized: bool,
}

/// A TD private page (added or augmented).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrivatePage {
    /// First host frame.
    pub pa: u64,
    /// Level: 0 = 4 KiB, 1 = 2 MiB.
    pub level: u8,
}

/// Teardown progress, so a failed teardown resumes where it stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    #[default]
    Live,
    Flushed,
    FlushDone,
    CacheWb,
    KeyFreed,
    Reclaimed,
}

#[derive(Debug, Default)]
struct TdState {
    keys_configured: bool,
    tdcs: Vec<u64>,
    vcpus: Vec<VcpuPages>,
    /// S-EPT pages by (level of the entry that points to them, GPA aligned to that level).
    sept: BTreeMap<(u8, u64), u64>,
    private: BTreeMap<u64, PrivatePage>,
    initialized: bool,
    finalized: bool,
    mrtd: MrtdBuilder,
    phase: Phase,
}

/// A TD created by the driver. Its methods take `&self` so several host threads may drive it
/// (as KVM does): the driver's bookkeeping is locked, the SEAMCALLs are not serialised by the
/// driver, so contention reaches the module and comes back as `TDX_OPERAND_BUSY`.
#[derive(Debug)]
pub struct Td<S: Seamcall, M: HostMemory> {
    module: Arc<TdxModule<S, M>>,
    tdr: u64,
    hkid: u16,
    gpaw: Gpaw,
    config: TdConfig,
    state: Mutex<TdState>,
}

/// Index of a vCPU of a [`Td`].
pub type VcpuId = usize;

impl<S: Seamcall, M: HostMemory> Td<S, M> {
    fn st(&self) -> MutexGuard<'_, TdState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lp(&self, lp: u32) -> Result<&S, DriverError> {
        self.module.lp(lp).ok_or(DriverError::NoSuchLp(lp))
    }

    fn retries(&self) -> u32 {
        self.module.retry_policy().max_retries
    }

    fn busy_retry(&self) -> &'static [u16] {
        if self.module.retry_policy().retry_busy {
            &[code::OPERAND_BUSY]
        } else {
            &[]
        }
    }

    /// The module the TD lives on.
    pub fn module(&self) -> &Arc<TdxModule<S, M>> {
        &self.module
    }
    /// TDR physical address.
    pub fn tdr(&self) -> u64 {
        self.tdr
    }
    /// The TD's private HKID.
    pub fn hkid(&self) -> u16 {
        self.hkid
    }
    /// The TD's configuration.
    pub fn config(&self) -> &TdConfig {
        &self.config
    }
    /// TDCS pages.
    pub fn tdcs_pages(&self) -> Vec<u64> {
        self.st().tdcs.clone()
    }
    /// The pages of vCPU `vcpu`.
    pub fn vcpu(&self, vcpu: VcpuId) -> Option<VcpuPages> {
        self.st().vcpus.get(vcpu).cloned()
    }
    /// Number of vCPUs created.
    pub fn num_vcpus(&self) -> usize {
        self.st().vcpus.len()
    }
    /// S-EPT pages: `((entry level, GPA), page PA)`.
    pub fn sept_pages(&self) -> Vec<((u8, u64), u64)> {
        self.st().sept.iter().map(|(&k, &v)| (k, v)).collect()
    }
    /// Private pages by GPA.
    pub fn private_pages(&self) -> Vec<(u64, PrivatePage)> {
        self.st().private.iter().map(|(&k, &v)| (k, v)).collect()
    }
    /// The private page that maps `gpa` (its GPA and page), if any.
    pub fn private_page_covering(&self, gpa: u64) -> Option<(u64, PrivatePage)> {
        let st = self.st();
        let (&g, &p) = st.private.range(..=gpa).next_back()?;
        (gpa - g < page_bytes(p.level)).then_some((g, p))
    }
    /// The private pages that overlap `[start, end)`, by GPA.
    pub fn private_pages_in(&self, start: u64, end: u64) -> Vec<(u64, PrivatePage)> {
        let st = self.st();
        // The largest page is 2 MiB: nothing starting earlier can reach `start`.
        let from = start.saturating_sub(page_bytes(1) - 1);
        st.private
            .range(from..end.max(from))
            .filter(|&(&g, p)| g.saturating_add(page_bytes(p.level)) > start)
            .map(|(&g, &p)| (g, p))
            .collect()
    }
    /// Every host frame the module owns for this TD, TDR last.
    pub fn owned_pages(&self) -> Vec<u64> {
        let st = self.st();
        let mut v: Vec<u64> = st.private.values().map(|p| p.pa).collect();
        v.extend(st.sept.values());
        for vc in &st.vcpus {
            v.extend(&vc.tdcx);
            v.push(vc.tdvpr);
        }
        v.extend(&st.tdcs);
        v.push(self.tdr);
        v
    }

    fn configure(&mut self, td_params: &[u8; TD_PARAMS_SIZE]) -> Result<(), DriverError> {
        let m = &*self.module;
        // TDH.MNG.KEY.CONFIG on every package.
        for (_, lp) in m.package_lps() {
            let s = self.lp(lp as u32)?;
            let regs = Regs {
                rcx: self.tdr,
                ..Default::default()
            };
            let out = seam::call_retry(
                s,
                leaf::MNG_KEY_CONFIG,
                0,
                regs,
                &[code::KEY_GENERATION_FAILED, code::OPERAND_BUSY],
                self.retries(),
            )?;
            let _ = out;
        }
        self.st().keys_configured = true;
        // TDH.MNG.ADDCX × TDCS pages.
        let lp0 = self.lp(0)?;
        for _ in 0..m.info().tdcs_pages() {
            let page = m.frames().allocate()?;
            let regs = Regs {
                rcx: page,
                rdx: self.tdr,
                ..Default::default()
            };
            match seam::call_retry(lp0, leaf::MNG_ADDCX, 0, regs, &[], self.retries()) {
                Ok(_) => self.st().tdcs.push(page),
                Err(e) => {
                    let _ = m.frames().free(page);
                    return Err(e.into());
                }
            }
        }
        // TD_PARAMS in a host page, 1024-aligned; TDH.MNG.INIT.
        let params_pa = m.frames().allocate()?;
        let r = (|| -> Result<(), DriverError> {
            m.host_memory().write(params_pa, td_params)?;
            let regs = Regs {
                rcx: self.tdr,
                rdx: params_pa,
                ..Default::default()
            };
            seam::call_retry(lp0, leaf::MNG_INIT, 0, regs, &[], self.retries())?;
            Ok(())
        })();
        let _ = m.frames().free(params_pa);
        r?;
        self.st().initialized = true;
        Ok(())
    }

    /// TDH.VP.CREATE → TDH.VP.ADDCX × (TDVPS pages − 1) → TDH.VP.INIT on logical processor
    /// `lp` with `initial_rcx` as the vCPU's initial RCX/R8. Returns the vCPU's index.
    pub fn create_vcpu(&self, lp: u32, initial_rcx: u64) -> Result<VcpuId, DriverError> {
        let m = &*self.module;
        let s = self.lp(lp)?;
        let tdvpr = m.frames().allocate()?;
        let regs = Regs {
            rcx: tdvpr,
            rdx: self.tdr,
            ..Default::default()
        };
        if let Err(e) = seam::call_retry(s, leaf::VP_CREATE, 0, regs, &[], self.retries()) {
            let _ = m.frames().free(tdvpr);
            return Err(e.into());
        }
        let id = {
            let mut st = self.st();
            st.vcpus.push(VcpuPages {
                tdvpr,
                ..Default::default()
            });
            st.vcpus.len() - 1
        };
        for _ in 1..m.info().tdvps_pages() {
            let page = m.frames().allocate()?;
            let regs = Regs {
                rcx: page,
                rdx: tdvpr,
                ..Default::default()
            };
            match seam::call_retry(s, leaf::VP_ADDCX, 0, regs, &[], self.retries()) {
                Ok(_) => self.st().vcpus[id].tdcx.push(page),
                Err(e) => {
                    let _ = m.frames().free(page);
                    return Err(e.into());
                }
            }
        }
        let regs = Regs {
            rcx: tdvpr,
            rdx: initial_rcx,
            ..Default::default()
        };
        seam::call_retry(s, leaf::VP_INIT, 0, regs, &[], self.retries())?;
        let mut st = self.st();
        st.vcpus[id].initialized = true;
        st.vcpus[id].lp = Some(lp);
        Ok(id)
    }

    /// Records that vCPU `vcpu` ran on logical processor `lp` (TDH.VP.ENTER associates it
    /// there; teardown flushes it on that LP).
    pub fn note_vcpu_lp(&self, vcpu: VcpuId, lp: u32) {
        if let Some(v) = self.st().vcpus.get_mut(vcpu) {
            v.lp = Some(lp);
        }
    }

    /// Level of the S-EPT root's entries (PML4: 3 with GPAW 48, PML5: 4 with GPAW 52).
    fn root_level(&self) -> u8 {
        match self.gpaw {
            Gpaw::Gpaw48 => 3,
            Gpaw::Gpaw52 => 4,
        }
    }

    /// Adds the S-EPT pages missing to map `gpa` at `leaf_level` (TDH.MEM.SEPT.ADD from the
    /// root level down).
    pub fn ensure_sept(&self, lp: u32, gpa: Gpa, leaf_level: u8) -> Result<(), DriverError> {
        let s = self.lp(lp)?;
        let m = &*self.module;
        for level in (leaf_level + 1..=self.root_level()).rev() {
            let span = FRAME_SIZE << (9 * u32::from(level));
            let base = gpa.raw() & !(span - 1);
            if self.st().sept.contains_key(&(level, base)) {
                continue;
            }
            let page = m.frames().allocate()?;
            let regs = Regs {
                rcx: base | u64::from(level),
                rdx: self.tdr,
                r8: page,
                ..Default::default()
            };
            match seam::call_retry(
                s,
                leaf::MEM_SEPT_ADD,
                0,
                regs,
                self.busy_retry(),
                self.retries(),
            ) {
                Ok(_) => {
                    self.st().sept.insert((level, base), page);
                }
                Err(e) => {
                    let _ = m.frames().free(page);
                    // Another thread added the same table first: the entry is NL_MAPPED.
                    let raced =
                        e.code() == code::EPT_ENTRY_STATE_INCORRECT && (e.rdx >> 8) & 0xFF == 0x84;
                    if !raced {
                        return Err(e.into());
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds an initial page: S-EPT as needed, TDH.MEM.PAGE.ADD from a source page holding
    /// `content`, then (when `measure`) 16 × TDH.MR.EXTEND — KVM's order. The same steps are
    /// recorded in the driver's offline MRTD prediction ([`Td::predicted_mrtd`]).
    pub fn add_page(
        &self,
        gpa: Gpa,
        content: &[u8; FRAME_SIZE as usize],
        measure: bool,
    ) -> Result<(), DriverError> {
        let m = &*self.module;
        let lp0 = self.lp(0)?;
        self.ensure_sept(0, gpa, 0)?;
        let source = m.frames().allocate()?;
        let page = match m.frames().allocate() {
            Ok(p) => p,
            Err(e) => {
                let _ = m.frames().free(source);
                return Err(e.into());
            }
        };
        let added = (|| -> Result<(), DriverError> {
            m.host_memory().write(source, content)?;
            let regs = Regs {
                rcx: gpa.raw(),
                rdx: self.tdr,
                r8: page,
                r9: source,
                ..Default::default()
            };
            seam::call_retry(lp0, leaf::MEM_PAGE_ADD, 0, regs, &[], self.retries())?;
            Ok(())
        })();
        let _ = m.frames().free(source);
        if let Err(e) = added {
            let _ = m.frames().free(page);
            return Err(e);
        }
        {
            let mut st = self.st();
            st.private
                .insert(gpa.raw(), PrivatePage { pa: page, level: 0 });
            st.mrtd.mem_page_add(gpa).map_err(DriverError::Measure)?;
        }
        if measure {
            for i in 0..16u64 {
                let chunk_gpa = gpa.raw() + i * 256;
                let regs = Regs {
                    rcx: chunk_gpa,
                    rdx: self.tdr,
                    ..Default::default()
                };
                seam::call_retry(lp0, leaf::MR_EXTEND, 0, regs, &[], self.retries())?;
                let mut chunk = [0u8; 256];
                chunk.copy_from_slice(&content[(i * 256) as usize..(i as usize + 1) * 256]);
                self.st()
                    .mrtd
                    .mr_extend(Gpa(chunk_gpa), &chunk)
                    .map_err(DriverError::Measure)?;
            }
        }
        Ok(())
    }

    /// The MRTD the module must produce for the pages added so far, computed offline.
    pub fn predicted_mrtd(&self) -> Measurement {
        self.st().mrtd.clone().finalize()
    }

    /// TDH.MR.FINALIZE; returns MRTD read back with TDH.MNG.RD.
    pub fn finalize(&self) -> Result<Measurement, DriverError> {
        let regs = Regs {
            rcx: self.tdr,
            ..Default::default()
        };
        seam::call_retry(self.lp(0)?, leaf::MR_FINALIZE, 0, regs, &[], self.retries())?;
        self.st().finalized = true;
        self.read_mrtd()
    }

    /// Reads one TD-scope metadata field with TDH.MNG.RD.
    pub fn mng_rd(&self, field_id: u64) -> Result<u64, DriverError> {
        let regs = Regs {
            rcx: self.tdr,
            rdx: field_id,
            ..Default::default()
        };
        Ok(seam::call_retry(self.lp(0)?, leaf::MNG_RD, 0, regs, &[], self.retries())?.r8)
    }

    /// Reads MRTD (six elements of TDH.MNG.RD).
    pub fn read_mrtd(&self) -> Result<Measurement, DriverError> {
        let mut out = [0u8; MEASUREMENT_SIZE];
        for (i, c) in out.chunks_exact_mut(8).enumerate() {
            c.copy_from_slice(&self.mng_rd(FIELD_MRTD + i as u64)?.to_le_bytes());
        }
        Ok(Measurement(out))
    }

    /// TDH.MEM.PAGE.AUG of a 4 KiB (`level` 0) or 2 MiB (`level` 1) page at `gpa` on `lp`,
    /// adding S-EPT levels as needed. The guest must accept it.
    pub fn aug_page(&self, lp: u32, gpa: Gpa, level: u8) -> Result<u64, DriverError> {
        if level > 1 {
            return Err(DriverError::InvalidTdConfig {
                what: "AUG level",
                value: u64::from(level),
            });
        }
        let s = self.lp(lp)?;
        let m = &*self.module;
        self.ensure_sept(lp, gpa, level)?;
        let frames = 1u64 << (9 * u32::from(level));
        let page = m
            .frames()
            .allocate_contiguous(frames, FRAME_SIZE * frames)?;
        let regs = Regs {
            rcx: gpa.raw() | u64::from(level),
            rdx: self.tdr,
            r8: page,
            ..Default::default()
        };
        match seam::call_retry(
            s,
            leaf::MEM_PAGE_AUG,
            0,
            regs,
            self.busy_retry(),
            self.retries(),
        ) {
            Ok(_) => {
                self.st()
                    .private
                    .insert(gpa.raw(), PrivatePage { pa: page, level });
                Ok(page)
            }
            Err(e) => {
                let _ = m.frames().free(page);
                Err(e.into())
            }
        }
    }

    /// Removes the private page at `gpa`: before finalization directly with
    /// TDH.MEM.PAGE.REMOVE; afterwards TDH.MEM.RANGE.BLOCK → TDH.MEM.TRACK →
    /// TDH.MEM.PAGE.REMOVE. No vCPU may be running in the guest (nothing kicks it); use
    /// [`Td::remove_page_kicking`] otherwise. The frame returns to the allocator.
    pub fn remove_page(&self, lp: u32, gpa: Gpa) -> Result<(), DriverError> {
        self.remove_page_kicking(lp, gpa, &|| {})
    }

    /// [`Td::remove_page`] with running vCPUs: after TDH.MEM.TRACK, `kick` makes every vCPU
    /// that may be inside TDH.VP.ENTER leave the guest (KVM: `tdx_track` kicks all vCPUs), and
    /// TDH.MEM.PAGE.REMOVE is retried (bounded, yielding in between) while the module reports
    /// `TDX_TLB_TRACKING_NOT_DONE`, i.e. until those vCPUs have left the old TLB epoch.
    pub fn remove_page_kicking(
        &self,
        lp: u32,
        gpa: Gpa,
        kick: &dyn Fn(),
    ) -> Result<(), DriverError> {
        let s = self.lp(lp)?;
        let (page, finalized) = {
            let st = self.st();
            (st.private.get(&gpa.raw()).copied(), st.finalized)
        };
        let page = page.ok_or(DriverError::NoSuchPage(gpa.raw()))?;
        let gl = gpa.raw() | u64::from(page.level);
        let td = |rcx| Regs {
            rcx,
            rdx: self.tdr,
            ..Default::default()
        };
        if finalized {
            match seam::call_retry(
                s,
                leaf::MEM_RANGE_BLOCK,
                0,
                td(gl),
                self.busy_retry(),
                self.retries(),
            ) {
                Ok(_) => {}
                // A previous attempt blocked it and then failed: resume from TRACK.
                Err(e) if e.code() == code::GPA_RANGE_ALREADY_BLOCKED => {}
                Err(e) => return Err(e.into()),
            }
            let track = Regs {
                rcx: self.tdr,
                ..Default::default()
            };
            seam::call_retry(
                s,
                leaf::MEM_TRACK,
                0,
                track,
                &[code::PREVIOUS_TLB_EPOCH_BUSY, code::OPERAND_BUSY],
                self.retries(),
            )?;
            kick();
        }
        let mut waits = 0u32;
        loop {
            match seam::call_retry(
                s,
                leaf::MEM_PAGE_REMOVE,
                0,
                td(gl),
                self.busy_retry(),
                self.retries(),
            ) {
                Ok(_) => break,
                Err(e) if e.code() == TLB_TRACKING_NOT_DONE && waits < MAX_TRACKING_WAITS => {
                    waits += 1;
                    kick();
                    std::thread::sleep(std::time::Duration::from_micros(50));
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.st().private.remove(&gpa.raw());
        self.module.frames().free(page.pa)?;
        Ok(())
    }

    /// Tears the TD down (tdx-module-abi.md §7.7): TDH.VP.FLUSH of each vCPU on its logical
    /// processor → TDH.MNG.VPFLUSHDONE → TDH.PHYMEM.CACHE.WB on every package (resumed on
    /// `TDX_INTERRUPTED_RESUMABLE`) → TDH.MNG.KEY.FREEID → TDH.PHYMEM.PAGE.RECLAIM of every
    /// page (then TDH.PHYMEM.PAGE.WBINVD with the TD's HKID), the TDR last (WBINVD with the
    /// global HKID). Frames return to the allocator as they are reclaimed; the HKID returns to
    /// the pool after KEY.FREEID. Resumable after a failure.
    pub fn teardown(&self) -> Result<(), DriverError> {
        let m = &*self.module;
        let retries = self.retries();
        let phase = self.st().phase;
        if phase < Phase::Flushed {
            let (keys, vcpus) = {
                let st = self.st();
                (st.keys_configured, st.vcpus.clone())
            };
            if keys {
                for v in &vcpus {
                    let Some(lp) = v.lp else { continue };
                    let regs = Regs {
                        rcx: v.tdvpr,
                        ..Default::default()
                    };
                    match seam::call_retry(self.lp(lp)?, leaf::VP_FLUSH, 0, regs, &[], retries) {
                        Ok(_) => {}
                        Err(e) if e.code() == code::VCPU_NOT_ASSOCIATED => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            self.st().phase = Phase::Flushed;
        }
        let tdr_regs = Regs {
            rcx: self.tdr,
            ..Default::default()
        };
        let lp0 = self.lp(0)?;
        if self.st().phase < Phase::FlushDone {
            seam::call_retry(lp0, leaf::MNG_VPFLUSHDONE, 0, tdr_regs, &[], retries)?;
            self.st().phase = Phase::FlushDone;
        }
        if self.st().phase < Phase::CacheWb {
            for (_, lp) in m.package_lps() {
                let s = self.lp(lp as u32)?;
                let mut resume = 0;
                let mut done = false;
                for _ in 0..=m.retry_policy().max_cache_wb_resumes {
                    let regs = Regs {
                        rcx: resume,
                        ..Default::default()
                    };
                    let out = seam::call_retry(s, leaf::PHYMEM_CACHE_WB, 0, regs, &[], retries);
                    match out {
                        Ok(_) => {
                            done = true;
                            break;
                        }
                        Err(e) if e.code() == code::INTERRUPTED_RESUMABLE => resume = 1,
                        Err(e) => return Err(e.into()),
                    }
                }
                if !done {
                    return Err(DriverError::CacheWbNoProgress {
                        resumes: m.retry_policy().max_cache_wb_resumes,
                    });
                }
            }
            self.st().phase = Phase::CacheWb;
        }
        if self.st().phase < Phase::KeyFreed {
            seam::call_retry(lp0, leaf::MNG_KEY_FREEID, 0, tdr_regs, &[], retries)?;
            m.hkids().free(self.hkid)?;
            self.st().phase = Phase::KeyFreed;
        }
        if self.st().phase < Phase::Reclaimed {
            // Children first (private, S-EPT, TDVPS, TDCS), one at a time so the bookkeeping
            // always lists exactly the pages the module still owns.
            loop {
                let next = {
                    let st = self.st();
                    st.private
                        .iter()
                        .next()
                        .map(|(&g, p)| (Owned::Private(g), p.pa))
                        .or_else(|| st.sept.iter().next().map(|(&k, &pa)| (Owned::Sept(k), pa)))
                        .or_else(|| {
                            st.vcpus.iter().enumerate().find_map(|(i, v)| {
                                v.tdcx
                                    .last()
                                    .map(|&pa| (Owned::Tdvpx(i), pa))
                                    .or((v.tdvpr != 0).then_some((Owned::Tdvpr(i), v.tdvpr)))
                            })
                        })
                        .or_else(|| st.tdcs.last().map(|&pa| (Owned::Tdcs, pa)))
                };
                let Some((what, pa)) = next else { break };
                self.reclaim(pa, self.hkid)?;
                {
                    let mut st = self.st();
                    match what {
                        Owned::Private(g) => {
                            st.private.remove(&g);
                        }
                        Owned::Sept(k) => {
                            st.sept.remove(&k);
                        }
                        Owned::Tdvpx(i) => {
                            st.vcpus[i].tdcx.pop();
                        }
                        Owned::Tdvpr(i) => st.vcpus[i].tdvpr = 0,
                        Owned::Tdcs => {
                            st.tdcs.pop();
                        }
                    }
                }
                m.frames().free(pa)?;
            }
            let global = m.hkids().global_hkid();
            self.reclaim(self.tdr, global)?;
            m.frames().free(self.tdr)?;
            self.st().phase = Phase::Reclaimed;
        }
        Ok(())
    }

    /// TDH.PHYMEM.PAGE.RECLAIM then TDH.PHYMEM.PAGE.WBINVD with `hkid` in the address.
    fn reclaim(&self, pa: u64, hkid: u16) -> Result<(), SeamcallFailure> {
        let lp0 = self.module.lp(0).ok_or(SeamcallFailure {
            leaf: leaf::PHYMEM_PAGE_RECLAIM,
            status: u64::MAX,
            rcx: 0,
            rdx: 0,
        })?;
        let retries = self.retries();
        let regs = Regs {
            rcx: pa,
            ..Default::default()
        };
        seam::call_retry(lp0, leaf::PHYMEM_PAGE_RECLAIM, 0, regs, &[], retries)?;
        let regs = Regs {
            rcx: self.module.pa_with_hkid(pa, hkid),
            ..Default::default()
        };
        seam::call_retry(lp0, leaf::PHYMEM_PAGE_WBINVD, 0, regs, &[], retries)?;
        Ok(())
    }

    /// Whether teardown completed.
    pub fn is_torn_down(&self) -> bool {
        self.st().phase == Phase::Reclaimed
    }
}

/// Bytes mapped by a private page of `level` (0 = 4 KiB, 1 = 2 MiB).
fn page_bytes(level: u8) -> u64 {
    FRAME_SIZE << (9 * u32::from(level.min(2)))
}

#[derive(Clone, Copy)]
enum Owned {
    Private(u64),
    Sept((u8, u64)),
    Tdvpx(usize),
    Tdvpr(usize),
    Tdcs,
}

impl<S: Seamcall, M: HostMemory> Drop for Td<S, M> {
    fn drop(&mut self) {
        if !self.is_torn_down() {
            if let Err(e) = self.teardown() {
                tracing::error!(tdr = self.tdr, error = %e, "TD teardown failed; its pages are leaked");
            }
        }
    }
}
