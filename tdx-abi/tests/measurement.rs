//! Known-answer tests for MRTD, RTMR and the report hashes.
//!
//! Every expected digest below was computed independently with Python's `hashlib` while the
//! test was written (the script is reproduced next to each value), and every expected block is
//! built here byte by byte from the ABI fact sheet (§6.1), not with the code under test.

use tdx_abi::gpa::Gpa;
use tdx_abi::measure::{
    mem_page_add_block, mr_extend_header_block, rtmr_extend, servtd_hash, sha384, tee_info_hash,
    tee_tcb_info_hash, MeasureError, Measurement, MrtdBuilder, ParseMeasurementError, ServtdRecord,
    RTMR_INITIAL,
};

fn hex(s: &str) -> Measurement {
    Measurement::from_hex(s).expect("test literal is valid hex")
}

/// The fixed page of the scenario: byte i = i % 251.
fn pattern_page() -> [u8; 4096] {
    let mut page = [0u8; 4096];
    for (i, b) in page.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    page
}

#[test]
fn mem_page_add_block_bytes() {
    let mut expected = [0u8; 128];
    for (i, c) in [
        b'M', b'E', b'M', b'.', b'P', b'A', b'G', b'E', b'.', b'A', b'D', b'D',
    ]
    .into_iter()
    .enumerate()
    {
        expected[i] = c;
    }
    // GPA 0x0000_0012_3456_7000, little-endian at 16..24.
    expected[16] = 0x00;
    expected[17] = 0x70;
    expected[18] = 0x56;
    expected[19] = 0x34;
    expected[20] = 0x12;
    assert_eq!(mem_page_add_block(Gpa(0x12_3456_7000)), expected);
}

#[test]
fn mr_extend_header_block_bytes() {
    let mut expected = [0u8; 128];
    for (i, c) in [b'M', b'R', b'.', b'E', b'X', b'T', b'E', b'N', b'D']
        .into_iter()
        .enumerate()
    {
        expected[i] = c;
    }
    // GPA 0xFFFF_F100, little-endian at 16..24.
    expected[16] = 0x00;
    expected[17] = 0xF1;
    expected[18] = 0xFF;
    expected[19] = 0xFF;
    assert_eq!(mr_extend_header_block(Gpa(0xFFFF_F100)), expected);
    // Bytes 9..16 stay zero, bytes 24.. stay zero even with a full 64-bit GPA.
    let b = mr_extend_header_block(Gpa(u64::MAX));
    assert_eq!(&b[9..16], &[0u8; 7]);
    assert_eq!(&b[16..24], &[0xFFu8; 8]);
    assert!(b[24..].iter().all(|&x| x == 0));
}

#[test]
fn empty_mrtd_is_sha384_of_nothing() {
    let b = MrtdBuilder::new();
    assert_eq!(b.blocks_hashed(), 0);
    // python3 -c 'import hashlib; print(hashlib.sha384(b"").hexdigest())'
    let expected = hex(
        "38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da\
         274edebfe76f65fbd51ad2f14898b95b",
    );
    assert_eq!(b.finalize(), expected);
    assert_eq!(sha384(&[]), expected);
}

// python3:
//   import hashlib, struct
//   def blk(tag, gpa):
//       b = bytearray(128); b[0:len(tag)] = tag; b[16:24] = struct.pack('<Q', gpa); return bytes(b)
//   page = bytes(i % 251 for i in range(4096))
//   ext = lambda g, p: b''.join(blk(b'MR.EXTEND', g + k*256) + p[k*256:(k+1)*256] for k in range(16))
//   single = blk(b'MEM.PAGE.ADD', 0xFFFFF000) + ext(0xFFFFF000, page) + blk(b'MEM.PAGE.ADD', 0x1000)
//   two    = blk(b'MEM.PAGE.ADD', 0xFFFFF000) + blk(b'MEM.PAGE.ADD', 0x1000) + ext(0xFFFFF000, page)
//   print(hashlib.sha384(single).hexdigest(), hashlib.sha384(two).hexdigest())
const SINGLE_PASS_MRTD: &str = "f408dfd1437bf329ab7e989a288933f2b61429b4a4b29f2ac0211b78b015348f\
                                99549e04d646c9410babce0fbfc6ecab";
const TWO_PASS_MRTD: &str = "e87a63eb2c360281a6fab51138695d093ff8fbc467076ddfc8f04b6332dc3e12\
                             14888818357cdce967dc401ae2efb08b";

#[test]
fn mrtd_known_answer_single_pass() {
    let page = pattern_page();
    let mut b = MrtdBuilder::new();
    b.add_page(Gpa(0xFFFF_F000), &page, true).unwrap();
    // The contents of an unmeasured page do not matter.
    b.add_page(Gpa(0x1000), &[0xA5; 4096], false).unwrap();
    assert_eq!(b.blocks_hashed(), 1 + 16 * 3 + 1);
    assert_eq!(b.finalize(), hex(SINGLE_PASS_MRTD));
}

