//! Module bring-up as Linux does it (kvm-tdx-host.md §2.4, tdx-module-abi.md §7.7) and the
//! typed module metadata ([`TdxModuleInfo`]).

use std::sync::{Mutex, MutexGuard};

use tdx_abi::call::{Regs, Seamcall};
use tdx_abi::tdmr::CmrInfoEntry;
use tdx_memory::tdmr::{
    plan_tdmrs_with_allocator, PamtAllocator, PamtRequest, TdmrConstraints, TdmrPlan, TdxMemoryMap,
    UsableRegion,
};

use super::hkid::HkidPool;
use super::memory::{FrameAllocator, HostMemory, FRAME_SIZE};
use super::seam::{self, code, leaf};
use super::DriverError;

/// Global (platform-scope) metadata field identifiers read at bring-up
/// (tdx-module-abi.md §5.11).
#[allow(missing_docs)]
pub mod field {
    pub const BUILD_DATE: u64 = 0x8800_0002_0000_0001;
    pub const BUILD_NUM: u64 = 0x8800_0001_0000_0002;
    pub const MINOR_VERSION: u64 = 0x0800_0001_0000_0003;
    pub const MAJOR_VERSION: u64 = 0x0800_0001_0000_0004;
    pub const UPDATE_VERSION: u64 = 0x0800_0001_0000_0005;
    pub const INTERNAL_VERSION: u64 = 0x0800_0001_0000_0006;
    pub const TDX_FEATURES0: u64 = 0x0A00_0003_0000_0008;
    pub const NUM_CMRS: u64 = 0x9000_0001_0000_0000;
    pub const CMR_BASE0: u64 = 0x9000_0003_0000_0080;
    pub const CMR_SIZE0: u64 = 0x9000_0003_0000_0100;
    pub const MAX_TDMRS: u64 = 0x9100_0001_0000_0008;
    pub const MAX_RESERVED_PER_TDMR: u64 = 0x9100_0001_0000_0009;
    pub const PAMT_4K_ENTRY_SIZE: u64 = 0x9100_0001_0000_0010;
    pub const PAMT_2M_ENTRY_SIZE: u64 = 0x9100_0001_0000_0011;
    pub const PAMT_1G_ENTRY_SIZE: u64 = 0x9100_0001_0000_0012;
    pub const TDR_BASE_SIZE: u64 = 0x9800_0001_0000_0000;
    pub const TDCS_BASE_SIZE: u64 = 0x9800_0001_0000_0100;
    pub const TDVPS_BASE_SIZE: u64 = 0x9800_0001_0000_0200;
    pub const ATTRIBUTES_FIXED0: u64 = 0x1900_0003_0000_0000;
    pub const ATTRIBUTES_FIXED1: u64 = 0x1900_0003_0000_0001;
    pub const XFAM_FIXED0: u64 = 0x1900_0003_0000_0002;
    pub const XFAM_FIXED1: u64 = 0x1900_0003_0000_0003;
    pub const NUM_CPUID_CONFIG: u64 = 0x9900_0001_0000_0004;
    pub const MAX_VCPUS_PER_TD: u64 = 0x9900_0001_0000_0008;
    pub const CPUID_CONFIG_LEAVES0: u64 = 0x9900_0003_0000_0400;
    pub const CPUID_CONFIG_VALUES0: u64 = 0x9900_0003_0000_0500;
}

/// `TDX_FEATURES0` bit 18, NO_RBP_MOD: Linux refuses a module without it.
pub const TDX_FEATURES0_NO_RBP_MOD: u64 = 1 << 18;

/// Most CMRs the metadata can describe.
pub const MAX_CMRS: u64 = 32;
/// Most configurable CPUID leaves the driver accepts (bounds the metadata-driven loop).
pub const MAX_CPUID_CONFIG: u64 = 128;

/// A CPUID leaf the module lets the host configure, with the bits it may set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidConfig {
    /// CPUID leaf (EAX input).
    pub leaf: u32,
    /// CPUID subleaf (ECX input), `None` when the leaf has no subleaves.
    pub subleaf: Option<u32>,
    /// Bits of EAX, EBX, ECX, EDX the host may set.
    pub allowed: [u32; 4],
}

