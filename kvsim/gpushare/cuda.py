"""The real GPU for the replay loop (kvsim.gpushare.replay): torchvision models as CUDA graphs,
one graph per top-level block, launched on CUDA streams and timed with CUDA events.

The models are built as ``simcli gpushare profile`` measured them (kvsim.calibration.
kernel_chains: torchvision's builders, random weights after ``torch.manual_seed(0)``, fp32,
eval mode, batch 1, a 1x3x224x224 input, no autograd).

**Why graphs.** In eager PyTorch at batch 1 the host launching kernels one by one sets the
pace: the shipped profiles record each model's pass spanning several times its kernels' time.
One host thread launching eagerly could not keep up with the arrivals at the loads the
simulation sweeps. A CUDA graph replays its kernels with one launch, back to back on the GPU,
as the simulator assumes; the graphs are captured from the same eager forward, so the GPU runs
the kernels the profiles measured.

**Why blocks.** Python cannot launch one kernel of a forward at a time; the finest unit it can
choose is a group launched together. Here that is each top-level child module (ResNet's
``layer1``, Inception's ``Mixed_5b``), with the functional code between children (the flatten
before a classifier, DenseNet's last ReLU and pooling) in the block it follows. A job is its
model's blocks (the replay loop's *steps*) in order.

**Whole jobs as one graph.** The hardware baselines hand a job to a stream whole, so each slot
also holds the whole forward captured as one graph: one launch per job, the kernels back to
back on the GPU as the profile's ``graph_pass_us`` timed them. Launched block by block, a job
would cost the host a dozen launches, and one host thread launching for every stream set the
pace under bursts (the first H200 run, docs/gpushare.md). The dispatcher still launches blocks.

**Slots.** Jobs in flight at once need activations of their own, so each model has slots: the
graphs of its blocks captured into a memory pool of their own, replayed in capture order, as
graphs sharing a pool must be. A job holds a slot from its first step until it finishes;
weights and the input are shared, read only.

**Times** come from CUDA events with timing, recorded on a launch's stream before its first
block and after its last: when the GPU started and finished the work, which is what the
simulation reports. Host timestamps taken after synchronizing would not do: one host thread
serves every job, and waiting for one would hold back every other launch, while polling only
tells the host that work finished when the loop next looks, later the busier it is. The run's
clock is the host's, 0 when a reference event is recorded on the idle GPU; an event's time is
its elapsed time from the reference, so the two clocks agree to within a launch latency
(:meth:`CudaGPU.clock_offset` measures how far they are apart at the end of a run).
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kvsim.gpushare.job import Job

#: The host sleeps until this close to an arrival and then spins: a sleep overshoots by tens of us.
SPIN_S = 200e-6
#: Eager forward passes that warm cuDNN and the allocator up before the graphs are captured.
WARMUP_PASSES = 3


def split_forward(model, batch, cut: Callable[[], None]) -> tuple[Any, list[str]]:
    """Runs ``model(batch)``, calling ``cut()`` before each top-level child that launches
    kernels, except the first. Returns the output and the blocks' names: block k runs from cut
    k (the forward's start for the first) to the next; children that launch no kernel in eval
    mode (dropout, identity, flatten) start no block."""
    from torch import nn

    names: list[str] = []

    def entering(name: str):
        def hook(module, args) -> None:
            if names:
                cut()
            names.append(name)

        return hook

    quiet = (nn.Dropout, nn.Identity, nn.Flatten)
    hooks = [
        child.register_forward_pre_hook(entering(name))
        for name, child in model.named_children()
        if not isinstance(child, quiet)
    ]
    try:
        return model(batch), names
    finally:
        for hook in hooks:
            hook.remove()


@dataclass
class Slot:
    graphs: list  # torch.cuda.CUDAGraph per block, in order
    output: Any  # the forward's output: keeps its memory in the pool
    whole: Any  # the whole forward as one graph, in a pool of its own
    whole_output: Any


def capture_slot(model, batch, stream) -> tuple[Slot, list[str]]:
    """``model``'s forward on ``batch`` as one graph per block, all in a new memory pool,
    captured on ``stream`` (capture needs a stream other than the default)."""
    import torch

    pool = torch.cuda.graph_pool_handle()
    graphs = [torch.cuda.CUDAGraph()]

    def cut() -> None:
        graphs[-1].capture_end()
        graphs.append(torch.cuda.CUDAGraph())
        graphs[-1].capture_begin(pool=pool)

    torch.cuda.synchronize()
    with torch.cuda.stream(stream):
        graphs[0].capture_begin(pool=pool)
        output, names = split_forward(model, batch, cut)
        graphs[-1].capture_end()
        whole = torch.cuda.CUDAGraph()
        whole.capture_begin(pool=torch.cuda.graph_pool_handle())
        whole_output = model(batch)
        whole.capture_end()
    return Slot(graphs, output, whole, whole_output), names


class CudaGPU:
    """The replay loop's Device on GPU 0: ``models`` (torchvision builder names) with
    ``slots[m]`` slots each, launched on ``streams`` streams."""

    def __init__(self, models: Sequence[str], slots: Sequence[int], streams: int):
        import torch
        import torchvision

        from kvsim.gpushare.workloads import BUILD_OPTIONS, INPUT_SHAPE

        self.torch = torch
        self.streams = [torch.cuda.Stream() for _ in range(streams)]
        self.networks, self.slots, self.block_names = [], [], []
        with torch.inference_mode():
            for model, count in zip(models, slots):
                torch.manual_seed(0)
                network = getattr(torchvision.models, model)(weights=None, **BUILD_OPTIONS.get(model, {}))
                network = network.eval().to("cuda", torch.float32)
                batch = torch.randn(INPUT_SHAPE, device="cuda")
                side = self.streams[0]
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(WARMUP_PASSES):
                        network(batch)
                captured = [capture_slot(network, batch, side) for _ in range(count)]
                self.networks.append((network, batch))
                self.slots.append([slot for slot, _ in captured])
                self.block_names.append(captured[0][1])
        torch.cuda.synchronize()
        self.free = [deque(range(count)) for count in slots]
        self.slot_of: dict[int, int] = {}

    def _event(self):
        return self.torch.cuda.Event(enable_timing=True)

    def time_alone(self, model_index: int, passes: int) -> tuple[list[float], float]:
        """Each block's time, and the whole job's as its one graph (as whole jobs are launched)
        queued behind the blocks, so without its launch latency, alone on the GPU (seconds):
        medians over ``passes`` jobs on one stream, each waited for before the next. A block's
        time runs from the end of the one before (the job's start for the first) to its own end."""
        slot = self.slots[model_index][0]
        stream = self.streams[0]
        blocks, wholes = [], []
        for _ in range(passes):
            events = [self._event() for _ in range(len(slot.graphs) + 1)]
            start, end = self._event(), self._event()
            with self.torch.cuda.stream(stream):
                events[0].record()
                for graph, event in zip(slot.graphs, events[1:]):
                    graph.replay()
                    event.record()
                start.record()
                slot.whole.replay()
                end.record()
            stream.synchronize()
            blocks.append([a.elapsed_time(b) * 1e-3 for a, b in zip(events, events[1:])])
            wholes.append(start.elapsed_time(end) * 1e-3)
        return [statistics.median(times) for times in zip(*blocks)], statistics.median(wholes)

    # -- the replay loop's Device --------------------------------------------------------------
    def start(self) -> None:
        self.torch.cuda.synchronize()
        self.reference = self._event()
        self.reference.record(self.streams[0])
        self.t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def wait(self, until: float, heads: Sequence[Any]) -> None:
        while True:
            now = self.now()
            if now >= until:
                return
            if heads:
                if any(end.query() for _, end in heads):
                    return
            elif until - now > SPIN_S:
                time.sleep(until - now - SPIN_S)

    def launch(self, job: Job, first: int, stop: int, lane: int) -> Any:
        if first == 0:
            self.slot_of[job.id] = self.free[job.model_index].popleft()
        slot = self.slots[job.model_index][self.slot_of[job.id]]
        start, end = self._event(), self._event()
        with self.torch.cuda.stream(self.streams[lane]):
            start.record()
            if first == 0 and stop == len(slot.graphs):
                slot.whole.replay()
            else:
                for graph in slot.graphs[first:stop]:
                    graph.replay()
            end.record()
        return start, end

    def done(self, launch: Any) -> bool:
        return launch[1].query()

    def span(self, launch: Any) -> tuple[float, float]:
        start, end = launch
        return self.reference.elapsed_time(start) * 1e-3, self.reference.elapsed_time(end) * 1e-3

    def release(self, job: Job) -> None:
        self.free[job.model_index].append(self.slot_of.pop(job.id))

    def clock_offset(self) -> float:
        """The run's GPU clock minus its host clock now (seconds): a fresh event recorded on the
        idle GPU against the host time it was recorded at."""
        self.torch.cuda.synchronize()
        host = self.now()
        event = self._event()
        event.record(self.streams[0])
        event.synchronize()
        return self.reference.elapsed_time(event) * 1e-3 - host
