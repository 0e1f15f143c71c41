//! `google.protobuf.Timestamp` ⇄ `chrono`, in one place. The platform's times travel in whole
//! seconds (the API shows RFC 3339 without fractions), so the nanoseconds are dropped on the way
//! in and never set on the way out.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

/// The time as a protobuf timestamp, in whole seconds.
pub fn to_timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

/// The same wrapped for an optional message field.
pub fn some_timestamp(t: DateTime<Utc>) -> Option<Timestamp> {
    Some(to_timestamp(t))
}

/// The time a timestamp names, in whole seconds; `None` when absent or out of chrono's range.
pub fn from_timestamp(t: Option<&Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.seconds, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_round_trips_in_whole_seconds() {
        let t = DateTime::from_timestamp(1_764_000_000, 987_654_321).expect("in range");
        let ts = to_timestamp(t);
        assert_eq!((ts.seconds, ts.nanos), (1_764_000_000, 0));
        assert_eq!(from_timestamp(Some(&ts)), DateTime::from_timestamp(1_764_000_000, 0));
    }

    #[test]
    fn absent_or_out_of_range_is_none() {
        assert_eq!(from_timestamp(None), None);
        let far = Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(from_timestamp(Some(&far)), None);
    }
}
