"""Sweeps: every combination of option values, one simulation per point, in worker processes."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import pandas as pd

from kvsim.config import SimConfig
from kvsim.errors import KvsimError

# The summary metrics a sweep keeps per point.
SWEEP_COLUMNS = (
    "completed",
    "rejected",
    "throughput_req_s",
    "throughput_output_tok_s",
    "steady_throughput_req_s",
    "normalized_latency_s_per_token",
    *(
        f"{metric}_{stat}"
        for metric in ("ttft_s", "tpot_s", "e2e_latency_s")
        for stat in ("mean", "p50", "p90", "p99", "max")
    ),
    "mean_batch_size",
    "mean_kv_usage",
    "busy_fraction",
    "comm_fraction",
    "preemptions",
)


def grid_points(grid: dict[str, list]) -> list[dict]:
    """``{'rate': [1, 2], 'block_size': [8]}`` -> one dict of settings per combination, each
    checked as a whole before anything runs."""
    points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] or [{}]
    for point in points:
        SimConfig(**point).validate()
    return points


def sweep_point(settings: dict) -> dict:
    """One point's row: its settings, the cache size and the summary metrics, or the reason
    it could not run (a point the others' values make impossible does not stop the sweep)."""
    from kvsim.experiments.run import run

    try:
        result = run(SimConfig(**settings).validate())
    except KvsimError as err:
        return {**settings, "error": str(err)}
    row = {**settings, "num_blocks": result.capacity.num_blocks}
    row.update({k: result.summary[k] for k in SWEEP_COLUMNS})
    return row


def run_sweep(
    points: list[dict], jobs: int, on_row: Callable[[dict], None] = lambda row: None
) -> pd.DataFrame:
    """Every point in ``jobs`` worker processes; rows in the points' order."""
    rows = []
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for row in pool.map(sweep_point, points):
            rows.append(row)
            on_row(row)
    return pd.DataFrame(rows)
