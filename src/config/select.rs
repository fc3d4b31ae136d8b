//! Selecting stages: targets on the command line, and `name[axis=value]` selectors of inputs.

use super::{did_you_mean, Plan};

impl Plan {
    /// The named stages (base names select every variant) and everything upstream of them,
    /// in plan order.
    pub fn select(&self, targets: &[String]) -> Result<Vec<usize>, crate::Error> {
        if targets.is_empty() || targets.iter().any(|t| t == "all") {
            return Ok((0..self.stages.len()).collect());
        }
        let mut want = vec![false; self.stages.len()];
        let mut stack = Vec::new();
        for t in targets {
            let hits: Vec<usize> = self
                .stages
                .iter()
                .enumerate()
                .filter(|(_, s)| &s.name == t || &s.base == t)
                .map(|(i, _)| i)
                .collect();
            if hits.is_empty() {
                let names: Vec<&str> = self.stages.iter().map(|s| s.base.as_str()).collect();
                return Err(crate::Error::Target(format!(
                    "no stage `{t}` in {}{}",
                    self.file.display(),
                    did_you_mean(t, names.iter().copied())
                        .map(|h| format!(" ({h})"))
                        .unwrap_or_default()
                )));
            }
            stack.extend(hits);
        }
        while let Some(i) = stack.pop() {
            if !want[i] {
                want[i] = true;
                stack.extend(self.stages[i].inputs.iter().map(|n| self.index[n]));
            }
        }
        Ok((0..self.stages.len()).filter(|&i| want[i]).collect())
    }
}

pub(super) fn parse_selector(s: &str) -> Result<(String, Vec<(String, String)>), String> {
    let Some(open) = s.find('[') else {
        return Ok((s.trim().to_string(), Vec::new()));
    };
    if !s.ends_with(']') {
        return Err("expected `name[axis=value,...]`".into());
    }
    let mut sel = Vec::new();
    for part in s[open + 1..s.len() - 1].split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or("expected `axis=value` inside [ ]")?;
        sel.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok((s[..open].trim().to_string(), sel))
}
