"""``simcli gpushare profile --llm``: an LLM's decode and prefill steps as kernel chains.

For each model, kvsim's own runner (kvsim.gpu.runner, random weights, the model's dtype) is
set up as the real executor sets it up: decode steps captured in CUDA graphs at the executor's
batch sizes, prefills at its graphed token counts. Then, per step, ``warmup`` untimed steps,
one step queued behind another on the stream, timed with CUDA events (``graph_pass_us``: the
GPU's time for the step with its launch gaps, from which the simulator takes each kernel's
launch gap; for a prefill, whose attention runs eagerly between graphed pieces, the host's
launches are in it), and ``repeats`` steps under torch.profiler, whose trace is parsed as
kvsim.calibration.kernel_chains parses a torchvision model's (:func:`trace_kernels`,
:func:`kernels_of_trace`: the passes must launch the same kernels; each kernel keeps its
median duration and its launch footprint). The steps measured:

* **decode** at each batch size of ``decode_batches``, every sequence at ``context_len``
  tokens (its blocks its own, so the step reads as many KV bytes as such a batch does);
* **prefill** at each token count of ``prefill_tokens``, as prompts of ``PROMPT_LEN`` tokens
  (one shorter prompt for the rest), none cached.

The output is one file per model, ``MODEL@GPU.steps.json`` (format in
kvsim.gpushare.llm_chains), each step's entry a kernel-chain profile document. Each model runs
in a Python process of its own, as kernel_chains' models do. Imports torch only once a GPU is
known.
"""

from __future__ import annotations

import datetime
import json
import math
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from kvsim.calibration.calibrate import builtin_gpu_for, require_cuda
from kvsim.calibration.kernel_chains import (
    each_in_a_fresh_process,
    kernels_of_trace,
    logged_paths,
    pass_spans_us,
    trace_kernels,
)
from kvsim.errors import KvsimError
from kvsim.gpushare.kernels import PROFILE_FORMAT
from kvsim.gpushare.llm_chains import STEPS_FORMAT, step_profile_path
from kvsim.hardware import load_gpu
from kvsim.models import load_model

DECODE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)
PREFILL_TOKENS = (128, 256, 512, 1024, 2048, 4096)
CONTEXT_LEN = 512
PROMPT_LEN = 512
BLOCK_SIZE = 16


def prompt_lengths(tokens: int, prompt_len: int = PROMPT_LEN) -> list[int]:
    """A prefill of ``tokens`` new tokens as prompts of ``prompt_len`` (the last one shorter)."""
    return [min(prompt_len, tokens - start) for start in range(0, tokens, prompt_len)]


def check_grid(models: list[str], decode_batches, prefill_tokens, context_len: int) -> None:
    """One line for the first bad input, before any GPU work: known models, positive sizes,
    and steps each model's context holds."""
    if not models:
        raise KvsimError("--llm names no model")
    for flag, sizes in (("decode batch sizes", decode_batches), ("prefill token counts", prefill_tokens)):
        if not sizes or any(not isinstance(s, int) or s < 1 for s in sizes):
            raise KvsimError(f"{flag} must be positive integers (got {list(sizes)})")
    for name in models:
        spec = load_model(name)
        longest = max(context_len, min(max(prefill_tokens), PROMPT_LEN))
        if longest > spec.max_model_len:
            raise KvsimError(
                f"{name}: a {longest}-token sequence exceeds its context of {spec.max_model_len}"
            )


def step_entry(
    kind: str, size: int, model: str, device: dict, kernels: list[dict], repeats: int, graph_pass_s: float
) -> dict:
    """One measured step as the step profile holds it: ``kernels`` are the trace's kernel
    events of ``repeats`` identical steps (trace_kernels), ``graph_pass_s`` the queued step."""
    where = f"{model} {kind} {size}"
    return {
        "kind": kind,
        "size": size,
        "profile": {
            "format": PROFILE_FORMAT,
            "model": model,
            "gpu": device,
            "pass_span_us": pass_spans_us(kernels, repeats),
            "graph_pass_us": graph_pass_s * 1e6,
            "kernels": kernels_of_trace(kernels, repeats, where),
        },
    }


def steps_document(model: str, device: dict, how: dict, entries: list[dict]) -> dict:
    return {
        "format": STEPS_FORMAT,
        "model": model,
        "gpu": device,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "how": how,
        "decode_context_len": how["context_len"],
        "steps": entries,
    }


