//! The SQL of the incident-report rows: seeding `reports.reports` with realistic rows, pgbench's
//! script doing a create's three inserts, and the nearby-alerts query as reports-service runs it
//! (the summary `alert_cells`, then the projection `public_alerts`) beside the forms it replaced. Text only, so it
//! can be read and tested alone.

/// Where the seeded reports are: a city-sized region of grid cells (0.01 degree each, as
/// reports-service's `alerts` stores them), about 45 km by 40 km around Berlin.
pub(super) const REGION_LAT: (i32, i32) = (5230, 5270);
pub(super) const REGION_LNG: (i32, i32) = (1310, 1370);
/// The point nearby alerts are asked about (the middle of the region), and the largest radius.
pub(super) const NEARBY_POINT: (f64, f64) = (52.5, 13.4);
pub(super) const NEARBY_RADIUS_M: u32 = 5000;
/// Users the seeded reports belong to.
const SEEDED_USERS: u32 = 50_000;

/// `rows` reports of [`SEEDED_USERS`] users spread uniformly over the region, occurred within the
/// last 29 days (inside the 30-day alert window) and filed 5 minutes later; statuses mixed so that
/// two thirds are public (`under_review` or `resolved`); 2% withdrawn; one in ten anonymous.
/// The sealed columns hold random bytes of a sealed value's size (12-byte nonce, the text, a
/// 16-byte tag): lists of other users' rows never open them. Run as the cluster's superuser:
/// the table forces row-level security on its owner too. The public ones reach `public_alerts`
/// through its trigger, as a moderator's move would put them there.
pub(super) fn seed(rows: u32) -> String {
    let (lat0, lat1) = REGION_LAT;
    let (lng0, lng1) = REGION_LNG;
    format!(
        "INSERT INTO reports.reports (id, user_id, category, severity, status, title_ct, description_ct, \
         location_ct, cell_lat, cell_lng, anonymous, occurred_at, created_at, updated_at, deleted_at) \
         SELECT gen_random_uuid(), \
                md5('bench-seeded-user-' || floor(random() * {SEEDED_USERS})::int)::uuid, \
                (ARRAY['harassment','assault','theft','vandalism','discrimination','stalking','cyber','other'])[1 + floor(random() * 8)::int], \
                (ARRAY['low','medium','high','critical'])[1 + floor(random() * 4)::int], \
                (ARRAY['submitted','under_review','under_review','resolved','resolved','dismissed'])[1 + floor(random() * 6)::int], \
                decode(repeat(md5(random()::text), 4), 'hex'), \
                decode(repeat(md5(random()::text), 20), 'hex'), \
                decode(repeat(md5(random()::text), 5), 'hex'), \
                {lat0} + floor(random() * {})::int, \
                {lng0} + floor(random() * {})::int, \
                random() < 0.1, \
                s.at, s.at + interval '5 minutes', s.at + interval '5 minutes', \
                CASE WHEN random() < 0.02 THEN now() END \
         FROM (SELECT g, now() - interval '5 minutes' - random() * interval '29 days' AS at \
               FROM generate_series(1, {rows}) AS g) AS s",
        lat1 - lat0,
        lng1 - lng0,
    )
}

/// pgbench's transaction: the three inserts of a create (report, audit row, outbox event), as
/// reports-service's store writes them, in one transaction scoped like the service's
/// (`enter_scope`: row-level security checks the report's `user_id`). One reporter per client.
/// The sealed columns are random bytes of the sizes the benchmark's creates seal.
pub(super) const PGBENCH_SCRIPT: &str = r"\set category random(1, 8)
\set severity random(1, 4)
\set lat random(5230, 5269)
\set lng random(1310, 1369)
BEGIN;
SELECT set_config('app.current_user_id', md5('bench-pgbench-' || :client_id::text)::uuid::text, true), set_config('app.role', 'user', true);
INSERT INTO reports.reports (id, user_id, category, severity, title_ct, description_ct, location_ct, cell_lat, cell_lng, anonymous, occurred_at) VALUES (gen_random_uuid(), md5('bench-pgbench-' || :client_id::text)::uuid, (ARRAY['harassment','assault','theft','vandalism','discrimination','stalking','cyber','other'])[:category::int], (ARRAY['low','medium','high','critical'])[:severity::int], decode(repeat(md5(random()::text), 3), 'hex'), decode(repeat(md5(random()::text), 6), 'hex'), decode(repeat(md5(random()::text), 5), 'hex'), :lat::int, :lng::int, false, now() - interval '1 hour') RETURNING id AS report_id, category AS report_category, severity AS report_severity, occurred_at AS report_occurred_at, status AS report_status \gset
INSERT INTO reports.audit_logs (actor_id, action, resource, resource_id, ip, user_agent, changed_fields) VALUES (md5('bench-pgbench-' || :client_id::text)::uuid, 'report.create', 'report', :report_id::text, '127.0.0.1', 'pgbench', ARRAY['category','title','description','severity','occurred_at','location','anonymous']);
INSERT INTO reports.outbox (event_id, event_type, occurred_at, traceparent, payload) VALUES (gen_random_uuid(), 'report.submitted', now(), '', jsonb_build_object('report_id', :report_id::text, 'category', :report_category::text, 'severity', :report_severity::text, 'cell', jsonb_build_object('lat', :lat::int, 'lng', :lng::int), 'occurred_hour', date_trunc('hour', :report_occurred_at::timestamptz), 'status', :report_status::text));
COMMIT;
";

