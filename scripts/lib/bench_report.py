#!/usr/bin/env python3
"""Turns the JSON lines that scripts/bench recorded into the result tables.

    bench_report.py --results results.jsonl [--out DIR] [--merge chunk_sizes|s3|encryption|summaries|
                                                           verify_incremental|read_path|async|
                                                           wal_index|push]

Prints the markdown on stdout. With --out, also writes DIR/benchmarks.md and
DIR/benchmarks.json. With --merge PART (a `scripts/bench --chunk-sizes`, `--s3`, `--summaries` or
`--encryption` run), only that section is replaced in an existing DIR/benchmarks.json and the
markdown is rebuilt from it.

Hand-written text survives a rewrite: any block of an existing benchmarks.md between
`<!-- notes:NAME -->` and `<!-- /notes:NAME -->` is carried over into the new file at the same
named place.
"""

import argparse
import json
import math
import os
import re
import statistics
import sys

MIB = 1024 * 1024
GIB = 1024 * MIB
SEGMENT = 16 * MIB


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def load(path):
    recs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                recs.append(json.loads(line))
    return recs


class Records:
    def __init__(self, recs):
        self.recs = recs

    def merged(self, key, tool):
        """run -> merged fields of every record with this key and tool."""
        runs = {}
        for r in self.recs:
            if r["key"] == key and r["tool"] == tool:
                runs.setdefault(r["run"], {}).update(r)
        return runs

    def values(self, key, tool, field):
        return [r[field] for r in self.merged(key, tool).values() if field in r]

    def median(self, key, tool, field):
        return med(self.values(key, tool, field))

    def one(self, key, tool=""):
        m = self.merged(key, tool)
        return m[min(m)] if m else {}


def pair_row(name, measure, unit, better, a, va, b, vb, runs, note=""):
    """One row comparing two set-ups of the same measurement; the ratio is b / a."""
    return {"row": name, "measure": measure, "unit": unit, "better": better, a: va, b: vb,
            "ratio": ratio(vb, va), "runs": runs, "note": note}


def peak_rss(r):
    """Peak memory of one run: the sampled sum over the process tree, or the process's own
    ru_maxrss when larger (one process sampled between two polls)."""
    return max(r.get("peak_rss_kb", 0), r.get("maxrss_child_kb", 0)) * 1024


def fmt_s(x):
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:.0f} s"
    if x >= 10:
        return f"{x:.1f} s"
    if x >= 1:
        return f"{x:.2f} s"
    return f"{x * 1000:.0f} ms" if x >= 0.01 else f"{x * 1000:.1f} ms"


def fmt_b(x):
    if x is None:
        return "–"
    if x >= 1024 * MIB:
        return f"{x / 1024 / MIB:.2f} GiB"
    if x >= 10 * MIB:
        return f"{x / MIB:.0f} MiB"
    if x >= MIB:
        return f"{x / MIB:.1f} MiB"
    return f"{x / 1024:.0f} KiB"


def fmt_rate(bps):
    if bps is None:
        return "–"
    return f"{bps / MIB:.0f} MiB/s"


def fmt_ratio(r):
    if r is None or math.isnan(r):
        return "–"
    if r < 0.1:
        return f"{r:.3f}"
    return f"{r:.2f}" if r < 10 else f"{r:.1f}"


def ratio(a, b):
    try:
        return a / b if a is not None and b else None
    except ZeroDivisionError:
        return None


