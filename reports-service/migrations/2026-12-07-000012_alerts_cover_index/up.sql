-- Nearby alerts read each grid cell's newest public reports from the index alone, at most the
-- page's limit per cell, so the query stays flat however many reports a city has (the bench's
-- "nearby alerts at 1 000 and 1 000 000 reports").
CREATE INDEX reports_alerts_cover_idx ON reports.reports (cell_lat, cell_lng, occurred_at DESC)
    INCLUDE (category, severity)
    WHERE deleted_at IS NULL AND status IN ('under_review', 'resolved') AND cell_lat IS NOT NULL;
DROP INDEX reports.reports_alerts_idx;
