# shellcheck shell=bash
# Clones (issue 19), sourced by scripts/bench. On the main cluster (running), into fresh
# repositories (pgBackRest and pgsnapfs, both archiving), after one full backup with each:
#   1. clone_first_query: `clone create` of the backup, then its server started and a first
#      query answered, timed together;
#   2. clone_pgbench: pgbench -T CLONE_SECONDS -c 4 on that clone (default 60 s); then the
#      clone's disk use (its scratch directory: written blocks, journal, pg_wal) against the
#      cluster's size (what a restore writes), and the mount process's memory (VmHWM, VmRSS);
#   3. clone_hydrate: `clone create --hydrate` of the backup, timed until its progress file says
#      complete (no server), against a plain `restore` of the same backup;
#   4. clone_detached: from `clone create --hydrate` to a detached plain data directory whose
#      server answers a query (hydrate, `clone detach`, start), against pgBackRest restore
#      (--type=immediate --target-action=promote) + start + the same query.
# Printed on stderr for docs/benchmarks.md. Needs BIN, SOCK, PORT, DATA, RESULTS, BENCH, PG_BIN
# and the helpers of scripts/bench; leaves the main server running.

# clone_start DIR NAME: starts a server on DIR (a clone's data directory or a detached one) on
# a port of its own and waits for a first answer; sets CLONE_SOCK and CLONE_PORT.
clone_start() {
    CLONE_SOCK="$BENCH/sock-clone-$2"
    CLONE_PORT=$(free_port)
    start_server "$1" "$CLONE_PORT" "$CLONE_SOCK" "$BENCH/logs/clone-$2.log" "$RESTORED_OPTS"
    sql "$CLONE_SOCK" "$CLONE_PORT" "SELECT count(*) FROM pgbench_branches" >/dev/null ||
        die "no answer from the server on $1"
}

# clone_writable SOCK PORT: recovery is over (the clone promoted at its point).
clone_writable() { [ "$(sql "$1" "$2" "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ]; }

# clone_hydrated NAME: the clone's hydration progress file says complete.
clone_hydrated() {
    python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["complete"] else 1)' \
        "$CLONES/$1/scratch/hydration.json" 2>/dev/null
}

# clone_mount_pid NAME: the pid of the clone's mount process (its file system's name ends
# in @PID).
clone_mount_pid() { findmnt -no SOURCE "$CLONES/$1/data" | sed -n 's/.*@\([0-9]*\)$/\1/p'; }

