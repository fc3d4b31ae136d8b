//! The integration tests: the real binary on real media, one module per area. One binary, so
//! the fixture clips are encoded once and the tests share one link of the test harness. The
//! Slurm suite (`tests/slurm.rs`) keeps a binary of its own: it needs a local cluster.

mod common;
mod datasets;
mod embed;
mod engine;
mod features;
mod golden;
mod media;
mod snapshots;
mod studies;
mod train;
