//! YAML files people write (`authz.yaml`, policies and policy tests), and their problems as the
//! kit's [`LocatedError`]: file, line and key path.
//!
//! serde_yaml reports the line of what it cannot parse. Problems found after parsing (an unknown
//! name, a duplicate) have no span left, so their line is found by searching the text for anchors.

use std::path::{Path, PathBuf};

use gatehouse_service::LocatedError;
use serde::de::DeserializeOwned;

/// A file's path and text, kept to locate problems found after parsing.
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    pub fn read(path: &Path) -> Result<Self, LocatedError> {
        std::fs::read_to_string(path)
            .map(|text| Self {
                path: path.to_path_buf(),
                text,
            })
            .map_err(|e| LocatedError::whole_file(path, format!("cannot read: {e}")))
    }

    pub fn error(
        &self,
        line: Option<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> LocatedError {
        LocatedError::new(&self.path, key, message).at_line(line)
    }

    /// Parses the text; a problem carries serde_yaml's line and the key path at fault.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, LocatedError> {
        serde_yaml::from_str(&self.text).map_err(|e| {
            let line = e.location().map(|l| l.line());
            let message = e.to_string();
            // serde_yaml appends " at line L column C": the line is kept apart ...
            let message = match message.rfind(" at line ") {
                Some(i) => &message[..i],
                None => &message,
            };
            // ... and starts with the key path when it has one (`rules[0].when: ...`).
            match message.split_once(": ") {
                Some((key, rest)) if is_key_path(key) => self.error(line, key, rest),
                _ => self.error(line, "", message),
            }
        })
    }

    /// The 1-based line found by locating each anchor in turn, from the line of the previous
    /// one on; an anchor matches a line holding all of its words.
    pub fn line_of(&self, anchors: &[&[&str]]) -> Option<usize> {
        self.line_from(0, anchors)
    }

    /// As [`Source::line_of`], starting at the 1-based line `from` (0: the start).
    pub fn line_from(&self, from: usize, anchors: &[&[&str]]) -> Option<usize> {
        let lines: Vec<&str> = self.text.lines().collect();
        let mut at = from.saturating_sub(1);
        for anchor in anchors {
            at += lines
                .get(at..)?
                .iter()
                .position(|l| anchor.iter().all(|w| l.contains(w)))?;
        }
        Some(at + 1)
    }

    /// The first line from `from` on (1-based; 0: the start) that is `name: <name>`, possibly
    /// as a list item or quoted: exact, so a rule `edit` is not found at `name: editors-view`.
    pub fn name_line(&self, from: usize, name: &str) -> Option<usize> {
        let is_it = |line: &str| {
            let entry = line.trim_start().trim_start_matches("- ");
            entry.strip_prefix("name:").map(|v| {
                v.split(" #")
                    .next()
                    .unwrap_or(v)
                    .trim()
                    .trim_matches(['"', '\''])
            }) == Some(name)
        };
        let at = from.saturating_sub(1);
        let offset = self.text.lines().skip(at).position(is_it)?;
        Some(at + offset + 1)
    }
}

/// Whether serde_yaml's message prefix is a key path such as `resource_policy.rules[0].when`.
fn is_key_path(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '?'))
}
