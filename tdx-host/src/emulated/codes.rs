//! Thin helpers over `tdx_abi::status` for the handlers: every status the emulated module
//! returns is a [`StatusCode`] of tdx-abi in its canonical form (flag bits 63:60 as the 1.5
//! module sets them) plus an [`OperandId`] or other details in bits 31:0.

use tdx_abi::status::TdxStatus;
pub(crate) use tdx_abi::status::{OperandId, StatusCode};

/// A status with no extra details.
pub(crate) const fn code(c: StatusCode) -> TdxStatus {
    TdxStatus::from_code(c)
}

/// A status with an operand id in bits 31:0.
pub(crate) const fn with_operand(c: StatusCode, operand: OperandId) -> TdxStatus {
    c.with_operand(operand)
}

/// `Err` of [`with_operand`], for `?` in handlers.
pub(crate) const fn err<T>(c: StatusCode, operand: OperandId) -> Result<T, TdxStatus> {
    Err(c.with_operand(operand))
}