def build(recs):
    R = Records(recs)
    meta = R.one("meta")
    meta.update({k: v for k, v in R.one("meta_end").items() if k not in ("key", "tool", "run")})
    for k in ("key", "tool", "run"):
        meta.pop(k, None)
    out = {"meta": meta, "rows": [], "limits": {}, "near_limits": [], "datasets": {},
           "wal": {}, "chunk_sizes": [], "s3": []}
    rows = out["rows"]

    def row(name, measure, unit, better, pgbr, snap, block=None, runs=None, note=""):
        rows.append({"row": name, "measure": measure, "unit": unit, "better": better,
                     "pgbackrest": pgbr, "pgsnapfs": snap, "pgbackrest_block": block,
                     "ratio": ratio(snap, pgbr), "runs": runs, "note": note})

    # Data sets
    for name in ("pgbench", "orders"):
        d = R.one("dataset", name)
        if d:
            out["datasets"][name] = {"bytes": d["bytes"], "zstd3_bytes": d["zstd3_bytes"],
                                     "zstd3_ratio": d["bytes"] / d["zstd3_bytes"],
                                     "rows": d.get("rows")}

    # Physical limits (medians)
    lim = out["limits"]
    for key, name in (("limit_read", "disk"), ("limit_sha256", "sha256sum"),
                      ("limit_sha256_ni", "openssl"),
                      ("limit_zstd", "zstd"), ("limit_unzstd", "zstd"),
                      ("limit_wal_sha256_ni", "openssl"), ("limit_wal_zstd", "zstd")):
        runs = R.merged(key, name)
        if runs:
            b = next(iter(runs.values()))["bytes"]
            s = med([r["wall_s"] for r in runs.values()])
            lim[key.replace("limit_", "")] = {"bytes": b, "wall_s": s, "bytes_per_s": b / s,
                                              "runs": len(runs)}
    for k in ("zstd", "wal_zstd"):
        z = R.merged("limit_" + k, "zstd")
        if z:
            r0 = next(iter(z.values()))
            lim[k]["ratio"] = r0["bytes"] / r0["out_bytes"]

    def lrate(k):
        return lim.get(k, {}).get("bytes_per_s")

    # Full and incremental backups
    for key, label in (("full_pgbench", "full backup, pgbench only"),
                       ("full", "full backup, pgbench + orders"),
                       ("incr", f"incremental after pgbench -T {meta.get('pgbench_seconds')} -c 4")):
        tools = {t: R.merged(key, t) for t in ("pgbackrest", "pgsnapfs", "pgbackrest-block")}
        if not tools["pgsnapfs"]:
            continue
        n = len(tools["pgsnapfs"])
        m = {t: med([r.get("wall_s") for r in runs.values()]) for t, runs in tools.items()}
        row(label, "wall time", "s", "lower", m["pgbackrest"], m["pgsnapfs"],
            m["pgbackrest-block"], n)
        if key != "incr":
            m = {t: med([peak_rss(r) for r in runs.values()]) for t, runs in tools.items()}
            row(label, "peak RSS", "bytes", "lower", m["pgbackrest"], m["pgsnapfs"],
                m["pgbackrest-block"], n,
                "pgBackRest: sum over its processes (main + process-max workers)")
        m = {t: med([r.get("repo_bytes_added") for r in runs.values()])
             for t, runs in tools.items()}
        row(label, "repository bytes added" if key == "incr" else "repository bytes", "bytes",
            "lower", m["pgbackrest"], m["pgsnapfs"], m["pgbackrest-block"], n,
            "backup files only, the WAL archive not counted")

    # WAL archiving
    segs = {t: [r["wall_s"] for r in recs if r["key"] == "wal_segment" and r["tool"] == t]
            for t in ("pgbackrest", "pgsnapfs", "pgbackrest-block")}
    if segs["pgsnapfs"]:
        for t, xs in segs.items():
            if xs:
                xs = sorted(xs)
                out["wal"][t] = {"segments": len(xs), "median_s": med(xs),
                                 "mean_s": sum(xs) / len(xs),
                                 "p90_s": xs[min(len(xs) - 1, int(0.9 * len(xs)))],
                                 "max_s": xs[-1]}
        row("WAL archiving", "per segment, archive_command (median)", "s", "lower",
            med(segs["pgbackrest"]), med(segs["pgsnapfs"]), None, len(segs["pgsnapfs"]),
            "over the segments of the pgbench run; both synchronous")
    loop = {t: R.merged("wal_loop", t) for t in ("pgbackrest", "pgsnapfs")}
    if loop["pgsnapfs"]:
        rate = {t: med([r["segments"] / r["wall_s"] for r in runs.values()])
                for t, runs in loop.items()}
        nseg = next(iter(loop["pgsnapfs"].values()))["segments"]
        row("WAL archiving", f"sustained, {nseg} segments pushed one by one", "segments/s",
            "higher", rate["pgbackrest"], rate["pgsnapfs"], None, len(loop["pgsnapfs"]))
        b = {t: med([r["repo_bytes"] for r in runs.values()]) for t, runs in loop.items()}
        out["wal"]["loop_repo_bytes"] = b
        out["wal"]["loop_segments"] = nseg

    # Time to a queryable server
    for key, label in (("latest", "queryable on the last backup"),
                       ("pitr", f"queryable at {meta.get('pitr_offset_s')} s into pgbench")):
        phases = {}
        for t in ("pgbackrest", "pgsnapfs"):
            a = R.merged(key + ".restore", t)
            b = R.merged(key, t)
            per_run = []
            for run in sorted(b):
                if run in a and "start_s" in b[run]:
                    per_run.append({"restore_s": a[run]["wall_s"], "start_s": b[run]["start_s"],
                                    "pause_s": b[run]["pause_s"], "query_s": b[run]["query_s"]})
            for p in per_run:
                p["total_s"] = sum(p.values())
            phases[t] = per_run
        if not phases["pgsnapfs"]:
            continue
        n = len(phases["pgsnapfs"])
        names = {"restore_s": "restore (pgBackRest) / mount (pgsnapfs)",
                 "start_s": "pg_ctl start -w", "pause_s": "then until paused at the target",
                 "query_s": "first query", "total_s": "total"}
        for p, nm in names.items():
            row(label, nm, "s", "lower", med([x[p] for x in phases["pgbackrest"]]),
                med([x[p] for x in phases["pgsnapfs"]]), None, n)
        if key == "pitr":
            hw = R.values("pitr", "pgsnapfs", "mount_vmhwm_kb")
            out["pitr_mount_vmhwm_bytes"] = med(hw) * 1024 if hw else None
            out["pitr_replayed_to"] = R.values("pitr", "pgsnapfs", "history_rows")[:1]

    # Cold scans
    for table in ("pgbench_accounts", "bench_orders"):
        key = "scan_" + table
        runs = {t: R.merged(key, t) for t in ("pgbackrest", "pgsnapfs")}
        if not runs["pgsnapfs"]:
            continue
        m = {t: med([r["wall_s"] for r in rs.values()]) for t, rs in runs.items()}
        tb = next(iter(runs["pgsnapfs"].values()))["table_bytes"]
        row(f"cold full scan, count(*) {table} ({fmt_b(tb)})", "wall time", "s", "lower",
            m["pgbackrest"], m["pgsnapfs"], None, len(runs["pgsnapfs"]),
            "pgBackRest column: the restored local copy")
        out.setdefault("scan_bytes", {})[table] = tb
    hw = R.values("scan_mount", "pgsnapfs", "vmhwm_kb")
    if hw:
        out["scan_mount_vmhwm_bytes"] = med(hw) * 1024
        out["scan_mount_vmhwm_before_bytes"] = med(
            R.values("scan_mount", "pgsnapfs", "vmhwm_before_scan_kb")) * 1024

    # Restore test
    rt = {t: R.merged("restore_test", t) for t in ("pgbackrest", "pgsnapfs")}
    if rt["pgbackrest"]:
        snap_ok = [r for r in rt["pgsnapfs"].values() if "wall_s" in r]
        row("restore test", "pgsnapfs verify / pgBackRest restore + start + count(*) every table",
            "s", "lower", med([r["wall_s"] for r in rt["pgbackrest"].values()]),
            med([r["wall_s"] for r in snap_ok]) if snap_ok else None, None,
            len(rt["pgbackrest"]), "" if snap_ok else "pgsnapfs verify: not available")

    # How close pgsnapfs is to the limits
    near = out["near_limits"]
    # The hashing limit is SHA-256 with the CPU's SHA extensions (openssl), which the sha2
    # crate uses too; coreutils sha256sum does not use them.
    sha = lrate("sha256_ni") or lrate("sha256")
    zst, unz, rd = lrate("zstd"), lrate("unzstd"), lrate("read")
    cores = meta.get("cores") or 2
    if sha and zst and rd:
        cpu_bound = cores / (1 / sha + 1 / zst)
        for key, label in (("full", "full backup, pgbench + orders"), ("full_pgbench",
                                                                       "full backup, pgbench only"),
                           ("incr", "incremental backup")):
            runs = R.merged(key, "pgsnapfs")
            if not runs:
                continue
            logical = med([r.get("size_logical") for r in runs.values()])
            wall = med([r["wall_s"] for r in runs.values()])
            got = logical / wall
            bound = min(rd, cpu_bound)
            near.append({"row": label, "achieved_bytes_per_s": got, "limit_bytes_per_s": bound,
                         "limit": f"min(cold read {fmt_rate(rd)}, {cores} cores × sha256+zstd-3 "
                                  f"{fmt_rate(cpu_bound)})", "fraction": got / bound})
        wsha = lrate("wal_sha256_ni") or sha
        wzst = lrate("wal_zstd") or zst
        ideal = SEGMENT / wsha + SEGMENT / wzst
        if segs.get("pgsnapfs"):
            got = med(segs["pgsnapfs"])
            near.append({"row": "wal-push, per segment", "achieved_s": got, "limit_s": ideal,
                         "limit": "one core: sha256 + zstd -3 of one 16 MiB segment "
                                  "(measured on the segments set aside)",
                         "fraction": ideal / got})
        if loop.get("pgsnapfs"):
            got = med([r["segments"] / r["wall_s"] for r in loop["pgsnapfs"].values()])
            near.append({"row": "wal-push, sustained", "achieved_s": 1 / got, "limit_s": ideal,
                         "limit": "the same", "fraction": ideal * got})
    if unz and sha and rd:
        for table in ("pgbench_accounts", "bench_orders"):
            runs = R.merged("scan_" + table, "pgsnapfs")
            loc = R.merged("scan_" + table, "pgbackrest")
            if not runs:
                continue
            tb = next(iter(runs.values()))["table_bytes"]
            got = tb / med([r["wall_s"] for r in runs.values()])
            local = tb / med([r["wall_s"] for r in loc.values()]) if loc else None
            one_core = 1 / (1 / sha + 1 / unz)
            near.append({"row": f"cold scan {table}", "achieved_bytes_per_s": got,
                         "limit_bytes_per_s": local,
                         "limit": f"the local copy's scan ({fmt_rate(local)}); disk {fmt_rate(rd)}; "
                                  f"one core sha256+unzstd {fmt_rate(one_core)}",
                         "fraction": got / local if local else None})

    # Chunk-size sweep
    for cs in ("8K", "16K", "32K", "64K", "128K", "256K", "1M"):
        b1 = R.one("sweep_backup1", cs)
        b2 = R.one("sweep_backup2", cs)
        if not b1 or not b2:
            continue
        size = int(cs[:-1]) * (1024 if cs.endswith("K") else MIB)
        chunks = math.ceil(b2["size_logical"] / size)
        out["chunk_sizes"].append({
            "chunk_size": cs, "chunk_bytes": size,
            "first_size_logical": b1["size_logical"], "first_stored": b1["size_stored_new"],
            "first_repo_bytes": b1["repo_bytes_added"], "first_wall_s": b1["wall_s"],
            "first_peak_rss": peak_rss(b1),
            "second_size_logical": b2["size_logical"], "second_stored_new": b2["size_stored_new"],
            "second_repo_bytes": b2["repo_bytes_added"], "second_wall_s": b2["wall_s"],
            "second_peak_rss": peak_rss(b2),
            "chunks": chunks, "chunk_list_bytes": chunks * 48,
        })
    # S3 against local: the same cluster, pgsnapfs into a directory and into moto.
    s3 = out["s3"] = []

    def s3row(name, measure, unit, better, local, remote, runs, note=""):
        s3.append(pair_row(name, measure, unit, better, "local", local, "s3", remote, runs, note))

    for n, label in ((1, "full backup"), (2, "second backup, nothing changed")):
        b = {t: R.merged(f"s3_backup{n}", t) for t in ("local", "s3")}
        if not b["s3"]:
            continue
        runs = len(b["s3"])
        m = {t: med([r["wall_s"] for r in rs.values()]) for t, rs in b.items()}
        s3row(label, "wall time", "s", "lower", m["local"], m["s3"], runs)
        logical = med([r["size_logical"] for r in b["s3"].values()])
        s3row(label, f"throughput ({fmt_b(logical)} of files)", "bytes/s", "higher",
              logical / m["local"] if m["local"] else None,
              logical / m["s3"] if m["s3"] else None, runs)
        s3row(label, "peak RSS", "bytes", "lower",
              med([peak_rss(r) for r in b["local"].values()]),
              med([peak_rss(r) for r in b["s3"].values()]), runs)
        s3row(label, "S3 requests (of which PUT + part uploads)", "count", "lower", None,
              med([r["requests"] for r in b["s3"].values()]), runs,
              f"{med([r['puts'] + r['upload_parts'] for r in b['s3'].values()]):.0f} PUT + parts")
    w = {t: R.one("s3_wal", t) for t in ("local", "s3")}
    if w["s3"]:
        per = {t: w[t]["wall_s"] / w[t]["segments"] if w[t] else None for t in w}
        s3row("wal-push", f"per segment ({w['s3']['segments']} pushed one by one)", "s", "lower",
              per["local"], per["s3"], 1)
        s3row("wal-push", "S3 requests per segment", "count", "lower", None,
              w["s3"]["requests_per_segment"], 1, "segments not archived before")
    q = {}
    for k in ("local", "cold", "warm"):
        a, b = R.merged(f"s3_query_{k}.restore", "pgsnapfs"), R.merged(f"s3_query_{k}", "pgsnapfs")
        tot = [a[r]["wall_s"] + b[r]["start_s"] + b[r]["pause_s"] + b[r]["query_s"]
               for r in sorted(b) if r in a and "query_s" in b[r]]
        q[k] = (med(tot), len(tot)) if tot else (None, 0)
    if q["cold"][0] is not None:
        s3row("first query on a mount of the last backup", "mount + start + first query, "
              "S3 disk cache empty", "s", "lower", q["local"][0], q["cold"][0], q["cold"][1],
              "page cache dropped first")
        s3row("first query on a mount of the last backup", "the same, disk cache warm", "s",
              "lower", q["local"][0], q["warm"][0], q["warm"][1])
    v = {k: R.merged(f"s3_verify_{k}", k) for k in ("local", "cold", "warm")}
    if v["cold"]:
        vl = med([r["wall_s"] for r in v["local"].values()]) if v["local"] else None
        for k, label in (("cold", "disk cache empty"), ("warm", "disk cache warm")):
            if not v[k]:
                continue  # a --read-path run: no warm verify
            rs = v[k].values()
            s3row("verify of the last backup", f"wall time, {label}", "s", "lower", vl,
                  med([r["wall_s"] for r in rs]), len(v[k]),
                  f"{med([r['gets'] for r in rs]):.0f} GETs, "
                  f"{med([r['cache_hits'] for r in rs]):.0f} chunks from the disk cache")

    # Encryption: the same cluster into a plain and an encrypted repository.
    enc = out["encryption"] = []
    b = {t: R.merged("enc_backup", t) for t in ("plain", "encrypted")}
    s_ = {t: R.merged("enc_scan", t) for t in ("plain", "encrypted")}
    if b["encrypted"]:
        runs = len(b["encrypted"])
        m = {t: med([r["wall_s"] for r in rs.values()]) for t, rs in b.items()}
        logical = med([r["size_logical"] for r in b["encrypted"].values()])
        for measure, unit, better, f in (
                ("wall time", "s", "lower", lambda t: m[t]),
                (f"throughput ({fmt_b(logical)} of files)", "bytes/s", "higher",
                 lambda t: logical / m[t] if m[t] else None),
                ("peak RSS", "bytes", "lower",
                 lambda t: med([peak_rss(r) for r in b[t].values()]))):
            enc.append(pair_row("full backup, page cache dropped", measure, unit, better,
                                "plain", f("plain"), "encrypted", f("encrypted"), runs))
    if s_["encrypted"]:
        runs = len(s_["encrypted"])
        w = {t: med([r["wall_s"] for r in rs.values()]) for t, rs in s_.items()}
        size = med([r["table_bytes"] for r in s_["encrypted"].values()])
        enc.append(pair_row("cold scan of pgbench_accounts through a mount", "wall time", "s",
                            "lower", "plain", w["plain"], "encrypted", w["encrypted"], runs,
                            "page cache dropped after the server started"))
        enc.append(pair_row("cold scan of pgbench_accounts through a mount",
                            f"throughput ({fmt_b(size)} table)", "bytes/s", "higher",
                            "plain", size / w["plain"] if w["plain"] else None,
                            "encrypted", size / w["encrypted"] if w["encrypted"] else None, runs))

    # Per-segment push, one process per segment (issue 17): the same segments by every set-up.
    ps = out["push"] = []
    seg = {t: [r["wall_s"] for r in recs if r["key"] == "push_segment" and r["tool"] == t]
           for t in ("pgbackrest", "pgbackrest-aes", "pgsnapfs", "pgsnapfs-key-file")}
    if seg["pgsnapfs"]:
        n = len(seg["pgsnapfs"])
        m = {t: med(xs) for t, xs in seg.items()}
        for name, a, b, note in (
                ("plain: pgBackRest archive-push / pgsnapfs wal-push", "pgbackrest", "pgsnapfs",
                 "goal: pgsnapfs at most 0.5x"),
                ("encrypted: pgBackRest aes-256-cbc / pgsnapfs key-file slot", "pgbackrest-aes",
                 "pgsnapfs-key-file", ""),
                ("pgsnapfs: plain / encrypted with a key-file slot", "pgsnapfs",
                 "pgsnapfs-key-file", "goal: at most 1.2x")):
            ps.append(pair_row(name, "per segment (median)", "s", "lower", "a", m[a], "b", m[b],
                               n, note))

    # PostgreSQL 17: the same incremental backup read from WAL summaries and in full.
    sm = out["summaries"] = []
    for key, name in (("sum_busy", "incremental backup after pgbench"),
                      ("sum_quiet", "incremental backup, nothing changed")):
        b = {t: R.merged(key, t) for t in ("full-read", "wal-summaries")}
        if not (b["full-read"] and b["wal-summaries"]):
            continue
        runs = len(b["wal-summaries"])

        def m(t, f):
            return med([f(r) for r in b[t].values()])
        logical = m("wal-summaries", lambda r: r["size_logical"])
        for measure, unit, better, f, note in (
                ("wall time", "s", "lower", lambda r: r["wall_s"],
                 f"{fmt_b(logical)} of files, page cache dropped"),
                ("bytes read from the data directory", "bytes", "lower",
                 lambda r: r["bytes_read"], ""),
                ("bytes newly stored", "bytes", "lower", lambda r: r["size_stored_new"], ""),
                ("peak RSS", "bytes", "lower", peak_rss, "")):
            sm.append(pair_row(name, measure, unit, better, "full-read", m("full-read", f),
                               "wal-summaries", m("wal-summaries", f), runs, note))

    # Incremental verify against verify --full, on an unchanged backup and after pgbench.
    vi = out["verify_incremental"] = []
    for key, name in (("vinc_unchanged", "verify of an unchanged backup after a verified one"),
                      ("vinc_pgbench", "verify after the pgbench run")):
        v = {t: R.merged(key, t) for t in ("full", "incremental")}
        if not (v["full"] and v["incremental"]):
            continue
        runs = len(v["incremental"])

        def vm(t, f):
            return med([f(r) for r in v[t].values()])
        for measure, unit, better, f, note in (
                ("wall time", "s", "lower", lambda r: r["wall_s"], "page cache dropped"),
                ("checks phase", "s", "lower", lambda r: r["checks_s"], ""),
                ("bytes of relations read", "bytes", "lower", lambda r: r["bytes_read"],
                 "the rest skipped as verified before"),
                ("tables read", "", "lower", lambda r: r["tables"], "")):
            vi.append(pair_row(name, measure, unit, better, "full", vm("full", f),
                               "incremental", vm("incremental", f), runs, note))

    out["read_path"] = read_path(R)
    out["async"] = async_archiving(R)
    out["wal_index"] = [{k: r[k] for k in ("target", "segments", "requests", "seconds")}
                        for r in recs if r["key"] == "windex_plan"]

    loads = [r["load1"] for r in recs if "load1" in r]
    if loads:
        meta["load1_median"] = med(loads)
        meta["load1_max"] = max(loads)
    out["raw"] = recs
    return out


