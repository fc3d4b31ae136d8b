//! Training stages on tch: Uni2Mul's two stages (`train_unimodal`, `train_fusion`),
//! `export_hidden`, the joint networks (`train_joint`) and linear probes, over one shared
//! dataset builder and training loop. The networks themselves are under `nets`, one file each.

pub mod checkpoint;
pub mod dataset;
pub mod export_hidden;
pub mod fit;
pub mod fusion;
pub mod joint;
pub mod linprobe;
pub mod nets;
pub mod unimodal;
