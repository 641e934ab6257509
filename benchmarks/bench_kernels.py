"""Benchmark kvsim's paged decode attention, the decode step's GEMMs and the model runner on
the local GPU.

    python3 benchmarks/bench_kernels.py --out DIR
    python3 benchmarks/bench_kernels.py --out DIR --only gemm runner --models opt-13b llama-2-7b
    python3 benchmarks/bench_kernels.py --tables DIR/kernels.json   # the tables again, no GPU

Writes DIR/kernels.json (every number, with the GPU, driver and date) and DIR/KERNELS.md (the
tables), and prints the tables; the copy bandwidth is measured in every run. Kernel times are
device times of CUDA-graph replays (no launch gaps); runner step times are wall times of
``ModelRunner.decode`` including host-side input preparation.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
from pathlib import Path

import torch
import torch.nn.functional as F

from kvsim.calibration.block_size import PagedDecodeCase
from kvsim.cost.profile import BLOCK_SIZES
from kvsim.gpu import kernels, timing
from kvsim.gpu.runner import ModelRunner
from kvsim.models import load_model

DTYPE = torch.float16
HEADS, KV_HEADS, HEAD = 32, 32, 128  # Llama-2-7B attention shape


def environment() -> dict:
    driver = subprocess.run(
        ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
    ).stdout.strip()
    import cupy

    return {
        "date": datetime.date.today().isoformat(),
        "gpu": torch.cuda.get_device_name(),
        "driver": driver,
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "cupy": cupy.__version__,
    }


def copy_bandwidth() -> float:
    """Device-to-device copy of 2 GiB, bytes read plus written per second. Timed eagerly
    between events: inside a CUDA graph the copy becomes a memcpy node that ran at only
    ~2.8 TB/s on an H200 (copy engine), against ~4.3 TB/s for the eager copy."""
    src = torch.randn(2**30, device="cuda", dtype=DTYPE)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return 2 * src.numel() * src.element_size() / (statistics.median(times) * 1e-3)


def DecodeCase(batch: int, context: int, block_size: int, shuffled: bool = True) -> PagedDecodeCase:
    """Random q and a cache holding ``batch`` sequences of ``context`` tokens each, at the
    attention shape benchmarked here."""
    return PagedDecodeCase(batch, context, block_size, HEADS, KV_HEADS, HEAD, DTYPE, shuffled)


def sdpa_ms(batch: int, context: int) -> float:
    """PyTorch's fused attention over contiguous K/V of the same shape."""
    q = torch.randn(batch, HEADS, 1, HEAD, device="cuda", dtype=DTYPE)
    k = torch.randn(batch, KV_HEADS, context, HEAD, device="cuda", dtype=DTYPE)
    v = torch.randn_like(k)
    return timing.graph_ms(lambda: F.scaled_dot_product_attention(q, k, v))


def bandwidth_table(copy_bw: float) -> list[dict]:
    rows = []
    for batch, context in [
        (1, 2048),
        (8, 2048),
        (64, 1024),
        (64, 4096),
        (128, 4096),
        (256, 2048),
        (16, 32768),
    ]:
        case = DecodeCase(batch, context, 16)
        paged, kv_bytes = case.ms(), case.kv_bytes
        del case
        contiguous_tables = DecodeCase(batch, context, 16, shuffled=False).ms()
        sdpa = sdpa_ms(batch, context)
        rows.append(
            {
                "batch": batch,
                "context": context,
                "paged_ms": paged,
                "paged_in_order_ms": contiguous_tables,
                "sdpa_ms": sdpa,
                "paged_GBps": kv_bytes / paged / 1e6,
                "copy_fraction": kv_bytes / paged / 1e-3 / copy_bw,
                "paged_over_sdpa": paged / sdpa,
            }
        )
        torch.cuda.empty_cache()
    return rows


# (threads per K/V row, tokens in flight per thread group) tried for head size 128.
VARIANTS = [(4, 2), (4, 4), (8, 2), (8, 4), (8, 8), (16, 4), (16, 8)]


def variant_table() -> list[dict]:
    """The kernel's thread split and unroll against SDPA, to choose DECODE_SHAPES."""
    rows = []
    for batch, context in [(8, 2048), (64, 4096), (256, 2048)]:
        case = DecodeCase(batch, context, 16)
        row = {"batch": batch, "context": context, "sdpa_ms": sdpa_ms(batch, context)}
        row.update({f"{tpk}x{u}": case.ms(shape=(tpk, u)) for tpk, u in VARIANTS})
        rows.append(row)
        del case
        torch.cuda.empty_cache()
    return rows


def block_size_table() -> list[dict]:
    rows = []
    for block_size in BLOCK_SIZES:
        rows.append({"block_size": block_size, "paged_ms": DecodeCase(32, 4096, block_size).ms()})
        torch.cuda.empty_cache()
    return rows


def _matrices(name: str) -> dict[str, tuple[int, int]]:
    """The decode step's weight matrices of a model, ``[out, in]`` as the runner holds them."""
    s = load_model(name)
    h, f = s.hidden_size, s.intermediate_size
    q_dim, kv_dim = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
    up = f if s.family == "opt" else 2 * f  # LLaMA's gate and up as one matrix
    return {
        "qkv": (q_dim + 2 * kv_dim, h),
        "out": (h, q_dim),
        "up": (up, h),
        "down": (h, f),
        "head": (s.vocab_size, h),
    }