/// The module's version fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TdxModuleVersion {
    /// MAJOR_VERSION.
    pub major: u16,
    /// MINOR_VERSION.
    pub minor: u16,
    /// UPDATE_VERSION.
    pub update: u16,
    /// INTERNAL_VERSION.
    pub internal: u16,
    /// BUILD_NUM.
    pub build_num: u16,
    /// BUILD_DATE (yyyymmdd).
    pub build_date: u32,
}

/// Global metadata of a TDX module, read with TDH.SYS.RD during bring-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdxModuleInfo {
    /// Version fields.
    pub version: TdxModuleVersion,
    /// TDX_FEATURES0.
    pub features0: u64,
    /// TDMR limits and PAMT entry sizes, as the planner takes them.
    pub tdmr_constraints: TdmrConstraints,
    /// TDR_BASE_SIZE in bytes.
    pub tdr_base_size: u64,
    /// TDCS_BASE_SIZE in bytes.
    pub tdcs_base_size: u64,
    /// TDVPS_BASE_SIZE in bytes.
    pub tdvps_base_size: u64,
    /// ATTRIBUTES_FIXED0: bits that may be 1.
    pub attributes_fixed0: u64,
    /// ATTRIBUTES_FIXED1: bits that must be 1.
    pub attributes_fixed1: u64,
    /// XFAM_FIXED0: bits that may be 1.
    pub xfam_fixed0: u64,
    /// XFAM_FIXED1: bits that must be 1.
    pub xfam_fixed1: u64,
    /// MAX_VCPUS_PER_TD, when the module has the field.
    pub max_vcpus_per_td: Option<u16>,
    /// The configurable CPUID leaves, in the order TD_PARAMS.CPUID_VALUES uses.
    pub cpuid_configs: Vec<CpuidConfig>,
    /// Convertible memory ranges `(base, size)`.
    pub cmrs: Vec<(u64, u64)>,
}

impl TdxModuleInfo {
    /// Number of TDCS pages MNG.ADDCX must add.
    pub fn tdcs_pages(&self) -> u64 {
        self.tdcs_base_size / FRAME_SIZE
    }
    /// Number of TDVPS pages (TDVPR included).
    pub fn tdvps_pages(&self) -> u64 {
        self.tdvps_base_size / FRAME_SIZE
    }
}

/// One logical processor of the platform: a SEAMCALL path that runs on it, and its package.
#[derive(Clone, Debug)]
pub struct LogicalCpu<S> {
    /// Issues SEAMCALLs on this logical processor.
    pub seamcall: S,
    /// Physical package (socket) of this logical processor.
    pub package: u32,
}

/// What the host knows about the platform before bring-up (Linux: memblock, the KeyID
/// partitioning MSR and CPUID).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformDesc {
    /// TDX-usable host memory, `(start, end)` exclusive, 4 KiB aligned, disjoint. The frame
    /// allocator and the TDMR planner both take it.
    pub usable_ranges: Vec<(u64, u64)>,
    /// First TDX KeyID (the global KeyID).
    pub first_tdx_hkid: u16,
    /// Number of TDX KeyIDs.
    pub num_tdx_hkids: u16,
    /// Bit position of the HKID in a physical address (the reduced MAXPHYADDR).
    pub hkid_shift: u32,
}

/// Bounds of the driver's retry loops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Extra attempts on `TDX_RND_NO_ENTROPY`, `TDX_KEY_GENERATION_FAILED`, and (where the
    /// driver retries it) `TDX_OPERAND_BUSY`.
    pub max_retries: u32,
    /// Whether runtime memory leaves (S-EPT add, AUG, block, remove) retry `TDX_OPERAND_BUSY`.
    pub retry_busy: bool,
    /// Most TDH.PHYMEM.CACHE.WB resumptions per package.
    pub max_cache_wb_resumes: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 16,
            retry_busy: true,
            max_cache_wb_resumes: 1024,
        }
    }
}

/// Where a step of bring-up failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BringUpStep {
    /// TDH.SYS.INIT.
    SysInit,
    /// TDH.SYS.LP.INIT on the given logical processor.
    LpInit(u32),
    /// TDH.SYS.RD of the given field.
    ReadMetadata(u64),
    /// TDH.SYS.CONFIG.
    Config,
    /// TDH.SYS.KEY.CONFIG on the given package.
    KeyConfig(u32),
    /// TDH.SYS.TDMR.INIT of the TDMR at the given base.
    TdmrInit(u64),
}

