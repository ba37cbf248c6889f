#!/bin/sh
# Regenerates the PostgreSQL 15 fixtures of src/pg (run as root on a machine
# with postgresql-15 installed): a pg_control file with its pg_controldata
# output, and the written prefix of one WAL segment with the commits and
# restore points pg_waldump finds in it.
set -eu
BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
OUT=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /tmp/pgsnapfs-fixture.XXXXXX)
PORT=${PG_PORT:-54331}
chmod 755 "$WORK"
mkdir "$WORK/data" "$WORK/sock"
touch "$WORK/log"
chown postgres "$WORK/data" "$WORK/sock" "$WORK/log"
pg() { runuser -u postgres -- "$@"; }
pg "$BIN/initdb" -D "$WORK/data" -A trust -U postgres >/dev/null
cat >>"$WORK/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$WORK/sock'
wal_level = replica
max_prepared_transactions = 5
timezone = 'UTC'
CONF
pg "$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/log" -w start >/dev/null
trap 'pg "$BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null; rm -rf "$WORK"' EXIT
sql() { pg "$BIN/psql" -X -q -At -h "$WORK/sock" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

sql <<'SQL'
create table t(a int primary key, b text);
insert into t select g, repeat('x', 100) from generate_series(1, 200) g;
create unlogged table u(a int);
create table dropme(a int);
insert into dropme values (1);
checkpoint;
select pg_switch_wal() \g /dev/null
SQL
SEG=$(sql -c "select pg_walfile_name(pg_current_wal_lsn() + 1)")
# The workload below runs in the fresh segment $SEG: commits, a subtransaction,
# an abort, restore points, two-phase commit/abort (with dropped stats), a
# commit record with 2100 subxacts spanning two pages, and full-page images.
END=$(sql <<'SQL'
insert into t values (1001, 'one');
insert into t values (1002, 'two');
begin; insert into t values (1003, 'three'); savepoint s1; insert into t values (1004, 'four'); release s1; commit;
begin; insert into t values (1005, 'five'); rollback;
select pg_create_restore_point('before_delete') \g /dev/null
delete from t where a = 1001;
begin; drop table dropme; prepare transaction 'p1';
commit prepared 'p1';
begin; insert into t values (1006, 'six'); prepare transaction 'p2';
rollback prepared 'p2';
do $$ begin for i in 1..2100 loop begin insert into u values (i); exception when others then null; end; end loop; end $$;
checkpoint;
update t set b = 'updated' where a = 5;
select pg_create_restore_point('it''s "quoted"') \g /dev/null
insert into t values (1007, 'seven');
select file_offset from pg_walfile_name_offset(pg_current_wal_lsn());
SQL
)
PAGES=$(( (END + 8191) / 8192 ))
head -c $((PAGES * 8192)) "$WORK/data/pg_wal/$SEG" >"$OUT/pg15_wal_$SEG.prefix"
cp "$WORK/data/global/pg_control" "$OUT/pg15_pg_control"
"$BIN/pg_controldata" "$WORK/data" >"$OUT/pg15_pg_control.expected"

# pg_waldump needs a whole segment: pad the prefix with zeros.
cp "$OUT/pg15_wal_$SEG.prefix" "$WORK/$SEG"
truncate -s 16M "$WORK/$SEG"
TZ=UTC "$BIN/pg_waldump" "$WORK/$SEG" 2>/dev/null | awk '
  /^rmgr: Transaction / && / desc: (COMMIT|ABORT|COMMIT_PREPARED|ABORT_PREPARED) / {
    match($0, /tx: +[0-9]+/); tx = substr($0, RSTART + 4, RLENGTH - 4) + 0
    match($0, /lsn: [0-9A-F]+\/[0-9A-F]+/); lsn = substr($0, RSTART + 5, RLENGTH - 5)
    match($0, /desc: [A-Z_]+ ([0-9]+: )?/); d = substr($0, RSTART + 6, RLENGTH - 6)
    if (d ~ /PREPARED [0-9]+: /) { split(d, p, " "); tx = p[2] + 0 }
    match($0, /[0-9]+-[0-9]+-[0-9]+ [0-9:.]+ UTC/); ts = substr($0, RSTART, RLENGTH - 4)
    print "xact", lsn, tx, ts
  }
  / desc: RESTORE_POINT / {
    match($0, /lsn: [0-9A-F]+\/[0-9A-F]+/); lsn = substr($0, RSTART + 5, RLENGTH - 5)
    name = $0; sub(/.* desc: RESTORE_POINT /, "", name)
    print "restore", lsn, name
  }
  /^rmgr: / {
    match($0, /\/ *[0-9]+, tx/); tot = substr($0, RSTART + 1, RLENGTH - 5) + 0
    match($0, /lsn: [0-9A-F]+\/[0-9A-F]+/); last = substr($0, RSTART + 5, RLENGTH - 5); lasttot = tot
  }
  END { print "last", last, lasttot }
' >"$OUT/pg15_wal_$SEG.expected"
chmod 644 "$OUT"/pg15_*
echo "wrote fixtures for $SEG to $OUT"