GEMM_ROWS = (1, 2, 4, 64)


def _gemm_times(w: torch.Tensor, m: int) -> dict:
    """``m`` rows times ``w.T`` three ways (see ``gemm_table``), ms each."""
    x = torch.randn(m, w.shape[1], device="cuda", dtype=DTYPE)
    times = {"cublas_ms": timing.graph_ms(lambda: F.linear(x, w))}
    default = torch.backends.cuda.preferred_blas_library()
    torch.backends.cuda.preferred_blas_library("cublaslt")
    times["cublaslt_ms"] = timing.graph_ms(lambda: F.linear(x, w))
    torch.backends.cuda.preferred_blas_library(default)
    if kernels.gemv_fits(x, w):
        times["gemv_ms"] = timing.graph_ms(lambda: kernels.gemv(x, w))
    return times


def gemm_table(models: list[str]) -> list[dict]:
    """Each weight matrix times a batch of rows three ways: PyTorch's default (cuBLAS), with
    cuBLASLt preferred, and kvsim's GEMV (up to ``kernels.GEMV_MAX_ROWS`` rows), as the weight
    read rate (GB/s) each reaches: how close the step's dominant kernels come to the floor."""
    rows = []
    for name in models:
        for matrix, (n, k) in _matrices(name).items():
            w = torch.randn(n, k, device="cuda", dtype=DTYPE)
            for m in GEMM_ROWS:
                rows.append({"model": name, "matrix": matrix, "rows": m, "n": n, "k": k, **_gemm_times(w, m)})
    torch.cuda.empty_cache()
    return rows


# (output rows per warp, 16-byte pieces in flight per row and lane) tried for kvsim's GEMV.
GEMV_VARIANTS = [(1, 4), (1, 8), (2, 2), (2, 4), (2, 8), (4, 2), (4, 4)]


def gemv_variant_table(models: list[str]) -> list[dict]:
    """kvsim's GEMV shapes on each weight matrix at 1 and 4 rows, ms: to choose GEMV_SHAPE."""
    rows = []
    for name in models:
        for matrix, (n, k) in _matrices(name).items():
            w = torch.randn(n, k, device="cuda", dtype=DTYPE)
            for m in sorted({1, kernels.GEMV_MAX_ROWS}):
                x = torch.randn(m, k, device="cuda", dtype=DTYPE)
                row = {"model": name, "matrix": matrix, "rows": m, "n": n, "k": k}
                for shape in GEMV_VARIANTS:
                    row[f"{shape[0]}x{shape[1]}"] = timing.graph_ms(
                        lambda shape=shape: kernels.gemv(x, w, shape=shape)
                    )
                rows.append(row)
    torch.cuda.empty_cache()
    return rows


