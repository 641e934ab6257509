"""Measure one model's step costs on the GPU found, with kvsim's own model runner.

This is the half of calibration that needs a GPU; it imports torch, the runner and the real
executor, never the simulator's engine (the device machine has no simpy), and returns plain
dicts that :mod:`kvsim.calibration.fit` turns into a profile. What is timed, and how:

* **decode** (batch x context, uniform and mixed per-sequence contexts): the runner's CUDA
  graph replay, timed with CUDA events (GPU time); and the whole synchronous step --
  input preparation, replay, greedy sampling -- by the host clock (wall time). Their
  difference is the runner's per-step host overhead. With graphs off (``graphs=False``, the
  eager runner), the GPU time is the eager forward pass's, from its first launch to its last
  kernel's end: the host's launches are in it wherever they set the pace.
* **decode attention by block size**: the kernel alone at every block size a run may use
  (:mod:`kvsim.calibration.block_size`), before the runner takes the GPU's memory.
* **prefill** (sequences x prompt length, with and without a cached prefix, short and
  long): the whole step by the host clock, as the executor runs it (piecewise graphs up to
  ~1k tokens, eager above, attention eager throughout): where the host or the GPU sets the
  pace, and the launch gaps, only the wall time says. Apart from the grid, a **token
  table**: prefills of every size the runner pads to (16, 32, 64, multiples of 128) up to
  the step's token budget, in sequences of 32 tokens (attention negligible), which traces
  the cost as a function of the token count, steps included (GEMM tiles run in whole waves
  over the SMs).
* **block copies** and **swaps** out to and in from pinned host memory: the whole call.
* **the engine's own per-step work** (scheduling, block-table bookkeeping, everything of a
  step outside the runner): the real executor serves a burst of short synthetic requests,
  which takes its batch from 1 to the most sequences and back, and times each step's part
  outside the runner by the host clock.

Every point is warmed up once, then timed ``repeats`` times; the median is kept. The grid
is fitted; a second set of random points ("held out") is only predicted, for the report.
The KV cache gets what the weights leave of the GPU, so the grid reaches the largest total
context the GPU can hold; caches are filled with random values, never timed on zeros.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from kvsim.cost.padding import PREFILL_PADDING
from kvsim.gpu.kernels import partition_size
from kvsim.gpu.runner import GRAPH_BATCH_SIZES, PREFILL_GRAPH_TOKENS, ModelRunner, padded_prefill_tokens
from kvsim.models import ModelSpec

GiB = 1 << 30
MAX_NUM_SEQS = 256
DEFAULT_MAX_BATCHED_TOKENS = 2560  # as kvsim.config: vLLM's default in the paper


@dataclass(frozen=True)
class Grid:
    """What is measured. ``quick`` thins every axis and times fewer repeats."""

    decode_batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    decode_contexts: tuple[int, ...] = (32, 128, 512, 1024, 2048, 4096, 8192)
    prefill_seqs: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    prefill_lengths: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
    copy_blocks: tuple[int, ...] = (1, 4, 16, 64, 256, 1024)
    swap_blocks: tuple[int, ...] = (1, 4, 16, 64, 128)
    # Mixed steps (v1): one prompt chunk (fresh, or after as much cached) beside decodes.
    mixed_chunks: tuple[int, ...] = (64, 512, 2048)
    mixed_decodes: tuple[int, ...] = (1, 8, 32, 128)
    mixed_contexts: tuple[int, ...] = (128, 1024)
    heldout_decode: int = 24
    heldout_prefill: int = 16
    engine_requests: int = 512
    repeats: int = 5
    prefill_repeats: int = 5

    @classmethod
    def quick(cls) -> "Grid":
        return cls(
            decode_batches=(1, 4, 16, 64, 256),
            decode_contexts=(32, 512, 2048, 8192),
            prefill_seqs=(1, 4, 16, 64),
            prefill_lengths=(16, 128, 1024, 4096),
            copy_blocks=(1, 16, 256),
            swap_blocks=(1, 16, 128),
            mixed_chunks=(64, 1024),
            mixed_decodes=(1, 32),
            mixed_contexts=(512,),
            heldout_decode=12,
            heldout_prefill=8,
            engine_requests=128,
            repeats=3,
            prefill_repeats=2,
        )


# What nvidia-smi reports that could make one machine of a GPU kind differ from another.
_SMI_FIELDS = (
    "driver_version",
    "clocks.max.sm",
    "clocks.max.mem",
    "clocks.applications.graphics",
    "power.limit",
    "power.max_limit",
    "pcie.link.gen.current",
    "pcie.link.width.current",
    "vbios_version",
)
# Sampled while steps run: clocks under load, and whether the GPU throttled.
_LOAD_FIELDS = ("clocks.sm", "clocks.mem", "power.draw", "temperature.gpu", "clocks_throttle_reasons.active")


def _smi(fields: tuple[str, ...]) -> dict[str, str]:
    """GPU 0's ``fields`` as nvidia-smi reports them ({} where it cannot be run)."""
    try:
        line = subprocess.run(
            ["nvidia-smi", "-i", "0", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return {}
    return dict(zip(fields, (v.strip() for v in line.split(","))))


def _host_cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def _package_version(*names: str) -> str | None:
    """The first of ``names`` installed (cuBLAS ships as a wheel beside torch), or None."""
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return None


def environment() -> dict:
    """Where the numbers come from: GPU, driver, clocks and power limit, CUDA, cuBLAS and torch
    versions, host CPU: what can differ between two machines of one GPU kind."""
    props = torch.cuda.get_device_properties(0)
    smi = _smi(_SMI_FIELDS)
    return {
        "device_name": props.name,
        "device_memory_bytes": props.total_memory,
        "multiprocessors": props.multi_processor_count,
        "driver": smi.pop("driver_version", "unknown"),
        "nvidia_smi": smi,
        "cuda": torch.version.cuda,
        "cublas": _package_version("nvidia-cublas", "nvidia-cublas-cu12"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "host_cpu": _host_cpu(),
        "host_cpus": os.cpu_count(),
    }


class LoadSampler:
    """Samples GPU 0's clocks, power and throttle reasons every ``period_ms`` while a block of
    measurements runs (``with LoadSampler() as s: ...``; then ``s.summary()``): a profile taken
    at lower clocks than the machine that uses it is the first suspect for drift."""

    def __init__(self, period_ms: int = 200):
        self.period_ms, self.lines, self._process = period_ms, [], None

    def __enter__(self) -> "LoadSampler":
        try:
            self._process = subprocess.Popen(
                [
                    "nvidia-smi",
                    "-i",
                    "0",
                    f"--query-gpu={','.join(_LOAD_FIELDS)}",
                    "--format=csv,noheader,nounits",
                    f"-lms={self.period_ms}",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        except OSError:
            self._process = None
        return self

    def __exit__(self, *exc) -> None:
        if self._process is not None:
            self._process.terminate()
            out, _ = self._process.communicate(timeout=30)
            self.lines = [line for line in out.splitlines() if line.strip()]

    def summary(self) -> dict:
        """Median of each numeric field over the samples, and every throttle reason seen."""
        rows = [[v.strip() for v in line.split(",")] for line in self.lines]
        rows = [r for r in rows if len(r) == len(_LOAD_FIELDS)]
        summary: dict = {"samples": len(rows)}
        for i, name in enumerate(_LOAD_FIELDS[:-1]):
            values = []
            for r in rows:
                try:
                    values.append(float(r[i]))
                except ValueError:
                    pass
            summary[name] = statistics.median(values) if values else None
        summary["throttle_reasons"] = sorted({r[-1] for r in rows})
        return summary


def _median_gpu_seconds(fn: Callable[[], None], repeats: int) -> float:
    """Median of CUDA-event timings of ``fn`` (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def _median_issue_seconds(fn: Callable[[], None], repeats: int) -> float:
    """Median host-clock time for ``fn`` to return without waiting for the GPU, which is idle
    when it starts: how long the host takes to issue an eager step's launches."""
    fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    torch.cuda.synchronize()
    return statistics.median(times)


def _median_wall_seconds(fn: Callable[[], None], repeats: int) -> float:
    """Median host-clock time of a synchronous ``fn`` (after one warm-up)."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ceilings(repeats: int = 5) -> dict:
    """The GPU's achievable HBM bandwidth (device copy, read + write) and fp16 matmul rate."""
    n, m = GiB // 2, 8192  # elements of 2 bytes: 1 GiB each way; an m x m matmul
    copy_s = _median_gpu_seconds(_device_copy(n), repeats)
    mm_s = _median_gpu_seconds(_matmul(m), repeats)
    torch.cuda.empty_cache()  # the operands went with the closures
    return {"copy_bandwidth": 2 * n * 2 / copy_s, "matmul_flops": 2 * m**3 / mm_s}


def _device_copy(n: int):
    src = torch.empty(n, dtype=torch.float16, device="cuda").normal_()
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def _matmul(m: int):
    a = torch.randn(m, m, dtype=torch.float16, device="cuda")
    b = torch.randn(m, m, dtype=torch.float16, device="cuda")
    return lambda: a @ b


class _Blocks:
    """Hands out distinct physical blocks, so no two sequences share cached KV."""

    def __init__(self, num_blocks: int, block_size: int):
        self.num_blocks, self.block_size, self.next = num_blocks, block_size, 0

    def table(self, tokens: int) -> list[int]:
        need = -(-tokens // self.block_size)
        if self.next + need > self.num_blocks:
            self.next = 0
        ids = list(range(self.next, self.next + need))
        self.next += need
        return ids


class Calibrator:
    """Runs the grid on one model; ``run()`` returns every measurement as plain dicts."""

    def __init__(
        self,
        spec: ModelSpec,
        block_size: int = 16,
        grid: Grid = Grid(),
        max_batched_tokens: int | None = None,
        memory_fraction: float = 0.9,
        log: Callable[[str], None] = print,
        seed: int = 0,
        graphs: bool = True,
    ):
        """``graphs``: capture the runner's CUDA graphs as the executor does; off, every step
        runs eagerly, each kernel launched by the host, with the unfused layer operations of
        vLLM's engine before CUDA graphs (``ModelRunner(fused=False)``)."""
        self.spec, self.block_size, self.grid, self.log = spec, block_size, grid, log
        self.graphs = graphs
        self.max_batched_tokens = max_batched_tokens or max(DEFAULT_MAX_BATCHED_TOKENS, spec.max_model_len)
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.memory_fraction = memory_fraction

    # -- setup -----------------------------------------------------------------------------

    def _kv_blocks(self) -> int:
        """Blocks that fit after weights, the largest prefill's activations and graph memory."""
        free, total = torch.cuda.mem_get_info()
        s = self.spec
        reserve = 4 * s.activation_bytes(self.max_batched_tokens, MAX_NUM_SEQS) + 2 * GiB
        budget = min(free, total * self.memory_fraction) - s.weight_bytes - reserve
        block_bytes = self.block_size * s.kv_bytes_per_token
        if budget < 64 * block_bytes:
            raise RuntimeError(f"{s.name} leaves no room for a KV cache on this GPU")
        return int(budget // block_bytes)

    def setup(self, decode_graphs: list[int] | None = None, prefill_graphs: list[int] | None = None) -> None:
        """Load the runner, fill its caches, capture its graphs: every size the executor
        captures (the default; none with graphs off), or only ``decode_graphs`` /
        ``prefill_graphs`` (a check that times a few steps need not wait for the rest)."""
        t0 = time.perf_counter()
        self.ceilings = ceilings()
        num_blocks = self._kv_blocks()
        self.num_host_blocks = max(self.grid.swap_blocks)
        self.runner = ModelRunner(
            self.spec,
            num_blocks,
            self.block_size,
            seed=self.seed,
            num_host_blocks=self.num_host_blocks,
            fused=self.graphs,
        )
        gen = torch.Generator(device="cuda").manual_seed(self.seed)
        for cache in self.runner.caches:
            cache.normal_(0.0, 1.0, generator=gen)
        for cache in self.runner.host_caches:
            cache.normal_(0.0, 1.0)
        self.blocks = _Blocks(num_blocks, self.block_size)
        self.capacity_tokens = num_blocks * self.block_size
        if not self.graphs:
            decode_graphs, prefill_graphs = [], []
        self.graph_sizes = (
            decode_graphs
            if decode_graphs is not None
            else [b for b in GRAPH_BATCH_SIZES if b <= max(self.grid.decode_batches)]
        )
        self.prefill_graph_tokens = (
            prefill_graphs
            if prefill_graphs is not None
            else [t for t in PREFILL_GRAPH_TOKENS if t <= self.max_batched_tokens]
        )
        self.runner.capture(self.graph_sizes, self.prefill_graph_tokens)
        torch.cuda.synchronize()
        self.setup_seconds = time.perf_counter() - t0
        captured = (
            f"{len(self.graph_sizes)} decode graphs, {len(self.prefill_graph_tokens)} prefill graph sizes"
            if self.graphs
            else "no CUDA graphs (eager)"
        )
        self.log(
            f"setup {self.setup_seconds:.1f} s: {num_blocks} blocks of {self.block_size} "
            f"({self.capacity_tokens} tokens), {captured}, "
            f"copy {self.ceilings['copy_bandwidth'] / 1e12:.2f} TB/s, "
            f"matmul {self.ceilings['matmul_flops'] / 1e12:.0f} TFLOP/s"
        )

    def _tokens(self, n: int) -> list[int]:
        return self.rng.integers(0, self.spec.vocab_size, n).tolist()

    # -- decode ------------------------------------------------------------------------------

    def decode_point(self, contexts: list[int], heldout: bool, mixed: bool) -> dict:
        """One decode step of ``len(contexts)`` sequences; sequence i attends to contexts[i]."""
        tables = [self.blocks.table(c) for c in contexts]
        positions = [c - 1 for c in contexts]
        tokens = self._tokens(len(contexts))
        r = self.runner
        step = lambda: r.decode(tokens, positions, tables).argmax(-1).tolist()
        wall = _median_wall_seconds(step, self.grid.repeats)
        gpu = _median_gpu_seconds(r.last_decode, self.grid.repeats)  # the forward pass of step's inputs
        point = {
            "batch": len(contexts),
            "total_context": int(sum(contexts)),
            "max_context": int(max(contexts)),
            "mixed": mixed,
            "heldout": heldout,
            "gpu_s": gpu,
            "wall_s": wall,
        }
        if not self.graphs:  # eager, the GPU part is the host's issue where that is longer
            point["issue_s"] = _median_issue_seconds(r.last_decode, self.grid.repeats)
        return point

    def _mixed(self, batch: int, mean: int, limit: int) -> list[int]:
        """Per-sequence contexts uniform on [1, 2 mean), clipped to the model's context."""
        return np.clip(self.rng.integers(1, 2 * mean, batch), 1, limit).tolist()

    def decode_grid(self) -> list[dict]:
        g, limit = self.grid, self.spec.max_model_len - 1
        points = []
        for b in g.decode_batches:
            largest = min(limit, self.capacity_tokens // b - self.block_size)
            contexts = sorted({c for c in g.decode_contexts if c <= largest} | {largest})
            for c in contexts:
                points.append(self.decode_point([c] * b, heldout=False, mixed=False))
                if b > 1 and 2 * c <= limit and 2 * c * b <= self.capacity_tokens - b * self.block_size:
                    points.append(self.decode_point(self._mixed(b, c, limit), heldout=False, mixed=True))
        for _ in range(g.heldout_decode):
            b = int(self.rng.integers(1, max(g.decode_batches) + 1))
            largest = max(1, min(limit, self.capacity_tokens // b - self.block_size))
            mean = int(math.exp(self.rng.uniform(math.log(16), math.log(max(largest, 17)))))
            mean = min(mean, largest)
            mixed = b > 1 and 2 * mean <= limit and 2 * mean * b <= self.capacity_tokens - b * self.block_size
            contexts = self._mixed(b, mean, limit) if mixed else [mean] * b
            points.append(self.decode_point(contexts, heldout=True, mixed=mixed))
        return points

    # -- prefill -----------------------------------------------------------------------------

    def prefill_point(self, new: list[int], cached: list[int], heldout: bool) -> dict:
        tables = [self.blocks.table(n + c) for n, c in zip(new, cached)]
        tokens = [self._tokens(n) for n in new]
        r = self.runner
        step = lambda: r.prefill(tokens, tables, cached).argmax(-1).tolist()
        return {
            "new_tokens": new,
            "cached_tokens": cached,
            "heldout": heldout,
            "wall_s": _median_wall_seconds(step, self.grid.prefill_repeats),
        }

    def prefill_token_table(self) -> list[dict]:
        """Prefills of every padded size up to the token budget's, as sequences of 32 tokens."""
        points = []
        for tokens in sorted({padded_prefill_tokens(t) for t in range(1, self.max_batched_tokens + 1)}):
            lengths = [32] * (tokens // 32) + ([tokens % 32] if tokens % 32 else [])
            points.append(self.prefill_point(lengths, [0] * len(lengths), heldout=False))
        return points

    def prefill_grid(self) -> list[dict]:
        g, limit = self.grid, self.spec.max_model_len
        points = []
        for s in g.prefill_seqs:
            # up to the engine's token budget per step, which need not be a power of two
            largest = min(limit, self.max_batched_tokens // s)
            for n in sorted({n for n in g.prefill_lengths if n <= largest} | {largest}):
                points.append(self.prefill_point([n] * s, [0] * s, heldout=False))
                # a prompt whose first half (up to 16 sequences), or first 7/8 (up to 2), is cached
                for cached in (n, 7 * n) if s <= 2 else (n,) if s <= 16 else ():
                    if n + cached <= limit and s * (n + cached) <= self.capacity_tokens // 2:
                        points.append(self.prefill_point([n] * s, [cached] * s, heldout=False))
            # short prompts after prefixes that fill the context (a shared prompt, a
            # continuation): the most gathered per new token
            for n in (16, 128):
                if s * n <= self.max_batched_tokens and s * limit <= self.capacity_tokens:
                    points.append(self.prefill_point([n] * s, [limit - n] * s, heldout=False))
        for _ in range(g.heldout_prefill):
            s = int(2 ** self.rng.uniform(0, math.log2(max(g.prefill_seqs))))
            budget = self.max_batched_tokens // s
            new = [int(x) for x in np.exp(self.rng.uniform(math.log(8), math.log(min(budget, limit)), s))]
            use_cache = self.rng.random() < 0.5
            cached = np.array([self.rng.integers(0, limit - n + 1) if use_cache else 0 for n in new])
            # no more context than the KV cache holds
            room = max(self.capacity_tokens - sum(new), 0)
            cached = (cached * min(1.0, room / max(cached.sum(), 1))).astype(int).tolist()
            points.append(self.prefill_point(new, cached, heldout=True))
        return points

    # -- mixed steps ----------------------------------------------------------------------------

    def mixed_point(self, chunk: int, cached: int, contexts: list[int]) -> dict:
        """A prompt chunk of ``chunk`` new tokens after ``cached`` ones, beside one decode of
        each context in ``contexts``, in one forward pass (``ModelRunner.mixed``)."""
        chunk_table = [self.blocks.table(chunk + cached)]
        tables = [self.blocks.table(c) for c in contexts]
        tokens, decodes = [self._tokens(chunk)], self._tokens(len(contexts))
        positions = [c - 1 for c in contexts]
        r = self.runner
        step = lambda: r.mixed(tokens, chunk_table, [cached], decodes, positions, tables).argmax(-1).tolist()
        return {
            "new_tokens": [chunk],
            "cached_tokens": [cached],
            "decode_contexts": contexts,
            "wall_s": _median_wall_seconds(step, self.grid.prefill_repeats),
        }

    def mixed_grid(self) -> list[dict]:
        g, limit = self.grid, self.spec.max_model_len
        points = []
        for chunk in g.mixed_chunks:
            for decodes in g.mixed_decodes:
                if chunk + decodes > self.max_batched_tokens:
                    continue
                for context in g.mixed_contexts:
                    for cached in (0, chunk):
                        room = (chunk + cached) + decodes * context
                        if chunk + cached <= limit and context <= limit and room <= self.capacity_tokens:
                            points.append(self.mixed_point(chunk, cached, [context] * decodes))
        return points

    # -- copies and swaps -----------------------------------------------------------------------

    def transfer_points(self) -> tuple[list[dict], list[dict]]:
        r, g = self.runner, self.grid
        copies = []
        for k in g.copy_blocks:
            pairs = [(i, k + i) for i in range(k)]
            copies.append(
                {"blocks": k, "wall_s": _median_wall_seconds(lambda: r.copy_blocks(pairs), g.repeats)}
            )
        swaps = []
        for k in g.swap_blocks:
            pairs = [(i, i) for i in range(k)]
            swaps.append(
                {
                    "blocks": k,
                    "direction": "out",
                    "wall_s": _median_wall_seconds(lambda: r.swap_out(pairs), g.repeats),
                }
            )
            swaps.append(
                {
                    "blocks": k,
                    "direction": "in",
                    "wall_s": _median_wall_seconds(lambda: r.swap_in(pairs), g.repeats),
                }
            )
        return copies, swaps

    # -- the engine around the runner ---------------------------------------------------------

    def engine_points(self) -> list[dict]:
        """Every step of a short serving run by the real executor over this runner: its size
        and the seconds it spent outside the runner. Short prompts and outputs (4-64 and
        4-192 tokens), all arriving at once, let the batch reach the most sequences."""
        from kvsim.gpu.executor import STEP_COLUMNS, RealExecutor
        from kvsim.policies.registry import PolicyContext, get_policy
        from kvsim.workloads.trace import Trace

        n = self.grid.engine_requests
        trace = Trace("engine-burst", np.zeros(n), self.rng.integers(4, 65, n), self.rng.integers(4, 193, n))
        context = PolicyContext(
            num_blocks=self.capacity_tokens // self.block_size,
            block_size=self.block_size,
            max_num_seqs=MAX_NUM_SEQS,
            max_num_batched_tokens=self.max_batched_tokens,
            max_model_len=self.spec.max_model_len,
        )
        executor = RealExecutor(get_policy("paged").build(context), self.runner, seed=self.seed)
        executor.run(trace)
        kind, seqs, engine = (STEP_COLUMNS.index(c) for c in ("kind", "num_seqs", "engine_s"))
        return [
            {"kind": step[kind], "seqs": step[seqs], "engine_s": step[engine]} for step in executor.step_times
        ]

    def run(self) -> dict:
        """Set up, measure everything, return the raw measurements with their context."""
        from kvsim.calibration.block_size import measure_block_sizes

        t0 = time.perf_counter()
        # First, while the GPU's memory is free: the runner's KV cache takes what is left.
        by = "simcli calibrate" + ("" if self.graphs else " --eager")
        block_sizes = measure_block_sizes(self.spec, self.block_size, self.graphs, log=self.log, by=by)
        self.setup()
        decode = self.decode_grid()
        self.log(f"decode: {len(decode)} points, {time.perf_counter() - t0:.0f} s")
        copies, swaps = self.transfer_points()
        self.log(f"copies and swaps done, {time.perf_counter() - t0:.0f} s")
        engine = self.engine_points()
        self.log(f"engine: {len(engine)} steps served, {time.perf_counter() - t0:.0f} s")
        prefill = self.prefill_grid()
        table = self.prefill_token_table()
        mixed = self.mixed_grid()
        seconds = time.perf_counter() - t0
        self.log(
            f"prefill: {len(prefill)} points and {len(table)} token counts, mixed: {len(mixed)} "
            f"points, {seconds:.0f} s in all"
        )
        # The rows each decode batch runs as: its graph's (padded to the next captured size);
        # eager, every batch its own. And the attention kernel's split-K partition (tokens) at
        # each, for the model's whole context (eager, the kernel sizes it for the step's
        # longest context: the profile keeps the whole context's, its largest).
        sizes = self.graph_sizes if self.graphs else list(range(1, max(self.grid.decode_batches) + 1))
        partitions = [partition_size(b * self.spec.num_heads, self.spec.max_model_len, 0) for b in sizes]
        return {
            "environment": environment(),
            "ceilings": self.ceilings,
            "attention_partition": partitions,
            "kv_capacity_tokens": self.capacity_tokens,
            "graphs": self.graphs,
            "graph_batch_sizes": sizes,
            "decode_block_size": block_sizes,
            "prefill_padding": {**PREFILL_PADDING, "graphs": self.prefill_graph_tokens},
            "max_batched_tokens": self.max_batched_tokens,
            "repeats": self.grid.repeats,
            "setup_seconds": self.setup_seconds,
            "measure_seconds": seconds,
            "decode": decode,
            "prefill": prefill,
            "prefill_tokens": table,
            "copy": copies,
            "swap": swaps,
            "engine": engine,
            "mixed": mixed,
        }
