//! Nearby alerts: which reports may be shown to strangers, and how coarsely. Pure rules: they
//! take and give domain values, never call the store, and the store never calls them.
//!
//! A report's cell (`cell_lat`, `cell_lng`, in clear) is not the cell of the reported point: the
//! point is first moved by a random offset of [`MIN_OFFSET_M`]..=[`MAX_OFFSET_M`] in a random
//! direction, chosen when the report is filed and again only when its location changes (so the
//! cell is stable and repeated reads cannot average the offset away), then rounded to the grid.
//! A point near a cell's edge therefore does not give its cell away, and nothing stored in clear
//! is within 200 m of what the reporter gave.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use crate::domain::{Alert, AlertFilter, AlertRecord, Cell, CellBox, NearbyQuery};

/// Statuses a moderator has accepted; `submitted` (unreviewed) and `dismissed` are never shown.
pub const VISIBLE_STATUSES: &[&str] = &["under_review", "resolved"];
/// How far back alerts reach.
pub const ALERT_WINDOW: TimeDelta = TimeDelta::days(30);
/// Grid cells per degree: 100 gives cells of 0.01 degree (about 1.1 km of latitude).
const CELLS_PER_DEGREE: f64 = 100.0;
const METERS_PER_DEGREE_LAT: f64 = 111_320.0;
/// The random offset's distance range, in metres.
pub const MIN_OFFSET_M: f64 = 200.0;
pub const MAX_OFFSET_M: f64 = 400.0;

/// The cell stored for a report at (`lat`, `lng`): the point moved `distance_m` (clamped to
/// [`MIN_OFFSET_M`]..=[`MAX_OFFSET_M`]) towards `bearing` (radians from north), then rounded to
/// the grid. The caller draws `bearing` and `distance_m` at random.
pub fn offset_cell(lat: f64, lng: f64, bearing: f64, distance_m: f64) -> Cell {
    let (lat2, lng2) = offset_point(lat, lng, bearing, distance_m);
    let cell = |deg: f64, max: i32| ((deg * CELLS_PER_DEGREE).round() as i32).clamp(-max, max);
    Cell {
        lat: cell(lat2, 9000),
        lng: cell(lng2, 18000),
    }
}

/// (`lat`, `lng`) moved `distance_m` towards `bearing`; longitude wrapped, latitude clamped.
fn offset_point(lat: f64, lng: f64, bearing: f64, distance_m: f64) -> (f64, f64) {
    let d = distance_m.clamp(MIN_OFFSET_M, MAX_OFFSET_M);
    let dlat = d * bearing.cos() / METERS_PER_DEGREE_LAT;
    let cos = lat.to_radians().cos().max(0.01);
    let dlng = d * bearing.sin() / (METERS_PER_DEGREE_LAT * cos);
    let lat2 = (lat + dlat).clamp(-90.0, 90.0);
    let mut lng2 = lng + dlng;
    if lng2 > 180.0 {
        lng2 -= 360.0;
    } else if lng2 < -180.0 {
        lng2 += 360.0;
    }
    (lat2, lng2)
}

/// What to ask the store for `query` at `now`: the query's cells, public statuses only, the
/// window's reports only.
pub fn filter(query: &NearbyQuery, now: DateTime<Utc>) -> AlertFilter {
    AlertFilter {
        cells: cell_box(query),
        statuses: VISIBLE_STATUSES,
        since: now - ALERT_WINDOW,
        limit: query.limit(),
    }
}

/// The grid cells that cover the query's circle.
/// Near the poles and across the antimeridian the box is clamped, never wrapped: alerts there
/// may be missed, never shown from the wrong side of the world.
pub fn cell_box(query: &NearbyQuery) -> CellBox {
    let (lat, lng) = (query.lat(), query.lng());
    let dlat = f64::from(query.radius_m()) / METERS_PER_DEGREE_LAT;
    // Clamped so a box near a pole stays under ~1 000 cells (each is one index probe).
    let cos = lat.to_radians().cos().max(0.1);
    let dlng = (dlat / cos).min(180.0);
    let cell = |deg: f64| (deg * CELLS_PER_DEGREE).round() as i32;
    CellBox {
        lat: (cell((lat - dlat).max(-90.0)), cell((lat + dlat).min(90.0))),
        lng: (cell((lng - dlng).max(-180.0)), cell((lng + dlng).min(180.0))),
    }
}

