//! Dependency order of the expanded stages, and cycles named with their lines.

use std::collections::HashMap;

use super::{ConfigError, Ctx, StageDef};

pub(super) fn toposort(cx: &Ctx, stages: Vec<StageDef>) -> Result<Vec<StageDef>, ConfigError> {
    let pos: HashMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut state = vec![0u8; stages.len()]; // 0 new, 1 on stack, 2 done
    let mut order = Vec::with_capacity(stages.len());
    fn visit(
        i: usize,
        stages: &[StageDef],
        pos: &HashMap<&str, usize>,
        state: &mut [u8],
        order: &mut Vec<usize>,
        path: &mut Vec<usize>,
    ) -> Result<(), Vec<usize>> {
        if state[i] == 2 {
            return Ok(());
        }
        if state[i] == 1 {
            let start = path.iter().position(|&p| p == i).unwrap_or(0);
            let mut cycle = path[start..].to_vec();
            cycle.push(i);
            return Err(cycle);
        }
        state[i] = 1;
        path.push(i);
        for inp in &stages[i].inputs {
            visit(pos[inp.as_str()], stages, pos, state, order, path)?;
        }
        path.pop();
        state[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..stages.len() {
        let mut path = Vec::new();
        if let Err(cycle) = visit(i, &stages, &pos, &mut state, &mut order, &mut path) {
            let names: Vec<&str> = cycle.iter().map(|&c| stages[c].name.as_str()).collect();
            let first = &stages[cycle[0]];
            return Err(cx.err(
                &["stages", &first.base, "inputs"],
                format!("cycle: {}", names.join(" -> ")),
                Some("a stage cannot depend on its own output; remove one of these inputs".into()),
            ));
        }
    }
    let mut slots: Vec<Option<StageDef>> = stages.into_iter().map(Some).collect();
    Ok(order
        .into_iter()
        .map(|i| slots[i].take().expect("each once"))
        .collect())
}