/// pgbench's transaction as reports-service sends a create without `Idempotency-Key` by a reporter
/// with a data key: the scope and the reporter's wrapped key (`store::data_keys::enter_scope_with_key`), then the
/// report, its audit row and its event in one statement (`store::reports::file`), no transaction
/// block. Beside [`PGBENCH_SCRIPT`] in the report, so the reader sees the database's side of the
/// service's own statements too.
pub(super) const PGBENCH_SERVICE_SCRIPT: &str = r"\set category random(1, 8)
\set severity random(1, 4)
\set lat random(5230, 5269)
\set lng random(1310, 1369)
WITH scope AS MATERIALIZED (SELECT set_config('app.current_user_id', md5('bench-pgbench-' || :client_id::text)::uuid::text, true) AS user_id, set_config('app.role', 'user', true) AS role) SELECT k.key_id, k.wrapped FROM scope CROSS JOIN LATERAL (SELECT d.key_id, d.wrapped FROM reports.data_keys AS d WHERE d.user_id = scope.user_id::uuid OFFSET 0) AS k;
WITH scope AS MATERIALIZED (SELECT set_config('app.current_user_id', md5('bench-pgbench-' || :client_id::text)::uuid::text, true) AS user_id, set_config('app.role', 'user', true) AS role), report AS (INSERT INTO reports.reports (id, user_id, category, severity, title_ct, description_ct, location_ct, cell_lat, cell_lng, anonymous, occurred_at) SELECT gen_random_uuid(), scope.user_id::uuid, (ARRAY['harassment','assault','theft','vandalism','discrimination','stalking','cyber','other'])[:category::int], (ARRAY['low','medium','high','critical'])[:severity::int], decode(repeat(md5(random()::text), 3), 'hex'), decode(repeat(md5(random()::text), 6), 'hex'), decode(repeat(md5(random()::text), 5), 'hex'), :lat::int, :lng::int, false, now() - interval '1 hour' FROM scope RETURNING id, category, severity, occurred_at, status, created_at, updated_at), audit AS (INSERT INTO reports.audit_logs (actor_id, action, resource, resource_id, ip, user_agent, changed_fields) SELECT md5('bench-pgbench-' || :client_id::text)::uuid, 'report.create', 'report', report.id::text, '127.0.0.1', 'pgbench', ARRAY['category','title','description','severity','occurred_at','location','anonymous'] FROM report), event AS (INSERT INTO reports.outbox (event_id, event_type, occurred_at, traceparent, payload) SELECT gen_random_uuid(), 'report.submitted', now(), '', jsonb_build_object('report_id', report.id::text, 'category', report.category, 'severity', report.severity, 'cell', jsonb_build_object('lat', :lat::int, 'lng', :lng::int), 'occurred_hour', date_trunc('hour', report.occurred_at), 'status', report.status) FROM report) SELECT status, created_at, updated_at FROM report;
";

/// The grid cells covering [`NEARBY_RADIUS_M`] around [`NEARBY_POINT`]: `(lat_lo, lat_hi)`,
/// `(lng_lo, lng_hi)`, as reports-service's `alerts::cell_box` computes them.
pub(super) fn nearby_cells() -> ((i32, i32), (i32, i32)) {
    let (lat, lng) = NEARBY_POINT;
    let dlat = f64::from(NEARBY_RADIUS_M) / 111_320.0;
    let dlng = (dlat / lat.to_radians().cos().max(0.1)).min(180.0);
    let cell = |deg: f64| (deg * 100.0).round() as i32;
    (
        (cell((lat - dlat).max(-90.0)), cell((lat + dlat).min(90.0))),
        (cell((lng - dlng).max(-180.0)), cell((lng + dlng).min(180.0))),
    )
}

