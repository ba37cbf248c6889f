#!/usr/bin/env bash
# archive_command for scripts/bench: archives one WAL file with every tool under test, each in its
# own synchronous mode, and logs how long each took. Used as
#     archive_command = '/path/bench-archive.sh ENVFILE %p %f'
# ENVFILE (re-read on every call, so the bench can switch repositories between runs) sets:
#     ARCHIVE_LOG    file to append "<file> <tool> <microseconds> <exit>" lines to
#     PGBR_TARGETS   space-separated "tool=config-file" pairs, pushed with pgbackrest archive-push
#     SNAP_TARGETS   space-separated "tool=repository" pairs, pushed with pgsnapfs wal-push
#     SNAP_BIN       the pgsnapfs binary
#     PGBR_STANZA    the stanza name
#     ASIDE_DIR      if set, WAL segments are also copied there (outside the timed part)
# The tools run one after the other, in an order that rotates with the segment number so no tool
# always goes first. Exits non-zero if any tool failed, so PostgreSQL retries the file.
set -u
envfile=$1 path=$2 file=$3
# shellcheck disable=SC1090
source "$envfile"

targets=()
for t in ${PGBR_TARGETS:-}; do targets+=("pgbr:$t"); done
for t in ${SNAP_TARGETS:-}; do targets+=("snap:$t"); done
n=${#targets[@]}
shift_by=0
if [[ $file =~ ^[0-9A-F]{24}$ ]] && [ "$n" -gt 0 ]; then
    shift_by=$(( 16#${file:16:8} % n ))
fi

status=0
for ((i = 0; i < n; i++)); do
    t=${targets[$(((i + shift_by) % n))]}
    kind=${t%%:*}
    rest=${t#*:}
    tool=${rest%%=*}
    where=${rest#*=}
    t0=$(date +%s%N)
    if [ "$kind" = pgbr ]; then
        pgbackrest --config="$where" --stanza="$PGBR_STANZA" archive-push "$path"
    else
        "$SNAP_BIN" wal-push --repo "$where" "$path"
    fi
    rc=$?
    t1=$(date +%s%N)
    echo "$file $tool $(((t1 - t0) / 1000)) $rc" >>"$ARCHIVE_LOG"
    [ "$rc" = 0 ] || status=1
done

if [ "$status" = 0 ] && [ -n "${ASIDE_DIR:-}" ] && [[ $file =~ ^[0-9A-F]{24}$ ]]; then
    cp "$path" "$ASIDE_DIR/$file.tmp" && mv "$ASIDE_DIR/$file.tmp" "$ASIDE_DIR/$file"
fi
exit $status
