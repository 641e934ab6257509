"""Spatial partitioning as MPS gives it: each model gets its own set of SMs.

Each model is an MPS client limited to a share of the SMs (as
``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` sets it), in proportion to the GPU time its jobs are
expected to take (its share of jobs times its chain's length alone), at least one SM each,
whole SMs by largest remainder. Within its partition a model's jobs run as with many streams
(kvsim.gpushare.policies.hardware): a stream per job over the client's own hardware queues.
Models never take each other's SMs, so one model's burst cannot slow another, and an idle
model's SMs stay idle.
"""

from __future__ import annotations

import numpy as np
import simpy

from kvsim.errors import KvsimError
from kvsim.gpushare.gpu import SimulatedGPU
from kvsim.gpushare.job import Job, KernelRun
from kvsim.gpushare.policies.base import DispatchPolicy, Workload
from kvsim.gpushare.policies.hardware import HardwareQueues


def partition_sizes(weights: list[float], num_sms: int) -> list[int]:
    """Whole SMs in proportion to ``weights``, at least one each, by largest remainder."""
    if len(weights) > num_sms:
        raise KvsimError(f"mps: {len(weights)} models cannot each get one of {num_sms} SMs")
    spare = num_sms - len(weights)
    exact = np.asarray(weights, dtype=float) / sum(weights) * spare
    sizes = np.floor(exact).astype(int)
    order = np.argsort(-(exact - sizes), kind="stable")
    sizes[order[: spare - sizes.sum()]] += 1
    return [int(s) + 1 for s in sizes]


class SpatialPartitions(DispatchPolicy):
    def __init__(self, hardware_queues: int):
        self.hardware_queues = hardware_queues
        self.clients: list[HardwareQueues] = []

    def bind(self, env: simpy.Environment, gpu: SimulatedGPU, workload: Workload) -> None:
        super().bind(env, gpu, workload)
        work = [p * workload.chains[m].alone_s for m, p in zip(workload.models, workload.probabilities)]
        gpu.set_partitions(partition_sizes(work, gpu.limits.num_sms))
        self.clients = [HardwareQueues(self.hardware_queues, partition=i) for i in range(len(work))]
        for client in self.clients:
            client.bind(env, gpu, workload)

    def job_admitted(self, job: Job) -> None:
        self.clients[job.model_index].job_admitted(job)

    def kernel_placed(self, run: KernelRun) -> None:
        self.clients[run.job.model_index].kernel_placed(run)

    def kernel_done(self, run: KernelRun) -> None:
        self.clients[run.job.model_index].kernel_done(run)
