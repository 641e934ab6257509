"""The simulated GPU: thread blocks placed on SMs as room frees, in the order kernels were issued.

What it models, and why that is enough for scheduling: an SM holds blocks of any kernels at
once while the sum of their threads, registers, shared memory and block count stays within
its limits (kvsim.gpushare.kernels gives a block's footprint). Kernels issued to the GPU wait
in issue order; whenever room frees (a kernel issued, blocks finished), each waiting kernel in
turn gets as many of its blocks placed as fit, spread breadth-first over the SMs (the same
number on each, as far as each holds them). A kernel that does not fill the GPU so leaves room for the next one, and a
kernel behind one that cannot fit where it needs to may still fit elsewhere.

**Stretch rule (waves of blocks).** Every block of a kernel runs for the same time: the
kernel's measured duration divided by the number of waves it ran in when measured alone (its
blocks over the slots the whole GPU offered it, rounded up; kvsim.gpushare.job.shapes_of).
Blocks placed together finish together; their slots free then. A kernel alone on the GPU
therefore takes exactly its measured duration; one that gets fewer slots runs in more waves
and takes proportionally longer. Not modelled: contention between co-running blocks for
memory bandwidth and caches (a block runs as fast beside others as alone), and the block
scheduler's own latency.

**Interference.** Blocks placed while other kernels hold a share u of the GPU's thread slots
run ``1 + interference * u`` times as long (the kernel's measured interference,
kvsim.gpushare.kernels); the share is taken when they are placed and holds until they finish.
Alone (u = 0) nothing changes.

**Launch gap.** Issued kernels pass the GPU's front end one at a time, each taking its launch
gap (kvsim.gpushare.kernels: measured per model as what a CUDA-graph pass queued behind another
takes beyond its kernels), and only then join the kernels waiting for room. Every policy issues
a job's kernel no earlier than the one before it finished, so a job alone takes its kernels'
durations plus a gap before each: the measured queued pass.

The GPU decides nothing about which kernel goes first: that is the issuing policy's
(kvsim.gpushare.policies), which only chooses when to call :meth:`SimulatedGPU.issue`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import simpy

from kvsim.gpushare.job import KernelRun
from kvsim.gpushare.kernels import sm_capacity
from kvsim.gpushare.serial import OneAtATime
from kvsim.hardware import SMLimits


class SimulatedGPU:
    """``on_placed(run)``: every block of ``run`` has been placed (the hardware has taken all of
    it). ``on_done(run)``: its last block finished. ``on_room()``: blocks finished and what
    the waiting kernels could take of their room has been placed. ``observer(now, used)``, if given,
    sees the SMs' used resources (RESOURCES x SMs) after every change (tests check the capacity with it)."""

    def __init__(
        self,
        env: simpy.Environment,
        limits: SMLimits,
        on_placed: Callable[[KernelRun], None],
        on_done: Callable[[KernelRun], None],
        on_room: Callable[[], None] = lambda: None,
        observer: Callable[[float, np.ndarray], None] | None = None,
    ):
        self.env, self.limits = env, limits
        self.capacity = sm_capacity(limits)
        self.thread_slots = int(self.capacity[0]) * limits.num_sms  # RESOURCES[0]: threads
        # Resource by SM (RESOURCES x SMs): the per-block arithmetic runs along contiguous rows.
        self.used = np.zeros((len(self.capacity), limits.num_sms), dtype=np.int64)
        self.on_placed, self.on_done, self.on_room, self.observer = on_placed, on_done, on_room, observer
        self.partitions: list[np.ndarray] = []  # boolean SM masks, indexed by KernelRun.partition
        self.waiting: list[KernelRun] = []  # issued, with blocks still to place, in issue order
        # Issued kernels reach the SMs one at a time, each after its launch gap.
        self.front_end = OneAtATime(env, lambda run: run.job.chain.launch_gap_s, self._arrive)
        self._placing = self._again = False

    def set_partitions(self, sms_per_partition: list[int]) -> None:
        """Splits the SMs into consecutive partitions of these sizes (spatial sharing, as MPS)."""
        edges = np.cumsum([0, *sms_per_partition])
        index = np.arange(self.limits.num_sms)
        self.partitions = [(index >= lo) & (index < hi) for lo, hi in zip(edges[:-1], edges[1:])]

    def issue(self, run: KernelRun) -> None:
        """``run`` is launched: after its launch gap its blocks are placed as room allows,
        after those of every kernel that reached the SMs before it."""
        run.issued = True
        self.front_end.put(run)

    @property
    def outstanding(self) -> int:
        """Issued kernels not yet wholly placed: waiting for room or still being launched."""
        return len(self.waiting) + len(self.front_end)

    def _arrive(self, run: KernelRun) -> None:
        self.waiting.append(run)
        self._place()

    def starts_whole(self, need: np.ndarray, blocks: int) -> bool:
        """Whether a kernel of ``blocks`` blocks of this footprint, issued now on the whole GPU,
        would at once get every slot an empty GPU gives it: all its blocks, or a full wave of
        a kernel larger than the GPU. Kernels already waiting do not count against it: after a
        placement pass none of them has room for a block, so what is free now goes to it."""
        free = self.capacity[:, None] - self.used
        slots_now = int((free // need[:, None]).min(axis=0).sum())
        slots_empty = self.limits.num_sms * int((self.capacity // need).min())
        return slots_now >= min(blocks, slots_empty)

    def _place(self) -> None:
        # Callbacks of a placement may issue more kernels; they are placed by the same pass.
        if self._placing:
            self._again = True
            return
        self._placing = True
        try:
            self._again = True
            while self._again:
                self._again = False
                free = self.capacity[:, None] - self.used
                most = free.max(axis=1).tolist()  # no SM has more of a resource than this
                for run in list(self.waiting):
                    if all(n <= m for n, m in zip(run.need_list, most)):
                        free = self._place_blocks(run, free)
        finally:
            self._placing = False

    def _place_blocks(self, run: KernelRun, free: np.ndarray) -> np.ndarray:
        """Places what fits of ``run`` in ``free`` (the SMs' free resources); returns what is
        left free."""
        fit = (free // run.need[:, None]).min(axis=0)  # every block needs some of each resource
        if run.partition is not None:
            fit *= self.partitions[run.partition]
        total = int(fit.sum())
        count = min(run.unplaced, total)
        if count == 0:
            return free
        alloc = fit if count == total else _spread(fit, count)
        taken = run.need[:, None] * alloc[None, :]
        block_s, interference = run.block_s, run.job.chain.interference
        if interference:
            others = int(self.used[0].sum()) - run.running * run.need_list[0]
            block_s *= 1 + interference * others / self.thread_slots
        self.used += taken
        run.unplaced -= count
        run.running += count
        if run.first_placed is None:
            run.first_placed = self.env.now
        if self.observer is not None:
            self.observer(self.env.now, self.used)
        done = self.env.timeout(block_s)
        done.callbacks.append(lambda _event: self._blocks_done(run, taken, count))
        if run.unplaced == 0:
            self.waiting.remove(run)
            self.on_placed(run)
        return free - taken

    def _blocks_done(self, run: KernelRun, taken: np.ndarray, count: int) -> None:
        self.used -= taken
        run.running -= count
        if self.observer is not None:
            self.observer(self.env.now, self.used)
        if run.unplaced == 0 and run.running == 0:
            run.finished = self.env.now
            self.on_done(run)
        self._place()
        self.on_room()


def _spread(fit: np.ndarray, count: int) -> np.ndarray:
    """``count`` blocks over SMs that hold ``fit`` each, breadth-first: up to a common level
    on every SM, the last level's leftover taken from the highest-numbered SMs."""
    levels = np.arange(1, int(fit.max()) + 1)
    filled = np.minimum(fit[:, None], levels[None, :]).sum(axis=0)
    level = int(levels[np.searchsorted(filled, count)])
    alloc = np.minimum(fit, level)
    excess = int(alloc.sum()) - count
    if excess:
        at_level = np.flatnonzero(alloc == level)
        alloc[at_level[-excess:]] -= 1
    return alloc
