"""Several KV-cache policies on one workload: the same requests, lengths and arrivals for each,
so every difference in the table comes from the policy.

For each request rate the trace is generated once, in the parent process, and handed to
every policy's run.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack

import pandas as pd

from kvsim.calibration import select_cost_model
from kvsim.config import SimConfig
from kvsim.errors import KvsimError
from kvsim.hardware import load_gpu
from kvsim.models import load_model
from kvsim.policies.registry import get_policy
from kvsim.sim.run import prepare_trace, run
from kvsim.workloads.trace import Trace


def parse_policies(text: str) -> list[str]:
    """``'paged,orca-max'`` -> known policy names, in the order given, without repeats."""
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise KvsimError("compare: --policies needs at least one policy")
    for name in names:
        get_policy(name)
    return names


def _run_point(point: tuple[SimConfig, Trace]) -> dict:
    config, trace = point
    result = run(config, trace=trace)
    return {"policy": config.policy, "rate": config.rate, "num_slots": result.capacity.num_slots,
            **result.summary}


def compare_policies(base: SimConfig, policies: list[str], rates: list[float | None], jobs: int = 1,
                     on_point: Callable[[], None] | None = None) -> pd.DataFrame:
    """One row per (policy, rate) with every summary metric, policies in the order given."""
    model = load_model(base.model, base.dtype)
    configs = [base.with_overrides(rate=rate).validate() for rate in rates]
    traces = [prepare_trace(config, model) for config in configs]
    points = [(config.with_overrides(policy=policy), trace)
              for policy in policies for config, trace in zip(configs, traces)]
    rows = []
    with ExitStack() as stack:  # one job runs in this process: no pickling, no start-up
        mapper = stack.enter_context(ProcessPoolExecutor(max_workers=jobs)).map if jobs > 1 else map
        for row in mapper(_run_point, points):
            rows.append(row)
            if on_point is not None:
                on_point()
    return pd.DataFrame(rows)


def caption(base: SimConfig, num_requests: int) -> str:
    """What was simulated, for figure captions: model, GPU, trace and the settings that matter."""
    model, gpu = load_model(base.model, base.dtype), load_gpu(base.gpu)
    cost = select_cost_model(base, model, gpu)
    gpus = f"{base.num_replicas}x " if base.num_replicas > 1 else ""
    return (f"{model.name} on {gpus}{gpu.name} · trace {base.trace} ({num_requests} requests, "
            f"{base.arrival} arrivals, seed {base.seed}) · block size {base.block_size} · "
            f"cost model {cost.name} ({cost.kind})")
