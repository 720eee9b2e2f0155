//! The TD HOB: the UEFI PI hand-off block list a TD finds at the GPA in RCX, describing its
//! memory.
//!
//! Built as QEMU and Cloud Hypervisor build it for TDVF (fact sheet `kvm-tdx-host.md` §3.5):
//!
//! 1. a PHIT (hand-off info table, type 0x0001, 56 bytes, version 9, boot mode 0, the four
//!    memory fields 0, `EfiEndOfHobList` = the GPA just past the end-of-list HOB, as QEMU
//!    sets it);
//! 2. one resource descriptor (type 0x0003, 48 bytes, owner GUID zero, attributes
//!    PRESENT | INITIALIZED | TESTED = 0x7) per run of guest RAM: the ranges the VMM added
//!    before finalize (the initial image inside RAM) as `EFI_RESOURCE_SYSTEM_MEMORY` (0), the
//!    rest as `EFI_RESOURCE_MEMORY_UNACCEPTED` (7), which the guest accepts itself;
//! 3. an end-of-list HOB (type 0xFFFF, 8 bytes).
//!
//! Initial-image ranges outside RAM (the firmware volumes at the top of 4 GiB) are not RAM and
//! get no descriptor, as in QEMU. All HOBs are 8-byte aligned (their sizes are multiples of 8).

/// HOB type: PHIT.
pub const HOB_TYPE_HANDOFF: u16 = 0x0001;
/// HOB type: resource descriptor.
pub const HOB_TYPE_RESOURCE_DESCRIPTOR: u16 = 0x0003;
/// HOB type: end of the list.
pub const HOB_TYPE_END_OF_HOB_LIST: u16 = 0xFFFF;
/// PHIT version.
pub const PHIT_VERSION: u32 = 9;
/// Size of the PHIT HOB.
pub const PHIT_SIZE: usize = 56;
/// Size of a resource descriptor HOB.
pub const RESOURCE_DESCRIPTOR_SIZE: usize = 48;
/// Size of the end-of-list HOB.
pub const END_OF_HOB_LIST_SIZE: usize = 8;

/// Resource type: usable (accepted, present) system memory.
pub const EFI_RESOURCE_SYSTEM_MEMORY: u32 = 0;
/// Resource type: memory-mapped I/O.
pub const EFI_RESOURCE_MEMORY_MAPPED_IO: u32 = 1;
/// Resource type: private memory the guest must accept (TDG.MEM.PAGE.ACCEPT) before use.
pub const EFI_RESOURCE_MEMORY_UNACCEPTED: u32 = 7;
/// Resource attribute: present.
pub const EFI_RESOURCE_ATTRIBUTE_PRESENT: u32 = 0x1;
/// Resource attribute: initialized.
pub const EFI_RESOURCE_ATTRIBUTE_INITIALIZED: u32 = 0x2;
/// Resource attribute: tested.
pub const EFI_RESOURCE_ATTRIBUTE_TESTED: u32 = 0x4;
/// The attributes QEMU and Cloud Hypervisor give RAM descriptors.
pub const RAM_ATTRIBUTES: u32 = EFI_RESOURCE_ATTRIBUTE_PRESENT
    | EFI_RESOURCE_ATTRIBUTE_INITIALIZED
    | EFI_RESOURCE_ATTRIBUTE_TESTED;

/// One resource descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resource {
    /// EFI resource type.
    pub resource_type: u32,
    /// EFI resource attributes.
    pub attributes: u32,
    /// First GPA.
    pub start: u64,
    /// Length in bytes.
    pub length: u64,
}

/// Why a TD HOB could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HobError {
    /// The HOB does not fit the space reserved for it.
    #[error("the TD HOB needs {needed} bytes but its region at {gpa:#x} has {capacity}")]
    TooLarge {
        /// Bytes the HOB list needs.
        needed: usize,
        /// Bytes available.
        capacity: usize,
        /// The region's GPA.
        gpa: u64,
    },
}

/// The resource descriptors of RAM `[0, memory_size)` given the ranges `(start, length)`
/// added before finalize: accepted ranges (clipped to RAM, sorted, merged) as system memory,
/// the gaps as unaccepted memory. Ranges outside RAM are ignored.
pub fn ram_resources(memory_size: u64, accepted: &[(u64, u64)]) -> Vec<Resource> {
    let mut ranges: Vec<(u64, u64)> = accepted
        .iter()
        .filter_map(|&(start, len)| {
            let end = start.saturating_add(len).min(memory_size);
            (start < end).then_some((start, end))
        })
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    let resource = |resource_type, start: u64, end: u64| Resource {
        resource_type,
        attributes: RAM_ATTRIBUTES,
        start,
        length: end - start,
    };
    let mut out = Vec::with_capacity(2 * merged.len() + 1);
    let mut cursor = 0u64;
    for (start, end) in merged {
        if cursor < start {
            out.push(resource(EFI_RESOURCE_MEMORY_UNACCEPTED, cursor, start));
        }
        out.push(resource(EFI_RESOURCE_SYSTEM_MEMORY, start, end));
        cursor = end;
    }
    if cursor < memory_size {
        out.push(resource(
            EFI_RESOURCE_MEMORY_UNACCEPTED,
            cursor,
            memory_size,
        ));
    }
    out
}

