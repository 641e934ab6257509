"""One simulation run from a SimConfig: resolve model, GPU, cache size, workload and cost model,
simulate, summarise, and write the files that let anyone repeat and analyse it."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kvsim import __version__
from kvsim.config import SimConfig
from kvsim.cost import select_cost_model
from kvsim.cost.cost_model import CostModel
from kvsim.engine.metrics import Recorder, summarize
from kvsim.errors import KvsimError
from kvsim.hardware import GiB, GPUSpec, load_gpu
from kvsim.models import ModelSpec, load_model
from kvsim.policies.beam import BeamModel
from kvsim.policies.registry import PolicyContext, get_policy
from kvsim.policies.request import Request
from kvsim.sim.capacity import KVCapacity, size_kv_cache
from kvsim.sim.cluster import ROUTERS
from kvsim.sim.engine import simulate
from kvsim.workloads import build_trace, clip_to_context
from kvsim.workloads.chatbot import build_chatbot
from kvsim.workloads.prefixes import add_shared_prefixes
from kvsim.workloads.sampling import add_sampling
from kvsim.workloads.trace import Trace


@dataclass
class RunResult:
    config: SimConfig
    model: ModelSpec
    gpu: GPUSpec
    capacity: KVCapacity
    cost_model: CostModel
    trace: Trace
    recorder: Recorder
    summary: dict
    policy_context: PolicyContext  # builds a fresh scheduler identical to the simulated ones

    def summary_document(self) -> dict:
        return {
            "kvsim_version": __version__,
            "model": self.model.name,
            "gpu": self.gpu.name,
            "policy": self.config.policy,
            "cost_model": self.cost_model.describe(),
            "kv_capacity": self.capacity.to_dict(),
            "workload": self.trace.stats(),
            "metrics": self.summary,
        }

    def write(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise KvsimError(f"cannot create output directory {out}: {err}") from None
        write_csv(out / "requests.csv", self.recorder.request_columns())
        write_csv(out / "iterations.csv", self.recorder.step_columns())
        (out / "summary.json").write_text(
            json.dumps(finite_or_null(self.summary_document()), indent=2, allow_nan=False) + "\n"
        )
        (out / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        return out


def write_csv(path: Path, columns: dict[str, np.ndarray]) -> None:
    """``columns`` as pandas' ``DataFrame(columns).to_csv(path, index=False)`` writes them, byte
    for byte, without pandas (importing it takes longer than simulating a small run): the same
    csv dialect, NaN as an empty cell, a float as pandas spells it (numpy's ``astype(str)``: the
    shortest digits that read back to it, which the csv module's ``repr`` gives at half the cost)."""
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(zip(*map(_csv_cells, columns.values())))


def _csv_cells(values: np.ndarray) -> list:
    if values.dtype.kind != "f":
        return values.tolist()
    return [value if value == value else "" for value in values.tolist()]  # NaN != NaN


def finite_or_null(value):
    """``value`` with each NaN or infinity (a metric with nothing to measure) as None: JSON has
    no NaN, and strict parsers refuse the bare ``NaN`` that json.dumps writes by default."""
    if isinstance(value, dict):
        return {key: finite_or_null(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def prepare_trace(config: SimConfig, model: ModelSpec) -> Trace:
    if config.trace == "chatbot":
        if config.rate is None or config.request_count is None:
            raise KvsimError("--trace chatbot needs --rate and --num-requests")
        trace = build_chatbot(config.request_count, config.rate, config.seed)
    else:
        trace = build_trace(
            config.trace,
            num_requests=config.request_count,
            duration=config.duration,
            rate=config.rate,
            arrival=config.arrival,
            burstiness_cv=config.burstiness_cv,
            seed=config.seed,
            tokenizer=config.tokenizer,
        )
    trace = add_shared_prefixes(
        trace, config.prefix_len, config.num_prefixes, config.prefix_popularity, config.seed
    )
    if config.over_length == "clip":
        trace = clip_to_context(trace, model.max_model_len)
    return add_sampling(trace, config.n, config.beam_width, config.independent_sample_lengths, config.seed)


def context_check(model: ModelSpec) -> Callable[[Request], str]:
    """Intake rule shared by simulator and executor: a request must fit the model's context."""

    def check(request: Request) -> str:
        total = request.prompt_len + request.output_len
        if total > model.max_model_len:
            return f"prompt + output = {total} tokens exceeds {model.name}'s context of {model.max_model_len}"
        return ""

    return check


#: Builds the cost model of a run from its settings, model and GPU (``select_cost_model`` by
#: default; ``kvsim.simulate`` passes one's own).
CostModelFactory = Callable[[SimConfig, ModelSpec, GPUSpec], CostModel]


@dataclass
class ReplicaParts:
    """What a run's replicas are built from, every setting checked: the model, the GPU, the
    KV cache each replica's share of the GPU holds, the workload, and one scheduler per
    replica (``context`` builds more like them)."""

    model: ModelSpec
    gpu: GPUSpec
    capacity: KVCapacity
    trace: Trace
    context: PolicyContext
    schedulers: list


def replica_parts(config: SimConfig, trace: Trace | None = None) -> ReplicaParts:
    """:func:`run`'s replicas before anything is priced (``kvsim.experiments.gpushare_llm``
    prices their steps on a shared GPU instead of a cost model)."""
    config.validate()
    model = load_model(config.model, config.dtype)
    gpu = load_gpu(config.gpu)
    policy = get_policy(config.policy)
    if config.router not in ROUTERS:
        raise KvsimError(f"unknown router {config.router!r} (available: {', '.join(ROUTERS)})")
    batched_tokens = config.batched_tokens_for(model.max_model_len, gpu.memory_bytes, gpu.name)
    problem = model.tensor_parallel_problem(config.tensor_parallel)
    if problem:
        raise KvsimError(problem)
    # Every GPU of a replica holds one rank's shard: the cache is sized on one of them.
    capacity = size_kv_cache(
        model.shard(config.tensor_parallel),
        gpu,
        config.block_size,
        config.gpu_memory_utilization,
        batched_tokens,
        config.max_num_seqs,
    )
    if trace is None:
        trace = prepare_trace(config, model)
    width = max(config.n, config.beam_width)
    if width > capacity.num_blocks:
        raise KvsimError(
            f"a group of {width} sequences needs at least {width} KV blocks; "
            f"the cache has {capacity.num_blocks}"
        )
    context = PolicyContext(
        capacity.num_blocks,
        config.block_size,
        config.max_num_seqs,
        batched_tokens,
        model.max_model_len,
        config.watermark,
        ft_batch_size=config.ft_batch_size,
        preemption=config.preemption,
        swap_blocks=int(config.swap_space * GiB) // capacity.block_bytes,
        # Without token content nothing can be found again: the plain allocator, same schedule.
        prefix_caching=config.prefix_caching_on and trace.has_token_content,
        shared_prefix=config.prefix_len > 0,
        beam=BeamModel(config.beam_stay, config.beam_skew, config.seed),
        scheduler=config.step_scheduler,
        long_prefill_token_threshold=config.long_prefill_token_threshold,
        max_num_partial_prefills=config.max_num_partial_prefills,
    )
    schedulers = [policy.build(context) for _ in range(config.num_replicas)]
    if schedulers[0].preemption_mode != config.preemption:
        raise KvsimError(
            f"policy {config.policy} does not support --preemption {config.preemption} "
            f"(swapping needs block tables: use paged)"
        )
    return ReplicaParts(model, gpu, capacity, trace, context, schedulers)


def run(
    config: SimConfig,
    progress: Callable[[int, int], None] | None = None,
    trace: Trace | None = None,
    cost_model_for: CostModelFactory = select_cost_model,
) -> RunResult:
    """Simulate ``config``; pass ``trace`` to reuse one workload across policies.
    ``progress(arrived, total)`` is called as requests arrive."""
    parts = replica_parts(config, trace)
    model, gpu, capacity, trace, context = parts.model, parts.gpu, parts.capacity, parts.trace, parts.context
    schedulers = parts.schedulers
    cost_model = cost_model_for(config, model, gpu)
    total = len(trace)
    recorder = simulate(
        trace,
        schedulers,
        cost_model,
        ROUTERS[config.router](),
        intake_check=context_check(model),
        progress=None if progress is None else lambda done: progress(done, total),
    )
    summary = summarize(recorder, capacity.num_blocks, config.num_replicas)
    summary["num_replicas"] = config.num_replicas
    summary["swapped_bytes"] = (summary["swap_out_blocks"] + summary["swap_in_blocks"]) * capacity.block_bytes
    return RunResult(config, model, gpu, capacity, cost_model, trace, recorder, summary, context)
