#!/usr/bin/env python3
"""Reference logits of a GGUF language model from llama.cpp (PyPI llama-cpp-python), for
crates/whittle/tests/llama.rs: for each prompt, llama.cpp's token ids (after the document
separator `<|endoftext|>`, id 0) and, at every position, the 20 largest logits with their ids.

Usage: llama_cpp_logits.py MODEL.gguf OUT.json
llama.cpp multiplies its quantized matrices directly (activations rounded to 8 bits), whittle
the dequantized float ones, so the comparison allows a tolerance.
"""
import json
import sys

import numpy as np
from llama_cpp import Llama

PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
    "In 1984, there were 365 days and 12 months.",
]

model_path, out = sys.argv[1], sys.argv[2]
llm = Llama(model_path=model_path, n_ctx=256, logits_all=True, n_threads=2, verbose=False, seed=0)
cases = []
for text in PROMPTS:
    ids = [0] + llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    llm.reset()
    llm.eval(ids)
    scores = np.array(llm.scores[: len(ids)], dtype=np.float64)
    top = []
    for row in scores:
        idx = np.argsort(-row)[:20]
        top.append({"ids": [int(i) for i in idx], "logits": [float(row[i]) for i in idx]})
    cases.append({"text": text, "tokens": ids, "top": top})
json.dump({"model": model_path.split("/")[-1], "llama_cpp_python": __import__("llama_cpp").__version__, "cases": cases}, open(out, "w"), indent=1)
print(f"wrote {out}: {len(cases)} prompts")
