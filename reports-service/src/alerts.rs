//! Nearby alerts: which reports may be shown to strangers, and how coarsely. Pure rules.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// Statuses a moderator has accepted; `submitted` (unreviewed) and `dismissed` are never shown.
pub const VISIBLE_STATUSES: [&str; 2] = ["under_review", "resolved"];
/// How far back alerts reach.
pub const ALERT_WINDOW: TimeDelta = TimeDelta::days(30);
pub const MAX_RADIUS_M: u32 = 5000;
pub const MAX_LIMIT: u32 = 100;
pub const DEFAULT_LIMIT: u32 = 20;
/// Grid cells per degree: 100 gives cells of 0.01 degree (about 1.1 km of latitude).
const CELLS_PER_DEGREE: f64 = 100.0;
const METERS_PER_DEGREE_LAT: f64 = 111_320.0;

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

/// A validated nearby query.
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

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Inclusive ranges of grid cells (latitude, longitude) that cover the circle.
    /// Near the poles and across the antimeridian the box is clamped, never wrapped: alerts there
    /// may be missed, never shown from the wrong side of the world.
    pub fn cell_box(&self) -> ((i32, i32), (i32, i32)) {
        let dlat = f64::from(self.radius_m) / METERS_PER_DEGREE_LAT;
        let cos = self.lat.to_radians().cos().max(0.01);
        let dlng = (dlat / cos).min(180.0);
        let cell = |deg: f64| (deg * CELLS_PER_DEGREE).round() as i32;
        (
            (cell((self.lat - dlat).max(-90.0)), cell((self.lat + dlat).min(90.0))),
            (cell((self.lng - dlng).max(-180.0)), cell((self.lng + dlng).min(180.0))),
        )
    }
}

/// A row as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    pub category: String,
    pub severity: String,
    pub occurred_at: DateTime<Utc>,
    pub cell_lat: i32,
    pub cell_lng: i32,
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

impl From<AlertRow> for Alert {
    fn from(row: AlertRow) -> Self {
        Self {
            category: row.category,
            severity: row.severity,
            occurred_at: row
                .occurred_at
                .duration_trunc(TimeDelta::hours(1))
                .unwrap_or(row.occurred_at),
            lat: f64::from(row.cell_lat) / CELLS_PER_DEGREE,
            lng: f64::from(row.cell_lng) / CELLS_PER_DEGREE,
        }
    }
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

    #[test]
    fn box_covers_the_radius_in_cells() {
        // 1 km around a point in Berlin: about 0.009 degree of latitude, 0.015 of longitude.
        let q = NearbyQuery::new(52.52, 13.405, 1000, 0).expect("valid");
        let ((lat_lo, lat_hi), (lng_lo, lng_hi)) = q.cell_box();
        assert_eq!((lat_lo, lat_hi), (5251, 5253));
        assert_eq!((lng_lo, lng_hi), (1339, 1342));
    }

    #[test]
    fn box_is_clamped_at_the_poles_and_antimeridian() {
        let q = NearbyQuery::new(89.999, 179.999, 5000, 0).expect("valid");
        let ((_, lat_hi), (lng_lo, lng_hi)) = q.cell_box();
        assert_eq!(lat_hi, 9000);
        assert_eq!(lng_hi, 18000);
        // Clamped at the antimeridian, not wrapped to -180.
        assert_eq!(lng_lo, 17551);
    }

    #[test]
    fn alert_shows_cell_centre_and_hour_only() {
        let row = AlertRow {
            category: "theft".into(),
            severity: "high".into(),
            occurred_at: "2026-11-27T16:47:12Z".parse().expect("time"),
            cell_lat: 5252,
            cell_lng: 1341,
        };
        let alert = Alert::from(row);
        assert_eq!(alert.occurred_at.to_rfc3339(), "2026-11-27T16:00:00+00:00");
        assert!((alert.lat - 52.52).abs() < 1e-9 && (alert.lng - 13.41).abs() < 1e-9);
    }
}