/// A TDX module brought up by the driver: the logical processors, host memory, the frame
/// allocator, the HKID pool and the module's metadata.
///
/// Generic over the SEAMCALL path `S` (the real instruction or the emulated module) and the
/// host memory `M`.
#[derive(Debug)]
pub struct TdxModule<S, M> {
    lps: Vec<LogicalCpu<S>>,
    mem: M,
    frames: Mutex<FrameAllocator>,
    hkids: Mutex<HkidPool>,
    info: TdxModuleInfo,
    plan: TdmrPlan,
    pamt_chunks: Vec<u64>,
    hkid_shift: u32,
    retry: RetryPolicy,
}

/// PAMT chunks from the frame allocator (Linux: `alloc_contig_pages`).
struct FramePamtAllocator<'a> {
    frames: &'a mut FrameAllocator,
    chunks: Vec<u64>,
}

impl PamtAllocator for FramePamtAllocator<'_> {
    fn allocate(&mut self, request: &PamtRequest) -> Option<u64> {
        let frames = request.size.div_ceil(FRAME_SIZE);
        let align = request.align.max(FRAME_SIZE);
        let pa = self.frames.allocate_contiguous(frames, align).ok()?;
        self.chunks.push(pa);
        Some(pa)
    }
}

impl<S: Seamcall, M: HostMemory> TdxModule<S, M> {
    /// Brings the module up as Linux does: TDH.SYS.INIT, TDH.SYS.LP.INIT on every logical
    /// processor, metadata with TDH.SYS.RD, the TDMR/PAMT plan, TDH.SYS.CONFIG,
    /// TDH.SYS.KEY.CONFIG once per package, TDH.SYS.TDMR.INIT until every TDMR is initialised.
    ///
    /// On failure the frames the driver allocated are given back unless the module may
    /// already use them (PAMTs after TDH.SYS.CONFIG succeeded stay allocated: Linux too leaks
    /// them rather than hand the module's memory to someone else).
    pub fn init(
        lps: Vec<LogicalCpu<S>>,
        mem: M,
        desc: &PlatformDesc,
        retry: RetryPolicy,
    ) -> Result<Self, DriverError> {
        let Some(lp0) = lps.first() else {
            return Err(DriverError::NoLogicalCpus);
        };
        let mut frames = FrameAllocator::new(&desc.usable_ranges)?;
        let hkids = HkidPool::new(desc.first_tdx_hkid, desc.num_tdx_hkids)?;

        // 1. TDH.SYS.INIT (RCX = 0), once.
        seam::call_retry(
            &lp0.seamcall,
            leaf::SYS_INIT,
            0,
            Regs::default(),
            &[],
            retry.max_retries,
        )
        .map_err(|e| DriverError::bring_up(BringUpStep::SysInit, e))?;
        // 2. TDH.SYS.LP.INIT on every logical processor.
        for (i, lp) in lps.iter().enumerate() {
            seam::call_retry(
                &lp.seamcall,
                leaf::SYS_LP_INIT,
                0,
                Regs::default(),
                &[],
                retry.max_retries,
            )
            .map_err(|e| DriverError::bring_up(BringUpStep::LpInit(i as u32), e))?;
        }
        // 3. Metadata.
        let info = read_module_info(&lp0.seamcall, retry)?;
        if info.features0 & TDX_FEATURES0_NO_RBP_MOD == 0 {
            return Err(DriverError::MissingFeature {
                features0: info.features0,
                bit: 18,
            });
        }
        // 4. TDMRs and PAMTs.
        let regions: Vec<UsableRegion> = desc
            .usable_ranges
            .iter()
            .map(|&(s, e)| UsableRegion::new(s, e))
            .collect();
        let cmrs: Vec<CmrInfoEntry> = info
            .cmrs
            .iter()
            .map(|&(cmr_base, cmr_size)| CmrInfoEntry { cmr_base, cmr_size })
            .collect();
        let map = TdxMemoryMap::new(&regions, &cmrs)?;
        let mut pamt = FramePamtAllocator {
            frames: &mut frames,
            chunks: Vec::new(),
        };
        let plan = match plan_tdmrs_with_allocator(&map, &info.tdmr_constraints, &mut pamt) {
            Ok(p) => p,
            Err(e) => {
                for c in pamt.chunks {
                    let _ = frames.free(c);
                }
                return Err(e.into());
            }
        };
        let pamt_chunks = pamt.chunks;
        // TDMR_INFO array and PA array, 512-byte aligned, in host memory.
        let stride = (64 + 16 * u64::from(info.tdmr_constraints.max_reserved_per_tdmr))
            .next_multiple_of(512);
        let array_frames = (stride * plan.tdmrs.len() as u64)
            .div_ceil(FRAME_SIZE)
            .max(1);
        let pa_array_frames =
            ((plan.tdmrs.len() as u64 * 8).next_power_of_two().max(512)).div_ceil(FRAME_SIZE);
        let free_all = |frames: &mut FrameAllocator, extra: &[u64]| {
            for &c in pamt_chunks.iter().chain(extra) {
                let _ = frames.free(c);
            }
        };
        let array_pa = match frames.allocate_contiguous(array_frames, FRAME_SIZE) {
            Ok(p) => p,
            Err(e) => {
                free_all(&mut frames, &[]);
                return Err(e.into());
            }
        };
        let pa_array_pa = match frames.allocate_contiguous(pa_array_frames, FRAME_SIZE) {
            Ok(p) => p,
            Err(e) => {
                free_all(&mut frames, &[array_pa]);
                return Err(e.into());
            }
        };
        let staged = (|| -> Result<u64, DriverError> {
            let layout = plan.to_physical_layout(array_pa, pa_array_pa)?;
            mem.write(layout.tdmr_info_array_pa, &layout.tdmr_info_array)?;
            mem.write(layout.pa_array_pa, &layout.pa_array)?;
            Ok(layout.num_tdmrs)
        })();
        let num_tdmrs = match staged {
            Ok(n) => n,
            Err(e) => {
                free_all(&mut frames, &[array_pa, pa_array_pa]);
                return Err(e);
            }
        };
        // 5. TDH.SYS.CONFIG.
        let regs = Regs {
            rcx: pa_array_pa,
            rdx: num_tdmrs,
            r8: u64::from(hkids.global_hkid()),
            ..Default::default()
        };
        let r = seam::call_retry(
            &lp0.seamcall,
            leaf::SYS_CONFIG,
            0,
            regs,
            &[],
            retry.max_retries,
        );
        // The module copied the TDMR list; its staging frames go back either way.
        let _ = frames.free(array_pa);
        let _ = frames.free(pa_array_pa);
        if let Err(e) = r {
            free_all(&mut frames, &[]);
            return Err(DriverError::bring_up(BringUpStep::Config, e));
        }
        // 6. TDH.SYS.KEY.CONFIG once per package, serialised. From here on the PAMTs belong
        // to the module and are never given back on failure.
        for (pkg, lp) in first_lp_per_package(&lps) {
            seam::call_retry(
                &lps[lp].seamcall,
                leaf::SYS_KEY_CONFIG,
                0,
                Regs::default(),
                &[code::KEY_GENERATION_FAILED],
                retry.max_retries,
            )
            .map_err(|e| DriverError::bring_up(BringUpStep::KeyConfig(pkg), e))?;
        }
        // 7. TDH.SYS.TDMR.INIT per TDMR until the returned "next" reaches its end.
        for t in &plan.tdmrs {
            let end = t.tdmr_base.saturating_add(t.tdmr_size);
            // One call covers at least 4 MiB (1024 PAMT_4K entries).
            let max_calls = t.tdmr_size / (4 << 20) + 16;
            let mut done = false;
            for _ in 0..max_calls {
                let regs = Regs {
                    rcx: t.tdmr_base,
                    ..Default::default()
                };
                let out = seam::call_retry(
                    &lp0.seamcall,
                    leaf::SYS_TDMR_INIT,
                    0,
                    regs,
                    &[],
                    retry.max_retries,
                )
                .map_err(|e| DriverError::bring_up(BringUpStep::TdmrInit(t.tdmr_base), e))?;
                if seam::status_code(out.rax) == code::TDMR_ALREADY_INITIALIZED || out.rdx >= end {
                    done = true;
                    break;
                }
            }
            if !done {
                return Err(DriverError::TdmrInitNoProgress {
                    tdmr_base: t.tdmr_base,
                    calls: max_calls,
                });
            }
        }
        Ok(Self {
            lps,
            mem,
            frames: Mutex::new(frames),
            hkids: Mutex::new(hkids),
            info,
            plan,
            pamt_chunks,
            hkid_shift: desc.hkid_shift,
            retry,
        })
    }

