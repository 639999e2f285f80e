#!/usr/bin/env python3
"""Transcribe a JSONL manifest with faster-whisper (CTranslate2): the reference whittle is compared to.

Reads `{"id", "audio", "text"}` lines (audio paths relative to the manifest's folder; `.raw` files are
16 kHz mono s16le) and writes `{"id", "audio", "text"}` lines whose text is the model's transcript.

Decoding is plain greedy or beam search at temperature 0, English, without timestamps, without
conditioning on previous text, without VAD, and with the no-speech / log-prob / compression-ratio
checks off, so a hypothesis depends only on the audio and the model (no fallback, no skipped segments).
With --standard it is faster-whisper's own default decoding instead (what `whittle transcribe` does):
temperature fallback 0.0-1.0 with best_of candidates, the three thresholds at their defaults
(2.4, -1.0, 0.6), timestamps, conditioning on previous text; still English and without VAD.

Timing: the model is loaded once (reported as load seconds). Audio files are decoded to 16 kHz float32
before the clock starts, so the timed part is what faster-whisper does with samples: log-mel features,
encoder, decoder, detokenisation. RTF = timed wall seconds / audio seconds; the CPU seconds of the same
span (all threads) are reported too, as they are less sensitive to other load on the machine.

Run with the project venv made by scripts/setup.sh:
    .venv/bin/python scripts/reference/transcribe.py --model .assets/models/whisper-tiny.en \
        --manifest .assets/data/real-15.jsonl --compute-type float32 --beam-size 1 --out out/ref.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

SAMPLE_RATE = 16000


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path, help="CTranslate2 Whisper model folder")
    p.add_argument("--manifest", required=True, type=Path, help="JSONL manifest with id/audio/text")
    p.add_argument("--out", required=True, type=Path, help="output JSONL: id, audio, text (hypothesis)")
    p.add_argument("--compute-type", default="float32", choices=["float32", "int8", "int8_float32", "float16"])
    p.add_argument("--beam-size", type=int, default=1, help="1 = greedy")
    p.add_argument("--threads", type=int, default=0, help="CTranslate2 intra-op threads (0 = its default)")
    p.add_argument("--language", default="en")
    p.add_argument("--warmup", action="store_true", help="transcribe the first utterance once, untimed")
    p.add_argument("--limit", type=int, help="only the first N utterances")
    p.add_argument("--standard", action="store_true",
                   help="faster-whisper's default decoding: fallback, timestamps, previous-text prompt")
    p.add_argument("--best-of", type=int, default=5, help="with --standard: candidates per fallback temperature")
    return p.parse_args()


def read_manifest(path: Path, limit: int | None) -> list[dict]:
    rows = []
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        sys.exit(f"transcribe.py: cannot read manifest {path}: {e}")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            audio = row["audio"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            sys.exit(f"transcribe.py: {path} line {n}: expected a JSON object with `audio` ({e})")
        rows.append({"id": row.get("id") or Path(audio).stem, "audio": audio, "path": path.parent / audio})
    return rows[:limit] if limit else rows


def load_samples(path: Path):
    """16 kHz mono float32 samples; `.raw` is headerless 16 kHz s16le, the rest goes through PyAV."""
    import numpy as np
    from faster_whisper import decode_audio

    try:
        if path.suffix == ".raw":
            return np.fromfile(path, dtype="<i2").astype(np.float32) / 32768.0
        return decode_audio(str(path), sampling_rate=SAMPLE_RATE)
    except Exception as e:  # PyAV raises several unrelated types
        sys.exit(f"transcribe.py: cannot decode {path}: {e}")


def decode_options(language: str, beam_size: int) -> dict:
    """`transcribe` options shared by WhisperModel and BatchedInferencePipeline: temperature 0 (no
    fallback), no timestamps, no conditioning on previous text, no no-speech/log-prob/compression checks."""
    return dict(
        language=language,
        task="transcribe",
        beam_size=beam_size,
        best_of=1,
        temperature=0.0,
        without_timestamps=True,
        condition_on_previous_text=False,
        compression_ratio_threshold=None,
        log_prob_threshold=None,
        no_speech_threshold=None,
    )


def main() -> None:
    args = parse_args()
    if args.threads:
        # CTranslate2 takes cpu_threads; OpenMP/BLAS pools read the environment.
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from faster_whisper import WhisperModel

    rows = read_manifest(args.manifest, args.limit)
    if not rows:
        sys.exit(f"transcribe.py: {args.manifest} lists no utterances")
    audio = [load_samples(r["path"]) for r in rows]
    audio_seconds = sum(len(a) for a in audio) / SAMPLE_RATE

    t0 = time.perf_counter()
    model = WhisperModel(str(args.model), device="cpu", compute_type=args.compute_type, cpu_threads=args.threads)
    load_seconds = time.perf_counter() - t0

    options = dict(decode_options(args.language, args.beam_size), vad_filter=False)
    if args.standard:
        options = dict(
            language=args.language,
            task="transcribe",
            beam_size=args.beam_size,
            best_of=args.best_of,
            without_timestamps=False,
            condition_on_previous_text=True,
            vad_filter=False,
        )

    def transcribe(samples) -> str:
        segments, _ = model.transcribe(samples, **options)
        # `segments` is lazy: decoding happens while it is consumed.
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
        {
            "engine": "faster-whisper",
            "model": str(args.model),
            "compute_type": args.compute_type,
            "beam_size": args.beam_size,
            "decoding": "standard" if args.standard else "plain",
            "threads": args.threads,
        },
        audio_seconds,
        load_seconds,
        wall,
        cpu,
    )


def write_results(out: Path, rows: list[dict], summary: dict, audio_seconds: float,
                  load_seconds: float, wall: float, cpu: float) -> None:
    """Writes the hypotheses to `out` (via a temporary file), then prints a summary line to stderr
    and the summary JSON (`summary` plus counts and timings) to stdout."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(out)
    summary = dict(
        summary,
        utterances=len(rows),
        audio_seconds=round(audio_seconds, 3),
        load_seconds=round(load_seconds, 3),
        wall_seconds=round(wall, 3),
        rtf=round(wall / audio_seconds, 5),
        # CPU seconds of all threads: less sensitive than wall time to other load on the machine.
        cpu_seconds=round(cpu, 3),
        out=str(out),
    )
    print(
        f"{len(rows)} utterances, {audio_seconds:.1f} s audio, load {load_seconds:.2f} s, "
        f"transcribe {wall:.2f} s ({cpu:.2f} CPU s), RTF {wall / audio_seconds:.4f} -> {out}",
        file=sys.stderr,
    )
    print(json.dumps(summary))

if __name__ == "__main__":
    main()
