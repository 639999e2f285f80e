#!/usr/bin/env python3
"""One LSQ quantization-aware-training step of Whisper in PyTorch (CPU): the reference for `whittle bench train-step`.

Loads a CTranslate2 Whisper folder (model.bin, fp16) into a small self-contained PyTorch Whisper, builds or
reads a fixed batch, and times the QAT step that whittle's training engine runs: teacher forward, student
forward with fake-quantized weights, distillation loss, backward, AdamW. Prints one JSON object on stdout.

Weights
    model.bin (CTranslate2 format version 6) is read here directly. Every fp16 tensor becomes float32. Fused
    projections are split as whittle's `models/whisper/from_ct2.rs` does: self-attention `linear_0` [3d, d]
    into q/k/v, cross-attention `linear_1` [2d, d] into k/v; the key bias slice is dropped (it is exactly 0 in
    the released checkpoints, and a key bias cancels in softmax). The output projection is the token embedding.

Batch (identical tensors on both sides: `--write-batch` saves them, `--batch-file` reads them)
    A safetensors file with
      mel     F32 [B, n_mels, T]  log-mel frames, T even;
      tokens  I64 [B, L]          decoder input, right-padded with <|endoftext|>;
      mask    F32 [B, L]          1.0 where the decoder's next-token distribution is scored, else 0.0.
    Built from a JSONL manifest (`--manifest`, default the real-15 set) as follows:
      - utterances: the first B lines of the manifest, in file order; each needs a transcript (`text`);
      - audio: 16 kHz mono, `.wav` (16-bit PCM) or `.raw` (s16le), samples / 32768;
      - log-mel of each utterance alone, as openai-whisper's `log_mel_spectrogram(audio, padding=480000)` and
        whittle_audio::mel::log_mel_spectrogram: append 30 s of zeros, STFT (n_fft 400, hop 160, periodic Hann,
        centred with reflect padding), |X|^2 without the last frame, 80 Slaney mel filters (librosa
        `htk=False, norm="slaney"`), log10(max(x, 1e-10)), max(x, max - 8), (x + 4) / 4; the maximum is over
        that utterance's whole padded spectrogram;
      - frames: T = min(max_b floor(samples_b / 160), 100 * seconds), rounded up to even; every utterance keeps
        its first T frames (shorter ones carry the 30 s padding's frames, as at inference; longer ones are cut,
        while their transcript stays whole);
      - tokens: prompt <|startoftranscript|> <|notimestamps|> for English-only models (vocab 51864;
        multilingual: <|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|>), then
        tokenizer.encode(" " + text) without special tokens, then <|endoftext|>; L = the longest such
        sequence; shorter rows are right-padded with <|endoftext|>;
      - mask: with P prompt tokens and n text tokens, positions P-1 .. P-1+n are scored (the positions that
        predict the n text tokens and the final <|endoftext|>): n + 1 positions per utterance. The prompt's
        earlier positions, the final <|endoftext|> and the padding are not scored. The decoder runs on all L
        positions; causal attention keeps padding from affecting scored positions.
    The log-mel is computed with torch.stft rather than faster-whisper's extractor, because faster-whisper pads
    160 samples instead of 30 s and so gives different frames in the padded part; whittle follows openai-whisper.

Model (Radford et al. 2022)
    Encoder: conv1 (k3, pad 1) -> GELU -> conv2 (k3, stride 2, pad 1) -> GELU -> + sinusoidal positions[:T/2]
    -> pre-norm blocks (self-attention, GELU MLP) -> LayerNorm. Decoder: token embedding + learned
    positions[:L] -> pre-norm blocks (causal self-attention, cross-attention to the encoder output, MLP) ->
    LayerNorm -> logits = h E^T with the token embedding E. GELU is the exact (erf) one; LayerNorm eps 1e-5.
    Attention: torch's scaled_dot_product_attention (`--attention sdpa`) or explicit matmul + softmax (`math`).
    No attention mask other than causality: cross-attention sees all T/2 encoder frames.
    Logits are computed only at the scored positions ([N, V], N = mask.sum()), for teacher and student alike.

Fake quantization: LSQ (Esser et al. 2020, "Learned Step Size Quantization")
    Every linear layer of encoder and decoder (q/k/v/out of each attention, fc1, fc2; not the convs, not the
    embedding) gets a step size per group of `group` consecutive input columns of each output row (`--group 0`:
    one per output row). Symmetric signed b-bit codes: Qn = 2^(b-1), Qp = 2^(b-1) - 1, so W4 codes are
    -8..7 like whittle's packed `symmetric` scheme. For weights w of one group (N = group size weights):
      s_init = 2 mean|w| / sqrt(Qp)
      s'     = s g + detach(s - s g)   with g = 1 / sqrt(N Qp)    (gradient scaling; forward value s)
      v      = clamp(w / s', -Qn, Qp)
      w_q    = (v + detach(round(v) - v)) s'                        (straight-through rounding)
    torch.round rounds half to even; exact ties do not occur with these scales. Biases are not quantized.

Loss: distillation, KL(teacher || student) at temperature tau (`--temperature`, default 2)
    p_t = softmax(z_t / tau), log p_s = log_softmax(z_s / tau) at each scored position,
    loss = tau^2 * sum_positions sum_vocab p_t (log p_t - log p_s) / N      (N = number of scored positions)
    i.e. the mean over scored tokens (not over the batch, not a sum), with Hinton et al.'s tau^2 factor.
    The teacher is the same model with the original float32 weights, run under torch.no_grad every step.

Optimizer: torch.optim.AdamW, betas (0.9, 0.999), eps 1e-8, two groups:
      weights: every trainable tensor that is not a step size, lr `--lr-weights` (1e-5), weight decay 0.01;
      scales:  the step sizes, lr `--lr-scales` (1e-3), weight decay 0.
    Trainable (`--trainable linear`, default): the quantized linear layers' weights and step sizes, as whittle's
    student (`make_student`: latent weights and steps); their biases, the convs, layer norms, embeddings and
    positional tables are frozen. `--trainable all` trains those too (in the weights group). No gradient
    clipping and no schedule in this one-step benchmark; whittle's `bench train-step` uses the same defaults
    (--lr 1e-5, --lr-scales 1e-3, --weight-decay 0.01, betas and eps as here).

Timing
    `--warmup` untimed steps, then `--steps` timed ones, each a full step on the same batch (the student's
    weights move between steps, so losses change). ms_per_step is the median wall time of the timed steps;
    phases_ms gives medians of: teacher_forward, fake_quant (all quantized weights), student_forward
    (including the loss), backward, optimizer (step and zero_grad). loss_first is the loss of the very first
    step (warmup included), before any update: it depends only on weights, batch and quantizer, so it is the
    number to compare with whittle's. cpu_ms_per_step is the median process CPU time of a step (all threads).
    torch.set_num_threads(--threads); also set OMP_NUM_THREADS. On a loaded machine, more threads than idle
    cores make every OpenMP region wait for a descheduled thread: compare timings only on an idle machine.
    `--profile N` prints torch.profiler's top operators (self CPU time) over the timed steps.

Run with the venv made by scripts/setup_torch.sh:
    .venv-torch/bin/python scripts/reference/qat_step.py --model .assets/models/whisper-tiny.en \\
        --manifest .assets/data/real-15.jsonl --batch 4 --seconds 6 --bits 4 --group 64 \\
        --steps 5 --warmup 1 --threads 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import struct
import sys
import time
import wave
from dataclasses import dataclass
from pathlib import Path

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
PAD_SAMPLES_30S = 30 * SAMPLE_RATE
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH
CT2_VERSION = 6
BATCH_FORMAT = "whittle-qat-batch-v1"


def fail(message: str) -> None:
    sys.exit(f"qat_step.py: {message}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path, help="CTranslate2 Whisper folder (model.bin, tokenizer.json)")
    source = p.add_argument_group("batch (either --batch-file or a manifest)")
    source.add_argument("--batch-file", type=Path, help="safetensors with mel/tokens/mask (see the docstring)")
    source.add_argument("--manifest", type=Path, help="JSONL manifest to build the batch from")
    source.add_argument("--batch", type=int, default=4, help="utterances in the batch (manifest only)")
    source.add_argument("--seconds", type=float, default=6.0, help="cap on the batch's audio length (manifest only)")
    source.add_argument("--write-batch", type=Path, help="write the built batch to this safetensors file and exit")
    q = p.add_argument_group("quantization and training")
    q.add_argument("--bits", type=int, default=4)
    q.add_argument("--group", type=int, default=64, help="input columns per step size; 0 = one per output row")
    q.add_argument("--temperature", type=float, default=2.0)
    q.add_argument("--lr-weights", type=float, default=1e-5)
    q.add_argument("--lr-scales", type=float, default=1e-3)
    q.add_argument("--trainable", choices=["linear", "all"], default="linear")
    q.add_argument("--attention", choices=["sdpa", "math"], default="sdpa")
    q.add_argument("--adamw", choices=["default", "foreach", "fused"], default="default",
                   help="torch AdamW implementation (default: torch's choice for CPU tensors)")
    t = p.add_argument_group("timing")
    t.add_argument("--steps", type=int, default=5, help="timed steps")
    t.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    t.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    t.add_argument("--profile", type=int, default=0, metavar="N",
                   help="print the N operators with the most self CPU time over the timed steps to stderr")
    args = p.parse_args()
    if (args.batch_file is None) == (args.manifest is None):
        p.error("give exactly one of --batch-file and --manifest")
    if args.write_batch and args.manifest is None:
        p.error("--write-batch needs --manifest")
    if not 2 <= args.bits <= 8:
        p.error(f"--bits {args.bits}: expected 2..8")
    for name in ("batch", "steps", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.warmup < 0 or args.group < 0 or args.seconds <= 0 or args.temperature <= 0:
        p.error("--warmup and --group must be >= 0, --seconds and --temperature > 0")
    return args


# --- CTranslate2 model.bin ------------------------------------------------------------------------

CT2_DTYPES = {0: "<f4", 1: "i1", 2: "<i2", 3: "<i4", 4: "<f2"}  # 5 (bf16) is not used by Whisper exports


def read_ct2(path: Path) -> dict:
    """All variables of a CTranslate2 model.bin (version 6) as numpy arrays, by CTranslate2 name."""
    import numpy as np

    try:
        data = path.read_bytes()
    except OSError as e:
        fail(f"cannot read {path}: {e}")
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            fail(f"{path}: {what} needs {n} bytes at offset {pos}, only {len(data) - pos} remain (truncated?)")
        out = data[pos:pos + n]
        pos += n
        return out

    def u(fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, take(struct.calcsize(fmt), what))[0]

    def string(what: str) -> str:
        raw = take(u("H", what), what)
        return raw.rstrip(b"\0").decode("utf-8")

    version = u("I", "version")
    if version != CT2_VERSION:
        fail(f"{path}: CTranslate2 binary version {version}, expected {CT2_VERSION}")
    spec = string("spec name")
    if spec != "WhisperSpec":
        fail(f"{path}: spec `{spec}` is not WhisperSpec")
    u("I", "revision")
    variables = {}
    for _ in range(u("I", "variable count")):
        name = string("variable name")
        shape = [u("I", f"{name} dims") for _ in range(u("B", f"{name} rank"))]
        code = u("B", f"{name} dtype")
        if code not in CT2_DTYPES:
            fail(f"{path}: variable `{name}` has unsupported dtype code {code}")
        raw = take(u("I", f"{name} size"), f"{name} data")
        array = np.frombuffer(raw, dtype=CT2_DTYPES[code])
        if array.size != math.prod(shape):
            fail(f"{path}: variable `{name}` holds {array.size} values, shape {shape} needs {math.prod(shape)}")
        variables[name] = array.reshape(shape)
    return variables


@dataclass
class Config:
    n_mels: int
    d_model: int
    heads: int
    encoder_layers: int
    decoder_layers: int
    vocab: int
    encoder_positions: int
    decoder_positions: int

    @property
    def multilingual(self) -> bool:
        return self.vocab >= 51865


def whisper_weights(ct2: dict) -> tuple[Config, dict]:
    """Float32 torch tensors under short module-style names, plus the architecture read from the shapes."""
    import torch

    def get(name: str):
        if name not in ct2:
            fail(f"model.bin has no variable `{name}`")
        return torch.from_numpy(ct2[name].astype("float32"))

    def count(part: str) -> int:
        n = 0
        while f"{part}/layer_{n}/ffn/linear_0/weight" in ct2:
            n += 1
        return n

    conv1 = get("encoder/conv1/weight")
    config = Config(
        n_mels=conv1.shape[1], d_model=conv1.shape[0], heads=int(ct2["encoder/num_heads"]),
        encoder_layers=count("encoder"), decoder_layers=count("decoder"),
        vocab=ct2["decoder/embeddings/weight"].shape[0],
        encoder_positions=ct2["encoder/position_encodings/encodings"].shape[0],
        decoder_positions=ct2["decoder/position_encodings/encodings"].shape[0],
    )
    d = config.d_model
    w = {
        "encoder.conv1.weight": conv1, "encoder.conv1.bias": get("encoder/conv1/bias"),
        "encoder.conv2.weight": get("encoder/conv2/weight"), "encoder.conv2.bias": get("encoder/conv2/bias"),
        "encoder.positions": get("encoder/position_encodings/encodings"),
        "encoder.norm.weight": get("encoder/layer_norm/gamma"), "encoder.norm.bias": get("encoder/layer_norm/beta"),
        "decoder.embedding": get("decoder/embeddings/weight"),
        "decoder.positions": get("decoder/position_encodings/encodings"),
        "decoder.norm.weight": get("decoder/layer_norm/gamma"), "decoder.norm.bias": get("decoder/layer_norm/beta"),
    }

    def split(name: str, parts: int):
        t = get(name)
        if t.shape[0] != parts * d:
            fail(f"model.bin `{name}` has {t.shape[0]} rows, expected {parts} x d_model = {parts * d}")
        return t.split(d, dim=0)

    for part, layers in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
        for i in range(layers):
            c, m = f"{part}/layer_{i}", f"{part}.layers.{i}"
            for ct2_norm, norm in (("self_attention/layer_norm", "attn_norm"), ("ffn/layer_norm", "mlp_norm")):
                w[f"{m}.{norm}.weight"] = get(f"{c}/{ct2_norm}/gamma")
                w[f"{m}.{norm}.bias"] = get(f"{c}/{ct2_norm}/beta")
            q, k, v = split(f"{c}/self_attention/linear_0/weight", 3)
            qb, _, vb = split(f"{c}/self_attention/linear_0/bias", 3)
            w.update({f"{m}.attn.q.weight": q, f"{m}.attn.q.bias": qb, f"{m}.attn.k.weight": k,
                      f"{m}.attn.v.weight": v, f"{m}.attn.v.bias": vb,
                      f"{m}.attn.out.weight": get(f"{c}/self_attention/linear_1/weight"),
                      f"{m}.attn.out.bias": get(f"{c}/self_attention/linear_1/bias"),
                      f"{m}.fc1.weight": get(f"{c}/ffn/linear_0/weight"), f"{m}.fc1.bias": get(f"{c}/ffn/linear_0/bias"),
                      f"{m}.fc2.weight": get(f"{c}/ffn/linear_1/weight"), f"{m}.fc2.bias": get(f"{c}/ffn/linear_1/bias")})
            if part == "decoder":
                k, v = split(f"{c}/attention/linear_1/weight", 2)
                _, vb = split(f"{c}/attention/linear_1/bias", 2)
                w.update({f"{m}.cross_norm.weight": get(f"{c}/attention/layer_norm/gamma"),
                          f"{m}.cross_norm.bias": get(f"{c}/attention/layer_norm/beta"),
                          f"{m}.cross.q.weight": get(f"{c}/attention/linear_0/weight"),
                          f"{m}.cross.q.bias": get(f"{c}/attention/linear_0/bias"),
                          f"{m}.cross.k.weight": k, f"{m}.cross.v.weight": v, f"{m}.cross.v.bias": vb,
                          f"{m}.cross.out.weight": get(f"{c}/attention/linear_2/weight"),
                          f"{m}.cross.out.bias": get(f"{c}/attention/linear_2/bias")})
    return config, {name: t.contiguous() for name, t in w.items()}


# --- model ----------------------------------------------------------------------------------------

def lsq_initial_step(weight, bits: int, group: int):
    """Step sizes [out, in / group, 1]: 2 mean|w| / sqrt(Qp) over each group of `group` input columns."""
    out_features, in_features = weight.shape
    grouped = weight.reshape(out_features, in_features // group, group)
    return 2 * grouped.abs().mean(dim=2, keepdim=True) / math.sqrt(2 ** (bits - 1) - 1)


def lsq_fake_quantize(weight, step, bits: int):
    """LSQ fake quantization of `weight` [out, in] with step sizes [out, groups, 1] (see the module docstring)."""
    qn, qp = 2 ** (bits - 1), 2 ** (bits - 1) - 1
    out_features, in_features = weight.shape
    group = in_features // step.shape[1]
    g = 1.0 / math.sqrt(group * qp)
    scaled_step = step * g + (step - step * g).detach()
    v = (weight.reshape(out_features, in_features // group, group) / scaled_step).clamp(-qn, qp)
    v = v + (v.round() - v).detach()
    return (v * scaled_step).reshape(out_features, in_features)


def build_model(config: Config, weights: dict, bits: int | None, group: int, attention: str):
    """A Whisper nn.Module holding copies of `weights`; linear layers are LSQ fake-quantized when `bits` is set."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class QuantLinear(nn.Module):
        """x W^T + b; W is replaced by its LSQ fake quantization after `fake_quantize()`."""

        def __init__(self, prefix: str):
            super().__init__()
            weight = weights[f"{prefix}.weight"]
            bias = weights.get(f"{prefix}.bias")
            self.weight = nn.Parameter(weight.clone())
            self.bias = nn.Parameter(bias.clone()) if bias is not None else None
            self.quantized = None
            self.step = None
            if bits:
                in_features = weight.shape[1]
                if in_features % (group or in_features):
                    fail(f"`{prefix}.weight` has {in_features} input columns, not a multiple of --group {group}")
                self.step = nn.Parameter(lsq_initial_step(weight, bits, group or in_features))

        def fake_quantize(self) -> None:
            self.quantized = lsq_fake_quantize(self.weight, self.step, bits)

        def forward(self, x):
            return F.linear(x, self.weight if self.quantized is None else self.quantized, self.bias)

    class Attention(nn.Module):
        def __init__(self, prefix: str):
            super().__init__()
            self.q, self.k = QuantLinear(f"{prefix}.q"), QuantLinear(f"{prefix}.k")
            self.v, self.out = QuantLinear(f"{prefix}.v"), QuantLinear(f"{prefix}.out")

        def split(self, x):
            b, t, d = x.shape
            return x.view(b, t, config.heads, d // config.heads).transpose(1, 2)

        def forward(self, x, source=None, causal: bool = False):
            source = x if source is None else source
            q, k, v = self.split(self.q(x)), self.split(self.k(source)), self.split(self.v(source))
            if attention == "sdpa":
                o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            else:
                scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
                if causal:
                    t, s = scores.shape[-2:]
                    scores = scores.masked_fill(torch.ones(t, s, dtype=torch.bool).triu(1), float("-inf"))
                o = scores.softmax(dim=-1) @ v
            b, h, t, hd = o.shape
            return self.out(o.transpose(1, 2).reshape(b, t, h * hd))

    def layer_norm(prefix: str):
        norm = nn.LayerNorm(config.d_model, eps=1e-5)
        with torch.no_grad():
            norm.weight.copy_(weights[f"{prefix}.weight"])
            norm.bias.copy_(weights[f"{prefix}.bias"])
        return norm

    class Block(nn.Module):
        def __init__(self, prefix: str, cross: bool):
            super().__init__()
            self.attn_norm, self.attn = layer_norm(f"{prefix}.attn_norm"), Attention(f"{prefix}.attn")
            self.cross_norm = layer_norm(f"{prefix}.cross_norm") if cross else None
            self.cross = Attention(f"{prefix}.cross") if cross else None
            self.mlp_norm = layer_norm(f"{prefix}.mlp_norm")
            self.fc1, self.fc2 = QuantLinear(f"{prefix}.fc1"), QuantLinear(f"{prefix}.fc2")

        def forward(self, x, memory=None):
            x = x + self.attn(self.attn_norm(x), causal=memory is not None)
            if self.cross is not None:
                x = x + self.cross(self.cross_norm(x), source=memory)
            return x + self.fc2(F.gelu(self.fc1(self.mlp_norm(x))))

    class Whisper(nn.Module):
        def __init__(self):
            super().__init__()
            param = lambda name: nn.Parameter(weights[name].clone())  # noqa: E731
            self.conv1_weight, self.conv1_bias = param("encoder.conv1.weight"), param("encoder.conv1.bias")
            self.conv2_weight, self.conv2_bias = param("encoder.conv2.weight"), param("encoder.conv2.bias")
            self.encoder_positions = param("encoder.positions")
            self.encoder_layers = nn.ModuleList(Block(f"encoder.layers.{i}", False) for i in range(config.encoder_layers))
            self.encoder_norm = layer_norm("encoder.norm")
            self.embedding, self.decoder_positions = param("decoder.embedding"), param("decoder.positions")
            self.decoder_layers = nn.ModuleList(Block(f"decoder.layers.{i}", True) for i in range(config.decoder_layers))
            self.decoder_norm = layer_norm("decoder.norm")

        def quantized_linears(self):
            return [m for m in self.modules() if isinstance(m, QuantLinear) and m.step is not None]

        def fake_quantize(self) -> None:
            for m in self.quantized_linears():
                m.fake_quantize()

        def clear_quantized(self) -> None:
            for m in self.quantized_linears():
                m.quantized = None

        def encode(self, mel):
            x = F.gelu(F.conv1d(mel, self.conv1_weight, self.conv1_bias, padding=1))
            x = F.gelu(F.conv1d(x, self.conv2_weight, self.conv2_bias, stride=2, padding=1))
            x = x.transpose(1, 2) + self.encoder_positions[: x.shape[2]]
            for layer in self.encoder_layers:
                x = layer(x)
            return self.encoder_norm(x)

        def forward(self, mel, tokens, scored):
            """Logits [N, vocab] at the scored positions (`scored`: flat indices into b * L + l)."""
            memory = self.encode(mel)
            b, length = tokens.shape
            x = F.embedding(tokens, self.embedding) + self.decoder_positions[:length]
            for layer in self.decoder_layers:
                x = layer(x, memory)
            hidden = self.decoder_norm(x).reshape(b * length, -1).index_select(0, scored)
            return hidden @ self.embedding.t()

    return Whisper()


# --- batch ----------------------------------------------------------------------------------------

def mel_filters(n_mels: int):
    """Slaney-scale triangular filters with Slaney area normalisation (librosa htk=False, norm="slaney")."""
    import numpy as np

    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0

    def hz_to_mel(f: float) -> float:
        return f / f_sp if f < min_log_hz else min_log_mel + math.log(f / min_log_hz) / logstep

    def mel_to_hz(m):
        return np.where(m < min_log_mel, m * f_sp, min_log_hz * np.exp(logstep * (m - min_log_mel)))

    fft_hz = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE / 2), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(rising, falling))
    return (weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)


