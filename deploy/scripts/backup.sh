#!/bin/sh
# Encrypted logical backup of the platform's schemas, for cron or the Kubernetes CronJob
# (deploy/k8s/base/backup-cronjob.yaml). README.md, "Backups and restore", says how to restore.
#
#   BACKUP_DIR=/var/backups/platform BACKUP_AGE_RECIPIENT=age1... deploy/scripts/backup.sh [CONNINFO]
#
# Connection: libpq's own variables (PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD or PGPASSFILE,
# PGSSLMODE, PGSSLROOTCERT), or a connection URI / conninfo string as the one argument
# (`postgresql://user@host:5432/platform?sslmode=verify-full`), which is given to pg_dump as
# --dbname; or BACKUP_DATABASE_URL_FILE, a file holding that URI (the CronJob's Secret). The
# role must read every row: the tables use FORCE ROW LEVEL SECURITY, so a schema's owner is not
# enough; use a role with BYPASSRLS and SELECT on the schemas (README.md), or a superuser.
#
# Settings:
#   BACKUP_DIR             where backups go (required); each is a directory YYYYmmddTHHMMSSZ/ with
#                          SCHEMA.dump.age (pg_dump --format=custom, encrypted with age) and
#                          SHA256SUMS. It is written as .partial-STAMP/ and renamed at the end,
#                          so a directory with a timestamp name is always complete.
#   BACKUP_AGE_RECIPIENT   age public key(s) (age1...), space-separated; or
#   BACKUP_AGE_RECIPIENTS_FILE  a file of them (age -R). Only the public key lives here: the
#                          identity (private key) stays offline, restore.sh reads it.
#   BACKUP_SCHEMAS         default "auth reports analytics"
#   BACKUP_KEEP            keep the newest N backups, delete older ones (default 14)
#   BACKUP_MAX_AGE_DAYS    and delete backups older than this many days (default 35), except the
#                          newest one: a cron that stalled for weeks never deletes the last backup
#
# Exit codes (a cron wrapper or the CronJob's alerting acts on them):
#   0  the backup is complete and retention ran
#   2  configuration: a setting is missing or wrong, or pg_dump / age / sha256sum is missing
#   3  pg_dump failed (database unreachable, permission denied): no backup was made
#   4  age failed to encrypt: no backup was made
#   5  the backup is complete, but deleting old backups failed
#   6  writing the backup failed (disk full, checksums, rename): no backup was made
set -eu
. "$(dirname "$0")/lib.sh"

[ "$#" -le 1 ] || fail 2 "usage: backup.sh [CONNINFO]"
dbname=${1:-}
if [ -z "$dbname" ] && [ -n "${BACKUP_DATABASE_URL_FILE:-}" ]; then
    [ -r "$BACKUP_DATABASE_URL_FILE" ] || fail 2 "BACKUP_DATABASE_URL_FILE $BACKUP_DATABASE_URL_FILE is not readable"
    dbname=$(cat "$BACKUP_DATABASE_URL_FILE")
fi
dbname=${dbname:-${PGDATABASE:-}}
[ -n "$dbname" ] || fail 2 "no database: give CONNINFO or set PGDATABASE"
[ -n "${BACKUP_DIR:-}" ] || fail 2 "BACKUP_DIR is not set"
schemas=${BACKUP_SCHEMAS:-auth reports analytics}
keep=${BACKUP_KEEP:-14}
max_age=${BACKUP_MAX_AGE_DAYS:-35}
at_least BACKUP_KEEP "$keep" 1
at_least BACKUP_MAX_AGE_DAYS "$max_age" 0

# age's recipient arguments.
set --
if [ -n "${BACKUP_AGE_RECIPIENTS_FILE:-}" ]; then
    [ -r "$BACKUP_AGE_RECIPIENTS_FILE" ] || fail 2 "BACKUP_AGE_RECIPIENTS_FILE $BACKUP_AGE_RECIPIENTS_FILE is not readable"
    set -- -R "$BACKUP_AGE_RECIPIENTS_FILE"
