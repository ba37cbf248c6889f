# shellcheck shell=bash
# pgsnapfs on a pgBackRest repository as it is (issue 21), sourced by scripts/bench. On the main
# cluster (running), one full pgBackRest backup (zst, the bench's pgBackRest settings), then:
#   1. pgbr_first_query: a view of it mounted with --repo pgbackrest:PATH (the first use
#      imports the backup into the cache repository), its server started, a first query
#      answered; then the same again with the cache filled; against pgBackRest restore
#      (--type=immediate --target-action=promote) + start + the same query;
#   2. pgbr_cold_scan: count(*) of pgbench_accounts, page cache dropped, on the view and on the
#      pgBackRest-restored directory;
#   3. pgbr_import: `pgsnapfs import` of the stanza into a new repository: its throughput.
# Printed on stderr for docs/benchmarks.md. Needs BIN, SOCK, PORT, DATA, RESULTS, BENCH, PG_BIN
# and the helpers of scripts/bench; leaves the main server running.

# pgbr_view_query RUN: mounts a view of the stanza's newest backup, starts a server on it and
# answers a first query, timed as pgbr_first_query pgsnapfs-RUN; leaves it running.
pgbr_view_query() {
    local run=$1 t0
    drop_caches
    t0=$(now_ns)
    mount_view "$BENCH/mnt/pgbr-$run" "$BENCH/states/pgbr-scratch-$run" "pgbr_mount" \
        "pgsnapfs-$run" 1 --backup latest
    PGBR_SOCK="$BENCH/sock-pgbr-$run"
    PGBR_PORT=$(free_port)
    start_server "$BENCH/mnt/pgbr-$run" "$PGBR_PORT" "$PGBR_SOCK" "$BENCH/logs/pgbr-$run.log" \
        "$RESTORED_OPTS"
    sql "$PGBR_SOCK" "$PGBR_PORT" "SELECT count(*) FROM pgbench_branches" >/dev/null ||
        die "no answer from the view of the pgBackRest backup"
    rec pgbr_first_query "pgsnapfs-$run" 1 wall_s="$(secs_since "$t0")"
}

# pgbr_scan TOOL SOCK PORT: a cold count(*) of pgbench_accounts.
pgbr_scan() {
    local t0 n
    drop_caches
    t0=$(now_ns)
    n=$(sql "$2" "$3" "SELECT count(*) FROM pgbench_accounts")
    rec pgbr_cold_scan "$1" 1 wall_s="$(secs_since "$t0")" rows="$n"
}

pgbr_mount_rows() {
    local repo="$BENCH/repos/pgbr-mount" conf cache="$BENCH/pgbr-cache" t0 size
    log "a pgBackRest repository as it is: mount + first query, cold scan, import"
    conf=$(pgbr_conf pgbrmount "$repo")
    pgbr "$conf" stanza-create >/dev/null
    set_archive_targets "pgbackrest=$conf" ""
    sql "$SOCK" "$PORT" "CHECKPOINT" >/dev/null
    pgbr "$conf" backup --type=full >/dev/null || die "pgbackrest backup failed"
    switch_and_wait_archived
    size=$(bytes_of "$DATA")
    mkdir -p "$cache"
    local saved_repo=${SNAP_REPO:-} saved_extra=("${MOUNT_EXTRA[@]}")
    SNAP_REPO="pgbackrest:$repo"
    MOUNT_EXTRA=(--stanza bench --pgbackrest-cache "$cache")
    local run
    for run in cold warm; do
        pgbr_view_query "$run"
        [ "$run" = warm ] && pgbr_scan pgsnapfs "$PGBR_SOCK" "$PGBR_PORT"
        stop_server "$BENCH/mnt/pgbr-$run"
        unmount_view "$BENCH/mnt/pgbr-$run"
    done
    SNAP_REPO=$saved_repo
    MOUNT_EXTRA=("${saved_extra[@]}")
    rec pgbr_cache pgsnapfs 1 cache_bytes="$(bytes_of "$cache")" data_bytes="$size" \
        pgbr_bytes="$(bytes_of "$repo/backup")"

    local dir="$BENCH/states/pgbr-restored"
    drop_caches
    t0=$(now_ns)
    as_pg mkdir -p "$dir"
    pgbr "$conf" restore --pg1-path="$dir" --type=immediate --target-action=promote >/dev/null ||
        die "pgbackrest restore failed"
    PGBR_SOCK="$BENCH/sock-pgbr-restored"
    PGBR_PORT=$(free_port)
    start_server "$dir" "$PGBR_PORT" "$PGBR_SOCK" "$BENCH/logs/pgbr-restored.log" "$RESTORED_OPTS"
    sql "$PGBR_SOCK" "$PGBR_PORT" "SELECT count(*) FROM pgbench_branches" >/dev/null ||
        die "no answer from the pgBackRest-restored server"
    rec pgbr_first_query pgbackrest 1 wall_s="$(secs_since "$t0")"
    pgbr_scan pgbackrest "$PGBR_SOCK" "$PGBR_PORT"
    stop_server "$dir"
    rm -rf "$dir"

    local target="$BENCH/repos/pgbr-import"
    as_pg "$BIN" init --repo "$target" --compression-level 3 >/dev/null
    drop_caches
    measure pgbr_import pgsnapfs 1 -- "${PGRUN[@]}" "$BIN" import --repo "$target" \
        --from "pgbackrest:$repo" --stanza bench || die "pgsnapfs import failed"
    rec pgbr_import pgsnapfs 1 bytes="$size"
    rm -rf "$target" "$repo" "$cache" "$BENCH/states"/pgbr-scratch-*
    set_archive_targets "" ""
    pgbr_mount_print
}

# The rows as a markdown table on stderr (docs/benchmarks.md, "pgBackRest repositories").
pgbr_mount_print() {
    print_rows <<'PY'
cold, warm = get("pgbr_first_query", "pgsnapfs-cold"), get("pgbr_first_query", "pgsnapfs-warm")
br = get("pgbr_first_query", "pgbackrest")
scan, brscan = get("pgbr_cold_scan", "pgsnapfs"), get("pgbr_cold_scan", "pgbackrest")
imp, cache = get("pgbr_import", "pgsnapfs"), get("pgbr_cache", "pgsnapfs")
rate = f"{imp['bytes'] / 1048576 / imp['wall_s']:.0f} MiB/s" if imp.get("wall_s") else "?"
print("| a pgBackRest repository as it is | pgsnapfs | pgBackRest restore + start |")
print("|---|---|---|")
print(f"| mount (first use: import into the cache) + start + first query | {cold.get('wall_s')} s | {br.get('wall_s')} s |")
print(f"| the same, cache filled | {warm.get('wall_s')} s | |")
print(f"| cold count(*) of pgbench_accounts | {scan.get('wall_s')} s | {brscan.get('wall_s')} s |")
print(f"| `import` of the stanza ({mib(imp.get('bytes'))}) | {imp.get('wall_s')} s, {rate} | |")
print(f"| cache repository on disk | {mib(cache.get('cache_bytes'))} (pgBackRest's backup: {mib(cache.get('pgbr_bytes'))}; data directory {mib(cache.get('data_bytes'))}) | |")
PY
}