def profile_llms(
    out: Path,
    models: list[str],
    gpu: str | None = None,
    repeats: int = 5,
    warmup: int = 3,
    log: Callable[[str], None] = print,
    decode_batches: tuple[int, ...] = DECODE_BATCHES,
    prefill_tokens: tuple[int, ...] = PREFILL_TOKENS,
    context_len: int = CONTEXT_LEN,
) -> list[Path]:
    """Measures each model's steps on GPU 0 and writes ``out/MODEL@GPU.steps.json``, each model
    in a Python process of its own; returns the paths."""
    if repeats < 1 or warmup < 0:
        raise KvsimError(f"--repeats must be at least 1 and --warmup at least 0 (got {repeats}, {warmup})")
    check_grid(models, decode_batches, prefill_tokens, context_len)
    require_cuda("gpushare profile --llm")
    gpu_name = load_gpu(gpu).name if gpu else None
    out.mkdir(parents=True, exist_ok=True)
    grid = (tuple(decode_batches), tuple(prefill_tokens), context_len)
    calls = [(out, model, gpu_name, repeats, warmup, *grid) for model in models]
    return logged_paths(each_in_a_fresh_process(profile_llm, calls), log)


def profile_llm(
    out: Path,
    model: str,
    gpu_name: str | None,
    repeats: int,
    warmup: int,
    decode_batches: tuple[int, ...],
    prefill_tokens: tuple[int, ...],
    context_len: int,
) -> tuple[Path, str]:
    """One model's step profile (profile_llms), written to ``out``: its path and a line to log."""
    import torch

    from kvsim.calibration.measure import environment
    from kvsim.gpu.runner import GRAPH_BATCH_SIZES, PREFILL_GRAPH_TOKENS, ModelRunner

    props = torch.cuda.get_device_properties(0)
    device = {**environment(), "name": gpu_name or builtin_gpu_for(props.name, props.total_memory).name}
    spec = load_model(model)
    per_seq = math.ceil(context_len / BLOCK_SIZE)
    num_blocks = max(max(decode_batches) * per_seq, math.ceil(max(prefill_tokens) / BLOCK_SIZE) + 1)
    runner = ModelRunner(spec, num_blocks, BLOCK_SIZE, seed=0)
    runner.capture(
        [b for b in GRAPH_BATCH_SIZES if b <= max(decode_batches)],
        [t for t in PREFILL_GRAPH_TOKENS if t <= max(prefill_tokens)],
    )
    tables = [list(range(i * per_seq, (i + 1) * per_seq)) for i in range(max(decode_batches))]

    def decode(batch: int) -> Callable[[], object]:
        return lambda: runner.decode([1] * batch, [context_len - 1] * batch, tables[:batch])

    def prefill(tokens: int) -> Callable[[], object]:
        lengths = prompt_lengths(tokens)
        starts = [sum(lengths[:i]) for i in range(len(lengths))]
        # starts are multiples of PROMPT_LEN, hence of BLOCK_SIZE: every prompt has blocks of its own
        prompt_tables = [
            list(range(s // BLOCK_SIZE, s // BLOCK_SIZE + math.ceil(n / BLOCK_SIZE)))
            for s, n in zip(starts, lengths)
        ]
        return lambda: runner.prefill([[1] * n for n in lengths], prompt_tables)

    steps = [("decode", b, decode(b)) for b in decode_batches] + [
        ("prefill", t, prefill(t)) for t in prefill_tokens
    ]
    # Every step's queued pass is timed before the first trace: once torch.profiler has traced,
    # CUPTI slows the kernels of every graph replayed in the process (kernel_chains' docstring).
    with torch.inference_mode():
        queued = []
        for _, _, step in steps:
            for _ in range(warmup):
                step()
            torch.cuda.synchronize()
            queued.append(statistics.median(_queued_seconds(step) for _ in range(repeats)))
        entries = [
            step_entry(kind, size, model, device, _traced_kernels(step, repeats), repeats, queued_s)
            for (kind, size, step), queued_s in zip(steps, queued)
        ]
    how = {
        "runner": "kvsim.gpu.runner.ModelRunner, random weights (seed 0), CUDA graphs as the executor captures them",
        "dtype": spec.dtype,
        "block_size": BLOCK_SIZE,
        "context_len": context_len,
        "prompt_len": PROMPT_LEN,
        "warmup_steps": warmup,
        "profiled_steps": repeats,
        "duration": "median over the profiled steps (torch.profiler / CUPTI kernel activity)",
        "graph_pass": "one step queued behind another on the stream, CUDA events around it",
    }
    path = step_profile_path(out, model, device["name"])
    path.write_text(json.dumps(steps_document(model, device, how, entries), indent=1) + "\n")
    counts = ", ".join(f"{e['kind']} {e['size']}: {len(e['profile']['kernels'])}" for e in entries)
    return path, f"{model}: kernels per step ({counts}) -> {path}"


def _queued_seconds(step: Callable[[], object]) -> float:
    """One step queued behind another on the stream, timed with CUDA events (seconds)."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    step()
    start.record()
    step()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e-3


def _traced_kernels(step: Callable[[], object], repeats: int) -> list[dict]:
    """The kernel events of ``repeats`` steps under torch.profiler (trace_kernels)."""
    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profiler:
        for _ in range(repeats):
            step()
            torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        trace_file = Path(tmp) / "trace.json"
        profiler.export_chrome_trace(str(trace_file))
        trace = json.loads(trace_file.read_text())
    return trace_kernels(trace)
