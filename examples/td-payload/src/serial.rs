//! Console output: bytes to the COM1 data port (0x3F8) through TDVMCALL<Instruction.IO>,
//! serialised across vCPUs by a spin lock (ring 3, native).

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::gate::GateTdcall;
use tdx_abi::tdvmcall::tdvmcall_io_write;

/// COM1 data port.
pub const COM1: u16 = 0x3F8;

static LOCK: AtomicBool = AtomicBool::new(false);

/// A writer of bytes to COM1; an I/O error stops the write (reported by `fmt::Error`).
pub struct Serial;

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            tdvmcall_io_write(&GateTdcall, COM1, 1, b as u32).map_err(|_| fmt::Error)?;
        }
        Ok(())
    }
}

/// Writes one formatted line (with `\n`) under the console lock.
pub fn print_line(args: fmt::Arguments<'_>) -> fmt::Result {
    let mut spins: u64 = 0;
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
        spins += 1;
        if spins > (1 << 28) {
            // A vCPU died holding the lock: print anyway rather than hang.
            break;
        }
    }
    let r = Serial.write_fmt(args).and_then(|()| Serial.write_str("\n"));
    LOCK.store(false, Ordering::Release);
    r
}

/// `println!` over COM1; evaluates to `core::fmt::Result`.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::serial::print_line(format_args!($($arg)*))
    };
}
