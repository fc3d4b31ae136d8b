//! `pipeline report`: the results of every computed stage that has any (metrics tables,
//! aggregates over seeds, figures) as one Markdown file, the same as HTML, and PNG figures.
//! Matrix variants are left out unless asked for: a 160-variant grid is read through the
//! stages that aggregate it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::db::Db;
use crate::run::Env;

/// `sets` are the command line's `--set` overrides, listed at the top so that a table is never
/// read without the settings that made it.
pub fn write(env: &Env, out: &Path, variants: bool, sets: &[String]) -> Result<i32> {
    let all: Vec<usize> = (0..env.plan.stages.len()).collect();
    let mut db = Db::open(&env.cache)?;
    let planned = env.plan_state(&mut db, &all)?;
    std::fs::create_dir_all(out.join("figures"))
        .with_context(|| format!("creating {}", out.display()))?;
    let mut md = format!("# Results of `{}`\n\n", env.pipeline_id);
    md.push_str(&provenance(env));
    if sets.is_empty() {
        md.push_str("Run with the pipeline's own settings (no `--set` overrides).\n\n");
    } else {
        let list: Vec<String> = sets.iter().map(|s| format!("`{s}`")).collect();
        let _ = writeln!(
            md,
            "Overrides of the pipeline's settings: {}\n",
            list.join(", ")
        );
    }
    let mut missing = Vec::new();
    let mut figures = 0;
    let mut runs = Runs::default();
    for p in &planned {
        let s = &env.plan.stages[p.idx];
        let stage = env.reg.get(&s.kind).expect("validated kind");
        if !stage.reports() {
            continue;
        }
        let Some(a) = &p.artifact else {
            if s.name == s.base || variants {
                missing.push(s.name.clone());
            }
            continue;
        };
        if s.name != s.base && !variants {
            runs.add(p.idx, &s.name, a);
            continue;
        }
        let t = env.store.get_table(&a.object)?;
        let _ = writeln!(md, "## {} ({})\n", s.name, s.kind);
        let _ = writeln!(
            md,
            "Key `{}`, computed {} UTC.\n",
            crate::keys::short(&a.key),
            crate::runs::utc(a.created)
        );
        if let Some(desc) = &s.desc {
            let _ = writeln!(md, "{desc}\n");
        }
        if let Some(section) = stage.markdown(&s.params, &t) {
            let _ = writeln!(md, "{section}");
        }
        figures += put_figures(out, &s.name, stage.figures(&s.params, &t), &mut md)?;
    }
    figures += runs.write(env, out, &mut md)?;
    if !missing.is_empty() {
        let _ = writeln!(md, "## Not computed yet\n\n{}\n", missing.join(", "));
    }
    crate::store::write_atomic(&out.join("report.md"), md.as_bytes())?;
    crate::store::write_atomic(&out.join("report.html"), html(&md).as_bytes())?;
    println!(
        "wrote {} and report.html ({figures} figures){}",
        out.join("report.md").display(),
        if missing.is_empty() {
            String::new()
        } else {
            format!("; {} stages not computed yet", missing.len())
        }
    );
    Ok(0)
}

/// Writes `figs` under `out/figures/` as `<stage>-<stem>.png` and links them from `md`; a
/// figure that could not be drawn says why. Returns how many were written.
fn put_figures(
    out: &Path,
    name: &str,
    figs: Vec<(String, Result<Vec<u8>, stages::StageError>)>,
    md: &mut String,
) -> Result<usize> {
    let mut n = 0;
    for (stem, png) in figs {
        let file = format!("{}-{stem}.png", file_stem(name));
        match png {
            Ok(bytes) => {
                crate::store::write_atomic(&out.join("figures").join(&file), &bytes)?;
                let _ = writeln!(md, "![{stem}](figures/{file})\n");
                n += 1;
            }
            Err(e) => {
                let _ = writeln!(md, "(figure `{stem}` not drawn: {e})\n");
            }
        }
    }
    Ok(n)
}

/// The computed matrix variants a report leaves out, grouped into the runs of one model: the
/// same stage and axes but for `seed` or `fold`. Each group gets the figures its kind draws
/// over runs (training curves overlaid, confusion matrices summed), so that the paper models'
/// curves appear without `--variants`.
#[derive(Default)]
struct Runs {
    /// (the group's name, its variants)
    groups: Vec<(String, Vec<Run>)>,
}

/// A computed variant: its plan index, name and artifact.
type Run = (usize, String, crate::db::Artifact);

impl Runs {
    fn add(&mut self, idx: usize, name: &str, a: &crate::db::Artifact) {
        let (base, axes) = stages::metrics::common::parse_variant(name);
        let rest: Vec<String> = axes
            .iter()
            .filter(|(k, _)| k != "seed" && k != "fold")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let group = if rest.is_empty() {
            base
        } else {
            format!("{base}[{}]", rest.join(","))
        };
        let entry = (idx, name.to_string(), a.clone());
        match self.groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, v)) => v.push(entry),
            None => self.groups.push((group, vec![entry])),
        }
    }

    fn write(&self, env: &Env, out: &Path, md: &mut String) -> Result<usize> {
        let mut figures = 0;
        for (group, members) in &self.groups {
            let s = &env.plan.stages[members[0].0];
            let stage = env.reg.get(&s.kind).expect("validated kind");
            let mut tables = Vec::with_capacity(members.len());
            for (_, name, a) in members {
                tables.push((name.clone(), env.store.get_table(&a.object)?));
            }
            let named: Vec<(String, &arrow::record_batch::RecordBatch)> = tables
                .iter()
                .map(|(n, t)| (n.clone(), t.as_ref()))
                .collect();
            let figs = stage.figures_over(&s.params, &named);
            if figs.is_empty() {
                continue;
            }
            let _ = writeln!(md, "## {group} ({}), {} runs\n", s.kind, members.len());
            let keys: Vec<String> = members
                .iter()
                .map(|(_, n, a)| format!("`{n}` key `{}`", crate::keys::short(&a.key)))
                .collect();
            let _ = writeln!(md, "{}.\n", keys.join(", "));
            figures += put_figures(out, group, figs, md)?;
        }
        Ok(figures)
    }
}

fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Escaped text with Markdown's inline code spans (`x`) set as `<code>`.
fn inline(s: &str) -> String {
    let mut out = String::new();
    for (k, part) in escape(s).split('`').enumerate() {
        if k % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

/// The Markdown this module writes, as HTML: headings, paragraphs, pipe tables, code blocks,
/// inline code and images, which is all it uses. The page's title is the first heading.
pub fn html(md: &str) -> String {
    let title = md
        .lines()
        .find_map(|l| l.strip_prefix("# "))
        .unwrap_or("pipeline report")
        .replace('`', "");
    let mut out = format!(
        "<!doctype html>\n<html lang=\"en\">\n<meta charset=\"utf-8\">\n<title>{}</title>\n\
         <link rel=\"icon\" href=\"data:,\">\n<style>\
         body{{font-family:sans-serif;max-width:70em;margin:2em auto}}\
         table{{border-collapse:collapse}}\
         td,th{{border:1px solid #bbb;padding:.2em .6em;text-align:right;white-space:nowrap}}\
         th{{background:#eee}}\
         code{{background:#f4f4f4;padding:0 .2em}}img{{max-width:100%}}</style>\n",
        escape(&title)
    );
    let mut in_code = false;
    let mut in_table = false;
    for line in md.lines() {
        if line.starts_with("```") {
            out.push_str(if in_code { "</pre>\n" } else { "<pre>" });
            in_code = !in_code;
            continue;
        }
        if in_code {
            out.push_str(&escape(line));
            out.push('\n');
            continue;
        }
        if let Some(row) = line.strip_prefix('|') {
            let cells: Vec<&str> = row
                .trim_end_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            if cells.iter().all(|c| c.chars().all(|ch| ch == '-')) {
                continue;
            }
            let tag = if in_table { "td" } else { "th" };
            if !in_table {
                out.push_str("<table>\n");
                in_table = true;
            }
            out.push_str("<tr>");
            for c in cells {
                let _ = write!(out, "<{tag}>{}</{tag}>", inline(c));
            }
            out.push_str("</tr>\n");
            continue;
        }
        if in_table {
            out.push_str("</table>\n");
            in_table = false;
        }
        if let Some(h) = line.strip_prefix("## ") {
            let _ = writeln!(out, "<h2>{}</h2>", inline(h));
        } else if let Some(h) = line.strip_prefix("# ") {
            let _ = writeln!(out, "<h1>{}</h1>", inline(h));
        } else if let Some(img) = line.strip_prefix("![") {
            if let Some((alt, rest)) = img.split_once("](") {
                let _ = writeln!(
                    out,
                    "<p><img alt=\"{}\" src=\"{}\"></p>",
                    escape(alt),
                    escape(rest.trim_end_matches(')'))
                );
            }
        } else if !line.trim().is_empty() {
            let _ = writeln!(out, "<p>{}</p>", inline(line));
        }
    }
    if in_table {
        out.push_str("</table>\n");
    }
    out
}

/// When and from what the report was made: the date, the tool's version, the project's git
/// revision (and whether its tree had changes), and the variables the plan used.
fn provenance(env: &Env) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&env.plan.root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let rev = match git(&["rev-parse", "HEAD"]) {
        Some(r) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            format!(
                "git {r}{}",
                if dirty {
                    " with uncommitted changes"
                } else {
                    ""
                }
            )
        }
        None => "not in a git repository".to_string(),
    };
    let mut out = format!(
        "Made {} UTC by pipeline {}; project: {rev}.\n\n",
        crate::runs::utc(crate::db::now()),
        env!("CARGO_PKG_VERSION")
    );
    if let Some(vars) = env.plan.vars.as_object().filter(|v| !v.is_empty()) {
        let list: Vec<String> = vars
            .iter()
            .map(|(k, v)| match v.as_str() {
                Some(text) => format!("`{k}` = `{text}`"),
                None => format!("`{k}` = `{v}`"),
            })
            .collect();
        let _ = writeln!(out, "Variables: {}\n", list.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn markdown_tables_become_html_tables() {
        let h = super::html(
            "# T `p`\n\n| a | b |\n|---|---|\n| 1 | <2> |\n\n![f](figures/x.png)\n\nKey `k`.\n",
        );
        assert!(h.contains("<title>T p</title>"), "{h}");
        assert!(h.contains("<h1>T <code>p</code></h1>"), "{h}");
        assert!(h.contains("<p>Key <code>k</code>.</p>"), "{h}");
        assert!(h.contains("<tr><th>a</th><th>b</th></tr>"));
        assert!(h.contains("<tr><td>1</td><td>&lt;2&gt;</td></tr>"));
        assert!(h.contains("<img alt=\"f\" src=\"figures/x.png\">"));
    }
}
