-- One service's PostgreSQL roles and schema: the one source that `cargo xtask` (up, test, bench;
-- xtask/src/provision.rs reads this file) and the docker-compose PostgreSQL init script both run.
--
-- Two roles per service, in the database this runs in:
--   <role_prefix><service>_owner  owns schema <service> and every object in it; LOGIN; used only
--                                 to run migrations (`SERVICE migrate`, MIGRATE_ON_START), through
--                                 DATABASE_MIGRATION_URL.
--   <role_prefix><service>        the runtime role the service serves with (DATABASE_URL): owns
--                                 nothing, is no member of the owner, NOSUPERUSER NOBYPASSRLS
--                                 NOCREATEDB NOCREATEROLE; USAGE on the schema, SELECT, INSERT,
--                                 UPDATE, DELETE on its tables and USAGE, SELECT on its sequences,
--                                 today's and every one a later migration creates (default
--                                 privileges of the owner). It cannot ALTER, DROP or CREATE
--                                 anything, nor turn row-level security off.
-- Both roles get `search_path = <service>` in this database; nobody else gets a right on the
-- schema, and schema public and the database are closed to PUBLIC.
--
-- Run it with psql, connected to the application's database as a superuser (or, on a managed
-- server, the administrator role that may create roles), once per service:
--
--   psql -X -q -v ON_ERROR_STOP=1 -d platform -f deploy/postgres/provision.sql \
--        -v service=auth -v role_prefix= \
--        -v owner_password="$(cat /run/secrets/auth_db_owner_password)" \
--        -v runtime_password="$(cat /run/secrets/auth_db_password)"
--
-- Every variable must be given (an empty value is allowed):
--   service           the service's schema: auth, reports or analytics.
--   role_prefix       put before both role names (xtask uses svc_ for `up`); may be empty.
--   owner_password    the owner role's password; empty leaves the current one (or none) as is.
--   runtime_password  the runtime role's password; empty leaves it as is. A SCRAM verifier
--                     (SCRAM-SHA-256$...) is stored as given, so the plain password never reaches
--                     the server.
-- It prints one row: the owner role and the runtime role.
--
-- Re-running is safe: roles and schema are created when missing and altered to this shape
-- otherwise (attributes, passwords, grants). Upgrading a database provisioned with one role per
-- service (that role owned the schema): that role becomes the runtime role, and everything it
-- owns in this database moves to the new owner role (REASSIGN OWNED), data untouched. Then run
-- each service's migrations with the owner's credentials.
--
-- The DO block reads its inputs from SET LOCAL settings, because psql does not substitute
-- variables inside dollar-quoted bodies; the whole file is one transaction.

BEGIN;

SET LOCAL provision.service = :'service';
SET LOCAL provision.role_prefix = :'role_prefix';
SET LOCAL provision.owner_password = :'owner_password';
SET LOCAL provision.runtime_password = :'runtime_password';

DO $provision$
DECLARE
    schema_name text := current_setting('provision.service');
    prefix      text := current_setting('provision.role_prefix');
    owner_role  text := prefix || schema_name || '_owner';
    runtime     text := prefix || schema_name;
    owner_pw    text := current_setting('provision.owner_password');
    runtime_pw  text := current_setting('provision.runtime_password');
    db          text := current_database();
    role_name   text;
BEGIN
    IF schema_name !~ '^[a-z][a-z0-9_]*$' OR schema_name = 'public' THEN
        RAISE EXCEPTION 'service must be a lower-case identifier naming the service''s schema, got "%"', schema_name;
    END IF;
    IF prefix !~ '^[a-z0-9_]*$' THEN
        RAISE EXCEPTION 'role_prefix may hold lower-case letters, digits and _ only, got "%"', prefix;
    END IF;
    IF current_user IN (owner_role, runtime) THEN
        RAISE EXCEPTION 'run this as an administrator, not as % itself', current_user;
    END IF;

    -- Roles: created when missing, then given exactly these attributes.
    FOREACH role_name IN ARRAY ARRAY[owner_role, runtime] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('CREATE ROLE %I', role_name);
        END IF;
        EXECUTE format(
            'ALTER ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION',
            role_name);
        EXECUTE format('ALTER ROLE %I IN DATABASE %I SET search_path = %I', role_name, db, schema_name);
    END LOOP;
    IF owner_pw <> '' THEN
        EXECUTE format('ALTER ROLE %I PASSWORD %L', owner_role, owner_pw);
    END IF;
    IF runtime_pw <> '' THEN
        EXECUTE format('ALTER ROLE %I PASSWORD %L', runtime, runtime_pw);
    END IF;
    -- The runtime role must not be able to SET ROLE to the owner (or to anyone).
    FOR role_name IN
        SELECT g.rolname FROM pg_auth_members m
        JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member
        WHERE r.rolname = runtime
    LOOP
        EXECUTE format('REVOKE %I FROM %I', role_name, runtime);
    END LOOP;

    -- The database: CONNECT for both, temporary tables for the owner only (migrations may use
    -- them); nothing for PUBLIC.
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', db);
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', db, owner_role);
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM %I', db, runtime);
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', db, runtime);
    REVOKE ALL ON SCHEMA public FROM PUBLIC;

    -- The schema and everything in it belong to the owner. A database from before the split
    -- has the runtime role owning them: move all it owns here (it must own nothing).
    IF NOT EXISTS (SELECT FROM pg_namespace WHERE nspname = schema_name) THEN
        EXECUTE format('CREATE SCHEMA %I AUTHORIZATION %I', schema_name, owner_role);
    END IF;
    IF EXISTS (
        SELECT FROM pg_shdepend d JOIN pg_roles r ON r.oid = d.refobjid
        WHERE r.rolname = runtime AND d.deptype = 'o'
          AND d.dbid IN (0, (SELECT oid FROM pg_database WHERE datname = db))
    ) THEN
        RAISE NOTICE 'moving what % owns to %', runtime, owner_role;
        EXECUTE format('REASSIGN OWNED BY %I TO %I', runtime, owner_role);
    END IF;
    EXECUTE format('ALTER SCHEMA %I OWNER TO %I', schema_name, owner_role);

    -- The runtime role's rights: data only, on today's objects and on every one the owner
    -- creates later.
    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', schema_name);
    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM %I', schema_name, runtime);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', schema_name, runtime);
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM %I', schema_name, runtime);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I',
        schema_name, runtime);
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM %I', schema_name, runtime);
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I', schema_name, runtime);
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I '
        'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I', owner_role, schema_name, runtime);
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I '
        'GRANT USAGE, SELECT ON SEQUENCES TO %I', owner_role, schema_name, runtime);
    -- Migration bookkeeping is the owner's: the runtime role reads it, never writes it.
    IF to_regclass(format('%I.__diesel_schema_migrations', schema_name)) IS NOT NULL THEN
        EXECUTE format('REVOKE INSERT, UPDATE, DELETE ON %I.__diesel_schema_migrations FROM %I',
            schema_name, runtime);
    END IF;

    -- What the service checks at start, checked here first.
    IF pg_has_role(runtime, owner_role, 'MEMBER') THEN
        RAISE EXCEPTION '% is still a member of %', runtime, owner_role;
    END IF;
    IF EXISTS (SELECT FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
               WHERE r.rolname = runtime) THEN
        RAISE EXCEPTION '% still owns relations in database %', runtime, db;
    END IF;

    PERFORM set_config('provision.owner_role', owner_role, true),
            set_config('provision.runtime_role', runtime, true);
END
$provision$;

SELECT current_setting('provision.owner_role') AS owner_role,
       current_setting('provision.runtime_role') AS runtime_role;

COMMIT;
