//! `paths`: the request-path normalisation rules. Every combination is valid, so there is
//! nothing to check; the settings apply from the next request after a reload.

use crate::config::file::{EscapedSlashes, PathsSpec};
use crate::request_path::PathRules;

pub(super) fn rules(spec: &PathsSpec) -> PathRules {
    PathRules {
        merge_slashes: spec.merge_slashes,
        keep_escaped_slashes: spec.escaped_slashes == EscapedSlashes::Keep,
    }
}
