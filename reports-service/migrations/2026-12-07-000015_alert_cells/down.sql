DROP TRIGGER public_alerts_cell_update ON reports.public_alerts;
DROP TRIGGER public_alerts_cell_insert_delete ON reports.public_alerts;
DROP FUNCTION reports.sync_alert_cell();
DROP FUNCTION reports.refresh_alert_cell(integer, integer, timestamptz);
DROP TABLE reports.alert_cells;
