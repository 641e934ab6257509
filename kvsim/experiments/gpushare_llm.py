"""LLMs sharing one GPU (issue 17's LLM pair): what co-location costs each against a GPU of its own.

Each LLM is set up as ``simcli run`` sets up one replica (kvsim.experiments.run.replica_parts:
its scheduler, and a KV cache sized to its share of the GPU's memory, as vLLM's
``gpu_memory_utilization`` shares a GPU between two servers: share x the default utilization),
with ShareGPT requests at its own rate (Poisson arrivals; LLM i draws from seed + i, so two
LLMs never see the same requests). Their steps then run on the simulated GPU
(kvsim.gpushare.llm) under one dispatch policy, all together, and each again alone on the same
GPU with the same requests, memory share and policy: the slowdown is shared over alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kvsim.config import SimConfig
from kvsim.engine.core import EngineCore
from kvsim.engine.metrics import Recorder, summarize
from kvsim.errors import KvsimError
from kvsim.experiments.gpushare import SHIPPED_PROFILES, check_settings
from kvsim.experiments.run import context_check, replica_parts
from kvsim.gpushare.llm import PER_MODEL_PARTITIONS, LLMDeployment, simulate_llms
from kvsim.gpushare.llm_chains import StepChains, load_step_chains
from kvsim.gpushare.policies.base import DispatchSettings
from kvsim.gpushare.policies.registry import POLICIES
from kvsim.hardware import SM_LIMITS, SMLimits
from kvsim.workloads.trace import Trace

#: Summary metrics reported per LLM (kvsim.engine.metrics.summarize's keys).
METRICS = (
    "completed",
    "rejected",
    "ttft_s_mean",
    "ttft_s_p99",
    "tpot_s_mean",
    "tpot_s_p99",
    "normalized_latency_s_per_token",
    "throughput_req_s",
    "throughput_output_tok_s",
)
#: Metrics whose shared value over the alone one is reported as a slowdown.
SLOWDOWNS = ("ttft_s_mean", "tpot_s_mean", "normalized_latency_s_per_token")


@dataclass(frozen=True)
class LLMPlacement:
    model: str
    rate: float  # requests per second
    memory_share: float  # of the GPU memory one server would use


def check_placements(placements: list[LLMPlacement], num_requests: int) -> None:
    """One line for the first bad input: models named once, rates positive, shares in (0, 1]
    and summing to at most 1."""
    names = [p.model for p in placements]
    if not placements:
        raise KvsimError("--models names no model")
    if len(set(names)) < len(names):
        raise KvsimError(f"--models names a model twice ({', '.join(names)})")
    for p in placements:
        if not (math.isfinite(p.rate) and p.rate > 0):
            raise KvsimError(f"--rates must be positive numbers (got {p.rate} for {p.model})")
        if not (math.isfinite(p.memory_share) and 0 < p.memory_share <= 1):
            raise KvsimError(f"--memory-shares must be in (0, 1] (got {p.memory_share} for {p.model})")
    if sum(p.memory_share for p in placements) > 1 + 1e-9:
        raise KvsimError(f"--memory-shares sum to {sum(p.memory_share for p in placements):g}, more than 1")
    if num_requests < 1:
        raise KvsimError(f"--num-requests must be at least 1 (got {num_requests})")


def placement_config(
    placement: LLMPlacement, index: int, gpu: str, num_requests: int, seed: int
) -> SimConfig:
    utilization = SimConfig().gpu_memory_utilization * placement.memory_share
    return SimConfig(
        model=placement.model,
        gpu=gpu,
        trace="sharegpt",
        rate=placement.rate,
        num_requests=num_requests,
        seed=seed + index,
        gpu_memory_utilization=utilization,
        preemption="recompute",  # swaps are not charged on the shared GPU
    ).validate()


def deployment(
    config: SimConfig, chains: StepChains, trace: Trace | None = None
) -> tuple[LLMDeployment, int]:
    """A fresh deployment of ``config`` (and its KV blocks): a new scheduler and recorder."""
    parts = replica_parts(config, trace)
    core = EngineCore(
        parts.schedulers[0], Recorder(len(parts.trace)), intake_check=context_check(parts.model)
    )
    return LLMDeployment(config.model, core, parts.trace, chains), parts.capacity.num_blocks


def colocate(
    configs: list[SimConfig],
    chains: dict[str, StepChains],
    policy: str,
    limits: SMLimits,
    settings: DispatchSettings = DispatchSettings(),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every LLM together on the GPU, then each alone. Returns a table of one row per LLM and
    placement ("shared", "alone": METRICS, and on shared rows each SLOWDOWNS metric over its
    alone value) and the shared run's steps (kvsim.gpushare.llm.STEP_COLUMNS)."""
    shared = [deployment(c, chains[c.model]) for c in configs]
    steps = simulate_llms([d for d, _ in shared], policy, limits, settings)
    rows = []
    for config, (together, blocks) in zip(configs, shared):
        alone, _ = deployment(config, chains[config.model], together.trace)
        simulate_llms([alone], policy, limits, settings)
        by_placement = {
            placement: summarize(d.core.recorder, blocks)
            for placement, d in (("shared", together), ("alone", alone))
        }
        for placement, summary in by_placement.items():
            row = {"model": config.model, "placement": placement, **{m: summary[m] for m in METRICS}}
            for metric in SLOWDOWNS:
                row[f"{metric}_slowdown"] = (
                    summary[metric] / by_placement["alone"][metric] if placement == "shared" else float("nan")
                )
            rows.append(row)
    return pd.DataFrame(rows), steps


def placements_of(models: list[str], rates: list[float], shares: list[float]) -> list[LLMPlacement]:
    if not len(models) == len(rates) == len(shares):
        raise KvsimError(
            f"--models, --rates and --memory-shares need one value per model (got {len(models)}, "
            f"{len(rates)} and {len(shares)})"
        )
    return [LLMPlacement(m, r, s) for m, r, s in zip(models, rates, shares)]


def run_colocation(
    placements: list[LLMPlacement],
    policy: str,
    gpu: str,
    profiles: Path | None,
    num_requests: int,
    seed: int,
    settings: DispatchSettings,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`colocate` from the command line's values, every input checked (one line) first."""
    if gpu not in SM_LIMITS:
        raise KvsimError(f"no SM limits for GPU {gpu!r} (GPUs with them: {', '.join(SM_LIMITS)})")
    check_placements(placements, num_requests)
    check_settings(settings)
    if policy not in POLICIES or policy in PER_MODEL_PARTITIONS:
        usable = [p for p in POLICIES if p not in PER_MODEL_PARTITIONS]
        raise KvsimError(f"--policy must be one of {', '.join(usable)} for LLM deployments (got {policy!r})")
    configs = [placement_config(p, i, gpu, num_requests, seed) for i, p in enumerate(placements)]
    folder = profiles or SHIPPED_PROFILES
    chains = {p.model: load_step_chains(folder, p.model, gpu, SM_LIMITS[gpu]) for p in placements}
    return colocate(configs, chains, policy, SM_LIMITS[gpu], settings)
