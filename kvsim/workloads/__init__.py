"""Workloads: request lengths and arrival times, as a columnar ``Trace`` for the engine.

``build_trace`` is the one entry point (built-in ``sharegpt``/``alpaca`` or a trace file;
Poisson, gamma or replayed arrivals); ``clip_to_context`` and ``over_length_mask`` deal
with requests longer than the model's context. See docs/workloads.md.
"""

from kvsim.workloads.build import ARRIVAL_KINDS, build_trace
from kvsim.workloads.builtin import BUILTIN_WORKLOADS
from kvsim.workloads.clip import clip_to_context, over_length_mask
from kvsim.workloads.trace import Trace

__all__ = [
    "ARRIVAL_KINDS",
    "BUILTIN_WORKLOADS",
    "Trace",
    "build_trace",
    "clip_to_context",
    "over_length_mask",
]
