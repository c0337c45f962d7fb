//! The one wall clock of the broker. Kafka's timestamps (record times, commit times, segment
//! roll times, expiry deadlines) are milliseconds since the Unix epoch; every layer reads them
//! here, so a test or a later simulated clock changes one place.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the system clock is set before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
