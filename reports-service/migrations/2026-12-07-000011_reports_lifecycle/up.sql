-- Issue 18: reports filed, changed, withdrawn and moderated, with row-level security, idempotency
-- keys, an audit log and moderators' notes. Every user-scoped table has ENABLE + FORCE row-level
-- security: FORCE applies the policies to the table's owner too, so no role the service runs as
-- reads past them. A transaction names who it acts for with service_kit::db::enter_scope
-- (`app.current_user_id`, `app.role`).

-- What the moderator told the reporter with the last status move (sealed like the title).
ALTER TABLE reports.reports ADD COLUMN public_note_ct bytea;

ALTER TABLE reports.reports ENABLE ROW LEVEL SECURITY;
ALTER TABLE reports.reports FORCE ROW LEVEL SECURITY;
-- A reporter reads and writes their own reports only.
CREATE POLICY reports_own ON reports.reports
    USING (user_id = NULLIF(current_setting('app.current_user_id', true), '')::uuid);
-- Moderators and administrators read every report and move its status.
CREATE POLICY reports_staff ON reports.reports FOR SELECT
    USING (current_setting('app.role', true) IN ('moderator', 'admin'));
CREATE POLICY reports_staff_move ON reports.reports FOR UPDATE
    USING (current_setting('app.role', true) IN ('moderator', 'admin'));
-- Nearby alerts (app.role 'alerts') read only what a stranger may see of: live, accepted reports.
CREATE POLICY reports_alerts_read ON reports.reports FOR SELECT
    USING (current_setting('app.role', true) = 'alerts'
           AND deleted_at IS NULL AND status IN ('under_review', 'resolved'));

-- The moderation queue, oldest first, keyset-paginated on (created_at, id).
CREATE INDEX reports_queue_idx ON reports.reports (status, created_at, id) WHERE deleted_at IS NULL;

-- Each status move with the moderator's own note (sealed under the reporter's data key, bound to
-- the note's id) and the note shown to the reporter. Moderators only.
CREATE TABLE reports.moderation_notes (
    id              uuid        PRIMARY KEY,
    report_id       uuid        NOT NULL REFERENCES reports.reports (id),
    moderator_id    uuid        NOT NULL,
    from_status     text        NOT NULL,
    to_status       text        NOT NULL,
    note_ct         bytea       NOT NULL,
    public_note_ct  bytea,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX moderation_notes_report_idx ON reports.moderation_notes (report_id, created_at);
ALTER TABLE reports.moderation_notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE reports.moderation_notes FORCE ROW LEVEL SECURITY;
CREATE POLICY moderation_notes_staff ON reports.moderation_notes
    USING (current_setting('app.role', true) IN ('moderator', 'admin'));

-- Idempotency keys (service_kit::idempotency): the request's hash and the first response (sealed
-- under the user's data key), kept 24 h, then purged by the service every 10 minutes.
CREATE TABLE reports.idempotency_keys (
    user_id         uuid        NOT NULL,
    key             text        NOT NULL,
    request_hash    bytea       NOT NULL,
    response        bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON reports.idempotency_keys (created_at);
ALTER TABLE reports.idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE reports.idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY idempotency_keys_own ON reports.idempotency_keys
    USING (user_id = NULLIF(current_setting('app.current_user_id', true), '')::uuid);
-- The purge (role `reports-service`): a DELETE with a WHERE reads the rows too, hence both.
CREATE POLICY idempotency_keys_purge_read ON reports.idempotency_keys FOR SELECT
    USING (current_setting('app.role', true) = 'reports-service');
CREATE POLICY idempotency_keys_purge ON reports.idempotency_keys FOR DELETE
    USING (current_setting('app.role', true) = 'reports-service');

-- Every create, change, status move and delete, written in the transaction of the change. Field
-- names only, never values. For an anonymous report the reporter's own actions carry no actor,
-- address or user agent. Append-only for the service: anyone in scope adds rows, only an
-- administrator's scope reads them, nobody updates or deletes them.
CREATE TABLE reports.audit_logs (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    actor_id        uuid,
    action          text        NOT NULL,
    resource        text        NOT NULL,
    resource_id     text,
    ip              text,
    user_agent      text,
    changed_fields  text[]      NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_logs_actor_time_idx ON reports.audit_logs (actor_id, created_at DESC);
ALTER TABLE reports.audit_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE reports.audit_logs FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_logs_append ON reports.audit_logs FOR INSERT WITH CHECK (true);
CREATE POLICY audit_logs_admin_read ON reports.audit_logs FOR SELECT
    USING (current_setting('app.role', true) = 'admin');
