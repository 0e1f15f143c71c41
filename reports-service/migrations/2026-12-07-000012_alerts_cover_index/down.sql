CREATE INDEX reports_alerts_idx ON reports.reports (cell_lat, cell_lng, occurred_at DESC)
    WHERE deleted_at IS NULL AND status IN ('under_review', 'resolved') AND cell_lat IS NOT NULL;
DROP INDEX reports.reports_alerts_cover_idx;
