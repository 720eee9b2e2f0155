//! Helpers shared by integration tests.

pub mod seamcall_interp;
