"""One shared-GPU run: jobs of several models arrive, a dispatch policy feeds the simulated GPU.

The setup in one place (SimPy's habit): the environment, the GPU, the policy bound to it,
the arrival process with each model's cap on outstanding jobs, and the record of every job
(and, on request, every kernel). The run lasts until the last job has finished.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import simpy

from kvsim.gpushare.gpu import SimulatedGPU
from kvsim.gpushare.job import Job, KernelRun, jobs_of, shapes_of
from kvsim.gpushare.kernels import KernelChain
from kvsim.gpushare.policies.base import DispatchSettings, Workload
from kvsim.gpushare.policies.registry import build_policy
from kvsim.gpushare.workloads import JobStream, Mix
from kvsim.hardware import SMLimits


@dataclass
class SharedRun:
    """``jobs``: one row per job (model, arrival, admitted, finished, latency). ``kernels``:
    one row per kernel run (job, index, first block placed, finished), when recorded."""

    jobs: pd.DataFrame
    kernels: pd.DataFrame | None


def simulate(
    chains: dict[str, KernelChain],
    mix: Mix,
    stream: JobStream,
    policy: str,
    limits: SMLimits,
    settings: DispatchSettings = DispatchSettings(),
    record_kernels: bool = False,
    observer: Callable[[float, np.ndarray], None] | None = None,
) -> SharedRun:
    env = simpy.Environment()
    shapes = [shapes_of(chains[m], limits) for m in mix.models]
    jobs = jobs_of([chains[m] for m in mix.models], stream.arrivals, stream.model_index, shapes)
    finished = np.full(len(jobs), np.nan)
    kernel_rows: list[tuple] = []
    outstanding = [0] * len(mix.models)
    held: list[deque[Job]] = [deque() for _ in mix.models]
    chosen = build_policy(policy, settings)

    def admit(job: Job, now: float) -> None:
        job.admitted = now
        outstanding[job.model_index] += 1
        chosen.job_admitted(job)

    def kernel_done(run: KernelRun) -> None:
        job = run.job
        job.in_flight = False
        if record_kernels:
            kernel_rows.append((job.id, run.index, run.first_placed, run.finished))
        chosen.kernel_done(run)
        if run.is_last:
            finished[job.id] = env.now
            outstanding[job.model_index] -= 1
            if held[job.model_index]:
                admit(held[job.model_index].popleft(), env.now)

    def arrivals():
        for job in jobs:
            # the clock is a sum of float steps: it can pass an arrival by a rounding error
            yield env.timeout(max(job.arrival - env.now, 0.0))
            if outstanding[job.model_index] < mix.caps[job.model_index]:
                admit(job, job.arrival)  # env.now, but exact: the sum of gaps can round
            else:
                held[job.model_index].append(job)

    gpu = SimulatedGPU(env, limits, chosen.kernel_placed, kernel_done, chosen.room_freed, observer)
    chosen.bind(env, gpu, Workload(mix.models, chains, mix.probabilities))
    env.process(arrivals())
    env.run()
    table = pd.DataFrame(
        {
            "job": np.arange(len(jobs)),
            "model": [job.model for job in jobs],
            "arrival": stream.arrivals,
            "admitted": [job.admitted for job in jobs],
            "finished": finished,
        }
    )
    table["latency"] = table.finished - table.arrival
    kernels = (
        pd.DataFrame(kernel_rows, columns=["job", "kernel", "started", "finished"])
        if record_kernels
        else None
    )
    return SharedRun(table, kernels)


def latency_summary(jobs: pd.DataFrame, alone_s: dict[str, float]) -> pd.DataFrame:
    """Per model and over all jobs ("all"): jobs, achieved throughput (jobs finished per second
    from the first arrival to the last finish), mean, p50 and p99 latency, and the slowdown
    (mean latency over the model's latency alone on the GPU; none for "all")."""
    span = jobs.finished.max() - jobs.arrival.min()
    rows = []
    for model, group in [*jobs.groupby("model", sort=False), ("all", jobs)]:
        latency = group.latency.to_numpy()
        rows.append(
            {
                "model": model,
                "jobs": len(group),
                "throughput_jobs_s": len(group) / span,
                "latency_mean_s": float(latency.mean()),
                "latency_p50_s": float(np.quantile(latency, 0.5)),
                "latency_p99_s": float(np.quantile(latency, 0.99)),
                "slowdown": float(latency.mean() / alone_s[model]) if model in alone_s else np.nan,
            }
        )
    return pd.DataFrame(rows)


def jain_index(values: np.ndarray) -> float:
    """Jain's fairness index: (sum x)^2 / (n sum x^2); 1 when all are equal, 1/n at worst."""
    values = np.asarray(values, dtype=float)
    return float(values.sum() ** 2 / (len(values) * (values**2).sum()))
