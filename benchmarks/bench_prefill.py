"""Prefill wall time, eager against piecewise CUDA graphs, on the GPU found.

    python3 benchmarks/bench_prefill.py [MODEL ...] [--json FILE]

For each model (random weights): prefills of 16 to 2048 new tokens as sequences of 32
tokens (the calibration's token table), timed by the host clock through the synchronous
step (median of 10 after a warm-up), first eager, then with the runner's prefill graphs
captured (steps past the largest graph stay eager). ``issue`` is how long the host takes
to return from ``prefill`` before the GPU is waited for: where it is close to the wall
time, the host sets the pace. Also prints what capturing the graphs cost in seconds and
GPU memory, and the GPU time of one layer's four GEMMs by row count, which is why the
runner pads prefills to multiples of 128 rows.
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from kvsim.gpu.runner import PREFILL_GRAPH_TOKENS, ModelRunner
from kvsim.gpu.timing import fill_random, graph_ms
from kvsim.models import load_model

TOKENS = (16, 64, 128, 256, 512, 768, 1024, 1536, 2048)
GEMM_ROWS = (448, 512, 832, 896, 1024, 1033, 1100, 1152)


def layer_gemms_ms(runner: ModelRunner, rows: int) -> float:
    """GPU time of layer 0's Q/K/V, output, up and down projections over ``rows`` rows."""
    L, s = runner.layers[0], runner.spec
    x = torch.randn(rows, s.hidden_size, device="cuda", dtype=runner.dtype)
    a = torch.randn(rows, L.o_w.shape[1], device="cuda", dtype=runner.dtype)
    h = torch.randn(rows, L.down_w.shape[1], device="cuda", dtype=runner.dtype)

    def gemms():
        F.linear(x, L.qkv_w, L.qkv_b), F.linear(a, L.o_w, L.o_b)
        F.linear(x, L.up_w, L.up_b), F.linear(h, L.down_w, L.down_b)

    return graph_ms(gemms)


def prefill_times(runner: ModelRunner, tokens: int, repeats: int = 10) -> tuple[float, float]:
    """Median (wall, issue) milliseconds of a prefill of ``tokens`` tokens."""
    ids = [[7] * 32 for _ in range(tokens // 32)] or [[7] * tokens]
    per_seq = -(-32 // runner.block_size)
    tables = [list(range(i * per_seq, (i + 1) * per_seq)) for i in range(len(ids))]
    runner.prefill(ids, tables)
    walls, issues = [], []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        logits = runner.prefill(ids, tables)
        t1 = time.perf_counter()
        logits.argmax(-1).tolist()
        walls.append((time.perf_counter() - t0) * 1e3)
        issues.append((t1 - t0) * 1e3)
    return statistics.median(walls), statistics.median(issues)


def bench(name: str) -> dict:
    spec = load_model(name)
    runner = ModelRunner(spec, num_blocks=4096, block_size=16)
    fill_random(runner)
    gemms = {r: layer_gemms_ms(runner, r) for r in GEMM_ROWS}
    eager = {t: prefill_times(runner, t) for t in TOKENS}
    torch.cuda.synchronize()
    before, t0 = torch.cuda.memory_reserved(), time.perf_counter()
    runner.capture([], PREFILL_GRAPH_TOKENS)
    torch.cuda.synchronize()
    capture_s, capture_bytes = time.perf_counter() - t0, torch.cuda.memory_reserved() - before
    graphed = {t: prefill_times(runner, t) for t in TOKENS}
    print(
        f"{name} on {torch.cuda.get_device_name()}: {len(PREFILL_GRAPH_TOKENS)} prefill sizes x "
        f"{spec.num_layers + 1} pieces captured in {capture_s:.1f} s, {capture_bytes / 2**20:.0f} MiB"
    )
    print(f"{'tokens':>7} {'eager wall':>11} {'issue':>7} {'graphed wall':>13} {'issue':>7} {'ratio':>6}")
    for t in TOKENS:
        (ew, ei), (gw, gi) = eager[t], graphed[t]
        print(f"{t:7d} {ew:9.2f}ms {ei:7.2f} {gw:11.2f}ms {gi:7.2f} {gw / ew:6.2f}")
    print("one layer's GEMMs by rows: " + ", ".join(f"{r}: {ms:.3f} ms" for r, ms in gemms.items()))
    return {
        "model": name,
        "layer_gemms_ms": gemms,
        "device": torch.cuda.get_device_name(),
        "capture_s": capture_s,
        "capture_mib": capture_bytes / 2**20,
        "graph_tokens": list(PREFILL_GRAPH_TOKENS),
        "rows": [
            {
                "tokens": t,
                "eager_wall_ms": eager[t][0],
                "eager_issue_ms": eager[t][1],
                "graphed_wall_ms": graphed[t][0],
                "graphed_issue_ms": graphed[t][1],
            }
            for t in TOKENS
        ],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["opt-13b"])
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    results = []
    for name in args.models:
        results.append(bench(name))
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