/// One range scan over the whole box of `public_alerts`, the projection nearby alerts read
/// (migration 000013), as reports-service's store read `reports` before migration 000012: every
/// public report of the window in the box is read, then sorted for the newest 20.
pub(super) fn nearby_range_scan() -> String {
    let ((lat_lo, lat_hi), (lng_lo, lng_hi)) = nearby_cells();
    format!(
        "SELECT category, severity, occurred_at, cell_lat, cell_lng FROM reports.public_alerts \
         WHERE status = ANY(ARRAY['under_review', 'resolved']) \
           AND cell_lat BETWEEN {lat_lo} AND {lat_hi} AND cell_lng BETWEEN {lng_lo} AND {lng_hi} \
           AND occurred_at >= now() - interval '30 days' \
         ORDER BY occurred_at DESC LIMIT 20"
    )
}

/// The same answer read cell by cell in one pass, as reports-service's store sent it before the
/// two-pass form: each cell's newest 20 from the index of `public_alerts` alone, then the newest
/// 20 of those. At most 20 rows per cell of the box are read, however many the table holds.
pub(super) fn nearby_per_cell() -> String {
    let ((lat_lo, lat_hi), (lng_lo, lng_hi)) = nearby_cells();
    format!(
        "SELECT a.category, a.severity, a.occurred_at, a.cell_lat, a.cell_lng \
         FROM generate_series({lat_lo}, {lat_hi}) AS la(cell_lat) \
         CROSS JOIN generate_series({lng_lo}, {lng_hi}) AS ln(cell_lng) \
         CROSS JOIN LATERAL ( \
             SELECT r.category, r.severity, r.occurred_at, r.cell_lat, r.cell_lng FROM reports.public_alerts r \
             WHERE r.cell_lat = la.cell_lat AND r.cell_lng = ln.cell_lng \
               AND r.status = ANY(ARRAY['under_review', 'resolved']) \
               AND r.occurred_at >= now() - interval '30 days' \
             ORDER BY r.occurred_at DESC LIMIT 20) AS a \
         ORDER BY a.occurred_at DESC LIMIT 20"
    )
}

/// The second pass of [`nearby_served`] and [`nearby_two_pass`]: the newest 20 of each cell of
/// CTE `cells` from `cutoff.since` on, from the index of `public_alerts` alone.
const FROM_CUTOFF: &str = "SELECT a.category, a.severity, a.occurred_at, a.cell_lat, a.cell_lng \
    FROM cells c CROSS JOIN cutoff CROSS JOIN LATERAL ( \
        SELECT r.category, r.severity, r.occurred_at, r.cell_lat, r.cell_lng FROM reports.public_alerts r \
        WHERE r.cell_lat = c.cell_lat AND r.cell_lng = c.cell_lng \
          AND r.status = ANY(ARRAY['under_review', 'resolved']) AND r.occurred_at >= cutoff.since \
        ORDER BY r.occurred_at DESC LIMIT 20) AS a";

/// The query as reports-service's store sends it (`store::alert_rows`): the box's cells from the
/// summary `alert_cells` (each cell's newest two times) give a time that at least 20 reports
/// reach; then, from the index of `public_alerts`, the newest from that time on of the cells
/// whose newest is that recent.
pub(super) fn nearby_served() -> String {
    let ((lat_lo, lat_hi), (lng_lo, lng_hi)) = nearby_cells();
    format!(
        "WITH cells AS MATERIALIZED ( \
             SELECT c.cell_lat, c.cell_lng, c.newest, c.second FROM reports.alert_cells c \
             WHERE c.cell_lat BETWEEN {lat_lo} AND {lat_hi} AND c.cell_lng BETWEEN {lng_lo} AND {lng_hi} \
               AND c.newest >= now() - interval '30 days'), \
         cutoff AS (SELECT coalesce(( \
             SELECT t.at FROM ( \
                 SELECT newest AS at FROM cells \
                 UNION ALL SELECT second FROM cells WHERE second >= now() - interval '30 days') AS t \
             ORDER BY t.at DESC OFFSET 19 LIMIT 1), now() - interval '30 days') AS since) \
         {FROM_CUTOFF} \
         WHERE c.newest >= cutoff.since \
         ORDER BY a.occurred_at DESC LIMIT 20"
    )
}

