"""Synthetic calibration data from step costs written out here, term by term, independently
of kvsim's feature functions: a wrong feature in kvsim then shows as a misfit, not as a
mistake made twice. Measurements carry seeded multiplicative noise, as real timings do."""

import math

import numpy as np

from kvsim.calibration.fit import fit_profile
from kvsim.hardware import BUILTIN_GPUS
from kvsim.models import load_model

SPEC = load_model("opt-13b")
H100 = BUILTIN_GPUS["h100-sxm-80gb"]
H100_SMS = 132  # the H100 SXM's streaming multiprocessors (its datasheet)
BLOCK_SIZE = 16
COPY_BANDWIDTH = 3.0e12
WEIGHT_READ_S = SPEC.weight_bytes / COPY_BANDWIDTH  # the weights streamed once
NOISE = 0.002  # relative standard deviation of every synthetic timing
# Physically possible (above the H100 floor), so the report sees the fitted terms, not the floor.
TRUE = {
    "decode": {
        "fixed": 2e-3,
        "weights": WEIGHT_READ_S,
        "batch": 5e-6,
        "context": 3e-7,
        "partition": 2e-6,
        "batch_squared": 5e-8,
    },
    "host": {"fixed": 3e-4, "batch": 1.5e-5},
    "engine": {"fixed": 4e-4, "seqs": 6e-6},
    # attention: seconds per (128 queries x 64 keys) block of one head, every SM busy
    "prefill": {"seqs": 1e-3, "attention": 4e-7, "gathered": 3e-6, "cached": 4e-3},
    "copy": {"fixed": 4e-4, "blocks": 9e-6},
    "swap": {"fixed": 5e-4, "blocks": 2.5e-4},
    "mixed": {"fixed": 1.2e-3, "decodes": 2e-5},
}
# A block of prefill attention alone on its SM runs at this fraction of the SM's pace with two.
SOLO_RATE = 0.7
SIZES = [1, 2, 4, *range(8, 257, 8)]  # decode graphs' batch sizes
PARTITIONS = [128, 256] + [512] * (len(SIZES) - 2)  # each graph's attention partition
PADDING = {"sizes": [16, 32, 64], "multiple": 128, "graphs": [16, 32, 64, *range(128, 1025, 128)]}
TABLE_TOKENS = [16, 32, 64, *range(128, 2561, 128)]  # every padded size up to 2560
TABLE_FIXED_S, TABLE_PER_ROW_S, TABLE_EAGER_PER_ROW_S = 1e-3, 3e-5, 1e-5


def decode_gpu_s(coef: dict, batch: int, total_context: float) -> float:
    """GPU time of a decode step: the graph of the smallest captured size >= batch runs
    ``rows`` rows (linear and squared), reads the whole context, and one thread block walks
    a sequence's (mean) context up to the graph's partition."""
    graph = next(i for i, size in enumerate(SIZES) if size >= batch)
    rows, partition = SIZES[graph], PARTITIONS[graph]
    d = coef["decode"]
    return (
        d["fixed"]
        + d["weights"]
        + d["batch"] * rows
        + d["batch_squared"] * rows**2
        + d["context"] * total_context
        + d["partition"] * min(total_context / batch, partition)
    )


def host_s(coef: dict, batch: int) -> float:
    return coef["host"]["fixed"] + coef["host"]["batch"] * batch


def engine_s(coef: dict, seqs: int) -> float:
    return coef["engine"]["fixed"] + coef["engine"]["seqs"] * seqs


def decode_step_s(coef: dict, context_lens) -> float:
    """One decode step as the simulator charges it: GPU, runner host work and engine."""
    batch = len(context_lens)
    return decode_gpu_s(coef, batch, float(sum(context_lens))) + host_s(coef, batch) + engine_s(coef, batch)


def causal_pairs(new: int, cached: int) -> int:
    """(query, key) pairs of ``new`` tokens after ``cached`` ones, counted one query at a time:
    the query at position q (0-based) attends to keys 0..q."""
    return sum(q + 1 for q in range(cached, cached + new))


def attention_grid(new, cached) -> list[int]:
    """One head's thread blocks of the prefill attention kernel, as the key tiles (64 keys)
    each walks: every sequence gets as many blocks as the longest sequence has query tiles
    (128 queries); a block past its sequence's end walks none, the others walk up to their
    last query's position (query q, 0-based after the cached prefix, sees keys 0..q)."""
    tiles = max(math.ceil(n / 128) for n in new)
    grid = []
    for n, c in zip(new, cached):
        for tile in range(tiles):
            last_query = min(c + (tile + 1) * 128, c + n)
            grid.append(math.ceil(last_query / 64) if tile * 128 < n else 0)
    return grid


def attention_s(coef: dict, new, cached, sms: int = H100_SMS, solo_rate: float = SOLO_RATE) -> float:
    """Prefill attention on a GPU of ``sms`` SMs: its blocks (every head's) spread over the SMs, or the
    slowest SM at launch if longer (the coefficient is per block with every SM busy): with no more
    blocks than SMs the longest block alone (at the solo rate), else the two longest walks
    sharing one SM until the shorter ends, then the longer alone."""
    grid = attention_grid(new, cached)
    heads = SPEC.num_heads
    walks = sorted((w for w in grid if w), reverse=True)
    longest = walks[0]
    second = walks[1] if len(walks) > 1 else longest  # opt-13b has many heads
    if heads * len(grid) <= sms:
        slowest = longest / solo_rate
    else:
        slowest = 2 * second + (longest - second) / solo_rate
    sm_block_s = coef["prefill"]["attention"] * sms  # one SM's seconds per block, two resident
    return max(heads * sum(grid) / sms, slowest) * sm_block_s


