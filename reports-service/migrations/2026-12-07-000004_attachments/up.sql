-- Files added to reports. The bytes live in the file store (service_kit::file_store) under
-- `object_name`, a uuid the service chose, encrypted with the reporter's data key
-- (service_kit::envelope_stream, bound to the attachment id); this row says what they are.
CREATE TABLE reports.attachments (
    id           uuid        PRIMARY KEY,
    report_id    uuid        NOT NULL REFERENCES reports.reports (id),
    user_id      uuid        NOT NULL,
    content_type text        NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png', 'image/gif', 'application/pdf')),
    -- Bytes as stored (after metadata was stripped), before encryption.
    size         bigint      NOT NULL CHECK (size > 0),
    sha256       text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    object_name  uuid        NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz
);

-- A report's files, oldest first (the report shows them; the per-report cap counts them).
CREATE INDEX attachments_report_idx ON reports.attachments (report_id, created_at, id) WHERE deleted_at IS NULL;

-- A transaction sees the files of the user it acts for (service_kit::db::enter_scope);
-- moderators read every report's files.
ALTER TABLE reports.attachments ENABLE ROW LEVEL SECURITY;
ALTER TABLE reports.attachments FORCE ROW LEVEL SECURITY;
CREATE POLICY attachments_own ON reports.attachments
    USING (user_id = NULLIF(current_setting('app.current_user_id', true), '')::uuid);
CREATE POLICY attachments_staff_read ON reports.attachments FOR SELECT
    USING (current_setting('app.role', true) IN ('moderator', 'admin'));
