"""Markdown table of the language-model rows of scripts/lm_table.sh.

Reads ROOT/<row>/<text>.json (`whittle perplexity -o`), ROOT/<row>.seconds (compression wall time)
and ROOT/sens-<metric>.seconds, and compares every row with ROOT/float by
`whittle perplexity --compare` (95 % bootstrap over texts): per text the perplexity, its change
against float with the interval, and the verdict. Size columns come from the packed matrices the
perplexity run reports: ratio = fp32 matrix bytes / packed bytes, average stored bits =
32 x packed / fp32 (codes and scales of every matrix; the float rows have none).

Usage: lm_table.py --whittle BIN --root DIR --texts T1 T2 ... --rows R1 R2 ... [--margin 5]
"""

import argparse
import json
import os
import subprocess
import sys

def compare(whittle: str, a: str, b: str, margin: float) -> tuple[float, float, float, str]:
    out = subprocess.run([whittle, "perplexity", "--compare", a, b, "--margin", str(margin), "--json"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"lm_table.py: whittle perplexity --compare {a} {b} failed: {out.stderr.strip()}")
    v = json.loads(out.stdout)
    return v["change_percent"], v["ci95_percent"][0], v["ci95_percent"][1], v["verdict"]


def seconds(root: str, name: str) -> float | None:
    try:
        with open(os.path.join(root, f"{name}.seconds")) as f:
            return float(f.read())
    except (OSError, ValueError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--whittle", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--texts", nargs="+", required=True)
    ap.add_argument("--rows", nargs="+", required=True)
    ap.add_argument("--margin", type=float, default=5.0)
    args = ap.parse_args()
    root = args.root
    done = [r for r in args.rows
            if all(os.path.isfile(os.path.join(root, r, f"{t}.json")) for t in args.texts)]
    if "float" not in done:
        sys.exit("lm_table.py: no finished float row to compare with")
    print("| row | x fp32 (matrices) | avg stored bits | compression time | "
          + " | ".join(f"{t} perplexity (vs float)" for t in args.texts) + " |")
    print("|---|---|---|---|" + "---|" * len(args.texts))
    for row in done:
        cells = []
        quant = None
        for t in args.texts:
            path = os.path.join(root, row, f"{t}.json")
            with open(path) as f:
                doc = json.load(f)
            quant = quant or doc.get("quantization")
            ppl = doc["perplexity"]
            if row == "float":
                cells.append(f"{ppl:,.2f}")
                continue
            est, lo, hi, verdict = compare(args.whittle, os.path.join(root, "float", f"{t}.json"), path,
                                           args.margin)
            cells.append(f"{ppl:,.2f} ({est:+.2f} % [{lo:+.2f}, {hi:+.2f}], {verdict})")
        if quant:
            ratio = quant["fp32_matrix_bytes"] / quant["packed_matrix_bytes"]
            size = f"{ratio:.2f} | {32 / ratio:.2f}"
        else:
            size = "1.00 | 32"
        time = seconds(root, row)
        if row.startswith(("ptq-kl", "lsq-kl", "admm-kl")):
            sens = seconds(root, "sens-kl")
        elif row.startswith(("ptq-hess", "lsq-hess", "admm-hess")):
            sens = seconds(root, "sens-hessian")
        else:
            sens = None
        parts = []
        if time is not None:
            parts.append(f"{time / 60:.0f} min training")
        if sens is not None:
            parts.append(f"{sens / 60:.0f} min sensitivity")
        print(f"| {row} | {size} | {', '.join(parts) or '-'} | " + " | ".join(cells) + " |")
    missing = [r for r in args.rows if r not in done]
    if missing:
        print(f"\nNot finished: {' '.join(missing)}")


if __name__ == "__main__":
    main()
