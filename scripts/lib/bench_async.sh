# Sourced by scripts/bench: the asynchronous-archiving rows (issue 17, item 3).
#
# A cluster of its own (the main one's archive_command pushes with every tool, synchronously),
# with synchronous_commit = off so that 2 cores write as much WAL as they can:
#  - async_lag_init / async_lag_pgbench TOOL: `pgbench -i -s SCALE` (COPY and index builds: bulk
#    WAL), then `pgbench -c 4 -T PGBENCH_SECONDS`, while the archive lag is sampled every 0.25 s:
#    WAL finished but not in the repository, i.e. `.ready` files in pg_wal plus what waits in the
#    spool. Then how long after the load the archive needs to catch up. pgsnapfs (`wal-push
#    --async`, process-max 2) and pgBackRest (archive-async=y, process-max=2) in turn, each into a
#    local repository, on the same cluster.
#  - async_drain STORE: the archiver alone, `archive-daemon --process-max 2 --idle-exit 0`, on a
#    spool holding ASYNC_SEGMENTS segments of that cluster, into a fresh local repository and into
#    S3 (moto on 127.0.0.1): the sustained rate it can take WAL at.
# Uses the helpers of scripts/bench (as_pg, sql, rec, measure, start_server, start_moto, ...).

async_lag() { # DATA SPOOL: bytes of WAL finished but not archived
    local ready spool_bytes=0
    ready=$(find "$1/pg_wal/archive_status" -name '*.ready' 2>/dev/null | wc -l)
    [ -d "$2/pg_wal" ] && spool_bytes=$(find "$2/pg_wal" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
    echo $((ready * 16 * 1024 * 1024 + spool_bytes))
}

async_caught_up() { # SOCK PORT SEGMENT DATA SPOOL
    [ "$(sql "$1" "$2" "SELECT coalesce(last_archived_wal, '') >= '$3' FROM pg_stat_archiver")" = t ] &&
        [ "$(async_lag "$4" "$5")" = 0 ]
}

async_pgbench() { # TOOL LOAD(init|pgbench) DATA SOCK PORT SPOOL
    local tool=$1 load=$2 data=$3 sock=$4 port=$5 spool=$6
    local lsn0 pid t0 lag max_lag=0 sum_lag=0 samples=0 seg t_end args
    # Each load starts just after a checkpoint, so both tools see the same full-page writes.
    sql "$sock" "$port" "CHECKPOINT" >/dev/null
    lsn0=$(sql "$sock" "$port" "SELECT pg_current_wal_lsn()")
    if [ "$load" = init ]; then args=(-i -q -s "$SCALE"); else args=(-T "$PGBENCH_SECONDS" -c 4 -j 2); fi
    as_pg "$PG_BIN/pgbench" -h "$sock" -p "$port" "${args[@]}" postgres \
        >"$BENCH/logs/async-pgbench-$tool.out" 2>&1 &
    pid=$!
    BG_PIDS+=("$pid")
    t0=$(now_ns)
    while kill -0 "$pid" 2>/dev/null; do
        lag=$(async_lag "$data" "$spool")
        [ "$lag" -gt "$max_lag" ] && max_lag=$lag
        sum_lag=$((sum_lag + lag))
        samples=$((samples + 1))
        sleep 0.25
    done
    wait "$pid" || { cat "$BENCH/logs/async-pgbench-$tool.out" >&2; die "pgbench ($tool) failed"; }
    BG_PIDS=()
    local seconds tps wal_bytes
    seconds=$(secs_since "$t0")
    t_end=$(now_ns)
    seg=$(sql "$sock" "$port" "SELECT pg_walfile_name(pg_switch_wal())")
    wait_until "async archiving ($tool) of $seg" 900 async_caught_up "$sock" "$port" "$seg" "$data" "$spool"
    wal_bytes=$(sql "$sock" "$port" "SELECT pg_current_wal_lsn() - '$lsn0'::pg_lsn")
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$BENCH/logs/async-pgbench-$tool.out" | head -n 1)
    rec "async_lag_$load" "$tool" 1 wal_bytes="$wal_bytes" seconds="$seconds" tps="${tps:-0}" \
        max_lag_bytes="$max_lag" mean_lag_bytes="$((sum_lag / (samples > 0 ? samples : 1)))" \
        catch_up_s="$(secs_since "$t_end")"
    log "async $tool, pgbench $load: $(awk -v b="$wal_bytes" -v s="$seconds" 'BEGIN { printf "%.1f MB/s of WAL", b / s / 1e6 }'), lag at most $((max_lag / 1024 / 1024)) MiB, caught up $(secs_since "$t_end") s after pgbench"
}

async_drain() { # STORE REPO SEGMENT_DIR RUN
    local store=$1 repo=$2 segs=$3 run=$4
    local spool="$BENCH/async-spool-drain"
    rm -rf "$spool"
    as_pg mkdir -p "$spool/pg_wal" "$spool/global"
    as_pg cp "$segs"/* "$spool/pg_wal/"
    as_pg cp "$BENCH/async-data/global/pg_control" "$spool/global/"
    as_pg "$BIN" init --repo "$repo" >/dev/null
    local n bytes
    n=$(ls "$spool/pg_wal" | wc -l)
    bytes=$(bytes_of "$spool/pg_wal")
    measure async_drain "$store" "$run" -- "${PGRUN[@]}" "$BIN" archive-daemon --repo "$repo" \
        --spool "$spool" --process-max 2 --idle-exit 0 || die "archive-daemon ($store) failed"
    [ "$(ls "$spool/pg_wal" | wc -l)" = 0 ] || die "archive-daemon ($store) left files in the spool"
    rec async_drain "$store" "$run" segments="$n" bytes="$bytes"
}

async_rows() {
    local data="$BENCH/async-data" sock="$BENCH/sock-async" port spool="$BENCH/async-spool"
    local repo="$BENCH/repos/async" conf="$BENCH/pgbr-async/pgbackrest.conf"
    port=$(free_port)
    as_pg mkdir -p "$spool" "$BENCH/pgbr-async/log" "$BENCH/pgbr-async/lock" "$BENCH/pgbr-async/spool"
    as_pg "$BIN" init --repo "$repo" >/dev/null
    as_pg "$PG_BIN/initdb" -D "$data" --auth=trust -E UTF8 --locale=C >/dev/null
    cat >>"$data/postgresql.conf" <<EOF
wal_level = replica
archive_mode = on
archive_command = '$BIN wal-push --async --spool $spool --repo $repo %p'
max_wal_size = 4GB
wal_keep_size = 2GB
synchronous_commit = off
EOF
    cat >"$conf" <<EOF
[global]
repo1-path=$BENCH/repos/async-pgbr
log-path=$BENCH/pgbr-async/log
lock-path=$BENCH/pgbr-async/lock
spool-path=$BENCH/pgbr-async/spool
log-level-console=warn
compress-type=zst
compress-level=3
process-max=2
archive-async=y

[async]
pg1-path=$data
pg1-socket-path=$sock
pg1-port=$port
EOF
    chmod 644 "$conf"
    start_server "$data" "$port" "$sock" "$BENCH/logs/async.log"
    log "async rows: pgbench on a cluster archived with wal-push --async"
    async_pgbench pgsnapfs init "$data" "$sock" "$port" "$spool"
    async_pgbench pgsnapfs pgbench "$data" "$sock" "$port" "$spool"

    # The archiver alone, on the newest segments of that run (kept in pg_wal by wal_keep_size).
    local segs="$BENCH/async-segments"
    as_pg mkdir -p "$segs"
    local f
    for f in $(ls "$data/pg_wal" | grep -E '^[0-9A-F]{24}$' | sort | tail -n "$ASYNC_SEGMENTS"); do
        as_pg cp "$data/pg_wal/$f" "$segs/"
    done
    [ -n "${MOTO_PID:-}" ] || start_moto
    local run store
    for run in $(seq "$RUNS"); do
        for store in local s3; do
            [ $((run % 2)) = 0 ] && store=$([ "$store" = s3 ] && echo local || echo s3)
            if [ "$store" = s3 ]; then
                async_drain s3 "$(s3_url "async-$run")" "$segs" "$run"
            else
                async_drain local "$BENCH/repos/async-drain-$run" "$segs" "$run"
                rm -rf "$BENCH/repos/async-drain-$run"
            fi
        done
    done

    # pgBackRest's archive-async on the same cluster and load.
    as_pg pgbackrest --config="$conf" --stanza=async stanza-create >/dev/null ||
        die "pgbackrest stanza-create (async) failed"
    sql "$sock" "$port" "ALTER SYSTEM SET archive_command = 'pgbackrest --config=$conf --stanza=async archive-push %p'" >/dev/null
    sql "$sock" "$port" "SELECT pg_reload_conf()" >/dev/null
    async_pgbench pgbackrest init "$data" "$sock" "$port" "$BENCH/pgbr-async/spool/none"
    async_pgbench pgbackrest pgbench "$data" "$sock" "$port" "$BENCH/pgbr-async/spool/none"
    stop_server "$data"
    async_summary
    cp "$RESULTS" "${TMPDIR:-/tmp}/pgsnapfs-bench-async.jsonl"
    log "async rows kept in ${TMPDIR:-/tmp}/pgsnapfs-bench-async.jsonl"
}

async_summary() {
    python3 - "$RESULTS" <<'PY' >&2
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def runs(key, tool):
    m = {}
    for r in recs:
        if r["key"] == key and r["tool"] == tool:
            m.setdefault(r["run"], {}).update(r)
    return list(m.values())
print("asynchronous archiving:")
for tool in ("pgsnapfs", "pgbackrest"):
  for load in ("init", "pgbench"):
    for r in runs("async_lag_" + load, tool):
        print(f"  {load:7} {tool:10}: {r['wal_bytes'] / r['seconds'] / 1e6:6.1f} MB/s of WAL "
              f"({r['tps']:.0f} tps), "
              f"lag max {r['max_lag_bytes'] / 2**20:.0f} MiB, mean {r['mean_lag_bytes'] / 2**20:.0f} MiB, "
              f"caught up {r['catch_up_s']:.2f} s after pgbench")
for store in ("local", "s3"):
    rs = [r for r in runs("async_drain", store) if "wall_s" in r]
    if rs:
        rate = statistics.median(r["bytes"] / r["wall_s"] for r in rs)
        print(f"  archiver alone, {store:5}: {rate / 1e6:6.1f} MB/s ({rs[0]['segments']} segments, "
              f"{len(rs)} runs, median)")
PY
}
