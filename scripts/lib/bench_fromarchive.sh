# shellcheck shell=bash
# Backups from the archive (issue 18), sourced by scripts/bench. On the main cluster, into two
# fresh local repositories (only pgsnapfs archives, into the first):
#   1. a server backup into each (B0, and B0' in the second);
#   2. pgbench -T (PGBENCH_SECONDS - LATE) -c 4; the point P is marked; a server backup S of
#      that point into the second repository (time, bytes stored);
#   3. pgbench -T LATE -c 4; the end E is marked and archived; the server is stopped;
#   4. a view at E from B0 (the only backup of the first repository): time from `mount` to the
#      first query answered;
#   5. `backup --from-archive --target-lsn P` into the first (server down): time, bytes stored,
#      bytes read;
#   6. a view at E again, now from the archive-made backup: time to first query.
# LATE is 30 s (a third of the run when it is shorter). The cluster runs with
# checkpoint_timeout = 30s (FA_CHECKPOINT_TIMEOUT) meanwhile: the archive-made backup starts at
# the last checkpoint replayed before its target. Rows: fromarchive_view (tool
# old-backup and archive-backup), fromarchive_backup (tool server and archive). Printed on
# stderr for docs/benchmarks.md. Needs BIN, SOCK, PORT, DATA, RESULTS, BENCH, PG_BIN,
# PGBENCH_SECONDS and the helpers of scripts/bench.

# fa_mark: an LSN with a record at it (the inclusive target), which changes no table.
fa_mark() {
    local lsn
    lsn=$(sql "$SOCK" "$PORT" "SELECT pg_current_wal_insert_lsn()")
    sql "$SOCK" "$PORT" "SELECT pg_logical_emit_message(false, 'bench', 'mark')" >/dev/null
    echo "$lsn"
}

# fa_pgbench SECONDS
fa_pgbench() {
    as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -n -T "$1" -c 4 postgres \
        >"$BENCH/logs/fromarchive-pgbench.out" 2>&1 ||
        { cat "$BENCH/logs/fromarchive-pgbench.out" >&2; die "pgbench failed"; }
}

# fa_server_backup REPO KEY: a server backup (caches dropped, checkpoint first).
fa_server_backup() {
    local repo=$1 key=$2 out="$BENCH/fromarchive-backup.json" before after
    before=$(bytes_of "$repo")
    sql "$SOCK" "$PORT" "CHECKPOINT" >/dev/null
    drop_caches
    measure "$key" server 1 --stdout "$out" -- "${PGRUN[@]}" "$BIN" backup --repo "$repo" \
        --pgdata "$DATA" -h "$SOCK" -p "$PORT" -U postgres --json || die "pgsnapfs backup failed"
    after=$(bytes_of "$repo")
    rec "$key" server 1 size_logical="$(json_get "$out" size_logical)" \
        size_stored_new="$(json_get "$out" size_stored_new)" repo_bytes_added=$((after - before))
}

# fa_view REPO TOOL LSN: the seconds from `mount` (caches dropped) to the first query answered
# by a server on a view at LSN; records which backup the view started from.
fa_view() {
    local repo=$1 tool=$2 lsn=$3 mp="$BENCH/mnt/fromarchive-$2" scratch="$BENCH/fromarchive-$2-scratch"
    local port sock="$BENCH/sock-fa-$2" out="$BENCH/logs/fromarchive-mount-$2.out" t0 secs
    port=$(free_port)
    mkdir -p "$mp"
    MOUNTS+=("$mp")
    drop_caches
    t0=$(now_ns)
    "$BIN" mount --repo "$repo" "$mp" --target-lsn "$lsn" --scratch "$scratch" --background \
        >"$out" 2>&1 || { cat "$out" >&2; die "pgsnapfs mount at $lsn failed"; }
    MOUNT_PID=$(sed -n 's/.*(process \([0-9]*\)).*/\1/p' "$out")
    MOUNT_PIDS+=("$MOUNT_PID")
    start_server "$mp" "$port" "$sock" "$BENCH/logs/fromarchive-view-$2.log"
    wait_until "the view of $tool to reach $lsn" 1800 paused "$sock" "$port"
    sql "$sock" "$port" "SELECT count(*) FROM pgbench_branches" >/dev/null || die "no first query on $mp"
    secs=$(secs_since "$t0")
    local from replay
    from=$(sed -n 's/^mounting backup \([^ ]*\) .*/\1/p' "$out")
    replay=$(sed -n 's/.*; about \(.*\) of WAL to replay.*/\1/p' "$out")
    rec fromarchive_view "$tool" 1 first_query_s="$secs" backup="$from" replay="$replay"
    log "view at $lsn from $tool ($from, $replay of WAL): first query after $secs s"
    stop_server "$mp"
    unmount_view "$mp"
    rm -rf "$scratch"
}

