#!/bin/sh
# PostgreSQL's archive_command (docker-compose.yml, service postgres): copies one finished WAL
# segment into the archive that point-in-time recovery replays (deploy/scripts/pitr-restore.sh).
#
#   archive_command = '/etc/platform/archive-wal.sh %p %f /var/lib/postgresql/wal-archive'
#
# The segment goes to ARCHIVE/wal/NAME through a temporary name, flushed to disk before the
# rename, so the archive never holds a half-written segment under a real name. PostgreSQL retries
# a segment until this succeeds, and may offer one again after a crash: a segment already there
# with the same bytes is success, one with other bytes is refused (never overwritten), and that
# failure shows in pg_stat_archiver and in the server log until an operator looks.
#
# Exit codes (PostgreSQL only tells zero from non-zero):
#   0  the segment is in the archive
#   1  it is not (the archive is full or unwritable, or holds other bytes under that name)
set -eu

[ "$#" -eq 3 ] || {
    echo "archive-wal.sh: usage: archive-wal.sh %p %f ARCHIVE_DIR" >&2
    exit 1
}
source_path=$1
name=$2
dir=$3/wal
case $name in '' | */* | .*)
    echo "archive-wal.sh: '$name' is not a WAL file name" >&2
    exit 1
    ;;
esac

mkdir -p "$dir"
target=$dir/$name
if [ -f "$target" ]; then
    if cmp -s "$source_path" "$target"; then
        exit 0
    fi
    echo "archive-wal.sh: $target exists with other contents; not overwriting it" >&2
    exit 1
fi
partial=$dir/.$name.partial
cp "$source_path" "$partial"
sync "$partial"
mv "$partial" "$target"
sync "$dir"
