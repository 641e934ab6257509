"""How much co-running kernels slow each other: one number per model, fitted to a measurement.

The simulated GPU shares out SM slots by footprint; measured on an H200, jobs that run at once
take longer than that sharing alone gives (docs/gpushare.md), because they also share what no
footprint states: the memory system and the SMs' issue bandwidth. The profiler measures it the
plainest way it can: ``copies`` jobs of one model launched together, each on its own stream,
their mean latency (``colocated_us`` in the profile). :func:`fit_interference` finds the chain's
``interference`` (kvsim.gpushare.gpu states the rule) for which the simulated GPU gives the
same slowdowns, each copy count's mean latency over the single copy's, so that the profile's
alone time and the benchmark's need not agree to the microsecond. The load sweeps validate it:
they are measured apart from this benchmark and never fitted to.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy.optimize import minimize_scalar

from kvsim.gpushare.kernels import KernelChain
from kvsim.gpushare.policies.base import DispatchSettings
from kvsim.gpushare.simulate import simulate
from kvsim.gpushare.workloads import JobStream, Mix
from kvsim.hardware import SMLimits

#: The largest interference searched: a block slowed ten times over by a full GPU of others.
MAX_INTERFERENCE = 10.0


def colocated_latency(chain: KernelChain, limits: SMLimits, copies: int) -> float:
    """Mean latency of ``copies`` jobs of ``chain`` arriving together, each on its own stream
    and hardware queue, on the simulated GPU."""
    mix = Mix("colocated", (chain.model,), (1.0,), (copies,))
    stream = JobStream(np.zeros(copies), np.zeros(copies, dtype=np.int64))
    run = simulate(
        {chain.model: chain},
        mix,
        stream,
        "cuda-multi-stream",
        limits,
        DispatchSettings(hardware_queues=copies),
    )
    return float(run.jobs.latency.mean())


def slowdown_errors(chain: KernelChain, limits: SMLimits, colocated_s: dict[int, float]) -> dict[int, float]:
    """Per measured copy count above one: the simulated slowdown over the measured one, minus 1."""
    alone_simulated, alone_measured = colocated_latency(chain, limits, 1), colocated_s[1]
    return {
        copies: (colocated_latency(chain, limits, copies) / alone_simulated) / (measured / alone_measured) - 1
        for copies, measured in sorted(colocated_s.items())
        if copies > 1
    }


def fit_interference(
    chain: KernelChain, limits: SMLimits, colocated_s: dict[int, float]
) -> tuple[float, dict[int, float]]:
    """The interference that best gives the measured slowdowns (least squares over the copy
    counts; ``colocated_s`` must hold 1 copy and at least one more), and the fit's relative
    errors per copy count."""
    if 1 not in colocated_s or len(colocated_s) < 2:
        raise ValueError("the co-location benchmark needs one copy alone and at least one count above it")

    def squared_error(interference: float) -> float:
        errors = slowdown_errors(replace(chain, interference=interference), limits, colocated_s)
        return sum(e * e for e in errors.values())

    best = minimize_scalar(
        squared_error, bounds=(0.0, MAX_INTERFERENCE), method="bounded", options={"xatol": 1e-3}
    )
    interference = float(best.x)
    return interference, slowdown_errors(replace(chain, interference=interference), limits, colocated_s)
