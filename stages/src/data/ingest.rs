//! `ingest`: reads a dataset description and emits the clips table
//! (clip id, group, media path and content hash, text, labels, manifest split).
//!
//! Layouts:
//! - `mmsa`: the layout MMSA distributes CH-SIMS and CMU-MOSI/MOSEI in: `label.csv` with
//!   video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode and
//!   `Raw/<video_id>/<clip_id>.mp4`.
//! - `csv`: a plain CSV with `path,text,label,split` and optional `id`, `group`, `label_T`,
//!   `label_A`, `label_V`, `annotation`; paths are relative to the CSV's folder.
//! - `iemocap`: IEMOCAP_full_release: `Session1..5/dialog/EmoEvaluation/<dialog>.txt` (times,
//!   utterance, category), `dialog/transcriptions/<dialog>.txt` (text),
//!   `dialog/avi/DivX/<dialog>.avi` (video, cut by the utterance's times) and
//!   `sentences/wav/<dialog>/<utterance>.wav` (audio). The group is the session.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;

use crate::params::{ParamSpec, ParamType};
use crate::table::{batch, f64s, opt_strings, strings, u64s};
use crate::{resolve, FileInfo, ItemError, Kind, Output, PlanCtx, RunCtx, Stage, StageError};

pub struct Ingest;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "layout",
        ParamType::Enum(&["mmsa", "csv", "iemocap"]),
        Some("\"mmsa\""),
        "dataset layout: mmsa (CH-SIMS, CMU-MOSI/MOSEI), csv or iemocap",
    ),
    ParamSpec::new(
        "root",
        ParamType::Path,
        None,
        "dataset folder (mmsa, iemocap: IEMOCAP_full_release) or the CSV file (csv)",
    ),
    ParamSpec::new(
        "label_file",
        ParamType::Str,
        Some("\"label.csv\""),
        "mmsa: the label file inside root",
    ),
    ParamSpec::new(
        "media_ext",
        ParamType::Str,
        Some("\"mp4\""),
        "mmsa: extension of the clips under Raw/",
    ),
    ParamSpec::new(
        "allow_outside_root",
        ParamType::Bool,
        Some("false"),
        "let media paths resolve outside the dataset folder (the CSV file's folder for csv); \
         otherwise such a clip fails in [media_path]",
    )
    .keyed_if_set(),
];

/// One manifest row before media hashes are attached.
struct Row {
    line: usize,
    clip_id: String,
    group: String,
    media: PathBuf,
    text: String,
    label: Option<f64>,
    label_t: Option<f64>,
    label_a: Option<f64>,
    label_v: Option<f64>,
    annotation: Option<String>,
    mode: Option<String>,
    /// A separate audio file (IEMOCAP's per-utterance wav); otherwise audio comes from `media`.
    audio: Option<PathBuf>,
    /// The segment of `media` this clip is (IEMOCAP utterances inside a dialog video).
    span: Option<(f64, f64)>,
    speaker: Option<String>,
    emotion: Option<String>,
    /// IEMOCAP's dimensional annotation: valence, activation (arousal), dominance on 1..5.
    vad: Option<[f64; 3]>,
}

struct Manifest {
    rows: Vec<Row>,
    errors: Vec<ItemError>,
    /// Annotation files read (IEMOCAP); mmsa/csv have their one manifest.
    sources: Vec<PathBuf>,
}

impl Ingest {
    fn manifest_path(ctx_params: &crate::Params, root: &Path) -> Result<PathBuf, StageError> {
        let base = resolve(root, ctx_params.str("root")?);
        Ok(match ctx_params.str("layout")? {
            "mmsa" => base.join(ctx_params.str("label_file")?),
            _ => base,
        })
    }

    /// The manifest's clips, each one's media inside the dataset folder unless
    /// `allow_outside_root` says otherwise.
    fn read(params: &crate::Params, root: &Path) -> Result<Manifest, StageError> {
        let mut m = Self::read_layout(params, root)?;
        if !params.bool("allow_outside_root").unwrap_or(false) {
            let base = resolve(root, params.str("root")?);
            let dataset = match params.str("layout")? {
                "csv" => base.parent().unwrap_or(Path::new(".")).to_path_buf(),
                _ => base,
            };
            confine(&mut m, &dataset);
        }
        Ok(m)
    }

