"""Issue 17 against the real GPU: the hardware baselines and Paella's dispatcher run on the
device, and set beside what the simulator predicts for the same jobs.

:func:`measure_sweep` replays, per policy and load, the jobs `simcli gpushare load` simulates
(the same mix, seed, sigma and number of jobs, at the rate the same profiles give the load,
so a load means the same arrivals in both) on the GPU found, with kvsim.gpushare.replay and
kvsim.gpushare.cuda. It writes, after every point (a run cut short keeps what it measured):

* ``load.csv``: `simcli gpushare load`'s table, measured (a model's slowdown is over its
  latency alone as measured here);
* ``jobs/POLICY@LOAD.csv``: every job's times (kvsim.gpushare.replay.ReplayResult);
* ``measure.json``: the setup, the device (GPU, driver, CUDA, torch, torchvision, date), each
  model's blocks and their times alone, and per point what the host loop did.

:func:`compare_setup` and :func:`compare_real` simulate the measured points and set each
beside its measurement.
"""

from __future__ import annotations

import datetime
import gc
import importlib.util
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from kvsim.errors import KvsimError
from kvsim.experiments.gpushare import SharedGPUSetup, load_setup, load_sweep
from kvsim.gpushare.policies.base import DispatchSettings, Workload
from kvsim.gpushare.replay import Replay, build_mode, real_order, step_chain, step_jobs
from kvsim.gpushare.simulate import latency_summary
from kvsim.gpushare.workloads import generate_jobs

#: A point is below saturation when the GPU finished its jobs at least this fraction as fast
#: as they arrived.
BELOW_SATURATION = 0.9
COMPARED = ("throughput_jobs_s", "latency_mean_s", "latency_p99_s")


@dataclass(frozen=True)
class RealSettings:
    """The real loop's knobs that the simulation has no counterpart of."""

    streams: int = 32  # cuda-multi-stream: a job's stream is its id modulo this many
    inflight_limit: int = 4  # the dispatcher: steps in flight at once (it cannot see SM room)
    alone_passes: int = 50  # jobs timed alone per model (medians)


def check_real_policies(policies: list[str], settings: DispatchSettings) -> None:
    for policy in policies:
        real_order(policy, settings)


def jobs_file(out: Path, policy: str, load: float) -> Path:
    return out / "jobs" / f"{policy}@{load:g}.csv"


