//! Which tables a run keeps in memory. A stage computed in the engine leaves its table in the
//! run's [`Tables`] for the stages after it, and an input read from the store stays there for
//! the next stage that reads it; each leaves after the last stage of the run that reads it
//! is done (finished, failed or skipped), so a long run holds what is still ahead of it, not
//! everything it has touched.

use std::collections::HashMap;

use super::Tables;

#[derive(Debug, Default)]
pub(super) struct Holds {
    /// Per key: the stages still to be done that read it.
    readers: HashMap<String, usize>,
}

impl Holds {
    /// `inputs`: each stage still to run, with its inputs' keys.
    pub fn new<'a>(inputs: impl IntoIterator<Item = &'a [String]>) -> Holds {
        let mut readers = HashMap::new();
        for keys in inputs {
            for k in keys {
                *readers.entry(k.clone()).or_insert(0) += 1;
            }
        }
        Holds { readers }
    }

    /// A stage that read `inputs` is done, and its own table is under `own`: what no stage
    /// still to be done reads leaves `tables`.
    pub fn done(&mut self, inputs: &[String], own: Option<&str>, tables: &Tables) {
        let mut gone: Vec<&str> = Vec::new();
        for k in inputs {
            if let Some(n) = self.readers.get_mut(k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    gone.push(k);
                }
            }
        }
        if let Some(own) = own.filter(|k| self.readers.get(*k).is_none_or(|n| *n == 0)) {
            gone.push(own);
        }
        if gone.is_empty() {
            return;
        }
        let mut t = tables.lock().unwrap_or_else(|e| e.into_inner());
        for k in gone {
            t.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::record_batch::RecordBatch;

    use super::*;

    fn table() -> Arc<RecordBatch> {
        Arc::new(RecordBatch::new_empty(Arc::new(
            arrow::datatypes::Schema::empty(),
        )))
    }

    #[test]
    fn a_table_leaves_after_its_last_reader() {
        let keys = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // b and c read a; d reads b.
        let (b_in, c_in, d_in) = (keys(&["a"]), keys(&["a"]), keys(&["b"]));
        let mut h = Holds::new([b_in.as_slice(), c_in.as_slice(), d_in.as_slice()]);
        let tables = Tables::default();
        tables.lock().unwrap().insert("a".into(), table());
        tables.lock().unwrap().insert("b".into(), table());
        h.done(&b_in, Some("b"), &tables);
        assert!(tables.lock().unwrap().contains_key("a"), "c still reads a");
        assert!(tables.lock().unwrap().contains_key("b"), "d still reads b");
        tables.lock().unwrap().insert("c".into(), table());
        h.done(&c_in, Some("c"), &tables);
        let left: Vec<String> = tables.lock().unwrap().keys().cloned().collect();
        assert_eq!(left, ["b"], "a's last reader is done; nothing reads c");
        h.done(&d_in, Some("d"), &tables);
        assert!(tables.lock().unwrap().is_empty());
    }
}
