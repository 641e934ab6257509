"""Several KV-cache policies on one workload: the same requests, lengths and arrivals for each,
so every difference in the table comes from the policy.

For each request rate the trace is generated once, in the parent process, and handed to
every policy's run. Sharing options (``--n``, ``--beam-width``, shared prefixes, prefix
caching) shape the trace and apply to every policy: a policy that cannot share blocks
(contiguous reservation) holds a private copy of each shared prompt instead. Preemption
options apply to the policies that preempt.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack

import pandas as pd

from kvsim.config import SimConfig
from kvsim.cost import select_cost_model
from kvsim.cost.cost_model import CostModel
from kvsim.errors import KvsimError
from kvsim.experiments.run import prepare_trace, run
from kvsim.experiments.sweep import WarnOnce, in_workers
from kvsim.hardware import load_gpu
from kvsim.models import load_model
from kvsim.policies.registry import get_policy
from kvsim.workloads.trace import Trace


def parse_policies(text: str) -> list[str]:
    """``'paged,orca-max'`` -> known policy names, in the order given, without repeats."""
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise KvsimError("compare: --policies needs at least one policy")
    for name in names:
        get_policy(name)
    return names


def policy_config(config: SimConfig, name: str) -> SimConfig:
    """``config`` for policy ``name``. A policy that never preempts runs with the default
    preemption setting, so ``--preemption swap`` compares paged's swapping with the rest
    rather than being refused by them. Policies are compared under one scheduler: v0
    unless ``--scheduler`` says otherwise, since only paged has a v1."""
    scheduler = config.scheduler or "v0"
    if get_policy(name).preempts:
        return config.with_overrides(policy=name, scheduler=scheduler)
    return config.with_overrides(policy=name, preemption=SimConfig.preemption, scheduler=scheduler)


def sharing_settings(config: SimConfig) -> list[str]:
    """The options under which block tables share blocks, in words ([] when none is set)."""
    parts = []
    if config.n > 1:
        parts.append(
            f"n {config.n}" + (" (independent lengths)" if config.independent_sample_lengths else "")
        )
    if config.beam_width > 1:
        parts.append(f"beam width {config.beam_width} (stay {config.beam_stay:g}, skew {config.beam_skew:g})")
    if config.prefix_len:
        count = f"{config.num_prefixes} shared prefixes" if config.num_prefixes > 1 else "shared prefix"
        parts.append(f"{count} of {config.prefix_len} tokens")
    if config.with_overrides(scheduler=config.scheduler or "v0").prefix_caching_on:  # as compared
        parts.append("prefix caching")
    return parts


def _run_point(point: tuple[SimConfig, Trace]) -> dict:
    config, trace = point
    result = run(config, trace=trace)
    return {
        "policy": config.policy,
        "rate": config.rate,
        "num_slots": result.capacity.num_slots,
        **result.summary,
    }


def compare_policies(
    base: SimConfig,
    policies: list[str],
    rates: list[float | None],
    jobs: int = 1,
    on_point: Callable[[], None] | None = None,
) -> pd.DataFrame:
    """One row per (policy, rate) with every summary metric, policies in the order given."""
    model = load_model(base.model, base.dtype)
    configs = [base.with_overrides(rate=rate).validate() for rate in rates]
    traces = [prepare_trace(config, model) for config in configs]
    points = [
        (policy_config(config, policy), trace)
        for policy in policies
        for config, trace in zip(configs, traces)
    ]
    rows = []
    with ExitStack() as stack:  # one job runs in this process: no pickling, no start-up
        if jobs > 1:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=jobs))
            finished = WarnOnce().all(pool.map(in_workers(_run_point), points))
        else:
            finished = map(_run_point, points)
        for row in finished:
            rows.append(row)
            if on_point is not None:
                on_point()
    return pd.DataFrame(rows)


def caption(base: SimConfig, num_requests: int, cost: CostModel | None = None) -> str:
    """What was simulated, for figure captions: model, GPU, trace and the settings that matter.
    ``cost``: the cost model the run used, if at hand (else the one ``base`` selects)."""
    model, gpu = load_model(base.model, base.dtype), load_gpu(base.gpu)
    cost = cost or select_cost_model(base, model, gpu)
    gpus = f"{base.num_replicas}x " if base.num_replicas > 1 else ""
    settings = sharing_settings(base)
    if base.preemption == "swap":
        settings.append(f"preemption by swap ({base.swap_space:g} GiB)")
    return " · ".join(
        [
            f"{model.name} on {gpus}{gpu.name}",
            f"trace {base.trace} ({num_requests} requests, {base.arrival} arrivals, seed {base.seed})",
            f"block size {base.block_size}",
            *settings,
            f"cost model {cost.name} ({cost.kind})",
        ]
    )
