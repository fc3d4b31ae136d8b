//! How this process computed, for the record kept beside an artifact: the devices libtorch ran
//! on, and the versions of the native libraries it links. A worker process computes one job,
//! so what it noted is that job's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

static DEVICES: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Notes that a model ran on `device` (`cpu`, `cuda:0`).
pub fn used_device(device: &str) {
    let mut d = DEVICES.lock().unwrap_or_else(|e| e.into_inner());
    if !d.contains(device) {
        d.insert(device.to_string());
    }
}

/// The devices noted so far, comma-separated; empty when nothing ran a model.
pub fn devices() -> String {
    let d = DEVICES.lock().unwrap_or_else(|e| e.into_inner());
    d.iter().cloned().collect::<Vec<_>>().join(",")
}

static LIBRARIES: Mutex<BTreeMap<&'static str, String>> = Mutex::new(BTreeMap::new());

/// Notes the version of a native library this process links (`ffmpeg`, `opencv`, `libtorch`),
/// for the artifacts of the kinds that use it.
pub fn linked_library(name: &'static str, version: String) {
    let mut l = LIBRARIES.lock().unwrap_or_else(|e| e.into_inner());
    l.insert(name, version);
}

/// The noted versions of the libraries in `names`; a library this process did not note is
/// left out.
pub fn library_versions(names: &[&str]) -> BTreeMap<String, String> {
    let l = LIBRARIES.lock().unwrap_or_else(|e| e.into_inner());
    names
        .iter()
        .filter_map(|n| l.get(n).map(|v| (n.to_string(), v.clone())))
        .collect()
}
