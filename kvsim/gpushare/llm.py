"""LLMs sharing the simulated GPU: each served by kvsim's own engine core, each step a job.

Every LLM deployment is an engine core (kvsim.engine.core: its scheduler and KV cache manager,
sized to its share of the GPU's memory by the caller) driven through the step protocol as the
SimPy replica (kvsim.sim.engine) drives it, with one difference: a step's time is not a cost
model's price but how long the step's job takes on the shared GPU. The engine loop begins a
step, hands the GPU a job whose kernel chain is the step's (kvsim.gpushare.llm_chains picks it
by kind and size), and ends and records the step when the job's last kernel finishes; only
then does it plan the next one (closed loop: an engine has one step in flight, as a real one
waits for its step's sampled tokens). Requests arrive from each deployment's own trace.

What a dispatch policy sees: every measured step chain of every LLM is a "model" of the
policy's workload (named ``"MODEL KIND SIZE"``), so SRPT learns each step chain's kernel
lengths apart, and its deficit counters count per step chain, not per LLM. A step past the
measured range runs a stretched chain under the name of the largest measured one. MPS
partitions the SMs per such model, which would split one LLM's steps over partitions of their
own, so it is refused here. Under the hardware policies a step is launched whole (its chain's
launch latency, then every kernel into its stream), the next step of the same LLM on another
stream, as the policy gives every job one.

A mixed step (vLLM v1's chunked prefill: prompt chunks and decodes in one batch) runs the
prefill chain of all its tokens. Swaps between GPU and host memory are not charged; run the
engines with recompute preemption.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import simpy

from kvsim.engine.core import EngineCore
from kvsim.engine.metrics import STATUS_PENDING
from kvsim.engine.requests import RequestFactory
from kvsim.errors import KvsimError
from kvsim.gpushare.gpu import SimulatedGPU
from kvsim.gpushare.job import Job, KernelRun, KernelShape, shapes_of
from kvsim.gpushare.kernels import KernelChain
from kvsim.gpushare.llm_chains import StepChains
from kvsim.gpushare.policies.base import DispatchSettings, Workload
from kvsim.gpushare.policies.registry import build_policy
from kvsim.hardware import SMLimits
from kvsim.policies.scheduler import DECODE, StepPlan
from kvsim.workloads.trace import Trace

#: Policies that give each model of the workload SMs of its own: an LLM's steps are many models.
PER_MODEL_PARTITIONS = ("mps",)
STEP_COLUMNS = ("llm", "kind", "size", "chain", "start", "end", "chain_alone_s")


@dataclass
class LLMDeployment:
    """One LLM on the shared GPU: its engine core (scheduler, KV cache, recorder), the
    requests that arrive for it, and its measured step chains."""

    name: str
    core: EngineCore
    trace: Trace
    chains: StepChains


def step_size(plan: StepPlan) -> tuple[str, int]:
    """The measured kind and size a step is charged as (module docstring)."""
    if plan.kind is DECODE:
        return "decode", len(plan.seqs)
    return "prefill", int(plan.new_tokens.sum())


def simulate_llms(
    deployments: list[LLMDeployment],
    policy: str,
    limits: SMLimits,
    settings: DispatchSettings = DispatchSettings(),
) -> pd.DataFrame:
    """Run every deployment's trace to its end on one simulated GPU; each core's recorder
    holds its requests and steps. Returns one row per step (STEP_COLUMNS: the chain it ran
    and that chain's latency alone). Raises if a request neither completed nor was rejected."""
    if policy in PER_MODEL_PARTITIONS:
        raise KvsimError(f"{policy} partitions the SMs per kernel chain: not available for LLM deployments")
    env = simpy.Environment()
    variants = [chain for d in deployments for chain in d.chains.measured()]
    index = {chain.model: i for i, chain in enumerate(variants)}
    shapes: dict[int, tuple[KernelShape, ...]] = {}  # by id of the chain run (stretched ones too)
    chosen = build_policy(policy, settings)
    finished: dict[int, simpy.Event] = {}  # job id -> its engine's wait
    rows: list[tuple] = []
    next_id = 0

    def _shapes(chain: KernelChain) -> tuple[KernelShape, ...]:
        key = id(chain)  # chains live as long as their StepChains: ids stay theirs
        if key not in shapes:
            shapes[key] = shapes_of(chain, limits)
        return shapes[key]

    def kernel_done(run: KernelRun) -> None:
        run.job.in_flight = False
        chosen.kernel_done(run)
        if run.is_last:
            finished.pop(run.job.id).succeed()

    def engine(deployment: LLMDeployment, woken: list[simpy.Event]):
        nonlocal next_id
        core = deployment.core
        while True:
            if not core.has_work():
                woken[0] = env.event()
                yield woken[0]
                continue
            start = env.now
            step = core.begin_step(1)
            core.observe_cache(step)
            kind, size = step_size(step.plan)
            measured, chain = deployment.chains.for_step(kind, size)
            job = Job(next_id, chain, index[measured.model], _shapes(chain), start)
            next_id += 1
            job.admitted = start
            done = finished[job.id] = env.event()
            chosen.job_admitted(job)
            yield done
            core.end_step(step, 1)
            core.record(step, start, env.now)
            rows.append((deployment.name, kind, size, measured.model, start, env.now, chain.alone_s))

    def arrivals(deployment: LLMDeployment, woken: list[simpy.Event]):
        make_request = RequestFactory(deployment.trace)
        for rid, at in enumerate(deployment.trace.arrival_time):
            yield env.timeout(max(float(at) - env.now, 0.0))
            deployment.core.intake(make_request(rid), float(at))
            if not woken[0].triggered:
                woken[0].succeed()

    gpu = SimulatedGPU(env, limits, chosen.kernel_placed, kernel_done, chosen.room_freed)
    probabilities = tuple(1.0 / len(variants) for _ in variants)
    chosen.bind(env, gpu, Workload(tuple(index), {c.model: c for c in variants}, probabilities))
    for deployment in deployments:
        woken = [env.event()]  # the engine's wait for an arrival, replaced each time it idles
        env.process(engine(deployment, woken))
        env.process(arrivals(deployment, woken))
    env.run()
    for deployment in deployments:
        deployment.core.close()
        missing = int((deployment.core.recorder.status == STATUS_PENDING).sum())
        if missing:
            raise RuntimeError(f"{deployment.name}: {missing} requests neither completed nor were rejected")
    return pd.DataFrame(rows, columns=list(STEP_COLUMNS)).astype({"size": np.int64})
