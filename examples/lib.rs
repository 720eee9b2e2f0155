//! Examples of the TDX host crate family. Run one with
//! `cargo run -p tdx-examples --example NAME`.
