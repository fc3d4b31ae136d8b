//! Data stages: the dataset's clips, labels and splits, and user commands over them.

pub mod command;
pub mod ingest;
pub mod labels;
pub mod split;
pub mod summary;
