"""The serving cluster as SimPy processes: arrivals, a router, and one engine loop per replica.

An engine loop asks its scheduler for a batch, asks the cost model how long the batch
takes, lets that time pass, and commits the step. A decode batch that nothing can change
(no sequence finishes, none lacks a block, no request is waiting to be admitted) is charged
as a run of steps in one event; an arrival during the run cuts it at the next step boundary,
exactly where a real engine would first see the new request.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import simpy

from kvsim.calibration.cost_model import CostModel
from kvsim.policies.kv_manager import CacheUsage
from kvsim.policies.request import Request
from kvsim.policies.scheduler import DECODE, Scheduler, StepPlan
from kvsim.sim.cluster import Router
from kvsim.sim.metrics import Recorder
from kvsim.sim.requests import RequestFactory
from kvsim.workloads.trace import Trace

MAX_STEPS_PER_EVENT = 1024  # bounds the size of one event's cost vector


class Replica:
    """One model instance: a scheduler, a block manager behind it, and a cost model."""

    def __init__(self, env: simpy.Environment, index: int, scheduler: Scheduler,
                 cost_model: CostModel, recorder: Recorder) -> None:
        self.env, self.index = env, index
        self.scheduler, self.cost_model, self.recorder = scheduler, cost_model, recorder
        self._arrival = env.event()
        self._run_end_usage: CacheUsage | None = None
        scheduler.on_run_end = self._at_run_end
        # The GPU's host link: swaps queue for it, one transfer at a time.
        self.pcie = simpy.Resource(env, capacity=1)
        env.process(self._loop())

    @property
    def load(self) -> int:
        return len(self.scheduler.waiting) + len(self.scheduler.running)

    def submit(self, request: Request) -> None:
        self.scheduler.add_request(request)
        if not self._arrival.triggered:
            self._arrival.succeed()

    def _loop(self):
        env, scheduler = self.env, self.scheduler
        while True:
            if not scheduler.has_work():
                yield self._next_arrival()
                continue
            plan = scheduler.schedule()
            if plan is None:
                raise RuntimeError("requests wait but nothing can be scheduled; "
                                   "the policy admitted a request it can never run")
            start = env.now
            at_start = scheduler.kv_usage(plan)
            durations = self._durations(plan)
            if plan.swap_in_blocks or plan.swap_out_blocks:
                durations[0] -= yield from self._transfer(plan)
            if len(durations) == 1 or scheduler.waiting:
                # Waiting requests are blocked behind the queue's head until something
                # finishes, so arrivals cannot change this run of steps.
                steps = len(durations)
                yield env.timeout(float(durations.sum()))
            else:
                steps = yield from self._run_until_arrival(start, np.cumsum(durations))
            finished = scheduler.complete(plan, steps)
            self.recorder.record_step(self.index, scheduler, plan, start, env.now, steps,
                                      kv_slots=self._mean_usage(at_start))
            if finished:
                self.recorder.finished(finished, env.now)

    def _at_run_end(self, plan: StepPlan, steps: int) -> None:
        """The cache during a run's last step (only a run of several steps differs from its first)."""
        if steps > 1:
            self._run_end_usage = self.scheduler.kv_usage(plan, written_only=True)

    def _mean_usage(self, at_start: CacheUsage) -> tuple[float, float, float, float]:
        """Slots per waste category, averaged over the run: a decode run grows token states
        linearly, so the mean of its first and last step is its average."""
        last, self._run_end_usage = self._run_end_usage, None
        if last is None:
            return at_start.slots()
        return tuple((a + b) / 2 for a, b in zip(at_start.slots(), last.slots()))

    def _next_arrival(self) -> simpy.Event:
        if self._arrival.triggered:
            self._arrival = self.env.event()
        return self._arrival

    def _durations(self, plan: StepPlan) -> np.ndarray:
        steps = self.scheduler.headroom(plan, MAX_STEPS_PER_EVENT) if plan.kind == DECODE else 1
        return self.cost_model.plan_durations(plan, steps)

    def _transfer(self, plan: StepPlan):
        """Move the step's swapped blocks over the PCIe link before it computes (vLLM v0
        waits for its swaps); return the seconds spent, already part of the step's price."""
        cost = self.cost_model
        seconds = cost.swap_time(plan.swap_in_blocks) + cost.swap_time(plan.swap_out_blocks)
        with self.pcie.request() as link:
            yield link
            yield self.env.timeout(seconds)
        return seconds

    def _run_until_arrival(self, start: float, ends: np.ndarray):
        """Run the steps; if a request arrives meanwhile, stop at the end of the current step."""
        arrival = self._next_arrival()
        yield self.env.timeout(float(ends[-1])) | arrival
        if not arrival.triggered or self.env.now >= start + ends[-1]:
            return len(ends)
        steps = int(np.searchsorted(ends, self.env.now - start, side="left")) + 1
        yield self.env.timeout(max(0.0, start + float(ends[steps - 1]) - self.env.now))
        return steps


def simulate(trace: Trace, schedulers: list[Scheduler], cost_model: CostModel, router: Router,
             intake_check: Callable[[Request], str] = lambda r: "",
             progress: Callable[[int], None] | None = None) -> Recorder:
    """Run ``trace`` through a cluster of replicas until every request completed or was rejected."""
    env = simpy.Environment()
    recorder = Recorder(len(trace))
    replicas = [Replica(env, i, s, cost_model, recorder) for i, s in enumerate(schedulers)]

    make_request = RequestFactory(trace)

    def arrivals():
        times = trace.arrival_time
        for rid in range(len(trace)):
            delay = times[rid] - env.now
            if delay > 0:
                yield env.timeout(float(delay))
            request = make_request(rid)
            recorder.arrive(request, env.now)
            replica = router.choose(replicas)
            reason = intake_check(request) or replica.scheduler.rejection_reason(request)
            if reason:
                recorder.reject(request, reason)
            else:
                replica.submit(request)
            if progress is not None:
                progress(rid + 1)

    env.process(arrivals())
    env.run()
    for scheduler in schedulers:
        recorder.counters.update(scheduler.counters)
    missing = int((recorder.status == "pending").sum())
    if missing:
        raise RuntimeError(f"{missing} requests neither completed nor were rejected")
    return recorder
