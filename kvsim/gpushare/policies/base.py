"""What a dispatch policy is: it decides when each kernel of each job reaches the GPU.

The GPU (kvsim.gpushare.gpu) places the blocks of issued kernels in issue order; a policy
sees jobs admitted and kernels placed and finished, and calls ``gpu.issue``. Mechanism (the
SMs, the blocks) and policy (who goes first) stay apart: a new policy is one module and a
line in kvsim.gpushare.policies.registry.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import simpy

from kvsim.gpushare.gpu import SimulatedGPU
from kvsim.gpushare.job import Job, KernelRun
from kvsim.gpushare.kernels import KernelChain


@dataclass(frozen=True)
class DispatchSettings:
    """The knobs of the policies (each policy reads those that concern it)."""

    hardware_queues: int = 8  # CUDA_DEVICE_MAX_CONNECTIONS (CUDA's default is 8)
    outstanding_limit: int = 2  # Paella: issued kernels allowed to wait for SM room (its --extra_kernels)
    dispatch_overhead_s: float = 0.0  # Paella: the dispatcher's own time per kernel
    ewma_alpha: float = 0.25  # Paella SRPT: weight of the newest observed kernel length
    fairness_threshold: float = math.inf  # Paella SRPT: deficit at which a model goes next


@dataclass(frozen=True)
class Workload:
    """What a policy may know of the models sharing the GPU: their names (in the mix's order),
    their chains, and the share of jobs each gets."""

    models: tuple[str, ...]
    chains: dict[str, KernelChain]
    probabilities: tuple[float, ...]


class DispatchPolicy(ABC):
    """Bound once to a GPU, then told of every admitted job and every kernel placed or done."""

    def bind(self, env: simpy.Environment, gpu: SimulatedGPU, workload: Workload) -> None:
        self.env, self.gpu, self.workload = env, gpu, workload

    @abstractmethod
    def job_admitted(self, job: Job) -> None:
        """``job`` may start: none of its kernels has been launched yet."""

    def kernel_placed(self, run: KernelRun) -> None:
        """Every block of ``run`` is on an SM (it no longer waits for room)."""

    def kernel_done(self, run: KernelRun) -> None:
        """``run`` finished; ``run.job.in_flight`` is already cleared."""

    def room_freed(self) -> None:
        """Blocks finished and the kernels already issued have taken what they could of the room."""