clone_rows() {
    local seconds=${CLONE_SECONDS:-60} snap conf id t0 size
    CLONES="$BENCH/clones"
    mkdir -p "$CLONES"
    chmod 755 "$CLONES"
    log "clones: backups, a clone to a first query, pgbench ${seconds} s on it, hydrate, detach"
    backups_with_both clone
    snap=$BOTH_REPO conf=$BOTH_CONF id=$BOTH_ID
    switch_and_wait_archived
    size=$(bytes_of "$DATA")
    local clone=("$BIN" clone --repo "$snap" --clones-dir "$CLONES")

    # 1. create + first query.
    drop_caches
    t0=$(now_ns)
    "${clone[@]}" create one --backup "$id" >/dev/null 2>&1 || die "clone create failed"
    clone_start "$CLONES/one/data" one
    rec clone_first_query pgsnapfs 1 wall_s="$(secs_since "$t0")"

    # 2. pgbench on it: disk and memory.
    wait_until "the clone to take writes" 600 clone_writable "$CLONE_SOCK" "$CLONE_PORT"
    as_pg "$PG_BIN/pgbench" -h "$CLONE_SOCK" -p "$CLONE_PORT" -n -T "$seconds" -c 4 postgres \
        >"$BENCH/logs/clone-pgbench.out" 2>&1 ||
        { cat "$BENCH/logs/clone-pgbench.out" >&2; die "pgbench on the clone failed"; }
    local pid hwm rss
    pid=$(clone_mount_pid one)
    hwm=$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")
    rss=$(awk '/VmRSS/ { print $2 }' "/proc/$pid/status")
    rec clone_pgbench pgsnapfs 1 seconds="$seconds" disk_bytes="$(bytes_of "$CLONES/one/scratch")" \
        restore_bytes="$size" mount_hwm_kb="$hwm" mount_rss_kb="$rss"
    stop_server "$CLONES/one/data"
    "${clone[@]}" destroy one >/dev/null 2>&1 || die "clone destroy failed"

    # 3. hydration against restore.
    drop_caches
    t0=$(now_ns)
    "${clone[@]}" create two --backup "$id" --hydrate >/dev/null 2>&1 || die "clone create --hydrate failed"
    wait_until "the clone's hydration" 3600 clone_hydrated two
    rec clone_hydrate pgsnapfs 1 wall_s="$(secs_since "$t0")" bytes="$size"
    drop_caches
    measure clone_hydrate pgsnapfs-restore 1 -- "${PGRUN[@]}" "$BIN" restore --repo "$snap" \
        --to "$BENCH/states/clone-restore" --backup "$id" || die "pgsnapfs restore failed"
    rm -rf "$BENCH/states/clone-restore"

    # 4. create --hydrate to a detached directory that answers, against pgBackRest.
    "${clone[@]}" destroy two >/dev/null 2>&1 || die "clone destroy failed"
    drop_caches
    t0=$(now_ns)
    "${clone[@]}" create three --backup "$id" --hydrate >/dev/null 2>&1 || die "clone create --hydrate failed"
    wait_until "the clone's hydration" 3600 clone_hydrated three
    "${clone[@]}" detach three --to "$BENCH/states/clone-detached" >/dev/null 2>&1 ||
        die "clone detach failed"
    clone_start "$BENCH/states/clone-detached" detached
    rec clone_detached pgsnapfs 1 wall_s="$(secs_since "$t0")"
    stop_server "$BENCH/states/clone-detached"
    rm -rf "$BENCH/states/clone-detached"
    drop_caches
    t0=$(now_ns)
    as_pg mkdir -p "$BENCH/states/clone-pgbr"
    pgbr "$conf" restore --pg1-path="$BENCH/states/clone-pgbr" --type=immediate \
        --target-action=promote >/dev/null || die "pgbackrest restore failed"
    clone_start "$BENCH/states/clone-pgbr" pgbr
    rec clone_detached pgbackrest 1 wall_s="$(secs_since "$t0")"
    stop_server "$BENCH/states/clone-pgbr"
    rm -rf "$BENCH/states/clone-pgbr" "$snap" "$BENCH/repos/clone-pgbackrest" "$CLONES"
    set_archive_targets "" ""
    clone_print
}

# The rows as a markdown table on stderr (docs/benchmarks.md, "Clones").
clone_print() {
    print_rows <<'PY'
first, bench = get("clone_first_query", "pgsnapfs"), get("clone_pgbench", "pgsnapfs")
hyd, rest = get("clone_hydrate", "pgsnapfs"), get("clone_hydrate", "pgsnapfs-restore")
det, br = get("clone_detached", "pgsnapfs"), get("clone_detached", "pgbackrest")
rate = lambda b, s: f"{b / 1048576 / s:.0f} MiB/s" if b and s else "?"
print("| clones | pgsnapfs | reference | goal |")
print("|---|---|---|---|")
print(f"| `clone create` + start + first query | {first.get('wall_s')} s | | under 1 s |")
print(f"| disk used after {bench.get('seconds')} s of pgbench on the clone | {mib(bench.get('disk_bytes'))} | a restore: {mib(bench.get('restore_bytes'))} | |")
print(f"| mount process memory after that (VmHWM / VmRSS) | {(bench.get('mount_hwm_kb') or 0) // 1024} / {(bench.get('mount_rss_kb') or 0) // 1024} MiB | | |")
print(f"| hydration of the clone ({mib(hyd.get('bytes'))}) | {hyd.get('wall_s')} s, {rate(hyd.get('bytes'), hyd.get('wall_s'))} | `restore`: {rest.get('wall_s')} s, {rate(hyd.get('bytes'), rest.get('wall_s'))} | |")
print(f"| `clone create --hydrate` to a detached data directory answering a query | {det.get('wall_s')} s | pgBackRest restore + start: {br.get('wall_s')} s | |")
PY
}
