"""The serving cluster as SimPy processes: arrivals, a router, and one engine loop per replica.

An engine loop asks its scheduler for a batch, asks the cost model how long the batch
takes, lets that time pass, and commits the step. A decode batch that nothing can change
(no sequence finishes, none lacks a block, no request is waiting to be admitted) is charged
as a run of steps in one event; an arrival during the run that could be admitted cuts it at
the next step boundary, exactly where a real engine would first see the new request. One
that could not (the batch is full, the cache has no room for it, others wait before it)
waits for the run's end, as it would in a real engine, without cutting it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import simpy

from kvsim.cost.cost_model import CostModel
from kvsim.engine.core import EngineCore, IntakeCheck
from kvsim.engine.metrics import Recorder
from kvsim.engine.requests import RequestFactory
from kvsim.policies.scheduler import Scheduler
from kvsim.sim.cluster import Router
from kvsim.workloads.trace import Trace

MAX_STEPS_PER_EVENT = 1024  # bounds the size of one event's cost vector


class Replica:
    """One model instance: an engine core on SimPy's clock, priced by a cost model."""

    def __init__(self, env: simpy.Environment, core: EngineCore, cost_model: CostModel) -> None:
        self.env, self.core, self.cost_model = env, core, cost_model
        self._arrival = env.event()
        # The GPU's host link: swaps queue for it, one transfer at a time.
        self.pcie = simpy.Resource(env, capacity=1)
        env.process(self._loop())

    @property
    def load(self) -> int:
        return self.core.load

    def submit(self, request, now: float) -> None:
        """Hand over an arrival; wake the engine loop if it idles, or cut its run if the
        request could join the batch before the run ends."""
        idle = not self.core.has_work()
        if (self.core.intake(request, now) or idle) and not self._arrival.triggered:
            self._arrival.succeed()

    def _loop(self):
        env, core = self.env, self.core
        while True:
            if not core.has_work():
                yield self._next_arrival()
                continue
            start = env.now
            step = core.begin_step(MAX_STEPS_PER_EVENT)
            core.observe_cache(step)
            plan = step.plan
            durations = self.cost_model.plan_durations(plan, step.max_steps, with_transfers=False)
            if plan.swap_in_blocks or plan.swap_out_blocks:  # a step that swaps is a run of one
                yield from self._transfer(plan)
            if len(durations) == 1 or not step.arrival_can_cut:
                steps = len(durations)
                yield env.timeout(float(durations.sum()))
            else:
                steps = yield from self._run_until_arrival(start, np.cumsum(durations))
            core.end_step(step, steps)
            core.record(step, start, env.now, comm_s=self.cost_model.communication_time(plan) * steps)

    def _next_arrival(self) -> simpy.Event:
        if self._arrival.triggered:
            self._arrival = self.env.event()
        return self._arrival

    def _transfer(self, plan):
        """Move the step's swapped blocks over the PCIe link before it computes (vLLM v0
        waits for its swaps); swaps of several replicas queue for the link."""
        with self.pcie.request() as link:
            yield link
            yield self.env.timeout(self.cost_model.transfer_time(plan))

    def _run_until_arrival(self, start: float, ends: np.ndarray):
        """Run the steps; if a request arrives meanwhile, stop at the end of the current step."""
        arrival = self._next_arrival()
        yield self.env.timeout(float(ends[-1])) | arrival
        if not arrival.triggered or self.env.now >= start + ends[-1]:
            return len(ends)
        steps = int(np.searchsorted(ends, self.env.now - start, side="left")) + 1
        yield self.env.timeout(max(0.0, start + float(ends[steps - 1]) - self.env.now))
        return steps


def simulate(
    trace: Trace,
    schedulers: list[Scheduler],
    cost_model: CostModel,
    router: Router,
    intake_check: IntakeCheck = lambda r: "",
    progress: Callable[[int], None] | None = None,
) -> Recorder:
    """Run ``trace`` through a cluster of replicas until every request completed or was rejected."""
    env = simpy.Environment()
    recorder = Recorder(len(trace))
    replicas = [
        Replica(env, EngineCore(s, recorder, i, intake_check), cost_model) for i, s in enumerate(schedulers)
    ]
    make_request = RequestFactory(trace)

    # Progress is reported about a thousand times a run: a bar redrawn per request would
    # cost more than simulating it.
    report_every = max(1, len(trace) // 1000)

    def arrivals():
        times = trace.arrival_time
        for rid in range(len(trace)):
            delay = times[rid] - env.now
            if delay > 0:
                yield env.timeout(float(delay))
            router.choose(replicas).submit(make_request(rid), env.now)
            if progress is not None and ((rid + 1) % report_every == 0 or rid + 1 == len(trace)):
                progress(rid + 1)

    env.process(arrivals())
    env.run()
    for replica in replicas:
        replica.core.close()
    missing = int((recorder.status == "pending").sum())
    if missing:
        raise RuntimeError(f"{missing} requests neither completed nor were rejected")
    return recorder
