# shellcheck shell=bash
# Read-path rows of scripts/bench (issue 15) that need more than a few lines; sourced by it, so
# its helpers (mount_view, timed_mount_cat, wait_until, rec, log, ...) are in scope.

# hydrated_rows REL: a catalogue mount with --hydrate copies the newest backup's files to its
# scratch directory, largest first; once REL's copy is in place, the kernel serves REL from it
# with FUSE passthrough, without a request to the mount process. Hot, like the rp_hot rows:
# the copy read once, then timed (recorded as rp_hot/hydrated, with the mount's CPU-seconds).
hydrated_rows() {
    local rel=$1 run size
    local mp="$BENCH/mnt/rp-hydrated" scratch="$BENCH/scratch-rp-hydrated"
    size=$(stat -c %s "$DATA/$rel")
    mount_view "$mp" "$scratch" rp_hydrated.mount pgsnapfs 1 --hydrate
    local file="$mp/backups/latest/$rel" deadline=$((SECONDS + 300))
    # Hydration skips a file that would leave less than 10% of the scratch disk free: then
    # there is no row, not a failed run.
    until hydrated_copy "$scratch" "$size"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "WARNING: no hydrated copy of $rel after 300 s (scratch disk: $(df -h --output=avail,pcent "$scratch" | tail -1)); no hydrated row"
            unmount_view "$mp"
            rm -rf "$scratch"
            return 0
        fi
        sleep 0.2
    done
    for run in $(seq "$RUNS"); do
        log "read path: hydrated read of $rel (passthrough), run $run/$RUNS"
        cat "$file" >/dev/null
        timed_mount_cat rp_hot hydrated "$run" "$file"
    done
    local same=0
    cmp -s "$file" "$DATA/$rel" && same=1
    rec rp_hot hydrated 1 same_as_local="$same"
    unmount_view "$mp"
    rm -rf "$scratch"
}

# hydrated_copy SCRATCH SIZE: a finished copy (renamed from its temporary name) of SIZE bytes.
hydrated_copy() {
    find "$1/hydrated" -maxdepth 1 -type f -size "$2c" ! -name '*.tmp' 2>/dev/null | grep -q .
}