    /// The module's metadata.
    pub fn info(&self) -> &TdxModuleInfo {
        &self.info
    }

    /// The TDMR/PAMT plan given to TDH.SYS.CONFIG.
    pub fn tdmr_plan(&self) -> &TdmrPlan {
        &self.plan
    }

    /// First address of each PAMT chunk (owned by the module for the platform's life).
    pub fn pamt_chunks(&self) -> &[u64] {
        &self.pamt_chunks
    }

    /// Number of logical processors.
    pub fn num_lps(&self) -> u32 {
        self.lps.len() as u32
    }

    /// The SEAMCALL path of logical processor `lp`.
    pub fn lp(&self, lp: u32) -> Option<&S> {
        self.lps.get(lp as usize).map(|l| &l.seamcall)
    }

    /// Indices of one logical processor per package, with the package id.
    pub fn package_lps(&self) -> Vec<(u32, usize)> {
        first_lp_per_package(&self.lps)
    }

    /// Host memory.
    pub fn host_memory(&self) -> &M {
        &self.mem
    }

    /// The frame allocator (locked).
    pub fn frames(&self) -> MutexGuard<'_, FrameAllocator> {
        self.frames.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The HKID pool (locked).
    pub fn hkids(&self) -> MutexGuard<'_, HkidPool> {
        self.hkids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bit position of the HKID in a physical address.
    pub fn hkid_shift(&self) -> u32 {
        self.hkid_shift
    }

