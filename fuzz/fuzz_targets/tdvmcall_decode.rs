//! TDVMCALL exit registers are guest-controlled: decoding them must never panic, and every
//! request that decodes must re-encode to registers that decode to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tdx_abi::call::Regs;
use tdx_abi::gpa::Gpaw;
use tdx_abi::tdvmcall::TdVmCallRequest;

fn word(data: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (k, byte) in b.iter_mut().enumerate() {
        *byte = data.get(i * 8 + k).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    let gpaw = if data.first().copied().unwrap_or(0) & 1 == 0 {
        Gpaw::Gpaw48
    } else {
        Gpaw::Gpaw52
    };
    let data = data.get(1..).unwrap_or(&[]);
    let regs = Regs {
        rdx: word(data, 0),
        rbx: word(data, 1),
        rsi: word(data, 2),
        rdi: word(data, 3),
        r8: word(data, 4),
        r9: word(data, 5),
        // Bias R11 towards real sub-functions so the decoders behind them are reached.
        r10: if word(data, 6) & 0xf == 0 { word(data, 6) } else { 0 },
        r11: match word(data, 7) % 16 {
            0 => 10,
            1 => 12,
            2 => 30,
            3 => 31,
            4 => 32,
            5 => 48,
            6 => 54,
            7..=13 => 0x10000 + (word(data, 7) % 16 - 7),
            _ => word(data, 7) >> 4,
        },
        r12: word(data, 8),
        r13: word(data, 9),
        r14: word(data, 10),
        r15: word(data, 11),
        ..Regs::default()
    };
    if let Ok(req) = TdVmCallRequest::decode(&regs, gpaw) {
        let again = TdVmCallRequest::decode(&req.encode(), gpaw).expect("re-encoded request decodes");
        assert_eq!(again, req);
        let _ = req.fatal_error_message();
    } else if let Err(e) = TdVmCallRequest::decode(&regs, gpaw) {
        let _ = e.status();
    }
});
