//! Every stage kind's declaration, and the kinds this crate computes. Kept apart from the trait
//! so that no stage imports the list that imports it.

use crate::data::{command, ingest, labels, split, summary};
use crate::features::{channels, sequence, spectrum};
use crate::metrics::{aggregate, compare, evaluate};
use crate::{embed, media, train, Kind, Stage};

/// Every stage kind, declared.
pub fn kinds() -> Vec<Box<dyn Kind>> {
    vec![
        Box::new(ingest::Ingest),
        Box::new(labels::Labels),
        Box::new(split::Split),
        Box::new(media::Probe),
        Box::new(media::Audio),
        Box::new(media::Decode),
        Box::new(media::FaceCrop),
        Box::new(spectrum::LogMel),
        Box::new(spectrum::Mfcc),
        Box::new(sequence::Segment),
        Box::new(sequence::Pad),
        Box::new(channels::FaceGeometry),
        Box::new(channels::Concat),
        Box::new(summary::Summary),
        Box::new(embed::Embed),
        Box::new(embed::Pixels),
        Box::new(train::TrainUnimodal),
        Box::new(train::ExportHidden),
        Box::new(train::TrainFusion),
        Box::new(train::TrainJoint),
        Box::new(evaluate::Evaluate),
        Box::new(train::LinearProbe),
        Box::new(aggregate::Aggregate),
        Box::new(compare::Compare),
        Box::new(command::Command),
    ]
}

/// The kinds that compute with this crate alone (no FFmpeg, OpenCV or libtorch): the engine
/// runs them in its own process.
pub fn local() -> Vec<Box<dyn Stage>> {
    vec![
        Box::new(ingest::Ingest),
        Box::new(labels::Labels),
        Box::new(split::Split),
        Box::new(spectrum::LogMel),
        Box::new(spectrum::Mfcc),
        Box::new(sequence::Segment),
        Box::new(sequence::Pad),
        Box::new(channels::FaceGeometry),
        Box::new(channels::Concat),
        Box::new(summary::Summary),
        Box::new(evaluate::Evaluate),
        Box::new(aggregate::Aggregate),
        Box::new(compare::Compare),
        Box::new(command::Command),
    ]
}

/// `pipeline kinds`: each kind, by name, with its version, what it does and its params. The worker prints
/// the same listing of what it computes, so the two can be compared.
pub fn listing<'a>(kinds: impl Iterator<Item = &'a dyn Kind>) -> String {
    let mut kinds: Vec<&dyn Kind> = kinds.collect();
    kinds.sort_by_key(|k| k.kind());
    let mut out = String::new();
    for s in kinds {
        out.push_str(&format!("{} (v{}): {}\n", s.kind(), s.version(), s.about()));
        if !s.roles().is_empty() {
            let roles: Vec<&str> = s.roles().iter().map(|r| r.name).collect();
            out.push_str(&format!("  inputs: {}\n", roles.join(", ")));
        }
        let writes = s.writes(&crate::Params::default());
        if !writes.is_empty() {
            out.push_str(&format!("  writes: {}\n", writes.join(", ")));
        }
        for p in s.params() {
            let d = p
                .default
                .map(|d| format!(" = {d}"))
                .unwrap_or_else(|| " (required)".into());
            out.push_str(&format!(
                "    {}: {}{d}  — {}\n",
                p.name,
                p.describe(),
                p.doc
            ));
        }
    }
    out
}