fi
for r in ${BACKUP_AGE_RECIPIENT:-}; do
    case $r in age1*) ;; *) fail 2 "BACKUP_AGE_RECIPIENT '$r' is not an age public key (age1...)" ;; esac
    set -- "$@" -r "$r"
done
[ "$#" -gt 0 ] || fail 2 "neither BACKUP_AGE_RECIPIENT nor BACKUP_AGE_RECIPIENTS_FILE is set"

needs pg_dump age sha256sum
for s in $schemas; do
    case $s in *[!a-z0-9_]*) fail 2 "schema name '$s' has characters other than a-z0-9_" ;; esac
done

mkdir -p "$BACKUP_DIR" || fail 6 "cannot create $BACKUP_DIR"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
final="$BACKUP_DIR/$stamp"
partial="$BACKUP_DIR/.partial-$stamp"
[ ! -e "$final" ] || fail 6 "$final exists already (two runs in one second?)"
umask 077
rm -rf "$partial"
mkdir "$partial" || fail 6 "cannot create $partial"
# Anything short of the rename leaves no directory that looks like a backup.
trap 'rm -rf "$partial"' EXIT

for s in $schemas; do
    status="$partial/.$s.pg_dump-status"
    # pg_dump's status survives the pipe through a file (POSIX sh has no pipefail); the
    # plain-text dump never touches the disk.
    { pg_dump --format=custom --schema="$s" --dbname="$dbname" || echo "$?" >"$status"; } |
        age "$@" -o "$partial/$s.dump.age" || {
        [ -s "$status" ] && fail 3 "pg_dump of schema $s failed (exit $(cat "$status"))"
        fail 4 "age could not encrypt schema $s"
    }
    [ ! -s "$status" ] || fail 3 "pg_dump of schema $s failed (exit $(cat "$status"))"
    rm -f "$status"
done

(cd "$partial" && sha256sum -- *.dump.age >SHA256SUMS) || fail 6 "writing SHA256SUMS failed"
sync "$partial"/* 2>/dev/null || true
mv "$partial" "$final" || fail 6 "renaming $partial to $final failed"
trap - EXIT
echo "backup.sh: $final ($(echo $schemas))"

# Retention, on complete backups only (timestamp names): beyond the newest BACKUP_KEEP, then
# older than BACKUP_MAX_AGE_DAYS but the newest. .partial-* left by a killed run go after a day.
retention_failed=0
now=$(date -u +%s)
n=0
for dir in $(ls -1 "$BACKUP_DIR" | grep -E '^[0-9]{8}T[0-9]{6}Z$' | sort -r); do
    n=$((n + 1))
    [ "$n" -gt "$keep" ] || continue
    rm -rf "${BACKUP_DIR:?}/$dir" || retention_failed=1
done
n=0
for dir in $(ls -1 "$BACKUP_DIR" | grep -E '^[0-9]{8}T[0-9]{6}Z$' | sort -r); do
    n=$((n + 1))
    [ "$n" -gt 1 ] || continue
    day=$(echo "$dir" | sed -E 's/^([0-9]{4})([0-9]{2})([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})Z$/\1-\2-\3 \4:\5:\6/')
    made=$(date -u -d "$day" +%s 2>/dev/null) || { retention_failed=1; continue; }
    [ $(((now - made) / 86400)) -ge "$max_age" ] || continue
    rm -rf "${BACKUP_DIR:?}/$dir" || retention_failed=1
done
find "$BACKUP_DIR" -maxdepth 1 -name '.partial-*' -mmin +1440 -exec rm -rf {} + 2>/dev/null || retention_failed=1
[ "$retention_failed" -eq 0 ] || fail 5 "the backup $final is complete, but deleting old backups failed"
exit 0
