//! The engine: plans a study's YAML into a DAG of stages (`config`), keys each stage by its
//! declared params and inputs (`keys`), keeps artifacts and per-item results in a
//! content-addressed cache (`store`, `db`), runs what is stale (`run`) or submits it to Slurm
//! (`submit`, `slurm`), and reads results back (`inspect`, `metrics`, `results`).
//! `docs/architecture.md` has the whole picture.

pub mod config;
pub mod dag;
pub mod db;
pub mod error;
pub mod export;
pub mod inspect;
pub mod keys;
pub mod lease;
pub mod locate;
pub mod maint;
pub mod metrics;
pub mod registry;
pub mod report;
pub mod results;
pub mod run;
pub mod runs;
pub mod slurm;
pub mod store;
pub mod submit;

pub use error::{Error, Result};