fromarchive_rows() {
    local late=30 repo="$BENCH/repos/fromarchive" side="$BENCH/repos/fromarchive-server"
    [ "$PGBENCH_SECONDS" -lt 90 ] && late=$((PGBENCH_SECONDS / 3))
    log "backups from the archive: pgbench ${PGBENCH_SECONDS} s, the archive-made backup ${late} s before the end"
    as_pg "$BIN" init --repo "$repo" --compression-level 3 >/dev/null
    as_pg "$BIN" init --repo "$side" --compression-level 3 >/dev/null
    set_archive_targets "" "pgsnapfs=$repo"
    # A backup from the archive starts at the last checkpoint replayed before its target: with
    # the default checkpoint_timeout (5 min) a short run has none after the base.
    sql "$SOCK" "$PORT" "ALTER SYSTEM SET checkpoint_timeout = '${FA_CHECKPOINT_TIMEOUT:-30s}'" >/dev/null
    sql "$SOCK" "$PORT" "SELECT pg_reload_conf()" >/dev/null
    switch_and_wait_archived
    fa_server_backup "$repo" fromarchive_base
    fa_server_backup "$side" fromarchive_base
    fa_pgbench $((PGBENCH_SECONDS - late))
    local point end
    point=$(fa_mark)
    fa_server_backup "$side" fromarchive_backup
    fa_pgbench "$late"
    end=$(fa_mark)
    switch_and_wait_archived
    stop_server "$DATA"

    fa_view "$repo" old-backup "$end"
    local out="$BENCH/fromarchive-archive.json" before after
    before=$(bytes_of "$repo")
    drop_caches
    measure fromarchive_backup archive 1 --stdout "$out" -- "$BIN" backup --repo "$repo" \
        --from-archive --target-lsn "$point" --work-dir "$BENCH" --json ||
        die "pgsnapfs backup --from-archive failed"
    after=$(bytes_of "$repo")
    rec fromarchive_backup archive 1 size_logical="$(json_get "$out" size_logical)" \
        size_stored_new="$(json_get "$out" size_stored_new)" repo_bytes_added=$((after - before)) \
        bytes_read="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["from_archive"]["bytes_read"])' "$out")"
    fa_view "$repo" archive-backup "$end"
    start_server "$DATA" "$PORT" "$SOCK" "$BENCH/logs/main.log"
    sql "$SOCK" "$PORT" "ALTER SYSTEM RESET checkpoint_timeout" >/dev/null
    sql "$SOCK" "$PORT" "SELECT pg_reload_conf()" >/dev/null
    set_archive_targets "" ""
    fromarchive_print
}

# The rows as a markdown table on stderr (docs/benchmarks.md, "Backups from the archive").
fromarchive_print() {
    print_rows <<'PY'
old, new = get("fromarchive_view", "old-backup"), get("fromarchive_view", "archive-backup")
srv, arc = get("fromarchive_backup", "server"), get("fromarchive_backup", "archive")
print("| measure | from the old backup / server backup | from the archive-made backup |")
print("|---|---|---|")
print(f"| view at the end of the WAL: first query | {old.get('first_query_s')} s ({old.get('replay')} of WAL) | {new.get('first_query_s')} s ({new.get('replay')} of WAL) |")
ratio = (new.get("first_query_s") or 0) / (old.get("first_query_s") or 1)
print(f"| ratio | | {ratio:.2f}x |")
print(f"| backup at the same point: time | {srv.get('wall_s')} s (server) | {arc.get('wall_s')} s (no server) |")
print(f"| backup: bytes stored | {mib(srv.get('size_stored_new'))} | {mib(arc.get('size_stored_new'))} ({(arc.get('size_stored_new') or 0) / (srv.get('size_stored_new') or 1):.2f}x) |")
print(f"| backup: bytes read | {mib(srv.get('size_logical'))} | {mib(arc.get('bytes_read'))} |")
PY
}