def async_archiving(R):
    """The rows of scripts/lib/bench_async.sh: lag under load, and the archiver's own rate."""
    rows = []
    mib = 2 ** 20

    def one(key, tool):
        runs = list(R.merged(key, tool).values())
        return runs[0] if runs else None

    for load, what in (("init", "pgbench -i (COPY, index builds)"),
                       ("pgbench", "pgbench -c 4, synchronous_commit off")):
        a, b = one("async_lag_" + load, "pgsnapfs"), one("async_lag_" + load, "pgbackrest")
        if not a:
            continue
        def v(r, f):
            return f(r) if r else None
        for measure, unit, f in (
                ("WAL written", "MB/s", lambda r: round(r["wal_bytes"] / r["seconds"] / 1e6, 1)),
                ("archive lag, max", "MiB", lambda r: round(r["max_lag_bytes"] / mib)),
                ("archive lag, mean", "MiB", lambda r: round(r["mean_lag_bytes"] / mib)),
                ("caught up after the load", "s", lambda r: r["catch_up_s"]),
                ("transactions", "tps", lambda r: round(r["tps"]) if r["tps"] else None)):
            if f(a) is None:
                continue
            rows.append({"row": what, "measure": measure, "unit": unit,
                         "pgsnapfs": v(a, f), "pgbackrest": v(b, f)})
    for store, what in (("local", "archiver alone, local repository"),
                        ("s3", "archiver alone, S3 (moto)")):
        rs = [r for r in R.merged("async_drain", store).values() if "wall_s" in r]
        if rs:
            rows.append({"row": what, "measure": f"rate ({rs[0]['segments']} segments, process-max 2)",
                         "unit": "MB/s", "pgsnapfs": round(med([r["bytes"] / r["wall_s"] / 1e6 for r in rs]), 1),
                         "pgbackrest": None, "runs": len(rs)})
    return rows


