"""Hand-made kernel chains and a small GPU for the shared-GPU tests (no measured numbers:
the durations are round values chosen so the expected schedules can be worked out by hand)."""

import json
from pathlib import Path

from kvsim.gpushare.kernels import PROFILE_FORMAT, Kernel, KernelChain
from kvsim.hardware import SMLimits

#: Four SMs with the H100's per-SM limits: contention appears with a handful of blocks.
SMALL_GPU = SMLimits(4, 2048, 65536, 228 * 1024, 32, 1024, "test GPU")
US = 1e-6


def kernel(
    duration_us: float, blocks: int, threads: int = 1024, registers: int = 32, smem: int = 0
) -> Kernel:
    """With the defaults, two blocks fill an SM (1,024 threads each)."""
    return Kernel("k", duration_us * US, blocks, threads, registers, smem)


def chain(model: str, *kernels: Kernel, launch_gap_s: float = 0.0) -> KernelChain:
    return KernelChain(model, tuple(kernels), launch_gap_s)


def write_profile(directory: Path, model: str, gpu: str, kernels: list[dict]) -> Path:
    path = directory / f"{model}@{gpu}.json"
    doc = {"format": PROFILE_FORMAT, "model": model, "gpu": {"name": gpu}, "kernels": kernels}
    path.write_text(json.dumps(doc))
    return path


def profile_kernel(duration_us: float, grid: int, threads: int = 256) -> dict:
    return {
        "name": "k",
        "duration_us": duration_us,
        "grid": [grid, 1, 1],
        "block": [threads, 1, 1],
        "registers_per_thread": 32,
        "shared_memory_bytes": 0,
    }
