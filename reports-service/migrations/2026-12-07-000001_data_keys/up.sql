-- Each user's data key (service_kit::envelope), wrapped by the master key `key_id` of
-- ENCRYPTION_KEYS. Deleting a row makes everything sealed under that key unreadable, backups
-- included (crypto-shredding).
CREATE TABLE reports.data_keys (
    user_id      uuid        PRIMARY KEY,
    key_id       text        NOT NULL,
    wrapped      bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    rewrapped_at timestamptz
);

-- A transaction sees the key of the user it acts for (service_kit::db::enter_scope); moderators
-- read reports of others, and a key rotation (`app.role` = 'reports-service') re-wraps every key.
ALTER TABLE reports.data_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE reports.data_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY data_keys_own ON reports.data_keys
    USING (user_id = NULLIF(current_setting('app.current_user_id', true), '')::uuid);
CREATE POLICY data_keys_staff_read ON reports.data_keys FOR SELECT
    USING (current_setting('app.role', true) IN ('moderator', 'admin', 'reports-service'));
CREATE POLICY data_keys_rotation ON reports.data_keys FOR UPDATE
    USING (current_setting('app.role', true) = 'reports-service');
