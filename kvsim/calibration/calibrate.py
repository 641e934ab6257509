"""``simcli calibrate``: measure on the GPU found, fit, write the profile, report the fit.

Imports nothing of the simulator (the GPU machine need not have simpy) and torch only
once a GPU is known to be there.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path

from kvsim.calibration.fit import fit_profile, format_report
from kvsim.config import MAX_GPUS_PER_NODE
from kvsim.cost.profile import profile_name, save_profile
from kvsim.errors import KvsimError
from kvsim.hardware import BUILTIN_GPUS, GPUSpec, load_gpu
from kvsim.models import load_model

# Device names as torch reports them -> kvsim's built-in specs.
_DEVICE_NAMES = (("H200", "h200-141gb"), ("H100", "h100-sxm-80gb"))


def builtin_gpu_for(device_name: str, memory_bytes: int) -> GPUSpec:
    """The built-in spec of the GPU torch found; an unknown one must be named with --gpu."""
    for marker, name in _DEVICE_NAMES:
        if marker in device_name:
            return BUILTIN_GPUS[name]
    if "A100" in device_name:
        return BUILTIN_GPUS["a100-80gb" if memory_bytes > 60 * (1 << 30) else "a100-40gb"]
    raise KvsimError(
        f"no built-in spec for {device_name!r}: pass --gpu with a GPU spec file "
        "(see `simcli gpus` for the fields)"
    )


def require_cuda(command: str = "calibrate") -> None:
    if importlib.util.find_spec("torch") is None:
        raise KvsimError(f"{command} needs PyTorch with CUDA (pip install 'kvsim[gpu]') and a GPU")
    import torch

    if not torch.cuda.is_available():
        raise KvsimError(f"{command} needs a CUDA GPU, and torch finds none on this machine")


def calibrate(
    model: str,
    out: Path | None,
    block_size: int = 16,
    quick: bool = False,
    gpu: str | None = None,
    log: Callable[[str], None] = print,
    tensor_parallel: int = 1,
    eager: bool = False,
) -> tuple[dict, Path]:
    """Measure ``model`` on this machine's GPU 0; write and return its profile. With
    ``tensor_parallel`` N, one rank's shard of it: every rank runs the same shard shapes, so
    one GPU measures a rank's compute (the collectives are the cost model's to add). ``eager``:
    the runner with CUDA graphs off, every kernel launched by the host, as vLLM's engine ran
    before it captured graphs (the profile ``MODEL-eager@GPU``, ``"graphs": false``)."""
    if not 1 <= tensor_parallel <= MAX_GPUS_PER_NODE:
        raise KvsimError(
            f"--tensor-parallel must be between 1 and {MAX_GPUS_PER_NODE} (got {tensor_parallel})"
        )
    full = load_model(model)
    problem = full.tensor_parallel_problem(tensor_parallel)
    if problem:
        raise KvsimError(problem)
    spec = full.shard(tensor_parallel)
    if not 1 <= block_size <= 256:
        raise KvsimError(f"--block-size must be between 1 and 256 (got {block_size})")
    require_cuda()
    import torch

    from kvsim.calibration.measure import Calibrator, Grid

    props = torch.cuda.get_device_properties(0)
    gpu_spec = load_gpu(gpu) if gpu else builtin_gpu_for(props.name, props.total_memory)
    out = out or Path(f"{profile_name(spec.name, gpu_spec.name, eager)}.json")
    log(
        f"calibrating {spec.name} on {props.name} (as {gpu_spec.name}), block size {block_size}"
        f"{', quick grid' if quick else ''}{', eager (no CUDA graphs)' if eager else ''}"
    )
    t0 = time.perf_counter()
    raw = Calibrator(spec, block_size, Grid.quick() if quick else Grid(), log=log, graphs=not eager).run()
    doc = fit_profile(raw, spec, gpu_spec, block_size, tensor_parallel=tensor_parallel)
    doc["calibration"]["total_seconds"] = time.perf_counter() - t0
    path = save_profile(doc, out)
    for line in format_report(doc):
        log(line)
    log(f"calibration took {doc['calibration']['total_seconds']:.0f} s; wrote {path}")
    return doc, path


def _profile_on_this_gpu(
    command: str, spec, profile: Path | None, gpu: str | None, eager: bool
) -> tuple[dict, Path, str]:
    """The profile ``command`` works on -- ``profile``, else the shipped one a run of ``spec``
    on this machine's GPU would use (its eager one with ``eager``) -- checked against
    ``spec``, and the GPU's device name. A bad file is refused before CUDA is looked for."""
    from kvsim.cost.profile import check_model, load_profile, shipped_profile

    doc = load_profile(profile) if profile is not None else None
    require_cuda()
    import torch

    props = torch.cuda.get_device_properties(0)
    if doc is None:
        gpu_spec = load_gpu(gpu) if gpu else builtin_gpu_for(props.name, props.total_memory)
        profile = shipped_profile(spec.name, gpu_spec.name, eager)
        if profile is None:
            raise KvsimError(
                f"no shipped profile {profile_name(spec.name, gpu_spec.name, eager)} for {command}: "
                f"measure one with simcli calibrate{' --eager' if eager else ''}"
            )
        doc = load_profile(profile)
    check_model(doc, spec, str(profile))
    return doc, Path(profile), props.name