def async_table(rows):
    lines = ["| load | measure | pgsnapfs (wal-push --async) | pgBackRest (archive-async) |",
             "|---|---|---:|---:|"]
    for r in rows:
        def c(x):
            return "—" if x is None else f"{x} {r['unit']}"
        lines.append(f"| {r['row']} | {r['measure']} | {c(r['pgsnapfs'])} | {c(r['pgbackrest'])} |")
    return "\n".join(lines)


def read_path(R):
    """The rows of issue 15, each with the issue's goal: `pair_row`s of a reference (the local
    disk, a local copy, pgBackRest, verify --full, a local repository) against pgsnapfs."""
    rows = []

    def add(name, measure, unit, better, ref, snap, runs, goal, note=""):
        r = pair_row(name, measure, unit, better, "reference", ref, "pgsnapfs", snap, runs, note)
        r["goal"] = goal
        rows.append(r)

    def rate(rs):
        return med([r["bytes"] / r["wall_s"] for r in rs.values() if r.get("wall_s")])

    def span(rs):
        xs = [r["bytes"] / r["wall_s"] / GIB for r in rs.values() if r.get("wall_s")]
        return f"{min(xs):.2f}–{max(xs):.2f} GiB/s" if xs else "–"

    def cpu_per_gib(rs):
        return med([r["cpu_s"] / (r["bytes"] / GIB) for r in rs.values() if "cpu_s" in r])

    def wall(rs):
        return med([r["wall_s"] for r in rs.values() if "wall_s" in r])

    def n(rs):
        return len([r for r in rs.values() if "wall_s" in r])

    hot = {k: R.merged("rp_hot", k)
           for k in ("local", "catalogue", "catalogue_again", "hydrated")}
    if hot["catalogue"]:
        size = med([r["bytes"] for r in hot["catalogue"].values() if "bytes" in r])
        name = (f"hot `cat` of pgbench_accounts' first segment ({fmt_b(size)}), catalogue mount, "
                "the repository's packs in the page cache")
        runs = n(hot["catalogue"])
        add(name, "throughput (reference: the local file from the page cache)", "GiB/s",
            "higher", rate(hot["local"]), rate(hot["catalogue"]), runs,
            "≥ 2 GiB/s through the mount", f"pgsnapfs {span(hot['catalogue'])}")
        add(name, "CPU-seconds of the mount process per GiB", "CPU-s/GiB", "lower", None,
            cpu_per_gib(hot["catalogue"]), runs, "≤ 0.6 CPU-s/GiB", "utime + stime, /proc/PID/stat")
        add("the same file read again at once through the same mount", "throughput", "GiB/s",
            "higher", rate(hot["local"]), rate(hot["catalogue_again"]), n(hot["catalogue_again"]),
            "a hydrated or passthrough file ≥ 5 GiB/s",
            f"{fmt_cpu(cpu_per_gib(hot['catalogue_again']))} in the mount process")
    if n(hot["hydrated"]):
        add("the same file hydrated (`mount --hydrate`), served by FUSE passthrough from its "
            "local copy in the page cache", "throughput", "GiB/s", "higher", rate(hot["local"]),
            rate(hot["hydrated"]), n(hot["hydrated"]), "a hydrated or passthrough file ≥ 5 GiB/s",
            f"pgsnapfs {span(hot['hydrated'])}, {fmt_cpu(cpu_per_gib(hot['hydrated']))} in the "
            "mount process")
    cold = {k: R.merged("rp_cold", k) for k in ("local", "catalogue", "view")}
    for k, label in (("catalogue", "catalogue mount"), ("view", "view (`mount --backup latest`)")):
        if cold[k]:
            add(f"cold sequential `cat` of that file, {label}",
                "throughput (reference: the local disk)", "GiB/s", "higher", rate(cold["local"]),
                rate(cold[k]), n(cold[k]), "≥ 0.8× the local disk",
                f"alternating runs; local {span(cold['local'])}, pgsnapfs {span(cold[k])}, "
                f"{fmt_cpu(cpu_per_gib(cold[k]))} in the mount process")
    scan = {t: R.merged("scan_pgbench_accounts", t) for t in ("pgbackrest", "pgsnapfs")}
    if scan["pgsnapfs"]:
        add("cold `count(*)` of pgbench_accounts on a view", "wall time (reference: a local copy "
            "restored by pgBackRest)", "s", "lower", wall(scan["pgbackrest"]),
            wall(scan["pgsnapfs"]), n(scan["pgsnapfs"]), "≤ 1.15×",
            "page cache dropped after both servers started")
    for key, name, goal in (
            ("vinc_unchanged", "`verify` of an unchanged backup after a verified one",
             "under 2 s at scale 100, flat with scale"),
            ("vinc_pgbench", f"`verify` after `pgbench -T {R.one('meta').get('pgbench_seconds')}`",
             "proportional to the chunks changed")):
        v = {t: R.merged(key, t) for t in ("full", "incremental")}
        if not v["incremental"]:
            continue
        add(name, "wall time (reference: `verify --full` of the same backup)", "s", "lower",
            wall(v["full"]), wall(v["incremental"]), n(v["incremental"]), goal,
            "page cache dropped")
        add(name, "bytes of relations read", "bytes", "lower",
            med([r["bytes_read"] for r in v["full"].values() if "bytes_read" in r]),
            med([r["bytes_read"] for r in v["incremental"].values() if "bytes_read" in r]),
            n(v["incremental"]), "", "`verify --json` bytes_read")
    rt = {t: R.merged("restore_test", t) for t in ("pgbackrest", "pgsnapfs")}
    if rt["pgsnapfs"] and wall(rt["pgsnapfs"]) is not None:
        add("full `verify --full`", "wall time (reference: pgBackRest restore + start + read every "
            "table and index + stop)", "s", "lower", wall(rt["pgbackrest"]), wall(rt["pgsnapfs"]),
            n(rt["pgsnapfs"]), "≤ 0.5×", "page cache dropped")
    s3 = {k: R.merged(f"s3_verify_{k}", k) for k in ("local", "cold")}
    if s3["cold"]:
        gets = med([r["gets"] for r in s3["cold"].values() if "gets" in r])
        reqs = med([r["requests"] for r in s3["cold"].values() if "requests" in r])
        name = "cold `verify --full` from S3 (moto on 127.0.0.1), disk cache empty"
        add(name, "wall time (reference: the local repository)", "s", "lower", wall(s3["local"]),
            wall(s3["cold"]), n(s3["cold"]), "≤ 2×", "page cache dropped")
        add(name, "GET requests", "count", "lower", None, gets, n(s3["cold"]),
            "reported", f"{reqs:,.0f} requests in all" if reqs is not None else "")
    hwm = {label: [r["vmhwm_kb"] * 1024 for r in R.merged(key, tool).values() if "vmhwm_kb" in r]
           for label, key, tool in (
               ("the hot catalogue mount", "rp_hot", "catalogue"),
               ("the cold catalogue mounts", "rp_cold", "catalogue"),
               ("the cold views", "rp_cold", "view"),
               ("the views after the cold count(*)", "scan_mount", "pgsnapfs"))}
    seen = {k: max(v) for k, v in hwm.items() if v}
    if seen:
        add("peak RSS of a mount process (VmHWM before unmount), default settings",
            "the largest of the mounts above", "bytes", "lower", None, max(seen.values()),
            sum(len(v) for v in hwm.values()), "≤ 256 MiB, whatever the database size",
            "; ".join(f"{k}: {fmt_b(v)}" for k, v in seen.items()))
    return rows


