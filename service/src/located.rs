//! One configuration problem, located by file, line (when known) and key path, with a hint.
//! Every loader of the three services reports with it, and `validate` prints it the same way.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedError {
    pub file: PathBuf,
    /// 1-based line, when the parser or an anchor search found one.
    pub line: Option<usize>,
    /// Key path such as `routes[3].upstream`; empty for whole-file problems.
    pub key_path: String,
    pub message: String,
    pub hint: Option<String>,
}

impl LocatedError {
    pub fn new(
        file: impl Into<PathBuf>,
        key_path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            line: None,
            key_path: key_path.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn whole_file(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::new(file, "", message)
    }

    pub fn at_line(mut self, line: Option<usize>) -> Self {
        self.line = line;
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for LocatedError {
    /// `file[:line][: key.path]: message[ (hint: …)]`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key_path.is_empty() {
            write!(f, ": {}", self.key_path)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for LocatedError {}

/// Every problem found in one attempt to load a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocatedErrors(pub Vec<LocatedError>);

impl fmt::Display for LocatedErrors {
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

impl std::error::Error for LocatedErrors {}

impl From<LocatedError> for LocatedErrors {
    fn from(e: LocatedError) -> Self {
        Self(vec![e])
    }
}

impl LocatedErrors {
    pub fn messages(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

/// What `<binary> validate` prints: the summary line of a good configuration, or every problem
/// and their count. Exit 0 when valid, 1 otherwise.
pub fn print_validation(result: Result<String, LocatedErrors>) -> ExitCode {
    match result {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                println!("{e}");
            }
            println!("{} problem(s) found", errors.0.len());
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_line_key_and_hint() {
        let e = LocatedError::new("conf/a.yaml", "routes[3].upstream", "unknown upstream `x`")
            .at_line(Some(12))
            .with_hint("declare it under upstreams");
        assert_eq!(
            e.to_string(),
            "conf/a.yaml:12: routes[3].upstream: unknown upstream `x` (hint: declare it under upstreams)"
        );
        assert_eq!(
            LocatedError::whole_file("b.yaml", "cannot read").to_string(),
            "b.yaml: cannot read"
        );
    }
}
