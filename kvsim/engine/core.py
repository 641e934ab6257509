"""One replica's engine, without a clock: the step protocol, written once.

The SimPy replica (``kvsim.sim.engine``) and the real GPU executor (``kvsim.gpu.executor``)
are clocks around this object. Each asks it to take in arrivals, to begin a step, and to
end the step once its clock has let the step's time pass; neither touches the scheduler's
queues or the recorder itself. So what the two sides schedule and record cannot drift
apart, and ``simcli validate`` compares one engine priced two ways.

A step's protocol:

1. ``begin_step(max_steps)``: the scheduler plans the batch and reserves its KV room; the
   step says how many identical steps may run before the scheduler must decide again
   (``Scheduler.headroom``; a real executor asks for 1) and whether an arrival during the
   run could change it.
2. ``observe_cache(step)``: the cache by use as the step runs (instrumentation, so the
   real executor stops its clock around it).
3. ``end_step(step, steps)``: the scheduler advances the sequences; for a run of several
   steps the cache is read again at the run's last step, before the finished sequences
   free their blocks; then the finished requests retire.
4. ``record(step, start, end)``: the step is written down with the times the clock gave it
   (a real clock's step time includes ``end_step``'s bookkeeping, so it records after).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from kvsim.engine.metrics import KV_SLOT_COLUMNS, Recorder
from kvsim.policies.kv_manager import CacheUsage
from kvsim.policies.request import Request
from kvsim.policies.scheduler import Scheduler, StepPlan

#: ``check(request) -> reason``: why a request can never be served here ('' if it can), for
#: limits outside the KV policy (the model's context length).
IntakeCheck = Callable[[Request], str]


@dataclass
class Step:
    """A planned step and what a clock needs to run it."""

    plan: StepPlan
    #: Identical steps of ``plan`` that may run before the scheduler must decide again.
    max_steps: int
    #: Can a request that arrives during the run change it? Not while others wait (they are
    #: blocked at the queue's head until something finishes, and it would queue behind
    #: them), nor while nothing could be admitted (``Scheduler.admissions_open``).
    arrival_can_cut: bool
    usage: CacheUsage | None = None  # the cache by use as the step runs (``observe_cache``)
    # Set by ``end_step``: the steps taken, the cache by use over them, the blocks held (in
    # use, and as the block tables count them) during the last of them, the requests finished.
    steps: int = 0
    slots: tuple[float, ...] = ()
    blocks_used: int = 0
    blocks_logical: int = 0
    finished: list[Request] = field(default_factory=list)


class EngineCore:
    """Scheduler and recorder of one replica, driven by a clock through the step protocol."""

    def __init__(
        self,
        scheduler: Scheduler,
        recorder: Recorder,
        replica: int = 0,
        intake_check: IntakeCheck = lambda request: "",
    ) -> None:
        self.scheduler, self.recorder = scheduler, recorder
        self.replica, self.intake_check = replica, intake_check

    @property
    def load(self) -> int:
        """Requests waiting or running: what a least-loaded router balances."""
        return len(self.scheduler.waiting) + len(self.scheduler.running)

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def intake(self, request: Request, now: float) -> bool:
        """Take in an arriving request, or reject it for good with the reason recorded.
        Returns whether it could join the batch before the step in progress ends its run:
        if not, a clock charging several steps at once need not cut the run for it."""
        self.recorder.arrive(request, now)
        reason = self.intake_check(request) or self.scheduler.rejection_reason(request)
        if reason:
            self.recorder.reject(request, reason)
            return False
        self.scheduler.add_request(request)
        return self.scheduler.could_admit(request)

    def begin_step(self, max_steps: int) -> Step:
        scheduler = self.scheduler
        plan = scheduler.schedule()
        if plan is None:
            raise RuntimeError(
                "requests wait but nothing can be scheduled; the policy admitted a request it can never run"
            )
        return Step(plan, scheduler.headroom(plan, max_steps), arrival_can_cut=scheduler.admissions_open())

    def observe_cache(self, step: Step) -> None:
        step.usage = self.scheduler.kv_usage(step.plan)

    def end_step(self, step: Step, steps: int) -> list[Request]:
        """Apply ``steps`` (<= ``step.max_steps``) executions of the step; return the requests
        that finished. Part of the step's work: a real clock is still running."""
        scheduler, plan = self.scheduler, step.plan
        scheduler.advance(plan, steps)
        step.steps, step.slots = steps, self._mean_slots(step, steps)
        # Read before the finished sequences free their blocks: what the step itself held.
        step.blocks_used, step.blocks_logical = (
            scheduler.kv.num_used_blocks(),
            scheduler.kv.num_logical_blocks(),
        )
        step.finished = scheduler.retire(plan)
        return step.finished

    def record(self, step: Step, start: float, end: float, comm_s: float = 0.0) -> None:
        """The ended step ran from ``start`` to ``end`` on the clock, ``comm_s`` of it in
        collectives between the replica's GPUs: write it down."""
        scheduler = self.scheduler
        self.recorder.record_step(
            self.replica,
            step.plan,
            start,
            end,
            step.steps,
            kv_slots=step.slots,
            kv_blocks_used=step.blocks_used,
            kv_blocks_logical=step.blocks_logical,
            num_waiting=len(scheduler.waiting),
            comm_s=comm_s,
        )
        if step.finished:
            self.recorder.finished(step.finished, end)

    def _mean_slots(self, step: Step, steps: int) -> tuple[float, ...]:
        """Slots per use over the run: a decode run grows token states linearly, so the mean
        of its first and last step is its average. NaN where the cache was not observed."""
        if step.usage is None:
            return (np.nan,) * len(KV_SLOT_COLUMNS)
        first = step.usage.slots()
        if steps == 1:
            return first
        last = self.scheduler.kv_usage(step.plan, written_only=True).slots()
        return tuple((a + b) / 2 for a, b in zip(first, last))

    def close(self) -> None:
        """The run is over: the scheduler's event counters join the record."""
        self.recorder.counters.add(self.scheduler.counters)
