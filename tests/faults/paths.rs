//! Media paths from manifests stay inside the dataset folder: `..`, absolute paths and
//! symlinks that lead out fail their clip in `ingest [media_path]`; nothing outside is hashed,
//! probed or decoded unless `allow_outside_root` says so.

use crate::common::*;

const MMSA: &str = "\
stages:
  ingest: {kind: ingest, params: {root: data}}
  probe: {kind: probe, inputs: [ingest]}
";

/// A project whose label.csv gains `rows` after its own, with a real clip outside `data/`.
fn project(yaml: &str, rows: &[&str]) -> Project {
    let p = Project::with_pipeline(3, yaml);
    let outside = p.root().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::copy(
        p.root().join("data/Raw/video_0000/0001.mp4"),
        outside.join("secret.mp4"),
    )
    .unwrap();
    // A symlink inside the dataset that points out of it, and a folder that does.
    std::os::unix::fs::symlink(
        outside.join("secret.mp4"),
        p.root().join("data/Raw/video_0000/link.mp4"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, p.root().join("data/Raw/outdir")).unwrap();
    let label = p.root().join("data/label.csv");
    let mut text = std::fs::read_to_string(&label).unwrap();
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    std::fs::write(&label, text).unwrap();
    p
}

fn escaped(p: &Project) -> Vec<(String, String)> {
    p.failed_items("ingest")
        .into_iter()
        .filter(|(_, _, r)| r.contains("outside the dataset folder"))
        .map(|(i, f, _)| (i, f))
        .collect()
}

#[test]
fn dot_dot_absolute_and_symlinked_rows_fail_their_clip_only() {
    let abs = std::env::temp_dir().join("pipeline-abs-probe");
    let abs_s = abs.to_string_lossy().to_string();
    let rows = [
        "../../outside,secret,dot dot,0.1,0.1,0.1,0.1,Neutral,train".to_string(),
        format!("{abs_s},x,absolute video id,0.1,0.1,0.1,0.1,Neutral,train"),
        "video_0000,link,symlink,0.1,0.1,0.1,0.1,Neutral,train".to_string(),
        // By name this stays in Raw/; the kernel goes up from the link's target.
        "outdir/..,outside/secret,up from a link,0.1,0.1,0.1,0.1,Neutral,train".to_string(),
    ];
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    let p = project(MMSA, &rows);
    let (code, events, _) = p.run_json(&[]);
    assert_eq!(code, 3, "{events:?}");
    let mut bad = escaped(&p);
    bad.sort();
    assert_eq!(
        bad,
        [
            ("../../outside/secret".to_string(), "media_path".to_string()),
            (format!("{abs_s}/x"), "media_path".to_string()),
            (
                "outdir/../outside/secret".to_string(),
                "media_path".to_string()
            ),
            ("video_0000/link".to_string(), "media_path".to_string()),
        ]
    );
    // The other clips finished, and nothing outside was read into the key or the probe.
    assert_eq!(stage_done(&events, "probe")["computed"], 3);
    let status = String::from_utf8(p.run(&["status", "--json"]).stdout).unwrap();
    assert!(!status.contains("secret"), "{status}");

    // Allowed on request: the `..` row and the symlink are the same real clip.
    let yaml = MMSA.replace("{root: data}", "{root: data, allow_outside_root: true}");
    std::fs::write(p.root().join("pipeline/default.yaml"), yaml).unwrap();
    let (code, _, _) = p.run_json(&[]);
    assert_eq!(code, 3, "the absolute row names no file");
    assert!(escaped(&p).is_empty());
    assert_eq!(p.failed_items("ingest").len(), 1);
    assert_eq!(p.table("probe").num_rows(), 6);
}

#[test]
fn the_csv_layout_stays_inside_its_files_folder() {
    let yaml = "\
stages:
  ingest: {kind: ingest, params: {layout: csv, root: data/clips.csv}}
";
    let p = Project::with_pipeline(2, yaml);
    let csv = "path,text,label\nRaw/video_0000/0001.mp4,fine,0.1\n/etc/passwd,system file,0.2\n../pipeline/default.yaml,beside,0.3\n";
    std::fs::write(p.root().join("data/clips.csv"), csv).unwrap();
    let (code, _, _) = p.run_json(&[]);
    assert_eq!(code, 3);
    let mut bad = escaped(&p);
    bad.sort();
    assert_eq!(
        bad,
        [
            ("../pipeline/default.yaml".into(), "media_path".into()),
            ("/etc/passwd".into(), "media_path".into())
        ]
    );
    // /etc/passwd was never hashed: the stat cache does not know it.
    let db = rusqlite::Connection::open(p.root().join("cache/index.sqlite")).unwrap();
    let n: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM stat_cache WHERE path LIKE '%passwd%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);
}
