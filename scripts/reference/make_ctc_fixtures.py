#!/usr/bin/env python3
"""Reference fixtures for whittle's CTC families: tiny random transformers checkpoints and their outputs.

For each variant below, builds a tiny model of the transformers class with a fixed seed, re-draws every
parameter and buffer from a fixed-seed generator (transformers' own initialisation leaves biases, the
Conformer's `pos_bias_u/v` and the batch-norm statistics at 0/1, which would leave those code paths
untested, and gives near-uniform logits whose greedy text is one repeated character), and writes into
`OUT/<variant>/`:

    config.json, model.safetensors   `save_pretrained(safe_serialization=True)`, float32
    vocab.json, tokenizer_config.json, processor_config.json
                                     `Wav2Vec2Processor.save_pretrained` (character tokenizer, 16 kHz
                                     feature extractor with `do_normalize` as listed per variant); the
                                     variants with `do_normalize` true instead keep the feature extractor's
                                     own `preprocessor_config.json` (the layout of checkpoints saved by
                                     transformers 4), so both files a user may have are read by the tests
    reference.safetensors            `audio.<i>` I16 [samples]: the clips as 16-bit PCM (the float clip the
                                     model sees is `audio / 32768`, exact in float32);
                                     `logits.<i>` F32 [1, frames, vocab]: the model's logits for clip i
                                     after the processor (eval mode, eager attention, float32, CPU);
                                     `hidden.<k>` F32 [1, 16, hidden]: the first 16 frames of
                                     transformers' `hidden_states[k]` (`output_hidden_states=True`) for
                                     the last clip: the encoder input, then each layer's output
    reference.json                   per clip: samples, frames, the argmax ids and the greedy text
                                     `processor.batch_decode(argmax)` gives (its defaults)

The clips are synthesised with numpy from a fixed seed (a few harmonics with a moving pitch, an amplitude
envelope and noise, 16 kHz) and run one at a time, since their lengths differ (no padding, no attention mask).

Usage: .venv-torch/bin/python scripts/reference/make_ctc_fixtures.py [--out DIR] [--variant NAME ...]
[--full-size] (the venv from scripts/setup_torch.sh). Default OUT: crates/whittle/tests/fixtures/ctc.

--full-size writes the same files for random models of the released sizes instead (the `-base` variants
as wav2vec2-base / hubert-base, 95M parameters; the `-large` and Conformer variants as the large models:
315M for wav2vec2 and HuBERT, 620M for the Conformer), for memory and speed measurements and for checking whittle at real sizes
(`WHITTLE_CTC_FIXTURE=DIR/<variant> cargo test --release -p whittle --test ctc_models -- --ignored`).
Never commit them: 0.4-2.4 GB each.
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from transformers import (
    HubertConfig,
    HubertForCTC,
    Wav2Vec2Config,
    Wav2Vec2ConformerConfig,
    Wav2Vec2ConformerForCTC,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2Processor,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_RATE = 16000
HIDDEN_FRAMES = 16
# CTC vocabulary: blank (= pad), specials, the word delimiter, then characters.
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H"]

COMMON = dict(
    vocab_size=len(VOCAB),
    pad_token_id=0,
    hidden_size=32,
    num_hidden_layers=2,
    intermediate_size=48,
    conv_dim=(16, 16, 16),
    conv_kernel=(10, 3, 3),
    conv_stride=(5, 2, 2),
    conv_bias=True,
    num_conv_pos_embedding_groups=2,
    layer_norm_eps=1e-5,
)

# The released models' dimensions (transformers' defaults are wav2vec2-base's), for --full-size.
FULL_SIZE = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}
FULL_SIZE_FEATURES = dict(
    conv_dim=(512,) * 7,
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16,
    conv_depthwise_kernel_size=31,
)

# name: (config class, model class, config overrides, do_normalize)
VARIANTS = {
    "wav2vec2-base": (
        Wav2Vec2Config,
        Wav2Vec2ForCTC,
        dict(feat_extract_norm="group", do_stable_layer_norm=False, num_attention_heads=2,
             num_conv_pos_embeddings=8, conv_bias=False),
        False,
    ),
    "wav2vec2-large": (
        Wav2Vec2Config,
        Wav2Vec2ForCTC,
        dict(feat_extract_norm="layer", do_stable_layer_norm=True, num_attention_heads=4,
             num_conv_pos_embeddings=7),
        True,
    ),
    "hubert-base": (
        HubertConfig,
        HubertForCTC,
        dict(feat_extract_norm="group", do_stable_layer_norm=False, num_attention_heads=2,
             num_conv_pos_embeddings=8, feat_proj_layer_norm=False, conv_bias=False),
        False,
    ),
    "hubert-large": (
        HubertConfig,
        HubertForCTC,
        dict(feat_extract_norm="layer", do_stable_layer_norm=True, num_attention_heads=4,
             num_conv_pos_embeddings=7, feat_proj_layer_norm=True),
        True,
    ),
    "conformer-relpos": (
        Wav2Vec2ConformerConfig,
        Wav2Vec2ConformerForCTC,
        dict(feat_extract_norm="layer", num_attention_heads=4, num_conv_pos_embeddings=4, intermediate_size=32,
             position_embeddings_type="relative", hidden_act="swish", conv_depthwise_kernel_size=7),
        True,
    ),
    "conformer-rotary": (
        Wav2Vec2ConformerConfig,
        Wav2Vec2ConformerForCTC,
        dict(feat_extract_norm="group", num_attention_heads=2, num_conv_pos_embeddings=4, intermediate_size=32,
             position_embeddings_type="rotary", hidden_act="swish", conv_depthwise_kernel_size=5),
        False,
    ),
}


def clips():
    """Two deterministic speech-like clips of different lengths, float32 in [-1, 1]."""
    rng = np.random.default_rng(20261205)
    out = []
    for samples in (8000, 5600):
        t = np.arange(samples) / SAMPLE_RATE
        pitch = 120 + 60 * np.sin(2 * np.pi * rng.uniform(1, 3) * t + rng.uniform(0, np.pi))
        phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
        voice = sum(rng.uniform(0.2, 1.0) / k * np.sin(k * phase) for k in range(1, 6))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t) ** 2
        x = 0.3 * envelope * voice + 0.05 * rng.standard_normal(samples)
        out.append(np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16))
    return out


def redraw(model, seed):
    """Re-draw every parameter and float buffer from a fixed-seed generator (see module docs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in list(model.named_parameters()) + list(model.named_buffers()):
            if not p.dtype.is_floating_point or name.endswith("inv_freq") or name.endswith(".pe"):
                continue
            leaf = name.rsplit(".", 1)[-1]
            shape = p.shape
            if leaf == "running_var":
                p.copy_(torch.rand(shape, generator=g) + 0.5)
            elif leaf == "running_mean":
                p.copy_(0.2 * torch.randn(shape, generator=g))
            elif leaf in ("original0", "weight_g"):
                p.copy_(torch.rand(shape, generator=g) + 0.5)
            elif p.dim() >= 2:
                fan_in = int(np.prod(shape[1:]))
                scale = 1.0 / np.sqrt(fan_in)
                if name.startswith("lm_head"):
                    scale *= 4.0  # peaked logits, so greedy decoding gives varied text
                p.copy_(scale * torch.randn(shape, generator=g))
            elif "norm" in name and leaf == "weight":
                p.copy_(1.0 + 0.2 * torch.randn(shape, generator=g))
            else:  # biases, pos_bias_u/v, masked_spec_embed
                p.copy_(0.2 * torch.randn(shape, generator=g))


def make_variant(name, out_dir, audio, full_size=False):
    config_cls, model_cls, overrides, do_normalize = VARIANTS[name]
    torch.manual_seed(0)
    fields = {**COMMON, **overrides}
    if full_size:
        fields.update(FULL_SIZE["base" if name.endswith("-base") else "large"], **FULL_SIZE_FEATURES)
    config = config_cls(**fields)
    config._attn_implementation = "eager"
    model = model_cls(config).eval()
    redraw(model, seed=sum(map(ord, name)))

    out = out_dir / name
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    with tempfile.TemporaryDirectory() as tmp:
        vocab_path = os.path.join(tmp, "vocab.json")
        with open(vocab_path, "w") as f:
            json.dump({tok: i for i, tok in enumerate(VOCAB)}, f)
        tokenizer = Wav2Vec2CTCTokenizer(vocab_path, unk_token="<unk>", pad_token="<pad>",
                                         word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                         do_normalize=do_normalize, return_attention_mask=False)
    processor = Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer)
    processor.save_pretrained(out)
    if do_normalize:
        (out / "processor_config.json").unlink()
        extractor.save_pretrained(out)

    tensors, clips_json = {}, []
    for i, pcm in enumerate(audio):
        x = pcm.astype(np.float32) / 32768
        inputs = processor(x, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        with torch.no_grad():
            outputs = model(inputs.input_values, output_hidden_states=True)
        logits = outputs.logits
        ids = logits.argmax(-1)
        text = processor.batch_decode(ids)[0]
        tensors[f"audio.{i}"] = torch.from_numpy(pcm)
        tensors[f"logits.{i}"] = logits.contiguous()
        clips_json.append({"samples": len(x), "frames": logits.shape[1], "ids": ids[0].tolist(), "text": text})
    # Hidden states are large; a window of the last clip's is enough to pin down what each tap is.
    for k, state in enumerate(outputs.hidden_states):
        tensors[f"hidden.{k}"] = state[:, :HIDDEN_FRAMES].contiguous()
    save_file(tensors, out / "reference.safetensors")
    with open(out / "reference.json", "w") as f:
        json.dump({"variant": name, "model_class": model_cls.__name__, "transformers": transformers.__version__,
                   "torch": torch.__version__, "clips": clips_json}, f, indent=1)
        f.write("\n")
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, {size / 1024:.0f} KiB, "
          f"texts {[c['text'] for c in clips_json]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "crates/whittle/tests/fixtures/ctc")
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS))
    parser.add_argument("--full-size", action="store_true", help="released model sizes (see above)")
    args = parser.parse_args()
    if args.full_size and args.out == parser.get_default("out"):
        parser.error("--full-size needs --out outside the repository's fixtures")
    torch.set_num_threads(1)
    audio = clips()
    for name in args.variant or VARIANTS:
        make_variant(name, args.out, audio, args.full_size)


if __name__ == "__main__":
    main()
