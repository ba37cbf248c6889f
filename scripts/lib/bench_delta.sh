# shellcheck shell=bash
# Delta restore (issue 20), sourced by scripts/bench. On the main cluster (running), into two
# fresh repositories (pgBackRest and pgsnapfs, both archiving):
#   1. a full backup with each tool; pgbench_history's row count is noted;
#   2. pgbench -T DELTA_SECONDS -c 4 (default 10 s: an old primary that ran on a little); the
#      server is stopped;
#   3. for each tool, on a fresh copy of that data directory (cp -a, page cache dropped): a delta
#      restore to the backup's end (pgbackrest restore --delta --type=immediate; pgsnapfs restore
#      --delta --backup ID), timed; then a server started on it must pause at the target with
#      the noted row count;
#   4. each tool's delta restore again over its directory once that server stopped (little
#      differs: what the paused recovery wrote), page cache dropped;
#   5. for scale, a plain pgsnapfs restore into an empty directory.
# Rows: delta_restore and delta_restore_again (tool pgbackrest, pgsnapfs), delta_restore
# pgsnapfs-full, with pgsnapfs's bytes compared and written. Printed on stderr for docs/benchmarks.md. Needs BIN, SOCK, PORT, DATA,
# RESULTS, BENCH, PG_BIN and the helpers of scripts/bench; leaves the server running.

# delta_check DIR TOOL: a server on DIR pauses at the target with the noted rows.
delta_check() {
    local dir=$1 tool=$2 port sock="$BENCH/sock-delta" rows
    port=$(free_port)
    start_server "$dir" "$port" "$sock" "$BENCH/logs/delta-$tool.log" "$RESTORED_OPTS"
    wait_until "the $tool delta restore to pause" 600 paused "$sock" "$port"
    rows=$(sql "$sock" "$port" "SELECT count(*) FROM pgbench_history")
    stop_server "$dir"
    [ "$rows" = "$DELTA_ROWS" ] || die "$tool delta restore: $rows rows in pgbench_history, expected $DELTA_ROWS"
}

# delta_copy: a fresh copy of the stopped cluster's directory, owned by postgres, page cache
# dropped; prints its path.
delta_copy() {
    local dir="$BENCH/delta-data"
    rm -rf "$dir"
    cp -a "$DATA" "$dir"
    drop_caches
    echo "$dir"
}

delta_rows() {
    local seconds=${DELTA_SECONDS:-10} snap conf out dir id
    log "delta restore: backups, pgbench ${seconds} s, then restore --delta with each tool"
    backups_with_both delta
    snap=$BOTH_REPO conf=$BOTH_CONF id=$BOTH_ID
    DELTA_ROWS=$(sql "$SOCK" "$PORT" "SELECT count(*) FROM pgbench_history")
    as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -n -T "$seconds" -c 4 postgres \
        >"$BENCH/logs/delta-pgbench.out" 2>&1 ||
        { cat "$BENCH/logs/delta-pgbench.out" >&2; die "pgbench failed"; }
    switch_and_wait_archived
    stop_server "$DATA"
    local size
    size=$(bytes_of "$DATA")

    local key
    dir=$(delta_copy)
    for key in delta_restore delta_restore_again; do
        drop_caches
        measure "$key" pgbackrest 1 -- "${PGRUN[@]}" pgbackrest --config="$conf" --stanza=bench \
            restore --delta --pg1-path="$dir" --type=immediate --target-action=pause ||
            die "pgbackrest restore --delta failed"
        rec "$key" pgbackrest 1 dir_bytes="$size"
        delta_check "$dir" pgbackrest
    done

    dir=$(delta_copy)
    out="$BENCH/delta-restore.json"
    for key in delta_restore delta_restore_again; do
        drop_caches
        measure "$key" pgsnapfs 1 --stdout "$out" -- "${PGRUN[@]}" "$BIN" restore --repo "$snap" \
            --to "$dir" --delta --backup "$id" --json || die "pgsnapfs restore --delta failed"
        rec "$key" pgsnapfs 1 dir_bytes="$size" bytes="$(json_get "$out" bytes)" \
            bytes_compared="$(json_get "$out" bytes_compared)" \
            bytes_written="$(json_get "$out" bytes_written)" \
            files_written="$(json_get "$out" files_written)" files_removed="$(json_get "$out" files_removed)"
        delta_check "$dir" pgsnapfs
    done
    rm -rf "$dir"

    dir="$BENCH/states/delta-full"
    drop_caches
    measure delta_restore pgsnapfs-full 1 -- "${PGRUN[@]}" "$BIN" restore --repo "$snap" \
        --to "$dir" --backup "$id" || die "pgsnapfs restore failed"
    rm -rf "$dir" "$snap" "$BENCH/repos/delta-pgbackrest"
    set_archive_targets "" ""
    start_server "$DATA" "$PORT" "$SOCK" "$BENCH/logs/main.log"
    delta_print
}

# The rows as a markdown table on stderr (docs/benchmarks.md, "Delta restore").
delta_print() {
    print_rows <<'PY'
mem = lambda r: f"{(r.get('peak_rss_kb') or 0) // 1024} MiB"
print("| delta restore of the data directory | pgBackRest `restore --delta` | pgsnapfs `restore --delta` | pgsnapfs wrote |")
print("|---|---|---|---|")
for k, what in (("delta_restore", "after backup + pgbench"), ("delta_restore_again", "again, after the check's start")):
    br, sn = get(k, "pgbackrest"), get(k, "pgsnapfs")
    print(f"| {what} | {br.get('wall_s')} s, {mem(br)} | {sn.get('wall_s')} s, {mem(sn)} | {mib(sn.get('bytes_written'))} of {mib(sn.get('bytes'))}, {sn.get('files_removed')} files removed |")
full = get("delta_restore", "pgsnapfs-full")
print(f"| plain restore into an empty directory | | {full.get('wall_s')} s, {mem(full)} | all |")
PY
}
