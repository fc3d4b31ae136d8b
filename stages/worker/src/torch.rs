//! libtorch plumbing shared by the model stages: which device to run on, and TorchScript
//! modules loaded once per process and file content.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tch::{CModule, Device};

/// libtorch has one random generator per process: weight init and dropout of two trainings
/// running side by side would interleave their draws and neither would be reproducible. Each
/// training holds this from seeding to its last step (libtorch already uses every core), and
/// each embedding batch holds it for its forward pass: MKL's thread count is process-wide, and
/// a matrix product split over another thread count sums in another order, so a batch that ran
/// beside a one-thread training would not give the bytes it gives alone.
pub static RNG: Mutex<()> = Mutex::new(());

static DEFAULT: std::sync::OnceLock<i32> = std::sync::OnceLock::new();

/// libtorch's thread count before any training changed it: what inference runs on.
fn default_threads() -> i32 {
    *DEFAULT.get_or_init(tch::get_num_threads)
}

/// The threads inference runs on: the job's, a fixed number per kind (see
/// `stages::Kind::cpus`), so that embeddings do not depend on the machine.
pub fn set_threads(n: usize) {
    let n = n.clamp(1, i32::MAX as usize) as i32;
    tch::set_num_threads(n);
    let _ = DEFAULT.set(n);
}

/// Inference's hold on libtorch: no training runs meanwhile, and the thread count is the
/// process's default.
pub fn inference() -> std::sync::MutexGuard<'static, ()> {
    let _ = default_threads();
    let guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(default_threads());
    guard
}

/// One training's hold on libtorch: the generator, seeded, and the intra-op thread count,
/// put back when dropped.
pub struct Training {
    _rng: std::sync::MutexGuard<'static, ()>,
    threads: i32,
}

/// Seeds libtorch for a training and runs its ops on `threads` threads. The Uni2Mul models
/// are small enough that a second thread costs more in hand-offs than it computes.
pub fn training(seed: i64, threads: i64) -> Training {
    let _ = default_threads();
    let rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let before = tch::get_num_threads();
    tch::set_num_threads(threads.max(1) as i32);
    tch::manual_seed(seed);
    Training {
        _rng: rng,
        threads: before,
    }
}

impl Drop for Training {
    fn drop(&mut self) {
        tch::set_num_threads(self.threads);
    }
}

/// `auto` takes the GPU the scheduler gave the stage (the first CUDA device libtorch sees
/// under its `CUDA_VISIBLE_DEVICES`), else the CPU. The device is noted for the artifact's
/// record.
pub fn device(name: &str) -> Result<Device, crate::StageError> {
    let cuda = tch::Cuda::is_available();
    let dev = match name {
        "cpu" => Device::Cpu,
        "cuda" if cuda => Device::Cuda(0),
        "cuda" => {
            return Err(format!(
                "device cuda: libtorch sees no CUDA device (CUDA_VISIBLE_DEVICES={:?}; a \
                 CUDA build needs PIPELINE_CUDA=1 at build time and the torch wheel's CUDA \
                 libraries)",
                std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default()
            )
            .into())
        }
        "auto" => {
            if cuda {
                Device::Cuda(0)
            } else {
                Device::Cpu
            }
        }
        other => return Err(format!("unknown device `{other}` (auto, cpu or cuda)").into()),
    };
    stages::runtime::used_device(&match dev {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_string(),
    });
    Ok(dev)
}

/// A TorchScript module in eval mode on its device. Forward passes take the lock: libtorch
/// already spreads one pass over every core.
pub struct Loaded {
    pub module: Mutex<CModule>,
    pub device: Device,
}

/// Modules by file content hash and device, so a run loads each model once however many
/// batches it has.
#[derive(Default)]
pub struct ModelCache(Mutex<HashMap<(String, String), Arc<Loaded>>>);

impl ModelCache {
    pub fn get(
        &self,
        path: &Path,
        hash: &str,
        device: Device,
    ) -> Result<Arc<Loaded>, crate::StageError> {
        let key = (hash.to_string(), format!("{device:?}"));
        if let Some(m) = self.0.lock().unwrap().get(&key) {
            return Ok(m.clone());
        }
        let mut module = CModule::load_on_device(path, device).map_err(|e| {
            format!(
                "{}: cannot load as a TorchScript module: {e}",
                path.display()
            )
        })?;
        module.set_eval();
        let m = Arc::new(Loaded {
            module: Mutex::new(module),
            device,
        });
        self.0.lock().unwrap().insert(key, m.clone());
        Ok(m)
    }
}
