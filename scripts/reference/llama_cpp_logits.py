#!/usr/bin/env python3
"""Reference logits of a GGUF language model from llama.cpp (PyPI llama-cpp-python), for
crates/whittle/tests/llama.rs.

The model is first rewritten with every tensor dequantized to f32 (PyPI `gguf`), so llama.cpp
computes with the same float weights as whittle (on a quantized file llama.cpp rounds
activations to 8 bits inside its matrix products). For each prompt: llama.cpp's token ids (after
the document separator `<|endoftext|>`, id 0) and, at every position, the 20 largest logits with
their ids.

Usage: llama_cpp_logits.py MODEL.gguf OUT.json   (in a venv with llama-cpp-python, gguf, numpy)
"""
import json
import os
import sys
import tempfile

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter
from gguf.quants import dequantize
from llama_cpp import Llama, __version__ as llama_cpp_version

PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
    "In 1984, there were 365 days and 12 months.",
]


def f32_copy(src, dst):
    """`src` with every tensor dequantized to f32 and the metadata kept (file type: all f32)."""
    reader = GGUFReader(src)
    writer = GGUFWriter(dst, arch=reader.fields["general.architecture"].contents())
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if key == "general.file_type":
            writer.add_uint32(key, 0)
            continue
        kind, value = field.types[0], field.contents()
        if kind == GGUFValueType.ARRAY:
            writer.add_array(key, value)
        elif kind == GGUFValueType.STRING:
            writer.add_string(key, value)
        else:
            writer.add_key_value(key, value, kind)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, dequantize(tensor.data, tensor.tensor_type).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


model_path, out = sys.argv[1], sys.argv[2]
with tempfile.TemporaryDirectory() as tmp:
    f32_path = os.path.join(tmp, "f32.gguf")
    f32_copy(model_path, f32_path)
    llm = Llama(model_path=f32_path, n_ctx=256, logits_all=True, n_threads=2, verbose=False, seed=0)
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
    del llm
record = {
    "model": os.path.basename(model_path) + " (every tensor dequantized to f32)",
    "llama_cpp_python": llama_cpp_version,
    "cases": cases,
}
with open(out, "w") as f:
    json.dump(record, f, indent=1)
print(f"wrote {out}: {len(cases)} prompts")