    fn read_layout(params: &crate::Params, root: &Path) -> Result<Manifest, StageError> {
        let layout = params.str("layout")?;
        if layout == "iemocap" {
            return iemocap::read(&resolve(root, params.str("root")?));
        }
        let file = Self::manifest_path(params, root)?;
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(true)
            .from_path(&file)
            .map_err(|e| csv_err(&file, e))?;
        let header: Vec<String> = rdr
            .byte_headers()
            .map_err(|e| csv_err(&file, e))?
            .iter()
            .map(|h| {
                String::from_utf8_lossy(h)
                    .trim()
                    .trim_start_matches('\u{feff}')
                    .to_string()
            })
            .collect();
        let cols = Columns::of(layout, &header, &file)?;
        let media_root = match layout {
            "mmsa" => file.parent().unwrap_or(Path::new(".")).join("Raw"),
            _ => file.parent().unwrap_or(Path::new(".")).to_path_buf(),
        };
        let ext = params.str("media_ext")?.to_string();
        let place = Place {
            layout,
            media_root: &media_root,
            ext: &ext,
        };

        let mut rows = Vec::new();
        let mut errors = Vec::new();
        let mut seen = HashSet::new();
        for (n, rec) in rdr.byte_records().enumerate() {
            let line = n + 2;
            let rec = match rec {
                Ok(r) => r,
                Err(e) => {
                    errors.push(ItemError::new(
                        format!("line {line}"),
                        "row",
                        format!("{}: {e}", file.display()),
                    ));
                    continue;
                }
            };
            if let Some(row) = row(&rec, line, &cols, &place, (&mut seen, &mut errors)) {
                rows.push(row);
            }
        }
        Ok(Manifest {
            rows,
            errors,
            sources: Vec::new(),
        })
    }
}

/// Column positions of a CSV-style manifest (`mmsa` or `csv` layout).
struct Columns {
    id: Option<usize>,
    group: Option<usize>,
    path: Option<usize>,
    text: usize,
    label: Option<usize>,
    lt: Option<usize>,
    la: Option<usize>,
    lv: Option<usize>,
    ann: Option<usize>,
    mode: Option<usize>,
}

impl Columns {
    fn of(layout: &str, header: &[String], file: &Path) -> Result<Columns, StageError> {
        let idx = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
        let need = |name: &str| {
            idx(name).ok_or_else(|| {
                StageError::Input(format!(
                    "{}: no `{name}` column (columns: {})",
                    file.display(),
                    header.join(",")
                ))
            })
        };
        let (id, group, path) = match layout {
            "mmsa" => (Some(need("clip_id")?), Some(need("video_id")?), None),
            _ => (idx("id"), idx("group"), Some(need("path")?)),
        };
        let text = need("text")?;
        let mode = match layout {
            "mmsa" => idx("mode"),
            _ => idx("split").or_else(|| idx("mode")),
        };
        Ok(Columns {
            id,
            group,
            path,
            text,
            label: idx("label"),
            lt: idx("label_T"),
            la: idx("label_A"),
            lv: idx("label_V"),
            ann: idx("annotation"),
            mode,
        })
    }
}

/// Where a manifest's media files are.
struct Place<'a> {
    layout: &'a str,
    media_root: &'a Path,
    ext: &'a str,
}

