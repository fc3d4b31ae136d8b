//! Pretrained TorchScript models over clips: faces, audio windows, tokens.

pub mod pretrained;
