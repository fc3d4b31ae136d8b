//! `pipeline`: runs multimodal emotion recognition studies as a DAG of content-addressed,
//! cached stages.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use pipeline::config;
use pipeline::dag::DagFormat;
use pipeline::inspect;
use pipeline::registry::Registry;
use pipeline::run::{self, Env, RunOpts};
use pipeline::store::Store;
use pipeline::Error;
use pipeline::{maint, metrics, report, results, submit};

#[derive(Parser)]
#[command(name = "pipeline", version, about = "Content-addressed DAG runner for multimodal emotion recognition studies", long_about = None)]
struct Cli {
    /// Artifact store (default: cache/ beside pipeline/)
    #[arg(long, global = true, env = "PIPELINE_CACHE", value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Failures and the summary only
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Also why each stage runs, and every item's progress in a log
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct PipelineArgs {
    /// Pipeline file
    #[arg(
        short = 'p',
        long = "pipeline",
        value_name = "FILE",
        default_value = "pipeline/default.yaml"
    )]
    file: PathBuf,
    /// Override a param (STAGE.PARAM=VALUE) or a variable (vars.NAME=VALUE); repeatable.
    /// Reading commands (status, show, dag, report, metrics) given none take the last run's
    #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
    sets: Vec<String>,
    /// Reading commands: plan with no overrides rather than the last run's
    #[arg(long)]
    no_last_sets: bool,
}

