"""GPU specifications: memory, peak dense fp16 FLOP/s, HBM, PCIe and NVLink bandwidth.

Datasheet numbers are ceilings, not achieved rates; cost models apply their own
efficiencies (roofline) or replace them with measurements (calibrated profiles).
A user's own GPU is a small JSON file with the same fields.
"""

from __future__ import annotations

import json
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
        GPUSpec("a100-40gb", 40 * GiB, 312e12, 1555e9, 32e9, 600e9,
                "NVIDIA A100 Tensor Core GPU datasheet (SXM4 40GB; PCIe Gen4 x16)"),
        GPUSpec("a100-80gb", 80 * GiB, 312e12, 2039e9, 32e9, 600e9,
                "NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB; PCIe Gen4 x16)"),
        GPUSpec("h100-sxm-80gb", 81559 * MiB, 989.4e12, 3.35e12, 64e9, 900e9,
                "NVIDIA H100 datasheet (SXM5; PCIe Gen5 x16); memory as nvidia-smi reports it"),
        GPUSpec("h200-141gb", 143771 * MiB, 989.4e12, 4.8e12, 64e9, 900e9,
                "NVIDIA H200 datasheet (SXM; PCIe Gen5 x16); memory as nvidia-smi reports it"),
    )
}


def load_gpu(name_or_path: str) -> GPUSpec:
    """A built-in GPU by name, or a JSON file with GPUSpec's fields."""
    key = name_or_path.lower()
    if key in BUILTIN_GPUS:
        return BUILTIN_GPUS[key]
    path = Path(name_or_path)
    if not path.is_file():
        raise KvsimError(f"unknown GPU {name_or_path!r}: not a built-in "
                         f"({', '.join(BUILTIN_GPUS)}) and no such file")
    try:
        raw = json.loads(path.read_text())
        wanted = {f.name for f in fields(GPUSpec)}
        missing = wanted - {"source"} - set(raw)
        if missing:
            raise KvsimError(f"GPU file {path} lacks {', '.join(sorted(missing))}")
        spec = GPUSpec(**{k: v for k, v in raw.items() if k in wanted})
    except (OSError, json.JSONDecodeError, TypeError) as err:
        raise KvsimError(f"cannot read GPU file {path}: {err}") from None
    for field in ("memory_bytes", "fp16_flops", "hbm_bandwidth", "pcie_bandwidth"):
        if not isinstance(getattr(spec, field), (int, float)) or getattr(spec, field) <= 0:
            raise KvsimError(f"GPU file {path}: {field} must be a positive number")
    return spec
