//! virtio-console (virtio 1.x §5.3), port 0 only, output to a [`Write`] sink.
//!
//! No feature bits are offered (no SIZE, MULTIPORT or EMERG_WRITE), so the configuration
//! space is not used (reads as zeros). Queue 0 (receiveq) is left alone: the device has no
//! input and never pops its buffers. Queue 1 (transmitq): the readable bytes of each chain are
//! copied through a bounded host buffer to the sink; the device writes nothing into the chain
//! (used `len` 0). A chain with a defect (buffer not shared, writable buffer on the transmit
//! queue, too large) is completed without output.

use std::io::Write;

use tracing::debug;
use vm_memory::GuestMemory;

use crate::mmio::VirtioDevice;
use crate::queue::{read_from_segments, ChainSnapshot};

/// virtio device ID of a console.
pub const VIRTIO_ID_CONSOLE: u32 = 3;
/// Index of port 0's receive queue.
pub const RECEIVEQ: usize = 0;
/// Index of port 0's transmit queue.
pub const TRANSMITQ: usize = 1;
/// Largest transmit chain accepted (64 KiB).
pub const MAX_TX_BYTES: u64 = 64 * 1024;
const CHUNK: usize = 4096;

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsoleStats {
    /// Bytes written to the sink.
    pub bytes: u64,
    /// Chains dropped (defect or sink error).
    pub dropped: u64,
}

/// A virtio-console device writing port 0 output to `W`.
#[derive(Debug)]
pub struct ConsoleDevice<W: Write> {
    sink: W,
    queue_sizes: [u16; 2],
    buf: Vec<u8>,
    stats: ConsoleStats,
}

impl<W: Write> ConsoleDevice<W> {
    /// A console with queues of `queue_size` entries writing to `sink`.
    pub fn new(sink: W, queue_size: u16) -> Self {
        ConsoleDevice {
            sink,
            queue_sizes: [queue_size; 2],
            buf: vec![0; CHUNK],
            stats: ConsoleStats::default(),
        }
    }

    /// The sink.
    pub fn sink(&self) -> &W {
        &self.sink
    }

    /// Counters.
    pub fn stats(&self) -> ConsoleStats {
        self.stats
    }
}

impl<W: Write> VirtioDevice for ConsoleDevice<W> {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn device_features(&self) -> u64 {
        0
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn max_request_bytes(&self, _queue: usize) -> u64 {
        MAX_TX_BYTES
    }

    fn processes_queue(&self, queue: usize) -> bool {
        queue == TRANSMITQ
    }

    fn handle_chain<M: GuestMemory>(
        &mut self,
        queue: usize,
        chain: &ChainSnapshot,
        mem: &M,
    ) -> u32 {
        if queue != TRANSMITQ || chain.defect.is_some() || !chain.writable.is_empty() {
            debug!(head = chain.head, "virtio-console chain dropped");
            self.stats.dropped += 1;
            return 0;
        }
        let total = chain.readable_len();
        let mut done = 0u64;
        while done < total {
            let n = (total - done).min(CHUNK as u64) as usize;
            match read_from_segments(mem, &chain.readable, done, &mut self.buf[..n]) {
                Ok(r) if r == n => {}
                _ => {
                    self.stats.dropped += 1;
                    return 0;
                }
            }
            if self.sink.write_all(&self.buf[..n]).is_err() {
                self.stats.dropped += 1;
                return 0;
            }
            done += n as u64;
            self.stats.bytes += n as u64;
        }
        let _ = self.sink.flush();
        0
    }

    fn reset(&mut self) {}
}
