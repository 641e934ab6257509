"""The GPU's own scheduling: CUDA streams mapped onto a few hardware queues, FIFO in each.

Each job is launched whole when it is admitted, every kernel of it into its stream at once,
as an application does that hands a request to a stream. The application has one thread that
launches: submitting a job takes its launch latency (kvsim.gpushare.kernels: measured as what a
whole-graph pass on an idle GPU takes beyond one queued behind another), one job after another,
so a burst of arrivals reaches the GPU spread out. A stream is mapped onto one of
``hardware_queues`` queues (stream number modulo the count, as CUDA assigns connections in
turn; ``CUDA_DEVICE_MAX_CONNECTIONS`` sets the count). A queue hands its head kernel to the
GPU once every earlier kernel of the head's stream has finished, and the next kernel becomes
the head only when every block of the current head is placed. A head that waits for its own
stream so blocks every kernel behind it in the queue, whoever's: the false dependencies that
cause head-of-line blocking. With one stream for all jobs (``single_stream``) every kernel
waits for the one before it, whatever its job.
"""

from __future__ import annotations

from collections import Counter, deque

import simpy

from kvsim.gpushare.gpu import SimulatedGPU
from kvsim.gpushare.job import Job, KernelRun
from kvsim.gpushare.policies.base import DispatchPolicy, Workload
from kvsim.gpushare.serial import OneAtATime


class HardwareQueues(DispatchPolicy):
    def __init__(self, hardware_queues: int, single_stream: bool = False, partition: int | None = None):
        self.queues: list[deque[KernelRun]] = [deque() for _ in range(hardware_queues)]
        self.single_stream, self.partition = single_stream, partition
        self.unfinished: Counter[int] = Counter()  # issued, unfinished kernels per stream

    def bind(self, env: simpy.Environment, gpu: SimulatedGPU, workload: Workload) -> None:
        super().bind(env, gpu, workload)
        self.host = OneAtATime(env, lambda job: job.chain.launch_latency_s, self._enqueue)

    def job_admitted(self, job: Job) -> None:
        self.host.put(job)

    def _enqueue(self, job: Job) -> None:
        """Every kernel of ``job`` into its stream's hardware queue."""
        stream = 0 if self.single_stream else job.id
        queue = self.queues[stream % len(self.queues)]
        while not job.all_launched:
            run = job.launch_next(self.partition)
            run.stream = stream
            queue.append(run)
        self._advance(queue)

    def _queue_of(self, run: KernelRun) -> deque[KernelRun]:
        return self.queues[run.stream % len(self.queues)]

    def _advance(self, queue: deque[KernelRun]) -> None:
        """Hands the queue's head to the GPU if nothing earlier in its stream is unfinished."""
        if queue and not queue[0].issued and self.unfinished[queue[0].stream] == 0:
            self.unfinished[queue[0].stream] += 1
            self.gpu.issue(queue[0])

    def kernel_placed(self, run: KernelRun) -> None:
        queue = self._queue_of(run)
        queue.popleft()  # the head: only heads are issued
        self._advance(queue)

    def kernel_done(self, run: KernelRun) -> None:
        self.unfinished[run.stream] -= 1
        if not self.unfinished[run.stream]:
            del self.unfinished[run.stream]
        self._advance(self._queue_of(run))
