"""GPU specifications: memory, peak dense fp16 FLOP/s, HBM, PCIe and NVLink bandwidth.

Datasheet numbers are ceilings, not achieved rates; cost models apply their own
efficiencies (roofline) or replace them with measurements (calibrated profiles).
A user's own GPU is a small JSON file with the same fields.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from kvsim.errors import KvsimError

GiB = 1 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class GPUSpec:
    name: str
    memory_bytes: int
    fp16_flops: float  # dense (no sparsity) fp16/bf16 tensor-core FLOP/s
    hbm_bandwidth: float  # bytes/s
    pcie_bandwidth: float  # bytes/s, one direction, host <-> device
    nvlink_bandwidth: float  # bytes/s, total per GPU
    source: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


BUILTIN_GPUS: dict[str, GPUSpec] = {
    spec.name: spec
    for spec in (
        GPUSpec(
            "a100-40gb",
            40 * GiB,
            312e12,
            1555e9,
            32e9,
            600e9,
            "NVIDIA A100 Tensor Core GPU datasheet (SXM4 40GB; PCIe Gen4 x16)",
        ),
        GPUSpec(
            "a100-80gb",
            80 * GiB,
            312e12,
            2039e9,
            32e9,
            600e9,
            "NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB; PCIe Gen4 x16)",
        ),
        GPUSpec(
            "h100-sxm-80gb",
            81559 * MiB,
            989.4e12,
            3.35e12,
            64e9,
            900e9,
            "NVIDIA H100 datasheet (SXM5; PCIe Gen5 x16); memory as nvidia-smi reports it",
        ),
        GPUSpec(
            "h200-141gb",
            143771 * MiB,
            989.4e12,
            4.8e12,
            64e9,
            900e9,
            "NVIDIA H200 datasheet (SXM; PCIe Gen5 x16); memory as nvidia-smi reports it",
        ),
    )
}


@dataclass(frozen=True)
class SMLimits:
    """What one streaming multiprocessor holds at once, and how many there are: the limits a
    thread block's footprint is divided into to get how many of its blocks share an SM (the
    CUDA occupancy rules; see kvsim.gpushare.kernels). ``reserved_smem_per_block``: the shared
    memory the CUDA runtime keeps for itself in every block (1 KiB since compute capability 8.0)."""

    num_sms: int
    max_threads: int
    registers: int
    shared_memory_bytes: int
    max_blocks: int
    reserved_smem_per_block: int
    source: str


#: Per-SM limits of the built-in GPUs, by GPUSpec name (CUDA C Programming Guide, table of
#: technical specifications per compute capability; SM counts from the datasheets).
SM_LIMITS: dict[str, SMLimits] = {
    **{
        name: SMLimits(108, 2048, 65536, 164 * 1024, 32, 1024, "A100 (compute capability 8.0)")
        for name in ("a100-40gb", "a100-80gb")
    },
    **{
        name: SMLimits(132, 2048, 65536, 228 * 1024, 32, 1024, "H100/H200 SXM (compute capability 9.0)")
        for name in ("h100-sxm-80gb", "h200-141gb")
    },
}


# The figures the cost models divide by or scale with: each must be a positive finite number.
# NVLink may be 0 (a PCIe card has none); no cost model reads it yet.
RATES = ("memory_bytes", "fp16_flops", "hbm_bandwidth", "pcie_bandwidth")


def is_number(value: object) -> bool:
    """A finite JSON number (a bool is not one, though Python counts it as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def gpu_from_dict(raw: object, where: str, label: str = "") -> GPUSpec:
    """The GPUSpec held by parsed JSON ``raw``, refused with a one-line KvsimError that starts
    with ``where`` and names the field (``label.field`` when ``raw`` sits under ``label``):
    a string, zero, negative or infinite rate would crash or silently misprice a run."""
    field_name = lambda f: f"{label}.{f}" if label else f
    if not isinstance(raw, dict):
        raise KvsimError(f"{where}: {label or 'the GPU spec'} must be a JSON object")
    wanted = {f.name for f in fields(GPUSpec)}
    missing = wanted - {"source"} - set(raw)
    if missing:
        raise KvsimError(f"{where}: {label or 'the GPU spec'} lacks {', '.join(sorted(missing))}")
    if not isinstance(raw["name"], str) or not raw["name"]:
        raise KvsimError(f"{where}: {field_name('name')} must be a non-empty string (got {raw['name']!r})")
    for field in (*RATES, "nvlink_bandwidth"):
        value = raw[field]
        if not is_number(value) or value < 0 or (value == 0 and field in RATES):
            least = "positive" if field in RATES else "non-negative"
            raise KvsimError(f"{where}: {field_name(field)} must be a {least} finite number (got {value!r})")
    return GPUSpec(**{k: v for k, v in raw.items() if k in wanted})


def load_gpu(name_or_path: str) -> GPUSpec:
    """A built-in GPU by name, or a JSON file with GPUSpec's fields."""
    key = name_or_path.lower()
    if key in BUILTIN_GPUS:
        return BUILTIN_GPUS[key]
    path = Path(name_or_path)
    if not path.is_file():
        raise KvsimError(
            f"unknown GPU {name_or_path!r}: not a built-in ({', '.join(BUILTIN_GPUS)}) and no such file"
        )
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise KvsimError(f"cannot read GPU file {path}: {err}") from None
    return gpu_from_dict(raw, f"GPU file {path}")
