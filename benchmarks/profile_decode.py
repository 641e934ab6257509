#!/usr/bin/env python3
"""Where a decode step's time goes: the runner's CUDA-graph decode step under the PyTorch
profiler, kernel by kernel, beside the weight-plus-KV read floor.

    python3 benchmarks/profile_decode.py opt-13b llama-2-7b --json out/decode_kernels.json

For each model and (batch, context): the step's GPU time, the floor (weights + KV bytes over
the measured copy bandwidth), and the kernels grouped by name with their count per step, total
time and share: what a fused runner must remove to get near the floor. Needs CUDA.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import torch

from kvsim.calibration.measure import ceilings
from kvsim.gpu import timing
from kvsim.gpu.runner import ModelRunner
from kvsim.models import load_model

POINTS = ((1, 512), (64, 512))
STEPS = 5


def kernel_table(runner: ModelRunner, batch: int, context: int) -> list[dict]:
    """Kernels of ``STEPS`` graph replays of a decode step, grouped by name, per step."""
    timing.decode_ms(runner, batch, context, steps=2)  # fills the graph's inputs for this shape
    graph = runner.graphs[batch][0]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(STEPS):
            graph.replay()
        torch.cuda.synchronize()
    groups: dict[str, list[float]] = defaultdict(list)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            groups[event.name].append(event.device_time_total / 1e3)
    rows = [
        {"kernel": name[:120], "per_step": len(times) / STEPS, "ms_per_step": sum(times) / STEPS}
        for name, times in groups.items()
    ]
    return sorted(rows, key=lambda r: -r["ms_per_step"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
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
            kernels = kernel_table(runner, batch, context)
            results["models"].setdefault(name, []).append(
                {
                    "batch": batch,
                    "context": context,
                    "graph_ms": step_ms,
                    "floor_ms": floor_ms,
                    "kernels": kernels,
                }
            )
            print(f"{name} batch {batch} x {context}: {step_ms:.2f} ms, floor {floor_ms:.2f} ms")
            for k in kernels[:12]:
                print(f"    {k['ms_per_step']:8.3f} ms  {k['per_step']:6.1f}x  {k['kernel'][:90]}")
        del runner
        torch.cuda.empty_cache()
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
