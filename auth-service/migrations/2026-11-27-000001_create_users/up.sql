-- Accounts. E-mail is unique case-insensitively among live accounts; deleted ones keep their row
-- (for the retention window) without blocking a new sign-up with the same address.
CREATE TABLE auth.users (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    email           text        NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
    password_hash   text        NOT NULL CHECK (password_hash LIKE '$%'),
    first_name      text        NOT NULL CHECK (char_length(first_name) BETWEEN 1 AND 100),
    last_name       text        NOT NULL CHECK (char_length(last_name) BETWEEN 1 AND 100),
    income_tier     text        CHECK (income_tier IN ('low', 'lower_middle', 'middle', 'upper_middle', 'high')),
    email_verified  boolean     NOT NULL DEFAULT false,
    roles           text[]      NOT NULL DEFAULT ARRAY['user']::text[]
                                CHECK (roles <@ ARRAY['user', 'moderator', 'admin']::text[]),
    login_attempts  integer     NOT NULL DEFAULT 0 CHECK (login_attempts >= 0),
    locked_until    timestamptz,
    last_login_at   timestamptz,
    mfa_enabled     boolean     NOT NULL DEFAULT false,
    mfa_secret      bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);

CREATE UNIQUE INDEX users_email_live_key ON auth.users (lower(email)) WHERE deleted_at IS NULL;
CREATE INDEX users_deleted_at_idx ON auth.users (deleted_at) WHERE deleted_at IS NOT NULL;
