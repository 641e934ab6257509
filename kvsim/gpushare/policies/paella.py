"""Paella's software dispatcher: it sees every job's next kernel and decides which goes next.

Jobs never go to the GPU whole. The dispatcher holds every admitted job; a job is *ready*
when its previous kernel has finished (its next kernel may start). It asks its *order* for a
ready job and issues that job's next kernel, after ``dispatch_overhead_s`` spent deciding
and launching, when the kernel would start whole at once (every block it would get on an
empty GPU fits in the room free now, whatever else waits), or when fewer than
``outstanding_limit`` issued kernels wait for room (kernels committed beyond full occupancy,
so that the SMs that free are taken without a round trip to the dispatcher; Paella's
``--extra_kernels``, 2 by default). Otherwise the dispatcher waits for room: it never passes
over the order's choice for a kernel that fits, as Paella's loop stops at its queue's top. A
kernel therefore never waits in a hardware queue behind another job's blocked kernel, and the
order, not arrival, decides who gets the SMs that free.

Orders:

* **job-by-job FIFO**: the oldest job with kernels left is the only candidate; the next job's
  kernels start only once the last kernel of the one before has been dispatched.
* **kernel-by-kernel FIFO**: the oldest ready job's next kernel.
* **SRPT**: the ready job with the least estimated remaining work. The estimate of each
  model's k-th kernel starts at its profiled duration and is learned online: each time such a
  kernel finishes, estimate = (1 - alpha) x estimate + alpha x its observed run time (from its
  first block placed to its last block done, so slowed by contention as the GPU slows it).
  **Fairness** by deficit counters, as Paella's JobQueue keeps them: a model has a counter
  while it has a ready job. Every dispatch credits each such model 1/(their number) and
  charges the chosen job's model 1; a model whose last ready job is dispatched loses its
  counter (it starts again from 0 when it next has a ready job), so a counter measures how
  long a model has been passed over while it could run, not how rarely it has jobs. When a
  model's counter has reached ``fairness_threshold``, the one with the largest counter goes
  next (its job with the least remaining work). An infinite threshold is pure SRPT.
"""

from __future__ import annotations

import bisect
import math

import numpy as np
import simpy

from kvsim.gpushare.gpu import SimulatedGPU
from kvsim.gpushare.job import Job, KernelRun
from kvsim.gpushare.policies.base import DispatchPolicy, Workload


def age(job: Job) -> tuple[float, int]:
    """The order of arrival (ties by id): how the dispatcher keeps its jobs and breaks ties."""
    return job.arrival, job.id


class Order:
    """Which job's next kernel goes next, from ``active``: the admitted jobs with kernels left
    to launch, oldest first (a job is ready when ``not job.in_flight``)."""

    def bind(self, workload: Workload) -> None:
        """Called once, before any job."""

    def choose(self, active: list[Job]) -> Job | None:
        raise NotImplementedError

    def dispatched(self, job: Job, active: list[Job]) -> None:
        """``job``'s next kernel is being launched, chosen from ``active`` (as :meth:`choose`
        saw it)."""

    def finished(self, run: KernelRun) -> None:
        """``run`` finished (its times are set)."""


class JobFifo(Order):
    def choose(self, active: list[Job]) -> Job | None:
        return active[0] if active and not active[0].in_flight else None


class KernelFifo(Order):
    def choose(self, active: list[Job]) -> Job | None:
        return next((job for job in active if not job.in_flight), None)


class ShortestRemaining(Order):
    def __init__(self, alpha: float, fairness_threshold: float):
        self.alpha, self.threshold = alpha, fairness_threshold

    def bind(self, workload: Workload) -> None:
        self.estimates = [
            np.array([k.duration_s for k in workload.chains[m].kernels]) for m in workload.models
        ]
        self.remaining = [self._suffix(e) for e in self.estimates]  # remaining[m][k]: kernels k..end
        self.deficit = np.zeros(len(workload.models))

    @staticmethod
    def _suffix(estimates: np.ndarray) -> np.ndarray:
        return np.append(np.cumsum(estimates[::-1])[::-1], 0.0)

    def remaining_s(self, job: Job) -> float:
        return float(self.remaining[job.model_index][job.next_kernel])

    def choose(self, active: list[Job]) -> Job | None:
        ready = [job for job in active if not job.in_flight]
        if not ready:
            return None
        if math.isfinite(self.threshold):
            owed = {j.model_index for j in ready if self.deficit[j.model_index] >= self.threshold}
            if owed:
                first = max(sorted(owed), key=lambda m: self.deficit[m])
                ready = [j for j in ready if j.model_index == first]
        return min(ready, key=lambda j: (self.remaining_s(j), *age(j)))

    def dispatched(self, job: Job, active: list[Job]) -> None:
        waiting = np.zeros(len(self.deficit), dtype=bool)  # models with a ready job
        still = False  # whether the chosen model keeps a ready job after this one
        for other in active:
            if not other.in_flight:
                waiting[other.model_index] = True
                still = still or (other is not job and other.model_index == job.model_index)
        self.deficit[waiting] += 1.0 / waiting.sum()
        self.deficit[job.model_index] -= 1.0
        if not still:
            self.deficit[job.model_index] = 0.0

    def finished(self, run: KernelRun) -> None:
        model = run.job.model_index
        estimates = self.estimates[model]
        observed = run.finished - run.first_placed
        estimates[run.index] += self.alpha * (observed - estimates[run.index])
        self.remaining[model] = self._suffix(estimates)


class SoftwareDispatcher(DispatchPolicy):
    def __init__(self, order: Order, outstanding_limit: int, dispatch_overhead_s: float):
        self.order, self.limit, self.overhead = order, outstanding_limit, dispatch_overhead_s
        self.active: list[Job] = []

    def bind(self, env: simpy.Environment, gpu: SimulatedGPU, workload: Workload) -> None:
        super().bind(env, gpu, workload)
        self.order.bind(workload)
        self._wake = env.event()
        env.process(self._dispatch())

    def _dispatch(self):
        while True:
            while True:
                job = self.order.choose(self.active)
                if job is None or not self._may_issue(job):
                    break
                self.order.dispatched(job, self.active)
                run = job.launch_next()
                if job.all_launched:
                    self.active.remove(job)
                if self.overhead > 0:
                    yield self.env.timeout(self.overhead)
                self.gpu.issue(run)
            self._wake = self.env.event()
            yield self._wake

    def _may_issue(self, job: Job) -> bool:
        """Whether ``job``'s next kernel may go now: it would start whole at once (whatever
        else waits), or fewer than ``outstanding_limit`` issued kernels wait for room (or are
        still on their way to it, in their launch gap)."""
        shape = job.shapes[job.next_kernel]
        return self.gpu.starts_whole(shape.need, shape.blocks) or self.gpu.outstanding < self.limit

    def _poke(self) -> None:
        if not self._wake.triggered:
            self._wake.succeed()

    def job_admitted(self, job: Job) -> None:
        bisect.insort(self.active, job, key=age)
        self._poke()

    def kernel_placed(self, run: KernelRun) -> None:
        self._poke()

    def kernel_done(self, run: KernelRun) -> None:
        self.order.finished(run)
        self._poke()

    def room_freed(self) -> None:
        self._poke()
