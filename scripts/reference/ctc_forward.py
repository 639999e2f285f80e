"""Time transformers' CTC forward (logits and argmax) on the seeded clip `whittle bench forward` uses.

Usage: .venv-torch/bin/python scripts/reference/ctc_forward.py MODEL_DIR [--seconds S] [--runs N]
       [--warmup W] [--threads T]
Prints one JSON object: median_ms, all_ms, rtf, threads, torch and transformers versions.
"""

import argparse
import json
import math
import statistics
import time

import numpy as np
import torch
import transformers


def synthetic_clip(seconds):
    """The clip of whittle's `synthetic_clip`: a 220 Hz tone with vibrato plus xorshift noise."""
    n = round(seconds * 16000)
    state = 0x2545F4914F6CDD1D
    mask = (1 << 64) - 1
    noise = np.empty(n, dtype=np.float32)
    for i in range(n):
        state ^= (state << 13) & mask
        state ^= state >> 7
        state ^= (state << 17) & mask
        noise[i] = np.float32(state >> 40) / np.float32(1 << 24) - np.float32(0.5)
    t = np.arange(n, dtype=np.float32) / np.float32(16000)
    tone = np.sin(np.float32(2 * math.pi * 220) * t + np.sin(np.float32(3) * t))
    return (np.float32(0.3) * tone + np.float32(0.05) * noise).astype(np.float32)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = transformers.AutoModelForCTC.from_pretrained(a.model).eval()
    extractor = transformers.AutoFeatureExtractor.from_pretrained(a.model)
    tokenizer = transformers.AutoTokenizer.from_pretrained(a.model)
    clip = synthetic_clip(a.seconds)
    times = []
    with torch.inference_mode():
        for run in range(a.warmup + a.runs):
            start = time.perf_counter()
            inputs = extractor(clip, sampling_rate=16000, return_tensors="pt")
            ids = model(inputs.input_values).logits.argmax(-1)
            if run >= a.warmup:
                times.append((time.perf_counter() - start) * 1e3)
    median = statistics.median(times)
    print(json.dumps({
        "model": a.model,
        "seconds": a.seconds,
        "median_ms": median,
        "all_ms": times,
        "rtf": median / 1e3 / a.seconds,
        "text": tokenizer.batch_decode(ids)[0],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }))


if __name__ == "__main__":
    main()
