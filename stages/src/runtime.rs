//! How this process computed, for the record kept beside an artifact: the devices libtorch ran
//! on. A worker process computes one job, so what it noted is that job's.

use std::collections::BTreeSet;
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
