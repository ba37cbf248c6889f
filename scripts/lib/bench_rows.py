# What a section of scripts/bench that prints its own table starts with (`print_rows`):
# the records of the results file (argv[1]), `get(key, tool)` (that key's and tool's
# records merged, {} if none) and `mib(bytes)`.
import json
import sys

rs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]


def get(key, tool):
    out = {}
    for r in rs:
        if r["key"] == key and r["tool"] == tool:
            out.update(r)
    return out


def mib(b):
    return f"{(b or 0) / 1048576:.1f} MiB"
