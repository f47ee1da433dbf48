//! Configuration errors. Every error is made by `Problems::at`, so changing the error type is a
//! change in this file alone.

/// One problem in the configuration, with the key path that holds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// The problems found in one file, in the order they were found: compiling goes on after the
/// first one, so the operator sees them all at once.
pub(super) struct Problems {
    file: String,
    found: Vec<ConfigError>,
}

impl Problems {
    pub(super) fn new(file: &str) -> Self {
        Self {
            file: file.to_string(),
            found: Vec::new(),
        }
    }

    /// A file with exactly one problem, found before compiling could start.
    pub(super) fn single(file: &str, key: &str, message: String) -> ConfigErrors {
        let mut problems = Self::new(file);
        problems.at(key, message);
        ConfigErrors(problems.found)
    }

    /// Records a problem at `key`, a key path such as `clients[2].redirect_uris[0]`.
    pub(super) fn at(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.found.push(ConfigError {
            file: self.file.clone(),
            key: key.into(),
            message: message.into(),
        });
    }

    /// `Err` with every problem recorded, if there was any.
    pub(super) fn finish(self) -> Result<(), ConfigErrors> {
        if self.found.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(self.found))
        }
    }
}
