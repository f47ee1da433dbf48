//! Which `context` fields a policy set's conditions can read, so that a caller caching decisions
//! knows what its cache key must hold: a decision that reads `context.time` holds for one instant,
//! one that reads `context.ip` for one address.
//!
//! Found by scanning the policy files' text for `context.<name>`: conservative by design. A name
//! in a comment only makes a cache key larger; any other use of `context` (indexing it, passing it
//! whole) counts as reading every field.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextReads {
    /// Field names read as `context.<name>`.
    pub fields: BTreeSet<String>,
    /// `context` used in a way that may read any field.
    pub any: bool,
}

impl ContextReads {
    /// Whether a decision may depend on `field` of the context.
    pub fn reads(&self, field: &str) -> bool {
        self.any || self.fields.contains(field)
    }

    /// Adds what `text` (a policy file) reads.
    pub fn scan(&mut self, text: &str) {
        let bytes = text.as_bytes();
        let mut from = 0;
        while let Some(found) = text[from..].find("context") {
            let start = from + found;
            let end = start + "context".len();
            from = end;
            let before_is_ident = start > 0 && is_ident(bytes[start - 1]);
            if before_is_ident || bytes.get(end).copied().is_some_and(is_ident) {
                continue; // part of another name (`request_context`, `contexts`)
            }
            match bytes.get(end) {
                Some(b'.') => {
                    let name: String = text[end + 1..]
                        .bytes()
                        .take_while(|b| is_ident(*b))
                        .map(char::from)
                        .collect();
                    if name.is_empty() {
                        self.any = true;
                    } else {
                        self.fields.insert(name);
                    }
                }
                // `context:` is a YAML key or prose ("context: ..."), not a CEL use.
                Some(b':') => {}
                _ => self.any = true,
            }
        }
    }
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(text: &str) -> ContextReads {
        let mut r = ContextReads::default();
        r.scan(text);
        r
    }

    #[test]
    fn names_read_as_context_fields_are_collected() {
        let r = reads("condition: timeBetween(context.time, '09:00', '18:00') && inRange(context.ip, '10.0.0.0/8')");
        assert_eq!(r.fields.iter().collect::<Vec<_>>(), ["ip", "time"]);
        assert!(!r.any);
        assert!(r.reads("ip") && !r.reads("method"));
    }

    #[test]
    fn other_uses_of_context_read_everything() {
        assert!(reads("condition: context['ip'] == '1.2.3.4'").any);
        assert!(reads("condition: size(context) > 0").any);
        assert!(!reads("request_context.x and contexts.y").any);
        assert!(reads("request_context.x").fields.is_empty());
    }
}
