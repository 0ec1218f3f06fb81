use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a config: where it is (file and YAML path), what is wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// YAML path inside that file, e.g. `routes[2].upstream`; empty for the whole file.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it, where we can tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The guardrail that decided, for a namespace's refusals (`namespace.paths`, `namespace.capture`,
    /// `namespace.quota`, …): a stable code clients can act on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'static str>,
}

/// Every problem found in one load, in file order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct ConfigErrors(pub Vec<ConfigError>);

// === impl ConfigError ===

impl ConfigError {
    pub fn new(file: &Path, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { file: file.to_path_buf(), path: path.into(), message: message.into(), hint: None, rule: None }
    }

    pub fn rule(mut self, rule: &'static str) -> Self {
        self.rule = Some(rule);
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

// === impl ConfigErrors ===

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}
