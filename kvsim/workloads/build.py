"""``build_trace``: lengths from a built-in or a file, arrivals generated or replayed.

How the arrival times are chosen:

* ``arrival="trace"``: the file's own timestamps (``rate`` does not apply and is ignored).
* ``rate`` given: a generated process, Poisson or gamma with ``burstiness_cv``.
* ``rate=None``: the file's timestamps when it has them (the default ``arrival="poisson"``
  stands for "not chosen"), otherwise every request at t = 0 (an offline batch).

How the lengths are chosen:

* Replayed timestamps: the file's rows in time order (file order for a sorted file), so
  a request keeps its own time.
* Otherwise the rows are taken in a seeded random order; when more requests are wanted
  than the file has rows, each pass over the file is a fresh shuffle, so every row is
  used as evenly as possible (never more than once per pass), rather than drawing with
  replacement. Built-ins are sampled from their summaries.

Lengths and arrivals come from independent seeded streams, so the same seed gives the same
requests at any rate.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from kvsim.errors import KvsimError
from kvsim.workloads.arrivals import gamma_arrivals
from kvsim.workloads.builtin import BUILTIN_WORKLOADS, sample_builtin
from kvsim.workloads.files import FileRows, load_table
from kvsim.workloads.sharegpt_json import load_sharegpt
from kvsim.workloads.streams import BLOCK, take_lengths
from kvsim.workloads.trace import Trace

ARRIVAL_KINDS = ("poisson", "gamma", "trace")


def build_trace(
    source: str = "sharegpt",
    *,
    num_requests: int | None = None,
    duration: float | None = None,
    rate: float | None = None,
    arrival: str = "poisson",
    burstiness_cv: float = 1.0,
    seed: int = 0,
    tokenizer: str | None = None,
) -> Trace:
    """A trace of requests: ``source`` is a built-in name (sharegpt, alpaca) or a file path.

    ``num_requests`` and/or ``duration`` (s) bound it, whichever ends it first; with neither,
    a file gives all its rows. See the module docstring for arrivals and row order.
    """
    _validate(num_requests, duration, rate, arrival, burstiness_cv, seed)
    rows = None if source in BUILTIN_WORKLOADS else _load(source, tokenizer)
    name = source if rows is None else rows.name
    has_timestamps = rows is not None and rows.timestamp is not None
    if arrival == "trace" or (rate is None and arrival == "poisson" and has_timestamps):
        if not has_timestamps:
            raise KvsimError(
                f"{name} has no arrival timestamps to replay: use arrival='poisson' or 'gamma' with a rate"
            )
        return _replay(rows, num_requests, duration)

    if rate is None:
        if arrival == "gamma":
            raise KvsimError("gamma arrivals need a rate")
        if duration is not None:
            raise KvsimError(f"a duration needs arrival times: give a rate ({name} has no timestamps)")
        times = np.zeros(num_requests or _whole_file(name, rows))
    else:
        if num_requests is None and duration is None:
            num_requests = _whole_file(name, rows)
        cv = burstiness_cv if arrival == "gamma" else 1.0
        times = gamma_arrivals(rate, cv, seed, num_requests=num_requests, duration=duration)
    draw = functools.partial(sample_builtin, source, n=BLOCK) if rows is None else rows.shuffled
    prompt, output = take_lengths(draw, len(times), seed)
    return Trace(name, times, prompt, output)


def _validate(num_requests, duration, rate, arrival, burstiness_cv, seed) -> None:
    if num_requests is not None and (not _is_int(num_requests) or num_requests < 1):
        raise KvsimError(f"num_requests must be a whole number >= 1 (got {num_requests!r})")
    for label, value in (("duration", duration), ("rate", rate)):
        if value is not None and not _positive(value):
            raise KvsimError(f"{label} must be a positive number (got {value!r})")
    if arrival not in ARRIVAL_KINDS:
        raise KvsimError(f"unknown arrival process {arrival!r} (available: {', '.join(ARRIVAL_KINDS)})")
    if not _positive(burstiness_cv):
        raise KvsimError(f"burstiness_cv must be positive (got {burstiness_cv!r})")
    if arrival != "gamma" and burstiness_cv != 1.0:
        raise KvsimError(f"burstiness_cv={burstiness_cv} needs arrival='gamma' (arrival is {arrival!r})")
    if not _is_int(seed) or seed < 0:
        raise KvsimError(f"seed must be a whole number >= 0 (got {seed!r})")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _positive(value: object) -> bool:
    is_number = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    return is_number and math.isfinite(value) and value > 0


def _load(source: str, tokenizer: str | None) -> FileRows:
    path = Path(source)
    if path.is_dir():
        raise KvsimError(f"trace {source!r} is a directory; give a trace file")
    if not path.is_file():
        raise KvsimError(
            f"unknown workload {source!r}: not a built-in ({', '.join(BUILTIN_WORKLOADS)}) and no such file"
        )
    if path.suffix.lower() == ".json":
        return load_sharegpt(path, tokenizer)
    if tokenizer is not None:
        raise KvsimError(
            f"{path}: a tokenizer applies to ShareGPT JSON only; this file already has token counts"
        )
    return load_table(path)


def _whole_file(name: str, rows: FileRows | None) -> int:
    """Requests when no bound is given: the whole file; a built-in has no size of its own."""
    if rows is None:
        raise KvsimError(f"built-in workload {name!r} needs num_requests (or a duration with a rate)")
    return len(rows)


def _replay(rows: FileRows, num_requests: int | None, duration: float | None) -> Trace:
    """The file's rows at their own times, shifted so that the first request arrives at t = 0."""
    order = np.argsort(rows.timestamp, kind="stable")  # a file out of time order is replayed in time order
    times = rows.timestamp[order] - rows.timestamp[order[0]]
    if duration is not None:
        order, times = order[times < duration], times[times < duration]
    order, times = order[:num_requests], times[:num_requests]
    return Trace(rows.name, times, rows.prompt_len[order], rows.output_len[order])
