//! Process-level sections: `server`, `listeners`, `limits` and `admin`. They apply at start-up
//! only, but are checked on every load so a reload reports a mistake before the next restart.

use std::net::SocketAddr;

use super::key_path::KeyPath;
use super::Compiler;
use crate::config::file::MainFile;

impl Compiler {
    pub(super) fn check_process_settings(&mut self, main: &MainFile) {
        let file = self.main_path.clone();
        if main.server.threads == 0 {
            self.error(&file, "server.threads", "must be at least 1", None);
        }
        if main.listeners.is_empty() {
            self.error(&file, "listeners", "at least one listener is needed", None);
        }
        for (i, l) in main.listeners.iter().enumerate() {
            let at = KeyPath::root("listeners").index(i);
            if l.address.parse::<SocketAddr>().is_err() {
                let msg = format!("{:?} is not an IP:port address", l.address);
                self.error(
                    &file,
                    at.field("address"),
                    msg,
                    Some("e.g. 0.0.0.0:8080".into()),
                );
            }
            if l.tls && l.redirect_https_port.is_some() {
                let msg = "a TLS listener cannot redirect to HTTPS";
                self.error(&file, at.field("redirect_https_port"), msg, None);
            }
            if l.tls && l.h2c {
                let msg = "h2c is for plain listeners; TLS listeners negotiate h2 by ALPN";
                self.error(&file, at.field("h2c"), msg, None);
            }
            if !l.tls && !l.session_tickets {
                let msg = "session_tickets is for TLS listeners";
                self.error(&file, at.field("session_tickets"), msg, None);
            }
        }
        // A zero deadline would close every connection before its first request.
        for name in main.limits.timeouts().zero() {
            let key = format!("limits.request_{name}_timeout");
            self.error(&file, key, "must be longer than 0s", None);
        }
        if main.limits.max_request_header_bytes < 1024 {
            let msg = "below 1024 bytes no browser request fits";
            self.error(&file, "limits.max_request_header_bytes", msg, None);
        }
        if main.admin.address.parse::<SocketAddr>().is_err() {
            let msg = format!("{:?} is not an IP:port address", main.admin.address);
            self.error(&file, "admin.address", msg, None);
        }
    }
}
