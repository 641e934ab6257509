"""The host loop that replays a workload's jobs on a device in real time, kept free of torch.

One engine, two clocks: the jobs are the simulator's (the arrivals of
kvsim.gpushare.workloads.generate_jobs, as kvsim.gpushare.job.Job objects), and Paella's
dispatcher decides with the simulator's own Order objects (kvsim.gpushare.policies.paella),
built by the same registry and called as SoftwareDispatcher calls them. What differs is the
clock, the host's, and the GPU: a real one (kvsim.gpushare.cuda) or, in the tests, a fake one
with a fake clock. The loop reaches either only through :class:`Device`.

A job is its model's *steps* in order (on the real GPU, the CUDA graphs of the model's
top-level blocks). The policies, by the simulator's names:

* ``cuda-multi-stream``: a job is launched whole (every step, in order) once admitted, on
  stream ``job id mod streams``, and the GPU's hardware queues decide what runs.
* ``cuda-single-stream``: the same on one stream.
* ``paella-*``: the software dispatcher. A job is *ready* when none of its steps is in
  flight; at each decision the order picks the ready job whose next step goes, while fewer
  than ``inflight_limit`` steps are in flight. Each step in flight has a stream (a *lane*) of
  its own, so two never share a hardware queue. The simulated dispatcher also sees the SMs'
  free room (whether a kernel would start whole); the host cannot, and the limit on steps in
  flight stands in for it.

Admission is the simulation's: a model holds at most its cap of jobs outstanding, and a job
arriving beyond it is admitted when one of its model's jobs finishes. Arrivals are released
in real time: a job is admitted once the clock has reached its arrival, never before. Work on
one stream finishes in launch order, so the loop only asks whether each stream's oldest
launch has finished.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from kvsim.errors import KvsimError
from kvsim.gpushare.job import Job, KernelRun, KernelShape, jobs_of
from kvsim.gpushare.kernels import RESOURCES, Kernel, KernelChain
from kvsim.gpushare.policies.base import DispatchSettings, Workload
from kvsim.gpushare.policies.paella import Order, SoftwareDispatcher, age
from kvsim.gpushare.policies.registry import build_policy
from kvsim.gpushare.workloads import JobStream, Mix


class Device(Protocol):
    """A GPU and the host's clock, as the loop uses them. Times are seconds on the run's clock,
    0 at :meth:`start`."""

    def start(self) -> None:
        """Sets the run's clock to 0; the GPU is idle."""

    def now(self) -> float:
        """The host's time."""

    def wait(self, until: float, heads: Sequence[Any]) -> None:
        """Returns once the clock reaches ``until`` or one of the launches ``heads`` has finished."""

    def launch(self, job: Job, first: int, stop: int, lane: int) -> Any:
        """Enqueues ``job``'s steps ``first`` to ``stop - 1`` on stream ``lane``; returns a handle."""

    def done(self, launch: Any) -> bool:
        """Whether every step of ``launch`` has finished; never blocks."""

    def span(self, launch: Any) -> tuple[float, float]:
        """When a finished launch's first step started and its last step finished, on the GPU."""

    def release(self, job: Job) -> None:
        """``job`` has finished: what it held on the device may serve another job."""


def step_chain(model: str, names: Sequence[str], durations_s: Sequence[float]) -> KernelChain:
    """A model's steps as a chain for the dispatcher's orders, which read only each step's
    duration (SRPT's first estimates). The real GPU places the steps' blocks itself, so no step
    is given a launch footprint (one block that takes nothing of an SM)."""
    return KernelChain(model, tuple(Kernel(n, d, 1, 0, 0, 0) for n, d in zip(names, durations_s)))


def step_jobs(mix: Mix, stream: JobStream, chains: dict[str, KernelChain]) -> list[Job]:
    """The stream's jobs, each a chain of its model's steps (``chains``, from :func:`step_chain`)."""
    none = np.zeros(len(RESOURCES), dtype=np.int64)
    shapes = [tuple(KernelShape(none, 1, k.duration_s) for k in chains[m].kernels) for m in mix.models]
    return jobs_of([chains[m] for m in mix.models], stream.arrivals, stream.model_index, shapes)


@dataclass
class Launched:
    """A launch the loop waits for: ``run`` is the dispatcher's step (None for a whole job)."""

    handle: Any
    job: Job
    run: KernelRun | None
    last: bool  # it ends the job


class Mode:
    """How admitted jobs reach the device; ``lanes`` is how many streams it launches on."""

    lanes: int

    def admitted(self, job: Job, loop: Replay) -> None:
        raise NotImplementedError

    def launch_ready(self, loop: Replay) -> None:
        """Launches what may go now."""

    def step_done(self, run: KernelRun) -> None:
        """A step the mode launched finished (its times are set)."""


class WholeJobs(Mode):
    """The hardware baselines: every step of a job launched at once, on stream ``id mod lanes``."""

    def __init__(self, lanes: int):
        self.lanes = lanes

    def admitted(self, job: Job, loop: Replay) -> None:
        loop.launch(job, 0, job.num_kernels, job.id % self.lanes, None)


class Dispatcher(Mode):
    """Paella's dispatcher with the simulator's ``order``, one step at a time, at most ``lanes``
    steps in flight. ``active`` is SoftwareDispatcher's: the admitted jobs with steps left to
    launch, oldest first."""

    def __init__(self, order: Order, workload: Workload, inflight_limit: int):
        self.order, self.lanes = order, inflight_limit
        self.order.bind(workload)
        self.active: list[Job] = []

    def admitted(self, job: Job, loop: Replay) -> None:
        bisect.insort(self.active, job, key=age)

    def launch_ready(self, loop: Replay) -> None:
        for lane in loop.free_lanes():
            job = self.order.choose(self.active)
            if job is None:
                return
            self.order.dispatched(job, self.active)
            run = job.launch_next()
            if job.all_launched:
                self.active.remove(job)
            loop.launch(job, run.index, run.index + 1, lane, run)

    def step_done(self, run: KernelRun) -> None:
        run.job.in_flight = False
        self.order.finished(run)


