//! How a run talks: JSON lines for scripts, progress bars on a terminal, plain lines otherwise.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value as J};
use stages::ItemError;

use crate::keys::short;

pub enum Mode {
    Json,
    Bars,
    Plain,
    /// A worker's: every call as a JSON line on stdout, for the engine to replay
    /// ([`Reporter::replay`]).
    Forward,
}

/// The version of the `--json` event stream; every event carries it as `schema`. Bumped when
/// an event loses a field or a field changes meaning (new events and fields keep it).
pub const JSON_SCHEMA: u32 = 1;

/// How much a terminal or log hears: `-q` failures and the summary only, `-v` also why each
/// stage runs and every item's progress.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

pub struct Reporter {
    mode: Mode,
    verbosity: Verbosity,
    multi: MultiProgress,
    bars: Mutex<Vec<(String, ProgressBar)>>,
    plain_marks: Mutex<Vec<(String, usize, Instant)>>,
    /// Per stage, the last progress event's percent: JSON gets one per percent at most.
    json_marks: Mutex<std::collections::HashMap<String, usize>>,
    out: Mutex<()>,
}

impl Reporter {
    pub fn new(json: bool) -> Reporter {
        let mode = if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() && std::io::stdout().is_terminal() {
            Mode::Bars
        } else {
            Mode::Plain
        };
        Reporter {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)),
            mode,
            verbosity: Verbosity::Normal,
            bars: Mutex::new(Vec::new()),
            plain_marks: Mutex::new(Vec::new()),
            json_marks: Mutex::new(Default::default()),
            out: Mutex::new(()),
        }
    }

    pub fn with_verbosity(mut self, v: Verbosity) -> Reporter {
        self.verbosity = v;
        self
    }

    pub fn verbosity(&self) -> Verbosity {
        self.verbosity
    }

    /// Whether a line of this weight is shown (JSON shows every event).
    fn says(&self, weight: Verbosity) -> bool {
        self.verbosity >= weight
    }

    /// A worker process's reporter: see [`Mode::Forward`].
    pub fn forward() -> Reporter {
        let mut r = Reporter::new(true);
        r.mode = Mode::Forward;
        r
    }

    /// Replays one line of a worker's stdout; false if it is not a reporter event.
    pub fn replay(&self, line: &str) -> bool {
        let Ok(v) = serde_json::from_str::<J>(line) else {
            return false;
        };
        let s = |k: &str| v[k].as_str().unwrap_or_default();
        let n = |k: &str| v[k].as_u64().unwrap_or_default() as usize;
        match s("event") {
            "stage_start" => self.stage_start(
                s("stage"),
                s("key"),
                v["items"].as_u64().map(|i| i as usize),
            ),
            "progress" => self.progress(s("stage"), n("done"), n("total")),
            "epoch" => self.epoch(
                s("stage"),
                (n("epoch"), n("epochs")),
                v["valid_loss"].as_f64().unwrap_or(f64::NAN),
            ),
            "item_error" => self.item_error(
                s("stage"),
                &ItemError::new(s("item"), s("field"), s("reason")),
            ),
            "line" => self.line(s("text")),
            _ => return false,
        }
        true
    }

    pub fn is_json(&self) -> bool {
        matches!(self.mode, Mode::Json)
    }

    pub fn event(&self, mut v: J) {
        if let Some(o) = v.as_object_mut() {
            o.insert("schema".into(), JSON_SCHEMA.into());
        }
        let _g = self.out.lock().unwrap();
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{v}");
        let _ = o.flush();
    }

    /// A human line (stderr, above any progress bars).
    pub fn line(&self, s: &str) {
        match self.mode {
            Mode::Json => {}
            Mode::Forward => self.event(json!({"event": "line", "text": s})),
            Mode::Bars => self.multi.suspend(|| eprintln!("{s}")),
            Mode::Plain => {
                let _g = self.out.lock().unwrap();
                eprintln!("{s}");
            }
        }
    }

    /// A line from a worker's stderr: stays on stderr (JSON output keeps stdout to itself),
    /// above any progress bars.
    pub fn passthrough(&self, s: &str) {
        match self.mode {
            Mode::Json | Mode::Forward => {
                let _g = self.out.lock().unwrap();
                eprintln!("{s}");
            }
            _ => self.line(s),
        }
    }

    pub fn stage_start(&self, stage: &str, key: &str, items: Option<usize>) {
        match self.mode {
            Mode::Json | Mode::Forward => self
                .event(json!({"event": "stage_start", "stage": stage, "key": key, "items": items})),
            _ if !self.says(Verbosity::Normal) => {}
            Mode::Bars => {
                let pb = self.multi.add(ProgressBar::new(items.unwrap_or(0) as u64));
                let style = if items.is_some() {
                    ProgressStyle::with_template("{spinner} {prefix:<28} [{bar:30}] {pos}/{len} items  {elapsed_precise} eta {eta}")
                } else {
                    ProgressStyle::with_template("{spinner} {prefix:<28} {elapsed_precise}")
                };
                pb.set_style(
                    style
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                pb.set_prefix(stage.to_string());
                pb.enable_steady_tick(Duration::from_millis(125));
                self.bars.lock().unwrap().push((stage.to_string(), pb));
            }
            Mode::Plain => {
                let n = items.map(|n| format!(", {n} items")).unwrap_or_default();
                self.line(&format!("run    {stage} (key {}{n})", short(key)));
                self.plain_marks
                    .lock()
                    .unwrap()
                    .push((stage.to_string(), 0, Instant::now()));
            }
        }
    }

    pub fn progress(&self, stage: &str, done: usize, total: usize) {
        match self.mode {
            Mode::Json => {
                let pct = done * 100 / total.max(1);
                let mut marks = self.json_marks.lock().unwrap();
                let last = marks.insert(stage.to_string(), pct);
                if last != Some(pct) {
                    drop(marks);
                    self.event(
                        json!({"event": "progress", "stage": stage, "done": done, "total": total}),
                    );
                }
            }
            Mode::Forward => self
                .event(json!({"event": "progress", "stage": stage, "done": done, "total": total})),
            Mode::Bars => {
                if let Some((_, pb)) = self.bars.lock().unwrap().iter().find(|(s, _)| s == stage) {
                    pb.set_position(done as u64);
                }
            }
            Mode::Plain => {
                if self.says(Verbosity::Verbose) || self.mark(stage, done, total) {
                    self.line(&format!("       {stage}: {done}/{total} items"));
                }
            }
        }
    }

    /// A training's epoch `k` of `n` done, with its validation loss: a bar per running
    /// training on a terminal, a line every tenth of the way in a log, an event in JSON.
    pub fn epoch(&self, stage: &str, (k, n): (usize, usize), valid_loss: f64) {
        let loss = format!("{valid_loss:.4}");
        match self.mode {
            Mode::Json | Mode::Forward => self.event(json!({"event": "epoch", "stage": stage, "epoch": k, "epochs": n, "valid_loss": valid_loss})),
            Mode::Bars => {
                if let Some((_, pb)) = self.bars.lock().unwrap().iter().find(|(s, _)| s == stage) {
                    if pb.length() != Some(n as u64) {
                        pb.set_style(
                            ProgressStyle::with_template("{spinner} {prefix:<28} [{bar:30}] epoch {pos}/{len}  valid loss {msg}  {elapsed_precise}")
                                .unwrap_or_else(|_| ProgressStyle::default_bar())
                                .progress_chars("=> "),
                        );
                        pb.set_length(n as u64);
                    }
                    pb.set_position(k as u64);
                    pb.set_message(loss);
                }
            }
            Mode::Plain => {
                if self.mark(stage, k, n) {
                    self.line(&format!("       {stage}: epoch {k}/{n}, valid loss {loss}"));
                }
            }
        }
    }

    /// Whether a log line is due for `stage` at `done` of `total`: every tenth of the way, at
    /// most every two seconds, enough for a log file.
    fn mark(&self, stage: &str, done: usize, total: usize) -> bool {
        let mut marks = self.plain_marks.lock().unwrap();
        let Some(m) = marks.iter_mut().find(|m| m.0 == stage) else {
            return false;
        };
        let tenth = done * 10 / total.max(1);
        if tenth > m.1 && m.2.elapsed() >= Duration::from_secs(2) && done < total {
            m.1 = tenth;
            m.2 = Instant::now();
            return true;
        }
        false
    }

    pub fn item_error(&self, stage: &str, e: &ItemError) {
        match self.mode {
            Mode::Json | Mode::Forward => self.event(json!({"event": "item_error", "stage": stage, "item": e.item, "field": e.field, "reason": e.reason})),
            _ => self.line(&format!("  item {} failed in {stage} [{}]: {}", e.item, e.field, e.reason)),
        }
    }

    pub fn stage_done(&self, stage: &str, outcome: &str, detail: &J, text: &str) {
        match self.mode {
            Mode::Json | Mode::Forward => {
                let mut ev = json!({"event": "stage_done", "stage": stage, "outcome": outcome});
                if let (Some(o), Some(d)) = (ev.as_object_mut(), detail.as_object()) {
                    o.extend(d.clone());
                }
                self.event(ev);
            }
            Mode::Bars => {
                let mut bars = self.bars.lock().unwrap();
                if let Some(pos) = bars.iter().position(|(s, _)| s == stage) {
                    let (_, pb) = bars.remove(pos);
                    pb.finish_and_clear();
                    self.multi.remove(&pb);
                }
                drop(bars);
                if self.says(Verbosity::Normal) || outcome == "failed" {
                    self.line(&format!("{outcome:<6} {stage}  {text}"));
                }
            }
            Mode::Plain if self.says(Verbosity::Normal) || outcome == "failed" => {
                self.line(&format!("{outcome:<6} {stage}  {text}"))
            }
            Mode::Plain => {}
        }
    }
}
