//! Glue between the driver and the emulated module (filled in once the emulated module lands).
