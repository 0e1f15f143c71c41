//! Diesel table definitions for schema `reports` (kept in step with `migrations/`).

diesel::table! {
    reports.reports (id) {
        id -> Uuid,
        user_id -> Uuid,
        category -> Text,
        severity -> Text,
        status -> Text,
        title_ct -> Bytea,
        description_ct -> Bytea,
        location_ct -> Nullable<Bytea>,
        cell_lat -> Nullable<Int4>,
        cell_lng -> Nullable<Int4>,
        anonymous -> Bool,
        occurred_at -> Timestamptz,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
        public_note_ct -> Nullable<Bytea>,
    }
}

diesel::table! {
    reports.moderation_notes (id) {
        id -> Uuid,
        report_id -> Uuid,
        moderator_id -> Uuid,
        from_status -> Text,
        to_status -> Text,
        note_ct -> Bytea,
        public_note_ct -> Nullable<Bytea>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    reports.audit_logs (id) {
        id -> Uuid,
        actor_id -> Nullable<Uuid>,
        action -> Text,
        resource -> Text,
        resource_id -> Nullable<Text>,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        changed_fields -> Array<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    reports.data_keys (user_id) {
        user_id -> Uuid,
        key_id -> Text,
        wrapped -> Bytea,
        created_at -> Timestamptz,
        rewrapped_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    reports.attachments (id) {
        id -> Uuid,
        report_id -> Uuid,
        user_id -> Uuid,
        content_type -> Text,
        size -> Int8,
        sha256 -> Text,
        object_name -> Uuid,
        created_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    reports.public_alerts (report_id) {
        report_id -> Uuid,
        status -> Text,
        category -> Text,
        severity -> Text,
        occurred_at -> Timestamptz,
        cell_lat -> Int4,
        cell_lng -> Int4,
    }
}

diesel::table! {
    reports.alert_cells (cell_lat, cell_lng) {
        cell_lat -> Int4,
        cell_lng -> Int4,
        newest -> Timestamptz,
        second -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(attachments -> reports (report_id));
diesel::allow_tables_to_appear_in_same_query!(attachments, reports);
