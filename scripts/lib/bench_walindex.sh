# shellcheck shell=bash
# scripts/bench's WAL-index rows (issue 17, item 5): planning each kind of target on an archive of
# 100,000 segments in S3 (moto on 127.0.0.1), with the requests it sent and its wall time.
#
# The archive is written through the library by tests/wal_index.rs (the index, and only the
# segment and summary objects planning reads), which then plans every target on a fresh
# repository handle and appends one JSON line per target to $WAL_INDEX_REPORT. Built optimized,
# as the tool ships; the test fails, and so the bench, if a target takes more than 10 requests
# or 1 s.
#
# Not in --quick: it compiles the test harness in release (minutes on 2 cores, once), and its
# figures do not depend on the pgbench scale a quick run changes.

wal_index_rows() {
    local report="$BENCH/wal_index.jsonl" log="$BENCH/logs/wal_index.log"
    log "WAL index rows: planning on 100,000 archived segments in moto (builds the test, release)"
    : >"$report"
    (cd "$root" && WAL_INDEX_REPORT="$report" \
        cargo test --release --test wal_index -- --nocapture) >"$log" 2>&1 ||
        die "the WAL index scale test failed (see $log)"
    local line pairs
    while read -r line; do
        mapfile -t pairs < <(python3 -c \
            'import json, sys; [print(f"{k}={v}") for k, v in json.loads(sys.argv[1]).items()]' "$line")
        rec windex_plan pgsnapfs 1 "${pairs[@]}"
    done <"$report"
}
