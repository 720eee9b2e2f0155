//! The MRTD a [`LaunchPlan`] produces, computed offline.
//!
//! The backends add [`LaunchPlan::initial`] in list order, each region's pages in ascending
//! GPA order, each page with TDH.MEM.PAGE.ADD and then — for measured regions — the 16
//! TDH.MR.EXTEND of its contents (KVM's `KVM_TDX_INIT_MEM_REGION` order). The same sequence
//! through [`MrtdBuilder`] gives, byte for byte, the MRTD TDH.MR.FINALIZE seals.
use tdx_abi::gpa::Gpa;
use tdx_abi::measure::{MeasureError, Measurement, MrtdBuilder};

use crate::plan::LaunchPlan;

const PAGE: usize = 4096;

/// Why a plan cannot be measured (a malformed plan: loaders never build one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanMeasureError {
    /// A region's size is not a multiple of 4 KiB.
    #[error("initial region \"{name}\" at {gpa:#x} is {len} bytes, not a multiple of 4 KiB")]
    UnalignedSize {
        /// Region name.
        name: String,
        /// Its GPA.
        gpa: u64,
        /// Its size.
        len: usize,
    },
    /// A region's GPA is refused by the measurement (not 4 KiB aligned, or it overflows).
    #[error("initial region \"{name}\" at {gpa:#x}: {why}")]
    BadGpa {
        /// Region name.
        name: String,
        /// Its GPA.
        gpa: u64,
        /// Why.
        why: String,
    },
}

/// Summary of what the measurement covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MrtdSummary {
    /// The MRTD.
    pub mrtd: Measurement,
    /// Pages added (TDH.MEM.PAGE.ADD).
    pub pages_added: u64,
    /// Pages whose contents were extended (16 × TDH.MR.EXTEND each).
    pub pages_measured: u64,
}

/// The MRTD of `plan` and how many pages it covers.
pub fn mrtd(plan: &LaunchPlan) -> Result<MrtdSummary, PlanMeasureError> {
    let mut builder = MrtdBuilder::new();
    let mut pages_added = 0u64;
    let mut pages_measured = 0u64;
    for region in &plan.initial {
        if region.data.len() % PAGE != 0 {
            return Err(PlanMeasureError::UnalignedSize {
                name: region.name.clone(),
                gpa: region.gpa,
                len: region.data.len(),
            });
        }
        let bad = |why: String| PlanMeasureError::BadGpa {
            name: region.name.clone(),
            gpa: region.gpa,
            why,
        };
        for (i, page) in region.data.chunks_exact(PAGE).enumerate() {
            let gpa = (i as u64)
                .checked_mul(PAGE as u64)
                .and_then(|off| region.gpa.checked_add(off))
                .ok_or_else(|| bad("the region runs past the end of the GPA space".into()))?;
            let page: &[u8; PAGE] = page
                .try_into()
                .map_err(|_| bad("page slice is not 4 KiB".into()))?;
            builder
                .add_page(Gpa(gpa), page, region.measure)
                .map_err(|e: MeasureError| bad(e.to_string()))?;
            pages_added += 1;
            if region.measure {
                pages_measured += 1;
            }
        }
    }
    Ok(MrtdSummary {
        mrtd: builder.finalize(),
        pages_added,
        pages_measured,
    })
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha384};

    use super::*;
    use crate::plan::InitialRegion;

    fn block(tag: &[u8], gpa: u64) -> [u8; 128] {
        let mut b = [0u8; 128];
        b[..tag.len()].copy_from_slice(tag);
        b[16..24].copy_from_slice(&gpa.to_le_bytes());
        b
    }

    fn region(gpa: u64, pages: usize, measure: bool, seed: u8) -> InitialRegion {
        InitialRegion {
            gpa,
            data: (0..pages * PAGE)
                .map(|i| (i as u8).wrapping_mul(seed))
                .collect(),
            measure,
            name: format!("r{seed}"),
        }
    }

    fn plan_of(initial: Vec<InitialRegion>) -> LaunchPlan {
        LaunchPlan {
            vm: Default::default(),
            memory_size: 1 << 24,
            vcpus: 1,
            vcpu_rcx: 0,
            initial,
            devices: Default::default(),
            report: Default::default(),
        }
    }

    #[test]
    fn matches_a_direct_sha384_of_the_blocks() {
        let initial = vec![region(0x1000, 2, true, 3), region(0x8000, 1, false, 5)];
        let mut h = Sha384::new();
        for r in &initial {
            for (i, page) in r.data.chunks(PAGE).enumerate() {
                let gpa = r.gpa + (i * PAGE) as u64;
                h.update(block(b"MEM.PAGE.ADD", gpa));
                if r.measure {
                    for (c, chunk) in page.chunks(256).enumerate() {
                        h.update(block(b"MR.EXTEND", gpa + 256 * c as u64));
                        h.update(chunk);
                    }
                }
            }
        }
        let expected: [u8; 48] = h.finalize().into();
        let s = mrtd(&plan_of(initial)).unwrap();
        assert_eq!(s.mrtd.0, expected);
        assert_eq!(s.pages_added, 3);
        assert_eq!(s.pages_measured, 2);
    }

    #[test]
    fn order_and_content_matter() {
        let a = region(0x1000, 1, true, 3);
        let b = region(0x2000, 1, true, 7);
        let ab = mrtd(&plan_of(vec![a.clone(), b.clone()])).unwrap().mrtd;
        let ba = mrtd(&plan_of(vec![b.clone(), a.clone()])).unwrap().mrtd;
        assert_ne!(ab, ba);
        let mut unmeasured = a.clone();
        unmeasured.measure = false;
        let mut changed = unmeasured.clone();
        changed.data[0] ^= 1;
        // Unmeasured content does not matter; measured content does.
        assert_eq!(
            mrtd(&plan_of(vec![unmeasured])).unwrap().mrtd,
            mrtd(&plan_of(vec![changed])).unwrap().mrtd
        );
        let mut measured_changed = a.clone();
        measured_changed.data[0] ^= 1;
        assert_ne!(
            mrtd(&plan_of(vec![a])).unwrap().mrtd,
            mrtd(&plan_of(vec![measured_changed])).unwrap().mrtd
        );
    }

    #[test]
    fn malformed_plans_are_refused() {
        let mut r = region(0x1000, 1, true, 3);
        r.data.push(0);
        assert!(matches!(
            mrtd(&plan_of(vec![r])),
            Err(PlanMeasureError::UnalignedSize { .. })
        ));
        let r = region(0x1800, 1, true, 3);
        assert!(matches!(
            mrtd(&plan_of(vec![r])),
            Err(PlanMeasureError::BadGpa { .. })
        ));
    }
}
