"""``simcli validate``: the same trace through the real executor and through the simulator,
metric by metric, with the simulator's relative error against the measurement.

The simulator side uses the profile calibrated on this GPU, so what is measured here is the
cost model's (and only the cost model's) error: both sides run the same scheduler and block
manager code on the same requests.
"""

from __future__ import annotations

import json
import platform
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from kvsim.config import SimConfig
from kvsim.engine.metrics import summarize
from kvsim.errors import KvsimError
from kvsim.workloads.trace import Trace

COMPARED = (
    "throughput_req_s",
    "throughput_output_tok_s",
    "ttft_s_mean",
    "ttft_s_p50",
    "ttft_s_p90",
    "ttft_s_p99",
    "tpot_s_mean",
    "tpot_s_p50",
    "tpot_s_p90",
    "tpot_s_p99",
    "e2e_latency_s_mean",
    "e2e_latency_s_p50",
    "e2e_latency_s_p90",
    "e2e_latency_s_p99",
    "normalized_latency_s_per_token",
    "mean_batch_size",
    "preemptions",
)
GPU_NAMES = {
    "H100": "h100-sxm-80gb",
    "H200": "h200-141gb",
    "A100-SXM4-80GB": "a100-80gb",
    "A100-SXM4-40GB": "a100-40gb",
}


def detect_gpu() -> str:
    """kvsim's name for the CUDA device present (one-line error if none or unknown)."""
    try:
        import torch
    except ImportError:
        raise KvsimError("validation needs torch with CUDA (pip install -e '.[gpu]')") from None
    if not torch.cuda.is_available():
        raise KvsimError("validation runs the real model: no CUDA GPU is visible on this machine")
    name = torch.cuda.get_device_name()
    for key, gpu in GPU_NAMES.items():
        if key in name:
            return gpu
    raise KvsimError(f"no built-in spec for GPU {name!r}; pass --gpu with a GPU spec file")


def environment() -> dict:
    import torch

    props = torch.cuda.get_device_properties(0)
    return {
        "gpu": props.name,
        "gpu_memory_bytes": props.total_memory,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "driver": _driver_version(),
        "python": platform.python_version(),
    }


def _driver_version() -> str:
    try:
        import subprocess

        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


class RunnerCache:
    """Keeps the last model runner: building one (weights, KV cache, CUDA graphs) takes tens of
    seconds on a 13B model, and consecutive points usually share it."""

    def __init__(self, device: str) -> None:
        self.device, self.key, self.runner = device, None, None

    def get(
        self,
        model,
        num_blocks: int,
        block_size: int,
        swap_blocks: int,
        seed: int,
        max_batch: int,
        max_tokens: int,
        graphs: bool = True,
    ):
        """The runner for these settings; ``graphs`` off: none captured, and the unfused layer
        operations of the engine eager profiles stand for (an eager run)."""
        from kvsim.gpu.runner import GRAPH_BATCH_SIZES, PREFILL_GRAPH_TOKENS, ModelRunner

        key = (model, num_blocks, block_size, swap_blocks, seed, max_batch, max_tokens, graphs)
        if key != self.key:
            self.runner = None  # free the previous model's memory first
            runner = ModelRunner(
                model,
                num_blocks,
                block_size,
                device=self.device,
                seed=seed,
                num_host_blocks=swap_blocks,
                fused=graphs,
            )
            if runner.device.type == "cuda" and graphs:
                runner.capture(
                    [b for b in GRAPH_BATCH_SIZES if b <= max_batch],
                    [t for t in PREFILL_GRAPH_TOKENS if t <= max_tokens],
                )
            self.key, self.runner = key, runner
        return self.runner