def fmt_cpu(x):
    return "–" if x is None else f"{x:.2f} CPU-s/GiB"


# ---------------------------------------------------------------------------------------------
# Markdown

def cell(v, unit):
    if v is None:
        return "–"
    if unit == "s":
        return fmt_s(v)
    if unit == "bytes":
        return fmt_b(v)
    if unit == "segments/s":
        return f"{v:.1f}/s"
    if unit == "bytes/s":
        return fmt_rate(v)
    if unit == "GiB/s":
        return f"{v / GIB:.2f} GiB/s"
    if unit == "CPU-s/GiB":
        return fmt_cpu(v)
    if unit == "count" and (v >= 1000 or float(v).is_integer()):
        return f"{v:,.0f}"
    return f"{v:.3g}"


def verdict(r):
    x = r["ratio"]
    if x is None:
        return "–"
    good = x < 1 if r["better"] == "lower" else x > 1
    if 0.95 <= x <= 1.05:
        return "≈"
    return "pgsnapfs" if good else "pgBackRest"


def results_table(doc):
    lines = ["| row | measure | pgBackRest | pgsnapfs | pgsnapfs / pgBackRest | better is | "
             "ahead | runs | pgBackRest block incr. (BETA) |",
             "|---|---|---:|---:|---:|---|---|---:|---:|"]
    for r in doc["rows"]:
        lines.append(
            f"| {r['row']} | {r['measure']} | {cell(r['pgbackrest'], r['unit'])} | "
            f"{cell(r['pgsnapfs'], r['unit'])} | {fmt_ratio(r['ratio'])} | {r['better']} | "
            f"{verdict(r)} | {r['runs'] or ''} | {cell(r['pgbackrest_block'], r['unit'])} |")
    return "\n".join(lines)


def pair_table(rows, a, a_title, b, b_title):
    """A table of `pair_row`s: column a, column b, and b / a."""
    if not rows:
        return ""
    lines = [f"| row | measure | {a_title} | {b_title} | {b_title} / {a_title} | better is | runs "
             "| note |",
             "|---|---|---:|---:|---:|---|---:|---|"]
    for r in rows:
        lines.append(f"| {r['row']} | {r['measure']} | {cell(r[a], r['unit'])} | "
                     f"{cell(r[b], r['unit'])} | {fmt_ratio(r['ratio'])} | {r['better']} | "
                     f"{r['runs'] or ''} | {r['note']} |")
    return "\n".join(lines)


def read_path_table(rows):
    lines = ["| row | measure | reference | pgsnapfs | pgsnapfs / reference | goal (issue 15) | "
             "runs | note |",
             "|---|---|---:|---:|---:|---|---:|---|"]
    for r in rows:
        lines.append(f"| {r['row']} | {r['measure']} | {cell(r['reference'], r['unit'])} | "
                     f"{cell(r['pgsnapfs'], r['unit'])} | {fmt_ratio(r['ratio'])} | {r['goal']} | "
                     f"{r['runs'] or ''} | {r['note']} |")
    return "\n".join(lines)


def s3_table(doc):
    return pair_table(doc.get("s3") or [], "local", "local", "s3", "S3 (moto)")


