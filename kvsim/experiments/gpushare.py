"""Shared-GPU experiments (Paella's Figs. 11-13): a load sweep of every dispatch policy, and
the fairness threshold's effect on each model's latency.

**Load** is offered work over what the GPU serves running one job at a time: at load 1, jobs
arrive at 1 / (mean over the mix of a job's latency alone on the GPU). Concurrent kernels let
a policy sustain more than that. Every policy at a load sees the same jobs at the same times
(generated from the seed), and the points run in parallel processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from kvsim.errors import KvsimError
from kvsim.experiments.sweep import finished_points
from kvsim.gpushare.kernels import KernelChain, load_chains
from kvsim.gpushare.policies.base import DispatchSettings
from kvsim.gpushare.simulate import jain_index, latency_summary, simulate
from kvsim.gpushare.workloads import Mix, generate_jobs, load_mix
from kvsim.hardware import SM_LIMITS, SMLimits

#: Where measured kernel profiles are shipped (``simcli gpushare profile`` writes them).
SHIPPED_PROFILES = Path(__file__).resolve().parents[1] / "gpushare" / "profiles"


@dataclass(frozen=True)
class SharedGPUSetup:
    gpu: str
    mix: Mix
    chains: dict[str, KernelChain] = field(repr=False)
    limits: SMLimits = field(repr=False)
    num_jobs: int = 3000
    sigma: float = 1.5
    seed: int = 0
    settings: DispatchSettings = DispatchSettings()
    profiles: str = ""  # where the chains were read from, for captions
    #: Seconds of one-job-at-a-time serving that load 1 stands for; None: the chains' own
    #: (rate_for_load). A comparison with a measurement fixes it to what the measurement's
    #: profiles gave, so that its loads offer the jobs the GPU ran, whatever profiles price them.
    load_unit_s: float | None = None

    @property
    def alone_s(self) -> dict[str, float]:
        return {m: c.alone_s for m, c in self.chains.items()}

    def rate_for_load(self, load: float) -> float:
        """Jobs per second that offer ``load`` times what one-job-at-a-time serving handles."""
        if self.load_unit_s is not None:
            return load / self.load_unit_s
        probabilities = [p / sum(self.mix.probabilities) for p in self.mix.probabilities]
        mean_alone = sum(p * self.chains[m].alone_s for m, p in zip(self.mix.models, probabilities))
        return load / mean_alone

    def caption(self) -> str:
        return (
            f"{self.mix.name} mix on {self.gpu} (kernel chains of {self.profiles}), {self.num_jobs:,} jobs per point, "
            f"log-normal gaps sigma {self.sigma:g}, seed {self.seed}"
        )


def load_setup(
    gpu: str,
    mix: str,
    profiles: Path | None,
    num_jobs: int,
    sigma: float,
    seed: int,
    settings: DispatchSettings,
) -> SharedGPUSetup:
    """The setup, every input checked (one-line KvsimError) before anything runs."""
    if gpu not in SM_LIMITS:
        raise KvsimError(f"no SM limits for GPU {gpu!r} (GPUs with them: {', '.join(SM_LIMITS)})")
    if num_jobs < 1:
        raise KvsimError(f"--num-jobs must be at least 1 (got {num_jobs})")
    if not (math.isfinite(sigma) and sigma > 0):
        raise KvsimError(f"--sigma must be a positive number (got {sigma})")
    check_settings(settings)
    chosen = load_mix(mix)
    limits = SM_LIMITS[gpu]
    folder = profiles or SHIPPED_PROFILES
    chains = load_chains(folder, chosen.models, gpu, limits)
    return SharedGPUSetup(gpu, chosen, chains, limits, num_jobs, sigma, seed, settings, str(folder))


def check_settings(settings: DispatchSettings) -> None:
    """The dispatch policies' knobs as the command line gives them, each checked (one line)."""
    if settings.hardware_queues < 1:
        raise KvsimError(f"--hardware-queues must be at least 1 (got {settings.hardware_queues})")
    if settings.outstanding_limit < 0:
        raise KvsimError(f"--outstanding-limit must be at least 0 (got {settings.outstanding_limit})")
    if not (math.isfinite(settings.dispatch_overhead_s) and settings.dispatch_overhead_s >= 0):
        raise KvsimError(
            f"--dispatch-overhead-us must be a non-negative number (got {settings.dispatch_overhead_s})"
        )
    if not 0 < settings.ewma_alpha <= 1:
        raise KvsimError(f"--ewma-alpha must be in (0, 1] (got {settings.ewma_alpha})")


def check_positive(flag: str, values: list[float]) -> None:
    for value in values:
        if not (value > 0 and (math.isfinite(value) or flag == "--thresholds")):
            raise KvsimError(f"{flag} values must be positive numbers (got {value})")


def _point(point: dict) -> pd.DataFrame:
    setup: SharedGPUSetup = point["setup"]
    settings = setup.settings
    if "threshold" in point:
        settings = replace(settings, fairness_threshold=point["threshold"])
    rate = setup.rate_for_load(point["load"])
    stream = generate_jobs(setup.mix, rate, setup.num_jobs, setup.sigma, setup.seed)
    run = simulate(setup.chains, setup.mix, stream, point["policy"], setup.limits, settings)
    table = latency_summary(run.jobs, setup.alone_s)
    labels = {k: v for k, v in point.items() if k != "setup"}
    return table.assign(**labels, offered_jobs_s=rate)[[*labels, "offered_jobs_s", *table.columns]]


def _run(points: list[dict], jobs: int, on_point: Callable[[], None]) -> pd.DataFrame:
    tables: dict[int, pd.DataFrame] = {}
    for index, table in finished_points(points, jobs, _point):
        tables[index] = table
        on_point()
    return pd.concat([tables[i] for i in range(len(points))], ignore_index=True)


def load_sweep(
    setup: SharedGPUSetup, policies: list[str], loads: list[float], jobs: int, on_point=lambda: None
) -> pd.DataFrame:
    """One row per policy, load and model (and "all"): offered and achieved throughput, latency."""
    points = [{"policy": p, "load": load, "setup": setup} for p in policies for load in loads]
    return _run(points, jobs, on_point)


def fairness_sweep(
    setup: SharedGPUSetup, thresholds: list[float], load: float, jobs: int, on_point=lambda: None
) -> pd.DataFrame:
    """Paella SRPT at ``load`` for each fairness threshold: one row per threshold and model, with
    Jain's index over the models' slowdowns (mean latency over latency alone) in every row."""
    points = [{"policy": "paella-srpt", "load": load, "threshold": t, "setup": setup} for t in thresholds]
    table = _run(points, jobs, on_point)
    per_model = table[table.model != "all"]
    jain = per_model.groupby("threshold", sort=False).slowdown.apply(jain_index)
    return table.assign(jain_index=table.threshold.map(jain))
