//! gatehouse-service: the plumbing the three Gatehouse binaries share, written once.
//!
//! - [`located`]: configuration problems located by file, line and key path, and how `validate`
//!   prints them;
//! - [`reload`]: the [`Reloadable`] trait, one [`ReloadOutcome`], and the [`ReloadGate`] that
//!   serialises, counts and logs reloads;
//! - [`watcher`]: the [`FileWatcher`] background service (directory watch, debounce, SIGHUP);
//! - [`buffered`]: an HTTP listener for buffered request/answer services, with a size limit and
//!   deadlines for the header and the body (slow and lying clients);
//! - [`admin`]: the admin listener (`/metrics`, `/healthz`, `POST /reload`, plus a service's own);
//! - [`line_writer`]: a bounded queue drained by a writer thread, for access, audit and decision
//!   logs, that never blocks the caller;
//! - [`tracing_setup`]: the log subscriber every binary installs;
//! - [`client_error_lines`]: Pingora's per-connection client error lines, counted and thinned out;
//! - [`ip_text`]: an IPv4 address's text without `fmt`.

pub mod admin;
pub mod buffered;
pub mod client_error_lines;
pub mod ip_text;
pub mod line_writer;
pub mod located;
pub mod reload;
pub mod tracing_setup;
pub mod watcher;

pub use admin::{Admin, AdminApp};
pub use buffered::{
    declared_length, json_answer, BufferedApp, Handler, Refusal, Request, RequestLimits, Timeouts,
};
pub use line_writer::{LineWriter, Sink};
pub use located::{print_validation, LocatedError, LocatedErrors};
pub use reload::{ReloadGate, ReloadOutcome, Reloadable};
pub use watcher::{FileWatcher, Watched, WatchedPath};