def chunk_table(doc):
    cs = doc.get("chunk_sizes") or []
    if not cs:
        return ""
    lines = ["| chunk size | 1st backup stored | 1st backup time | 2nd backup: size_stored_new | "
             "2nd backup: repo bytes added | 2nd backup time | chunks | chunk lists (× 48 B) | "
             "2nd stored + lists |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cs:
        lines.append(
            f"| {c['chunk_size']} | {fmt_b(c['first_stored'])} | {fmt_s(c['first_wall_s'])} | "
            f"{fmt_b(c['second_stored_new'])} | {fmt_b(c['second_repo_bytes'])} | "
            f"{fmt_s(c['second_wall_s'])} | {c['chunks']:,} | {fmt_b(c['chunk_list_bytes'])} | "
            f"{fmt_b(c['second_stored_new'] + c['chunk_list_bytes'])} |")
    return "\n".join(lines)


def chunk_reading(doc):
    cs = doc.get("chunk_sizes") or []
    if not cs:
        return ""
    best = min(cs, key=lambda c: c["second_stored_new"] + c["chunk_list_bytes"])
    d64 = next((c for c in cs if c["chunk_size"] == "64K"), None)
    s = (f"Computed from this run: the smallest incremental-plus-chunk-list cost is at "
         f"**{best['chunk_size']}** ({fmt_b(best['second_stored_new'] + best['chunk_list_bytes'])})")
    if d64 and best is not d64:
        s += (f"; 64K costs {fmt_b(d64['second_stored_new'] + d64['chunk_list_bytes'])} "
              f"({(d64['second_stored_new'] + d64['chunk_list_bytes']) / (best['second_stored_new'] + best['chunk_list_bytes']):.2f}×)")
    return s + "."


def machine(meta):
    return (f"{meta.get('cpu', '?')}, {meta.get('cores')} cores, {meta.get('mem_gib')} GiB RAM, "
            f"Linux {meta.get('kernel')}, Debian {meta.get('debian')}, disk {meta.get('disk')}")


def render(doc, notes):
    m = doc["meta"]
    L = []
    L.append("# Benchmarks: pgsnapfs against pgBackRest\n")
    L.append("Generated by `scripts/bench` (numbers) — text between `notes` markers is written "
             "by hand and kept when the file is regenerated.\n")
    L.append(f"- **Date:** {m.get('date')}")
    L.append(f"- **Command:** `{m.get('command')}` ({m.get('mode')} mode)")
    L.append(f"- **Machine:** {machine(m)}")
    L.append(f"- **Load:** the 2 cores are shared with other engineers' builds; load average "
             f"{m.get('loadavg_start')} at the start, {m.get('loadavg_end')} at the end; "
             f"1-minute load when the timed commands started: median {m.get('load1_median')}, "
             f"max {m.get('load1_max')}. "
             + (f"The whole run (servers, mounts and tools) ran at nice {m.get('nice')}, its "
                f"scheduler autogroups too ({m.get('autogroup')}), so it took the CPU before "
                f"those builds. " if m.get("autogroup") and not m.get("autogroup", "").endswith(" 0")
                else "The run was at normal priority. " if not m.get("nice")
                else f"The run was at nice {m.get('nice')}, but with autogroup scheduling that "
                f"only counts inside its own session: other sessions' builds still got their "
                f"share of the CPU. ")
             + f"Cheap rows are the median of {m.get('runs')} runs.")
    L.append(f"- **Versions:** {m.get('postgres')}; {m.get('pgbackrest')}; {m.get('pgsnapfs')} "
             f"(commit {m.get('git_commit')}{', with uncommitted changes' if m.get('git_dirty') else ''}); "
             f"zstd {m.get('zstd')}")
    L.append(f"- **Page cache dropped** before every backup, restore, mount and scan: "
             f"{'yes' if m.get('caches_dropped', 1) else 'NO (not permitted here)'}")
    L.append("")
    L.append(notes.get("summary", "<!-- notes:summary -->\n<!-- /notes:summary -->"))
    L.append("")
    if doc["datasets"]:
        L.append("## Data sets\n")
        L.append("| data set | rows | relation files | zstd -3 | ratio |")
        L.append("|---|---:|---:|---:|---:|")
        desc = {"pgbench": f"pgbench, scale {m.get('scale')} (accounts, branches, tellers, history + indexes)",
                "orders": "bench_orders: real-like rows (ids, timestamps, prices, codes, e-mails, md5 notes) + primary key"}
        for k, d in doc["datasets"].items():
            L.append(f"| {desc.get(k, k)} | {d.get('rows') or '–'} | {fmt_b(d['bytes'])} | "
                     f"{fmt_b(d['zstd3_bytes'])} | {d['zstd3_ratio']:.1f}× |")
        L.append("")
        pr = doc["datasets"].get("pgbench", {}).get("zstd3_ratio")
        L.append(f"pgbench's tables are mostly blank padding and compress {pr or 30:.0f}× here "
                 "(heap alone about 30×), which flatters "
                 "every tool's sizes; bench_orders compresses like real data. The full-backup rows "
                 "are given for pgbench alone and for both; all other rows run on the cluster "
                 "holding both (the pgbench run changes only the pgbench tables).\n")
    if doc["rows"]:
        L.append("## Results\n")
        L.append("Ratio = pgsnapfs / pgBackRest; *better is* says whether a lower or higher "
                 "figure wins, *ahead* names the tool that wins (≈ within 5%). pgBackRest: zstd "
                 "level 3, process-max=2, archive-async=n, start-fast=y, local repository on the "
                 "same disk. pgsnapfs: zstd level 3, 64K chunks, both cores. The last column is "
                 "pgBackRest 2.45 with `repo-bundle=y repo-block=y` (block incremental, marked "
                 "BETA in 2.45), in its own repository.\n")
        L.append(results_table(doc))
        L.append("")
        rt = [r for r in doc["raw"] if r["key"] == "verify_output"]
        if rt:
            o = rt[-1]["output"]
            ph = o.get("phases") or {}
            L.append(f"`pgsnapfs verify` phases (last run): "
                     + ", ".join(f"{k.removesuffix('_s')} {fmt_s(v)}" for k, v in ph.items())
                     + f"; {o.get('databases')} databases, {o.get('tables')} tables read, "
                     f"{o.get('indexes_checked')} indexes checked (amcheck: {o.get('amcheck')}), "
                     f"ok: {o.get('ok')}.\n")
        L.append("`pgsnapfs verify` does more than the pgBackRest side of the restore-test row: "
                 "besides reading every table it checks indexes and runs assertions, so that "
                 "ratio is conservative for pgsnapfs." if rt else
                 "`pgsnapfs verify` was not available in this build: its cell is empty.")
        L.append("")
        extra = []
        if doc.get("scan_mount_vmhwm_bytes"):
            extra.append(f"- Peak memory (VmHWM) of the pgsnapfs mount process over the cold scans: "
                         f"{fmt_b(doc['scan_mount_vmhwm_bytes'])} (before the scans, after start and "
                         f"recovery: {fmt_b(doc.get('scan_mount_vmhwm_before_bytes'))}); for the "
                         f"point-in-time mount: {fmt_b(doc.get('pitr_mount_vmhwm_bytes'))}.")
        w = doc.get("wal") or {}
        for t in ("pgbackrest", "pgsnapfs", "pgbackrest-block"):
            if t in w:
                x = w[t]
                extra.append(f"- archive_command, {t}: {x['segments']} segments, median "
                             f"{fmt_s(x['median_s'])}, mean {fmt_s(x['mean_s'])}, p90 "
                             f"{fmt_s(x['p90_s'])}, max {fmt_s(x['max_s'])}.")
        if w.get("loop_repo_bytes"):
            b = w["loop_repo_bytes"]
            extra.append(f"- Repository size after the {w.get('loop_segments')}-segment loop: "
                         f"pgBackRest {fmt_b(b.get('pgbackrest'))}, pgsnapfs {fmt_b(b.get('pgsnapfs'))}.")
        if extra:
            L.extend(extra)
            L.append("")
    if doc["limits"]:
        lim = doc["limits"]
        L.append("## Physical limits (same run, same data)\n")
        L.append("| what | throughput | how |")
        L.append("|---|---:|---|")
        how = {"read": "`find DATA -type f -exec cat` after dropping caches (data directory without pg_wal)",
               "sha256": "`sha256sum` (coreutils: no SHA extensions), one core, warm cache",
               "sha256_ni": "`openssl dgst -sha256` (SHA extensions, as the sha2 crate), one core, warm cache",
               "zstd": "`zstd -3 -T1`, one core, warm cache",
               "unzstd": "`zstd -d` of that output, one core",
               "wal_sha256_ni": "WAL: `openssl dgst -sha256` on the segments set aside, one core",
               "wal_zstd": "WAL: `zstd -3 -T1` on the segments set aside, one core"}
        for k in ("read", "sha256", "sha256_ni", "zstd", "unzstd", "wal_sha256_ni", "wal_zstd"):
            if k in lim:
                extra = f" (ratio {lim[k]['ratio']:.1f}×)" if "ratio" in lim[k] else ""
                L.append(f"| {k} | {fmt_rate(lim[k]['bytes_per_s'])} | {how[k]}{extra}, "
                         f"{fmt_b(lim[k]['bytes'])} |")
        L.append("")
    if doc["near_limits"]:
        L.append("### How close pgsnapfs is to them\n")
        L.append("| pgsnapfs row | achieved | limit | fraction of the limit |")
        L.append("|---|---:|---|---:|")
        for n in doc["near_limits"]:
            if "achieved_s" in n:
                a = fmt_s(n["achieved_s"])
                lim_txt = f"{fmt_s(n['limit_s'])}: {n['limit']}"
            else:
                a = fmt_rate(n["achieved_bytes_per_s"])
                lim_txt = (f"{fmt_rate(n['limit_bytes_per_s'])}: {n['limit']}"
                           if n.get("limit_bytes_per_s") else n["limit"])
            f = n.get("fraction")
            L.append(f"| {n['row']} | {a} | {lim_txt} | {f * 100:.0f}% |" if f else
                     f"| {n['row']} | {a} | {lim_txt} | – |")
        L.append("")
    L.append(notes.get("analysis", "<!-- notes:analysis -->\n<!-- /notes:analysis -->"))
    L.append("")
    if doc.get("chunk_sizes"):
        L.append("## Chunk size\n")
        L.append("For each chunk size: a fresh repository, a full backup of the cluster (pgbench + "
                 "orders), then a second backup after the pgbench run. Every size backs up the "
                 "*same two states* (stopped copies of the cluster taken before and after the run), "
                 "so the sizes see exactly the same changes. *Chunk lists* = logical size / chunk "
                 "size × 48 bytes, what each backup's manifest holds before reuse of unchanged "
                 "lists.\n")
        cm = doc.get("chunk_sizes_meta")
        if cm:
            L.append(f"Sweep run separately: {cm.get('date')}, `{cm.get('command')}`, scale "
                     f"{cm.get('scale')}, pgbench {cm.get('pgbench_seconds')} s.\n")
        else:
            L.append(f"Scale {m.get('scale')} plus bench_orders, pgbench -T "
                     f"{m.get('pgbench_seconds')} -c 4 between the two backups.\n")
        L.append(chunk_table(doc))
        L.append("")
        L.append(chunk_reading(doc))
        L.append("")
        L.append(notes.get("chunk", "<!-- notes:chunk -->\n<!-- /notes:chunk -->"))
        L.append("")
    if doc.get("s3"):
        L.append("## S3 back end\n")
        L.append("The same cluster backed up by pgsnapfs into a local directory and into a bucket "
                 "on moto's S3 server on 127.0.0.1 (`scripts/bench --s3`). moto is a Python "
                 "server on the same two cores, so the S3 column pays its CPU as well as the "
                 "HTTP round trips: a real object store is slower per request but does not take "
                 "the backup's CPU. Requests are counted by pgsnapfs (`--json`). The first-query "
                 "rows mount the last backup, start PostgreSQL on it and run the first query; "
                 "*warm* reuses the local disk cache the cold mount filled (the page cache is "
                 "dropped before each).\n")
        sm = doc.get("s3_meta")
        if sm:
            L.append(f"S3 rows run separately: {sm.get('date')}, `{sm.get('command')}`, scale "
                     f"{sm.get('scale')}.\n")
        L.append(s3_table(doc))
        L.append("")
        L.append(notes.get("s3", "<!-- notes:s3 -->\n<!-- /notes:s3 -->"))
        L.append("")
    if doc.get("encryption"):
        L.append("## Encryption\n")
        L.append("The same cluster backed up into a plain and an encrypted repository "
                 "(`scripts/bench --encryption`; XChaCha20-Poly1305 and keyed HMAC-SHA-256 chunk "
                 "ids, repository-format.md \"Encryption\"), then a mount of each backup, a server "
                 "started on it, the page cache dropped and `pgbench_accounts` read in full. "
                 "Every encrypted command also pays one Argon2id derivation (64 MiB) to unlock "
                 "the key.\n")
        em = doc.get("encryption_meta")
        if em:
            L.append(f"Encryption rows run separately: {em.get('date')}, `{em.get('command')}`, "
                     f"scale {em.get('scale')}.\n")
        L.append(pair_table(doc["encryption"], "plain", "plain", "encrypted", "encrypted"))
        L.append("")
        L.append(notes.get("encryption",
                           "<!-- notes:encryption -->\n<!-- /notes:encryption -->"))
        L.append("")
    if doc.get("push"):
        L.append("## WAL push, per segment\n")
        L.append("The newest segments of the pgbench run, each pushed by one process per set-up, "
                 "as archive_command runs it, in an order that rotates per segment "
                 "(`scripts/bench --push`): pgBackRest `archive-push` into a plain stanza and into "
                 "one with `repo1-cipher-type=aes-256-cbc`, pgsnapfs `wal-push` into a plain "
                 "repository and into an encrypted one opened with a key-file slot "
                 "(`key add --new-key-file`). Segments warm in the page cache, as a segment "
                 "PostgreSQL just finished is.\n")
        pm = doc.get("push_meta")
        if pm:
            L.append(f"Push rows run separately: {pm.get('date')}, `{pm.get('command')}`, "
                     f"load average {pm.get('loadavg_start')} at the start.\n")
        L.append(pair_table(doc["push"], "a", "first", "b", "second"))
        L.append("")
        L.append(notes.get("push", "<!-- notes:push -->\n<!-- /notes:push -->"))
        L.append("")
    if doc.get("summaries"):
        L.append("## PostgreSQL 17: incremental backups from WAL summaries\n")
        L.append("A PostgreSQL 17 cluster (`summarize_wal = on`, data checksums) at the same pgbench "
                 "scale, a first backup and a short pgbench run (random updates all over "
                 "pgbench_accounts, the worst case for block tracking); then the same incremental "
                 "backup twice, each into a copy of the repository: reading only the chunks the "
                 "server's WAL summaries show changed, and with `--full-read`. Then once more with "
                 "nothing changed since the parent "
                 "(`scripts/bench --summaries`; operations.md \"Faster incrementals on 17+\"). "
                 "pgBackRest 2.45 does not support 17, so there is no pgBackRest column.\n")
        smeta = doc.get("summaries_meta")
        if smeta:
            L.append(f"WAL-summary rows run separately: {smeta.get('date')}, "
                     f"`{smeta.get('command')}`, scale {smeta.get('scale')}.\n")
        L.append(pair_table(doc["summaries"], "full-read", "full read", "wal-summaries",
                            "WAL summaries"))
        L.append("")
        L.append(notes.get("summaries",
                           "<!-- notes:summaries -->\n<!-- /notes:summaries -->"))
        L.append("")
    if doc.get("verify_incremental"):
        L.append("## Incremental verify\n")
        L.append("A fresh repository of the main cluster: a first backup verified with `--full` "
                 "(recorded), then a backup of the unchanged cluster, verified with `--full` and "
                 "incrementally; then the pgbench run, a backup, verified incrementally (building "
                 "on the record of the backup before) and with `--full`. Both always mount, start "
                 "the server and recover; the incremental run reads only relations whose chunks "
                 "changed (`scripts/bench --verify-incremental`; operations.md \"Incremental "
                 "verify\").\n")
        vmeta = doc.get("verify_incremental_meta")
        if vmeta:
            L.append(f"Incremental-verify rows run separately: {vmeta.get('date')}, "
                     f"`{vmeta.get('command')}`, scale {vmeta.get('scale')}, load average "
                     f"{vmeta.get('loadavg_start')} at the start.\n")
        L.append(pair_table(doc["verify_incremental"], "full", "verify --full", "incremental",
                            "incremental"))
        L.append("")
        L.append(notes.get("verify_incremental",
                           "<!-- notes:verify_incremental -->\n<!-- /notes:verify_incremental -->"))
        L.append("")
    if doc.get("read_path"):
        L.append("## Read path (issue 15)\n")
        L.append("Every row of issue 15's *Done when*, side by side in one run "
                 "(`scripts/bench --read-path`, part of a full run too). The file is "
                 "pgbench_accounts' first segment: the newest backup's copy read with `cat` "
                 "through a catalogue mount (`backups/latest/...`) and through a view (`mount "
                 "--backup latest --scratch`), against the cluster's own file on local disk. "
                 "*Hot*: the page cache dropped, then the repository's files (without the WAL "
                 "archive) and the local file read once, so no disk is involved; one catalogue "
                 "mount for every hot run. *Cold*: the three readers alternate, the page cache "
                 "is dropped before each, and each read gets a fresh mount. CPU-seconds are the "
                 "mount process's utime + stime from /proc/PID/stat around the read. The count(*), "
                 "verify and S3 rows are the ones described in the sections above (the "
                 "pgBackRest side of the restore test reads every index with pg_prewarm too); "
                 "peak RSS is VmHWM of each mount process just before its unmount.\n")
        rm = doc.get("read_path_meta") or m
        L.append(f"Run: {rm.get('date')}, `{rm.get('command')}`, scale {rm.get('scale')}, "
                 f"{rm.get('runs')} runs per row, pgbench {rm.get('pgbench_seconds')} s; commit "
                 f"{rm.get('git_commit')}{' with uncommitted changes' if rm.get('git_dirty') else ''}; "
                 f"nice {rm.get('nice')}; load average {rm.get('loadavg_start')} at the start, "
                 f"{rm.get('loadavg_end')} at the end, 1-minute load when the timed commands "
                 f"started: median {rm.get('load1_median')}, max {rm.get('load1_max')}.\n")
        L.append(read_path_table(doc["read_path"]))
        L.append("")
        L.append(notes.get("read_path", "<!-- notes:read_path -->\n<!-- /notes:read_path -->"))
        L.append("")
    if doc.get("async"):
        L.append("## Asynchronous archiving (issue 17)\n")
        L.append("`scripts/bench --async` (part of a full run too): a cluster of its own, "
                 "synchronous_commit off, archived with `wal-push --async` (process-max 2) and then "
                 "with pgBackRest's archive-async (process-max=2), each into a local repository, "
                 "under the same loads. The lag is WAL finished but not yet in the repository "
                 "(`.ready` files plus the spool), sampled every 0.25 s. The archiver-alone rows "
                 "time `archive-daemon --idle-exit 0` on a spool of the newest segments of that "
                 "cluster.\n")
        am = doc.get("async_meta") or m
        L.append(f"Run: {am.get('date')}, `{am.get('command')}`, scale {am.get('scale')}, "
                 f"pgbench {am.get('pgbench_seconds')} s; commit {am.get('git_commit')}"
                 f"{' with uncommitted changes' if am.get('git_dirty') else ''}; load average "
                 f"{am.get('loadavg_start')} at the start, {am.get('loadavg_end')} at the end.\n")
        L.append(async_table(doc["async"]))
        L.append("")
        L.append(notes.get("async", "<!-- notes:async -->\n<!-- /notes:async -->"))
    if doc.get("wal_index"):
        L.append("## Planning on a large archive (issue 17, item 5)\n")
        L.append("`scripts/bench --wal-index` (part of a full run): tests/wal_index.rs, built "
                 "optimized, writes an archive of 100,000 segments indexed plus 3 after the index "
                 "into S3 (moto on 127.0.0.1) through the library, then plans each target on a "
                 "fresh repository handle. Requests are the S3 back end's own count for the whole "
                 "plan (cluster record, backups, WAL index, the listing after it, the HEAD that "
                 "confirms it). Goal: at most 10 requests and 1 s.\n")
        wm = doc.get("wal_index_meta") or m
        L.append(f"Run: {wm.get('date')}, commit {wm.get('git_commit')}; load average "
                 f"{wm.get('loadavg_start')} at the start, {wm.get('loadavg_end')} at the end.\n")
        L.append("| target | segments | requests | wall time |")
        L.append("|---|---:|---:|---:|")
        for r in doc["wal_index"]:
            L.append(f"| {r['target']} | {r['segments']:,} | {r['requests']} | "
                     f"{fmt_s(r['seconds'])} |")
    if "receive" in notes:  # `scripts/bench --receive` prints its rows; they are kept by hand
        L.append("## wal-receive (issue 17)\n")
        L.append(notes["receive"])
        L.append("")
    if "fromarchive" in notes:  # `scripts/bench --from-archive` prints its rows likewise
        L.append("## Backups from the archive (issue 18)\n")
        L.append(notes["fromarchive"])
        L.append("")
    if "delta" in notes:  # `scripts/bench --delta` prints its rows likewise
        L.append("## Delta restore (issue 20)\n")
        L.append(notes["delta"])
        L.append("")
    L.append("## Method\n")
    L.append(METHOD)
    return "\n".join(L) + "\n"


METHOD = """\
- **One cluster, every tool in turn.** PostgreSQL 15 with `wal_level=replica` and an
  `archive_command` (`scripts/lib/bench-archive.sh`) that pushes each WAL file with
  `pgbackrest archive-push` (plain and block-incremental stanzas) and `pgsnapfs wal-push`, one
  after the other, in an order that rotates per segment, timing each (it is installed under a
  name containing "pgbackrest": `pgbackrest backup` refuses an archive_command without that
  word). Backups are taken from the
  same files one tool after the other, in a rotating order, after a `CHECKPOINT` and a dropped
  page cache.
- **Full backup:** each run into fresh repositories (`pgbackrest stanza-create` + `backup
  --type=full`; `pgsnapfs init` + `backup`). Peak RSS is sampled every 50 ms over the whole process
  tree (pgBackRest runs a main process and process-max workers) and is at least the process's own
  `ru_maxrss` (what `/usr/bin/time -v` reports). Repository bytes: `du -sb` of the backup files,
  without the WAL archive.
- **Incremental:** `pgbackrest backup --type=incr`; pgsnapfs: a plain second backup. Bytes added
  to the repository by that backup (WAL archive not counted).
- **WAL archiving:** the per-segment time of each tool's push inside the archive command during
  the pgbench run (synchronous: pgBackRest `archive-async=n`, pgsnapfs `wal-push`). Sustained rate:
  the newest archived segments copied aside and pushed one by one with the tool's command into a
  fresh repository/stanza, timed as a whole.
- **Queryable:** pgBackRest `restore --type=immediate --target-action=pause` (last backup) or
  `--type=time --target=T --target-action=pause --set=<full>` (point in time); pgsnapfs `mount
  --backup latest` or `--target-time T` with `--scratch` and `--background`. Then
  `pg_ctl start -w` with the same options for both (`archive_mode=off`, `shared_buffers=1GB`), the
  wait until `pg_get_wal_replay_pause_state() = 'paused'`, and the first query (`count(*)` on
  pgbench_branches). Both servers must see the same number of pgbench_history rows at T.
- **Cold full scan:** the last backup restored by pgBackRest to local disk against a pgsnapfs
  mount of it; for each run the page cache is dropped, both servers restarted, the mount is
  mounted anew (cold chunk cache), the page cache dropped again once both are paused at the
  target, then `SELECT count(*)` on each table.
- **Restore test:** `pgsnapfs verify --backup latest --full` against pgBackRest `restore` +
  start + `count(*)` of every table (catalogs included) of every database, in one psql session
  per database, every index read with `pg_prewarm` where it is installed (the cluster's postgres
  database), + stop.
- **Chunk-size sweep:** the cluster is stopped cleanly before and after the pgbench run and copied
  (states A and B); for each chunk size, each state is started on its own port with
  `archive_mode=off` and backed up into a fresh repository (`pgsnapfs init --chunk-size`).
- **Physical limits:** cold read of the data directory (without pg_wal) after dropping caches;
  `sha256sum`, `openssl dgst -sha256`, `zstd -3 -T1` and `zstd -d` on the same files, warm; the
  WAL limits on the segments set aside for the loop.
"""


def carry_notes(path):
    notes = {}
    try:
        text = open(path).read()
    except OSError:
        return notes
    for m in re.finditer(r"<!-- notes:(\w+) -->.*?<!-- /notes:\1 -->", text, re.S):
        notes[m.group(1)] = m.group(0)
    return notes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--out")
    ap.add_argument("--merge", choices=("chunk_sizes", "s3", "encryption", "summaries",
                                        "verify_incremental", "read_path", "async",
                                        "wal_index", "push"),
                    help="merge only this part into the existing --out files")
    a = ap.parse_args()
    doc = build(load(a.results))
    if a.merge and a.out and os.path.exists(os.path.join(a.out, "benchmarks.json")):
        # Only this part is new: keep the rest of the published run.
        old = json.load(open(os.path.join(a.out, "benchmarks.json")))
        old[a.merge] = doc[a.merge]
        old[a.merge + "_meta"] = doc["meta"]
        if a.merge == "read_path":
            # Its rows reuse other sections' records: keep its own beside the published run's.
            old["read_path_raw"] = doc["raw"]
        else:
            prefix = {"chunk_sizes": "sweep_", "s3": "s3_", "encryption": "enc_",
                      "summaries": "sum_", "verify_incremental": "vinc_",
                      "async": "async_", "wal_index": "windex_", "push": "push_"}[a.merge]
            old["raw"] = [r for r in old.get("raw", []) if not r["key"].startswith(prefix)] + \
                [r for r in doc["raw"] if r["key"].startswith(prefix)]
        doc = old
    notes = carry_notes(os.path.join(a.out, "benchmarks.md")) if a.out else {}
    md = render(doc, notes)
    sys.stdout.write(md)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "benchmarks.json"), "w") as f:
            json.dump(doc, f, indent=1, default=str)
            f.write("\n")
        with open(os.path.join(a.out, "benchmarks.md"), "w") as f:
            f.write(md)
        print(f"wrote {a.out}/benchmarks.md and {a.out}/benchmarks.json", file=sys.stderr)


if __name__ == "__main__":
    main()
