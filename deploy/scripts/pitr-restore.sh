#!/bin/sh
# Point-in-time recovery: prepares a NEW data directory that, when PostgreSQL starts on it,
# replays the archived WAL up to TARGET_TIME and then opens for writes (a new timeline). Uses the
# base backups of deploy/scripts/basebackup.sh and the segments of deploy/scripts/archive-wal.sh.
# README.md, "Point-in-time recovery", has the whole procedure.
#
#   docker compose run --rm --no-deps -u postgres --entrypoint /etc/platform/pitr-restore.sh \
#       postgres '2026-12-06 14:05:00+00'
#   WAL_ARCHIVE_DIR=/var/lib/postgresql/wal-archive deploy/scripts/pitr-restore.sh TARGET_TIME [DATA_DIR]
#
# Run it as the account PostgreSQL runs as (the data directory must be that account's).
# TARGET_TIME: a timestamp with its zone, as PostgreSQL reads it ('2026-12-06 14:05:00+00',
# '2026-12-06T14:05:00Z'). Every transaction committed up to it is there; none after it.
# DATA_DIR (default $PGDATA) must be missing or empty: move the damaged cluster aside first, it
# is never deleted here.
#
# Settings:
#   WAL_ARCHIVE_DIR    the archive (default /var/lib/postgresql/wal-archive)
#   PITR_BASE_BACKUP   the base backup to start from (a directory name under base/, or a path);
#                      default: the newest one complete before TARGET_TIME (its finished_at):
#                      recovery cannot stop at a moment before its base backup was complete
#
# What it writes: the base backup's files, checked with pg_verifybackup; recovery.signal; and in
# postgresql.auto.conf restore_command (a copy from the archive), recovery_target_time and
# recovery_target_action = 'promote'. Once PostgreSQL has promoted (SELECT pg_is_in_recovery()
# answers false), remove those settings (ALTER SYSTEM RESET, README.md), so that no later standby
# or recovery started from this directory stops at the old target.
#
# Exit codes:
#   0  DATA_DIR is ready: start PostgreSQL on it
#   2  configuration: usage, an unreadable TARGET_TIME, DATA_DIR not empty, no archive, a tool missing
#   3  no base backup was complete before TARGET_TIME (or PITR_BASE_BACKUP is not one)
#   4  the base backup fails pg_verifybackup: DATA_DIR was not touched
#   6  writing DATA_DIR failed (disk full, permissions): remove what was written and run again
set -eu
. "$(dirname "$0")/lib.sh"

[ "$#" -ge 1 ] && [ "$#" -le 2 ] || fail 2 "usage: pitr-restore.sh TARGET_TIME [DATA_DIR]"
target=$1
data=${2:-${PGDATA:-}}
archive=${WAL_ARCHIVE_DIR:-/var/lib/postgresql/wal-archive}
[ -n "$data" ] || fail 2 "no data directory: give DATA_DIR or set PGDATA"
case $target in *"'"* | *\\*) fail 2 "TARGET_TIME must not contain quotes or backslashes" ;; esac
case $archive in *"'"* | *'"'* | *\\*) fail 2 "WAL_ARCHIVE_DIR must not contain quotes or backslashes" ;; esac
target_ns=$(date -u -d "$target" +%s%N 2>/dev/null) ||
    fail 2 "cannot read TARGET_TIME '$target': give a time with its zone, e.g. '2026-12-06 14:05:00+00'"
needs pg_verifybackup date
[ -d "$archive/wal" ] || fail 2 "$archive/wal does not exist: is WAL_ARCHIVE_DIR the archive?"
if [ -e "$data" ]; then
    [ -d "$data" ] || fail 2 "$data is not a directory"
    [ -z "$(ls -A "$data")" ] || fail 2 "$data is not empty: move the old cluster aside first"
fi

if [ -n "${PITR_BASE_BACKUP:-}" ]; then
    case $PITR_BASE_BACKUP in
        */*) base=$PITR_BASE_BACKUP ;;
        *) base=$archive/base/$PITR_BASE_BACKUP ;;
    esac
    [ -f "$base/data/backup_label" ] || fail 3 "$base is not a base backup (no data/backup_label)"
else
    base=
    for candidate in $(find "$archive/base" -mindepth 1 -maxdepth 1 -type d -name '[0-9]*T[0-9]*Z' 2>/dev/null | sort); do
        finished=$(cat "$candidate/finished_at" 2>/dev/null || true)
        case $finished in '' | *[!0-9]*) continue ;; esac
        if [ "$finished" -lt "$target_ns" ]; then
            base=$candidate
        fi
    done
    [ -n "$base" ] || fail 3 "no base backup in $archive/base was complete before $target"
fi
pg_verifybackup --quiet "$base/data" || fail 4 "$base fails pg_verifybackup: not restored"
echo "pitr-restore.sh: restoring $base, then the WAL in $archive/wal up to $target"

mkdir -p "$data" || fail 6 "cannot create $data"
chmod 700 "$data" || fail 6 "cannot set the mode of $data"
cp -R "$base/data/." "$data/" || fail 6 "copying $base/data into $data failed"
rm -f "$data/backup_manifest" "$data/postmaster.pid" "$data/postmaster.opts"
{
    echo "# Written by pitr-restore.sh: remove after the recovery (README.md, \"Point-in-time recovery\")."
    echo "restore_command = 'cp \"$archive/wal/%f\" \"%p\"'"
    echo "recovery_target_time = '$target'"
    echo "recovery_target_action = 'promote'"
} >>"$data/postgresql.auto.conf" || fail 6 "writing $data/postgresql.auto.conf failed"
: >"$data/recovery.signal" || fail 6 "writing $data/recovery.signal failed"
sync "$data" 2>/dev/null || true
echo "pitr-restore.sh: $data is ready; start PostgreSQL on it, and once SELECT pg_is_in_recovery() is false, reset the recovery settings (README.md)"