def measure_sweep(
    setup: SharedGPUSetup,
    policies: list[str],
    loads: list[float],
    out: Path,
    real: RealSettings = RealSettings(),
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Every policy at every load on GPU 0; returns load.csv's table (module docstring)."""
    check_real_policies(policies, setup.settings)
    for flag, value in (("--streams", real.streams), ("--inflight-steps", real.inflight_limit)):
        if value < 1:
            raise KvsimError(f"{flag} must be at least 1 (got {value})")
    # Read when the CUDA context is created: set before torch touches the GPU.
    os.environ["CUDA_DEVICE_MAX_CONNECTIONS"] = str(setup.settings.hardware_queues)
    from kvsim.calibration.calibrate import builtin_gpu_for, require_cuda

    require_cuda("gpushare measure")
    if importlib.util.find_spec("torchvision") is None:
        raise KvsimError("gpushare measure needs torchvision (its models are the measured ones)")
    import torch
    import torchvision

    from kvsim.calibration.measure import environment
    from kvsim.gpushare.cuda import CudaGPU

    props = torch.cuda.get_device_properties(0)
    found = builtin_gpu_for(props.name, props.total_memory).name
    if found != setup.gpu:
        raise KvsimError(
            f"this GPU is {found} but --gpu is {setup.gpu}: measure on the GPU that is simulated"
        )
    mix = setup.mix
    started = time.perf_counter()
    gpu = CudaGPU(mix.models, mix.caps, max(real.streams, real.inflight_limit))
    log(f"captured {sum(mix.caps)} slots of {', '.join(mix.models)} in {time.perf_counter() - started:.1f} s")
    chains, alone, blocks = {}, {}, {}
    for m, model in enumerate(mix.models):
        times, alone[model] = gpu.time_alone(m, real.alone_passes)
        chains[model] = step_chain(model, gpu.block_names[m], times)
        blocks[model] = dict(zip(gpu.block_names[m], times))
        log(
            f"{model}: {len(times)} blocks, alone {alone[model] * 1e3:.3f} ms measured, "
            f"{setup.chains[model].alone_s * 1e3:.3f} ms simulated"
        )
    workload = Workload(mix.models, chains, mix.probabilities)
    meta = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": {**environment(), "torchvision": torchvision.__version__},
        "gpu": setup.gpu,
        "mix": mix.name,
        "num_jobs": setup.num_jobs,
        "sigma": setup.sigma,
        "seed": setup.seed,
        "settings": {k: v for k, v in asdict(setup.settings).items() if math.isfinite(v)},
        "real": asdict(real),
        "cuda_device_max_connections": os.environ["CUDA_DEVICE_MAX_CONNECTIONS"],
        "alone_s": {"measured": alone, "simulated": setup.alone_s},
        "blocks_alone_s": blocks,
        "points": [],
    }
    (out / "jobs").mkdir(parents=True, exist_ok=True)
    tables = []
    for policy in policies:
        for load in loads:
            rate = setup.rate_for_load(load)
            stream = generate_jobs(mix, rate, setup.num_jobs, setup.sigma, setup.seed)
            mode = build_mode(policy, setup.settings, workload, real.streams, real.inflight_limit)
            replay = Replay(step_jobs(mix, stream, chains), mix.caps, gpu, mode)
            began = time.perf_counter()
            gc.disable()  # a collection mid-run would stall the one host thread
            try:
                result = replay.run()
            finally:
                gc.enable()
            jobs = result.jobs
            jobs.to_csv(jobs_file(out, policy, load), index=False)
            late = jobs.released - jobs.arrival
            meta["points"].append(
                {
                    "policy": policy,
                    "load": load,
                    "wall_s": time.perf_counter() - began,
                    "launches": result.launches,
                    "host_busy_s": result.busy_s,
                    "release_late_p50_s": float(late.quantile(0.5)),
                    "release_late_p99_s": float(late.quantile(0.99)),
                    # the host's launch path as the GPU saw it (queueing behind other work too)
                    "launch_to_start_p50_s": float((jobs.started - jobs.launched).quantile(0.5)),
                    "clock_offset_s": gpu.clock_offset(),
                }
            )
            summary = latency_summary(jobs, alone)
            tables.append(summary.assign(policy=policy, load=load, offered_jobs_s=rate))
            table = pd.concat(tables, ignore_index=True)
            table = table[["policy", "load", "offered_jobs_s", *summary.columns]]
            table.to_csv(out / "load.csv", index=False)
            (out / "measure.json").write_text(json.dumps(meta, indent=1) + "\n")
            overall = summary[summary.model == "all"].iloc[0]
            log(
                f"{policy} load {load:g}: {overall.throughput_jobs_s:.0f} jobs/s, mean "
                f"{overall.latency_mean_s * 1e3:.3f} ms, p99 {overall.latency_p99_s * 1e3:.3f} ms, "
                f"release p99 late {late.quantile(0.99) * 1e6:.0f} us, {time.perf_counter() - began:.1f} s"
            )
    return table