/// The stages `export --format mmsa` reads.
#[derive(Args, Clone)]
struct MmsaArgs {
    /// mmsa: the text feature stage
    #[arg(long, value_name = "STAGE")]
    text: Option<String>,
    /// mmsa: the audio feature stage
    #[arg(long, value_name = "STAGE")]
    audio: Option<String>,
    /// mmsa: the vision feature stage
    #[arg(long, value_name = "STAGE")]
    vision: Option<String>,
    /// mmsa: the labels stage (continuous labels per target)
    #[arg(long, value_name = "STAGE", default_value = "labels")]
    labels: String,
    /// mmsa: the split stage (its first fold)
    #[arg(long, value_name = "STAGE", default_value = "split")]
    split: String,
    /// mmsa: the pickle's file name, without .pkl
    #[arg(long, default_value = "features")]
    name: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run stages (and what they depend on) that are not fresh in the cache
    Run(RunArgs),
    /// Each stage fresh / stale / never-run with the reasons, and its cluster job if submitted
    Status {
        #[arg(default_value = "all")]
        targets: Vec<String>,
        #[command(flatten)]
        p: PipelineArgs,
        /// Per stale per-clip stage, the clips that are new, changed, removed or failed
        #[arg(long)]
        clips: bool,
        #[arg(long)]
        json: bool,
    },
    /// Send stale stages to a Slurm cluster as batch jobs sharing this cache
    Submit(SubmitArgs),
    /// Run one stage whose inputs are in the cache (what a cluster job runs)
    Exec {
        stage: String,
        #[command(flatten)]
        p: PipelineArgs,
        /// Fail unless the stage's key is this one (the key it was submitted with)
        #[arg(long, value_name = "KEY")]
        expect_key: Option<String>,
        /// Compute only shard INDEX/COUNT of a per-clip stage's items, and record no artifact
        #[arg(long, value_name = "INDEX/COUNT")]
        shard: Option<run::Shard>,
        #[arg(long)]
        json: bool,
    },
    /// Draw the stage graph
    Dag {
        /// Stages whose upstream to draw (a matrix stage's base name: every variant); none: all
        targets: Vec<String>,
        /// Each matrix variant on its own (by default a matrix stage is one node, with its axes)
        #[arg(long)]
        expand: bool,
        #[command(flatten)]
        p: PipelineArgs,
        #[arg(long, value_enum, default_value_t = DagFormat::Ascii)]
        format: DagFormat,
    },
    /// Results tables (Markdown and HTML) and figures (PNG) of every computed stage that has any
    Report {
        #[command(flatten)]
        p: PipelineArgs,
        /// Output folder
        #[arg(short, long, default_value = "report")]
        out: PathBuf,
        /// Also each matrix variant, not only the stages that gather them
        #[arg(long)]
        variants: bool,
    },
    /// Metrics of each evaluated model and split, beside the majority-class baseline;
    /// `metrics diff [RUN_A [RUN_B]]` compares two runs' params and metrics
    Metrics {
        /// evaluate / linear_probe stages (all variants of a base name), or aggregate stages
        /// (the models they aggregate); none: every evaluated model. `diff` and up to two run
        /// ids from `pipeline runs` (none: the last two runs of this pipeline)
        stages: Vec<String>,
        #[command(flatten)]
        p: PipelineArgs,
        /// One JSON object per model and split:
        /// {"stage", "variant", "split", "metrics", "baseline"}
        #[arg(long)]
        json: bool,
    },
    /// A stage's key, artifact, schema, row count, failed items and first rows
    Show {
        stage: String,
        #[command(flatten)]
        p: PipelineArgs,
        /// Rows to print
        #[arg(long, default_value_t = 5)]
        rows: usize,
        /// Print the artifact's path and, for a per-clip stage stored an object per clip,
        /// each clip's object (clip id, path), and nothing else
        #[arg(long)]
        path: bool,
        #[arg(long)]
        json: bool,
    },
    /// Delete objects and items unreachable from the pipelines in pipeline/ and recent runs
    Gc {
        #[arg(long)]
        dry_run: bool,
        /// Keep what the last N runs used
        #[arg(long, default_value_t = 20)]
        keep_runs: i64,
        /// Project root whose pipeline/*.yaml are kept
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
    /// Re-hash every object and report corrupt or missing ones
    Verify {
        /// Forget corrupt or missing artifacts so the next run recomputes them
        #[arg(long)]
        fix: bool,
    },
    /// The run history: id, time, overrides, exit status, stages ran / cached / failed
    Runs {
        /// Only this pipeline file's runs
        #[arg(short = 'p', long = "pipeline", value_name = "FILE")]
        file: Option<PathBuf>,
        /// How many of the last runs
        #[arg(short = 'n', long, default_value_t = 20)]
        last: i64,
        #[arg(long)]
        json: bool,
    },
    /// A stage's data out of the cache: one table with the clip id (Parquet, CSV), or numpy
    /// arrays with an index (a feature stage's clips, padded)
    Export {
        /// The stage (not with --format mmsa)
        stage: Option<String>,
        #[command(flatten)]
        p: PipelineArgs,
        #[arg(long, value_enum, default_value_t = pipeline::export::Format::Parquet)]
        format: pipeline::export::Format,
        /// Output folder
        #[arg(short, long)]
        out: PathBuf,
        #[command(flatten)]
        mmsa: MmsaArgs,
    },
    /// List stage kinds with their params
    Kinds,
    /// Print a shell completion script: `pipeline completions bash > /etc/bash_completion.d/pipeline`
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `pipeline run`'s arguments.
#[derive(clap::Args)]
struct RunArgs {
    /// `all`, or stage names (a matrix stage's base name selects every variant)
    #[arg(default_value = "all")]
    targets: Vec<String>,
    #[command(flatten)]
    p: PipelineArgs,
    /// Stages to run at once, at most [default: the CPUs]; each also waits for the CPUs
    /// and GPUs its `resources:` ask
    #[arg(short = 'j', long)]
    jobs: Option<usize>,
    /// CPUs the stages running at once may use together [default: the machine's]
    #[arg(long)]
    cpus: Option<usize>,
    /// GPUs the stages may use, such as `0,1`, or `none` [default: CUDA_VISIBLE_DEVICES,
    /// else every GPU the NVIDIA driver lists]
    #[arg(long)]
    gpus: Option<String>,
    /// Keep running stages that do not depend on a failed one
    #[arg(long)]
    keep_going: bool,
    /// Try the failed items of the selected stages again (the others stay cached)
    #[arg(long)]
    retry_failed: bool,
    /// Show what would run and why, run nothing
    #[arg(long)]
    dry_run: bool,
    /// One JSON object per event on stdout, ending with a summary
    #[arg(long)]
    json: bool,
}

/// `pipeline submit`'s arguments.
#[derive(clap::Args)]
struct SubmitArgs {
    /// `all`, or stage names (with what they depend on)
    #[arg(default_value = "all")]
    targets: Vec<String>,
    #[command(flatten)]
    p: PipelineArgs,
    /// Partition for every job (overrides `resources.partition`)
    #[arg(long)]
    partition: Option<String>,
    /// Account to charge
    #[arg(long)]
    account: Option<String>,
    /// Job tasks queued or running at once (array tasks count one each); the rest wait for
    /// the next `submit`, or for room under --watch
    #[arg(long, value_name = "N")]
    max_jobs: Option<usize>,
    /// `sbatch` calls per second at most
    #[arg(long, value_name = "R", default_value_t = 10.0)]
    submit_rate: f64,
    /// Split per-clip stages that set no `resources.shards` into N array tasks
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    shards: Option<u64>,
    /// Print the batch scripts, submit nothing
    #[arg(long)]
    dry_run: bool,
    /// Wait for the jobs, report progress, cancel what depends on a failure
    #[arg(long)]
    watch: bool,
    #[arg(long)]
    json: bool,
}

/// Ctrl-C: say that nothing finished is lost (each stage and item is committed as it ends),
/// then end as SIGINT would. Only async-signal-safe calls here.
extern "C" fn on_interrupt(_: libc::c_int) {
    const MSG: &[u8] = b"\ninterrupted: every finished stage and item is kept in the cache; the same command goes on from there\n";
    unsafe {
        libc::write(2, MSG.as_ptr().cast(), MSG.len());
        libc::_exit(130);
    }
}

/// Output cut short by the reader (`pipeline kinds | head -1`): end quietly, as a Unix tool
/// killed by SIGPIPE would, rather than with a panic. SIGPIPE itself stays ignored, because the
/// engine writes jobs to worker processes that may be gone.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to std") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    quiet_broken_pipe();
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        );
    }
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            let damaged = match &e {
                // anyhow's own chain starts at the error itself, not at its source.
                Error::Other(a) => pipeline::db::recover_from(a.as_ref()),
                other => pipeline::db::recover_from(other),
            };
            if let Some(msg) = damaged {
                eprintln!("error: {msg}");
                return ExitCode::from(1);
            }
            match &e {
                // Already file:line: error: ..., with its hint.
                Error::Config(ce) => eprintln!("{ce}"),
                Error::Other(a) => eprintln!("error: {a:#}"),
                other => eprintln!("error: {other}"),
            }
            ExitCode::from(e.exit_code())
        }
    }
}

