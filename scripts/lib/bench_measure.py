#!/usr/bin/env python3
"""Runs one command for scripts/bench and records how long it took and how much memory it used.

    bench_measure.py --results FILE --key KEY [--tool T] [--run N] [--stdout FILE] -- CMD ARGS...

Appends one JSON line to FILE:
    {"key", "tool", "run", "wall_s", "exit",
     "peak_rss_kb"    : the largest sum of VmRSS over the command's whole process tree, sampled
                        every 50 ms (pgBackRest runs a main process plus process-max workers),
     "hwm_sum_kb"     : the sum over every process seen of its own peak (VmHWM), an upper bound,
     "maxrss_child_kb": ru_maxrss of the command's process from wait4 (what /usr/bin/time -v
                        prints as "Maximum resident set size"; for one process, its peak),
     "load1"          : the 1-minute load average when the command started}
and exits with the command's exit code. The command's stdout goes to --stdout FILE (or this
process's stdout); its stderr is inherited.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time


def children_map():
    """ppid -> [pid] for every process on the machine."""
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after the last ')'.
        rest = stat[stat.rfind(")") + 2:].split()
        kids.setdefault(int(rest[1]), []).append(int(name))
    return kids


def tree(root):
    kids = children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def mem_kb(pid):
    """(VmRSS, VmHWM) in KiB, or None for a process that is gone or a zombie."""
    rss = hwm = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        return None
    if rss is None or hwm is None:
        return None
    return rss, hwm


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--tool", default="")
    ap.add_argument("--run", type=int, default=1)
    ap.add_argument("--stdout")
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if not cmd:
        ap.error("no command given")

    with open("/proc/loadavg") as f:
        load1 = float(f.read().split()[0])
    out = open(a.stdout, "wb") if a.stdout else None
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=out or sys.stdout.buffer)
    peak = 0
    hwm = {}
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            total = 0
            for pid in tree(proc.pid):
                m = mem_kb(pid)
                if m is None:
                    continue
                total += m[0]
                hwm[pid] = max(hwm.get(pid, 0), m[1])
            peak = max(peak, total)
            done.wait(a.interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    done.set()
    sampler.join()
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if out:
        out.close()
    rec = {
        "key": a.key,
        "tool": a.tool,
        "run": a.run,
        "wall_s": round(wall, 4),
        "exit": code,
        "peak_rss_kb": peak,
        "hwm_sum_kb": sum(hwm.values()),
        "maxrss_child_kb": usage.ru_maxrss,
        "load1": load1,
    }
    with open(a.results, "a") as f:
        f.write(json.dumps(rec) + "\n")
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
