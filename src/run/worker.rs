//! Worker processes. The engine computes the kinds it links (data, features, metrics) itself;
//! a kind that needs FFmpeg, OpenCV or libtorch runs in `pipeline-worker`, one process per stage
//! run, so that the engine never loads those libraries and several runs can go side by side.
//!
//! The protocol: the engine writes the [`Job`] as JSON to the worker's stdin; the worker takes
//! the key's lock, computes, stores the objects and records the artifact exactly as the engine
//! would, and writes its reporter's calls as JSON lines to stdout, then one `result` line with
//! the [`StageRun`] (or an `error` line). Its stderr is the engine's.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use stages::Stage;

use super::{execute, Job, StageRun, Tables};
use crate::report::Reporter;

/// The worker binary: `PIPELINE_WORKER`, else `pipeline-worker` beside this executable.
pub fn worker_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PIPELINE_WORKER") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    let p = exe.with_file_name("pipeline-worker");
    if !p.is_file() {
        bail!(
            "{} not found: stages that need FFmpeg, OpenCV or libtorch run in it; build it with \
             `cargo build --release -p pipeline-worker` (`make build` does), or point \
             PIPELINE_WORKER at it",
            p.display()
        );
    }
    Ok(p)
}

/// Runs `job` in a worker process and replays its reports on `rep`.
pub fn run(job: &Job, rep: &Reporter) -> Result<StageRun> {
    let exe = worker_path()?;
    let mut cmd = Command::new(&exe);
    // The GPUs the scheduler gave the stage, and no other: none hides them all.
    cmd.arg("run")
        .env("CUDA_VISIBLE_DEVICES", job.gpus.join(","))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let mut stdin = child.stdin.take().expect("piped");
    serde_json::to_writer(&mut stdin, job)?;
    drop(stdin);
    let stderr = child.stderr.take().expect("piped");
    let mut result = None;
    let tail = std::thread::scope(|scope| -> Result<Vec<String>> {
        let tail = scope.spawn(|| stderr_tail(stderr, rep));
        for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
            let line = line.context("reading the worker's output")?;
            if let Some(r) = result_of(&line) {
                result = Some(r);
            } else if !rep.replay(&line) {
                // A library's own print: shown, not lost.
                rep.line(&line);
            }
        }
        Ok(tail.join().unwrap_or_default())
    })?;
    let status = child.wait()?;
    match result {
        Some(r) => r,
        None => Err(anyhow!(
            "{}: the worker {} without a result{}",
            job.name,
            ended(status),
            if tail.is_empty() {
                String::new()
            } else {
                format!("; the end of its log:\n{}", tail.join("\n"))
            }
        )),
    }
}

/// Passes the worker's stderr through, keeping its last lines for the message if it dies.
fn stderr_tail(stderr: std::process::ChildStderr, rep: &Reporter) -> Vec<String> {
    const KEEP: usize = 20;
    let mut tail = std::collections::VecDeque::with_capacity(KEEP);
    for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
        rep.passthrough(&line);
        if tail.len() == KEEP {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    tail.into()
}

/// How a worker process ended, in words: its exit code, or the signal that killed it and what
/// that usually means.
fn ended(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(sig)) => {
            let what = match sig {
                libc::SIGKILL => "SIGKILL: out of memory (the kernel's OOM killer) or kill -9",
                libc::SIGSEGV => "SIGSEGV: a crash in native code",
                libc::SIGABRT => "SIGABRT: an abort in native code",
                libc::SIGBUS => "SIGBUS: a bad memory access",
                libc::SIGTERM => "SIGTERM",
                libc::SIGINT => "SIGINT",
                _ => "",
            };
            if what.is_empty() {
                format!("was killed by signal {sig}")
            } else {
                format!("was killed by signal {sig} ({what})")
            }
        }
        _ => format!("ended ({status})"),
    }
}

/// A worker outlives no engine: killed (`kill -9`, a cancelled Slurm job), the engine takes its
/// workers with it, so that nothing computes or records behind the back of the run that follows.
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec the closure calls only async-signal-safe functions.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The engine may have died before the request was in place.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

fn result_of(line: &str) -> Option<Result<StageRun>> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    match v["event"].as_str()? {
        "result" => Some(
            serde_json::from_value(v["run"].clone())
                .map_err(|e| anyhow!("the worker's result: {e}")),
        ),
        "error" => Some(Err(anyhow!(
            "{}",
            v["message"].as_str().unwrap_or("the worker failed")
        ))),
        _ => None,
    }
}

/// The worker's side: reads a job from stdin, runs it with the computation of its kind among
/// `stages`, writes the result line. Returns the exit code. `threads` sets the libtorch
/// threads the job asks for before anything computes.
pub fn serve(stages: &[Box<dyn Stage>], threads: &dyn Fn(usize)) -> i32 {
    let rep = Reporter::forward();
    let res = (|| {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        let job: Job = serde_json::from_str(&text).context("reading the job")?;
        let stage = stages
            .iter()
            .find(|s| s.decl().kind() == job.kind)
            .ok_or_else(|| anyhow!("this worker has no stage kind `{}`", job.kind))?;
        let version = stage.decl().version();
        if version != job.version {
            bail!(
                "{}: the engine keyed kind `{}` at code version {} but this worker computes \
                 version {version}: the two were built from different sources; rebuild both \
                 (`make build`)",
                job.name,
                job.kind,
                job.version
            );
        }
        threads(job.threads.max(1));
        // Per-item work on the CPUs the scheduler gave this run.
        rayon::ThreadPoolBuilder::new()
            .num_threads(job.cpus.max(1))
            .build()?
            .install(|| execute(&job, stage.as_ref(), &rep, &Tables::default()))
    })();
    let (line, code) = match res {
        Ok(run) => (json!({"event": "result", "run": run}), 0),
        Err(e) => (json!({"event": "error", "message": format!("{e:#}")}), 1),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    code
}
