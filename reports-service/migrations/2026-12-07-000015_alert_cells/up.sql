-- Nearby alerts read, for each grid cell of the box, the cell's newest two public alerts from
-- `public_alerts`' index: one index descent per cell, 135 for 5 km, twice. The index grows with
-- the table (three levels at a million reports, one at a thousand) and a descent touches a leaf
-- of its own, so the query touched 800 pages at a million reports where it touched 540 at a
-- thousand, and at a request rate that leaves CPU caches cold between requests it took 0.8 ms
-- more (bench: p99 1.85× at a million). This summary holds one narrow row per cell that has a
-- public alert: the times of its newest two. The box's cells are one range scan of a table that
-- grows with the cells in use (bounded by the map), not with the reports; the time they give
-- leaves at most `limit` cells to read from the index (see store::alert_rows).
--
-- Like `public_alerts`, it is written only by a trigger (SECURITY DEFINER, as the schema's
-- owner) and read by everyone through one policy.
CREATE TABLE reports.alert_cells (
    cell_lat integer     NOT NULL,
    cell_lng integer     NOT NULL,
    -- The cell's newest public alert, and the one before it (NULL when it has one).
    newest   timestamptz NOT NULL,
    second   timestamptz,
    PRIMARY KEY (cell_lat, cell_lng),
    CHECK (second IS NULL OR second <= newest)
);

ALTER TABLE reports.alert_cells ENABLE ROW LEVEL SECURITY;
CREATE POLICY alert_cells_read ON reports.alert_cells FOR SELECT USING (true);

-- Recomputes one cell from `public_alerts` (two rows of its index): a row while the cell has a
-- public alert, none after. Concurrent changes to a cell serialise on the cell's row, locked
-- first (made first when missing: a placeholder that this call then fixes or removes, so no
-- other transaction ever sees it); the recomputation is a statement after the lock, so under
-- READ COMMITTED (the services' level) it sees every change committed before the lock was
-- granted: the last transaction to commit writes the cell from every change. A row lock, not an
-- advisory lock: a statement touching thousands of cells holds no entry of the shared lock
-- table per cell. `inserted`, the time of a row just added, skips the work when the cell already
-- has two alerts at least as new: under the lock its row is current, and its two times do not
-- change.
CREATE FUNCTION reports.refresh_alert_cell(lat integer, lng integer, inserted timestamptz DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    kept_second timestamptz;
    times timestamptz[];
BEGIN
    LOOP
        INSERT INTO reports.alert_cells (cell_lat, cell_lng, newest) VALUES (lat, lng, '-infinity')
        ON CONFLICT (cell_lat, cell_lng) DO NOTHING;
        SELECT c.second INTO kept_second FROM reports.alert_cells c
        WHERE c.cell_lat = lat AND c.cell_lng = lng FOR UPDATE;
        -- Not found: another transaction removed the row between the two statements; again.
        EXIT WHEN FOUND;
    END LOOP;
    IF inserted IS NOT NULL AND kept_second IS NOT NULL AND inserted <= kept_second THEN
        RETURN;
    END IF;
    SELECT array_agg(t.occurred_at ORDER BY t.occurred_at DESC) INTO times
    FROM (SELECT a.occurred_at FROM reports.public_alerts a
          WHERE a.cell_lat = lat AND a.cell_lng = lng
          ORDER BY a.occurred_at DESC LIMIT 2) AS t;
    IF times IS NULL THEN
        DELETE FROM reports.alert_cells WHERE cell_lat = lat AND cell_lng = lng;
    ELSE
        UPDATE reports.alert_cells SET newest = times[1], second = times[2]
        WHERE cell_lat = lat AND cell_lng = lng;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION reports.refresh_alert_cell(integer, integer, timestamptz) FROM PUBLIC;

CREATE FUNCTION reports.sync_alert_cell() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM reports.refresh_alert_cell(NEW.cell_lat, NEW.cell_lng, NEW.occurred_at);
        RETURN NULL;
    END IF;
    PERFORM reports.refresh_alert_cell(OLD.cell_lat, OLD.cell_lng);
    IF TG_OP = 'UPDATE' AND (NEW.cell_lat, NEW.cell_lng) <> (OLD.cell_lat, OLD.cell_lng) THEN
        PERFORM reports.refresh_alert_cell(NEW.cell_lat, NEW.cell_lng);
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION reports.sync_alert_cell() FROM PUBLIC;

-- Status moves between the two public statuses update the row in place and change no time:
-- only a change of time or cell, an insert or a delete touches the summary.
CREATE TRIGGER public_alerts_cell_insert_delete AFTER INSERT OR DELETE ON reports.public_alerts
    FOR EACH ROW EXECUTE FUNCTION reports.sync_alert_cell();
CREATE TRIGGER public_alerts_cell_update AFTER UPDATE OF occurred_at, cell_lat, cell_lng ON reports.public_alerts
    FOR EACH ROW
    WHEN ((OLD.occurred_at, OLD.cell_lat, OLD.cell_lng) IS DISTINCT FROM (NEW.occurred_at, NEW.cell_lat, NEW.cell_lng))
    EXECUTE FUNCTION reports.sync_alert_cell();

INSERT INTO reports.alert_cells (cell_lat, cell_lng, newest, second)
SELECT c.cell_lat, c.cell_lng, t.times[1], t.times[2]
FROM (SELECT DISTINCT cell_lat, cell_lng FROM reports.public_alerts) AS c
CROSS JOIN LATERAL (
    SELECT array_agg(a.occurred_at ORDER BY a.occurred_at DESC) AS times
    FROM (SELECT p.occurred_at FROM reports.public_alerts p
          WHERE p.cell_lat = c.cell_lat AND p.cell_lng = c.cell_lng
          ORDER BY p.occurred_at DESC LIMIT 2) AS a) AS t;