struct Loaded {
    plan: config::Plan,
    cache: PathBuf,
    pipeline_id: String,
}

/// Where a pipeline file's project, cache and run-history id are, before it is planned.
fn locate(cache: &Option<PathBuf>, p: &PipelineArgs) -> (PathBuf, PathBuf, String) {
    let file = absolute(&p.file);
    let root = run::project_root_of(&file);
    let cache = cache
        .as_ref()
        .map(|c| absolute(c))
        .unwrap_or_else(|| root.join("cache"));
    let pipeline_id = file
        .strip_prefix(&root)
        .unwrap_or(&file)
        .to_string_lossy()
        .into_owned();
    (root, cache, pipeline_id)
}

/// The plan lives as long as the command: it is never dropped, because freeing a plan of a
/// 100k-variant matrix one allocation at a time costs a fifth of planning it.
fn load(
    cache: &Option<PathBuf>,
    p: &PipelineArgs,
    reg: &Registry,
) -> Result<&'static Loaded, Error> {
    let (root, cache, pipeline_id) = locate(cache, p);
    let plan = config::load(&absolute(&p.file), &root, &p.sets, reg)?;
    Ok(Box::leak(Box::new(Loaded {
        plan,
        cache,
        pipeline_id,
    })))
}

/// `load` for a command that reads the cache: given no `--set`, it plans with the last run's
/// overrides of the same pipeline file, and says so, so that `status` or `show` after
/// `run --set vars.data=...` describe that run rather than the defaults.
fn load_reading(
    cache: &Option<PathBuf>,
    p: &PipelineArgs,
    reg: &Registry,
) -> Result<&'static Loaded, Error> {
    if p.sets.is_empty() && !p.no_last_sets {
        let (_, cache_dir, id) = locate(cache, p);
        if let Some((run, sets)) = pipeline::runs::last_sets(&cache_dir, &id)? {
            if !sets.is_empty() {
                let shown: Vec<String> = sets.iter().map(|s| format!("--set {s}")).collect();
                eprintln!(
                    "with run {run}'s overrides: {} (--no-last-sets plans without them)",
                    shown.join(" ")
                );
                let mut q = p.clone();
                q.sets = sets;
                return load(cache, &q, reg);
            }
        }
    }
    load(cache, p, reg)
}