#[test]
fn mrtd_known_answer_two_pass_and_orders_differ() {
    let page = pattern_page();
    let mut b = MrtdBuilder::new();
    b.mem_page_add(Gpa(0xFFFF_F000)).unwrap();
    b.mem_page_add(Gpa(0x1000)).unwrap();
    b.extend_page(Gpa(0xFFFF_F000), &page).unwrap();
    assert_eq!(b.blocks_hashed(), 50);
    let two = b.finalize();
    assert_eq!(two, hex(TWO_PASS_MRTD));
    assert_ne!(two, hex(SINGLE_PASS_MRTD));
}

#[test]
fn mrtd_equals_sha384_of_the_block_stream() {
    // The same single-pass scenario, hashed as one message built here by hand.
    let page = pattern_page();
    let mut stream = Vec::new();
    let header = |tag: &[u8], gpa: u64| {
        let mut blk = [0u8; 128];
        blk[..tag.len()].copy_from_slice(tag);
        blk[16..24].copy_from_slice(&gpa.to_le_bytes());
        blk
    };
    stream.extend_from_slice(&header(b"MEM.PAGE.ADD", 0xFFFF_F000));
    for k in 0..16u64 {
        stream.extend_from_slice(&header(b"MR.EXTEND", 0xFFFF_F000 + k * 256));
        stream.extend_from_slice(&page[k as usize * 256..(k as usize + 1) * 256]);
    }
    stream.extend_from_slice(&header(b"MEM.PAGE.ADD", 0x1000));
    assert_eq!(sha384(&stream), hex(SINGLE_PASS_MRTD));
}

#[test]
fn mr_extend_chunk_by_chunk_matches_extend_page() {
    let page = pattern_page();
    let mut whole = MrtdBuilder::new();
    whole.extend_page(Gpa(0x4000), &page).unwrap();
    let mut chunks = MrtdBuilder::new();
    for k in 0..16usize {
        let chunk: &[u8; 256] = page[k * 256..(k + 1) * 256].try_into().unwrap();
        chunks
            .mr_extend(Gpa(0x4000 + k as u64 * 256), chunk)
            .unwrap();
    }
    assert_eq!(chunks.blocks_hashed(), 48);
    assert_eq!(whole.finalize(), chunks.finalize());
}

#[test]
fn builder_forks() {
    let page = pattern_page();
    let mut prefix = MrtdBuilder::new();
    prefix.add_page(Gpa(0xFFFF_F000), &page, true).unwrap();
    let mut fork = prefix.clone();
    fork.add_page(Gpa(0x1000), &page, false).unwrap();
    assert_eq!(fork.finalize(), hex(SINGLE_PASS_MRTD));
    // The original is unaffected by the fork.
    assert_eq!(prefix.blocks_hashed(), 49);
}

#[test]
fn misaligned_gpas_are_refused_without_hashing() {
    let chunk = [0u8; 256];
    let mut b = MrtdBuilder::new();
    assert_eq!(
        b.mr_extend(Gpa(0x1080), &chunk),
        Err(MeasureError::MisalignedGpa {
            gpa: 0x1080,
            alignment: 256
        })
    );
    assert_eq!(
        b.mem_page_add(Gpa(0x1100)),
        Err(MeasureError::MisalignedGpa {
            gpa: 0x1100,
            alignment: 4096
        })
    );
    assert_eq!(
        b.extend_page(Gpa(0x1100), &[0; 4096]),
        Err(MeasureError::MisalignedGpa {
            gpa: 0x1100,
            alignment: 4096
        })
    );
    assert_eq!(b.blocks_hashed(), 0);
    assert_eq!(
        b.finalize(),
        hex(
            "38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da\
             274edebfe76f65fbd51ad2f14898b95b"
        )
    );
    // 256-aligned inside a page is fine for MR.EXTEND.
    let mut ok = MrtdBuilder::new();
    ok.mr_extend(Gpa(0x1F00), &chunk).unwrap();
    assert_eq!(ok.blocks_hashed(), 3);
    let e = MeasureError::MisalignedGpa {
        gpa: 0x1080,
        alignment: 256,
    };
    assert_eq!(e.to_string(), "GPA 0x1080 is not 256-byte aligned");
}