    /// Retry bounds.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// `pa` with `hkid` in its KeyID bits (Linux `set_hkid_to_hpa`).
    pub fn pa_with_hkid(&self, pa: u64, hkid: u16) -> u64 {
        pa | (u64::from(hkid) << self.hkid_shift)
    }
}

/// `(package, index of its first logical processor)` in package order.
fn first_lp_per_package<S>(lps: &[LogicalCpu<S>]) -> Vec<(u32, usize)> {
    let mut out: Vec<(u32, usize)> = Vec::new();
    for (i, lp) in lps.iter().enumerate() {
        if !out.iter().any(|&(p, _)| p == lp.package) {
            out.push((lp.package, i));
        }
    }
    out.sort_unstable();
    out
}

/// Reads one global metadata field with TDH.SYS.RD, masked to its element size.
pub fn sys_rd<S: Seamcall + ?Sized>(
    s: &S,
    field_id: u64,
    retry: RetryPolicy,
) -> Result<u64, DriverError> {
    let regs = Regs {
        rdx: field_id,
        ..Default::default()
    };
    let out = seam::call_retry(s, leaf::SYS_RD, 0, regs, &[], retry.max_retries)
        .map_err(|e| DriverError::bring_up(BringUpStep::ReadMetadata(field_id), e))?;
    let bits = 8u32 << ((field_id >> 32) & 3);
    Ok(if bits == 64 {
        out.r8
    } else {
        out.r8 & ((1u64 << bits) - 1)
    })
}

