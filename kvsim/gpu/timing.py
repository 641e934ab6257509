"""Timing helpers for benchmarks and calibration: step times that do not depend on token
values (caches and weights hold random numbers, never zeros)."""

from __future__ import annotations

import statistics
import time

import torch

from kvsim.gpu.runner import ModelRunner


def graph_ms(fn, calls: int = 10, rounds: int = 20) -> float:
    """Median device time of one ``fn()``: ``calls`` of them captured in a CUDA graph (no
    launch gaps), the graph replayed ``rounds`` times between events."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()  # compile / load / allocate outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times)


def fill_random(runner: ModelRunner, seed: int = 0) -> None:
    """Random K/V everywhere, so timed steps read real-looking data."""
    g = torch.Generator(device=runner.device).manual_seed(seed)
    for cache in runner.caches:
        cache.normal_(generator=g)


def decode_ms(runner: ModelRunner, batch_size: int, context_len: int, steps: int = 20) -> float:
    """Median wall time of one ``runner.decode`` step (inputs prepared on the host, as a
    serving loop would) for ``batch_size`` sequences of ``context_len`` tokens each, on
    disjoint block ranges. Uses the runner's captured graphs when it has them."""
    per_seq = -(-(context_len + 1) // runner.block_size)
    tables = [list(range(i * per_seq, (i + 1) * per_seq)) for i in range(batch_size)]
    tokens, positions = [1] * batch_size, [context_len] * batch_size
    runner.decode(tokens, positions, tables)
    times = []
    for _ in range(steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        runner.decode(tokens, positions, tables)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
