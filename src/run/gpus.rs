//! GPUs for stages running side by side: which devices the machine has, which stage holds
//! which, and the `CUDA_VISIBLE_DEVICES` a worker gets. The engine never loads CUDA: it reads
//! the devices from `--gpus`, `CUDA_VISIBLE_DEVICES` or the NVIDIA driver's `/proc` entries.

use std::collections::HashMap;

use anyhow::{bail, Result};

use super::Env;
use crate::error::ConfigError;
use crate::report::Reporter;

/// The GPUs stages may use: `--gpus` when given, else `CUDA_VISIBLE_DEVICES` when set (a
/// Slurm allocation with GPUs sets it), else none in a Slurm job, else one per device the
/// NVIDIA driver lists (in `/proc`, else as `nvidia-smi -L` does).
pub fn detect(flag: Option<&str>) -> Result<Vec<String>> {
    if let Some(list) = flag {
        return parse_list(list, "--gpus");
    }
    if let Ok(list) = std::env::var("CUDA_VISIBLE_DEVICES") {
        return parse_list(&list, "CUDA_VISIBLE_DEVICES");
    }
    // A cluster job holds the GPUs its allocation lists, not the node's.
    if std::env::var_os("SLURM_JOB_ID").is_some() {
        return Ok(Vec::new());
    }
    let n = match std::fs::read_dir("/proc/driver/nvidia/gpus") {
        Ok(d) => d.count(),
        // Sandboxed kernels (gVisor) may not show the driver's entries; its tool still answers.
        Err(_) => std::process::Command::new("nvidia-smi")
            .arg("-L")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map_or(0, |o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| l.starts_with("GPU "))
                    .count()
            }),
    };
    Ok((0..n).map(|i| i.to_string()).collect())
}

/// `0,1`, `GPU-8f3c…` (a UUID), or `none`/empty for no GPU. The ids reach a worker's
/// environment, so only letters, digits and `-` pass.
pub fn parse_list(list: &str, what: &str) -> Result<Vec<String>> {
    let list = list.trim();
    if list.is_empty() || list.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let mut ids = Vec::new();
    for id in list.split(',').map(str::trim) {
        let ok = !id.is_empty()
            && id.len() <= 64
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        // CUDA's own convention: an invalid id hides it and every later one.
        if id == "-1" {
            break;
        }
        if !ok {
            bail!("{what}: `{id}` is not a GPU id (a device number or UUID; `none` for no GPU)");
        }
        if ids.iter().any(|i| i == id) {
            bail!("{what}: GPU `{id}` is listed twice");
        }
        ids.push(id.to_string());
    }
    Ok(ids)
}

/// What a stage asks of the GPUs: how many, and how many stages like it may share one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ask {
    pub gpus: usize,
    /// Stages that may run on one GPU at once (`resources.gpu_share`); 1: the GPU is its own.
    pub share: usize,
}

/// Who holds each GPU: a stage that asked to share takes a slot of a GPU shared by stages
/// that asked the same share, or a free GPU.
pub struct Pool {
    ids: Vec<String>,
    /// Per GPU: (the share its holders asked, how many hold it).
    held: Vec<(usize, usize)>,
}

