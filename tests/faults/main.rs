//! The fault suite: what the cache hands back is what was computed, whatever happens to it.
//! Bit flips, truncated and deleted objects, a damaged index, gc during a run, kill -9 at
//! seeded points (inside worker processes too), a full disk, and bad input of every kind, each
//! through the real binary on real clips.

#[path = "../it/common.rs"]
mod common;

mod bounds;
mod corruption;
mod kills;
mod leases;
mod paths;
mod scripts;
mod surface;