def log_mel(samples, n_mels: int):
    """[n_mels, frames] openai-whisper log-mel of `samples` with 30 s of zeros appended."""
    import torch
    import torch.nn.functional as F

    audio = F.pad(torch.from_numpy(samples), (0, PAD_SAMPLES_30S))
    spectrum = torch.stft(audio, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT), return_complex=True)
    power = spectrum[:, :-1].abs() ** 2
    mel = torch.from_numpy(mel_filters(n_mels)) @ power
    log = mel.clamp(min=1e-10).log10()
    log = torch.maximum(log, log.max() - 8.0)
    return (log + 4.0) / 4.0


def read_audio(path: Path):
    """16 kHz mono float32 samples of a 16-bit PCM `.wav` or a `.raw` s16le file."""
    import numpy as np

    try:
        if path.suffix == ".raw":
            return np.fromfile(path, dtype="<i2").astype(np.float32) / 32768.0
        if path.suffix != ".wav":
            fail(f"{path}: only 16 kHz .wav and .raw audio are read here; use --batch-file for other formats")
        with wave.open(str(path)) as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (SAMPLE_RATE, 1, 2):
                fail(f"{path}: {w.getframerate()} Hz, {w.getnchannels()} channel(s), {8 * w.getsampwidth()}-bit; "
                     "expected 16 kHz mono 16-bit PCM")
            return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    except (OSError, wave.Error) as e:
        fail(f"cannot read audio {path}: {e}")


