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
    """A kernel as the GPU model needs it: what a block takes of an SM, how many blocks, and
    how long one block runs alone (see SimulatedGPU for the rule)."""

    need: np.ndarray
    blocks: int
    block_s: float

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
        shapes.append(KernelShape(kernel.block_need(limits), kernel.blocks, kernel.duration_s / waves))
    return tuple(shapes)


def jobs_of(
    chains: list[KernelChain], arrivals, model_index, shapes: list[tuple[KernelShape, ...]]
) -> list["Job"]:
    """A stream's jobs (``arrivals`` and each job's index into the models), job i of model m
    a job of ``chains[m]`` running ``shapes[m]``: what the simulated GPU and the real replay
    both run."""
    return [
        Job(i, chains[m], int(m), shapes[m], float(t)) for i, (t, m) in enumerate(zip(arrivals, model_index))
    ]


class Job:
    """One request to its chain's model: the chain runs kernel after kernel (the chain also
    gives its launch latency, launch gap and interference). ``next_kernel`` is the index of the
    next kernel to launch; ``in_flight`` whether a launched kernel of it has not finished yet."""

    __slots__ = (
        "id",
        "chain",
        "model",
        "model_index",
        "shapes",
        "arrival",
        "admitted",
        "next_kernel",
        "in_flight",
    )

    def __init__(
        self,
        job_id: int,
        chain: KernelChain,
        model_index: int,
        shapes: tuple[KernelShape, ...],
        arrival: float,
    ):
        self.id, self.chain, self.model, self.model_index = job_id, chain, chain.model, model_index
        self.shapes, self.arrival = shapes, arrival
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
        self.unplaced, self.running = shape.blocks, 0
        self.stream: int | None = None
        self.issued = False
        self.first_placed: float | None = None
        self.finished: float | None = None

    @property
    def is_last(self) -> bool:
        return self.index == self.job.num_kernels - 1