fn put_header(buf: &mut Vec<u8>, hob_type: u16, length: usize) {
    buf.extend_from_slice(&hob_type.to_le_bytes());
    // Every HOB here is at most 56 bytes.
    buf.extend_from_slice(&(length as u16).to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
}

/// Serializes a HOB list for the region at `gpa` of `capacity` bytes: PHIT, `resources`,
/// end of list. The result is exactly the list (not padded to `capacity`).
pub fn build(gpa: u64, capacity: usize, resources: &[Resource]) -> Result<Vec<u8>, HobError> {
    let needed = resources
        .len()
        .saturating_mul(RESOURCE_DESCRIPTOR_SIZE)
        .saturating_add(PHIT_SIZE + END_OF_HOB_LIST_SIZE);
    if needed > capacity {
        return Err(HobError::TooLarge {
            needed,
            capacity,
            gpa,
        });
    }
    let mut buf = Vec::with_capacity(needed);
    put_header(&mut buf, HOB_TYPE_HANDOFF, PHIT_SIZE);
    buf.extend_from_slice(&PHIT_VERSION.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes()); // BootMode: BOOT_WITH_FULL_CONFIGURATION
    for _ in 0..4 {
        // EfiMemoryTop, EfiMemoryBottom, EfiFreeMemoryTop, EfiFreeMemoryBottom.
        buf.extend_from_slice(&0u64.to_le_bytes());
    }
    // EfiEndOfHobList: needed ≤ capacity, and the region lies in the guest's GPA space.
    buf.extend_from_slice(&gpa.wrapping_add(needed as u64).to_le_bytes());
    for r in resources {
        put_header(
            &mut buf,
            HOB_TYPE_RESOURCE_DESCRIPTOR,
            RESOURCE_DESCRIPTOR_SIZE,
        );
        buf.extend_from_slice(&[0u8; 16]); // Owner GUID
        buf.extend_from_slice(&r.resource_type.to_le_bytes());
        buf.extend_from_slice(&r.attributes.to_le_bytes());
        buf.extend_from_slice(&r.start.to_le_bytes());
        buf.extend_from_slice(&r.length.to_le_bytes());
    }
    put_header(&mut buf, HOB_TYPE_END_OF_HOB_LIST, END_OF_HOB_LIST_SIZE);
    debug_assert_eq!(buf.len(), needed);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], o: usize) -> u16 {
        u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    #[test]
    fn resources_split_ram_into_accepted_and_unaccepted() {
        let r = ram_resources(
            0x100_0000,
            &[
                (0x8000, 0x1000),
                (0x1000, 0x6000),
                (0x10_0000, 0x2000),
                (0x10_1000, 0x2000),      // overlaps the previous: merged
                (0xFFE0_0000, 0x20_0000), // firmware above RAM: ignored
                (0xFF_F000, 0x2000),      // straddles the end of RAM: clipped
            ],
        );
        let spans: Vec<(u32, u64, u64)> = r
            .iter()
            .map(|r| (r.resource_type, r.start, r.length))
            .collect();
        assert_eq!(
            spans,
            vec![
                (7, 0, 0x1000),
                (0, 0x1000, 0x6000),
                (7, 0x7000, 0x1000),
                (0, 0x8000, 0x1000),
                (7, 0x9000, 0xF_7000),
                (0, 0x10_0000, 0x3000),
                (7, 0x10_3000, 0xEF_C000),
                (0, 0xFF_F000, 0x1000),
            ]
        );
        assert!(r.iter().all(|r| r.attributes == 0x7));
        // Nothing accepted: all of RAM is unaccepted.
        assert_eq!(
            ram_resources(0x4000, &[]),
            vec![Resource {
                resource_type: 7,
                attributes: 7,
                start: 0,
                length: 0x4000
            }]
        );
    }

    #[test]
    fn layout_of_the_hob_list() {
        let res = ram_resources(0x20_0000, &[(0x8000, 0x1000)]);
        assert_eq!(res.len(), 3);
        let b = build(0x8000, 4096, &res).unwrap();
        assert_eq!(b.len(), 56 + 3 * 48 + 8);
        // PHIT.
        assert_eq!(u16_at(&b, 0), 0x0001);
        assert_eq!(u16_at(&b, 2), 56);
        assert_eq!(u32_at(&b, 4), 0);
        assert_eq!(u32_at(&b, 8), 9);
        assert_eq!(u32_at(&b, 12), 0);
        for f in 0..4 {
            assert_eq!(u64_at(&b, 16 + 8 * f), 0);
        }
        assert_eq!(u64_at(&b, 48), 0x8000 + b.len() as u64);
        // Resource descriptors.
        for (i, r) in res.iter().enumerate() {
            let o = 56 + 48 * i;
            assert_eq!(u16_at(&b, o), 0x0003);
            assert_eq!(u16_at(&b, o + 2), 48);
            assert_eq!(&b[o + 8..o + 24], &[0u8; 16]);
            assert_eq!(u32_at(&b, o + 24), r.resource_type);
            assert_eq!(u32_at(&b, o + 28), 0x7);
            assert_eq!(u64_at(&b, o + 32), r.start);
            assert_eq!(u64_at(&b, o + 40), r.length);
        }
        assert_eq!(u32_at(&b, 56 + 24), 7);
        assert_eq!(u32_at(&b, 56 + 48 + 24), 0);
        assert_eq!(u64_at(&b, 56 + 48 + 32), 0x8000);
        // End of list.
        let o = 56 + 3 * 48;
        assert_eq!(u16_at(&b, o), 0xFFFF);
        assert_eq!(u16_at(&b, o + 2), 8);
        assert_eq!(u32_at(&b, o + 4), 0);
    }

    #[test]
    fn too_small_a_region_is_refused() {
        let res = ram_resources(0x20_0000, &[(0x8000, 0x1000)]);
        let e = build(0x8000, 100, &res).unwrap_err();
        assert_eq!(
            e,
            HobError::TooLarge {
                needed: 208,
                capacity: 100,
                gpa: 0x8000
            }
        );
    }
}
