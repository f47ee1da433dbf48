//! `authz`: the remote policy service and the decision cache (both carried across reloads when
//! their settings did not change), and each route's `authz:` compiled into its stage.

use std::path::Path;
use std::sync::Arc;

use http::Method;

use super::auth::Callouts;
use super::key_path::KeyPath;
use super::Compiler;
use crate::authz_callout::circuit::Circuit;
use crate::authz_callout::RemoteAuthz;
use crate::config::file::{AuthzMode, AuthzSpec, RouteAuthzSpec};
use crate::config::Snapshot;
use crate::route_policy::authz::{Action, Mode, RouteAuthz, ValueSource};
use crate::route_policy::decision_cache::DecisionCache;

/// The default action of each method.
const DEFAULT_ACTIONS: [(Method, &str); 6] = [
    (Method::GET, "view"),
    (Method::HEAD, "view"),
    (Method::POST, "create"),
    (Method::PUT, "edit"),
    (Method::PATCH, "edit"),
    (Method::DELETE, "delete"),
];

impl Compiler {
    /// The decision cache and, when configured, the remote policy service client.
    pub(super) fn authz_services(
        &mut self,
        spec: &AuthzSpec,
        previous: Option<&Snapshot>,
    ) -> (Arc<DecisionCache>, Option<Arc<RemoteAuthz>>) {
        let file = self.main_path.clone();
        let at = KeyPath::root("authz");
        let c = &spec.cache;
        let fingerprint = format!("{c:?}");
        let cache = previous
            .map(|p| &p.decision_cache)
            .filter(|d| d.fingerprint == fingerprint)
            .cloned()
            .unwrap_or_else(|| {
                Arc::new(DecisionCache::new(
                    c.max_entries,
                    c.allow_ttl,
                    c.deny_ttl,
                    fingerprint,
                ))
            });
        let remote = spec.remote.as_ref().and_then(|r| {
            let at = at.field("remote");
            let before = self.errors.len();
            self.check_url(&file, &at.field("url"), &r.url);
            if r.timeout.is_zero() {
                self.error(&file, at.field("timeout"), "must be longer than 0s", None);
            }
            if r.circuit_open_for.is_zero() {
                self.error(
                    &file,
                    at.field("circuit_open_for"),
                    "must be longer than 0s",
                    None,
                );
            }
            if self.errors.len() > before {
                return None;
            }
            let fingerprint = format!("{r:?}");
            if let Some(kept) = previous
                .and_then(|p| p.remote_authz.as_ref())
                .filter(|k| k.fingerprint == fingerprint)
            {
                return Some(kept.clone());
            }
            let circuit = Circuit::new(r.circuit_failures, r.circuit_open_for);
            match RemoteAuthz::new(&r.url, r.timeout, r.pool_size, circuit, fingerprint) {
                Ok(remote) => Some(Arc::new(remote)),
                Err(e) => {
                    self.error(
                        &file,
                        at,
                        format!("cannot build the HTTP client: {e}"),
                        None,
                    );
                    None
                }
            }
        });
        (cache, remote)
    }

    /// A route's `authz:`; `None` for `mode: off`. `callouts`: which decision points exist.
    pub(super) fn route_authz(
        &mut self,
        file: &Path,
        at: &KeyPath,
        spec: &RouteAuthzSpec,
        captures: &[&str],
        callouts: Callouts,
    ) -> Option<RouteAuthz> {
        let mode = match spec.mode {
            AuthzMode::Off => return None,
            AuthzMode::Embedded => {
                if !callouts.embedded {
                    let msg = "mode embedded needs the policy service in this process";
                    let hint =
                        Some("set embedded.authz, or use mode: remote with authz.remote".into());
                    self.error(file, at.field("mode"), msg, hint);
                }
                Mode::Embedded
            }
            AuthzMode::Remote => {
                if !callouts.remote {
                    let msg = "mode remote needs authz.remote.url";
                    self.error(file, at.field("mode"), msg, None);
                }
                Mode::Remote
            }
        };
        let action = match (&spec.action, spec.actions.is_empty()) {
            (Some(_), false) => {
                self.error(
                    file,
                    at.field("action"),
                    "give action or actions, not both",
                    None,
                );
                None
            }
            (Some(a), true) if a.is_empty() => {
                self.error(file, at.field("action"), "must not be empty", None);
                None
            }
            (Some(a), true) => Some(Action::Fixed(a.clone())),
            (None, true) => Some(Action::ByMethod(
                DEFAULT_ACTIONS
                    .iter()
                    .map(|(m, a)| (m.clone(), a.to_string()))
                    .collect(),
            )),
            (None, false) => {
                let mut map = Vec::new();
                for (method, action) in &spec.actions {
                    match Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
                        Ok(m) if !action.is_empty() => map.push((m, action.clone())),
                        _ => {
                            let msg =
                                format!("{method:?} → {action:?} is not a method and an action");
                            self.error(file, at.field("actions").field(method), msg, None);
                        }
                    }
                }
                Some(Action::ByMethod(map))
            }
        };
        let resource_at = at.field("resource");
        if spec.resource.kind.is_empty() {
            self.error(file, resource_at.field("type"), "must not be empty", None);
        }
        let mut source = |key: KeyPath, text: &str| match ValueSource::parse(text) {
            Ok(ValueSource::Capture(name)) if !captures.contains(&name.as_str()) => {
                let msg = format!("the route's match.path has no {{{name}}} capture");
                let hint = Some(format!("captures: {}", captures.join(", ")));
                self.error(file, key, msg, hint);
                None
            }
            Ok(s) => Some(s),
            Err(e) => {
                self.error(file, key, e, None);
                None
            }
        };
        let resource_id = spec
            .resource
            .id
            .as_deref()
            .and_then(|t| source(resource_at.field("id"), t));
        let resource_owner = spec
            .resource
            .owner
            .as_deref()
            .and_then(|t| source(resource_at.field("owner"), t));
        let resource_attributes = spec
            .resource
            .attributes
            .iter()
            .filter_map(|(name, t)| {
                source(resource_at.field("attributes").field(name), t).map(|s| (name.clone(), s))
            })
            .collect();
        if !(400..=599).contains(&spec.failure_status) {
            let msg = "an error status: 400 to 599";
            self.error(file, at.field("failure_status"), msg, None);
        }
        Some(RouteAuthz {
            mode,
            action: action?,
            resource_type: spec.resource.kind.clone(),
            resource_id,
            resource_owner,
            resource_attributes,
            principal_attributes: spec.principal_attributes.clone(),
            fail_open: spec.fail_open,
            failure_status: spec.failure_status,
            expose_reason: spec.expose_reason,
        })
    }
}
