//! Turns a [`TdConfig`] and its payload or firmware into a [`LaunchPlan`].
//!
//! ## Firmware (TDVF)
//!
//! The sections of the TDVF metadata ([`crate::tdvf`]) become initial regions in table order,
//! as QEMU adds them:
//!
//! * BFV/CFV: the file's bytes, zero-padded to the section's memory size; measured when the
//!   section has MR.EXTEND (stock OVMF: BFV only).
//! * TD_HOB: the TD HOB ([`crate::hob`]) at the start of zeroed pages; vCPU RCX = its GPA.
//! * TempMem/PermMem: zeroed pages, added before finalize — unless the section has PAGE.AUG:
//!   then it is left out of the initial image and its pages are added lazily after finalize
//!   (TDH.MEM.PAGE.AUG on the first access, which the guest then accepts), so it stays
//!   "unaccepted" in the HOB.
//! * Payload/PayloadParam/TdInfo (td-shim): refused, as QEMU does.
//!
//! TD_HOB and TempMem/PermMem must lie inside RAM `[0, memory)`; BFV/CFV may lie inside RAM or
//! wholly above it (OVMF maps them just below 4 GiB), never straddling its end or touching the
//! virtio-mmio windows. Some added section must hold the reset vector (0xFFFF_FFF0). The
//! vCPUs start at [`GuestEntry::ResetVector`].
//!
//! ## ELF payload
//!
//! The ELF payload contract (also in the crate README):
//!
//! * identity page tables for GPA `[0, 4 GiB)` with 2 MiB pages, present + RW + U/S: the PML4
//!   at [`PML4_GPA`] (0x1000), the PDPT at 0x2000, four page directories at 0x3000–0x6FFF —
//!   measured;
//! * the TD HOB at [`PAYLOAD_HOB_GPA`] (0x8000, one page) — unmeasured; RCX holds its GPA;
//! * the `PT_LOAD` segments at their physical addresses (≥ 1 MiB), zero-padded to pages —
//!   measured, in ascending GPA order;
//! * the vCPUs start in 64-bit mode at `e_entry` with CR3 = 0x1000
//!   ([`GuestEntry::Long64`], emulated backend only);
//! * the rest of RAM is unaccepted private memory (the HOB says which): the payload accepts
//!   it (TDG.MEM.PAGE.ACCEPT) before use, or converts it to shared (MapGPA).
use std::path::{Path, PathBuf};

use tdx_host::backend::{GuestEntry, TdVmConfig};

use crate::config::{Boot, TdConfig};
use crate::elf::{self, ElfError};
use crate::hob::{self, HobError};
use crate::plan::{
    DevicesPlan, InitialRegion, LaunchPlan, VIRTIO_MMIO_BASE, VIRTIO_MMIO_MAX, VIRTIO_MMIO_STRIDE,
};
use crate::tdvf::{self, SectionType, TdvfError, TdvfMetadata};

/// GPA of the payload's PML4.
pub const PML4_GPA: u64 = 0x1000;
/// GPA of the payload's PDPT.
pub const PDPT_GPA: u64 = 0x2000;
/// GPA of the first of the payload's four page directories.
pub const PD_GPA: u64 = 0x3000;
/// Bytes of the payload's page tables (PML4, PDPT, 4 PDs).
pub const PAGE_TABLES_SIZE: usize = 0x6000;
/// GPA of the payload's TD HOB.
pub const PAYLOAD_HOB_GPA: u64 = 0x8000;
/// Bytes reserved for the payload's TD HOB.
pub const PAYLOAD_HOB_SIZE: usize = 0x1000;
/// Largest payload file read (bytes).
pub const MAX_PAYLOAD_FILE: u64 = 512 << 20;
/// The GPA of the reset vector, which a firmware's initial image must hold.
pub const RESET_VECTOR: u64 = 0xFFFF_FFF0;

/// Page-table entry bits: present, writable, user.
const PTE_P_RW_US: u64 = 0x7;
/// Page-directory entry bit: 2 MiB page.
const PDE_PS: u64 = 0x80;

