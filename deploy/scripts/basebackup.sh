#!/bin/sh
# Base backup for point-in-time recovery, for cron: a physical copy of the whole cluster into the
# WAL archive that deploy/scripts/archive-wal.sh fills. A base backup plus the archived WAL after
# it restores the cluster to any moment since (deploy/scripts/pitr-restore.sh; README.md,
# "Point-in-time recovery").
#
#   docker compose exec -u postgres postgres /etc/platform/basebackup.sh
#   WAL_ARCHIVE_DIR=/var/lib/postgresql/wal-archive deploy/scripts/basebackup.sh [CONNINFO]
#
# Connection: libpq's own variables (PGHOST, PGPORT, PGUSER, PGPASSWORD or PGPASSFILE, PGSSLMODE),
# or a connection URI / conninfo string as the one argument. The role needs REPLICATION (or is a
# superuser) and pg_hba.conf must let it connect for replication; inside the compose container the
# postgres account does, over the local socket.
#
# Settings:
#   WAL_ARCHIVE_DIR    the archive (default /var/lib/postgresql/wal-archive): segments in wal/,
#                      base backups in base/YYYYmmddTHHMMSSmmmZ/ (the UTC time the backup
#                      began, to the millisecond): the copy in data/, and finished_at, the
#                      time it was complete (Unix nanoseconds; pitr-restore.sh picks a backup
#                      complete before its target).
#                      Each is written as base/.partial-STAMP/, verified with pg_verifybackup and
#                      renamed at the end, so a directory with a timestamp name is always complete.
#   BASEBACKUP_KEEP    keep the newest N base backups (default 7); the WAL older than the oldest
#                      one kept is deleted with them (pg_archivecleanup): it can restore nothing.
#
# Exit codes (a cron wrapper acts on them):
#   0  the base backup is complete and verified, and retention ran
#   2  configuration: a setting is wrong, the archive is not writable, or a tool is missing
#   3  pg_basebackup failed (server unreachable, no replication permission): no backup was made
#   4  the copy failed pg_verifybackup: no backup was made
#   5  the base backup is complete, but deleting old backups or old WAL failed
#   6  writing the backup failed (disk full, rename): no backup was made
set -eu
. "$(dirname "$0")/lib.sh"

[ "$#" -le 1 ] || fail 2 "usage: basebackup.sh [CONNINFO]"
conninfo=${1:-}
archive=${WAL_ARCHIVE_DIR:-/var/lib/postgresql/wal-archive}
keep=${BASEBACKUP_KEEP:-7}
at_least BASEBACKUP_KEEP "$keep" 1
needs pg_basebackup pg_verifybackup pg_archivecleanup
[ -d "$archive" ] || fail 2 "WAL_ARCHIVE_DIR $archive does not exist"
mkdir -p "$archive/base" "$archive/wal" 2>/dev/null || fail 2 "cannot create base/ and wal/ in $archive"
[ -w "$archive/base" ] || fail 2 "$archive/base is not writable"

# To the millisecond: a second backup right after the first (a drill, a retry) gets its own name.
stamp=$(date -u +%Y%m%dT%H%M%S%3NZ)
final=$archive/base/$stamp
partial=$archive/base/.partial-$stamp
[ ! -e "$final" ] || fail 6 "$final exists already (two backups in one millisecond?)"
rm -rf "$partial"

# Plain format, so that pg_verifybackup can check every file against the backup manifest, and the
# WAL of the backup itself inside it (--wal-method=stream): the copy is consistent on its own.
mkdir -p "$partial" || fail 6 "cannot create $partial"
set -- --pgdata="$partial/data" --format=plain --wal-method=stream --checkpoint=fast \
    --manifest-checksums=SHA256 --no-password
if ! pg_basebackup "$@" ${conninfo:+--dbname="$conninfo"}; then
    rm -rf "$partial"
    fail 3 "pg_basebackup failed: no base backup was made"
fi
if ! pg_verifybackup --quiet "$partial/data"; then
    rm -rf "$partial"
    fail 4 "the copy in $partial failed pg_verifybackup: no base backup was made"
fi
date -u +%s%N >"$partial/finished_at" || {
    rm -rf "$partial"
    fail 6 "could not write $partial/finished_at"
}
sync "$partial" 2>/dev/null || true
mv "$partial" "$final" || {
    rm -rf "$partial"
    fail 6 "could not rename $partial to $final"
}
echo "basebackup.sh: base backup $final"

# Retention: the newest $keep base backups, and the WAL from the oldest of them on.
backups=$(find "$archive/base" -mindepth 1 -maxdepth 1 -type d -name '[0-9]*T[0-9]*Z' | sort)
count=$(printf '%s\n' "$backups" | grep -c . || true)
drop=$((count - keep))
if [ "$drop" -gt 0 ]; then
    printf '%s\n' "$backups" | head -n "$drop" | while read -r old; do
        rm -rf "$old" || exit 1
        echo "basebackup.sh: deleted the old base backup $old"
    done || fail 5 "could not delete old base backups"
fi
oldest=$(find "$archive/base" -mindepth 1 -maxdepth 1 -type d -name '[0-9]*T[0-9]*Z' | sort | head -n 1)
# backup_label: "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)"
first_wal=$(sed -n 's/^START WAL LOCATION: .*(file \([0-9A-F]\{24\}\))$/\1/p' "$oldest/data/backup_label")
[ -n "$first_wal" ] || fail 5 "$oldest/data/backup_label names no start WAL file: old WAL not deleted"
pg_archivecleanup "$archive/wal" "$first_wal" || fail 5 "pg_archivecleanup failed"
