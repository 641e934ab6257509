"""A stand-in for Vidur's missing A100 Llama-2-7B ``attention.csv`` (TP 1, block 16).

The public microsoft/vidur repository's attention profiles are large files that a plain clone
or archive does not carry, so this writes a table with the columns Vidur's predictor reads and
the grid shape its attention profiler sweeps (chunked prefills, full prefills, decode batches of
1-128 by KV length, under the memory limit of an 80 GB A100), with per-layer times in ms from a
small analytic fit (not measurements):

    decode   = 0.005 + b * (0.0012 + 8.5e-6 * kv)
    prefill  = 0.02 + 6e-5 * c + 5.4e-8 * c^2 + 1.5e-7 * c * kv
    kv save  = 0.002 + 2e-6 * tokens

Vidur turns the profiles into lookup tables at start-up, so its cost per simulated iteration does
not depend on these numbers; they set the dynamics (batch sizes, iterations), which the
benchmark reports.

    python make_attention_standin.py VIDUR_CHECKOUT   # writes data/profiling/compute/a100/...
"""

import sys
from pathlib import Path

import pandas as pd

MAX_SEQ = 4096
# KV tokens an 80 GB A100 holds at 90% use for Llama-2-7B fp16 (2 * 32 layers * 4096 * 2 bytes
# per token); Vidur's profiler drops shapes above its own such limit (weights not counted).
MAX_TOKENS = int(80e9 * 0.9 / (2 * 32 * 4096 * 2))


def chunk_sizes():
    space = list(range(64, 129, 16)) + list(range(128, 1025, 32)) + list(range(1024, 4097, 64))
    return sorted({c for c in space if c <= MAX_SEQ})


def seq_lengths():
    space = list(range(0, 1025, 32)) + list(range(1024, 4097, 64))
    return sorted({s for s in space if s < MAX_SEQ})


def rows():
    for c in chunk_sizes():  # chunked prefills: KV offsets at multiples of the chunk
        for k in range(0, MAX_SEQ // c * c, c):
            if c + k <= MAX_SEQ:
                yield c, k, 1
    for s in seq_lengths():  # full prefills
        if s > 0:
            yield s, 0, 1
    for k in seq_lengths():  # decodes
        for b in range(1, 129):
            if k > 0 and b * k <= MAX_TOKENS:
                yield 0, k, b


def main(checkout: str) -> None:
    frame = pd.DataFrame(rows(), columns=["prefill_chunk_size", "kv_cache_size", "batch_size"])
    frame = frame.drop_duplicates()
    c, k, b = frame["prefill_chunk_size"], frame["kv_cache_size"], frame["batch_size"]
    decode = c == 0
    frame["is_prefill"] = ~decode
    frame["time_stats.attn_prefill.median"] = (0.02 + 6e-5 * c + 5.4e-8 * c**2 + 1.5e-7 * c * k).where(
        ~decode, 0.0
    )
    frame["time_stats.attn_decode.median"] = (0.005 + b * (0.0012 + 8.5e-6 * k)).where(decode, 0.0)
    frame["time_stats.attn_kv_cache_save.median"] = 0.002 + 2e-6 * c.where(~decode, b)
    for name, value in (
        ("n_embd", 4096),
        ("n_q_head", 32),
        ("n_kv_head", 32),
        ("block_size", 16),
        ("num_tensor_parallel_workers", 1),
        ("max_model_len", MAX_SEQ),
    ):
        frame[name] = value
    out = Path(checkout) / "data/profiling/compute/a100/meta-llama/Llama-2-7b-hf/attention.csv"
    frame.to_csv(out, index=False)
    print(f"{out}: {len(frame)} rows ({int(decode.sum())} decode, {int((~decode).sum())} prefill)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