/// The form before migration 000015: each cell's newest two, read from the index of
/// `public_alerts` (a descent per cell of the box), give the time; then each cell's newest from
/// that time on.
pub(super) fn nearby_two_pass() -> String {
    let ((lat_lo, lat_hi), (lng_lo, lng_hi)) = nearby_cells();
    format!(
        "WITH cells AS MATERIALIZED ( \
             SELECT la.cell_lat, ln.cell_lng FROM generate_series({lat_lo}, {lat_hi}) AS la(cell_lat) \
             CROSS JOIN generate_series({lng_lo}, {lng_hi}) AS ln(cell_lng)), \
         cutoff AS (SELECT coalesce(( \
             SELECT t.occurred_at FROM cells c CROSS JOIN LATERAL ( \
                 SELECT r.occurred_at FROM reports.public_alerts r \
                 WHERE r.cell_lat = c.cell_lat AND r.cell_lng = c.cell_lng \
                   AND r.status = ANY(ARRAY['under_review', 'resolved']) \
                   AND r.occurred_at >= now() - interval '30 days' \
                 ORDER BY r.occurred_at DESC LIMIT 2) AS t \
             ORDER BY t.occurred_at DESC OFFSET 19 LIMIT 1), now() - interval '30 days') AS since) \
         {FROM_CUTOFF} \
         ORDER BY a.occurred_at DESC LIMIT 20"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn pgbench_runs_the_three_inserts_of_a_create_in_one_transaction() {
        let statements: Vec<&str> = super::PGBENCH_SCRIPT.lines().filter(|l| !l.starts_with('\\')).collect();
        assert_eq!(statements.first(), Some(&"BEGIN;"));
        assert_eq!(statements.last(), Some(&"COMMIT;"));
        let inserts: Vec<&str> = statements
            .iter()
            .filter_map(|s| s.strip_prefix("INSERT INTO "))
            .filter_map(|s| s.split_whitespace().next())
            .collect();
        assert_eq!(inserts, ["reports.reports", "reports.audit_logs", "reports.outbox"]);
    }

    #[test]
    fn the_service_s_script_writes_the_three_rows_in_one_statement_after_the_key() {
        let statements: Vec<&str> = super::PGBENCH_SERVICE_SCRIPT
            .lines()
            .filter(|l| !l.starts_with('\\'))
            .collect();
        assert_eq!(statements.len(), 2, "{statements:?}");
        assert!(statements[0].contains("FROM reports.data_keys AS d WHERE d.user_id = scope.user_id::uuid OFFSET 0"));
        for table in ["reports.reports", "reports.audit_logs", "reports.outbox"] {
            assert!(statements[1].contains(&format!("INSERT INTO {table} ")), "{table}");
        }
        assert!(!super::PGBENCH_SERVICE_SCRIPT.contains("BEGIN"), "no transaction block");
    }

    #[test]
    fn the_served_form_starts_from_the_summary_and_reads_only_recent_cells() {
        let served = super::nearby_served();
        let summary = served.find("FROM reports.alert_cells").expect("reads the summary");
        let second_pass = served.find("CROSS JOIN LATERAL").expect("a second pass");
        let only_recent = served
            .find("WHERE c.newest >= cutoff.since")
            .expect("recent cells only");
        assert!(summary < second_pass && second_pass < only_recent, "{served}");
        assert!(!served.contains("generate_series"), "no descent per cell of the box");
        let two_pass = super::nearby_two_pass();
        assert!(two_pass.contains("generate_series") && two_pass.contains(super::FROM_CUTOFF));
    }

    #[test]
    fn the_box_of_5_km_around_the_point_is_inside_the_seeded_region() {
        let ((lat_lo, lat_hi), (lng_lo, lng_hi)) = super::nearby_cells();
        // 5 km is 0.045 degree of latitude and, at 52.5 degrees, 0.074 of longitude.
        assert_eq!((lat_lo, lat_hi), (5246, 5254));
        assert_eq!((lng_lo, lng_hi), (1333, 1347));
        assert!(super::REGION_LAT.0 <= lat_lo && lat_hi < super::REGION_LAT.1);
        assert!(super::REGION_LNG.0 <= lng_lo && lng_hi < super::REGION_LNG.1);
    }
}
