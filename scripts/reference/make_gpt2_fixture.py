#!/usr/bin/env python3
"""Reference fixture for whittle's GPT-2 family: a tiny random transformers GPT2LMHeadModel and its logits.

Writes into OUT (default crates/whittle/tests/fixtures/gpt2):

    config.json, model.safetensors   `GPT2LMHeadModel.save_pretrained(safe_serialization=True)`, float32:
                                     2 layers, width 32, 4 heads, 32 positions, the 13-token vocabulary below;
                                     every parameter re-drawn from a fixed-seed generator (transformers'
                                     initialisation leaves biases at 0 and LayerNorm weights at 1)
    tokenizer.json                   a byte-level BPE `tokenizers` tokenizer of that vocabulary (GPT-2's
                                     pre-tokenizer and decoder), saved by `Tokenizer.save`
    reference.json                   for each text: the ids the tokenizer gives after `<|endoftext|>` and
                                     the model's logits for them (eval mode, eager attention, CPU, float32)

Usage: .venv-torch/bin/python scripts/reference/make_gpt2_fixture.py [--out DIR]
(the venv from scripts/setup_torch.sh).
"""

import argparse
import json
import os

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel

VOCAB = ["<|endoftext|>", "a", "b", "c", "Ġ", "1", "2", ".", "ab", "Ġa", "Ġb", "Ġc", "Ġab"]
MERGES = [("Ġ", "a"), ("Ġ", "b"), ("Ġ", "c"), ("a", "b"), ("Ġa", "b")]
TEXTS = ["ab a b c. 12 ab", "c c.", "a ab b 2 1 c ab ab."]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="crates/whittle/tests/fixtures/gpt2")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    vocab = {t: i for i, t in enumerate(VOCAB)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=MERGES))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(os.path.join(args.out, "tokenizer.json"))

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(VOCAB), n_positions=32, n_embd=32, n_layer=2, n_head=4,
        activation_function="gelu_new", layer_norm_epsilon=1e-5, bos_token_id=0, eos_token_id=0,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="eager",
    )
    model = GPT2LMHeadModel(config).eval()
    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.3 * noise)
    model.save_pretrained(args.out, safe_serialization=True)

    eot = vocab["<|endoftext|>"]
    cases = []
    for text in TEXTS:
        ids = [eot] + tok.encode(text, add_special_tokens=False).ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        cases.append({"text": text, "ids": ids, "logits": logits.tolist()})
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump({"transformers": __import__("transformers").__version__, "cases": cases}, f)
    for leftover in ("generation_config.json",):
        path = os.path.join(args.out, leftover)
        if os.path.exists(path):
            os.remove(path)
    print(f"wrote {args.out}: {sum(len(c['ids']) for c in cases)} tokens in {len(cases)} texts")


if __name__ == "__main__":
    main()
