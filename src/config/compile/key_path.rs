//! Key paths such as `routes[3].match.hosts[0]`, the way errors name a value inside a file.

use std::fmt;

/// A key path built step by step as the compiler walks into a section, so a nested check is
/// handed its parent's path instead of formatting the whole path again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KeyPath(String);

impl KeyPath {
    /// A top-level key of a file.
    pub(super) fn root(key: &str) -> KeyPath {
        KeyPath(key.to_string())
    }

    /// `self.name`: a map key or a struct field below this one.
    pub(super) fn field(&self, name: &str) -> KeyPath {
        KeyPath(format!("{}.{name}", self.0))
    }

    /// `self[i]`: an item of the list at this path.
    pub(super) fn index(&self, i: usize) -> KeyPath {
        KeyPath(format!("{}[{i}]", self.0))
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<KeyPath> for String {
    fn from(path: KeyPath) -> String {
        path.0
    }
}

impl From<&KeyPath> for String {
    fn from(path: &KeyPath) -> String {
        path.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::KeyPath;

    #[test]
    fn builds_the_paths_errors_print() {
        let route = KeyPath::root("routes").index(3);
        assert_eq!(route.field("upstream").to_string(), "routes[3].upstream");
        assert_eq!(
            String::from(route.field("match").field("hosts").index(0)),
            "routes[3].match.hosts[0]"
        );
        assert_eq!(
            KeyPath::root("upstreams")
                .field("api")
                .field("health_check")
                .to_string(),
            "upstreams.api.health_check"
        );
    }
}