fn env<'a>(l: &'a Loaded, reg: &'a Registry) -> Result<Env<'a>, Error> {
    Ok(Env {
        plan: &l.plan,
        reg,
        cache: l.cache.clone(),
        store: Store::open(&l.cache)?,
        pipeline_id: l.pipeline_id.clone(),
    })
}

fn absolute(p: &Path) -> PathBuf {
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    p.canonicalize().unwrap_or(p)
}

fn dispatch(cli: Cli) -> Result<i32, Error> {
    let reg = Registry::new();
    let verbosity = if cli.quiet {
        report::Verbosity::Quiet
    } else if cli.verbose {
        report::Verbosity::Verbose
    } else {
        report::Verbosity::Normal
    };
    match cli.cmd {
        Cmd::Run(a) => run_cmd(&cli.cache, a, &reg, verbosity),
        Cmd::Status {
            targets,
            p,
            clips,
            json,
        } => {
            let l = load_reading(&cli.cache, &p, &reg)?;
            inspect::status(&env(l, &reg)?, &targets, json, clips)
        }
        Cmd::Submit(a) => submit_cmd(&cli.cache, a, &reg),
        Cmd::Exec {
            stage,
            p,
            expect_key,
            shard,
            json,
        } => {
            let l = load(&cli.cache, &p, &reg)?;
            let e = env(l, &reg)?;
            let rep = report::Reporter::new(json).with_verbosity(verbosity);
            run::exec_stage(&e, &stage, expect_key.as_deref(), shard, &rep)
        }
        Cmd::Report { p, out, variants } => {
            let l = load_reading(&cli.cache, &p, &reg)?;
            Ok(results::write(
                &env(l, &reg)?,
                &out,
                variants,
                &l.plan.sets,
            )?)
        }
        Cmd::Metrics { stages, p, json } if stages.first().is_some_and(|s| s == "diff") => {
            metrics_diff(&cli.cache, &p, &reg, &stages[1..], json)
        }
        Cmd::Metrics { stages, p, json } => {
            let l = load_reading(&cli.cache, &p, &reg)?;
            Ok(metrics::metrics(&env(l, &reg)?, &stages, json)?)
        }
        Cmd::Runs { file, last, json } => runs(&cli.cache, file.as_deref(), last, json),
        Cmd::Dag {
            targets,
            expand,
            p,
            format,
        } => {
            let l = load_reading(&cli.cache, &p, &reg)?;
            let selected = l.plan.select(&targets)?;
            print!("{}", pipeline::dag::dag(&l.plan, &selected, expand, format));
            Ok(0)
        }
        Cmd::Show {
            stage,
            p,
            rows,
            path,
            json,
        } => {
            let l = load_reading(&cli.cache, &p, &reg)?;
            if path {
                return inspect::show_paths(&env(l, &reg)?, &stage);
            }
            inspect::show(&env(l, &reg)?, &stage, rows, json)
        }
        Cmd::Gc {
            dry_run,
            keep_runs,
            root,
        } => {
            let root = absolute(&root);
            let cache = cache_dir(&cli.cache, &root.join("cache"));
            Ok(maint::gc(&reg, &root, &cache, keep_runs, dry_run)?)
        }
        Cmd::Verify { fix } => {
            let cache = cache_dir(&cli.cache, &absolute(Path::new("cache")));
            Ok(maint::verify(&cache, fix)?)
        }
        Cmd::Export {
            stage,
            p,
            format,
            out,
            mmsa,
        } => export(&cli.cache, &p, &reg, (stage, format, &out), mmsa),
        Cmd::Completions { shell } => {
            completions(shell);
            Ok(0)
        }
        Cmd::Kinds => {
            print!("{}", stages::registry::listing(reg.all()));
            Ok(0)
        }
    }
}

/// `pipeline submit`.
fn submit_cmd(cache: &Option<PathBuf>, args: SubmitArgs, reg: &Registry) -> Result<i32, Error> {
    let SubmitArgs {
        targets,
        p,
        partition,
        account,
        max_jobs,
        submit_rate,
        shards,
        dry_run,
        watch,
        json,
    } = args;
    let l = load(cache, &p, reg)?;
    let e = env(l, reg)?;
    let opts = submit::SubmitOpts {
        targets,
        file: absolute(&p.file),
        sets: p.sets.clone(),
        partition,
        account,
        max_jobs,
        submit_rate,
        shards: shards.map(|n| n as usize),
        dry_run,
        watch,
        json,
    };
    submit::submit(&e, &opts)
}

