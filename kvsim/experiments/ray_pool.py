"""Sweep points on a Ray cluster (``simcli sweep|plan --executor ray [--address ADDR]``), instead of
local worker processes: the optional ``ray`` extra (``pip install 'kvsim[ray]'``).

Each point is one Ray task running the same function the local executor runs; a point's row
depends only on its settings (every run is seeded), so both executors give the same rows.
Without an address Ray starts a local instance of ``jobs`` CPUs for the sweep and stops it
after; with one it joins that cluster, whose nodes need kvsim installed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from kvsim.errors import KvsimError


def require_ray():
    """The ray module, or a one-line refusal that says how to get it."""
    try:
        import ray
    except ImportError:
        raise KvsimError("--executor ray needs Ray: pip install 'kvsim[ray]'") from None
    return ray


@contextlib.contextmanager
def ray_session(jobs: int, address: str | None) -> Iterator:
    """Ray for the block: a local instance of ``jobs`` CPUs, or the cluster at ``address``,
    stopped after; one already running (an outer block's) is used as it is. A planner's many
    rounds of points run in one session instead of starting Ray for each round."""
    ray = require_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=address,
            num_cpus=None if address else jobs,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
        )
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def _apply(work: Callable[[dict], dict], point: dict) -> dict:
    """The Ray task: ``work(point)``. ``ray.remote`` takes only a function or a class, and
    ``work`` may be neither (a ``functools.partial``: the sweep's ``in_workers`` wrapper)."""
    return work(point)


def run_on_ray(
    work: Callable[[dict], dict], points: list[dict], jobs: int, address: str | None
) -> Iterator[tuple[int, dict]]:
    """(index, ``work(point)``) for every point, in the order they finish."""
    with ray_session(jobs, address) as ray:
        task = ray.remote(num_cpus=1)(_apply)
        shared = ray.put(work)  # sent to the cluster once, not with every point
        pending = {task.remote(shared, point): index for index, point in enumerate(points)}
        try:
            while pending:
                finished, _ = ray.wait(list(pending), num_returns=1)
                for ref in finished:
                    yield pending.pop(ref), ray.get(ref)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
