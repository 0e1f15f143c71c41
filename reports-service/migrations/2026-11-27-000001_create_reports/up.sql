-- Incident reports. What a person wrote and where it happened are stored encrypted (AES-256-GCM
-- under the reporter's data key, see ARCHITECTURE.md "Data protection"); only the coarse grid cell
-- (0.01 degree, about 1.1 km) is kept in clear, so that nearby alerts can be found without
-- decrypting anything and without revealing the reported point.
CREATE TABLE reports.reports (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         uuid        NOT NULL,
    category        text        NOT NULL CHECK (category IN
                        ('harassment', 'assault', 'theft', 'vandalism', 'discrimination', 'stalking', 'cyber', 'other')),
    severity        text        NOT NULL DEFAULT 'medium' CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    status          text        NOT NULL DEFAULT 'submitted' CHECK (status IN ('submitted', 'under_review', 'resolved', 'dismissed')),
    title_ct        bytea       NOT NULL,
    description_ct  bytea       NOT NULL,
    location_ct     bytea,
    cell_lat        integer     CHECK (cell_lat BETWEEN -9000 AND 9000),
    cell_lng        integer     CHECK (cell_lng BETWEEN -18000 AND 18000),
    anonymous       boolean     NOT NULL DEFAULT false,
    occurred_at     timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    CONSTRAINT reports_cell_both_or_neither CHECK ((cell_lat IS NULL) = (cell_lng IS NULL))
);

-- The owner's list, newest first, keyset-paginated on (created_at, id).
CREATE INDEX reports_user_created_idx ON reports.reports (user_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;
-- Nearby alerts: only reports a moderator has accepted are ever shown.
CREATE INDEX reports_alerts_idx ON reports.reports (cell_lat, cell_lng, occurred_at DESC)
    WHERE deleted_at IS NULL AND status IN ('under_review', 'resolved') AND cell_lat IS NOT NULL;
