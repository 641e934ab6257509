"""Built-in workloads: request lengths drawn from compact summaries in ``data/*.json``.

The summaries are derived (and regenerated) by ``derive_builtin.py``; the data files they
come from stay outside the repository.

* ``sharegpt`` -- the vLLM paper's ShareGPT lengths (first turn, OPT tokenizer, filtered to
  input + output <= 2048), kept as two marginal quantile tables plus a histogram of the
  pair's ranks (a discretised copula). Marginals come from the tables, dependence from
  the rank histogram, and the filter is enforced exactly by truncating the output draw.
* ``alpaca`` -- independent discretised lognormals whose means match the paper's (19.31
  input, 58.45 output tokens); their spread and independence are assumptions. Both are
  capped so that input + output <= 2048, like the ShareGPT filter.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).with_name("data")


def _quantile(u: np.ndarray, probs: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Inverse CDF by linear interpolation of the stored quantile table, rounded to tokens."""
    return np.rint(np.interp(u, probs, values)).astype(np.int64)


def sample_sharegpt(summary: dict, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (prompt, output) pairs from a rank-histogram summary (see ``derive_builtin``).

    The prompt's rank is drawn from the histogram's row masses (uniform within a row), the
    output's rank from that row's cells. Cells are cut where the output would push the
    total past ``max_total_len``, which is how the data itself was filtered.
    """
    probs = np.asarray(summary["quantile_probs"])
    in_q = np.asarray(summary["input_quantiles"])
    out_q = np.asarray(summary["output_quantiles"])
    edges = np.asarray(summary["rank_edges"])
    counts = np.asarray(summary["cell_counts"], dtype=float)
    max_total = summary["max_total_len"]
    lo, width = edges[:-1], np.diff(edges)

    # One row of draws per request, so that a request's lengths do not depend on n.
    draw = rng.random((n, 4))
    row_cdf = np.cumsum(counts.sum(axis=1))
    row = np.searchsorted(row_cdf, draw[:, 0] * row_cdf[-1], side="right")
    prompt = _quantile(lo[row] + draw[:, 1] * width[row], probs, in_q)

    rank_cap = np.interp(max_total - prompt + 0.5, out_q, probs)  # output rank keeping the total
    hi = np.minimum(edges[1:], rank_cap[:, None])
    col_cdf = np.cumsum(counts[row] * np.clip((hi - lo) / width, 0.0, None), axis=1)
    col = np.argmax(col_cdf > (draw[:, 2] * col_cdf[:, -1])[:, None], axis=1)
    v = lo[col] + draw[:, 3] * np.maximum(hi[np.arange(n), col] - lo[col], 0.0)
    output = _quantile(v, probs, out_q)
    # Rounding can land half a token over the cap; the filter is a hard guarantee.
    return prompt, np.minimum(output, max_total - prompt)


def sample_alpaca(summary: dict, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (prompt, output) pairs: ``max(1, round(lognormal(mu, sigma)))`` for each, independent.

    The output is capped so that the total fits ``max_total_len`` (OPT's context, the bound
    the paper's ShareGPT filter uses); about 2 requests in 100k reach it.
    """
    z = rng.standard_normal((n, 2))
    mu = np.array([summary["input"]["mu"], summary["output"]["mu"]])
    sigma = np.array([summary["input"]["sigma"], summary["output"]["sigma"]])
    lengths = np.maximum(1, np.rint(np.exp(mu + sigma * z))).astype(np.int64)
    prompt = np.minimum(lengths[:, 0], summary["max_total_len"] - 1)
    return prompt, np.minimum(lengths[:, 1], summary["max_total_len"] - prompt)


SAMPLERS = {"sharegpt": sample_sharegpt, "alpaca": sample_alpaca}
BUILTIN_WORKLOADS = tuple(SAMPLERS)


@functools.cache
def load_summary(name: str) -> dict:
    """The stored summary of a built-in workload (read once per process)."""
    return json.loads((DATA_DIR / f"{name}.json").read_text())


def sample_builtin(name: str, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (prompt, output) pairs of the built-in workload ``name``."""
    return SAMPLERS[name](load_summary(name), rng, n)
