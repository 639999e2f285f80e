"""Audio seeds for the `audio` fuzz target: 0.1 s of a 440 Hz tone in each container, prefixed
with the byte that picks the file name (0 wav, 1 flac, 2 mp3, 3 ogg, 4 raw).

Run with the faster-whisper venv (PyAV): /path/to/.venv/bin/python make_audio_seeds.py
"""
import io
import math
import struct

import av
import numpy as np

RATE = 16000
tone = (0.5 * np.sin(2 * math.pi * 440 * np.arange(RATE // 10) / RATE) * 32767).astype(np.int16)


def encode(fmt, codec, layout="mono", sample_format="s16"):
    buf = io.BytesIO()
    channels = 2 if layout == "stereo" else 1
    with av.open(buf, "w", format=fmt) as out:
        # FFmpeg's own Vorbis encoder is "experimental" and stereo, planar float only.
        stream = out.add_stream(codec, rate=RATE, layout=layout, options={"strict": "experimental"})
        samples = np.repeat(tone.reshape(1, -1), channels, axis=0)
        if sample_format == "fltp":
            samples = (samples / 32768.0).astype(np.float32)
        else:
            samples = samples.reshape(1, -1) if channels == 1 else samples.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format=sample_format, layout=layout)
        frame.sample_rate = RATE
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def save(name, pick, data):
    with open(f"audio/{name}", "wb") as f:
        f.write(bytes([pick]) + data)


save("tone.wav", 0, encode("wav", "pcm_s16le"))
save("tone.flac", 1, encode("flac", "flac"))
save("tone.mp3", 2, encode("mp3", "libmp3lame"))
save("tone.ogg", 3, encode("ogg", "vorbis", layout="stereo", sample_format="fltp"))
save("tone.raw", 4, tone.astype("<i2").tobytes())
