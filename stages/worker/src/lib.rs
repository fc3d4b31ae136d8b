//! The stage kinds that need FFmpeg, OpenCV or libtorch: media (probe, audio, decode, face),
//! pretrained embeddings and training. Each computes a kind declared in the `stages` crate, which
//! is where its params, mode and reports live; [`stages`] lists every kind the worker runs.

pub mod embed;
#[cfg(feature = "media")]
pub mod media;
pub mod torch;
pub mod train;

// The shared API and the light families, under the names the stage files use.
pub use stages::{
    data, features, metrics, params, resolve, table, ItemError, Kind, Mode, Output, Params,
    PlanCtx, RunCtx, Stage, StageError,
};

/// Notes the versions of the native libraries this worker links, for the artifacts' metadata.
pub fn note_libraries() {
    ::stages::runtime::linked_library("libtorch", env!("PIPELINE_LIBTORCH_VERSION").to_string());
    #[cfg(feature = "media")]
    media::note_libraries();
}

/// Every kind, computed: the light crate's own and this crate's.
pub fn stages() -> Vec<Box<dyn Stage>> {
    let mut all = ::stages::registry::local();
    #[cfg(feature = "media")]
    all.extend([
        Box::new(media::probe::Probe) as Box<dyn Stage>,
        Box::new(media::audio::Audio),
        Box::new(media::decode::Decode),
        Box::new(media::face::FaceCrop),
        Box::new(embed::pretrained::Pixels),
    ]);
    all.extend([
        Box::new(embed::pretrained::Embed::default()) as Box<dyn Stage>,
        Box::new(train::unimodal::TrainUnimodal),
        Box::new(train::export_hidden::ExportHidden),
        Box::new(train::fusion::TrainFusion),
        Box::new(train::joint::TrainJoint),
        Box::new(train::linprobe::LinearProbe),
    ]);
    all
}
