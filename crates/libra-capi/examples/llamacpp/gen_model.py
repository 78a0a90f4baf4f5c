#!/usr/bin/env python3
"""Writes a llama-architecture GGUF model with random weights and a synthetic vocabulary, and
LoRA adapters for it, all from one seed: the same arguments always give the same bytes.

The text such a model produces is nonsense, but its compute, its KV tensors and its adapters
are real llama.cpp ones, which is what the llama.cpp engine example and its test need.

    python3 gen_model.py --out DIR [--seed 7] [--layers 4] [--width 256] [--adapters 3]

writes DIR/model.gguf and DIR/lora-1.gguf ... DIR/lora-N.gguf.
"""
import argparse
import os

import numpy as np
import gguf

ARCH = "llama"


def vocabulary(n_vocab):
    """SentencePiece-style: <unk>, <s>, </s>, the 256 byte tokens, then synthetic pieces."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256
    i = 0
    while len(tokens) < n_vocab:
        tokens.append(f"\u2581w{i}")
        types.append(gguf.TokenType.NORMAL)
        i += 1
    scores = [0.0] * 3 + [0.0] * 256 + [-float(k) for k in range(n_vocab - 259)]
    return tokens, scores, types


def dims(args):
    head_dim = 64
    n_head = args.width // head_dim
    n_head_kv = max(1, n_head // 2)
    return head_dim, n_head, n_head_kv


def write_model(args, rng, path):
    head_dim, n_head, n_head_kv = dims(args)
    n_embd, n_ff, n_vocab = args.width, args.width * 2, args.vocab
    w = gguf.GGUFWriter(path, ARCH)
    w.add_name("libra-synthetic")
    w.add_context_length(args.ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(args.layers)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens, scores, types = vocabulary(n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)

    def mat(rows, cols, scale):
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    def ones(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w.add_tensor("token_embd.weight", mat(n_vocab, n_embd, 1.0))
    for layer in range(args.layers):
        p = f"blk.{layer}."
        s = 1.0 / np.sqrt(n_embd)
        w.add_tensor(p + "attn_norm.weight", ones(n_embd))
        w.add_tensor(p + "attn_q.weight", mat(n_head * head_dim, n_embd, s))
        w.add_tensor(p + "attn_k.weight", mat(n_head_kv * head_dim, n_embd, s))
        w.add_tensor(p + "attn_v.weight", mat(n_head_kv * head_dim, n_embd, s))
        w.add_tensor(p + "attn_output.weight", mat(n_embd, n_head * head_dim, s))
        w.add_tensor(p + "ffn_norm.weight", ones(n_embd))
        w.add_tensor(p + "ffn_gate.weight", mat(n_ff, n_embd, s))
        w.add_tensor(p + "ffn_up.weight", mat(n_ff, n_embd, s))
        w.add_tensor(p + "ffn_down.weight", mat(n_embd, n_ff, 1.0 / np.sqrt(n_ff)))
    w.add_tensor("output_norm.weight", ones(n_embd))
    w.add_tensor("output.weight", mat(n_vocab, n_embd, 1.0 / np.sqrt(n_embd)))
    finish(w)


def write_lora(args, rng, path):
    """A LoRA on every attention projection, so that the adapter changes the KV it produces."""
    head_dim, n_head, n_head_kv = dims(args)
    n_embd, r = args.width, args.rank
    w = gguf.GGUFWriter(path, ARCH)
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(r))
    outs = {"attn_q": n_head * head_dim, "attn_k": n_head_kv * head_dim,
            "attn_v": n_head_kv * head_dim, "attn_output": n_embd}
    for layer in range(args.layers):
        for name, n_out in outs.items():
            base = f"blk.{layer}.{name}.weight"
            # ggml shapes: lora_a is [n_in, r], lora_b is [r, n_out] (numpy rows are ne[1]).
            a = (rng.standard_normal((r, n_embd)) / np.sqrt(n_embd)).astype(np.float32)
            b = (rng.standard_normal((n_out, r)) * (0.5 / np.sqrt(r))).astype(np.float32)
            w.add_tensor(base + ".lora_a", a)
            w.add_tensor(base + ".lora_b", b)
    finish(w)


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--adapters", type=int, default=3)
    ap.add_argument("--rank", type=int, default=8)
    args = ap.parse_args()
    if args.width % 64 != 0 or args.width < 128:
        ap.error("--width must be a multiple of 64, at least 128")
    if args.adapters < 1 or args.vocab < 300:
        ap.error("need at least one adapter and a vocabulary of at least 300")
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    write_model(args, rng, os.path.join(args.out, "model.gguf"))
    for i in range(1, args.adapters + 1):
        write_lora(args, rng, os.path.join(args.out, f"lora-{i}.gguf"))


if __name__ == "__main__":
    main()
