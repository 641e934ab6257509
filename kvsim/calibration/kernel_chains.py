"""``simcli gpushare profile``: each model's chain of kernels, measured on the GPU found.

For every model (torchvision's, Paella's eight by default; batch 1, a 1x3x224x224 input,
random weights, eval mode, no autograd), a few untimed forward passes warm cuDNN and the
allocator up, then ``repeats`` passes run under torch.profiler with CUDA activity. The
profiler's Chrome trace holds, for every kernel, its duration and the launch footprint CUPTI
reports: grid, block, registers per thread and shared memory per block (static + dynamic).
The trace is split into the repeats (each pass launches the same kernels in the same order;
a pass that does not is refused), and each kernel keeps the median of its durations. Also
kept, for comparison with the simulation's jobs alone: each kernel's start relative to the
pass's first kernel (median), and the pass's span from first kernel start to last kernel end
(median): in eager PyTorch at batch 1 the host's launches, not the kernels, may set the pace.
The same forward captured as one CUDA graph is timed with CUDA events, medians over
``graph_passes`` rounds: a pass queued behind another on its stream (``graph_pass_us``: the
GPU's own time, from which the simulator takes each kernel's launch gap), and the co-location
benchmark: k copies of the graph (k in COPIES, each with activations of its own) launched
together on an idle GPU, each on its own stream, their mean latency (``colocated_us``). Its
single copy, launched on an idle GPU, takes longer than the queued pass by the job's launch
latency (the graph's submission); kvsim.gpushare.interference fits the model's
``interference`` to the rest, and the fit and its errors are written beside the measurement.
Graph timings start after WARM_S of untimed replays: a GPU idle a moment before runs its
first passes at lower clocks. Every pass, eager or graphed, runs on the stream the graphs are
captured on, as the real executor (kvsim.gpushare.cuda) runs its jobs.

**Each model in a process of its own, graphs timed before the trace.** Once torch.profiler
has traced CUDA activity in a process, CUPTI stays attached to it and every kernel a graph
replays afterwards runs a little longer; and on an H200 a model's graphs timed in a process
that had already timed another model's also ran longer per kernel, for a reason not found.
The executor (kvsim.gpushare.cuda) never profiles; each model measured in a fresh process, its
graphs timed first, took what the executor's took (tests/gpushare, GPU-marked).

The output is one file per model, ``MODEL@GPU.json`` (kvsim.gpushare.kernels describes the
format), with the GPU, driver, CUDA, torch and torchvision versions and the date. Imports torch
only once a GPU is known.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from kvsim.calibration.calibrate import builtin_gpu_for, require_cuda
from kvsim.errors import KvsimError
from kvsim.gpushare.interference import fit_interference
from kvsim.gpushare.kernels import PROFILE_FORMAT, load_chain, profile_path
from kvsim.gpushare.workloads import BUILD_OPTIONS, INPUT_SHAPE, PAELLA_MODELS
from kvsim.hardware import SM_LIMITS, load_gpu

#: Builders that would otherwise add training-only heads or a slow scipy weight init.
DTYPES = ("float32", "float16")
#: Copies of a model launched together in the co-location benchmark.
COPIES = (1, 2, 4, 8)
#: Untimed graph replays before the graph timings (seconds).
WARM_S = 0.5
#: What CUPTI's kernel records carry in the trace's ``args`` and a chain needs.
FOOTPRINT_ARGS = {"grid", "block", "registers per thread", "shared memory"}


def trace_kernels(trace: dict) -> list[dict]:
    """The kernel events of a Chrome trace (torch.profiler's export), in start order."""
    events = trace.get("traceEvents", [])
    return sorted(
        (e for e in events if e.get("ph") == "X" and e.get("cat", "").lower() == "kernel"),
        key=lambda e: e["ts"],
    )


def kernels_of_trace(kernels: list[dict], repeats: int, where: str) -> list[dict]:
    """The kernel chain of ``kernels`` (trace_kernels) from ``repeats`` identical passes: per
    kernel, its name, median duration (us), grid, block, registers per thread, shared memory
    per block, and median start relative to the pass's first kernel (us). Refused when the
    passes do not launch the same kernels with the same footprints."""
    if not kernels or len(kernels) % repeats:
        raise KvsimError(f"{where}: {len(kernels)} kernels in the trace do not split into {repeats} passes")
    bare = next((e for e in kernels if not FOOTPRINT_ARGS <= set(e.get("args", {}))), None)
    if bare is not None:
        raise KvsimError(f"{where}: the trace gives no launch footprint for kernel {bare.get('name')!r}")
    per_pass = len(kernels) // repeats
    passes = [kernels[i * per_pass : (i + 1) * per_pass] for i in range(repeats)]
    chain = []
    for index, first in enumerate(passes[0]):
        same = [p[index] for p in passes]
        footprint = lambda e: (
            e["name"],
            e["args"]["grid"],
            e["args"]["block"],
            e["args"]["registers per thread"],
        )
        if any(footprint(e) != footprint(first) for e in same):
            raise KvsimError(f"{where}: kernel {index} differs between passes ({first['name']})")
        chain.append(
            {
                "name": first["name"],
                "duration_us": statistics.median(e["dur"] for e in same),
                "grid": list(first["args"]["grid"]),
                "block": list(first["args"]["block"]),
                "registers_per_thread": int(first["args"]["registers per thread"]),
                "shared_memory_bytes": int(first["args"]["shared memory"]),
                "start_offset_us": statistics.median(e["ts"] - p[0]["ts"] for e, p in zip(same, passes)),
            }
        )
    return chain


def pass_spans_us(kernels: list[dict], repeats: int) -> float:
    """Median span of a pass of ``kernels`` (trace_kernels): first kernel start to last kernel end (us)."""
    per_pass = len(kernels) // repeats
    spans = []
    for i in range(repeats):
        chunk = kernels[i * per_pass : (i + 1) * per_pass]
        spans.append(max(e["ts"] + e["dur"] for e in chunk) - chunk[0]["ts"])
    return statistics.median(spans)


def capture_graphs(network, batch, count: int, stream) -> list:
    """``count`` CUDA graphs of ``network(batch)``, each in a memory pool of its own (so copies
    may run at once), captured on ``stream`` (where the forward has run already: see
    ``profile_models``)."""
    import torch

    torch.cuda.synchronize()
    graphs = []
    for _ in range(count):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            network(batch)
        graphs.append(graph)
    return graphs


def colocated_seconds(graphs: list, streams: list, copies: int) -> float:
    """Mean latency of ``copies`` of the graphs launched together, each on its own stream and
    each between two CUDA events of that stream (one round)."""
    import torch

    torch.cuda.synchronize()
    events = [
        (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(copies)
    ]
    for graph, stream, (start, end) in zip(graphs, streams, events):
        with torch.cuda.stream(stream):
            start.record()
            graph.replay()
            end.record()
    torch.cuda.synchronize()
    return statistics.fmean(start.elapsed_time(end) * 1e-3 for start, end in events)


def queued_pass_seconds(ahead, graph, stream) -> float:
    """One pass of ``graph`` launched while the stream is still busy with ``ahead`` (another
    copy of it), so the GPU starts it the moment that one ends: its time holds no launch
    latency."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    with torch.cuda.stream(stream):
        ahead.replay()
        start.record()
        graph.replay()
        end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e-3


def graph_timings(network, batch, rounds: int, streams: list) -> tuple[float, dict[int, float]]:
    """The forward as one graph, captured on ``streams[0]``: its pass queued behind another
    (queued_pass_seconds) and the co-location benchmark on ``max(COPIES)`` streams, whose single
    copy is a pass launched on an idle GPU (seconds), each the median over ``rounds`` rounds,
    after WARM_S of untimed replays."""
    graphs = capture_graphs(network, batch, max(COPIES), streams[0])
    warm_until = time.perf_counter() + WARM_S
    while time.perf_counter() < warm_until:
        colocated_seconds(graphs, streams, max(COPIES))
    queued = statistics.median(queued_pass_seconds(graphs[1], graphs[0], streams[0]) for _ in range(rounds))
    colocated = {
        k: statistics.median(colocated_seconds(graphs, streams, k) for _ in range(rounds)) for k in COPIES
    }
    return queued, colocated


def profile_models(
    out: Path,
    models: tuple[str, ...] = PAELLA_MODELS,
    dtype: str = "float32",
    repeats: int = 5,
    warmup: int = 10,
    gpu: str | None = None,
    log: Callable[[str], None] = print,
    graph_passes: int = 50,
) -> list[Path]:
    """Measures each model's chain on GPU 0 and writes ``out/MODEL@GPU.json``, each model in a
    Python process of its own (see the module docstring); returns the paths."""
    if dtype not in DTYPES:
        raise KvsimError(f"--dtype must be one of {', '.join(DTYPES)} (got {dtype!r})")
    if repeats < 1 or warmup < 0:
        raise KvsimError(f"--repeats must be at least 1 and --warmup at least 0 (got {repeats}, {warmup})")
    require_cuda("gpushare profile")
    if importlib.util.find_spec("torchvision") is None:
        raise KvsimError("gpushare profile needs torchvision (its models are the profiled ones)")
    import torchvision

    unknown = [m for m in models if not hasattr(torchvision.models, m)]
    if unknown:
        raise KvsimError(f"torchvision has no model {', '.join(unknown)}")
    gpu_name = load_gpu(gpu).name if gpu else None
    out.mkdir(parents=True, exist_ok=True)
    calls = [(out, model, dtype, repeats, warmup, gpu_name, graph_passes) for model in models]
    return logged_paths(each_in_a_fresh_process(profile_model, calls), log)


def each_in_a_fresh_process(work: Callable, calls: list[tuple]) -> Iterator:
    """``work(*args)`` for each ``args`` of ``calls``, each in a Python process of its own
    (spawned, so nothing of this one's CUDA state comes with it): state such as a profiler's
    CUPTI session lasts as long as its process (see the module docstring)."""
    fresh = multiprocessing.get_context("spawn")
    for args in calls:
        with fresh.Pool(1) as process:
            yield process.apply(work, args)


def logged_paths(results: Iterable[tuple[Path, str]], log: Callable[[str], None]) -> list[Path]:
    """The paths of (path, line) results, each line logged as its result arrives."""
    written = []
    for path, line in results:
        log(line)
        written.append(path)
    return written


def profile_model(
    out: Path, model: str, dtype: str, repeats: int, warmup: int, gpu_name: str | None, graph_passes: int
) -> tuple[Path, str]:
    """One model's profile (profile_models), written to ``out``: its path and a line to log.
    Graphs are timed before the trace is taken: see the module docstring."""
    import torch
    import torchvision

    from kvsim.calibration.measure import environment

    props = torch.cuda.get_device_properties(0)
    gpu_name = gpu_name or builtin_gpu_for(props.name, props.total_memory).name
    device = {
        **environment(),
        "name": gpu_name,
        "torchvision": torchvision.__version__,
        "max_threads_per_sm": getattr(props, "max_threads_per_multi_processor", None),
        "registers_per_sm": getattr(props, "regs_per_multiprocessor", None),
        "shared_memory_per_sm": getattr(props, "shared_memory_per_multiprocessor", None),
    }
    torch.manual_seed(0)
    network = getattr(torchvision.models, model)(weights=None, **BUILD_OPTIONS.get(model, {}))
    network = network.eval().to("cuda", getattr(torch, dtype))
    batch = torch.randn(INPUT_SHAPE, device="cuda", dtype=getattr(torch, dtype))
    streams = [torch.cuda.Stream() for _ in range(max(COPIES))]
    streams[0].wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(streams[0]):
        for _ in range(warmup):
            network(batch)
        torch.cuda.synchronize()
        graph_pass_s, colocated_s = graph_timings(network, batch, graph_passes, streams)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profiler:
            for _ in range(repeats):
                network(batch)
                torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        trace_file = Path(tmp) / "trace.json"
        profiler.export_chrome_trace(str(trace_file))
        trace = json.loads(trace_file.read_text())
    kernels = trace_kernels(trace)
    chain = kernels_of_trace(kernels, repeats, model)
    doc = {
        "format": PROFILE_FORMAT,
        "model": model,
        "gpu": device,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "how": {
            "batch": INPUT_SHAPE[0],
            "input_shape": list(INPUT_SHAPE),
            "dtype": dtype,
            "weights": "random (torch.manual_seed(0))",
            "mode": "eval, torch.inference_mode(), eager",
            "warmup_passes": warmup,
            "profiled_passes": repeats,
            "duration": "median over the profiled passes (torch.profiler / CUPTI kernel activity)",
            "graph_pass": f"one CUDA graph of the forward queued behind another on its stream, CUDA events around it, median of {graph_passes}, after {WARM_S} s of untimed replays",
            "colocated": "k graphs of the forward launched together on an idle GPU, one stream each, mean latency; median of as many rounds",
        },
        "pass_span_us": pass_spans_us(kernels, repeats),
        "graph_pass_us": graph_pass_s * 1e6,
        "colocated_us": {str(k): t * 1e6 for k, t in colocated_s.items()},
        "kernels": chain,
    }
    path = profile_path(out, model, gpu_name)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    fitted = ""
    if gpu_name in SM_LIMITS:  # the simulator runs only GPUs whose SM limits it knows
        interference, errors = fit_interference(
            load_chain(path, model, gpu_name), SM_LIMITS[gpu_name], colocated_s
        )
        doc["interference"] = interference
        doc["interference_fit"] = {
            "by": "kvsim.gpushare.interference.fit_interference",
            "slowdown_error": {str(k): e for k, e in errors.items()},
        }
        path.write_text(json.dumps(doc, indent=1) + "\n")
        slowdowns = ", ".join(f"{k} copies {e:+.1%}" for k, e in errors.items())
        fitted = f", interference {interference:.2f} (simulated slowdown errors: {slowdowns})"
    total = sum(k["duration_us"] for k in chain)
    return path, (
        f"{model}: {len(chain)} kernels, {total:.0f} us of kernels, pass span "
        f"{doc['pass_span_us']:.0f} us, as one graph {doc['graph_pass_us']:.0f} us{fitted} -> {path}"
    )
