//! Placeholder: the host driver is being written.
