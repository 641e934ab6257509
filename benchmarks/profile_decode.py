#!/usr/bin/env python3
"""Where a decode step's time goes: the runner's CUDA-graph decode step under the PyTorch
profiler, kernel by kernel, beside the weight-plus-KV read floor.

    python3 benchmarks/profile_decode.py opt-13b llama-2-7b --json out/decode_kernels.json
    python3 benchmarks/profile_decode.py --tables before.json after.json   # summary, no GPU

For each model and (batch, context): the step's wall time, the floor (weights + KV bytes over
the measured copy bandwidth), the GPU's span per replayed step (first kernel's start to last
kernel's end) and how much of it no kernel ran, and the kernels grouped by name with their
count per step, total time and mean idle gap before them: what a fused runner must remove to
get near the floor. Needs CUDA.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch

from kvsim.calibration.measure import ceilings
from kvsim.gpu import timing
from kvsim.gpu.runner import ModelRunner
from kvsim.models import load_model

POINTS = ((1, 512), (64, 512))
STEPS = 5


def kernel_table(runner: ModelRunner, batch: int, context: int) -> tuple[list[dict], float]:
    """Kernels of ``STEPS`` graph replays of a decode step, grouped by name, per step, and the
    GPU's span per step (ms)."""
    timing.decode_ms(runner, batch, context, steps=2)  # fills the graph's inputs for this shape
    graph = runner.graphs[batch][0]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(STEPS):
            graph.replay()
        torch.cuda.synchronize()
    events = sorted(
        (e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
        key=lambda e: e.time_range.start,
    )
    groups: dict[str, list[float]] = defaultdict(list)
    gaps: dict[str, list[float]] = defaultdict(list)
    for previous, event in zip([None, *events], events):
        groups[event.name].append(event.device_time_total / 1e3)
        if previous is not None:
            gaps[event.name].append(max(0.0, event.time_range.start - previous.time_range.end))
    rows = [
        {
            "kernel": name[:120],
            "per_step": len(times) / STEPS,
            "ms_per_step": sum(times) / STEPS,
            "gap_us": sum(gaps[name]) / max(1, len(gaps[name])),
        }
        for name, times in groups.items()
    ]
    span_ms = (events[-1].time_range.end - events[0].time_range.start) / STEPS / 1e3
    return sorted(rows, key=lambda r: -r["ms_per_step"]), span_ms


def summary(paths: list[Path]) -> str:
    """One markdown table of the steps in these results files, each row named by its file."""
    lines = [
        "| run | model | batch x context | step ms | floor ms | over floor | GPU span ms "
        "| kernels ms | launches |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path in paths:
        for name, points in json.loads(path.read_text())["models"].items():
            for p in points:
                span = f"{p['gpu_span_ms']:.2f}" if "gpu_span_ms" in p else "-"
                lines.append(
                    f"| {path.stem} | {name} | {p['batch']} x {p['context']} | {p['graph_ms']:.2f} "
                    f"| {p['floor_ms']:.2f} | {p['graph_ms'] / p['floor_ms'] - 1:+.0%} | {span} "
                    f"| {sum(k['ms_per_step'] for k in p['kernels']):.2f} "
                    f"| {sum(k['per_step'] for k in p['kernels']):.0f} |"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--tables", nargs="+", type=Path, help="print a summary of these results and exit")
    args = parser.parse_args()
    if args.tables:
        print(summary(args.tables), end="")
        return
    if not args.models or not args.json:
        parser.error("models and --json are required unless --tables is given")
    copy_bw = ceilings()["copy_bandwidth"]
    results = {"copy_bandwidth": copy_bw, "device": torch.cuda.get_device_name(), "models": {}}
    for name in args.models:
        spec = load_model(name)
        runner = ModelRunner(spec, num_blocks=64 * 512 // 16 + 64, block_size=16)
        runner.capture([b for b, _ in POINTS])
        timing.fill_random(runner)
        for batch, context in POINTS:
            step_ms = timing.decode_ms(runner, batch, context)
            kv = batch * context * spec.kv_bytes_per_token
            floor_ms = (spec.weight_bytes + kv) / copy_bw * 1e3
            kernels, span_ms = kernel_table(runner, batch, context)
            busy_ms = sum(k["ms_per_step"] for k in kernels)
            results["models"].setdefault(name, []).append(
                {
                    "batch": batch,
                    "context": context,
                    "graph_ms": step_ms,
                    "floor_ms": floor_ms,
                    "gpu_span_ms": span_ms,
                    "kernel_ms": busy_ms,
                    "kernels": kernels,
                }
            )
            print(
                f"{name} batch {batch} x {context}: {step_ms:.2f} ms ({step_ms / floor_ms - 1:+.0%} over "
                f"floor {floor_ms:.2f} ms); GPU span {span_ms:.2f} ms, kernels {busy_ms:.2f} ms"
            )
            for k in kernels[:12]:
                print(
                    f"    {k['ms_per_step']:8.3f} ms  {k['per_step']:6.1f}x  gap {k['gap_us']:5.2f} us  "
                    f"{k['kernel'][:80]}"
                )
        del runner
        torch.cuda.empty_cache()
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
