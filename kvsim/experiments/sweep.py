"""Sweeps: every combination of option values, one simulation per point, in local worker
processes or on Ray; each row streams to the CSV as its point finishes, and a resumed sweep
runs only the points not yet there."""

from __future__ import annotations

import functools
import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import pandas as pd

from kvsim.config import SimConfig
from kvsim.errors import KvsimError
from kvsim.experiments.ray_pool import run_on_ray
from kvsim.experiments.sweep_file import SweepFile

# The summary metrics a sweep keeps per point.
SWEEP_COLUMNS = (
    "completed",
    "rejected",
    "throughput_req_s",
    "throughput_output_tok_s",
    "steady_throughput_req_s",
    "normalized_latency_s_per_token",
    "steady_normalized_latency_s_per_token",
    *(
        f"{metric}_{stat}"
        for metric in ("ttft_s", "tpot_s", "e2e_latency_s")
        for stat in ("mean", "p50", "p90", "p99", "max")
    ),
    "mean_batch_size",
    "mean_kv_usage",
    "sharing_memory_saving",
    "sharing_saving_per_step",
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


#: Where the points run: local worker processes, or the tasks of a Ray cluster (ray_pool).
EXECUTORS = ("local", "ray")


def recording_warnings(work: Callable, item) -> tuple[object, list[tuple[type[Warning], str]]]:
    """``work(item)`` in a worker, and the warnings it raised as (category, text): returned
    instead of printed, so that the parent prints each distinct one once (``WarnOnce``), not
    once per point (a profile's extrapolation warning would repeat in every worker)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = work(item)
    return result, [(w.category, str(w.message)) for w in caught]


def in_workers(work: Callable) -> Callable:
    """``work`` wrapped for a worker (``recording_warnings``); picklable if ``work`` is."""
    return functools.partial(recording_warnings, work)


class WarnOnce:
    """Issues, in this process, the warnings workers recorded, each distinct one once."""

    def __init__(self) -> None:
        self.seen: set[tuple[type[Warning], str]] = set()

    def __call__(self, recorded: tuple[object, list[tuple[type[Warning], str]]]):
        """The worker's result, after issuing its warnings not seen before."""
        result, caught = recorded
        for category, text in caught:
            if (category, text) not in self.seen:
                self.seen.add((category, text))
                warnings.warn(text, category, stacklevel=2)
        return result

    def all(self, recorded: Iterable) -> Iterator:
        return (self(item) for item in recorded)


def finished_points(
    points: list[dict],
    jobs: int,
    point: Callable[[dict], dict],
    executor: str = "local",
    address: str | None = None,
) -> Iterator[tuple[int, dict]]:
    """(index, ``point(points[index])``) for every point, in the order they finish."""
    if not points:  # a resumed sweep with nothing left: no workers to start
        return
    warn_once = WarnOnce()
    if executor == "ray":
        for index, recorded in run_on_ray(in_workers(point), points, jobs, address):
            yield index, warn_once(recorded)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(in_workers(point), settings): index for index, settings in enumerate(points)}
        for future in as_completed(futures):
            yield futures[future], warn_once(future.result())


def run_sweep(
    points: list[dict],
    jobs: int,
    on_row: Callable[[dict], None] = lambda row: None,
    point: Callable[[dict], dict] = sweep_point,
    out: Path | None = None,
    resume: bool = False,
    executor: str = "local",
    address: str | None = None,
) -> pd.DataFrame:
    """Every point in ``jobs`` workers (``executor``), ``on_row`` called as each finishes; rows
    in the points' order. ``point`` turns a point into its row (a module-level function, so
    that workers can import it): the sweep's own, or another experiment's (the planner judges
    each run against its SLOs).

    With ``out`` (the sweep's own rows), each row is appended to that CSV as its point
    finishes (``SweepFile``), ``resume`` keeps the rows already there and runs only the
    other points, and the table returned is the finished file's."""
    if out is None:
        rows: list[dict] = [{}] * len(points)
        for index, row in finished_points(points, jobs, point, executor, address):
            rows[index] = row
            on_row(row)
        return pd.DataFrame(rows)
    settings = list(points[0])
    sweep_file = SweepFile(out, [*settings, "num_blocks", *SWEEP_COLUMNS, "error"], settings, resume)
    todo = sweep_file.start(points)
    for _, row in finished_points([points[i] for i in todo], jobs, point, executor, address):
        sweep_file.append(row)
        on_row(row)
    sweep_file.finish(points)
    return pd.read_csv(out)