impl Pool {
    pub fn new(ids: Vec<String>) -> Pool {
        let held = vec![(1, 0); ids.len()];
        Pool { ids, held }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The devices for `ask`, taken; None while they are held by others.
    pub fn take(&mut self, ask: Ask) -> Option<Vec<usize>> {
        if ask.gpus == 0 {
            return Some(Vec::new());
        }
        if ask.gpus == 1 && ask.share > 1 {
            let joinable =
                |(_, &(s, n)): &(usize, &(usize, usize))| n > 0 && s == ask.share && n < s;
            let free = |(_, &(_, n)): &(usize, &(usize, usize))| n == 0;
            let i = self
                .held
                .iter()
                .enumerate()
                .find(joinable)
                .or_else(|| self.held.iter().enumerate().find(free))
                .map(|(i, _)| i)?;
            self.held[i] = (ask.share, self.held[i].1 + 1);
            return Some(vec![i]);
        }
        let free: Vec<usize> = (0..self.held.len())
            .filter(|&i| self.held[i].1 == 0)
            .take(ask.gpus)
            .collect();
        if free.len() < ask.gpus {
            return None;
        }
        for &i in &free {
            self.held[i] = (1, 1);
        }
        Some(free)
    }

    pub fn give_back(&mut self, taken: &[usize]) {
        for &i in taken {
            self.held[i].1 = self.held[i].1.saturating_sub(1);
        }
    }

    /// The ids of devices, as `CUDA_VISIBLE_DEVICES` names them.
    pub fn ids(&self, taken: &[usize]) -> Vec<String> {
        taken.iter().map(|&i| self.ids[i].clone()).collect()
    }
}

/// What each stage about to run asks of the GPUs, refused before anything runs where the
/// machine cannot give it: `device: cuda` without a GPU, more GPUs than there are. A stage
/// with `device: auto` that asked for a GPU the machine lacks runs on the CPU; the warning
/// names those.
pub fn plan_asks(
    env: &Env,
    todo: &[usize],
    have: usize,
    rep: &Reporter,
) -> crate::Result<HashMap<usize, Ask>> {
    let mut asks = HashMap::new();
    let mut on_cpu = Vec::new();
    for &idx in todo {
        let s = &env.plan.stages[idx];
        let mut ask = super::gpus_asked(env, idx, have);
        let device = s
            .params
            .str("device")
            .ok()
            .filter(|_| env.reg.get(&s.kind).is_some_and(|k| k.uses_device()));
        let refuse = |msg: String, hint: &str| ConfigError {
            file: env.plan.file.clone(),
            line: s.line,
            msg: format!("stage `{}`: {msg}", s.name),
            hint: Some(hint.to_string()),
        };
        if device == Some("cuda") && ask.gpus == 0 {
            return Err(refuse(
                format!(
                    "device: cuda, but {}",
                    if have == 0 {
                        "this machine has no GPU (none in CUDA_VISIBLE_DEVICES, --gpus or the \
                         NVIDIA driver)"
                            .to_string()
                    } else {
                        "its resources.gpus is 0".to_string()
                    }
                ),
                "device: auto runs on a GPU when there is one and on the CPU otherwise",
            )
            .into());
        }
        if device == Some("auto") && have == 0 {
            on_cpu.push(s.name.as_str());
            ask.gpus = 0;
        }
        if ask.gpus > have {
            return Err(refuse(
                format!("asks for {} GPU(s); this machine has {have}", ask.gpus),
                "--gpus lists the GPUs a run may use",
            )
            .into());
        }
        if ask.share > 1 && ask.gpus > 1 {
            return Err(refuse(
                format!("gpu_share: {} with gpus: {}", ask.share, ask.gpus),
                "stages share one GPU: gpu_share goes with gpus: 1",
            )
            .into());
        }
        asks.insert(idx, ask);
    }
    if !on_cpu.is_empty() {
        let more = on_cpu.len().saturating_sub(3);
        rep.line(&format!(
            "warning: no GPU here (--gpus, CUDA_VISIBLE_DEVICES); {} stage(s) with device: auto \
             run on the CPU: {}{}",
            on_cpu.len(),
            on_cpu[..on_cpu.len().min(3)].join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    Ok(asks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_checked() {
        assert_eq!(parse_list("0, 2", "x").unwrap(), vec!["0", "2"]);
        assert!(parse_list("none", "x").unwrap().is_empty());
        assert!(parse_list("", "x").unwrap().is_empty());
        assert_eq!(parse_list("1,-1,2", "x").unwrap(), vec!["1"]);
        assert!(parse_list("0;rm -rf", "x").is_err());
        assert!(parse_list("0,0", "x").is_err());
        assert_eq!(
            parse_list("GPU-8f3c2a1e-0000-1111", "x").unwrap(),
            vec!["GPU-8f3c2a1e-0000-1111"]
        );
    }

    #[test]
    fn a_gpu_is_held_alone_or_shared_by_stages_that_asked_the_same_share() {
        let mut p = Pool::new(vec!["0".into(), "1".into()]);
        let one = Ask { gpus: 1, share: 1 };
        let quarter = Ask { gpus: 1, share: 4 };
        let a = p.take(one).unwrap();
        assert_eq!(p.ids(&a), vec!["0"]);
        // Four sharing stages fit on the other GPU, a fifth waits.
        let q: Vec<_> = (0..4).map(|_| p.take(quarter).unwrap()).collect();
        assert!(q.iter().all(|t| t == &vec![1]));
        assert_eq!(p.take(quarter), None);
        assert_eq!(p.take(Ask { gpus: 2, share: 1 }), None);
        p.give_back(&a);
        assert_eq!(p.take(quarter), Some(vec![0]));
        // A whole GPU waits until its sharers are gone.
        for t in &q {
            p.give_back(t);
        }
        assert_eq!(p.take(one), Some(vec![1]));
        assert_eq!(p.take(Ask { gpus: 0, share: 1 }), Some(vec![]));
    }
}