/// One manifest record as a clip, or None with its error recorded (and a duplicate id noted in
/// `seen`).
fn row(
    rec: &csv::ByteRecord,
    line: usize,
    cols: &Columns,
    place: &Place,
    (seen, errors): (&mut HashSet<String>, &mut Vec<ItemError>),
) -> Option<Row> {
    let raw = |c: Option<usize>| c.and_then(|c| rec.get(c));
    // Ids must be usable before we can name the clip in any other error.
    let id_of = |c: Option<usize>| -> Option<String> {
        raw(c).map(|b| String::from_utf8_lossy(b).trim().to_string())
    };
    let (clip_id, group, media) = match place.layout {
        "mmsa" => {
            let vid = id_of(cols.group).unwrap_or_default();
            let cid = id_of(cols.id).unwrap_or_default();
            let media = place
                .media_root
                .join(&vid)
                .join(format!("{cid}.{}", place.ext));
            (format!("{vid}/{cid}"), vid, media)
        }
        _ => {
            let p = id_of(cols.path).unwrap_or_default();
            let id = id_of(cols.id)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| p.clone());
            let group = id_of(cols.group).unwrap_or_default();
            (id, group, place.media_root.join(&p))
        }
    };
    let mut bad = |field: &str, reason: String| {
        errors.push(ItemError::new(clip_id.clone(), field, reason));
    };
    if clip_id.trim_matches('/').is_empty() {
        bad("clip_id", format!("line {line}: empty clip id"));
        return None;
    }
    if !seen.insert(clip_id.clone()) {
        bad("clip_id", format!("line {line}: duplicate clip id"));
        return None;
    }
    let text = match std::str::from_utf8(raw(Some(cols.text)).unwrap_or_default()) {
        Ok(t) => t.to_string(),
        Err(e) => {
            bad(
                "text",
                format!(
                    "line {line}: text is not valid UTF-8 ({e}); re-save the manifest as UTF-8"
                ),
            );
            return None;
        }
    };
    let mut num = |c: Option<usize>, field: &str| -> Result<Option<f64>, ()> {
        let Some(b) = raw(c) else { return Ok(None) };
        let s = String::from_utf8_lossy(b);
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Some(v)),
            _ => {
                bad(field, format!("line {line}: `{s}` is not a number"));
                Err(())
            }
        }
    };
    let (Ok(label), Ok(label_t), Ok(label_a), Ok(label_v)) = (
        num(cols.label, "label"),
        num(cols.lt, "label_T"),
        num(cols.la, "label_A"),
        num(cols.lv, "label_V"),
    ) else {
        return None;
    };
    let opt_text = |c: Option<usize>| {
        raw(c)
            .map(|b| String::from_utf8_lossy(b).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    Some(Row {
        line,
        clip_id,
        group,
        media,
        text,
        label,
        label_t,
        label_a,
        label_v,
        annotation: opt_text(cols.ann),
        mode: opt_text(cols.mode),
        audio: None,
        span: None,
        speaker: None,
        emotion: None,
        vad: None,
    })
}

/// Drops the clips whose media (or audio) path leaves `dataset` once `..` and symlinks are
/// resolved, each with its error: a manifest row must not make the pipeline hash, probe or
/// decode a file elsewhere on the machine.
fn confine(m: &mut Manifest, dataset: &Path) {
    let canon = dataset.canonicalize().unwrap_or_else(|_| lexical(dataset));
    let lex = lexical(dataset);
    // One realpath and one directory listing per folder (which names are symlinks), no call
    // per file: a 200k-clip manifest in a few folders costs a few system calls per folder.
    let mut folders: HashMap<PathBuf, Option<(PathBuf, HashSet<std::ffi::OsString>)>> =
        HashMap::new();
    let mut real_of = |p: &Path| -> Option<PathBuf> {
        // `..` after a symlink goes up from the link's target: only the kernel's walk says.
        if p.components().any(|c| c == std::path::Component::ParentDir) {
            return p.canonicalize().ok();
        }
        let (dir, name) = (p.parent()?, p.file_name()?);
        let (real_dir, links) = folders
            .entry(dir.to_path_buf())
            .or_insert_with(|| {
                let links = std::fs::read_dir(dir)
                    .ok()?
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
                    .map(|e| e.file_name())
                    .collect();
                Some((dir.canonicalize().ok()?, links))
            })
            .as_ref()?;
        if links.contains(name) {
            return p.canonicalize().ok();
        }
        Some(real_dir.join(name))
    };
    let mut escapes = |p: &Path| -> Option<PathBuf> {
        // A missing file inside by name fails later as missing; one outside fails here.
        let (real, inside) = match real_of(p) {
            Some(r) => {
                let inside = r.starts_with(&canon);
                (r, inside)
            }
            None => {
                let l = lexical(p);
                let inside = l.starts_with(&lex) || l.starts_with(&canon);
                (l, inside)
            }
        };
        (!inside).then_some(real)
    };
    let rows = std::mem::take(&mut m.rows);
    for r in rows {
        let out = [
            ("media_path", Some(&r.media)),
            ("audio_path", r.audio.as_ref()),
        ]
        .into_iter()
        .find_map(|(field, p)| p.and_then(|p| escapes(p).map(|real| (field, p, real))));
        match out {
            None => m.rows.push(r),
            Some((field, p, real)) => m.errors.push(ItemError::new(
                r.clip_id.clone(),
                field,
                format!(
                    "line {}: media path {} resolves to {}, outside the dataset folder {}; set \
                     `allow_outside_root: true` on the ingest stage to allow it",
                    r.line,
                    p.display(),
                    real.display(),
                    canon.display()
                ),
            )),
        }
    }
}

/// `p` with `.` and `..` resolved by name alone (for a path that does not exist).
fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

fn csv_err(file: &Path, e: csv::Error) -> StageError {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => StageError::io(file, io),
        other => StageError::Input(format!("{}: {other:?}", file.display())),
    }
}

