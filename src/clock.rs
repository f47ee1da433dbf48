//! Wall-clock time as JWTs count it (RFC 7519 NumericDate): whole seconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix seconds (0 if the clock is before 1970, which no token would accept).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
