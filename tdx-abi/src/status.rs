//! Stand-in for the completion-status module, so that `call` compiles on its own branch.
//!
//! The real module (class, details, operand id, named codes) replaces this file on merge;
//! only the three items below are used by the rest of this branch.

/// The 64-bit completion status a SEAMCALL or TDCALL leaves in RAX.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct TdxStatus(u64);

impl TdxStatus {
    /// `TDX_SUCCESS`: all bits zero.
    pub const SUCCESS: TdxStatus = TdxStatus(0);

    /// Wraps a raw RAX value.
    pub const fn from_raw(raw: u64) -> Self {
        TdxStatus(raw)
    }

    /// The raw RAX value.
    pub const fn raw(self) -> u64 {
        self.0
    }
}