#[test]
fn rtmr_extend_known_answers() {
    assert_eq!(RTMR_INITIAL, Measurement([0; 48]));
    // python3 -c 'import hashlib; print(hashlib.sha384(bytes(48) + bytes([1]*48)).hexdigest())'
    let once = rtmr_extend(&RTMR_INITIAL, &[0x01; 48]);
    assert_eq!(
        once,
        hex(
            "b2cdfa15c3fdc5772b099d6e1a5acb8a2eb8b94adb63393a7ae3068c8b4bd8cd\
             ad83d6eb649d8178d0fe7a8135d0a003"
        )
    );
    // ... then hashlib.sha384(<that digest> + bytes([2]*48))
    let twice = rtmr_extend(&once, &[0x02; 48]);
    assert_eq!(
        twice,
        hex(
            "11422093d9248558e623cdd803580126f1912db17c838f511a296eb2e7dba838\
             2ad56767569170322357e1a8fef06eae"
        )
    );
}

#[test]
fn report_hashes_known_answers() {
    // python3 -c 'import hashlib; print(hashlib.sha384(bytes(512)).hexdigest())'
    assert_eq!(
        tee_info_hash(&[0; 512]),
        hex(
            "d83d9a38c238ef3b7bc207bbea3287a8b37b37e731480a8d240d2a6953086c5e\
             cbdf7ee4c72fec3a3e9d4a87f4f9b4fe"
        )
    );
    // python3 -c 'import hashlib; print(hashlib.sha384(bytes(239)).hexdigest())'
    assert_eq!(
        tee_tcb_info_hash(&[0; 239]),
        hex(
            "70fa2d4b4a97249db1789e4b1964b1eec6c3f7ce1ff87bad80833bb078d2f9a4\
             c1dd7dccccabc8511fd22103245338b7"
        )
    );
}

#[test]
fn servtd_hash_known_answers() {
    assert_eq!(servtd_hash(&mut []), Measurement::ZERO);

    let mut records = [
        ServtdRecord {
            info_hash: Measurement([0xBB; 48]),
            servtd_type: 1,
            attributes: 0x10,
        },
        ServtdRecord {
            info_hash: Measurement([0xAA; 48]),
            servtd_type: 1,
            attributes: 0x20,
        },
        ServtdRecord {
            info_hash: Measurement([0xCC; 48]),
            servtd_type: 0,
            attributes: 0x7FF_0000_0000,
        },
    ];
    // Record layout: 48-byte hash, u16 LE type, u64 LE attributes.
    let mut expected_bytes = [0u8; 58];
    expected_bytes[..48].copy_from_slice(&[0xCC; 48]);
    expected_bytes[48] = 0;
    expected_bytes[49] = 0;
    expected_bytes[54] = 0xFF;
    expected_bytes[55] = 0x07;
    assert_eq!(records[2].to_bytes(), expected_bytes);

    // python3: recs sorted by (type, info_hash) -> CC.., AA.., BB..;
    //   hashlib.sha384(b''.join(h + struct.pack('<H', t) + struct.pack('<Q', a) ...)).hexdigest()
    let h = servtd_hash(&mut records);
    assert_eq!(
        h,
        hex(
            "82d61c35162732e0a3df1b51a6b7ba1e3d1dae0da558dd3af323947505283fa5\
             0fc693e0003d538e73f1d5d003e352e1"
        )
    );
    assert_eq!(records[0].servtd_type, 0);
    assert_eq!(records[1].info_hash, Measurement([0xAA; 48]));
    assert_eq!(records[2].info_hash, Measurement([0xBB; 48]));

    // One MigTD record alone.
    let mut one = [ServtdRecord {
        info_hash: Measurement([0xCC; 48]),
        servtd_type: 0,
        attributes: 0x7FF_0000_0000,
    }];
    assert_eq!(
        servtd_hash(&mut one),
        hex(
            "6a7e482bcc5ab213566d41b078d87b1e27edd0155f6c3847e5afc8476bc61c72\
             6215e940d85a44cf38e2ce19281fdee7"
        )
    );
}

#[test]
fn measurement_hex_display_and_errors() {
    let m = Measurement({
        let mut b = [0u8; 48];
        b[0] = 0xAB;
        b[47] = 0x01;
        b
    });
    let s = m.to_string();
    assert_eq!(&s[..4], "ab00");
    assert_eq!(&s[92..], "0001");
    assert_eq!(s.len(), 96);
    assert_eq!(format!("{m:?}"), format!("Measurement({s})"));
    assert_eq!(s.parse::<Measurement>(), Ok(m));
    assert_eq!(
        Measurement::from_hex(&s[..95]),
        Err(ParseMeasurementError::WrongLength(95))
    );
    assert_eq!(
        Measurement::from_hex(&format!("{}x", &s[..95])),
        Err(ParseMeasurementError::InvalidDigit {
            index: 95,
            byte: b'x'
        })
    );
    assert!(Measurement::ZERO.is_zero());
    assert!(!m.is_zero());
}