def validate_point(config: SimConfig, runners: RunnerCache) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """One (model, trace, rate, policy) point: returns the comparison row, the per-request
    latencies of both sides, and the per-step measured vs predicted times."""
    from kvsim.experiments.run import context_check, run
    from kvsim.gpu.executor import STEP_COLUMNS, RealExecutor
    from kvsim.policies.registry import get_policy

    simulated = run(config)  # also resolves model, capacity, trace and cost model
    trace, cap, model = simulated.trace, simulated.capacity, simulated.model
    policy, context = get_policy(config.policy), simulated.policy_context
    scheduler = policy.build(context)
    runner = runners.get(
        model,
        cap.num_blocks,
        config.block_size,
        context.swap_blocks,
        config.seed,
        config.max_num_seqs,
        context.max_num_batched_tokens,
        not config.eager,  # graphs
    )
    warm = min(4, len(trace))  # first prefills pay cuBLAS/allocator warm-up: keep it out
    RealExecutor(policy.build(context), runner).run(
        Trace("warm-up", np.zeros(warm), trace.prompt_len[:warm], np.minimum(trace.output_len[:warm], 4))
    )
    executor = RealExecutor(scheduler, runner, predictor=simulated.cost_model, seed=config.seed)
    measured_recorder = executor.run(trace, intake_check=context_check(model))
    measured = summarize(measured_recorder, cap.num_blocks)

    row = {
        "model": model.name,
        "trace": config.trace,
        "rate": config.rate,
        "policy": config.policy,
        "block_size": config.block_size,
        "num_requests": len(trace),
        "seed": config.seed,
        "cost_model": simulated.cost_model.name,
    }
    for metric in COMPARED:
        m, s = float(measured[metric]), float(simulated.summary[metric])
        row[f"{metric}_measured"] = m
        row[f"{metric}_simulated"] = s
        row[f"{metric}_rel_error"] = (s - m) / m if m else float("nan")
    real_requests = measured_recorder.requests_frame()
    sim_requests = simulated.recorder.requests_frame()
    # Both sides' timelines in full, so any metric can be recomputed without the GPU.
    requests = pd.DataFrame(
        {
            "point": point_label(config),
            "request_id": real_requests.request_id,
            "status": real_requests.status,
            "prompt_len": real_requests.prompt_len,
            "output_len": real_requests.output_len,
            "arrival": real_requests.arrival,
            "first_token_measured": real_requests.first_token,
            "first_token_simulated": sim_requests.first_token,
            "finish_measured": real_requests.finish,
            "finish_simulated": sim_requests.finish,
            "e2e_measured": real_requests.e2e_latency,
            "e2e_simulated": sim_requests.e2e_latency,
        }
    )
    steps = pd.DataFrame(executor.step_times, columns=STEP_COLUMNS)
    steps.insert(0, "point", point_label(config))
    return row, requests, steps


def point_label(config: SimConfig) -> str:
    """A point's name in plots and CSVs: what sets it apart from the campaign's other points."""
    rate = "no rate" if config.rate is None else f"{config.rate:g} req/s"  # None: the trace's own arrivals
    label = f"{config.model} {config.trace} {rate} {config.policy}"
    default = SimConfig()
    if config.gpu_memory_utilization != default.gpu_memory_utilization:
        label += f", memory {config.gpu_memory_utilization:g}"
    if (
        config.preemption != default.preemption
        or config.gpu_memory_utilization != default.gpu_memory_utilization
    ):
        label += f", {config.preemption}"
    if config.beam_width > 1:
        label += f", beam {config.beam_width}"
    if config.n > 1:
        label += f", n {config.n}"
    return label


def run_campaign(configs: list[SimConfig], out_dir: Path, progress=print) -> pd.DataFrame:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, requests, steps = [], [], []
    runners = RunnerCache("cuda")
    for config in configs:
        progress(f"validating {config.model} {config.trace} rate {config.rate} {config.policy}")
        row, req, st = validate_point(config, runners)
        rows.append(row)
        requests.append(req)
        steps.append(st)
        # Written after every point, so a campaign cut short keeps what it measured.
        pd.DataFrame(rows).to_csv(out_dir / "validation.csv", index=False)
        pd.concat(requests).to_csv(out_dir / "requests.csv", index=False)
        pd.concat(steps).to_csv(out_dir / "steps.csv", index=False)
        (out_dir / "environment.json").write_text(
            json.dumps({**environment(), "configs": [c.to_dict() for c in configs]}, indent=2) + "\n"
        )
    return pd.DataFrame(rows)


def load_campaign(path: Path) -> list[dict]:
    """A campaign file: a JSON list of points, each a dict of SimConfig fields."""
    try:
        points = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise KvsimError(f"cannot read campaign {path}: {err}") from None
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise KvsimError(f"campaign {path} must be a JSON list of objects")
    try:
        for point in points:
            SimConfig(**point)
    except TypeError as err:
        raise KvsimError(f"campaign {path}: {err}") from None
    return points


