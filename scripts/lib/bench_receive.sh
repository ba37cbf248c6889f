# shellcheck shell=bash
# wal-receive's delay from commit to repository (issue 17, item 4), sourced by scripts/bench.
#
# On the main cluster, a `wal-receive --synchronous` into a fresh local repository, named in
# synchronous_standby_names so every commit waits until the repository holds it:
#   receive_commit  one client committing one-row inserts (pgbench -c 1): commit latency with
#                   the receiver as synchronous standby against the same run without (its
#                   difference is the delay from commit to repository);
#   receive_load    pgbench -c 4 (TPC-B), the same two ways: tps, latency, and the receiver's
#                   flush_lag as the server measures it (sampled every 0.2 s).
# Needs BIN, SOCK, PORT, RESULTS, BENCH, QUICK and the helpers of scripts/bench.

RECEIVE_PID=""

receive_streaming() { # the receiver is a connected synchronous standby
    [ "$(sql "$SOCK" "$PORT" "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'pgsnapfs_bench'")" = sync ]
}

receive_sync_names() { # VALUE
    sql "$SOCK" "$PORT" "ALTER SYSTEM SET synchronous_standby_names = '$1'" >/dev/null
    sql "$SOCK" "$PORT" "SELECT pg_reload_conf()" >/dev/null
}

# receive_pgbench KEY TOOL SECONDS ARGS...: records latency_ms and tps of one pgbench run.
receive_pgbench() {
    local key=$1 tool=$2 secs=$3 out="$BENCH/logs/receive-pgbench.out"
    shift 3
    as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -n -T "$secs" "$@" postgres >"$out" 2>&1 ||
        { cat "$out" >&2; die "pgbench for $key failed"; }
    rec "$key" "$tool" 1 \
        latency_ms="$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$out")" \
        tps="$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$out" | head -n 1)"
}

receive_rows() {
    local secs=$((QUICK == 1 ? 3 : 20)) repo="$BENCH/repos/receive" script="$BENCH/receive-insert.sql"
    log "wal-receive: commit latency and flush lag (${secs} s per run)"
    as_pg "$BIN" init --repo "$repo" --compression-level 3 >/dev/null
    (cd "$BENCH" && exec "${PGRUN[@]}" "$BIN" wal-receive --repo "$repo" -h "$SOCK" -p "$PORT" \
        -U postgres --synchronous --application-name pgsnapfs_bench >"$BENCH/logs/receive.log" 2>&1) &
    RECEIVE_PID=$!
    BG_PIDS+=("$RECEIVE_PID")
    sql "$SOCK" "$PORT" "CREATE TABLE bench_receive (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())" >/dev/null
    echo "INSERT INTO bench_receive DEFAULT VALUES;" >"$script"
    chmod 644 "$script"

    receive_pgbench receive_commit local "$secs" -c 1 -f "$script"
    receive_sync_names pgsnapfs_bench
    wait_until "wal-receive to stream as a synchronous standby" 60 receive_streaming
    receive_pgbench receive_commit wal-receive "$secs" -c 1 -f "$script"

    receive_sync_names ""
    receive_pgbench receive_load local "$secs" -c 4
    receive_sync_names pgsnapfs_bench
    wait_until "wal-receive to stream as a synchronous standby" 60 receive_streaming
    local lags="$BENCH/logs/receive-lag.txt"
    : >"$lags"
    (while sleep 0.2; do
        sql "$SOCK" "$PORT" "SELECT extract(epoch FROM flush_lag) * 1000 FROM pg_stat_replication \
            WHERE application_name = 'pgsnapfs_bench' AND flush_lag IS NOT NULL" >>"$lags" || true
    done) &
    local sampler=$!
    receive_pgbench receive_load wal-receive "$secs" -c 4
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    rec receive_lag wal-receive 1 $(sort -n "$lags" | awk 'NF { v[n++] = $1 }
        END { if (n) printf "flush_lag_median_ms=%.2f flush_lag_max_ms=%.2f samples=%d", v[int(n / 2)], v[n - 1], n }')
    receive_sync_names ""
    kill "$RECEIVE_PID" 2>/dev/null || true
    wait "$RECEIVE_PID" 2>/dev/null || true
    sql "$SOCK" "$PORT" "DROP TABLE bench_receive" >/dev/null
    receive_print
}

# The rows as a markdown table on stderr (docs/benchmarks.md, "wal-receive").
receive_print() {
    python3 - "$RESULTS" <<'PY' >&2
import json, sys
rs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
get = lambda k, t: next((r for r in rs if r["key"] == k and r["tool"] == t), {})
print("| load | measure | local commit only | wal-receive --synchronous |")
print("|---|---|---|---|")
for key, load in (("receive_commit", "1 client, one-row inserts"), ("receive_load", "pgbench -c 4 (TPC-B)")):
    a, b = get(key, "local"), get(key, "wal-receive")
    print(f"| {load} | latency | {a.get('latency_ms')} ms | {b.get('latency_ms')} ms |")
    print(f"| {load} | tps | {a.get('tps')} | {b.get('tps')} |")
lag = get("receive_lag", "wal-receive")
print(f"| pgbench -c 4 (TPC-B) | flush_lag median / max | | {lag.get('flush_lag_median_ms')} / {lag.get('flush_lag_max_ms')} ms ({lag.get('samples')} samples) |")
PY
}
