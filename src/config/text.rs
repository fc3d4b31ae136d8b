//! YAML values as JSON and text, and the spelling hints of error messages.

use std::collections::BTreeMap;

use serde_json::Value as J;
use serde_yaml_ng::Value as Y;

pub fn scalar_text(v: &J) -> String {
    match v {
        J::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn json_map(v: J) -> BTreeMap<String, J> {
    match v {
        J::Object(m) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

pub(super) fn key_str(k: &Y) -> String {
    match k {
        Y::String(s) => s.clone(),
        other => scalar_text(&to_json(other)),
    }
}

pub(super) fn to_json(v: &Y) -> J {
    match v {
        Y::Null => J::Null,
        Y::Bool(b) => J::Bool(*b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                J::from(i)
            } else if let Some(u) = n.as_u64() {
                J::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(J::Number)
                    .unwrap_or(J::Null)
            }
        }
        Y::String(s) => J::String(s.clone()),
        Y::Sequence(s) => J::Array(s.iter().map(to_json).collect()),
        Y::Mapping(m) => J::Object(m.iter().map(|(k, v)| (key_str(k), to_json(v))).collect()),
        Y::Tagged(t) => to_json(&t.value),
    }
}

/// "did you mean `x`?" when a known name is within a small edit distance.
pub fn did_you_mean<'a>(word: &str, known: impl Iterator<Item = &'a str>) -> Option<String> {
    known
        .map(|k| (levenshtein(word, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| format!("did you mean `{k}`?"))
}

pub(super) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A stage's `inputs` as written: a list (or one name), or a map from role to name(s).
pub(super) enum Written {
    List(Vec<String>),
    Roles(Vec<(String, Vec<String>)>),
}

impl Written {
    pub(super) fn of(spec: &serde_yaml_ng::Mapping) -> Option<Written> {
        let names = |v: &Y| -> Option<Vec<String>> {
            match v {
                Y::String(s) => Some(vec![s.clone()]),
                Y::Sequence(seq) => Some(seq.iter().map(|v| scalar_text(&to_json(v))).collect()),
                _ => None,
            }
        };
        match spec.get("inputs") {
            None | Some(Y::Null) => Some(Written::List(Vec::new())),
            Some(Y::Mapping(m)) => m
                .iter()
                .map(|(k, v)| Some((scalar_text(&to_json(k)), names(v)?)))
                .collect::<Option<Vec<_>>>()
                .map(Written::Roles),
            Some(v) => names(v).map(Written::List),
        }
    }

    /// Every name written, roles in the order written.
    pub(super) fn all(&self) -> Vec<&str> {
        match self {
            Written::List(l) => l.iter().map(String::as_str).collect(),
            Written::Roles(r) => r
                .iter()
                .flat_map(|(_, l)| l.iter().map(String::as_str))
                .collect(),
        }
    }
}