/// Reads the global metadata the driver needs into a [`TdxModuleInfo`].
pub fn read_module_info<S: Seamcall + ?Sized>(
    s: &S,
    retry: RetryPolicy,
) -> Result<TdxModuleInfo, DriverError> {
    let rd = |f| sys_rd(s, f, retry);
    let u16_of = |f: u64, v: u64| {
        u16::try_from(v).map_err(|_| DriverError::BadMetadata {
            field: f,
            value: v,
            why: "does not fit 16 bits",
        })
    };
    let version = TdxModuleVersion {
        major: u16_of(field::MAJOR_VERSION, rd(field::MAJOR_VERSION)?)?,
        minor: u16_of(field::MINOR_VERSION, rd(field::MINOR_VERSION)?)?,
        update: u16_of(field::UPDATE_VERSION, rd(field::UPDATE_VERSION)?)?,
        internal: u16_of(field::INTERNAL_VERSION, rd(field::INTERNAL_VERSION)?)?,
        build_num: u16_of(field::BUILD_NUM, rd(field::BUILD_NUM)?)?,
        build_date: rd(field::BUILD_DATE)? as u32,
    };
    let features0 = rd(field::TDX_FEATURES0)?;
    let tdmr_constraints = TdmrConstraints::from_metadata(
        rd(field::MAX_TDMRS)?,
        rd(field::MAX_RESERVED_PER_TDMR)?,
        rd(field::PAMT_4K_ENTRY_SIZE)?,
        rd(field::PAMT_2M_ENTRY_SIZE)?,
        rd(field::PAMT_1G_ENTRY_SIZE)?,
    )?;
    let page_multiple = |f: u64, min_pages: u64| -> Result<u64, DriverError> {
        let v = rd(f)?;
        if v % FRAME_SIZE != 0 || v < min_pages * FRAME_SIZE || v > 64 * FRAME_SIZE {
            return Err(DriverError::BadMetadata {
                field: f,
                value: v,
                why: "not a page multiple in the supported range",
            });
        }
        Ok(v)
    };
    let tdr_base_size = page_multiple(field::TDR_BASE_SIZE, 1)?;
    let tdcs_base_size = page_multiple(field::TDCS_BASE_SIZE, 1)?;
    let tdvps_base_size = page_multiple(field::TDVPS_BASE_SIZE, 1)?;
    let max_vcpus_per_td = match sys_rd(s, field::MAX_VCPUS_PER_TD, retry) {
        Ok(v) => Some(u16_of(field::MAX_VCPUS_PER_TD, v)?),
        Err(_) => None,
    };
    let num_cpuid = rd(field::NUM_CPUID_CONFIG)?;
    if num_cpuid > MAX_CPUID_CONFIG {
        return Err(DriverError::BadMetadata {
            field: field::NUM_CPUID_CONFIG,
            value: num_cpuid,
            why: "more configurable CPUID leaves than the driver supports",
        });
    }
    let mut cpuid_configs = Vec::with_capacity(num_cpuid as usize);
    for i in 0..num_cpuid {
        let l = rd(field::CPUID_CONFIG_LEAVES0 + i)?;
        let v0 = rd(field::CPUID_CONFIG_VALUES0 + 2 * i)?;
        let v1 = rd(field::CPUID_CONFIG_VALUES0 + 2 * i + 1)?;
        let sub = (l >> 32) as u32;
        cpuid_configs.push(CpuidConfig {
            leaf: l as u32,
            subleaf: (sub != u32::MAX).then_some(sub),
            allowed: [v0 as u32, (v0 >> 32) as u32, v1 as u32, (v1 >> 32) as u32],
        });
    }
    let num_cmrs = rd(field::NUM_CMRS)?;
    if num_cmrs == 0 || num_cmrs > MAX_CMRS {
        return Err(DriverError::BadMetadata {
            field: field::NUM_CMRS,
            value: num_cmrs,
            why: "not in 1..=32",
        });
    }
    let mut cmrs = Vec::with_capacity(num_cmrs as usize);
    for i in 0..num_cmrs {
        let base = rd(field::CMR_BASE0 + i)?;
        let size = rd(field::CMR_SIZE0 + i)?;
        if size != 0 {
            cmrs.push((base, size));
        }
    }
    Ok(TdxModuleInfo {
        version,
        features0,
        tdmr_constraints,
        tdr_base_size,
        tdcs_base_size,
        tdvps_base_size,
        attributes_fixed0: rd(field::ATTRIBUTES_FIXED0)?,
        attributes_fixed1: rd(field::ATTRIBUTES_FIXED1)?,
        xfam_fixed0: rd(field::XFAM_FIXED0)?,
        xfam_fixed1: rd(field::XFAM_FIXED1)?,
        max_vcpus_per_td,
        cpuid_configs,
        cmrs,
    })
}
