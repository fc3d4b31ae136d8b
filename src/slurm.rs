//! The Slurm command-line tools (`sbatch`, `squeue`, `sacct`, `scancel`): the only way this
//! program talks to a cluster. Commands are found on PATH, as a user's shell finds them.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

/// The state of one job or array task as the scheduler reports it.
#[derive(Debug, Clone)]
pub struct TaskState {
    pub state: String,
    pub reason: String,
}

/// States after which a job never runs again.
pub fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED"
            | "FAILED"
            | "CANCELLED"
            | "TIMEOUT"
            | "OUT_OF_MEMORY"
            | "NODE_FAIL"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "PREEMPTED"
            | "LOST"
    )
}

fn run(cmd: &mut Command) -> Result<String> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().with_context(|| {
        format!("running `{name}`: is Slurm's client installed and on PATH (and SLURM_CONF set)?")
    })?;
    if !out.status.success() {
        bail!(
            "`{name}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Submits a batch script; returns the job id.
pub fn sbatch(script: &Path) -> Result<String> {
    let out = run(Command::new("sbatch").arg("--parsable").arg(script))?;
    // `--parsable` prints `id` or `id;cluster`.
    let id = out.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch printed no job id: {out:?}");
    }
    Ok(id)
}

pub fn scancel(ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    run(Command::new("scancel").args(ids)).map(|_| ())
}

/// Every task of the given jobs that the scheduler still knows, grouped by job id. `squeue -t
/// all` first (it keeps finished jobs for the cluster's MinJobAge), then `sacct` for jobs it
/// has forgotten; jobs neither knows are absent from the answer.
pub fn query(ids: &[String]) -> Result<HashMap<String, Vec<TaskState>>> {
    let mut out: HashMap<String, Vec<TaskState>> = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    // Not `-j`: squeue rejects the whole list when one id has been purged.
    let text =
        run(Command::new("squeue").args(["-t", "all", "-h", "-r", "--me", "-o", "%F|%K|%T|%r"]))?;
    for line in text.lines() {
        let f: Vec<&str> = line.split('|').collect();
        if f.len() < 4 || !ids.iter().any(|i| i == f[0]) {
            continue;
        }
        out.entry(f[0].to_string()).or_default().push(TaskState {
            state: f[2].to_string(),
            reason: f[3].to_string(),
        });
    }
    let missing: Vec<String> = ids
        .iter()
        .filter(|i| !out.contains_key(*i))
        .cloned()
        .collect();
    if !missing.is_empty() {
        // Without accounting (slurmdbd) sacct fails; those jobs stay unknown.
        if let Ok(text) = run(Command::new("sacct").args([
            "-n",
            "-P",
            "-X",
            "-o",
            "JobID,State,Reason",
            "-j",
            &missing.join(","),
        ])) {
            for line in text.lines() {
                let f: Vec<&str> = line.split('|').collect();
                if f.len() < 2 {
                    continue;
                }
                let job = f[0].split('_').next().unwrap_or(f[0]).to_string();
                if !missing.contains(&job) {
                    continue;
                }
                // `CANCELLED by 0` -> CANCELLED
                let state = f[1].split_whitespace().next().unwrap_or("").to_string();
                out.entry(job).or_default().push(TaskState {
                    state,
                    reason: f.get(2).unwrap_or(&"").to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// One summary of a job's tasks: the first failure if any, else running, else pending, else
/// completed; and how many tasks completed.
pub fn summarize(tasks: &[TaskState], expected: usize) -> (String, String, usize) {
    let done = tasks.iter().filter(|t| t.state == "COMPLETED").count();
    if let Some(t) = tasks
        .iter()
        .find(|t| is_terminal(&t.state) && t.state != "COMPLETED")
    {
        return (t.state.clone(), t.reason.clone(), done);
    }
    if let Some(t) = tasks
        .iter()
        .find(|t| matches!(t.state.as_str(), "RUNNING" | "COMPLETING" | "CONFIGURING"))
    {
        return ("RUNNING".into(), t.reason.clone(), done);
    }
    if let Some(t) = tasks.iter().find(|t| !is_terminal(&t.state)) {
        return (t.state.clone(), t.reason.clone(), done);
    }
    if done >= expected {
        ("COMPLETED".into(), String::new(), done)
    } else {
        // Some tasks are neither listed nor finished: the scheduler forgot them.
        (
            "LOST".into(),
            "the scheduler no longer knows some tasks".into(),
            done,
        )
    }
}

/// Whether `sbatch` can be found, for a clear error before anything is written.
pub fn available() -> Result<()> {
    which("sbatch").ok_or_else(|| {
        anyhow!("`sbatch` is not on PATH: `pipeline submit` needs Slurm's client commands (Debian: apt-get install slurm-client) and a cluster to talk to")
    })?;
    Ok(())
}

fn which(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(cmd))
            .find(|f| f.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(state: &str) -> TaskState {
        TaskState {
            state: state.into(),
            reason: String::new(),
        }
    }

    #[test]
    fn an_array_is_as_bad_as_its_worst_task() {
        let s = |v: &[&str], n| summarize(&v.iter().map(|x| t(x)).collect::<Vec<_>>(), n);
        assert_eq!(s(&["COMPLETED", "FAILED", "RUNNING"], 3).0, "FAILED");
        assert_eq!(
            s(&["COMPLETED", "PENDING", "RUNNING"], 3),
            ("RUNNING".into(), String::new(), 1)
        );
        assert_eq!(s(&["COMPLETED", "PENDING"], 2).0, "PENDING");
        assert_eq!(s(&["COMPLETED", "COMPLETED"], 2).0, "COMPLETED");
        // A task the scheduler no longer lists, and that did not complete.
        assert_eq!(s(&["COMPLETED"], 2).0, "LOST");
    }
}