/// Why a plan could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The payload or firmware file could not be read.
    #[error("cannot read {what} {path}")]
    Read {
        /// "payload" or "firmware".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than accepted.
    #[error("{what} {path} is {size} bytes, more than the {max} accepted")]
    TooLarge {
        /// "payload" or "firmware".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The file was read but refused; the source says why.
    #[error("{what} {path}")]
    File {
        /// "payload" or "firmware".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<ImageError>,
    },
    /// The TDVF metadata is invalid.
    #[error(transparent)]
    Tdvf(#[from] TdvfError),
    /// The ELF payload is invalid.
    #[error(transparent)]
    Elf(#[from] ElfError),
    /// The TD HOB does not fit.
    #[error(transparent)]
    Hob(#[from] HobError),
    /// The image does not fit the TD's memory layout.
    #[error("{what}: {why}")]
    Layout {
        /// The section or region.
        what: String,
        /// Why, with the values.
        why: String,
    },
}

/// The payload's identity page tables: PML4, PDPT, four PDs mapping `[0, 4 GiB)` with 2 MiB
/// pages, present + RW + U/S (0x6000 bytes for GPA [`PML4_GPA`]).
pub fn identity_page_tables() -> Vec<u8> {
    let mut t = vec![0u8; PAGE_TABLES_SIZE];
    let mut put = |gpa: u64, value: u64| {
        let at = (gpa - PML4_GPA) as usize;
        t[at..at + 8].copy_from_slice(&value.to_le_bytes());
    };
    put(PML4_GPA, PDPT_GPA | PTE_P_RW_US);
    for gib in 0..4u64 {
        let pd = PD_GPA + gib * 0x1000;
        put(PDPT_GPA + 8 * gib, pd | PTE_P_RW_US);
        for entry in 0..512u64 {
            let frame = (gib << 30) | (entry << 21);
            put(pd + 8 * entry, frame | PTE_P_RW_US | PDE_PS);
        }
    }
    t
}

/// The TD configuration for `config` with `entry`.
pub fn vm_config(config: &TdConfig, entry: GuestEntry) -> TdVmConfig {
    let defaults = TdVmConfig::default();
    TdVmConfig {
        attributes: config.td.attributes(),
        xfam: config.td.xfam.unwrap_or(defaults.xfam),
        // vcpus ≤ MAX_VCPUS (255), checked by the config parser.
        max_vcpus: u16::try_from(config.vcpus).unwrap_or(u16::MAX),
        mrconfigid: config.td.mrconfigid,
        mrowner: config.td.mrowner,
        mrownerconfig: config.td.mrownerconfig,
        entry,
        ..defaults
    }
}

fn plan(config: &TdConfig, entry: GuestEntry, rcx: u64, initial: Vec<InitialRegion>) -> LaunchPlan {
    LaunchPlan {
        vm: vm_config(config, entry),
        memory_size: config.memory,
        vcpus: config.vcpus,
        vcpu_rcx: rcx,
        initial,
        devices: DevicesPlan {
            serial: config.serial,
            blk: config.disks.clone(),
            vhost_user_blk: config.vhost_user_blk.clone(),
        },
        report: config.report.clone(),
    }
}

fn accepted(initial: &[InitialRegion]) -> Vec<(u64, u64)> {
    initial
        .iter()
        .map(|r| (r.gpa, r.data.len() as u64))
        .collect()
}

/// The plan of an ELF payload (`data` is the file) under `config`.
pub fn payload_plan(config: &TdConfig, data: &[u8]) -> Result<LaunchPlan, ImageError> {
    let payload = elf::parse(data, config.memory)?;
    let mut initial = vec![
        InitialRegion {
            gpa: PML4_GPA,
            data: identity_page_tables(),
            measure: true,
            name: "page tables".to_string(),
        },
        InitialRegion {
            gpa: PAYLOAD_HOB_GPA,
            data: vec![0; PAYLOAD_HOB_SIZE],
            measure: false,
            name: "TD HOB".to_string(),
        },
    ];
    initial.extend(payload.regions(data)?);
    let resources = hob::ram_resources(config.memory, &accepted(&initial));
    let list = hob::build(PAYLOAD_HOB_GPA, PAYLOAD_HOB_SIZE, &resources)?;
    initial[1].data[..list.len()].copy_from_slice(&list);
    let entry = GuestEntry::Long64 {
        rip: payload.entry,
        cr3: PML4_GPA,
    };
    Ok(plan(config, entry, PAYLOAD_HOB_GPA, initial))
}

/// The plan of a TDVF firmware `image` under `config`.
pub fn firmware_plan(config: &TdConfig, image: &[u8]) -> Result<LaunchPlan, ImageError> {
    let meta = tdvf::parse(image)?;
    firmware_plan_with(config, image, &meta)
}

/// [`firmware_plan`] with metadata already parsed from `image`.
pub fn firmware_plan_with(
    config: &TdConfig,
    image: &[u8],
    meta: &TdvfMetadata,
) -> Result<LaunchPlan, ImageError> {
    let memory = config.memory;
    let mmio_end = VIRTIO_MMIO_BASE + VIRTIO_MMIO_MAX * VIRTIO_MMIO_STRIDE;
    let mut initial = Vec::with_capacity(meta.sections.len());
    let mut hob_index = None;
    // Bytes of sections above RAM (firmware volumes); bounded so that a hostile table of many
    // large sections cannot make the VMM allocate gigabytes.
    let mut above_ram = 0u64;
    for s in &meta.sections {
        let what = format!("TDVF section #{} ({})", s.index, s.section_type);
        let layout = |why: String| ImageError::Layout {
            what: what.clone(),
            why,
        };
        let (start, end) = (s.memory_address, s.memory_end());
        let in_ram = end <= memory;
        match s.section_type {
            SectionType::Bfv | SectionType::Cfv => {
                if !in_ram && start < memory {
                    return Err(layout(format!(
                        "[{start:#x}, {end:#x}) straddles the end of RAM ({memory:#x})"
                    )));
                }
                if start < mmio_end && VIRTIO_MMIO_BASE < end {
                    return Err(layout(format!(
                        "[{start:#x}, {end:#x}) overlaps the virtio-mmio windows \
                         [{VIRTIO_MMIO_BASE:#x}, {mmio_end:#x})"
                    )));
                }
            }
            SectionType::TdHob | SectionType::TempMem | SectionType::PermMem => {
                if !in_ram {
                    return Err(layout(format!(
                        "[{start:#x}, {end:#x}) lies outside RAM [0, {memory:#x}); raise \
                         `memory` in td.toml"
                    )));
                }
            }
            SectionType::Payload | SectionType::PayloadParam | SectionType::TdInfo => {
                return Err(layout(
                    "td-shim payload sections are not supported (use `payload` for an ELF \
                     payload)"
                        .to_string(),
                ));
            }
        }
        if s.page_aug() {
            // Added lazily after finalize; the guest accepts it (see the module docs).
            continue;
        }
        // Allocation bound: sections inside RAM do not overlap (checked by the parser), so
        // they total at most `memory` (≤ 3 GiB); those above RAM (BFV/CFV only) at most
        // MAX_IMAGE_SIZE, checked below before anything is allocated.
        let size = usize::try_from(s.memory_data_size).map_err(|_| {
            layout(format!(
                "MemoryDataSize {:#x} is too large",
                s.memory_data_size
            ))
        })?;
        if !in_ram {
            above_ram += s.memory_data_size;
            if above_ram > tdvf::MAX_IMAGE_SIZE as u64 {
                return Err(layout(format!(
                    "MemoryDataSize {:#x} brings the sections above RAM to {above_ram:#x} bytes, \
                     more than a firmware image may be ({:#x})",
                    s.memory_data_size,
                    tdvf::MAX_IMAGE_SIZE
                )));
            }
        }
        let mut data = vec![0u8; size];
        if let Some(raw) = s.raw_data(image) {
            data[..raw.len()].copy_from_slice(raw);
        }
        if s.section_type == SectionType::TdHob {
            hob_index = Some(initial.len());
        }
        initial.push(InitialRegion {
            gpa: start,
            data,
            measure: s.mr_extend(),
            name: s.section_type.name().to_string(),
        });
    }
    let Some(hob_index) = hob_index else {
        return Err(ImageError::Layout {
            what: "TDVF metadata".to_string(),
            why: "no TD_HOB section: the firmware has nowhere to receive the TD HOB".to_string(),
        });
    };
    if !initial
        .iter()
        .any(|r| r.gpa <= RESET_VECTOR && RESET_VECTOR < r.gpa + r.data.len() as u64)
    {
        return Err(ImageError::Layout {
            what: "TDVF metadata".to_string(),
            why: format!("no added section holds the reset vector {RESET_VECTOR:#x}"),
        });
    }
    let resources = hob::ram_resources(memory, &accepted(&initial));
    let hob_gpa = initial[hob_index].gpa;
    let list = hob::build(hob_gpa, initial[hob_index].data.len(), &resources)?;
    initial[hob_index].data[..list.len()].copy_from_slice(&list);
    Ok(plan(config, GuestEntry::ResetVector, hob_gpa, initial))
}

/// The GPA ranges `(start, length)` of initial regions that lie outside guest RAM
/// `[0, plan.memory_size)`, sorted and merged: a TDVF's firmware volumes just below 4 GiB.
///
/// The VMM must give the TD memory there too (QEMU's "pc.bios" block), next to RAM, before it
/// adds the initial image: the backends add initial pages only inside the TD's memory
/// regions. ELF payload plans have none.
pub fn regions_outside_ram(plan: &LaunchPlan) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = plan
        .initial
        .iter()
        .filter(|r| r.gpa >= plan.memory_size)
        .map(|r| (r.gpa, r.gpa.saturating_add(r.data.len() as u64)))
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged.into_iter().map(|(s, e)| (s, e - s)).collect()
}

fn read_bounded(what: &'static str, path: &Path, max: u64) -> Result<Vec<u8>, ImageError> {
    let read_err = |source| ImageError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.len() > max {
        return Err(ImageError::TooLarge {
            what,
            path: path.to_path_buf(),
            size: meta.len(),
            max,
        });
    }
    std::fs::read(path).map_err(read_err)
}

/// Reads a firmware file (at most [`tdvf::MAX_IMAGE_SIZE`] bytes).
pub fn read_firmware(path: &Path) -> Result<Vec<u8>, ImageError> {
    read_bounded("firmware", path, tdvf::MAX_IMAGE_SIZE as u64)
}

/// Reads the config's payload or firmware and builds its plan. Errors name the file.
pub fn build_plan(config: &TdConfig) -> Result<LaunchPlan, ImageError> {
    let (what, path) = match &config.boot {
        Boot::Payload(p) => ("payload", p),
        Boot::Firmware(p) => ("firmware", p),
    };
    let wrap = |e: ImageError| ImageError::File {
        what,
        path: path.clone(),
        source: Box::new(e),
    };
    match &config.boot {
        Boot::Payload(p) if p.as_os_str() == crate::config::BUILTIN_PAYLOAD => {
            payload_plan(config, tdx_payloads::TD_PAYLOAD_ELF).map_err(wrap)
        }
        Boot::Payload(p) => {
            let data = read_bounded("payload", p, MAX_PAYLOAD_FILE)?;
            payload_plan(config, &data).map_err(wrap)
        }
        Boot::Firmware(p) => {
            let image = read_firmware(p)?;
            firmware_plan(config, &image).map_err(wrap)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::hob::{EFI_RESOURCE_MEMORY_UNACCEPTED, EFI_RESOURCE_SYSTEM_MEMORY};

    fn config(extra: &str) -> TdConfig {
        TdConfig::parse(
            &format!("payload = \"p\"\nmemory = \"256M\"\n{extra}"),
            Path::new("td.toml"),
            Path::new("/"),
        )
        .unwrap()
    }

    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    #[test]
    fn page_tables_identity_map_4g() {
        let t = identity_page_tables();
        assert_eq!(u64_at(&t, 0), 0x2007);
        assert_eq!(u64_at(&t, 8), 0);
        for gib in 0..4 {
            assert_eq!(u64_at(&t, 0x1000 + 8 * gib), 0x3007 + 0x1000 * gib as u64);
        }
        assert_eq!(u64_at(&t, 0x1000 + 32), 0);
        assert_eq!(u64_at(&t, 0x2000), 0x87);
        assert_eq!(u64_at(&t, 0x2008), 0x20_0087);
        // Last PD entry maps 4 GiB − 2 MiB.
        assert_eq!(u64_at(&t, 0x5FF8), 0xFFE0_0087);
    }

    #[test]
    fn payload_plan_layout() {
        let f = crate::elf::tests::good();
        let mut c = config("vcpus = 2\n[td]\ndebug = true\n");
        c.boot = Boot::Payload("p".into());
        let p = payload_plan(&c, &f).unwrap();
        assert_eq!(p.vcpu_rcx, 0x8000);
        assert!(regions_outside_ram(&p).is_empty());
        assert_eq!(
            p.vm.entry,
            GuestEntry::Long64 {
                rip: 0x10_0010,
                cr3: 0x1000
            }
        );
        assert_eq!(p.vm.attributes, 1 | 1 << 28);
        assert_eq!(p.vm.max_vcpus, 2);
        assert_eq!(p.vcpus, 2);
        assert_eq!(p.memory_size, 256 << 20);
        let names: Vec<&str> = p.initial.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["page tables", "TD HOB", "PT_LOAD #0+#1", "PT_LOAD #3"]
        );
        assert!(p.initial[0].measure && !p.initial[1].measure && p.initial[2].measure);
        // The HOB: PHIT, then RAM split around the image.
        let hob = &p.initial[1].data;
        assert_eq!(u16::from_le_bytes([hob[0], hob[1]]), 1);
        let res: Vec<(u32, u64, u64)> = (0..7)
            .map(|i| {
                let o = 56 + 48 * i;
                (
                    u32::from_le_bytes(hob[o + 24..o + 28].try_into().unwrap()),
                    u64_at(hob, o + 32),
                    u64_at(hob, o + 40),
                )
            })
            .collect();
        let (acc, unacc) = (EFI_RESOURCE_SYSTEM_MEMORY, EFI_RESOURCE_MEMORY_UNACCEPTED);
        assert_eq!(
            res,
            vec![
                (unacc, 0, 0x1000),
                (acc, 0x1000, 0x6000),
                (unacc, 0x7000, 0x1000),
                (acc, 0x8000, 0x1000),
                (unacc, 0x9000, 0x10_0000 - 0x9000),
                (acc, 0x10_0000, 0x3000),
                (unacc, 0x10_3000, 0x20_0000 - 0x10_3000),
            ]
        );
    }

    #[test]
    fn firmware_plan_layout() {
        let img = crate::tdvf::tests::good();
        let p = firmware_plan(&config(""), &img).unwrap();
        assert_eq!(p.vm.entry, GuestEntry::ResetVector);
        assert_eq!(p.vcpu_rcx, 0x80_9000);
        let names: Vec<&str> = p.initial.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["BFV", "CFV", "TD_HOB", "TempMem"]);
        assert_eq!(p.initial[0].data, img[0x8000..0x10000]);
        assert!(p.initial[0].measure && !p.initial[1].measure);
        assert_eq!(p.initial[1].data[..0x2000], img[..0x2000]);
        let hob = &p.initial[2].data;
        assert_eq!(hob.len(), 0x2000);
        // RAM: unaccepted below 8 MiB, TempMem and the HOB accepted, the gaps unaccepted;
        // the firmware volumes above RAM get no descriptor.
        let spans: Vec<(u64, u64)> = (0..5)
            .map(|i| (u64_at(hob, 56 + 48 * i + 32), u64_at(hob, 56 + 48 * i + 40)))
            .collect();
        assert_eq!(
            spans,
            vec![
                (0, 0x80_0000),
                (0x80_0000, 0x6000),
                (0x80_6000, 0x3000),
                (0x80_9000, 0x2000),
                (0x80_B000, (256 << 20) - 0x80_B000),
            ]
        );
        assert_eq!(u16::from_le_bytes([hob[56 + 240], hob[56 + 241]]), 0xFFFF);
        // CFV [0xFFFF_0000, +0x2000) and BFV [0xFFFF_8000, +0x8000) lie above RAM.
        assert_eq!(
            regions_outside_ram(&p),
            vec![(0xFFFF_0000, 0x2000), (0xFFFF_8000, 0x8000)]
        );
    }

    #[test]
    fn firmware_layout_errors() {
        use crate::tdvf::tests::image;
        let c = config("");
        let bfv = (0x8000, 0x8000, 0xFFFF_8000, 0x8000, 0, 1);
        // TempMem above RAM.
        let img = image(0x10000, &[bfv, (0, 0, 0x2000_0000, 0x1000, 2, 0)]);
        let e = firmware_plan(&c, &img).unwrap_err().to_string();
        assert!(
            e.contains("#1 (TD_HOB)") && e.contains("outside RAM"),
            "{e}"
        );
        // No TD_HOB.
        let img = image(0x10000, &[bfv]);
        let e = firmware_plan(&c, &img).unwrap_err().to_string();
        assert!(e.contains("no TD_HOB"), "{e}");
        // No reset vector.
        let img = image(
            0x10000,
            &[
                (0x8000, 0x8000, 0xFF00_0000, 0x8000, 0, 1),
                (0, 0, 0x1000, 0x1000, 2, 0),
            ],
        );
        let e = firmware_plan(&c, &img).unwrap_err().to_string();
        assert!(e.contains("reset vector"), "{e}");
        // BFV straddling the end of RAM.
        let img = image(
            0x10000,
            &[
                (0x8000, 0x8000, 0x0FFF_C000, 0x8000, 0, 1),
                (0, 0, 0x1000, 0x1000, 2, 0),
            ],
        );
        let e = firmware_plan(&c, &img).unwrap_err().to_string();
        assert!(e.contains("straddles"), "{e}");
        // Payload section.
        let img = image(0x10000, &[bfv, (0, 0, 0x1000, 0x1000, 6, 0)]);
        let e = firmware_plan(&c, &img).unwrap_err().to_string();
        assert!(e.contains("td-shim"), "{e}");
    }

    #[test]
    fn sections_above_ram_are_bounded() {
        use crate::tdvf::tests::image;
        // Two 48 MiB CFVs above RAM: 96 MiB, more than a firmware image may be.
        let img = image(
            0x10000,
            &[
                (0x8000, 0x8000, 0xFFFF_8000, 0x8000, 0, 1),
                (0, 0x1000, 0x8000_0000, 0x300_0000, 1, 0),
                (0, 0x1000, 0x9000_0000, 0x300_0000, 1, 0),
                (0, 0, 0x1000, 0x1000, 2, 0),
            ],
        );
        let e = firmware_plan(&config(""), &img).unwrap_err().to_string();
        assert!(e.contains("#2 (CFV)") && e.contains("0x6008000"), "{e}");
    }

    #[test]
    fn page_aug_sections_are_left_out() {
        use crate::tdvf::tests::image;
        let img = image(
            0x10000,
            &[
                (0x8000, 0x8000, 0xFFFF_8000, 0x8000, 0, 1),
                (0, 0, 0x1000, 0x1000, 2, 0),
                (0, 0, 0x10_0000, 0x10_0000, 4, 2),
            ],
        );
        let p = firmware_plan(&config(""), &img).unwrap();
        let names: Vec<&str> = p.initial.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["BFV", "TD_HOB"]);
    }
}