/// `pipeline run`.
fn run_cmd(
    cache: &Option<PathBuf>,
    args: RunArgs,
    reg: &Registry,
    verbosity: report::Verbosity,
) -> Result<i32, Error> {
    let RunArgs {
        targets,
        p,
        jobs,
        cpus,
        gpus,
        keep_going,
        retry_failed,
        dry_run,
        json,
    } = args;
    let l = load(cache, &p, reg)?;
    let e = env(l, reg)?;
    let rep = report::Reporter::new(json).with_verbosity(verbosity);
    let argv = std::env::args().collect::<Vec<_>>().join(" ");
    let cpus = cpus.unwrap_or_else(run::machine_cpus).max(1);
    let opts = RunOpts {
        targets,
        jobs: jobs.unwrap_or(cpus),
        cpus,
        gpus: run::gpus::detect(gpus.as_deref())?,
        keep_going,
        retry_failed,
        dry_run,
        argv,
    };
    run::run(&e, &opts, &rep)
}

/// `pipeline export`.
fn export(
    cache: &Option<PathBuf>,
    p: &PipelineArgs,
    reg: &Registry,
    (stage, format, out): (Option<String>, pipeline::export::Format, &Path),
    m: MmsaArgs,
) -> Result<i32, Error> {
    let l = load_reading(cache, p, reg)?;
    let e = env(l, reg)?;
    if let pipeline::export::Format::Mmsa = format {
        let need = |v: Option<String>, flag: &str| {
            v.ok_or_else(|| Error::Usage(format!("--format mmsa needs {flag} STAGE")))
        };
        let st = pipeline::export::MmsaStages {
            text: need(m.text, "--text")?,
            audio: need(m.audio, "--audio")?,
            vision: need(m.vision, "--vision")?,
            labels: m.labels,
            split: m.split,
        };
        for s in [&st.text, &st.audio, &st.vision, &st.labels, &st.split] {
            if l.plan.get(s).is_none() {
                inspect::show(&e, s, 0, false)?;
            }
        }
        let (path, n) = pipeline::export::export_mmsa(&e, &st, out, &m.name)?;
        println!(
            "{}  (train {}, valid {}, test {} clips)",
            path.display(),
            n[0],
            n[1],
            n[2]
        );
        return Ok(0);
    }
    let stage = stage.ok_or_else(|| Error::Usage("export needs a STAGE".into()))?;
    if l.plan.get(&stage).is_none() {
        inspect::show(&e, &stage, 0, false)?;
    }
    for f in pipeline::export::export(&e, &stage, format, out)? {
        println!("{}", f.display());
    }
    Ok(0)
}

/// `pipeline metrics diff [A [B]]`.
fn metrics_diff(
    cache: &Option<PathBuf>,
    p: &PipelineArgs,
    reg: &Registry,
    ids: &[String],
    json: bool,
) -> Result<i32, Error> {
    let l = load(cache, p, reg)?;
    let ids = ids
        .iter()
        .map(|s| {
            s.parse::<i64>().map_err(|_| {
                Error::Usage(format!(
                    "metrics diff: `{s}` is not a run id (`pipeline runs` lists them)"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(pipeline::runs::diff(&l.cache, &l.pipeline_id, &ids, json)?)
}

/// `pipeline runs`: in the cache beside `file`'s project (else the current one's), only `file`'s
/// runs when given.
fn runs(cache: &Option<PathBuf>, file: Option<&Path>, last: i64, json: bool) -> Result<i32, Error> {
    let f = absolute(file.unwrap_or(Path::new("pipeline/default.yaml")));
    let root = run::project_root_of(&f);
    let cache = cache_dir(cache, &root.join("cache"));
    let id = file.map(|_| {
        f.strip_prefix(&root)
            .unwrap_or(&f)
            .to_string_lossy()
            .into_owned()
    });
    Ok(pipeline::runs::list(&cache, id.as_deref(), last, json)?)
}

fn completions(shell: clap_complete::Shell) {
    use std::io::Write;
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "pipeline", &mut buf);
    // A closed pipe (`| head`) ends it quietly.
    let _ = std::io::stdout().write_all(&buf);
}

/// `--cache DIR` made absolute, or `default`.
fn cache_dir(given: &Option<PathBuf>, default: &Path) -> PathBuf {
    given
        .as_ref()
        .map(|c| absolute(c))
        .unwrap_or_else(|| default.to_path_buf())
}
