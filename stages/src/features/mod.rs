//! Hand-written features: log-mel and MFCC (librosa's conventions), sequence shaping, and the
//! second channels of multi-channel models.

pub mod channels;
pub mod matrix;
pub mod sequence;
pub mod spectral;
pub mod spectrum;

/// A per-clip feature matrix: `frames` rows of `dim` values, row-major (see `matrix.rs`).
pub const MATRIX: &[&str] = &["frames", "dim", "values"];

/// `logmel` and `mfcc`: the matrix, with the rate and hop it was computed at.
pub const SPECTRUM: &[&str] = &["sample_rate", "hop_s", "frames", "dim", "values"];