def check(
    model: str,
    profile: Path | None,
    out: Path | None,
    threshold: float,
    gpu: str | None = None,
    log: Callable[[str], None] = print,
    tensor_parallel: int = 1,
    eager: bool = False,
) -> tuple[dict, Path | None]:
    """``simcli calibrate --check``: time the anchor steps of ``model`` on this GPU against
    ``profile`` (default: the shipped one a run on this GPU would use, the eager one with
    ``eager``); write an adjusted profile where they drifted (``kvsim.calibration.check``).
    The anchors run as the profile's runner ran: graphs replayed, or eager."""
    if not 0 < threshold < 1:
        raise KvsimError(f"--threshold must be a fraction between 0 and 1 (got {threshold})")
    spec = load_model(model).shard(tensor_parallel)
    doc, path, device = _profile_on_this_gpu("--check", spec, profile, gpu, eager)
    from kvsim.calibration.check import run_check

    log(f"checking {doc['name']} ({doc['created'][:10]}) on {device}: {path.name}")
    return run_check(spec, doc, out, threshold, log)


def add_block_sizes(
    model: str,
    profile: Path | None,
    out: Path | None,
    gpu: str | None = None,
    log: Callable[[str], None] = print,
    tensor_parallel: int = 1,
    eager: bool = False,
) -> tuple[dict, Path]:
    """``simcli calibrate --block-sizes-only``: measure the decode attention kernel at every
    block size on this GPU for ``profile``'s model (default: the shipped profile of ``model``
    for this GPU) and write the profile with that table (``decode_block_size``), nothing else
    measured again: seconds on the GPU where a whole calibration takes minutes. The table's
    factors are ratios of the kernel's times, so one measured on this GPU may be added to a
    profile of another; the table records the device it was measured on."""
    from kvsim.cost.profile import is_eager, save_profile

    spec = load_model(model).shard(tensor_parallel)
    doc, path, device = _profile_on_this_gpu("--block-sizes-only", spec, profile, gpu, eager)
    from kvsim.calibration.block_size import measure_block_sizes

    log(f"measuring decode attention by block size for {doc['name']} on {device}: {path.name}")
    table = measure_block_sizes(
        spec, doc["block_size"], graphs=not is_eager(doc), log=log, by="simcli calibrate --block-sizes-only"
    )
    doc = {**doc, "decode_block_size": table}
    written = save_profile(doc, out or Path(f"{doc['name']}.json"))
    log(f"wrote {written}")
    return doc, written
