#!/usr/bin/env python3
"""subset_manifest.py SRC DST N: N utterances spread evenly over the JSONL manifest SRC (all when N is 0),
with audio paths made absolute, written atomically to DST. Used by the benchmark scripts."""
import json
import os
import sys

src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [json.loads(line) for line in open(src) if line.strip()]
if n:
    step = len(rows) / n
    rows = [rows[int(i * step)] for i in range(min(n, len(rows)))]
base = os.path.dirname(os.path.abspath(src))
for row in rows:
    row["audio"] = os.path.join(base, row["audio"])
with open(dst + ".tmp", "w") as f:
    f.writelines(json.dumps(row) + "\n" for row in rows)
os.replace(dst + ".tmp", dst)
