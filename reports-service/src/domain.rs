//! What the use cases and the store both speak: validated queries, the store's questions and the
//! records it answers with. Values here are valid once built; no I/O, no diesel, no protobuf.

use chrono::{DateTime, Utc};

pub const MAX_RADIUS_M: u32 = 5000;
pub const MAX_LIMIT: u32 = 100;
pub const DEFAULT_LIMIT: u32 = 20;

/// Why a nearby query was refused; [`InvalidQuery::field`] names the request field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidQuery {
    #[error("must be between -90 and 90")]
    Lat,
    #[error("must be between -180 and 180")]
    Lng,
    #[error("must be between 1 and 5000")]
    Radius,
    #[error("must be between 1 and 100")]
    Limit,
}

impl InvalidQuery {
    pub fn field(&self) -> &'static str {
        match self {
            Self::Lat => "lat",
            Self::Lng => "lng",
            Self::Radius => "radius_m",
            Self::Limit => "limit",
        }
    }
}

/// A validated nearby query: a point, a radius and how many alerts at most.
#[derive(Debug, Clone, PartialEq)]
pub struct NearbyQuery {
    lat: f64,
    lng: f64,
    radius_m: u32,
    limit: u32,
}

impl NearbyQuery {
    /// `limit` 0 means the default.
    pub fn new(lat: f64, lng: f64, radius_m: u32, limit: u32) -> Result<Self, InvalidQuery> {
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(InvalidQuery::Lat);
        }
        if !lng.is_finite() || !(-180.0..=180.0).contains(&lng) {
            return Err(InvalidQuery::Lng);
        }
        if radius_m == 0 || radius_m > MAX_RADIUS_M {
            return Err(InvalidQuery::Radius);
        }
        let limit = if limit == 0 { DEFAULT_LIMIT } else { limit };
        if limit > MAX_LIMIT {
            return Err(InvalidQuery::Limit);
        }
        Ok(Self {
            lat,
            lng,
            radius_m,
            limit,
        })
    }

    pub fn lat(&self) -> f64 {
        self.lat
    }

    pub fn lng(&self) -> f64 {
        self.lng
    }

    pub fn radius_m(&self) -> u32 {
        self.radius_m
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }
}

/// A grid cell as stored in clear beside a report (`cell_lat`, `cell_lng`): hundredths of a degree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    pub lat: i32,
    pub lng: i32,
}

/// Inclusive ranges of grid cells, latitude and longitude.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellBox {
    pub lat: (i32, i32),
    pub lng: (i32, i32),
}

/// The store's question for nearby alerts, every rule already applied: which cells, which
/// statuses, since when, how many.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertFilter {
    pub cells: CellBox,
    pub statuses: &'static [&'static str],
    pub since: DateTime<Utc>,
    pub limit: u32,
}

/// A report as the alert rules need it, exact time and cell included: never shown as is.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    pub category: String,
    pub severity: String,
    pub occurred_at: DateTime<Utc>,
    pub cell: Cell,
}

/// What a stranger may see of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub category: String,
    pub severity: String,
    /// Truncated to the hour.
    pub occurred_at: DateTime<Utc>,
    /// Centre of the grid cell.
    pub lat: f64,
    pub lng: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_out_of_range_input() {
        assert_eq!(NearbyQuery::new(90.5, 0.0, 100, 0), Err(InvalidQuery::Lat));
        assert_eq!(NearbyQuery::new(f64::NAN, 0.0, 100, 0), Err(InvalidQuery::Lat));
        assert_eq!(NearbyQuery::new(0.0, -180.1, 100, 0), Err(InvalidQuery::Lng));
        assert_eq!(NearbyQuery::new(0.0, f64::INFINITY, 100, 0), Err(InvalidQuery::Lng));
        assert_eq!(NearbyQuery::new(0.0, 0.0, 0, 0), Err(InvalidQuery::Radius));
        assert_eq!(NearbyQuery::new(0.0, 0.0, 5001, 0), Err(InvalidQuery::Radius));
        assert_eq!(NearbyQuery::new(0.0, 0.0, 5000, 101), Err(InvalidQuery::Limit));
        assert_eq!(
            NearbyQuery::new(0.0, 0.0, 5000, 0).map(|q| q.limit()),
            Ok(DEFAULT_LIMIT)
        );
    }
}