def measured_vs_simulated(
    measured: pd.DataFrame, simulated: pd.DataFrame, arrival_rates: dict[float, float]
) -> pd.DataFrame:
    """Per measured point and model (and "all"): throughput, mean and p99 latency measured and
    simulated, and the simulation's relative error (simulated / measured - 1).
    ``below_saturation`` (per point, from its "all" row): the measured GPU finished jobs at
    least BELOW_SATURATION times as fast as they arrived (``arrival_rates``, per load)."""
    keys = ["policy", "load", "model"]
    both = measured.merge(simulated, on=keys, how="left", suffixes=("_measured", "_simulated"))
    unmatched = both[both.jobs_simulated.isna() | (both.jobs_simulated != both.jobs_measured)]
    if len(unmatched):
        row = unmatched.iloc[0]
        raise KvsimError(
            f"the simulation does not have the measured jobs of {row.policy} at load {row.load:g} ({row.model})"
        )
    table = both[[*keys, "offered_jobs_s_measured", "jobs_measured"]].rename(
        columns={"offered_jobs_s_measured": "offered_jobs_s", "jobs_measured": "jobs"}
    )
    for metric in COMPARED:
        table[f"{metric}_measured"] = both[f"{metric}_measured"]
        table[f"{metric}_simulated"] = both[f"{metric}_simulated"]
        table[f"{metric}_error"] = both[f"{metric}_simulated"] / both[f"{metric}_measured"] - 1
    overall = table[table.model == "all"]
    below = overall.throughput_jobs_s_measured >= BELOW_SATURATION * overall.load.map(arrival_rates)
    flags = dict(zip(zip(overall.policy, overall.load), below))
    table["below_saturation"] = [flags[point] for point in zip(table.policy, table.load)]
    return table


def compare_setup(
    folder: Path,
    profiles: Path | None,
    outstanding_limit: int = DispatchSettings.outstanding_limit,
    dispatch_overhead_s: float = DispatchSettings.dispatch_overhead_s,
) -> tuple[SharedGPUSetup, pd.DataFrame]:
    """The simulation's setup for the points measured in ``folder`` (measure_sweep's), with
    ``profiles`` (the shipped ones by default), and the measured table; every input checked."""
    meta_file, measured_file = folder / "measure.json", folder / "load.csv"
    if not (meta_file.is_file() and measured_file.is_file()):
        raise KvsimError(
            f"{folder} holds no measure.json and load.csv: not the output of `simcli gpushare measure`"
        )
    meta = json.loads(meta_file.read_text())
    settings = DispatchSettings(
        hardware_queues=meta["settings"]["hardware_queues"],
        outstanding_limit=outstanding_limit,
        dispatch_overhead_s=dispatch_overhead_s,
        ewma_alpha=meta["settings"]["ewma_alpha"],
        fairness_threshold=meta["settings"].get("fairness_threshold", math.inf),
    )
    setup = load_setup(
        meta["gpu"], meta["mix"], profiles, meta["num_jobs"], meta["sigma"], meta["seed"], settings
    )
    measured = pd.read_csv(measured_file)
    return replace(setup, load_unit_s=measured_load_unit_s(measured)), measured


def measured_load_unit_s(measured: pd.DataFrame) -> float:
    """What load 1 stood for in the measurement (SharedGPUSetup.load_unit_s): a point's load
    over the rate its jobs were drawn at (its ``offered_jobs_s``). The profiles that priced the
    load when it was measured may not be the ones the simulation prices the jobs with."""
    overall = (
        measured[measured.model == "all"] if {"model", "load", "offered_jobs_s"} <= set(measured) else None
    )
    if overall is None or overall.empty:
        raise KvsimError(
            "load.csv holds no model 'all' rows with load and offered_jobs_s: not measure's table"
        )
    units = (overall.load / overall.offered_jobs_s).to_numpy()
    if not np.allclose(units, units[0], rtol=1e-9):
        raise KvsimError("load.csv's points were not drawn at rates of one load unit: not one measurement")
    return float(units[0])


def compare_real(
    setup: SharedGPUSetup, measured: pd.DataFrame, jobs: int, on_point: Callable[[], None] = lambda: None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The measured points simulated on the same jobs (``jobs`` processes): (the comparison,
    the simulated load table)."""
    loads = sorted(measured.load.unique())
    simulated = load_sweep(setup, list(measured.policy.unique()), loads, jobs, on_point)
    rates = {}
    for load in loads:
        stream = generate_jobs(setup.mix, setup.rate_for_load(load), setup.num_jobs, setup.sigma, setup.seed)
        rates[load] = setup.num_jobs / stream.arrivals[-1]
    return measured_vs_simulated(measured, simulated, rates), simulated
