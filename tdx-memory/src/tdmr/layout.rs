//! The bytes Linux places in physical memory for `TDH.SYS.CONFIG`: the TDMR_INFO array and
//! the array of TDMR_INFO physical addresses.
//!
//! Linux (`alloc_tdmr_list`, `config_tdx_module`): each TDMR_INFO occupies
//! `round_up(64 + 16 * MAX_RESERVED_PER_TDMR, 512)` bytes in one physically contiguous array;
//! the address array holds one 8-byte PA per TDMR and its size is the byte count rounded up to
//! a power of two, at least 512 (it is also 512-byte aligned). `TDH.SYS.CONFIG` gets RCX = PA of
//! the address array, RDX = number of TDMRs, R8 = global KeyID.

use tdx_abi::tdmr::{TdmrInfo, TDMR_INFO_ALIGNMENT, TDMR_INFO_PA_ARRAY_ALIGNMENT};

use super::TdmrPlan;

/// Size in bytes of the fixed TDMR_INFO header (base, size, three PAMT base/size pairs).
const TDMR_INFO_HEADER: usize = 64;
/// Size of one reserved-area entry.
const RESERVED_AREA_SIZE: usize = 16;

/// Why the physical layout could not be produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The TDMR_INFO array address is not 512-byte aligned.
    #[error("TDMR_INFO array PA {0:#x} is not 512-byte aligned")]
    TdmrInfoArrayMisaligned(u64),
    /// The PA array address is not 512-byte aligned.
    #[error("TDMR_INFO PA array PA {0:#x} is not 512-byte aligned")]
    PaArrayMisaligned(u64),
    /// An address computation overflows.
    #[error("physical layout does not fit below 2^64")]
    AddressOverflow,
    /// The two arrays overlap.
    #[error("the TDMR_INFO array and the PA array overlap")]
    ArraysOverlap,
}

/// The physical-memory image of a plan for `TDH.SYS.CONFIG`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdmrPhysicalLayout {
    /// Where the TDMR_INFO array goes.
    pub tdmr_info_array_pa: u64,
    /// Bytes per TDMR_INFO entry: `round_up(64 + 16 * MAX_RESERVED_PER_TDMR, 512)`.
    pub tdmr_info_stride: u64,
    /// The TDMR_INFO array, one entry per TDMR, each `tdmr_info_stride` bytes (little endian,
    /// unused reserved slots and padding zero).
    pub tdmr_info_array: Vec<u8>,
    /// PA of each TDMR_INFO (`tdmr_info_array_pa + i * tdmr_info_stride`).
    pub tdmr_info_pas: Vec<u64>,
    /// Where the PA array goes (RCX of `TDH.SYS.CONFIG`).
    pub pa_array_pa: u64,
    /// The PA array: the entries of `tdmr_info_pas`, zero-padded to a power of two ≥ 512 bytes.
    pub pa_array: Vec<u8>,
    /// Number of TDMRs (RDX of `TDH.SYS.CONFIG`).
    pub num_tdmrs: u64,
}

/// Encodes the first `64 + 16 * reserved_slots` bytes of a TDMR_INFO (field order and offsets
/// of `tdmr_info_entry_t`, asserted in `tdx_abi::tdmr`).
fn encode_tdmr_info(t: &TdmrInfo, reserved_slots: usize, out: &mut [u8]) {
    let header = [
        t.tdmr_base,
        t.tdmr_size,
        t.pamt_1g_base,
        t.pamt_1g_size,
        t.pamt_2m_base,
        t.pamt_2m_size,
        t.pamt_4k_base,
        t.pamt_4k_size,
    ];
    let words = header.into_iter().chain(
        t.reserved_areas
            .iter()
            .take(reserved_slots)
            .flat_map(|a| [a.offset, a.size]),
    );
    for (chunk, w) in out.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
}

impl TdmrPlan {
    /// Lays the plan out as Linux does for `TDH.SYS.CONFIG`: the TDMR_INFO array at
    /// `tdmr_info_array_pa` and the PA array at `pa_array_pa` (both must be 512-byte aligned
    /// and must not overlap).
    pub fn to_physical_layout(
        &self,
        tdmr_info_array_pa: u64,
        pa_array_pa: u64,
    ) -> Result<TdmrPhysicalLayout, LayoutError> {
        if tdmr_info_array_pa % TDMR_INFO_ALIGNMENT != 0 {
            return Err(LayoutError::TdmrInfoArrayMisaligned(tdmr_info_array_pa));
        }
        if pa_array_pa % TDMR_INFO_PA_ARRAY_ALIGNMENT != 0 {
            return Err(LayoutError::PaArrayMisaligned(pa_array_pa));
        }
        let slots = self.constraints.reserved_slots();
        let used = TDMR_INFO_HEADER + RESERVED_AREA_SIZE * slots;
        let stride = used.next_multiple_of(TDMR_INFO_ALIGNMENT as usize);
        let n = self.tdmrs.len();
        let array_len = stride.checked_mul(n).ok_or(LayoutError::AddressOverflow)?;
        let pa_len = n
            .checked_mul(8)
            .and_then(usize::checked_next_power_of_two)
            .ok_or(LayoutError::AddressOverflow)?
            .max(TDMR_INFO_PA_ARRAY_ALIGNMENT as usize);
        let array_end = tdmr_info_array_pa
            .checked_add(array_len as u64)
            .ok_or(LayoutError::AddressOverflow)?;
        let pa_end = pa_array_pa
            .checked_add(pa_len as u64)
            .ok_or(LayoutError::AddressOverflow)?;
        if tdmr_info_array_pa < pa_end && pa_array_pa < array_end {
            return Err(LayoutError::ArraysOverlap);
        }

        let mut tdmr_info_array = vec![0u8; array_len];
        let mut pa_array = vec![0u8; pa_len];
        let mut tdmr_info_pas = Vec::with_capacity(n);
        for (i, ((t, entry), pa_slot)) in self
            .tdmrs
            .iter()
            .zip(tdmr_info_array.chunks_exact_mut(stride))
            .zip(pa_array.chunks_exact_mut(8))
            .enumerate()
        {
            encode_tdmr_info(t, slots, &mut entry[..used]);
            // i * stride < array_len, so this cannot overflow past array_end.
            let pa = tdmr_info_array_pa + (i * stride) as u64;
            pa_slot.copy_from_slice(&pa.to_le_bytes());
            tdmr_info_pas.push(pa);
        }
        Ok(TdmrPhysicalLayout {
            tdmr_info_array_pa,
            tdmr_info_stride: stride as u64,
            tdmr_info_array,
            tdmr_info_pas,
            pa_array_pa,
            pa_array,
            num_tdmrs: n as u64,
        })
    }
}
