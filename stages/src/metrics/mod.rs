//! Evaluation: the papers' metrics, aggregates over seeds, directions with their intervals, and
//! report figures.

pub mod aggregate;
pub mod bootstrap;
pub mod common;
pub mod compare;
pub mod emotion;
pub mod evaluate;
pub mod figures;
pub mod mmsa;
