//! `pipeline export --format mmsa`: three feature stages, the labels and the split as MMSA's
//! feature pickle, the file its trainers load (`featurePath` / `custom_feature`): for each of
//! `train`, `valid`, `test` a dict of `text`, `audio`, `vision` (clips x steps x dim, float32,
//! zero-padded), `audio_lengths`, `vision_lengths`, `regression_labels` (and `_T`, `_A`, `_V`
//! where the labels have them), `id` and `raw_text`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use arrow::array::{Array, Float64Array, Int64Array, StringArray};

use super::pickle::{dumps, f32_array, Py};
use super::{clip_matrices, gathered, padded};
use crate::run::Env;
use crate::store::write_atomic;

/// The stages an MMSA pickle is made of.
pub struct MmsaStages {
    pub text: String,
    pub audio: String,
    pub vision: String,
    pub labels: String,
    pub split: String,
}

/// Writes `out/NAME.pkl`; returns its path and how many clips went into each split.
pub fn export_mmsa(
    env: &Env,
    st: &MmsaStages,
    out: &Path,
    name: &str,
) -> Result<(PathBuf, [usize; 3])> {
    let feats = [&st.text, &st.audio, &st.vision]
        .iter()
        .map(|s| {
            let (t, id) = gathered(env, s)?;
            let clips = clip_matrices(&t, &id)?;
            Ok(clips.into_iter().collect::<HashMap<_, _>>())
        })
        .collect::<Result<Vec<_>>>()?;
    let (labels, _) = gathered(env, &st.labels)?;
    let targets = label_targets(&labels)?;
    let (split, _) = gathered(env, &st.split)?;
    let split = first_fold(&split)?;
    let raw_text = raw_texts(env);
    let mut dict = Vec::new();
    let mut counts = [0; 3];
    for (k, part) in ["train", "valid", "test"].into_iter().enumerate() {
        // The clips of this split that every modality and the multimodal label have.
        let ids: Vec<&String> = split
            .iter()
            .filter(|(_, s)| s == part)
            .map(|(c, _)| c)
            .filter(|c| feats.iter().all(|f| f.contains_key(*c)))
            .filter(|c| targets.get("m").is_some_and(|m| m.contains_key(*c)))
            .collect();
        counts[k] = ids.len();
        let mut d = Vec::new();
        for (key, f) in ["text", "audio", "vision"].iter().zip(&feats) {
            let order: Vec<String> = ids.iter().map(|c| c.to_string()).collect();
            let mats: Vec<_> = ids.iter().map(|c| f[*c].clone()).collect();
            let (values, longest, dim) = padded(&order, &mats)?;
            d.push((
                key.to_string(),
                f32_array(vec![ids.len(), longest, dim], &values),
            ));
            if *key != "text" {
                let lens = mats.iter().map(|m| Py::Int(m.frames as i64)).collect();
                d.push((format!("{key}_lengths"), Py::List(lens)));
            }
        }
        for (t, key) in [
            ("m", "regression_labels"),
            ("t", "regression_labels_T"),
            ("a", "regression_labels_A"),
            ("v", "regression_labels_V"),
        ] {
            if let Some(y) = targets.get(t) {
                let v: Vec<f32> = ids
                    .iter()
                    .map(|c| y.get(*c).copied().unwrap_or(0.0))
                    .collect();
                d.push((key.to_string(), f32_array(vec![ids.len()], &v)));
            }
        }
        d.push((
            "id".into(),
            Py::List(ids.iter().map(|c| Py::Str(c.to_string())).collect()),
        ));
        let texts = ids
            .iter()
            .map(|c| Py::Str(raw_text.get(*c).cloned().unwrap_or_default()))
            .collect();
        d.push(("raw_text".into(), Py::List(texts)));
        dict.push((part.to_string(), Py::Dict(d)));
    }
    if counts.iter().sum::<usize>() == 0 {
        bail!("no clip has all three modalities, a multimodal label and a split");
    }
    std::fs::create_dir_all(out)?;
    let path = out.join(format!("{name}.pkl"));
    write_atomic(&path, &dumps(&Py::Dict(dict)))?;
    Ok((path, counts))
}

/// A `labels` table's continuous label per target (m, t, a, v) and clip.
fn label_targets(t: &arrow::array::RecordBatch) -> Result<HashMap<String, HashMap<String, f32>>> {
    let col = |n: &str| {
        t.column_by_name(n)
            .ok_or_else(|| anyhow!("the labels stage has no `{n}` column (a `labels` stage?)"))
    };
    let ids = col("clip_id")?
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| anyhow!("clip_id is not text"))?;
    let target = col("target")?
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| anyhow!("target is not text"))?;
    let y = col("y")?
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| anyhow!("y is not a float"))?;
    let mut out: HashMap<String, HashMap<String, f32>> = HashMap::new();
    for r in 0..t.num_rows() {
        if y.is_null(r) {
            continue;
        }
        out.entry(target.value(r).to_string())
            .or_default()
            .insert(ids.value(r).to_string(), y.value(r) as f32);
    }
    Ok(out)
}

/// A `split` table's first fold: (clip, split) in table order.
fn first_fold(t: &arrow::array::RecordBatch) -> Result<Vec<(String, String)>> {
    let text = |n: &str| {
        t.column_by_name(n)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| anyhow!("the split stage has no text column `{n}` (a `split` stage?)"))
    };
    let (ids, split) = (text("clip_id")?, text("split")?);
    let fold = t
        .column_by_name("fold")
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>());
    let first = fold.map(|f| f.value(0));
    Ok((0..t.num_rows())
        .filter(|&r| fold.zip(first).is_none_or(|(f, k)| f.value(r) == k))
        .map(|r| (ids.value(r).to_string(), split.value(r).to_string()))
        .collect())
}

/// Each clip's transcript, from the plan's `ingest` stage where it is computed.
fn raw_texts(env: &Env) -> HashMap<String, String> {
    let Some(ingest) = env.plan.stages.iter().find(|s| s.kind == "ingest") else {
        return HashMap::new();
    };
    let Ok((t, _)) = gathered(env, &ingest.name) else {
        return HashMap::new();
    };
    let col = |n: &str| {
        t.column_by_name(n)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
    };
    let (Some(ids), Some(text)) = (col("clip_id"), col("text")) else {
        return HashMap::new();
    };
    (0..t.num_rows())
        .map(|r| (ids.value(r).to_string(), text.value(r).to_string()))
        .collect()
}
