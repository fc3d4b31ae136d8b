//! The papers' networks, one file per network.

pub mod cmmsf;
pub mod foal;
pub mod layers;
pub mod mbt;
pub mod smp;
pub mod uni2mul;
