//! Diesel table definitions for schema `auth` (kept in step with `migrations/`).

diesel::table! {
    auth.users (id) {
        id -> Uuid,
        email -> Text,
        password_hash -> Text,
        first_name -> Text,
        last_name -> Text,
        income_tier -> Nullable<Text>,
        email_verified -> Bool,
        roles -> Array<Text>,
        login_attempts -> Int4,
        locked_until -> Nullable<Timestamptz>,
        last_login_at -> Nullable<Timestamptz>,
        mfa_enabled -> Bool,
        mfa_secret -> Nullable<Bytea>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
        lock_count -> Int4,
        tokens_not_before -> Nullable<Timestamptz>,
        mfa_pending_secret -> Nullable<Bytea>,
        mfa_last_step -> Nullable<Int8>,
        mfa_failures -> Int4,
        mfa_locked_until -> Nullable<Timestamptz>,
        mfa_lock_count -> Int4,
    }
}

diesel::table! {
    auth.recovery_codes (id) {
        user_id -> Uuid,
        code_hash -> Nullable<Bytea>,
        created_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
        id -> Uuid,
        code_phc -> Nullable<Text>,
    }
}

diesel::table! {
    auth.sessions (id) {
        id -> Uuid,
        user_id -> Uuid,
        device_id -> Text,
        refresh_hash -> Bytea,
        previous_refresh_hash -> Nullable<Bytea>,
        rotated_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        last_used_at -> Timestamptz,
        expires_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        revoked_reason -> Nullable<Text>,
    }
}

diesel::table! {
    auth.spent_refresh_tokens (token_hash) {
        token_hash -> Bytea,
        session_id -> Uuid,
        spent_at -> Timestamptz,
    }
}

diesel::table! {
    auth.device_fingerprints (user_id, fingerprint_hash) {
        user_id -> Uuid,
        fingerprint_hash -> Bytea,
        device_id -> Text,
        platform -> Text,
        model -> Nullable<Text>,
        os_version -> Nullable<Text>,
        first_seen_at -> Timestamptz,
        last_seen_at -> Timestamptz,
        risk_score -> Int2,
        trusted -> Bool,
    }
}

diesel::table! {
    auth.token_blacklist (jti) {
        jti -> Uuid,
        user_id -> Uuid,
        device_id -> Nullable<Text>,
        reason -> Text,
        expires_at -> Timestamptz,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    auth.security_events (id) {
        id -> Uuid,
        user_id -> Nullable<Uuid>,
        event_type -> Text,
        severity -> Text,
        ip -> Nullable<Text>,
        details -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    auth.audit_logs (id) {
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
    auth.login_throttle (subject, address) {
        subject -> Bytea,
        address -> Text,
        attempts -> Int4,
        lock_count -> Int4,
        locked_until -> Nullable<Timestamptz>,
        updated_at -> Timestamptz,
    }
}

diesel::joinable!(sessions -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(users, sessions, spent_refresh_tokens, device_fingerprints);

diesel::table! {
    auth.email_tokens (token_hash) {
        token_hash -> Bytea,
        user_id -> Uuid,
        purpose -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}
