# Runs test binaries several at a time. cargo test runs them one after another, and they
# spend most of their time waiting on PostgreSQL, fsync and FUSE, not on the CPU; the
# harness (tests/common) gives every test its own temp dir, socket and port, so binaries
# do not collide. Each binary's output is kept and printed in one piece when it ends.
#
# run_tests JOBS CARGO_TEST_ARGS... [-- TEST_ARGS...]
# builds with `cargo test --no-run`, runs each test executable it names from its package's
# directory (as cargo does), and fails if any fails. Prints each binary's time at the end.
run_tests() {
    local jobs=$1
    shift
    local cargo_args=() test_args=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        cargo_args+=("$1")
        shift
    done
    [ $# -gt 0 ] && shift
    test_args=("$@")

    local list
    list=$(mktemp)
    if ! cargo test "${cargo_args[@]}" --no-run --message-format=json >"$list.json"; then
        rm -f "$list" "$list.json"
        return 1
    fi
    # One line per executable: its package directory, a tab, its path.
    python3 -c '
import json, os, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(os.path.dirname(m["manifest_path"]) + "\t" + m["executable"])
' <"$list.json" >"$list" || {
        rm -f "$list" "$list.json"
        return 1
    }
    rm -f "$list.json"

    local out
    out=$(mktemp -d)
    local n=0 running=0 dir exe
    local -A names=()
    while IFS=$'\t' read -r dir exe; do
        n=$((n + 1))
        names[$n]=$(basename "$exe")
        (
            cd "$dir"
            start=$SECONDS
            if "$exe" "${test_args[@]}" >"$out/$n.log" 2>&1; then rc=0; else rc=$?; fi
            echo "$rc $((SECONDS - start))" >"$out/$n.rc"
            {
                echo "==> ${names[$n]} (exit $rc, $((SECONDS - start)) s)"
                cat "$out/$n.log"
            } >&2
        ) &
        running=$((running + 1))
        if [ "$running" -ge "$jobs" ]; then
            wait -n || true
            running=$((running - 1))
        fi
    done <"$list"
    wait || true
    rm -f "$list"
    if [ "$n" = 0 ]; then
        echo "run_tests: cargo built no test binary" >&2
        return 1
    fi

    local i rc secs failed=0
    echo "test binaries (exit code, seconds):" >&2
    for i in $(seq 1 "$n"); do
        read -r rc secs <"$out/$i.rc" || { rc=?; secs=?; }
        printf '  %-40s %s %s s\n' "${names[$i]}" "$rc" "$secs" >&2
        [ "$rc" = 0 ] || failed=1
    done
    rm -rf "$out"
    return "$failed"
}
