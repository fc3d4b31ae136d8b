//! Media stages: FFmpeg probing and decoding, 16 kHz audio, MTCNN face crops.

pub mod audio;
pub mod decode;
pub mod face;
pub mod ffmpeg;
pub mod mtcnn;
pub mod probe;
