"""Synthetic measurements made from known coefficients, through the same features the fit uses."""

import numpy as np
import pytest

from kvsim.calibration.fit import fit_profile
from kvsim.calibration.profile import (block_features, decode_features, engine_features, graph_for,
                                       host_features, prefill_features)
from kvsim.hardware import BUILTIN_GPUS
from kvsim.models import load_model

SPEC = load_model("opt-13b")
COPY_BANDWIDTH = 3.0e12
# Physically possible (above the H100 floor), so the report sees the fitted terms, not the floor.
TRUE = {
    "decode": {"fixed": 2e-3, "weights": SPEC.weight_bytes / COPY_BANDWIDTH, "batch": 5e-6,
               "context": 3e-7, "partition": 2e-6, "batch_squared": 5e-8},
    "host": {"fixed": 3e-4, "batch": 1.5e-5},
    "engine": {"fixed": 4e-4, "seqs": 6e-6},
    "prefill": {"seqs": 1e-3, "pairs": 6e-8, "gathered": 3e-6, "cached": 4e-3, "longest": 1e-6},
    "copy": {"fixed": 4e-4, "blocks": 9e-6},
    "swap": {"fixed": 5e-4, "blocks": 2.5e-4},
}
SIZES = [1, 2, 4, *range(8, 257, 8)]
PADDING = {"sizes": [16, 32, 64], "multiple": 128, "graphs": [16, 32, 64, *range(128, 1025, 128)]}
TABLE_TOKENS = [16, 32, 64, *range(128, 2561, 128)]


def linear_layers(tokens: int) -> float:
    """The true token-table cost: the weight read, launches, and a cost per token (padded
    as the runner pads) that grows past 1024 tokens (piecewise linear with a knot at a table
    point, so the table holds it exactly)."""
    rows = next((t for t in TABLE_TOKENS if t >= tokens), tokens)
    return SPEC.weight_bytes / COPY_BANDWIDTH + 1e-3 + 3e-5 * rows + 1e-5 * max(0, rows - 1024)


PARTITIONS = [128, 256] + [512] * (len(SIZES) - 2)


def _vec(kind, coef):
    return np.array(list(coef[kind].values()))


def synthetic_raw(coef=TRUE, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    decode, prefill = [], []
    for heldout in (False, True):
        for _ in range(60 if not heldout else 20):
            b = int(rng.integers(1, 257))
            ctx = int(b * rng.integers(1, 2048))
            rows, part = graph_for(SIZES, PARTITIONS, b)
            gpu = float(decode_features(b, rows, part, ctx) @ _vec("decode", coef))
            host = float(host_features(b) @ _vec("host", coef))
            decode.append({"batch": b, "total_context": ctx, "max_context": ctx // b, "mixed": False,
                           "heldout": heldout, "gpu_s": gpu, "wall_s": gpu + host})
        for _ in range(60 if not heldout else 20):
            s = int(rng.integers(1, 33))
            new = rng.integers(1, 2048 // s + 2, s)
            cached = rng.integers(0, 1024, s) * (rng.random(s) < 0.5)
            wall = linear_layers(int(new.sum())) + float(prefill_features(new, new + cached) @ _vec("prefill", coef))
            prefill.append({"new_tokens": new.tolist(), "cached_tokens": cached.tolist(),
                            "heldout": heldout, "wall_s": wall})
    blocks = [1, 4, 16, 64, 256]
    engine = [{"kind": "decode", "seqs": int(b), "engine_s": float(engine_features(b) @ _vec("engine", coef))}
              for b in rng.integers(1, 257, 40)]
    return {
        "environment": {"device_name": "synthetic"},
        "ceilings": {"copy_bandwidth": COPY_BANDWIDTH, "matmul_flops": 7e14},
        "attention_partition": PARTITIONS, "graph_batch_sizes": SIZES,
        "prefill_padding": PADDING,
        "kv_capacity_tokens": 600_000, "max_batched_tokens": 2560, "repeats": 1,
        "setup_seconds": 0.0, "measure_seconds": 0.0, "decode": decode, "prefill": prefill,
        "copy": [{"blocks": k, "wall_s": float(block_features(k) @ _vec("copy", coef))} for k in blocks],
        "swap": [{"blocks": k, "direction": "out", "wall_s": float(block_features(k) @ _vec("swap", coef))}
                 for k in blocks],
        "engine": engine,
        "prefill_tokens": [{"new_tokens": [t], "cached_tokens": [0], "heldout": False,
                            "wall_s": linear_layers(t)} for t in TABLE_TOKENS],
    }


@pytest.fixture(scope="session")
def synthetic_profile() -> dict:
    return fit_profile(synthetic_raw(), SPEC, BUILTIN_GPUS["h100-sxm-80gb"], 16, created="2026-01-01T00:00:00+00:00")


@pytest.fixture(scope="session")
def true_coefficients() -> dict:
    return TRUE