def build_batch(manifest: Path, model_dir: Path, config: Config, batch: int, seconds: float) -> dict:
    """The batch described in the module docstring, as torch tensors, plus the utterance ids."""
    import torch
    from tokenizers import Tokenizer

    try:
        lines = [line for line in manifest.read_text().splitlines() if line.strip()]
    except OSError as e:
        fail(f"cannot read manifest {manifest}: {e}")
    if len(lines) < batch:
        fail(f"{manifest} lists {len(lines)} utterances, --batch needs {batch}")
    rows = []
    for n, line in enumerate(lines[:batch], 1):
        try:
            row = json.loads(line)
            audio, text = row["audio"], row["text"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            fail(f"{manifest} line {n}: expected a JSON object with `audio` and `text` ({e})")
        if not isinstance(text, str) or not text.strip():
            fail(f"{manifest} line {n}: empty transcript")
        rows.append((row.get("id") or Path(audio).stem, manifest.parent / audio, text.strip()))

    tokenizer_path = model_dir / "tokenizer.json"
    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
    except Exception as e:  # tokenizers raises plain Exception
        fail(f"cannot load {tokenizer_path}: {e}")

    def special(token: str) -> int:
        id_ = tokenizer.token_to_id(token)
        if id_ is None:
            fail(f"{tokenizer_path} has no special token {token}")
        return id_

    eot = special("<|endoftext|>")
    prompt = [special("<|startoftranscript|>")]
    if config.multilingual:
        prompt += [special("<|en|>"), special("<|transcribe|>")]
    prompt.append(special("<|notimestamps|>"))

    samples = [read_audio(path) for _, path, _ in rows]
    frames = min(max(len(s) // HOP_LENGTH for s in samples), int(round(FRAMES_PER_SECOND * seconds)))
    frames += frames % 2
    mel = torch.stack([log_mel(s, config.n_mels)[:, :frames] for s in samples])

    sequences = [prompt + tokenizer.encode(" " + text, add_special_tokens=False).ids + [eot] for _, _, text in rows]
    length = max(len(s) for s in sequences)
    tokens = torch.full((batch, length), eot, dtype=torch.int64)
    mask = torch.zeros(batch, length, dtype=torch.float32)
    for b, seq in enumerate(sequences):
        tokens[b, : len(seq)] = torch.tensor(seq)
        mask[b, len(prompt) - 1 : len(seq) - 1] = 1.0
    batch = {"mel": mel, "tokens": tokens, "mask": mask, "ids": [r[0] for r in rows]}
    return check_batch(batch, config, str(manifest))


def write_batch(path: Path, batch: dict, source: str) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    metadata = {"format": BATCH_FORMAT, "ids": json.dumps(batch["ids"]), "source": source}
    save_file({k: batch[k] for k in ("mel", "tokens", "mask")}, str(tmp), metadata=metadata)
    tmp.replace(path)


def read_batch(path: Path, config: Config) -> dict:
    """Read a batch file and check it against the model's shapes."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            missing = {"mel", "tokens", "mask"} - set(f.keys())
            if missing:
                fail(f"{path}: missing tensor(s) {sorted(missing)} (has {sorted(f.keys())})")
            batch = {k: f.get_tensor(k) for k in ("mel", "tokens", "mask")}
            batch["ids"] = json.loads((f.metadata() or {}).get("ids", "[]"))
    except (OSError, SafetensorError) as e:
        fail(f"cannot read batch file {path}: {e}")
    return check_batch(batch, config, str(path))


def check_batch(batch: dict, config: Config, where: str) -> dict:
    """The batch with tokens as int64 and mask as float32, or an error naming the bad tensor."""
    import torch

    mel, tokens, mask = batch["mel"], batch["tokens"], batch["mask"]
    if mel.dtype != torch.float32 or mel.dim() != 3 or mel.shape[1] != config.n_mels:
        fail(f"{where}: `mel` is {mel.dtype} {list(mel.shape)}, expected float32 [B, {config.n_mels}, T]")
    b, _, frames = mel.shape
    if frames == 0 or frames % 2 or frames // 2 > config.encoder_positions:
        fail(f"{where}: `mel` has {frames} frames, expected an even count up to {2 * config.encoder_positions}")
    if tokens.dim() != 2 or tokens.shape[0] != b or tokens.dtype not in (torch.int64, torch.int32, torch.uint32):
        fail(f"{where}: `tokens` is {tokens.dtype} {list(tokens.shape)}, expected integer [{b}, L]")
    tokens = tokens.to(torch.int64)
    if tokens.shape[1] > config.decoder_positions:
        fail(f"{where}: `tokens` has {tokens.shape[1]} positions, the decoder has {config.decoder_positions}")
    if tokens.min() < 0 or tokens.max() >= config.vocab:
        fail(f"{where}: `tokens` holds ids outside 0..{config.vocab - 1}")
    if mask.shape != tokens.shape or not bool(((mask == 0) | (mask == 1)).all()) or mask.sum() == 0:
        fail(f"{where}: `mask` must be {list(tokens.shape)} of 0/1 with at least one 1, got {list(mask.shape)}")
    return {"mel": mel.contiguous(), "tokens": tokens, "mask": mask.to(torch.float32), "ids": batch["ids"]}


# --- the step -------------------------------------------------------------------------------------

def main() -> None:
    args = parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    ct2 = read_ct2(args.model / "model.bin")
    config, weights = whisper_weights(ct2)

    if args.manifest:
        batch = build_batch(args.manifest, args.model, config, args.batch, args.seconds)
        source = f"{args.manifest} (first {args.batch}, cap {args.seconds:g} s)"
        if args.write_batch:
            write_batch(args.write_batch, batch, source)
            print(json.dumps({"batch_file": str(args.write_batch), "ids": batch["ids"],
                              "mel": list(batch["mel"].shape), "tokens": list(batch["tokens"].shape),
                              "scored_positions": int(batch["mask"].sum())}))
            return
    else:
        batch = read_batch(args.batch_file, config)
        source = str(args.batch_file)
    mel, tokens, mask = batch["mel"], batch["tokens"], batch["mask"]
    scored = mask.reshape(-1).nonzero().squeeze(1)

    teacher = build_model(config, weights, None, args.group, args.attention).requires_grad_(False)
    student = build_model(config, weights, args.bits, args.group, args.attention)
    del weights, ct2
    steps = [m.step for m in student.quantized_linears()]
    step_ids = {id(s) for s in steps}
    if args.trainable == "linear":
        student.requires_grad_(False)
        for m in student.quantized_linears():
            for p in (m.weight, m.step):
                p.requires_grad_(True)
    others = [p for p in student.parameters() if p.requires_grad and id(p) not in step_ids]
    impl = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}[args.adamw]
    optimizer = torch.optim.AdamW(
        [{"params": others, "lr": args.lr_weights, "weight_decay": 0.01},
         {"params": steps, "lr": args.lr_scales, "weight_decay": 0.0}],
        betas=(0.9, 0.999), eps=1e-8, **impl)
    tau = args.temperature

    phases = ("teacher_forward", "fake_quant", "student_forward", "backward", "optimizer")
    times = {p: [] for p in phases}
    totals, cpu_totals, losses = [], [], []
    profiler = None
    for i in range(args.warmup + args.steps):
        if i == args.warmup and args.profile:
            profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            profiler.__enter__()
        cpu_start = time.process_time()
        marks = [time.perf_counter()]
        with torch.no_grad():
            teacher_log_probs = F.log_softmax(teacher(mel, tokens, scored) / tau, dim=-1)
        marks.append(time.perf_counter())
        student.fake_quantize()
        marks.append(time.perf_counter())
        student_log_probs = F.log_softmax(student(mel, tokens, scored) / tau, dim=-1)
        kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="sum", log_target=True)
        loss = tau * tau * kl / scored.numel()
        losses.append(loss.item())
        marks.append(time.perf_counter())
        loss.backward()
        student.clear_quantized()
        marks.append(time.perf_counter())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        if not math.isfinite(losses[-1]):
            fail(f"step {i + 1}: loss is {losses[-1]}")
        if i >= args.warmup:
            for name, start, end in zip(phases, marks, marks[1:]):
                times[name].append(1000 * (end - start))
            totals.append(1000 * (marks[-1] - marks[0]))
            cpu_totals.append(1000 * (time.process_time() - cpu_start))
    if profiler is not None:
        profiler.__exit__(None, None, None)
        table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile)
        print(f"torch.profiler over {args.steps} timed steps:\n{table}", file=sys.stderr)

    trainable = sum(p.numel() for p in others) + sum(s.numel() for s in steps)
    print(json.dumps({
        "engine": "pytorch",
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "ms_per_step": round(statistics.median(totals), 2),
        "ms_per_step_min": round(min(totals), 2),
        "ms_steps": [round(t, 2) for t in totals],
        "cpu_ms_per_step": round(statistics.median(cpu_totals), 2),
        "phases_ms": {name: round(statistics.median(v), 2) for name, v in times.items()},
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "losses": losses,
        "steps": args.steps,
        "warmup": args.warmup,
        "bits": args.bits,
        "group": args.group,
        "temperature": tau,
        "attention": args.attention,
        "adamw": args.adamw,
        "trainable": args.trainable,
        "trainable_params": trainable,
        "quantized_layers": len(steps),
        "batch": {"source": source, "ids": batch["ids"], "mel": list(mel.shape), "tokens": list(tokens.shape),
                  "scored_positions": scored.numel()},
    }))


if __name__ == "__main__":
    main()
