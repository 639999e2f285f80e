#!/usr/bin/env python3
"""Run a command and print one JSON line: its wall seconds (whole process, including start-up and
model load) and its peak resident memory in MB (`ru_maxrss` of the child, grandchildren included
when they are waited for). Exits with the command's status.

    python3 scripts/reference/measure.py -- whittle eval ...
"""

import json
import resource
import subprocess
import sys
import time


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        sys.exit("measure.py: usage: measure.py -- COMMAND [ARGS...]")
    t0 = time.perf_counter()
    status = subprocess.call(args)
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"wall_seconds": round(wall, 3), "peak_rss_mb": round(peak_kb / 1024, 1), "status": status}))
    sys.exit(status)


if __name__ == "__main__":
    main()
