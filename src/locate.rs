//! Finds the line of a key path in YAML text, so validation errors can point at the line the
//! researcher wrote. serde's YAML value tree carries no positions; indentation is enough for
//! block-style pipelines, and flow-style maps fall back to the line of their parent key.

/// 1-based line of `path` (e.g. ["stages", "train", "params", "lr"]), or of its longest
/// prefix that can be found.
pub fn line_of(text: &str, path: &[&str]) -> usize {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut best = (0usize, 1usize); // (matched depth, line)
    for (n, raw) in text.lines().enumerate() {
        let line = strip_comment(raw);
        if line.trim().is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let body = line.trim_start().trim_start_matches("- ");
        let Some((key, rest)) = split_key(body) else {
            continue;
        };
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_string()));
        let depth = stack
            .iter()
            .zip(path)
            .take_while(|((_, k), p)| k == *p || *k == escaped(p))
            .count();
        if depth == stack.len() && depth > best.0 {
            best = (depth, n + 1);
            if depth == path.len() {
                return n + 1;
            }
            // `params: {lr: 1, seed: 2}`: the child key sits on this line.
            if depth + 1 == path.len() && rest.contains(&format!("{}:", path[depth])) {
                return n + 1;
            }
        }
    }
    best.1
}

/// A key as a double-quoted YAML scalar spells it (`"a\nb"` for a key with a newline).
fn escaped(key: &str) -> String {
    let d = format!("{key:?}");
    d[1..d.len() - 1].to_string()
}

fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (c, quote) {
            ('"' | '\'', None) => quote = Some(c),
            (q, Some(open)) if q == open => quote = None,
            ('#', None) if i == 0 || line[..i].ends_with(char::is_whitespace) => return &line[..i],
            _ => {}
        }
    }
    line
}

fn split_key(body: &str) -> Option<(&str, &str)> {
    let idx = body.find(':')?;
    let key = body[..idx].trim().trim_matches(|c| c == '"' || c == '\'');
    let rest = &body[idx + 1..];
    if key.is_empty() || key.contains(' ') && !body.starts_with(['"', '\'']) {
        return None;
    }
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    Some((key, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const Y: &str = "vars:\n  seed: 1\nstages:\n  ingest:\n    kind: ingest\n    params:\n      root: data # the data\n  split:\n    kind: split\n    params: {method: ratio, seed: 2}\n";

    #[test]
    fn finds_block_and_flow_keys() {
        assert_eq!(line_of(Y, &["stages", "ingest", "kind"]), 5);
        assert_eq!(line_of(Y, &["stages", "ingest", "params", "root"]), 7);
        assert_eq!(line_of(Y, &["stages", "split", "params", "seed"]), 10);
        assert_eq!(line_of(Y, &["stages", "split"]), 8);
        // unknown leaf: the deepest known parent
        assert_eq!(line_of(Y, &["stages", "split", "inputs"]), 8);
        assert_eq!(line_of(Y, &["vars", "seed"]), 2);
    }
}
