//! The stage kinds this binary knows, looked up by name.

use stages::Stage;

pub struct Registry {
    stages: Vec<Box<dyn Stage>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        Registry {
            stages: stages::registry::registry(),
        }
    }
    pub fn get(&self, kind: &str) -> Option<&dyn Stage> {
        self.stages
            .iter()
            .find(|s| s.kind() == kind)
            .map(|s| s.as_ref())
    }
    pub fn kinds(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.kind()).collect()
    }
    pub fn all(&self) -> impl Iterator<Item = &dyn Stage> {
        self.stages.iter().map(|s| s.as_ref())
    }
}