impl Kind for Ingest {
    fn kind(&self) -> &'static str {
        "ingest"
    }
    fn version(&self) -> u32 {
        3
    }
    fn about(&self) -> &'static str {
        "read a dataset (MMSA layout, IEMOCAP sessions or plain CSV) into the clips table"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (0, 0)
    }
    fn produces(&self, _params: &crate::Params) -> Option<Vec<&'static str>> {
        // Every column a layout may give (IEMOCAP's audio, spans and dimensions among them).
        Some(vec![
            "clip_id",
            "group",
            "media_path",
            "media_hash",
            "media_bytes",
            "text",
            "label",
            "annotation",
            "mode",
            "audio_path",
            "audio_hash",
            "start_s",
            "end_s",
            "speaker",
            "emotion",
            "valence",
            "arousal",
            "dominance",
        ])
    }
    fn external_files(&self, ctx: &PlanCtx) -> Result<Vec<PathBuf>, StageError> {
        let m = Self::read(ctx.params, ctx.root)?;
        let mut files = if ctx.params.str("layout")? == "iemocap" {
            m.sources
        } else {
            vec![Self::manifest_path(ctx.params, ctx.root)?]
        };
        for r in m.rows {
            files.push(r.media);
            files.extend(r.audio);
        }
        Ok(files)
    }
}

impl Stage for Ingest {
    fn decl(&self) -> &dyn Kind {
        self
    }
    fn run(&self, ctx: &RunCtx) -> Result<Output, StageError> {
        let Manifest {
            rows, mut errors, ..
        } = Self::read(ctx.params, ctx.root)?;
        let mut kept = Vec::with_capacity(rows.len());
        let mut audio_hash = Vec::with_capacity(rows.len());
        for r in rows {
            let missing = |field: &str, p: &Path| {
                ItemError::new(
                    r.clip_id.clone(),
                    field,
                    format!(
                        "line {}: media file {} is missing or unreadable",
                        r.line,
                        p.display()
                    ),
                )
            };
            let Some(info) = ctx.files.get(&r.media).cloned().flatten() else {
                errors.push(missing("media_path", &r.media));
                continue;
            };
            let audio = match &r.audio {
                None => None,
                Some(a) => match ctx.files.get(a).cloned().flatten() {
                    Some(i) => Some(i.hash),
                    None => {
                        errors.push(missing("audio_path", a));
                        continue;
                    }
                },
            };
            audio_hash.push(audio);
            kept.push((r, info));
        }
        let table = clips_table(ctx.root, &kept, audio_hash)?;
        Ok(Output { table, errors })
    }
}

