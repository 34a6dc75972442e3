//! Instants after a `std` duration, saturating instead of overflowing.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// `at + after`, or the latest representable instant if that overflows (a
/// budget or TTL configured as "practically forever").
pub fn after(at: DateTime<Utc>, after: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(after)
        .ok()
        .and_then(|delta| at.checked_add_signed(delta))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_and_saturates() {
        let at = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).expect("instant");
        assert_eq!(after(at, Duration::from_millis(1_500)), at + TimeDelta::milliseconds(1_500));
        assert_eq!(after(at, Duration::ZERO), at);
        assert_eq!(after(at, Duration::MAX), DateTime::<Utc>::MAX_UTC);
        // Representable as a TimeDelta, but past the last instant.
        let near_end = DateTime::<Utc>::MAX_UTC - TimeDelta::seconds(1);
        assert_eq!(after(near_end, Duration::from_secs(2)), DateTime::<Utc>::MAX_UTC);
    }
}
