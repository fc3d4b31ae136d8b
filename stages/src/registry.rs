//! Every stage kind this build knows, by family. Kept apart from the trait so that no stage
//! imports the list that imports it.

use crate::data::{command, ingest, labels, split, summary};
use crate::embed::pretrained as embed;
use crate::features::{channels, sequence, spectrum};
use crate::media::{audio, decode, face, probe};
use crate::metrics::evaluate;
use crate::metrics::{aggregate, compare};
use crate::train::{export_hidden, fusion, joint, linprobe, unimodal};
use crate::Stage;

/// Every stage kind this build knows.
pub fn registry() -> Vec<Box<dyn Stage>> {
    vec![
        Box::new(ingest::Ingest),
        Box::new(labels::Labels),
        Box::new(split::Split),
        Box::new(probe::Probe),
        Box::new(audio::Audio),
        Box::new(decode::Decode),
        Box::new(face::FaceCrop),
        Box::new(spectrum::LogMel),
        Box::new(spectrum::Mfcc),
        Box::new(sequence::Segment),
        Box::new(sequence::Pad),
        Box::new(channels::FaceGeometry),
        Box::new(channels::Concat),
        Box::new(summary::Summary),
        Box::new(embed::Embed::default()),
        Box::new(embed::Pixels),
        Box::new(unimodal::TrainUnimodal),
        Box::new(export_hidden::ExportHidden),
        Box::new(fusion::TrainFusion),
        Box::new(joint::TrainJoint),
        Box::new(evaluate::Evaluate),
        Box::new(linprobe::LinearProbe),
        Box::new(aggregate::Aggregate),
        Box::new(compare::Compare),
        Box::new(command::Command),
    ]
}
