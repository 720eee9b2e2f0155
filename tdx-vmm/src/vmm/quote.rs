//! Quote providers for `TDG.VP.VMCALL<GetQuote>`.
//!
//! * [`EmulatedQuoteProvider`]: for the emulated backend. The "quote" is a documented,
//!   quote-*shaped* blob — **not** an Intel TDX quote, and no verifier should accept it:
//!   `"TDXEMUQ1"` (8 bytes) ‖ version u32 LE (1) ‖ report length u32 LE (1024) ‖ the TDREPORT
//!   ‖ HMAC-SHA-256 (32 bytes) over everything before it, keyed by the emulated platform's
//!   quoting key. [`EmulatedQuoteProvider::verify`] checks it.
//! * [`UnixSocketQuoteProvider`]: for hardware, a quote-generation service on a Unix socket:
//!   the VMM sends u32 LE length ‖ TDREPORT and reads u32 LE length ‖ quote (at most
//!   [`MAX_QUOTE_SIZE`] bytes).
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Size of a TDREPORT_STRUCT.
pub const TDREPORT_SIZE: usize = 1024;
/// Largest quote accepted from a provider.
pub const MAX_QUOTE_SIZE: usize = 64 * 1024;
/// Magic of the emulated quote blob.
pub const EMULATED_QUOTE_MAGIC: &[u8; 8] = b"TDXEMUQ1";
/// Size of the emulated quote blob.
pub const EMULATED_QUOTE_SIZE: usize = 16 + TDREPORT_SIZE + 32;

/// A quote could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum QuoteError {
    /// The quote service could not be reached or failed.
    #[error("quote service {path}: {source}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The service answered with a quote of an impossible size.
    #[error("quote service {path}: quote of {len} bytes (at most {MAX_QUOTE_SIZE})")]
    BadLength {
        /// Socket path.
        path: PathBuf,
        /// Announced length.
        len: u64,
    },
}

/// Turns a TDREPORT into a quote.
pub trait QuoteProvider: Send + Sync {
    /// The quote for `tdreport`.
    fn quote(&self, tdreport: &[u8; TDREPORT_SIZE]) -> Result<Vec<u8>, QuoteError>;
}

/// The emulated platform's quote blob (see the module docs).
#[derive(Clone)]
pub struct EmulatedQuoteProvider {
    key: [u8; 32],
}

impl std::fmt::Debug for EmulatedQuoteProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmulatedQuoteProvider { key: <secret> }")
    }
}

impl EmulatedQuoteProvider {
    /// A provider signing with `key`.
    pub fn new(key: [u8; 32]) -> Self {
        EmulatedQuoteProvider { key }
    }

    /// A provider with a fresh random key (from the OS).
    pub fn random() -> std::io::Result<Self> {
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
        Ok(Self::new(key))
    }

    fn mac(&self, bytes: &[u8]) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key size");
        m.update(bytes);
        m
    }

    /// Checks a blob made by this provider and returns the TDREPORT it carries.
    pub fn verify(&self, quote: &[u8]) -> Option<[u8; TDREPORT_SIZE]> {
        if quote.len() != EMULATED_QUOTE_SIZE || &quote[..8] != EMULATED_QUOTE_MAGIC {
            return None;
        }
        let (body, tag) = quote.split_at(EMULATED_QUOTE_SIZE - 32);
        self.mac(body).verify_slice(tag).ok()?;
        let mut r = [0u8; TDREPORT_SIZE];
        r.copy_from_slice(&body[16..]);
        Some(r)
    }
}

impl QuoteProvider for EmulatedQuoteProvider {
    fn quote(&self, tdreport: &[u8; TDREPORT_SIZE]) -> Result<Vec<u8>, QuoteError> {
        let mut q = Vec::with_capacity(EMULATED_QUOTE_SIZE);
        q.extend_from_slice(EMULATED_QUOTE_MAGIC);
        q.extend_from_slice(&1u32.to_le_bytes());
        q.extend_from_slice(&(TDREPORT_SIZE as u32).to_le_bytes());
        q.extend_from_slice(tdreport);
        let tag = self.mac(&q).finalize().into_bytes();
        q.extend_from_slice(&tag);
        Ok(q)
    }
}

/// A quote-generation service on a Unix socket (see the module docs for the framing).
#[derive(Debug, Clone)]
pub struct UnixSocketQuoteProvider {
    path: PathBuf,
    timeout: Duration,
}

impl UnixSocketQuoteProvider {
    /// A provider talking to the service at `path`, with a 30 s timeout per request.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        UnixSocketQuoteProvider {
            path: path.into(),
            timeout: Duration::from_secs(30),
        }
    }

    fn request(&self, tdreport: &[u8; TDREPORT_SIZE]) -> std::io::Result<Result<Vec<u8>, u64>> {
        let mut s = UnixStream::connect(&self.path)?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        s.write_all(&(TDREPORT_SIZE as u32).to_le_bytes())?;
        s.write_all(tdreport)?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 || len > MAX_QUOTE_SIZE {
            return Ok(Err(len as u64));
        }
        let mut q = vec![0u8; len];
        s.read_exact(&mut q)?;
        Ok(Ok(q))
    }
}

impl QuoteProvider for UnixSocketQuoteProvider {
    fn quote(&self, tdreport: &[u8; TDREPORT_SIZE]) -> Result<Vec<u8>, QuoteError> {
        match self.request(tdreport) {
            Ok(Ok(q)) => Ok(q),
            Ok(Err(len)) => Err(QuoteError::BadLength {
                path: self.path.clone(),
                len,
            }),
            Err(source) => Err(QuoteError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }
}