/// What a stranger may see of `record`: the hour, not the minute; the cell's centre, not the point.
pub fn coarsen(record: AlertRecord) -> Alert {
    Alert {
        category: record.category,
        severity: record.severity,
        occurred_at: record
            .occurred_at
            .duration_trunc(TimeDelta::hours(1))
            .unwrap_or(record.occurred_at),
        lat: f64::from(record.cell.lat) / CELLS_PER_DEGREE,
        lng: f64::from(record.cell.lng) / CELLS_PER_DEGREE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Cell;

    #[test]
    fn box_covers_the_radius_in_cells() {
        // 1 km around a point in Berlin: about 0.009 degree of latitude, 0.015 of longitude.
        let q = NearbyQuery::new(52.52, 13.405, 1000, 0).expect("valid");
        let CellBox { lat, lng } = cell_box(&q);
        assert_eq!(lat, (5251, 5253));
        assert_eq!(lng, (1339, 1342));
    }

    #[test]
    fn box_is_clamped_at_the_poles_and_antimeridian() {
        let q = NearbyQuery::new(89.999, 179.999, 5000, 0).expect("valid");
        let CellBox {
            lat: (_, lat_hi),
            lng: (lng_lo, lng_hi),
        } = cell_box(&q);
        assert_eq!(lat_hi, 9000);
        assert_eq!(lng_hi, 18000);
        // Clamped at the antimeridian, not wrapped to -180.
        assert_eq!(lng_lo, 17955);
    }

    #[test]
    fn alert_shows_cell_centre_and_hour_only() {
        let record = AlertRecord {
            category: "theft".into(),
            severity: "high".into(),
            occurred_at: "2026-11-27T16:47:12Z".parse().expect("time"),
            cell: Cell { lat: 5252, lng: 1341 },
        };
        let alert = coarsen(record);
        assert_eq!(alert.occurred_at.to_rfc3339(), "2026-11-27T16:00:00+00:00");
        assert!((alert.lat - 52.52).abs() < 1e-9 && (alert.lng - 13.41).abs() < 1e-9);
    }

    #[test]
    fn the_filter_asks_for_public_statuses_within_the_window() {
        let q = NearbyQuery::new(52.52, 13.405, 1000, 7).expect("valid");
        let now: DateTime<Utc> = "2026-11-27T16:47:12Z".parse().expect("time");
        let f = filter(&q, now);
        assert_eq!(f.cells, cell_box(&q));
        assert_eq!(f.statuses, ["under_review", "resolved"]);
        assert_eq!(f.since.to_rfc3339(), "2026-10-28T16:47:12+00:00");
        assert_eq!(f.limit, 7);
    }

    /// Metres between two points (equirectangular; fine at these distances).
    fn metres(a: (f64, f64), b: (f64, f64)) -> f64 {
        let dlat = (b.0 - a.0) * METERS_PER_DEGREE_LAT;
        let dlng = (b.1 - a.1) * METERS_PER_DEGREE_LAT * a.0.to_radians().cos();
        (dlat * dlat + dlng * dlng).sqrt()
    }

    #[test]
    fn the_offset_point_is_200_to_400_metres_away_whatever_the_draw() {
        for (lat, lng) in [(52.52, 13.405), (-33.9, 151.2), (0.0, 0.0), (60.0, -179.999)] {
            for step in 0..36 {
                let bearing = f64::from(step) * std::f64::consts::TAU / 36.0;
                for distance in [0.0, 200.0, 300.0, 400.0, 10_000.0] {
                    let moved = offset_point(lat, lng, bearing, distance);
                    let mut to = moved;
                    // Across the antimeridian, measure the short way.
                    if (to.1 - lng).abs() > 180.0 {
                        to.1 -= 360.0_f64.copysign(to.1 - lng);
                    }
                    let m = metres((lat, lng), to);
                    assert!((199.0..=401.0).contains(&m), "{lat},{lng} {bearing} {distance}: {m}");
                }
            }
        }
    }

    #[test]
    fn the_cell_is_the_grid_cell_of_the_moved_point() {
        // 300 m due north of a point: 0.0027 degree further, so the next cell up.
        let cell = offset_cell(52.5240, 13.4050, 0.0, 300.0);
        assert_eq!(cell, Cell { lat: 5253, lng: 1341 });
        assert_eq!(
            offset_cell(52.5240, 13.4050, 0.0, 300.0),
            cell,
            "the same draw, the same cell"
        );
        let edge = offset_cell(89.999, 0.0, 0.0, 400.0);
        assert_eq!(edge.lat, 9000, "clamped at the pole");
    }
}
