//! `pipeline dag`: the stage graph of a plan, or of one target's upstream, as an ASCII tree,
//! Graphviz dot or Mermaid. Matrix variants are drawn once per stage with their axes unless
//! `--expand` asks for each.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Plan;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DagFormat {
    Ascii,
    Dot,
    Mermaid,
}

/// One node: a stage, or a matrix stage's variants together.
struct Node {
    name: String,
    kind: String,
    variants: usize,
    axes: BTreeSet<String>,
    /// Nodes it reads, in first-seen order.
    inputs: Vec<usize>,
}

impl Node {
    fn label(&self) -> String {
        if self.variants > 1 {
            let axes: Vec<&str> = self.axes.iter().map(String::as_str).collect();
            format!(
                "{} [{}] x{} ({})",
                self.name,
                self.kind,
                self.variants,
                axes.join(", ")
            )
        } else {
            format!("{} [{}]", self.name, self.kind)
        }
    }
}

/// The nodes of the selected stages, in plan order.
fn nodes(plan: &Plan, selected: &[usize], expand: bool) -> Vec<Node> {
    let group = |i: usize| {
        let s = &plan.stages[i];
        if expand {
            s.name.clone()
        } else {
            s.base.clone()
        }
    };
    let mut at: BTreeMap<String, usize> = BTreeMap::new();
    let mut out: Vec<Node> = Vec::new();
    for &i in selected {
        let g = group(i);
        let n = *at.entry(g.clone()).or_insert_with(|| {
            out.push(Node {
                name: g.clone(),
                kind: plan.stages[i].kind.clone(),
                variants: 0,
                axes: BTreeSet::new(),
                inputs: Vec::new(),
            });
            out.len() - 1
        });
        out[n].variants += 1;
        out[n]
            .axes
            .extend(plan.stages[i].variant.iter().map(|(a, _)| a.clone()));
    }
    for &i in selected {
        let n = at[&group(i)];
        for inp in &plan.stages[i].inputs {
            let m = at[&group(plan.index[inp])];
            if !out[n].inputs.contains(&m) {
                out[n].inputs.push(m);
            }
        }
    }
    out
}

pub fn dag(plan: &Plan, selected: &[usize], expand: bool, format: DagFormat) -> String {
    let nodes = nodes(plan, selected, expand);
    match format {
        DagFormat::Ascii => ascii(&nodes),
        DagFormat::Dot => {
            let mut out = String::from(
                "digraph pipeline {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n",
            );
            for (i, n) in nodes.iter().enumerate() {
                out.push_str(&format!(
                    "  s{i} [label=\"{}\"];\n",
                    n.label().replace('"', "\\\"")
                ));
            }
            for (i, n) in nodes.iter().enumerate() {
                for m in &n.inputs {
                    out.push_str(&format!("  s{m} -> s{i};\n"));
                }
            }
            out.push_str("}\n");
            out
        }
        DagFormat::Mermaid => {
            let mut out = String::from("flowchart LR\n");
            for (i, n) in nodes.iter().enumerate() {
                out.push_str(&format!(
                    "  s{i}[\"{}\"]\n",
                    n.label().replace('"', "#quot;")
                ));
            }
            for (i, n) in nodes.iter().enumerate() {
                for m in &n.inputs {
                    out.push_str(&format!("  s{m} --> s{i}\n"));
                }
            }
            out
        }
    }
}

/// A tree per end stage (one nothing selected reads), its inputs below it; a stage drawn
/// already is named again with `(above)` and not drawn twice.
fn ascii(nodes: &[Node]) -> String {
    let read: BTreeSet<usize> = nodes
        .iter()
        .flat_map(|n| n.inputs.iter().copied())
        .collect();
    let mut out = String::new();
    let mut drawn = vec![false; nodes.len()];
    for root in (0..nodes.len()).filter(|i| !read.contains(i)) {
        out.push_str(&nodes[root].label());
        out.push('\n');
        drawn[root] = true;
        branch(nodes, root, "", &mut drawn, &mut out);
    }
    out
}

fn branch(nodes: &[Node], at: usize, prefix: &str, drawn: &mut [bool], out: &mut String) {
    let inputs = &nodes[at].inputs;
    for (k, &m) in inputs.iter().enumerate() {
        let last = k + 1 == inputs.len();
        let (tee, more) = if last {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        if drawn[m] && !nodes[m].inputs.is_empty() {
            out.push_str(&format!("{prefix}{tee}{} (above)\n", nodes[m].name));
            continue;
        }
        out.push_str(&format!("{prefix}{tee}{}\n", nodes[m].label()));
        drawn[m] = true;
        branch(nodes, m, &format!("{prefix}{more}"), drawn, out);
    }
}
