//! Values written into batch scripts: checked, quoted, and an injection is exit 2 at its line.

use crate::common::*;

fn submit_dry(p: &Project, args: &[&str]) -> std::process::Output {
    let mut a = vec!["submit", "--dry-run"];
    a.extend_from_slice(args);
    p.run(&a)
}

#[test]
fn injected_partitions_accounts_and_stage_names_exit_2_with_the_line() {
    let cases = [
        (
            "stages:\n  ingest: {kind: ingest, params: {root: data}}\n  probe:\n    kind: probe\n    inputs: [ingest]\n    resources: {partition: \"gpu\\ntouch /tmp/pwned\"}\n",
            ":6:",
            "partition",
        ),
        (
            "stages:\n  ingest: {kind: ingest, params: {root: data}}\n  \"probe\\ntouch /tmp/pwned\": {kind: probe, inputs: [ingest]}\n",
            ":3:",
            "stage name",
        ),
        (
            "stages:\n  ingest: {kind: ingest, params: {root: data}}\n  probe:\n    kind: probe\n    inputs: [ingest]\n    matrix: {seed: [\"1;touch /tmp/pwned\"]}\n",
            ":6:",
            "matrix axis",
        ),
    ];
    for (yaml, line, what) in cases {
        let p = Project::with_pipeline(1, yaml);
        for cmd in [&["submit", "--dry-run"][..], &["run"], &["status"]] {
            let out = p.run(cmd);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd:?} {what}: {err}");
            assert!(
                err.contains(&format!("default.yaml{line}")) && err.contains(what),
                "{what}: {err}"
            );
        }
    }
    let p = Project::new(1);
    for flag in ["--account", "--partition"] {
        let out = submit_dry(&p, &[flag, "x\ntouch /tmp/pwned"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {err}");
        assert!(err.contains(flag), "{err}");
        assert!(out.stdout.is_empty(), "no script printed");
    }
}

#[test]
fn a_script_holds_only_its_own_lines_and_quotes_what_it_passes_on() {
    let yaml = "\
stages:
  ingest: {kind: ingest, params: {root: data}}
  split:
    kind: split
    inputs: [ingest]
    params: {method: ratio}
    matrix: {seed: [1, 2]}
    resources: {partition: \"gpu,cpu\", time: \"1-00:00:00\", mem: 4G}
";
    let p = Project::with_pipeline(1, yaml);
    let out = submit_dry(
        &p,
        &[
            "--account",
            "lab-1",
            "--set",
            "split.valid_share=0.2",
            "split",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("#SBATCH --partition=gpu,cpu"), "{text}");
    assert!(text.contains("#SBATCH --account=lab-1"), "{text}");
    assert!(text.contains("'split[seed=1]'"), "{text}");
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let ok = ["#", "set -eu", "cd ", "export ", "exec ", "=="]
            .iter()
            .any(|s| line.starts_with(s));
        assert!(ok, "unexpected line in a batch script: {line:?}\n{text}");
    }
}
