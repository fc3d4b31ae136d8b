//! `ingest`: reads a dataset description and emits the clips table
//! (clip id, group, media path and content hash, text, labels, manifest split).
//!
//! Layouts:
//! - `mmsa`: the layout MMSA distributes CH-SIMS and CMU-MOSI/MOSEI in: `label.csv` with
//!   video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode and
//!   `Raw/<video_id>/<clip_id>.mp4`.
//! - `csv`: a plain CSV with `path,text,label,split` and optional `id`, `group`, `label_T`,
//!   `label_A`, `label_V`, `annotation`; paths are relative to the CSV's folder.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::params::{ParamSpec, ParamType};
use crate::table::{batch, f64s, opt_strings, strings, u64s};
use crate::{resolve, ItemError, Output, PlanCtx, RunCtx, Stage, StageError};

pub struct Ingest;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "layout",
        ParamType::Enum(&["mmsa", "csv"]),
        Some("\"mmsa\""),
        "dataset layout: mmsa (CH-SIMS, CMU-MOSI/MOSEI) or csv",
    ),
    ParamSpec::new(
        "root",
        ParamType::Path,
        None,
        "dataset folder (mmsa) or the CSV file (csv)",
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
}

struct Manifest {
    rows: Vec<Row>,
    errors: Vec<ItemError>,
}

impl Ingest {
    fn manifest_path(ctx_params: &crate::Params, root: &Path) -> Result<PathBuf, StageError> {
        let base = resolve(root, ctx_params.str("root")?);
        Ok(match ctx_params.str("layout")? {
            "mmsa" => base.join(ctx_params.str("label_file")?),
            _ => base,
        })
    }

    fn read(params: &crate::Params, root: &Path) -> Result<Manifest, StageError> {
        let layout = params.str("layout")?;
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
        let media_root = match layout {
            "mmsa" => file.parent().unwrap_or(Path::new(".")).join("Raw"),
            _ => file.parent().unwrap_or(Path::new(".")).to_path_buf(),
        };
        let ext = params.str("media_ext")?.to_string();
        let (c_id, c_group, c_path) = match layout {
            "mmsa" => (Some(need("clip_id")?), Some(need("video_id")?), None),
            _ => (idx("id"), idx("group"), Some(need("path")?)),
        };
        let c_text = need("text")?;
        let c_label = idx("label");
        let c_lt = idx("label_T");
        let c_la = idx("label_A");
        let c_lv = idx("label_V");
        let c_ann = idx("annotation");
        let c_mode = match layout {
            "mmsa" => idx("mode"),
            _ => idx("split").or_else(|| idx("mode")),
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
            let raw = |c: Option<usize>| c.and_then(|c| rec.get(c));
            // Ids must be usable before we can name the clip in any other error.
            let id_of = |c: Option<usize>| -> Option<String> {
                raw(c).map(|b| String::from_utf8_lossy(b).trim().to_string())
            };
            let (clip_id, group, media) = match layout {
                "mmsa" => {
                    let vid = id_of(c_group).unwrap_or_default();
                    let cid = id_of(c_id).unwrap_or_default();
                    let media = media_root.join(&vid).join(format!("{cid}.{ext}"));
                    (format!("{vid}/{cid}"), vid, media)
                }
                _ => {
                    let p = id_of(c_path).unwrap_or_default();
                    let id = id_of(c_id)
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| p.clone());
                    let group = id_of(c_group).unwrap_or_default();
                    (id, group, media_root.join(&p))
                }
            };
            let mut bad = |field: &str, reason: String| {
                errors.push(ItemError::new(clip_id.clone(), field, reason));
            };
            if clip_id.trim_matches('/').is_empty() {
                bad("clip_id", format!("line {line}: empty clip id"));
                continue;
            }
            if !seen.insert(clip_id.clone()) {
                bad("clip_id", format!("line {line}: duplicate clip id"));
                continue;
            }
            let text = match std::str::from_utf8(raw(Some(c_text)).unwrap_or_default()) {
                Ok(t) => t.to_string(),
                Err(e) => {
                    bad(
                        "text",
                        format!("line {line}: text is not valid UTF-8 ({e}); re-save the manifest as UTF-8"),
                    );
                    continue;
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
                num(c_label, "label"),
                num(c_lt, "label_T"),
                num(c_la, "label_A"),
                num(c_lv, "label_V"),
            ) else {
                continue;
            };
            let opt_text = |c: Option<usize>| {
                raw(c)
                    .map(|b| String::from_utf8_lossy(b).trim().to_string())
                    .filter(|s| !s.is_empty())
            };
            rows.push(Row {
                line,
                clip_id,
                group,
                media,
                text,
                label,
                label_t,
                label_a,
                label_v,
                annotation: opt_text(c_ann),
                mode: opt_text(c_mode),
            });
        }
        Ok(Manifest { rows, errors })
    }
}

fn csv_err(file: &Path, e: csv::Error) -> StageError {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => StageError::io(file, io),
        other => StageError::Input(format!("{}: {other:?}", file.display())),
    }
}

impl Stage for Ingest {
    fn kind(&self) -> &'static str {
        "ingest"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "read a dataset manifest (MMSA layout or plain CSV) into the clips table"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (0, 0)
    }
    fn external_files(&self, ctx: &PlanCtx) -> Result<Vec<PathBuf>, StageError> {
        let m = Self::read(ctx.params, ctx.root)?;
        let mut files = vec![Self::manifest_path(ctx.params, ctx.root)?];
        files.extend(m.rows.into_iter().map(|r| r.media));
        Ok(files)
    }
    fn run(&self, ctx: &RunCtx) -> Result<Output, StageError> {
        let Manifest { rows, mut errors } = Self::read(ctx.params, ctx.root)?;
        let mut kept = Vec::with_capacity(rows.len());
        for r in rows {
            match ctx.files.get(&r.media).cloned().flatten() {
                Some(info) => kept.push((r, info)),
                None => errors.push(ItemError::new(
                    r.clip_id,
                    "media_path",
                    format!(
                        "line {}: media file {} is missing or unreadable",
                        r.line,
                        r.media.display()
                    ),
                )),
            }
        }
        let rel = |p: &Path| {
            p.strip_prefix(ctx.root)
                .unwrap_or(p)
                .to_string_lossy()
                .into_owned()
        };
        let table = batch(vec![
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
        ])?;
        Ok(Output { table, errors })
    }
}
