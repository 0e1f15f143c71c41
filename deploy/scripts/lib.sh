# shellcheck shell=sh
# What the backup and restore scripts of deploy/scripts share; each sources it right after
# `set -eu` with
#
#   . "$(dirname "$0")/lib.sh"
#
# so it must be installed next to them (deploy/scripts/backup.Dockerfile, docker-compose.yml).
# Messages start with the name of the script that sourced this file, as they did before.

# fail CODE MESSAGE...: the message on stderr, then exit CODE (each script lists its codes).
fail() {
    code=$1
    shift
    echo "${0##*/}: $*" >&2
    exit "$code"
}

# needs TOOL...: exit 2 (configuration) unless every TOOL is on PATH.
needs() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || fail 2 "$tool is not installed"
    done
}

# at_least NAME VALUE MIN: exit 2 (configuration) unless VALUE, the setting NAME, is a whole
# number of at least MIN.
at_least() {
    case $2 in '' | *[!0-9]*) fail 2 "$1 must be a whole number, not '$2'" ;; esac
    [ "$2" -ge "$3" ] || fail 2 "$1 must be at least $3"
}
