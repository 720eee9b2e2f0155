//! virtio-blk throughput bench (placeholder until written).
fn main() {}
