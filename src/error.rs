//! The engine's errors. Most failures are a message with its context chain (`Other`); the ones
//! a caller acts on have variants of their own: a pipeline file that does not plan and a target
//! that names no stage are the user's to fix (exit 2), the rest are failures (exit 1).

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline file: where, what, and a hint.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A command-line target or selector that names no stage of the plan.
    #[error("{0}")]
    Target(String),
    /// A command-line value that cannot be used as given.
    #[error("{0}")]
    Usage(String),
    /// The run index.
    #[error("run index: {0}")]
    Db(#[from] rusqlite::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Anything else, with the context it was given on the way up.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Error {
    /// The process exit code this error ends a command with.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Target(_) | Error::Usage(_) => 2,
            _ => 1,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A pipeline file that does not plan: where, what, and how to fix it.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub msg: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: error: {}",
            self.file.display(),
            self.line,
            self.msg
        )?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Why a stage's key could not be computed (an unreadable manifest, say); its dependents carry
/// the same reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);
