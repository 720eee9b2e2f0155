//! Placeholder: the emulated TDX module is being written.
