#!/usr/bin/env python3
"""Markdown table of evaluations against a float baseline, with `whittle eval --compare` verdicts.

Reads ROOT/<row>/<set>/{summary.json,utterances.jsonl} as written by `whittle eval`, where the row
`float` is the baseline. For every other row and every set it runs
`whittle eval --compare ROOT/float/<set> ROOT/<row>/<set> --json --margin M` and prints, per set, the
WER, the relative WER change against float with its 95 % bootstrap CI, the p-value and the verdict
(worse / better / equivalent within M % / inconclusive), plus the looping utterances (hypothesis
longer than 2 x reference + 5 words) and the words per set. A row may be called lossless only when
its verdict is "equivalent" on every set.

With `--json FILE` it also writes the rows in machine-readable form, for `whittle report pareto FILE`
(the format is in docs/report.md): per row its name, file, bytes and ratio vs fp32, and per set the
WER, the relative change with its CI, the p-value and the verdict.

Usage: eval_table.py --whittle BIN --root DIR --sets S1 S2 ... [--margin 10] [--rows R1 R2 ...]
                     [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

LABELS = {"float": "fp16 file, f32 compute"}


def loops(path: str) -> int:
    n = 0
    with open(path) as f:
        for line in f:
            u = json.loads(line)
            n += len(u["hypothesis_normalized"].split()) > 2 * len(u["reference_normalized"].split()) + 5
    return n


# Rows of scripts/mp_table.sh: KIND-bBUDGET / uniform-wBITS -> (format, method).
MP_ROWS = {
    "onestage": "one-stage mixed precision",
    "twostage": "two-stage mixed precision (KL + allocation, then QAT)",
    "gptq": "GPTQ of the two-stage bit map",
    "pass2": "one-stage map, then QAT (pass 2)",
}


# Rows of scripts/prune_table.sh: KIND-SPARSITY -> method (each followed by the same fine-tune).
PRUNE_ROWS = {
    "mag": "magnitude pruning, then distillation fine-tune",
    "l0": "L0 gates with layerwise distillation, then fine-tune",
    "l0nolw": "L0 gates without layerwise distillation, then fine-tune",
}


# Combined rows of scripts/prune_table.sh: ROW+ptqB, ROW+mpX (a pruned row compressed further).
def combined(combo: str) -> str:
    if combo.startswith("ptq"):
        return f"then GPTQ W{combo[3:]} g64 + embedding W8 g64"
    if combo.startswith("mp"):
        return f"then one-stage mixed precision at {combo[2:]} stored bits"
    return f"then {combo}"


def label(row: str) -> tuple[str, str]:
    if row in LABELS:
        return LABELS[row], "-"
    if "+" in row:
        base, combo = row.split("+", 1)
        fmt, method = label(base)
        return fmt, f"{method}, {combined(combo)}"
    kind, _, arg = row.partition("-")
    if kind in PRUNE_ROWS:
        return f"{100 * float(arg):g} % of prunable parameters removed", PRUNE_ROWS[kind]
    if kind in MP_ROWS and arg.startswith("b"):
        return f"budget {arg[1:]} stored bits", MP_ROWS[kind]
    if kind == "uniform" and arg.startswith("w"):
        bits, _, embedding = arg[1:].partition("e")
        fmt = f"W{bits} g64" + (f" + embedding W{embedding} g64" if embedding else "")
        return fmt, "uniform LSQ QAT"
    fmt, _, method = row.rpartition("-")
    pretty = (fmt.upper().replace("G", " g").replace("TERNARY", "ternary g64 (1.6 bit)")
              .replace("E8", " + embedding W8 g64"))
    if fmt == "ternary" and method == "rtn":
        method = "twn"
    return pretty, method


def compare(whittle: str, a: str, b: str, margin: float) -> dict:
    out = subprocess.run([whittle, "eval", "--compare", a, b, "--json", "--margin", str(margin)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"eval_table.py: whittle eval --compare {a} {b} failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


def cell(v: dict) -> str:
    rel = v["difference"]["relative_percent"]
    verdict = v["verdict"]
    word = {"worse": "**worse**", "better": "better", "equivalent": "equivalent",
            "inconclusive": "inconclusive"}.get(verdict, verdict)
    p = v["p_value"]
    return f"{100 * v['wer_b']:.2f} % ({rel['estimate']:+.1f} % [{rel['lower']:+.1f}, {rel['upper']:+.1f}], p {p:.3f}, {word})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--whittle", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--sets", nargs="+", required=True)
    ap.add_argument("--margin", type=float, default=10.0)
    ap.add_argument("--rows", nargs="*")
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON (for `whittle report pareto`)")
    args = ap.parse_args()
    root, sets = args.root, args.sets

    def done(row: str) -> bool:
        return all(os.path.isfile(os.path.join(root, row, s, "summary.json")) for s in sets)

    rows = args.rows or sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    rows = ["float"] + [r for r in rows if r != "float" and done(r)]
    if not done("float"):
        sys.exit(f"eval_table.py: no float evaluation of every set under {root}")
    summary = {r: {s: json.load(open(os.path.join(root, r, s, "summary.json"))) for s in sets} for r in rows}
    fp32 = summary["float"][sets[0]]["model"]["parameters"] * 4
    print("| format | method | file MB | x fp32 | " + " | ".join(
        f"{s}: WER (vs float: rel. change [95 % CI], p, verdict)" for s in sets)
        + " | looping utterances (" + " / ".join(sets) + ") | RTF " + sets[0] + " | peak RSS MB |")
    print("|---|---|---|---|" + "---|" * len(sets) + "---|---|---|")
    json_rows = []
    for r in rows:
        first = summary[r][sets[0]]
        size = first["model"]["weights_bytes"]
        name, method = label(r)
        cells = []
        per_set = {}
        for s in sets:
            if r == "float":
                cells.append(f"{100 * summary[r][s]['wer']:.2f} %")
                per_set[s] = {"wer": summary[r][s]["wer"], "verdict": "baseline"}
            else:
                v = compare(args.whittle, os.path.join(root, "float", s), os.path.join(root, r, s), args.margin)
                cells.append(cell(v))
                rel = v["difference"]["relative_percent"]
                per_set[s] = {"wer": v["wer_b"], "relative_change_percent": rel["estimate"],
                              "ci_percent": [rel["lower"], rel["upper"]], "p_value": v["p_value"],
                              "verdict": v["verdict"]}
            per_set[s]["looping_utterances"] = loops(os.path.join(root, r, s, "utterances.jsonl"))
        looping = " / ".join(str(per_set[s]["looping_utterances"]) for s in sets)
        rss = first.get("peak_rss_bytes")
        print(f"| {name} | {method} | {size / 1e6:.1f} | {fp32 / size:.2f} | " + " | ".join(cells)
              + f" | {looping} | {first['rtf']:.3f} | {rss / 1e6 if rss else float('nan'):.0f} |")
        json_rows.append({"name": r, "label": name, "method": method, "file": first["model"].get("path"),
                          "bytes": size, "ratio_vs_fp32": fp32 / size, "rtf": first["rtf"],
                          "peak_rss_bytes": rss, "sets": per_set})
    if args.json:
        doc = {"baseline": "float", "fp32_bytes": fp32, "margin_percent": args.margin, "sets": sets,
               "root": root, "rows": json_rows}
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        os.replace(tmp, args.json)
    print()
    words = summary["float"]
    print("Words per set: " + ", ".join(
        f"{s} {words[s]['totals']['words']['reference_len']} ({words[s]['totals']['utterances']} utterances)" for s in sets)
        + f". Verdict margin: {args.margin:g} %.")


if __name__ == "__main__":
    main()
