CREATE INDEX reports_alerts_cover_idx ON reports.reports (cell_lat, cell_lng, occurred_at DESC)
    INCLUDE (category, severity)
    WHERE deleted_at IS NULL AND status IN ('under_review', 'resolved') AND cell_lat IS NOT NULL;
CREATE POLICY reports_alerts_read ON reports.reports FOR SELECT
    USING (current_setting('app.role', true) = 'alerts'
           AND deleted_at IS NULL AND status IN ('under_review', 'resolved'));
DROP TRIGGER reports_public_alert_update ON reports.reports;
DROP TRIGGER reports_public_alert_insert ON reports.reports;
DROP FUNCTION reports.sync_public_alert();
DROP TABLE reports.public_alerts;
