//! Hand-written features: log-mel and MFCC (librosa's conventions), sequence shaping, and the
//! second channels of multi-channel models.

pub mod channels;
pub mod matrix;
pub mod sequence;
pub mod spectral;
pub mod spectrum;