def prefill_terms_s(coef: dict, new, cached, sms: int = H100_SMS) -> float:
    """What a prefill costs beyond its token table: per sequence, its attention, per context
    token gathered when any prefix is cached (plus the gather's launches)."""
    p = coef["prefill"]
    context = [n + c for n, c in zip(new, cached)]
    gather = p["gathered"] * sum(context) + p["cached"] if any(cached) else 0.0
    return p["seqs"] * len(new) + attention_s(coef, new, cached, sms) + gather


def token_table_s(tokens: int) -> float:
    """The linear layers' cost: the weight read, launches, and a cost per padded row that grows
    past 1024 rows (eager above the graphs); piecewise linear with its knot on a table point."""
    rows = next(t for t in TABLE_TOKENS if t >= tokens)
    return (
        WEIGHT_READ_S + TABLE_FIXED_S + TABLE_PER_ROW_S * rows + TABLE_EAGER_PER_ROW_S * max(0, rows - 1024)
    )


def mixed_step_s(
    coef: dict, new: int, cached: int, decode_contexts: list[int], table_s, sms: int = H100_SMS
) -> float:
    """A chunk beside decodes: every token through the linear layers, the chunk's prefill
    terms, the decodes' context read at the decode rate, and the mixed step's own cost."""
    tokens = new + len(decode_contexts)
    return (
        table_s(tokens)
        + prefill_terms_s(coef, [new], [cached], sms)
        + coef["decode"]["context"] * sum(decode_contexts)
        + coef["mixed"]["fixed"]
        + coef["mixed"]["decodes"] * len(decode_contexts)
    )


def blocks_s(coef: dict, kind: str, blocks: float) -> float:
    return coef[kind]["fixed"] + coef[kind]["blocks"] * blocks


def synthetic_raw(
    seed: int = 0,
    train: int = 300,
    heldout: int = 60,
    coef: dict = TRUE,
    table_s=token_table_s,
    noise: float = NOISE,
    sms: int = H100_SMS,
) -> dict:
    """What the calibrator would return for a GPU of ``sms`` SMs whose steps cost exactly
    ``coef`` plus the token table ``table_s``, timed with ``noise``: ``train`` decode and
    prefill points to fit and ``heldout`` more of each."""
    rng = np.random.default_rng(seed)
    timed = lambda seconds: float(seconds * (1 + noise * rng.standard_normal()))
    decode, prefill = [], []
    for held, count in ((False, train), (True, heldout)):
        for _ in range(count):
            b = int(rng.integers(1, 257))
            ctx = int(b * rng.integers(1, 2048))
            gpu = timed(decode_gpu_s(coef, b, ctx))
            decode.append(
                {
                    "batch": b,
                    "total_context": ctx,
                    "max_context": ctx // b,
                    "mixed": False,
                    "heldout": held,
                    "gpu_s": gpu,
                    "wall_s": gpu + timed(host_s(coef, b)),
                }
            )
        for _ in range(count):
            s = int(rng.integers(1, 33))
            new = rng.integers(1, 2048 // s + 2, s).tolist()
            cached = (rng.integers(0, 8192, s) * (rng.random(s) < 0.5)).tolist()
            wall = timed(table_s(sum(new)) + prefill_terms_s(coef, new, cached, sms))
            prefill.append({"new_tokens": new, "cached_tokens": cached, "heldout": held, "wall_s": wall})
    blocks = [1, 4, 16, 64, 256]
    mixed = []
    for _ in range(60):
        new, decodes = int(rng.integers(16, 1500)), int(rng.integers(1, 129))
        cached = int(rng.integers(0, 1024)) if rng.random() < 0.5 else 0
        contexts = rng.integers(16, 2048, decodes).tolist()
        wall = timed(mixed_step_s(coef, new, cached, contexts, table_s, sms))
        mixed.append(
            {"new_tokens": [new], "cached_tokens": [cached], "decode_contexts": contexts, "wall_s": wall}
        )
    return {
        "environment": {"device_name": "synthetic", "multiprocessors": sms},
        "ceilings": {"copy_bandwidth": COPY_BANDWIDTH, "matmul_flops": 7e14},
        "attention_partition": PARTITIONS,
        "graph_batch_sizes": SIZES,
        "prefill_padding": PADDING,
        "kv_capacity_tokens": 600_000,
        "max_batched_tokens": 2560,
        "repeats": 1,
        "setup_seconds": 0.0,
        "measure_seconds": 0.0,
        "decode": decode,
        "prefill": prefill,
        "copy": [{"blocks": k, "wall_s": timed(blocks_s(coef, "copy", k))} for k in blocks],
        "swap": [
            {"blocks": k, "direction": "out", "wall_s": timed(blocks_s(coef, "swap", k))} for k in blocks
        ],
        "engine": [
            {"kind": "decode", "seqs": int(b), "engine_s": timed(engine_s(coef, int(b)))}
            for b in rng.integers(1, 257, 40)
        ],
        "prefill_tokens": [
            {"new_tokens": [t], "cached_tokens": [0], "heldout": False, "wall_s": timed(table_s(t))}
            for t in TABLE_TOKENS
        ],
        "mixed": mixed,
    }


def fit(raw: dict) -> dict:
    return fit_profile(raw, SPEC, H100, BLOCK_SIZE, created="2026-01-01T00:00:00+00:00")