def runner_table(copy_bw: float, models: list[str]) -> list[dict]:
    """Decode steps of each model at batch 1 and 64, contexts 128 and 512: eager with the
    2023 engine's unfused operations (what eager profiles measure), eager fused, and fused in
    the runner's CUDA graphs, beside the floor of reading the weights (and the KV) once at the
    copy bandwidth."""
    rows, block_size, contexts = [], 16, (128, 512)
    for name in models:
        spec = load_model(name)
        runner = ModelRunner(spec, num_blocks=64 * (max(contexts) // block_size + 1), block_size=block_size)
        timing.fill_random(runner)
        eager = {(b, c): timing.decode_ms(runner, b, c) for c in contexts for b in (1, 64)}
        runner.fused = False  # read at every call: the same weights and caches, unfused
        unfused = {(b, c): timing.decode_ms(runner, b, c) for c in contexts for b in (1, 64)}
        runner.fused = True
        runner.capture([1, 64])
        for context in contexts:
            for b in (1, 64):
                kv = b * (context + 1) * spec.kv_bytes_per_token
                rows.append(
                    {
                        "model": name,
                        "batch": b,
                        "context": context,
                        "eager_unfused_ms": unfused[b, context],
                        "eager_ms": eager[b, context],
                        "graph_ms": timing.decode_ms(runner, b, context),
                        "weight_floor_ms": spec.weight_bytes / copy_bw * 1e3,
                        "weight_kv_floor_ms": (spec.weight_bytes + kv) / copy_bw * 1e3,
                    }
                )
        del runner
        torch.cuda.empty_cache()
    return rows


def _ms_or_dash(ms: float | None) -> str:
    """A time in a table, or a dash where the run that wrote the results did not measure it."""
    return "-" if ms is None else f"{ms:.2f}"


def markdown(results: dict) -> str:
    """The tables of a run's results (``kernels.json``), those of the sections it measured."""
    env, copy_bw = results["environment"], results["copy_Bps"]
    lines = [
        f"GPU: {env['gpu']}, driver {env['driver']}, CUDA {env['cuda']}, torch {env['torch']}, "
        f"cupy {env['cupy']}" + (f"; measured {env['date']}." if "date" in env else "."),
        "",
        f"Device-to-device copy bandwidth (read + write): **{copy_bw / 1e12:.2f} TB/s**.",
    ]
    if results.get("decode"):
        lines += [
            "",
            f"### Paged decode attention (fp16, {HEADS} heads, head size {HEAD}, block size 16)",
            "",
            "| batch | context | paged ms | paged, blocks in order ms | SDPA contiguous ms "
            "| K+V GB/s | of copy BW | paged / SDPA |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['batch']} | {r['context']} | {r['paged_ms']:.3f} | {r['paged_in_order_ms']:.3f} "
            f"| {r['sdpa_ms']:.3f} | {r['paged_GBps']:.0f} | {r['copy_fraction']:.0%} "
            f"| {r['paged_over_sdpa']:.2f} |"
            for r in results["decode"]
        ]
    if results.get("variants"):
        names = [f"{t}x{u}" for t, u in VARIANTS]
        lines += [
            "",
            "### Thread split x unroll (head size 128, block size 16; ms, and over SDPA)",
            "",
            "| batch | context | SDPA ms | " + " | ".join(names) + " |",
            "|---|---|---|" + "---|" * len(names),
        ]
        lines += [
            f"| {r['batch']} | {r['context']} | {r['sdpa_ms']:.3f} | "
            + " | ".join(f"{r[n]:.3f} ({r[n] / r['sdpa_ms']:.2f})" for n in names)
            + " |"
            for r in results["variants"]
        ]
    if results.get("block_size"):
        lines += [
            "",
            "### Block size at fixed total context (batch 32 x 4096 tokens)",
            "",
            "| block size | ms |",
            "|---|---|",
        ]
        lines += [f"| {r['block_size']} | {r['paged_ms']:.3f} |" for r in results["block_size"]]
    if results.get("gemm"):
        gbps = lambda r, key: f"{r['n'] * r['k'] * 2 / r[key] / 1e6:.0f}" if key in r else "-"
        lines += [
            "",
            "### Decode GEMMs: weight read rate, GB/s (fp16, random data; x is rows x in)",
            "",
            "| model | matrix | out x in | rows | cuBLAS | cuBLASLt | kvsim GEMV |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['model']} | {r['matrix']} | {r['n']} x {r['k']} | {r['rows']} | {gbps(r, 'cublas_ms')} "
            f"| {gbps(r, 'cublaslt_ms')} | {gbps(r, 'gemv_ms')} |"
            for r in results["gemm"]
        ]
    if results.get("gemv_variants"):
        names = [f"{r}x{u}" for r, u in GEMV_VARIANTS]
        lines += [
            "",
            "### kvsim GEMV: rows per warp x pieces in flight (fp16; ms)",
            "",
            "| model | matrix | out x in | rows | " + " | ".join(names) + " |",
            "|---|---|---|---|" + "---|" * len(names),
        ]
        lines += [
            f"| {r['model']} | {r['matrix']} | {r['n']} x {r['k']} | {r['rows']} | "
            + " | ".join(f"{r[n]:.4f}" for n in names)
            + " |"
            for r in results["gemv_variants"]
        ]
    if results.get("runner"):
        lines += [
            "",
            "### Decode step (fp16, random weights, block size 16)",
            "",
            "| model | batch | context | eager unfused (2023 engine) ms | eager ms | CUDA graph ms "
            "| weight-read floor ms | weights + KV floor ms | graph over floor |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['model']} | {r['batch']} | {r['context']} | {_ms_or_dash(r.get('eager_unfused_ms'))} "
            f"| {r['eager_ms']:.2f} | {r['graph_ms']:.2f} "
            f"| {r['weight_floor_ms']:.2f} | {r['weight_kv_floor_ms']:.2f} "
            f"| {r['graph_ms'] / r['weight_kv_floor_ms'] - 1:+.0%} |"
            for r in results["runner"]
        ]
    return "\n".join(lines) + "\n"


SECTIONS = {
    "variants": lambda copy_bw, models: variant_table(),
    "decode": lambda copy_bw, models: bandwidth_table(copy_bw),
    "block_size": lambda copy_bw, models: block_size_table(),
    "gemm": lambda copy_bw, models: gemm_table(models),
    "gemv_variants": lambda copy_bw, models: gemv_variant_table(models),
    "runner": runner_table,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, help="where kernels.json and KERNELS.md go")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--models", nargs="+", default=["opt-13b"], help="for the gemm and runner sections")
    parser.add_argument("--tables", type=Path, help="print the tables of this kernels.json and exit")
    args = parser.parse_args()
    if args.tables:
        print(markdown(json.loads(args.tables.read_text())), end="")
        return
    if args.out is None:
        parser.error("--out is required unless --tables is given")
    args.out.mkdir(parents=True, exist_ok=True)
    copy_bw = copy_bandwidth()
    results = {"environment": environment(), "copy_Bps": copy_bw}
    for section in args.only:
        results[section] = SECTIONS[section](copy_bw, args.models)
    (args.out / "kernels.json").write_text(json.dumps(results, indent=1))
    text = markdown(results)
    (args.out / "KERNELS.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
