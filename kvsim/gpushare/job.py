"""A job in flight and its kernels as the simulated GPU runs them.

Everything a dispatch policy and the GPU share about work: which kernel of which job, how
many of its blocks are still to be placed or running, when it started and finished.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kvsim.gpushare.kernels import KernelChain
from kvsim.hardware import SMLimits


@dataclass(frozen=True)
class KernelShape:
    """A kernel as the GPU model needs it: what a block takes of an SM, how many blocks, how
    long one block runs alone (see SimulatedGPU for the rule), how long after its issue it
    reaches the SMs, and how much other kernels slow its blocks (its chain's launch gap and
    interference, kvsim.gpushare.kernels)."""

    need: np.ndarray
    blocks: int
    block_s: float
    launch_gap_s: float = 0.0
    interference: float = 0.0

    @property
    def need_list(self) -> list[int]:
        return self.need.tolist()


def shapes_of(chain: KernelChain, limits: SMLimits) -> tuple[KernelShape, ...]:
    """Each kernel's shape. A block runs for the measured duration divided by the waves the
    kernel took when measured: its blocks over the slots the whole GPU offered it (SMs x
    blocks per SM), rounded up."""
    shapes = []
    for kernel in chain.kernels:
        slots = limits.num_sms * kernel.blocks_per_sm(limits)
        waves = math.ceil(kernel.blocks / slots)
        shapes.append(
            KernelShape(
                kernel.block_need(limits),
                kernel.blocks,
                kernel.duration_s / waves,
                chain.launch_gap_s,
                chain.interference,
            )
        )
    return tuple(shapes)


def jobs_of(
    models: tuple[str, ...],
    arrivals,
    model_index,
    shapes: list[tuple[KernelShape, ...]],
    launch_latencies_s: list[float] | None = None,
) -> list["Job"]:
    """A stream's jobs (``arrivals`` and each job's index into ``models``), job i of model m
    running ``shapes[m]``, launched whole in ``launch_latencies_s[m]`` (none by default): what
    the simulated GPU and the real replay both run."""
    latencies = launch_latencies_s or [0.0] * len(models)
    return [
        Job(i, models[m], int(m), shapes[m], float(t), latencies[m])
        for i, (t, m) in enumerate(zip(arrivals, model_index))
    ]


class Job:
    """One request to ``model``: its chain runs kernel after kernel. ``next_kernel`` is the
    index of the next kernel to launch; ``in_flight`` whether a launched kernel of it has not
    finished yet; ``launch_latency_s`` what submitting it whole takes (its chain's)."""

    __slots__ = (
        "id",
        "model",
        "model_index",
        "shapes",
        "arrival",
        "launch_latency_s",
        "admitted",
        "next_kernel",
        "in_flight",
    )

    def __init__(
        self,
        job_id: int,
        model: str,
        model_index: int,
        shapes: tuple[KernelShape, ...],
        arrival: float,
        launch_latency_s: float = 0.0,
    ):
        self.id, self.model, self.model_index, self.shapes = job_id, model, model_index, shapes
        self.arrival, self.launch_latency_s = arrival, launch_latency_s
        self.admitted: float | None = None
        self.next_kernel = 0
        self.in_flight = False

    @property
    def num_kernels(self) -> int:
        return len(self.shapes)

    @property
    def all_launched(self) -> bool:
        return self.next_kernel == len(self.shapes)

    def launch_next(self, partition: int | None = None) -> KernelRun:
        """The job's next kernel as a run for the GPU (the caller decides when to issue it)."""
        run = KernelRun(self, self.next_kernel, partition)
        self.next_kernel += 1
        self.in_flight = True
        return run


class KernelRun:
    """One kernel of one job on the GPU. ``partition``: the SM partition it may use (None: all
    SMs); ``stream``: the CUDA stream a hardware-queue policy put it on."""

    __slots__ = (
        "job",
        "index",
        "need",
        "need_list",
        "block_s",
        "launch_gap_s",
        "interference",
        "unplaced",
        "running",
        "partition",
        "stream",
        "issued",
        "first_placed",
        "finished",
    )

    def __init__(self, job: Job, index: int, partition: int | None):
        shape = job.shapes[index]
        self.job, self.index, self.partition = job, index, partition
        self.need, self.need_list, self.block_s = shape.need, shape.need_list, shape.block_s
        self.launch_gap_s, self.interference = shape.launch_gap_s, shape.interference
        self.unplaced, self.running = shape.blocks, 0
        self.stream: int | None = None
        self.issued = False
        self.first_placed: float | None = None
        self.finished: float | None = None

    @property
    def is_last(self) -> bool:
        return self.index == self.job.num_kernels - 1
