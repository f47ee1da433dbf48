//! Configuration errors, in the kit's located form ([`LocatedError`]: file, line, key path,
//! message, hint) so that `validate`, reload answers and the gateway's embedded check print them
//! as every other Gatehouse service does. Every error of a compiled file is made by
//! [`Problems::at`]; the two whole-file problems (unreadable, unparseable) by the functions below.

use std::path::{Path, PathBuf};

use gatehouse_service::{LocatedError, LocatedErrors};

/// The problems found in one file, in the order they were found: compiling goes on after the
/// first one, so the operator sees them all at once.
pub(super) struct Problems {
    file: PathBuf,
    found: Vec<LocatedError>,
}

impl Problems {
    pub(super) fn new(file: &Path) -> Self {
        Self {
            file: file.to_path_buf(),
            found: Vec::new(),
        }
    }

    /// Records a problem at `key`, a key path such as `clients[2].redirect_uris[0]`.
    pub(super) fn at(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.found.push(LocatedError::new(&self.file, key, message));
    }

    /// `Err` with every problem recorded, if there was any.
    pub(super) fn finish(self) -> Result<(), LocatedErrors> {
        if self.found.is_empty() {
            Ok(())
        } else {
            Err(LocatedErrors(self.found))
        }
    }
}

/// The file could not be read: a problem of the whole file.
pub(super) fn unreadable(file: &Path, e: &std::io::Error) -> LocatedErrors {
    LocatedError::whole_file(file, format!("cannot read: {e}")).into()
}

/// The file is not YAML of the right shape. serde_yaml's message starts with the key path when
/// it knows one (`clients[0]: unknown field ...`) and ends with " at line L column C"; the line
/// moves into the location, where `file:line:` shows it once.
pub(super) fn unparseable(file: &Path, e: &serde_yaml::Error) -> LocatedErrors {
    let line = e.location().map(|l| l.line());
    let message = e.to_string();
    let message = match (line, message.rfind(" at line ")) {
        (Some(_), Some(i)) => &message[..i],
        _ => &message,
    };
    LocatedError::whole_file(file, message).at_line(line).into()
}
