"""Regenerate the built-in workload summaries in ``data/`` and print how well they fit.

    python -m kvsim.workloads.derive_builtin [--data ../shared/data]

``sharegpt.json`` is derived from ``sharegpt_opt_lengths.csv`` (the vLLM paper's ShareGPT
lengths), which may not be copied into the repository: only this summary is stored.
With the paper's filter (input + output <= 2048) it keeps

* a quantile table per marginal, at probabilities packed towards the upper tail (where
  the means come from), interpolated linearly between knots;
* a 16 x 16 histogram of the pairs' ranks (their copula), with finer rank bins at the top
  so that the filter's corner and the tails' dependence survive. Ties in the integer data
  are broken at random (seeded), so the ranks are uniform and each row and column of the
  histogram has the mass of its rank bin.

``alpaca.json`` has no data behind it: the paper gives only the means, so each length is
``max(1, round(lognormal(mu, sigma)))`` with an assumed sigma and ``mu`` solved so the
mean of the discretised, clipped distribution equals the paper's exactly.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, stats

from kvsim.workloads import builtin
from kvsim.workloads.streams import take_lengths

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_TOTAL = 2048  # the paper's filter: input + output <= 2048 (OPT's context)
NUM_KNOTS = 48
RANK_EDGES = [*np.round(np.linspace(0.0, 0.9, 13), 4), 0.95, 0.98, 0.995, 1.0]
ALPACA = {"input": (19.31, 0.6), "output": (58.45, 1.0)}  # paper's mean, assumed sigma
CHECK_SAMPLES = 100_000


def _ranks(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mid-ranks scaled to (0, 1), ties broken at random so the ranks are uniform."""
    order = np.lexsort((rng.random(len(values)), values))
    ranks = np.empty(len(values))
    ranks[order] = (np.arange(len(values)) + 0.5) / len(values)
    return ranks


def sharegpt_summary(prompt: np.ndarray, output: np.ndarray) -> dict:
    """The compact summary of (prompt, output) pairs that ``builtin.sample_sharegpt`` reads."""
    probs = np.round(1.0 - (1.0 - np.linspace(0.0, 1.0, NUM_KNOTS)) ** 2, 6)
    edges = np.asarray(RANK_EDGES)
    rng = np.random.default_rng(0)
    cells = [np.searchsorted(edges, _ranks(v, rng), side="right") - 1 for v in (prompt, output)]
    counts = np.zeros((len(edges) - 1,) * 2, dtype=int)
    np.add.at(counts, tuple(cells), 1)
    return {
        "description": "vLLM paper ShareGPT lengths (first turn, OPT tokenizer), "
        f"input + output <= {MAX_TOTAL}; marginal quantile tables + rank histogram",
        "num_rows": len(prompt),
        "max_total_len": MAX_TOTAL,
        "quantile_probs": probs.tolist(),
        "input_quantiles": np.round(np.quantile(prompt, probs), 2).tolist(),
        "output_quantiles": np.round(np.quantile(output, probs), 2).tolist(),
        "rank_edges": edges.tolist(),
        "cell_counts": counts.tolist(),
    }


def _discretised_lognormal_mean(mu: float, sigma: float) -> float:
    """Mean of ``max(1, round(X))``, X lognormal: 1 + sum over k >= 1 of P(X >= k + 1/2)."""
    k = np.arange(1, 1_000_000)
    return 1.0 + stats.lognorm.sf(k + 0.5, sigma, scale=np.exp(mu)).sum()


def alpaca_summary() -> dict:
    summary = {
        "description": "Assumed shape: independent max(1, round(lognormal(mu, sigma))); "
        "mu solved so the means equal the vLLM paper's Alpaca means; output capped so the total fits",
        "max_total_len": MAX_TOTAL,
    }
    for part, (mean, sigma) in ALPACA.items():
        mu = optimize.brentq(lambda m: _discretised_lognormal_mean(m, sigma) - mean, 0.0, np.log(mean))
        summary[part] = {"target_mean": mean, "mu": round(mu, 6), "sigma": sigma}
    return summary


def _json(summary: dict) -> str:
    """JSON with one line per key (and per histogram row), so that diffs stay readable."""

    def value(v: object) -> str:
        if isinstance(v, list) and v and isinstance(v[0], list):
            return "[\n  " + ",\n  ".join(json.dumps(row) for row in v) + "\n ]"
        return json.dumps(v)

    return "{\n" + ",\n".join(f" {json.dumps(k)}: {value(v)}" for k, v in summary.items()) + "\n}\n"


def _describe(prompt: np.ndarray, output: np.ndarray) -> dict[str, float]:
    row = {"spearman": stats.spearmanr(prompt, output).statistic}
    for name, v in (("input", prompt), ("output", output)):
        row[f"{name} mean"] = v.mean()
        row |= {f"{name} p{q}": np.quantile(v, q / 100) for q in (10, 50, 90, 99)}
    return row


def _sample(name: str, summary: dict) -> tuple[np.ndarray, np.ndarray]:
    draw = lambda rng: builtin.SAMPLERS[name](summary, rng, 8192)  # noqa: E731
    return take_lengths(draw, CHECK_SAMPLES, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    args = parser.parse_args()

    table = pd.read_csv(args.data / "sharegpt_opt_lengths.csv")
    table = table[table.input_len + table.output_len <= MAX_TOTAL]
    data = (table.input_len.to_numpy(), table.output_len.to_numpy())
    summaries = {"sharegpt": sharegpt_summary(*data), "alpaca": alpaca_summary()}
    for name, summary in summaries.items():
        (builtin.DATA_DIR / f"{name}.json").write_text(_json(summary))

    rows = {"sharegpt data": _describe(*data)}
    rows |= {f"{name} built-in": _describe(*_sample(name, summary)) for name, summary in summaries.items()}
    print(
        f"{len(data[0])} rows with input + output <= {MAX_TOTAL}; built-ins: {CHECK_SAMPLES} samples, seed 0"
    )
    print(_markdown(pd.DataFrame(rows)))


def _markdown(frame: pd.DataFrame) -> str:
    """A markdown table of statistics (rows) by sample (columns), for docs/workloads.md."""
    lines = ["| statistic | " + " | ".join(frame.columns) + " |", "|---" * (len(frame.columns) + 1) + "|"]
    for stat, values in frame.iterrows():
        digits = 3 if stat == "spearman" else 2
        lines.append(f"| {stat} | " + " | ".join(f"{v:.{digits}f}" for v in values) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