HARDWARE = ("cuda-multi-stream", "cuda-single-stream")


def real_order(policy: str, settings: DispatchSettings) -> Order | None:
    """The dispatcher's order for the simulator's ``policy``, from the simulator's registry, so
    that the real loop and the simulation decide with the same object; None for a hardware
    baseline. A policy with no real counterpart (MPS needs its control daemon) is refused."""
    if policy in HARDWARE:
        return None
    built = build_policy(policy, settings)
    if not isinstance(built, SoftwareDispatcher):
        raise KvsimError(
            f"policy {policy!r} has no real-GPU counterpart (real: {', '.join(HARDWARE)} and paella-*)"
        )
    return built.order


def build_mode(
    policy: str, settings: DispatchSettings, workload: Workload, streams: int, inflight_limit: int
) -> Mode:
    """The loop's mode for the simulator's ``policy``: ``streams`` streams for the jobs of
    cuda-multi-stream, ``inflight_limit`` steps in flight for the dispatcher."""
    order = real_order(policy, settings)
    if order is None:
        return WholeJobs(streams if policy == "cuda-multi-stream" else 1)
    return Dispatcher(order, workload, inflight_limit)


@dataclass
class ReplayResult:
    """``jobs``: one row per job: the simulation's columns, and ``released`` (when the loop saw
    the arrival: its lateness is the host's), ``launched`` (its first step) and ``started``
    (on the GPU). ``launches``: how many launches the loop made; ``busy_s``: the host time it spent outside
    waiting (finding finished launches, admitting, deciding, launching), which bounds the
    rate a single host thread can serve at."""

    jobs: pd.DataFrame
    launches: int
    busy_s: float


class Replay:
    """One run of ``jobs`` (arrival order) under ``mode`` on ``device``; ``caps``: the most
    outstanding jobs per model (the mix's)."""

    def __init__(self, jobs: list[Job], caps: Sequence[int], device: Device, mode: Mode):
        self.jobs, self.caps, self.device, self.mode = jobs, caps, device, mode
        self.lanes: list[deque[Launched]] = [deque() for _ in range(mode.lanes)]
        self.outstanding = [0] * len(caps)
        self.held: list[deque[Job]] = [deque() for _ in caps]
        n = len(jobs)
        self.released, self.admitted = np.full(n, np.nan), np.full(n, np.nan)
        self.launched = np.full(n, np.nan)
        self.started, self.finished = np.full(n, np.nan), np.full(n, np.nan)
        self.launches = 0

    def free_lanes(self) -> list[int]:
        return [i for i, lane in enumerate(self.lanes) if not lane]

    def launch(self, job: Job, first: int, stop: int, lane: int, run: KernelRun | None) -> None:
        if first == 0:
            self.launched[job.id] = self.device.now()
        handle = self.device.launch(job, first, stop, lane)
        self.lanes[lane].append(Launched(handle, job, run, stop == job.num_kernels))
        self.launches += 1

    def _admit(self, job: Job) -> None:
        self.admitted[job.id] = self.device.now()
        self.outstanding[job.model_index] += 1
        self.mode.admitted(job, self)

    def _finished(self, item: Launched) -> None:
        start, end = self.device.span(item.handle)
        job = item.job
        if item.run is not None:
            item.run.first_placed, item.run.finished = start, end
            self.mode.step_done(item.run)
        if np.isnan(self.started[job.id]):
            self.started[job.id] = start
        if item.last:
            self.finished[job.id] = end
            self.device.release(job)
            self.outstanding[job.model_index] -= 1
            if self.held[job.model_index]:
                self._admit(self.held[job.model_index].popleft())

    def run(self) -> ReplayResult:
        jobs, device = self.jobs, self.device
        arrived = done = 0
        busy_s = 0.0
        device.start()
        while done < len(jobs):
            begin = device.now()
            for lane in self.lanes:
                while lane and device.done(lane[0].handle):
                    item = lane.popleft()
                    done += item.last
                    self._finished(item)
            now = device.now()
            while arrived < len(jobs) and jobs[arrived].arrival <= now:
                job = jobs[arrived]
                arrived += 1
                self.released[job.id] = now
                if self.outstanding[job.model_index] < self.caps[job.model_index]:
                    self._admit(job)
                else:
                    self.held[job.model_index].append(job)
            self.mode.launch_ready(self)
            busy_s += device.now() - begin
            heads = [lane[0].handle for lane in self.lanes if lane]
            if done < len(jobs):
                if not heads and arrived == len(jobs):
                    raise RuntimeError("replay stalled: jobs left, none in flight and none to arrive")
                device.wait(jobs[arrived].arrival if arrived < len(jobs) else math.inf, heads)
        return ReplayResult(self._table(), self.launches, busy_s)

    def _table(self) -> pd.DataFrame:
        arrival = np.array([job.arrival for job in self.jobs])
        return pd.DataFrame(
            {
                "job": np.arange(len(self.jobs)),
                "model": [job.model for job in self.jobs],
                "arrival": arrival,
                "released": self.released,
                "admitted": self.admitted,
                "launched": self.launched,
                "started": self.started,
                "finished": self.finished,
                "latency": self.finished - arrival,
            }
        )
