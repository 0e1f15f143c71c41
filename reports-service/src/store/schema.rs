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

diesel::joinable!(attachments -> reports (report_id));
diesel::allow_tables_to_appear_in_same_query!(attachments, reports);