/// The clips table: one row per clip whose media files are there, paths relative to `root`.
fn clips_table(
    root: &Path,
    kept: &[(Row, FileInfo)],
    audio_hash: Vec<Option<String>>,
) -> Result<RecordBatch, StageError> {
    let rel = |p: &Path| {
        p.strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    batch(vec![
        (
            "clip_id",
            strings(
                &kept
                    .iter()
                    .map(|(r, _)| r.clip_id.as_str())
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "group",
            strings(
                &kept
                    .iter()
                    .map(|(r, _)| r.group.as_str())
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "media_path",
            strings(&kept.iter().map(|(r, _)| rel(&r.media)).collect::<Vec<_>>()),
        ),
        (
            "media_hash",
            strings(
                &kept
                    .iter()
                    .map(|(_, i)| i.hash.as_str())
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "media_bytes",
            u64s(kept.iter().map(|(_, i)| i.size).collect()),
        ),
        (
            "text",
            strings(
                &kept
                    .iter()
                    .map(|(r, _)| r.text.as_str())
                    .collect::<Vec<_>>(),
            ),
        ),
        ("label", f64s(kept.iter().map(|(r, _)| r.label).collect())),
        (
            "label_T",
            f64s(kept.iter().map(|(r, _)| r.label_t).collect()),
        ),
        (
            "label_A",
            f64s(kept.iter().map(|(r, _)| r.label_a).collect()),
        ),
        (
            "label_V",
            f64s(kept.iter().map(|(r, _)| r.label_v).collect()),
        ),
        (
            "annotation",
            opt_strings(kept.iter().map(|(r, _)| r.annotation.clone()).collect()),
        ),
        (
            "mode",
            opt_strings(kept.iter().map(|(r, _)| r.mode.clone()).collect()),
        ),
        (
            "audio_path",
            opt_strings(
                kept.iter()
                    .map(|(r, _)| r.audio.as_deref().map(rel))
                    .collect(),
            ),
        ),
        ("audio_hash", opt_strings(audio_hash)),
        (
            "start_s",
            f64s(kept.iter().map(|(r, _)| r.span.map(|s| s.0)).collect()),
        ),
        (
            "end_s",
            f64s(kept.iter().map(|(r, _)| r.span.map(|s| s.1)).collect()),
        ),
        (
            "speaker",
            opt_strings(kept.iter().map(|(r, _)| r.speaker.clone()).collect()),
        ),
        (
            "emotion",
            opt_strings(kept.iter().map(|(r, _)| r.emotion.clone()).collect()),
        ),
        (
            "valence",
            f64s(kept.iter().map(|(r, _)| r.vad.map(|v| v[0])).collect()),
        ),
        (
            "arousal",
            f64s(kept.iter().map(|(r, _)| r.vad.map(|v| v[1])).collect()),
        ),
        (
            "dominance",
            f64s(kept.iter().map(|(r, _)| r.vad.map(|v| v[2])).collect()),
        ),
    ])
}

/// IEMOCAP_full_release, read the way the corpus ships: one EmoEvaluation and one
/// transcription file per dialog, in five sessions.
mod iemocap {
    use std::collections::HashMap;

    use super::*;

    pub(super) fn read(root: &Path) -> Result<Manifest, StageError> {
        let mut rows = Vec::new();
        let mut errors = Vec::new();
        let mut sources = Vec::new();
        let mut sessions = 0;
        for s in 1..=5 {
            let sess = root.join(format!("Session{s}"));
            let eval_dir = sess.join("dialog/EmoEvaluation");
            let Ok(dir) = std::fs::read_dir(&eval_dir) else {
                continue;
            };
            sessions += 1;
            let mut dialogs: Vec<PathBuf> = dir
                .filter_map(|e| e.ok().map(|e| e.path()))
                // macOS copies of the corpus carry `._Ses...` resource forks beside each file.
                .filter(|p| {
                    p.extension().is_some_and(|e| e == "txt")
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect();
            dialogs.sort();
            for eval in dialogs {
                let dialog = eval
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let trans_file = sess
                    .join("dialog/transcriptions")
                    .join(format!("{dialog}.txt"));
                let text = match std::fs::read(&trans_file) {
                    Ok(b) => transcripts(&b),
                    Err(e) => {
                        errors.push(ItemError::new(
                            dialog.clone(),
                            "text",
                            format!("{}: {e}", trans_file.display()),
                        ));
                        HashMap::new()
                    }
                };
                let body = std::fs::read(&eval).map_err(|e| StageError::io(&eval, e))?;
                sources.push(eval.clone());
                sources.push(trans_file.clone());
                let video = sess.join("dialog/avi/DivX").join(format!("{dialog}.avi"));
                for (n, line) in String::from_utf8_lossy(&body).lines().enumerate() {
                    if !line.starts_with('[') {
                        continue;
                    }
                    let line_no = n + 1;
                    let Some(e) = parse_eval(line) else {
                        errors.push(ItemError::new(
                            format!("{dialog} line {line_no}"),
                            "emotion",
                            format!(
                                "{}:{line_no}: expected `[start - end]<TAB>turn<TAB>category<TAB>[v, a, d]`",
                                eval.display()
                            ),
                        ));
                        continue;
                    };
                    let Some(t) = text.get(e.turn) else {
                        errors.push(ItemError::new(
                            e.turn,
                            "text",
                            format!("no line for it in {}", trans_file.display()),
                        ));
                        continue;
                    };
                    // Ses01F_impro01_M003: session 01, the male actor of that session.
                    let gender = e.turn.rsplit('_').next().and_then(|t| t.chars().next());
                    let speaker = gender.map(|g| format!("{}{g}", &e.turn[..5.min(e.turn.len())]));
                    rows.push(Row {
                        line: line_no,
                        clip_id: e.turn.to_string(),
                        group: format!("Session{s}"),
                        media: video.clone(),
                        text: t.clone(),
                        label: None,
                        label_t: None,
                        label_a: None,
                        label_v: None,
                        annotation: None,
                        mode: None,
                        audio: Some(
                            sess.join("sentences/wav")
                                .join(&dialog)
                                .join(format!("{}.wav", e.turn)),
                        ),
                        span: Some((e.start, e.end)),
                        speaker,
                        emotion: Some(e.category.to_string()),
                        vad: e.vad,
                    });
                }
            }
        }
        if sessions == 0 {
            return Err(StageError::Input(format!(
                "{}: no Session1..Session5/dialog/EmoEvaluation folders; point `root` at IEMOCAP_full_release",
                root.display()
            )));
        }
        Ok(Manifest {
            rows,
            errors,
            sources,
        })
    }

    pub(super) struct Eval<'a> {
        pub start: f64,
        pub end: f64,
        pub turn: &'a str,
        pub category: &'a str,
        pub vad: Option<[f64; 3]>,
    }

    /// `[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]`
    pub(super) fn parse_eval(line: &str) -> Option<Eval<'_>> {
        let mut f = line.split('\t');
        let times = f.next()?.trim().strip_prefix('[')?.strip_suffix(']')?;
        let (a, b) = times.split_once('-')?;
        let (start, end) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        let turn = f.next()?.trim();
        let category = f.next()?.trim();
        let vad = f.next().and_then(|v| {
            let nums: Vec<f64> = v
                .trim()
                .strip_prefix('[')?
                .strip_suffix(']')?
                .split(',')
                .map(|x| x.trim().parse().ok())
                .collect::<Option<_>>()?;
            <[f64; 3]>::try_from(nums).ok()
        });
        (!turn.is_empty() && !category.is_empty() && end >= start).then_some(Eval {
            start,
            end,
            turn,
            category,
            vad,
        })
    }

    /// `Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.` -> turn -> text. Lines of other
    /// shapes (a few in the corpus are speaker notes) are skipped.
    pub(super) fn transcripts(body: &[u8]) -> HashMap<String, String> {
        String::from_utf8_lossy(body)
            .lines()
            .filter_map(|l| {
                let (turn, rest) = l.split_once(' ')?;
                let (_, text) = rest.split_once("]:")?;
                Some((turn.to_string(), text.trim().to_string()))
            })
            .collect()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_corpus_lines() {
            let e =
                parse_eval("[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]")
                    .unwrap();
            assert_eq!(
                (e.start, e.end, e.turn, e.category),
                (6.2901, 8.2357, "Ses01F_impro01_F000", "neu")
            );
            assert_eq!(e.vad, Some([2.5, 2.5, 2.5]));
            assert!(parse_eval("C-E2:\tNeutral;\t()").is_none());
            let t = transcripts(
                b"Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.\nM: [LAUGHTER]\n",
            );
            assert_eq!(t["Ses01F_impro01_F000"], "Excuse me.");
            assert_eq!(t.len(), 1);
        }
    }
}
