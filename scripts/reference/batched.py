#!/usr/bin/env python3
"""Utterances per second of faster-whisper, sequential vs BatchedInferencePipeline, on one manifest.

Sequential: `WhisperModel.transcribe` once per utterance, as scripts/reference/transcribe.py runs it
(greedy, temperature 0, English, without timestamps, no VAD, no fallback checks).

Batched: `BatchedInferencePipeline.transcribe` (faster-whisper 1.2.1) batches the chunks of *one* audio
array, and by default finds those chunks with Silero VAD. To batch whole utterances without VAD, the
utterances (each under 30 s) are concatenated into one array and passed with `clip_timestamps`, one
{"start", "end"} (seconds) per utterance: the pipeline then skips VAD ("vad_filter will be ignored if
clip_timestamps is used"), cuts exactly those clips, computes each clip's features on its own, pads each
to 30 s and decodes `batch_size` clips per `generate` call, greedy, with the same options as the
sequential run. Each returned segment is assigned to the clip whose start is nearest its (rounded) start. (Read from
faster_whisper/transcribe.py of the installed 1.2.1.)

Audio is decoded to 16 kHz float32 before the clock starts on both sides; model loading is not timed.
Prints one JSON object: per run (sequential, batched-N) wall seconds, utterances/s, and how many
transcripts differ from the sequential run's.

    .venv/bin/python scripts/reference/batched.py --model .assets/models/whisper-tiny.en \
        --manifest .assets/data/real-15.jsonl --threads 2 --batch-sizes 8 16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transcribe import SAMPLE_RATE, decode_options, load_samples, read_manifest  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path, help="CTranslate2 Whisper model folder")
    p.add_argument("--manifest", required=True, type=Path, help="JSONL manifest with id/audio/text")
    p.add_argument("--compute-type", default="float32", choices=["float32", "int8"])
    p.add_argument("--threads", type=int, default=0, help="CTranslate2 intra-op threads (0 = its default)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16])
    p.add_argument("--out", type=Path, help="write each run's transcripts as JSONL files into this folder")
    return p.parse_args()


OPTIONS = decode_options("en", beam_size=1)


def main() -> None:
    args = parse_args()
    if args.threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import numpy as np
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    rows = read_manifest(args.manifest, None)
    audio = [load_samples(r["path"]) for r in rows]
    for row, samples in zip(rows, audio):
        if len(samples) >= 30 * SAMPLE_RATE:
            sys.exit(f"batched.py: {row['audio']} is not under 30 s; the batched run needs one window per clip")
    model = WhisperModel(str(args.model), device="cpu", compute_type=args.compute_type, cpu_threads=args.threads)

    runs = {}
    t0 = time.perf_counter()
    sequential = []
    for samples in audio:
        segments, _ = model.transcribe(samples, vad_filter=False, **OPTIONS)
        sequential.append(" ".join(s.text.strip() for s in segments).strip())
    runs["sequential"] = {"seconds": time.perf_counter() - t0, "texts": sequential}

    # One array of all clips; clip i spans [starts[i], starts[i+1]) samples. A quarter sample is added so
    # that the pipeline's int(seconds * 16000) lands on the intended sample.
    joined = np.concatenate(audio).astype(np.float32)
    starts = np.cumsum([0] + [len(a) for a in audio])
    clips = [
        {"start": (starts[i] + 0.25) / SAMPLE_RATE, "end": (starts[i + 1] + 0.25) / SAMPLE_RATE}
        for i in range(len(audio))
    ]
    pipeline = BatchedInferencePipeline(model=model)
    for batch_size in args.batch_sizes:
        t0 = time.perf_counter()
        segments, _ = pipeline.transcribe(joined, clip_timestamps=clips, batch_size=batch_size, **OPTIONS)
        texts = [[] for _ in audio]
        for s in segments:
            # Segment starts are rounded (to ms): take the clip whose start is nearest.
            clip = int(np.argmin(np.abs(starts[:-1] - s.start * SAMPLE_RATE)))
            texts[clip].append(s.text.strip())
        runs[f"batched-{batch_size}"] = {
            "seconds": time.perf_counter() - t0,
            "texts": [" ".join(t).strip() for t in texts],
        }

    summary = {"engine": "faster-whisper", "compute_type": args.compute_type, "threads": args.threads,
               "utterances": len(rows), "audio_seconds": round(sum(len(a) for a in audio) / SAMPLE_RATE, 3)}
    for name, run in runs.items():
        summary[name] = {
            "seconds": round(run["seconds"], 3),
            "utterances_per_second": round(len(rows) / run["seconds"], 3),
            "transcripts_differing_from_sequential": sum(a != b for a, b in zip(run["texts"], sequential)),
        }
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"{name}.jsonl").write_text(
                "".join(json.dumps({"id": r["id"], "text": t}) + "\n" for r, t in zip(rows, run["texts"]))
            )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
