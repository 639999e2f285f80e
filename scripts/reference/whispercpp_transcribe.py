#!/usr/bin/env python3
"""Transcribe a JSONL manifest with whisper.cpp 1.8.5 (PyPI pywhispercpp 1.5.1) from a ggml model file.

Reads `{"id", "audio", "text"}` lines (audio paths relative to the manifest's folder; `.raw` files are
16 kHz mono s16le, the rest is decoded and resampled to 16 kHz mono by PyAV, as faster-whisper's
`decode_audio` does) and writes `{"id", "audio", "text"}` lines whose text is the model's transcript.

Decoding matches `whittle eval`'s default and scripts/reference/transcribe.py's plain mode: greedy,
temperature 0 with no fallback (temperature_inc 0), English, no timestamps, no conditioning on previous
text, non-speech tokens suppressed (openai-whisper's `suppress_tokens="-1"`), blank suppressed at the
first step, and no segment dropped by the no-speech check.

Timing: audio is decoded before the clock starts; the model load is timed separately. RTF = timed wall
seconds / audio seconds; CPU seconds of the same span (all threads) are reported too.

Run with the venv made by scripts/setup_peers.sh:
    .venv-peers/bin/python scripts/reference/whispercpp_transcribe.py --model ggml-tiny.en.bin \
        --manifest .assets/data/real-15.jsonl --threads 2 --out out/whispercpp.jsonl
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transcribe import SAMPLE_RATE, read_manifest, write_results  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path, help="whisper.cpp ggml model file")
    p.add_argument("--manifest", required=True, type=Path, help="JSONL manifest with id/audio/text")
    p.add_argument("--out", required=True, type=Path, help="output JSONL: id, audio, text (hypothesis)")
    p.add_argument("--threads", type=int, default=2, help="whisper.cpp threads")
    p.add_argument("--language", default="en")
    p.add_argument("--warmup", action="store_true", help="transcribe the first utterance once, untimed")
    p.add_argument("--limit", type=int, help="only the first N utterances")
    return p.parse_args()


def load_samples(path: Path):
    """16 kHz mono float32 samples."""
    import av
    import numpy as np

    try:
        if path.suffix == ".raw":
            return np.fromfile(path, dtype="<i2").astype(np.float32) / 32768.0
        chunks = []
        with av.open(str(path)) as container:
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        return np.concatenate(chunks).astype(np.float32) / 32768.0
    except Exception as e:  # PyAV raises several unrelated types
        sys.exit(f"whispercpp_transcribe.py: cannot decode {path}: {e}")


def main() -> None:
    args = parse_args()
    rows = read_manifest(args.manifest, args.limit)
    if not rows:
        sys.exit(f"whispercpp_transcribe.py: {args.manifest} lists no utterances")
    audio = [load_samples(r["path"]) for r in rows]
    audio_seconds = sum(len(a) for a in audio) / SAMPLE_RATE

    from pywhispercpp.model import Model

    if not args.model.is_file():
        sys.exit(f"whispercpp_transcribe.py: model file {args.model} does not exist")
    # whisper.cpp's log goes to a file: a failed load is only reported there (pywhispercpp keeps a
    # context that crashes on first use).
    log = tempfile.NamedTemporaryFile(prefix="whispercpp-", suffix=".log", delete=False)
    log.close()
    t0 = time.perf_counter()
    try:
        model = Model(
            str(args.model),
            redirect_whispercpp_logs_to=log.name,
            n_threads=args.threads,
            language=args.language,
            translate=False,
            no_context=True,
            no_timestamps=True,
            single_segment=False,
            print_progress=False,
            print_realtime=False,
            print_timestamps=False,
            temperature=0.0,
            temperature_inc=0.0,
            suppress_blank=True,
            suppress_nst=True,
            no_speech_thold=1.0,
            greedy={"best_of": 1},
        )
    except Exception as e:
        sys.exit(f"whispercpp_transcribe.py: whisper.cpp could not load {args.model}: {e}")
    load_seconds = time.perf_counter() - t0
    log_text = Path(log.name).read_text(errors="replace")
    os.unlink(log.name)
    if "failed to load model" in log_text:
        errors = [line for line in log_text.splitlines() if "error" in line.lower() or "wrong" in line
                  or "failed" in line]
        sys.exit(f"whispercpp_transcribe.py: whisper.cpp could not load {args.model}:\n  "
                 + "\n  ".join(errors))

    def transcribe(samples) -> str:
        segments = model.transcribe(samples)
        return " ".join(s.text.strip() for s in segments).strip()

    if args.warmup:
        transcribe(audio[0])

    out_rows = []
    wall = cpu = 0.0
    for row, samples in zip(rows, audio):
        t, c = time.perf_counter(), time.process_time()
        text = transcribe(samples)
        wall += time.perf_counter() - t
        cpu += time.process_time() - c
        out_rows.append({"id": row["id"], "audio": row["audio"], "text": text})

    write_results(
        args.out,
        out_rows,
        {"engine": "whisper.cpp", "model": str(args.model), "threads": args.threads},
        audio_seconds,
        load_seconds,
        wall,
        cpu,
    )

if __name__ == "__main__":
    main()
