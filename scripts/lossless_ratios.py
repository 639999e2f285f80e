#!/usr/bin/env python3
"""The largest lossless compression ratio per method, and the ratios between methods.

Reads the rows file that scripts/eval_table.py writes (--json; format in docs/report.md). A row is
lossless when its `whittle eval --compare` verdict against float is "equivalent" or "better" on
every set (docs/evaluation.md: "not significant" is not enough; a set too small to bound the loss
within the margin yields "inconclusive", which is not lossless). Rows are grouped by method, the
name before the last '-' (`onestage-b3.5` -> `onestage`, `uniform-w4` -> `uniform`). For each
method it prints the lossless row with the largest ratio vs fp32, or that none is lossless and the
verdicts of its largest-ratio row that has no "worse" verdict; then, for each pair of methods
named by --compare A:B, ratio(A) / ratio(B) where both have a lossless row.

Usage: lossless_ratios.py ROWS.json [--compare onestage:uniform onestage:twostage ...]
"""

from __future__ import annotations

import argparse
import json
import sys

NOT_WORSE = {"equivalent", "better"}


def method(name: str) -> str:
    # A combined row (ROW+COMBO, scripts/prune_table.sh) is its own method: KIND+COMBO.
    if "+" in name:
        base, combo = name.split("+", 1)
        return f"{method(base)}+{combo}"
    return name.rsplit("-", 1)[0] if "-" in name else name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rows")
    p.add_argument("--compare", nargs="*", default=[], metavar="A:B")
    args = p.parse_args()
    try:
        doc = json.load(open(args.rows))
        rows = doc["rows"]
        sets = doc["sets"]
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"lossless_ratios.py: {args.rows}: not a rows file of eval_table.py --json ({e})")
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["name"] != doc.get("baseline", "float"):
            groups.setdefault(method(r["name"]), []).append(r)
    best: dict[str, dict] = {}
    print(f"Largest lossless ratio vs fp32 per method (verdict equivalent or better on every set: {', '.join(sets)}):")
    print()
    print("| method | rows | lossless row | x fp32 | if none: largest ratio not shown worse, its verdicts |")
    print("|---|---|---|---|---|")
    for m, members in groups.items():
        verdicts = lambda r: [r["sets"][s]["verdict"] for s in sets]
        lossless = [r for r in members if all(v in NOT_WORSE for v in verdicts(r))]
        if lossless:
            b = max(lossless, key=lambda r: r["ratio_vs_fp32"])
            best[m] = b
            print(f"| {m} | {len(members)} | {b['name']} | {b['ratio_vs_fp32']:.2f} | |")
        else:
            unrefuted = [r for r in members if "worse" not in verdicts(r)]
            if unrefuted:
                c = max(unrefuted, key=lambda r: r["ratio_vs_fp32"])
                note = f"{c['name']} ({c['ratio_vs_fp32']:.2f}x): " + ", ".join(
                    f"{s} {c['sets'][s]['verdict']}" for s in sets)
            else:
                note = "every row is worse than float on some set"
            print(f"| {m} | {len(members)} | none | | {note} |")
    if args.compare:
        print()
    for pair in args.compare:
        a, _, b = pair.partition(":")
        if a in best and b in best:
            ra, rb = best[a]["ratio_vs_fp32"], best[b]["ratio_vs_fp32"]
            print(f"{a} / {b}: {ra:.2f} / {rb:.2f} = {ra / rb:.2f}x ({best[a]['name']} against {best[b]['name']})")
        else:
            missing = [x for x in (a, b) if x not in best]
            print(f"{a} / {b}: not defined ({', '.join(missing)} has no lossless row)")


if __name__ == "__main__":
    main()
