#!/bin/sh
# Restores a backup made by deploy/scripts/backup.sh. README.md, "Backups and restore".
#
#   BACKUP_AGE_IDENTITY=/secure/backup-key.txt deploy/scripts/restore.sh BACKUP_DIR/20261206T020000Z [CONNINFO]
#
# Connection as in backup.sh (libpq's PG* variables, or a URI / conninfo as the second argument).
# The role must be able to drop and create the schemas and SET ROLE to each owner: a superuser,
# or the database owner that is a member of the owner roles. The roles themselves are not in the
# backup: run deploy/postgres/provision.sql first on a new server (same role prefix).
#
# For each schema (RESTORE_SCHEMAS, default: every SCHEMA.dump.age of the backup), after every
# checksum and every decryption succeeded:
#   DROP SCHEMA IF EXISTS s CASCADE; CREATE SCHEMA s AUTHORIZATION <owner>   (one transaction)
#   pg_restore --no-owner --role=<owner> --exit-on-error --single-transaction (all but the
#   CREATE SCHEMA entry), so every object is owned by the owner role again, with the grants to
#   the runtime role, the row-level security policies and the migrations table of the backup.
# The schemas' current contents are LOST: this is a disaster restore, not a merge.
#
# Settings:
#   BACKUP_AGE_IDENTITY  the age identity file (private key) matching backup.sh's recipient (required)
#   RESTORE_ROLE_PREFIX  owner role = PREFIX + schema + _owner (default svc_: svc_auth_owner)
#   RESTORE_SCHEMAS      a subset to restore, space-separated
#
# Exit codes:
#   0  every schema is restored
#   2  configuration: usage, a missing setting or tool, no such backup or schema in it
#   3  a checksum does not match or SHA256SUMS is missing: nothing was changed
#   4  age could not decrypt (wrong identity, damaged file): nothing was changed
#   5  the restore of a schema failed: schemas named before it are restored, that one is
#      rolled back to the state before pg_restore (empty, if it was dropped), later ones untouched
set -eu
. "$(dirname "$0")/lib.sh"

[ "$#" -ge 1 ] && [ "$#" -le 2 ] || fail 2 "usage: restore.sh BACKUP_PATH [CONNINFO]"
backup=$1
dbname=${2:-${PGDATABASE:-}}
[ -d "$backup" ] || fail 2 "$backup is not a backup directory"
[ -n "$dbname" ] || fail 2 "no database: give CONNINFO or set PGDATABASE"
[ -n "${BACKUP_AGE_IDENTITY:-}" ] || fail 2 "BACKUP_AGE_IDENTITY is not set"
[ -r "$BACKUP_AGE_IDENTITY" ] || fail 2 "BACKUP_AGE_IDENTITY $BACKUP_AGE_IDENTITY is not readable"
prefix=${RESTORE_ROLE_PREFIX-svc_}
needs pg_restore psql age sha256sum

schemas=${RESTORE_SCHEMAS:-}
if [ -z "$schemas" ]; then
    for f in "$backup"/*.dump.age; do
        [ -e "$f" ] || fail 2 "$backup has no SCHEMA.dump.age"
        name=${f##*/}
        schemas="$schemas ${name%.dump.age}"
    done
fi
for s in $schemas; do
    case $s in *[!a-z0-9_]*) fail 2 "schema name '$s' has characters other than a-z0-9_" ;; esac
    [ -f "$backup/$s.dump.age" ] || fail 2 "$backup has no $s.dump.age"
done

[ -f "$backup/SHA256SUMS" ] || fail 3 "$backup/SHA256SUMS is missing: not a complete backup"
(cd "$backup" && sha256sum --check --quiet --strict SHA256SUMS) || fail 3 "checksums of $backup do not match"

umask 077
work=$(mktemp -d "${TMPDIR:-/tmp}/restore.XXXXXX") || fail 2 "cannot create a temporary directory"
trap 'rm -rf "$work"' EXIT
# Everything is decrypted before anything is dropped.
for s in $schemas; do
    age --decrypt -i "$BACKUP_AGE_IDENTITY" -o "$work/$s.dump" "$backup/$s.dump.age" ||
        fail 4 "age could not decrypt $backup/$s.dump.age with $BACKUP_AGE_IDENTITY"
    pg_restore --list "$work/$s.dump" >"$work/$s.all" || fail 4 "$s.dump.age decrypts to no pg_dump archive"
    # The schema is made below by this connection (the owner may not CREATE in the database).
    grep -v -E "^[0-9]+; [0-9]+ [0-9]+ SCHEMA - $s " "$work/$s.all" >"$work/$s.list" || true
done

for s in $schemas; do
    owner="$prefix${s}_owner"
    psql -X -q -v ON_ERROR_STOP=1 --dbname="$dbname" -v schema="$s" -v owner="$owner" <<'SQL' ||
BEGIN;
DROP SCHEMA IF EXISTS :"schema" CASCADE;
CREATE SCHEMA :"schema" AUTHORIZATION :"owner";
COMMIT;
SQL
        fail 5 "could not recreate schema $s owned by $owner (does the role exist? provision.sql)"
    pg_restore --no-owner --role="$owner" --exit-on-error --single-transaction \
        --use-list="$work/$s.list" --dbname="$dbname" "$work/$s.dump" ||
        fail 5 "pg_restore of schema $s failed: it is empty now; fix the cause and run restore.sh again"
    echo "restore.sh: schema $s restored from $backup (owner $owner)"
done
exit 0
