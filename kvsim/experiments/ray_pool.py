"""Sweep points on a Ray cluster (``simcli sweep --executor ray [--address ADDR]``), instead of
local worker processes: the optional ``ray`` extra (``pip install 'kvsim[ray]'``).

Each point is one Ray task running the same function the local executor runs; a point's row
depends only on its settings (every run is seeded), so both executors give the same rows.
Without an address Ray starts a local instance of ``jobs`` CPUs for the sweep and stops it
after; with one it joins that cluster, whose nodes need kvsim installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from kvsim.errors import KvsimError


def require_ray():
    """The ray module, or a one-line refusal that says how to get it."""
    try:
        import ray
    except ImportError:
        raise KvsimError("--executor ray needs Ray: pip install 'kvsim[ray]'") from None
    return ray


def run_on_ray(
    work: Callable[[dict], dict], points: list[dict], jobs: int, address: str | None
) -> Iterator[tuple[int, dict]]:
    """(index, ``work(point)``) for every point, in the order they finish."""
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
    task = ray.remote(num_cpus=1)(work)
    pending = {task.remote(point): index for index, point in enumerate(points)}
    try:
        while pending:
            finished, _ = ray.wait(list(pending), num_returns=1)
            for ref in finished:
                yield pending.pop(ref), ray.get(ref)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()
