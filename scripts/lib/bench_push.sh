# shellcheck shell=bash
# Sourced by scripts/bench: the per-segment push rows (issue 17, items 1 and 2). The newest
# PUSH_SEGMENTS segments set aside by the archive_command are pushed one process at a time, as
# archive_command would, by four set-ups in an order that rotates per segment:
#     pgbackrest          archive-push into a plain stanza
#     pgbackrest-aes      archive-push into a stanza with repo1-cipher-type=aes-256-cbc
#     pgsnapfs            wal-push into a plain repository
#     pgsnapfs-key-file   wal-push into an encrypted repository, opened with a key-file slot
# Records one `push_segment` record per push (tool, file, wall_s). Uses the bench's globals
# (BENCH, BIN, PGRUN, RUNS, DATA/SOCK/PORT through pgbr_conf) and its helpers (as_pg, rec, pgbr,
# pgbr_conf, now_ns, secs_since, die, log).

push_rows() {
    local n=${PUSH_SEGMENTS:-30} segs
    mapfile -t segs < <(ls "$BENCH/aside" | grep -E '^[0-9A-F]{24}$' | sort | tail -n "$n")
    [ "${#segs[@]}" -ge 2 ] || die "push rows: only ${#segs[@]} WAL segments were set aside"
    local base="$BENCH/repos/push"
    as_pg mkdir -p "$base"
    local plain_conf aes_conf
    plain_conf=$(pgbr_conf push "$base/pgbackrest")
    aes_conf=$(pgbr_conf push-aes "$base/pgbackrest-aes")
    # The cipher settings belong in [global], before the stanza section.
    awk '/^\[bench\]/ { print "repo1-cipher-type=aes-256-cbc"; print "repo1-cipher-pass=bench-cipher"; print "" }
         { print }' "$aes_conf" >"$aes_conf.new"
    chmod 644 "$aes_conf.new"
    mv "$aes_conf.new" "$aes_conf"
    pgbr "$plain_conf" stanza-create >/dev/null
    pgbr "$aes_conf" stanza-create >/dev/null
    as_pg "$BIN" init --repo "$base/pgsnapfs" --compression-level 3 >/dev/null
    local pass="$base/passphrase" key="$base/archive.key"
    as_pg bash -c 'umask 077; echo bench-passphrase >"$1"' _ "$pass"
    as_pg "$BIN" init --repo "$base/pgsnapfs-enc" --compression-level 3 --encryption \
        --passphrase-file "$pass" >/dev/null
    as_pg "$BIN" key add --repo "$base/pgsnapfs-enc" --passphrase-file "$pass" \
        --new-key-file "$key" >/dev/null
    local tools=(pgbackrest pgbackrest-aes pgsnapfs pgsnapfs-key-file)
    log "push rows: ${#segs[@]} segments, each pushed by ${tools[*]} (rotating order)"
    local i j f t0 tool
    for i in "${!segs[@]}"; do
        f="$BENCH/aside/${segs[$i]}"
        cat "$f" >/dev/null # warm, as a segment PostgreSQL just finished is
        for j in 0 1 2 3; do
            tool=${tools[$(((i + j) % 4))]}
            t0=$(now_ns)
            case $tool in
            pgbackrest) as_pg pgbackrest --config="$plain_conf" --stanza=bench archive-push "$f" ;;
            pgbackrest-aes) as_pg pgbackrest --config="$aes_conf" --stanza=bench archive-push "$f" ;;
            pgsnapfs) as_pg "$BIN" wal-push --repo "$base/pgsnapfs" "$f" ;;
            pgsnapfs-key-file) as_pg "$BIN" wal-push --repo "$base/pgsnapfs-enc" \
                --passphrase-file "$key" "$f" ;;
            esac || die "push rows: $tool failed on ${segs[$i]}"
            rec push_segment "$tool" 1 file="${segs[$i]}" wall_s="$(secs_since "$t0")"
        done
    done
    rm -rf "$base"
}