def relative_errors(table: pd.DataFrame) -> pd.DataFrame:
    """The headline columns: each metric's relative error, one row per point."""
    keep = ["model", "trace", "rate", "policy"] + [f"{m}_rel_error" for m in COMPARED]
    return table[[c for c in keep if c in table]]


def step_error_summary(steps: pd.DataFrame) -> dict:
    err = (steps.predicted_s - steps.measured_s) / steps.measured_s
    return {
        kind: {
            "steps": int(len(e)),
            "mean": float(e.mean()),
            "mean_abs": float(e.abs().mean()),
            "p90_abs": float(np.percentile(e.abs(), 90)),
        }
        for kind, e in err.groupby(steps.kind)
    }


def with_fresh_profiles(configs: list[SimConfig], out: Path, log=print) -> list[SimConfig]:
    """Each config pointed at a profile calibrated now, on this GPU, one per model, block size
    and runner (graphs or eager)."""
    from kvsim.calibration.calibrate import calibrate as run_calibration

    profiles: dict[tuple[str, int, bool], Path] = {}

    def key(config: SimConfig) -> tuple[str, int, bool]:
        return config.model, config.block_size, config.eager

    for config in configs:
        if key(config) not in profiles:
            eager = "-eager" if config.eager else ""
            _, profiles[key(config)] = run_calibration(
                config.model,
                out / f"{config.model}{eager}-block{config.block_size}.profile.json",
                block_size=config.block_size,
                log=log,
                eager=config.eager,
            )
    return [replace(c, profile=str(profiles[key(c)])) for c in configs]


REPRICED = {  # metric -> heading
    "throughput_req_s": "throughput",
    "normalized_latency_s_per_token": "normalized latency",
    "ttft_s_p90": "TTFT p90",
    "tpot_s_mean": "TPOT mean",
    "e2e_latency_s_p90": "e2e p90",
}


def reprice_campaign(folder: Path, profile: str | None) -> pd.DataFrame:
    """A measured campaign (``simcli validate --out FOLDER``) against the simulator priced by
    ``profile`` (None: the profile each point would use by default), without a GPU: each
    point's configuration (environment.json) simulated again, its requests checked to be the
    measured ones, and both sides' metrics computed alike from the request timelines. One row
    per point: each metric measured, simulated and the relative error."""
    from kvsim.engine.metrics import served_summary
    from kvsim.experiments.run import run

    try:
        configs = json.loads((folder / "environment.json").read_text())["configs"]
        requests = pd.read_csv(folder / "requests.csv")
    except (OSError, KeyError, json.JSONDecodeError) as err:
        raise KvsimError(f"{folder} is not a validation campaign's folder: {err}") from None
    rows = []
    for config in (SimConfig(**{**c, "profile": profile or c["profile"]}).validate() for c in configs):
        measured = requests[requests.point == point_label(config)].sort_values("request_id")
        simulated = run(config)
        frame = simulated.recorder.requests_frame().sort_values("request_id")
        if not np.array_equal(
            frame.prompt_len.to_numpy(), measured.prompt_len.to_numpy()
        ) or not np.array_equal(frame.output_len.to_numpy(), measured.output_len.to_numpy()):
            raise KvsimError(f"{point_label(config)}: the simulated requests are not the measured ones")
        done = measured.status.to_numpy() == "completed"
        first_arrival = float(measured.arrival.min())

        def served(first_token, finish) -> dict:
            return served_summary(
                measured.arrival.to_numpy()[done],
                first_token[done],
                finish[done],
                measured.prompt_len.to_numpy()[done],
                measured.output_len.to_numpy()[done],
                first_arrival,
            )

        real = served(measured.first_token_measured.to_numpy(), measured.finish_measured.to_numpy())
        sim = served(frame.first_token.to_numpy(), frame.finish.to_numpy())
        row = {"point": point_label(config), "cost_model": simulated.cost_model.name}
        for metric in REPRICED:
            row[f"{metric}_measured"], row[f"{metric}_simulated"] = real[metric], sim[metric]
            row[f"{metric}_rel_error"] = sim[metric] / real[metric] - 1.0
        rows.append(row)
    return pd.DataFrame(rows)
