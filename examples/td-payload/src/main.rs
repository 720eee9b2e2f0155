//! Example TD payload (issue 5, guest side): a ring-0 `global_asm!` shim ([`ring0`]) and a
//! ring-3 `no_std` Rust body ([`body`]) that exercises the TDCALL and TDVMCALL surface of the
//! TDX module through a `ud2` gate served by the ring-0 #UD handler ([`gate::GateTdcall`]);
//! the body also drives a virtio-blk device ([`virtio`], issue 8).
//!
//! Built by `tdx-payloads/build.rs` as a static, non-PIE ELF for `x86_64-unknown-linux-gnu`
//! (no `x86_64-unknown-none` target on the build machine) with `link.ld`: linked at 1 MiB,
//! `.bss` inside a PROGBITS PT_LOAD segment (file size == memory size), no relocations, no
//! interpreter. The entry contract is documented in [`ring0`].
#![no_std]
#![no_main]

mod body;
mod gate;
mod hob;
mod mem;
mod ring0;
mod serial;
mod virtio;

use core::panic::PanicInfo;

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    // The panic handler runs in ring 3 (ring 0 has no Rust code): report and stop.
    body::fatal(format_args!("panic: {}", info.message()))
}
