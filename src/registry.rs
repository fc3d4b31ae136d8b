//! The stage kinds this engine knows, looked up by name: every kind's declaration, and the
//! computations it runs in its own process. The rest run in a worker process (`run/worker.rs`).

use stages::{Kind, Stage};

pub struct Registry {
    kinds: Vec<Box<dyn Kind>>,
    local: Vec<Box<dyn Stage>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        Registry {
            kinds: stages::registry::kinds(),
            local: stages::registry::local(),
        }
    }
    pub fn get(&self, kind: &str) -> Option<&dyn Kind> {
        self.kinds
            .iter()
            .find(|s| s.kind() == kind)
            .map(|s| s.as_ref())
    }
    /// The computation of `kind` when this process runs it itself.
    pub fn local(&self, kind: &str) -> Option<&dyn Stage> {
        self.local
            .iter()
            .find(|s| s.decl().kind() == kind)
            .map(|s| s.as_ref())
    }
    pub fn kinds(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|s| s.kind()).collect()
    }
    pub fn all(&self) -> impl Iterator<Item = &dyn Kind> {
        self.kinds.iter().map(|s| s.as_ref())
    }
}
