"""Every dispatch policy by name: a description and how it is built from DispatchSettings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kvsim.errors import KvsimError
from kvsim.gpushare.policies.base import DispatchPolicy, DispatchSettings
from kvsim.gpushare.policies.hardware import HardwareQueues
from kvsim.gpushare.policies.mps import SpatialPartitions
from kvsim.gpushare.policies.paella import JobFifo, KernelFifo, ShortestRemaining, SoftwareDispatcher


@dataclass(frozen=True)
class PolicyEntry:
    description: str
    build: Callable[[DispatchSettings], DispatchPolicy]


def _paella(order: Callable[[DispatchSettings], object]) -> Callable[[DispatchSettings], DispatchPolicy]:
    return lambda s: SoftwareDispatcher(order(s), s.outstanding_limit, s.dispatch_overhead_s)


POLICIES: dict[str, PolicyEntry] = {
    "cuda-single-stream": PolicyEntry(
        "CUDA, one stream for every job: each kernel waits for the one before it",
        lambda s: HardwareQueues(1, single_stream=True),
    ),
    "cuda-multi-stream": PolicyEntry(
        "CUDA, a stream per job over --hardware-queues FIFO hardware queues",
        lambda s: HardwareQueues(s.hardware_queues),
    ),
    "mps": PolicyEntry(
        "MPS-like spatial partitions: SMs per model in proportion to its expected GPU time",
        lambda s: SpatialPartitions(s.hardware_queues),
    ),
    "paella-job-fifo": PolicyEntry(
        "Paella dispatcher, job by job in arrival order", _paella(lambda s: JobFifo())
    ),
    "paella-kernel-fifo": PolicyEntry(
        "Paella dispatcher, kernel by kernel, the oldest ready job first", _paella(lambda s: KernelFifo())
    ),
    "paella-srpt": PolicyEntry(
        "Paella dispatcher, least estimated remaining work first, with the deficit fairness threshold",
        _paella(lambda s: ShortestRemaining(s.ewma_alpha, s.fairness_threshold)),
    ),
}


def build_policy(name: str, settings: DispatchSettings) -> DispatchPolicy:
    if name not in POLICIES:
        raise KvsimError(f"unknown dispatch policy {name!r} (policies: {', '.join(POLICIES)})")
    return POLICIES[name].build(settings)


def parse_policies(text: str) -> list[str]:
    """``'a,b'`` or ``all`` -> policy names, each known, none empty."""
    names = list(POLICIES) if text == "all" else text.split(",")
    for name in names:
        if name not in POLICIES:
            raise KvsimError(f"unknown dispatch policy {name!r} (policies: {', '.join(POLICIES)}, or all)")
    return names
