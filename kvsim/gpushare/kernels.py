"""Jobs as chains of kernels: what a kernel needs of an SM, and the profile files they come from.

A model served at batch 1 runs the same kernels in the same order for every job, so a job is
its model's chain of kernels. Each kernel has the duration it was measured with, alone on the
whole GPU, and its launch footprint: blocks in the grid, threads per block, registers per
thread, shared memory per block. The footprint gives what one block takes of an SM (threads
counted in whole warps, registers allocated per warp in units of 256, the runtime's reserved
shared memory added), and so how many of its blocks an SM holds at once.

A chain comes from a profile file that ``simcli gpushare profile`` writes on the GPU (format
below); nothing here invents a duration.

**Launch gap and latency.** Kernels of one job run one after another, and the GPU does not
start a kernel the instant the one it depends on ends: even replayed back to back from a CUDA
graph, each start waits on the front end. The profile measures it: ``graph_pass_us``, the
model's whole forward captured as one CUDA graph, timed with CUDA events queued behind another
pass. The chain's ``launch_gap_s`` is what that pass takes beyond its kernels' durations, per
kernel. A job launched whole on an idle GPU takes longer again, by its *launch latency* (the
graph's submission): the profile's single copy of the co-location benchmark less the queued
pass (``launch_latency_s``). A job alone takes both. A profile without these gives neither.

**Interference.** Kernels of different jobs that run at once slow each other beyond sharing the
SMs' slots (the memory system and the SMs' issue bandwidth are shared too). The profile
measures it (``colocated_us``: the mean latency of k copies of the model launched together,
each on its own stream) and kvsim.gpushare.interference fits one number per model to it:
a block placed while other kernels hold a share u of the GPU's thread slots runs
``1 + interference * u`` times its measured time. A profile without it gives none.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kvsim.errors import KvsimError
from kvsim.hardware import SMLimits, is_number

PROFILE_FORMAT = "kvsim-kernel-chain/1"
WARP = 32
REGISTER_UNIT = 256  # registers are allocated per warp in units of this many
SMEM_UNIT = 128  # shared memory is allocated per block in units of this many bytes
#: The resources of an SM, in the order of the vectors below.
RESOURCES = ("threads", "registers", "shared memory", "blocks")


@dataclass(frozen=True)
class Kernel:
    name: str
    duration_s: float  # measured alone on the whole GPU
    blocks: int  # grid size (x * y * z)
    threads_per_block: int
    registers_per_thread: int
    shared_memory_bytes: int  # per block, static + dynamic

    def block_need(self, limits: SMLimits) -> np.ndarray:
        """What one block holds of an SM while it runs, per RESOURCES."""
        warps = math.ceil(self.threads_per_block / WARP)
        # At least one unit: no kernel runs without registers, and the GPU model divides by it.
        per_warp = max(1, math.ceil(self.registers_per_thread * WARP / REGISTER_UNIT)) * REGISTER_UNIT
        registers = warps * per_warp
        smem = math.ceil((self.shared_memory_bytes + limits.reserved_smem_per_block) / SMEM_UNIT) * SMEM_UNIT
        return np.array([warps * WARP, registers, smem, 1], dtype=np.int64)

    def blocks_per_sm(self, limits: SMLimits) -> int:
        """How many of its blocks one empty SM holds (the occupancy limit)."""
        return int(np.min(sm_capacity(limits) // self.block_need(limits)))


def sm_capacity(limits: SMLimits) -> np.ndarray:
    """One SM's resources, per RESOURCES."""
    return np.array(
        [limits.max_threads, limits.registers, limits.shared_memory_bytes, limits.max_blocks], dtype=np.int64
    )


@dataclass(frozen=True)
class KernelChain:
    """One job of ``model``: its kernels, each to start after the one before has finished."""

    model: str
    kernels: tuple[Kernel, ...]
    launch_gap_s: float = 0.0  # before each kernel reaches the SMs (module docstring)
    interference: float = 0.0  # a block's stretch per share of the GPU others hold (module docstring)
    launch_latency_s: float = 0.0  # a whole job's submission (module docstring)

    @property
    def alone_s(self) -> float:
        """The job's latency alone on the GPU, launched whole: its launch latency, then every
        kernel at the allocation it was measured with, each after its launch gap."""
        kernels_s = float(sum(k.duration_s for k in self.kernels))
        return self.launch_latency_s + kernels_s + len(self.kernels) * self.launch_gap_s

    def check_fits(self, limits: SMLimits, where: str) -> None:
        """Refuses a chain with a kernel of which no block fits an empty SM."""
        for index, kernel in enumerate(self.kernels):
            if kernel.blocks_per_sm(limits) < 1:
                raise KvsimError(f"{where}: kernel {index} ({kernel.name}) has a block larger than one SM")


def profile_path(directory: Path, model: str, gpu: str) -> Path:
    return Path(directory) / f"{model}@{gpu}.json"


_KERNEL_FIELDS = {
    "duration_us": "a positive number",
    "grid": "a list of 3 positive integers",
    "block": "a list of 3 positive integers",
    "registers_per_thread": "a non-negative integer",
    "shared_memory_bytes": "a non-negative integer",
}


def _kernel_from_dict(raw: object, where: str) -> Kernel:
    if not isinstance(raw, dict):
        raise KvsimError(f"{where} must be a JSON object")
    for field, what in _KERNEL_FIELDS.items():
        value = raw.get(field)
        if field in ("grid", "block"):
            good = (
                isinstance(value, list)
                and len(value) == 3
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
            )
        elif field == "duration_us":
            good = is_number(value) and value > 0
        else:
            good = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        if not good:
            raise KvsimError(f"{where}.{field} must be {what} (got {value!r})")
    return Kernel(
        name=str(raw.get("name", "")),
        duration_s=raw["duration_us"] * 1e-6,
        blocks=math.prod(raw["grid"]),
        threads_per_block=math.prod(raw["block"]),
        registers_per_thread=raw["registers_per_thread"],
        shared_memory_bytes=raw["shared_memory_bytes"],
    )


def load_chain(path: Path, model: str, gpu: str) -> KernelChain:
    """The chain of ``model`` measured on ``gpu``, from the profile file at ``path``: refused with
    one line naming the file and the field when it is not a measured profile of that pair."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise KvsimError(f"cannot read kernel profile {path}: {err}") from None
    return chain_from_doc(doc, model, gpu, f"kernel profile {path}")


def chain_from_doc(doc: object, model: str, gpu: str, where: str) -> KernelChain:
    """The chain a profile document holds (load_chain's checks, ``where`` naming it in the
    one-line refusal): a profile file's whole content, or one step of an LLM's step profile
    (kvsim.gpushare.llm_chains), which holds the same documents."""
    if not isinstance(doc, dict) or doc.get("format") != PROFILE_FORMAT:
        raise KvsimError(f"{where}: not a {PROFILE_FORMAT} file")
    gpu_doc = doc.get("gpu")
    if doc.get("model") != model or not isinstance(gpu_doc, dict) or gpu_doc.get("name") != gpu:
        raise KvsimError(f"{where}: holds {doc.get('model')!r} on {gpu_doc!r}, not {model!r} on {gpu!r}")
    kernels = doc.get("kernels")
    if not isinstance(kernels, list) or not kernels:
        raise KvsimError(f"{where}: kernels must be a non-empty list")
    chain = tuple(_kernel_from_dict(k, f"{where}: kernels[{i}]") for i, k in enumerate(kernels))
    graph_pass_us = doc.get("graph_pass_us")
    if graph_pass_us is not None and not (is_number(graph_pass_us) and graph_pass_us > 0):
        raise KvsimError(f"{where}: graph_pass_us must be a positive number (got {graph_pass_us!r})")
    interference = doc.get("interference", 0.0)
    if not (is_number(interference) and interference >= 0):
        raise KvsimError(f"{where}: interference must be a non-negative number (got {interference!r})")
    gap = 0.0 if graph_pass_us is None else launch_gap_of(graph_pass_us * 1e-6, chain)
    colocated = doc.get("colocated_us", {})
    alone_us = colocated.get("1") if isinstance(colocated, dict) else None
    if alone_us is not None and not (is_number(alone_us) and alone_us > 0):
        raise KvsimError(f"{where}: colocated_us.1 must be a positive number (got {alone_us!r})")
    latency = 0.0 if alone_us is None or graph_pass_us is None else max(0.0, alone_us - graph_pass_us) * 1e-6
    return KernelChain(model, chain, gap, float(interference), latency)


def launch_gap_of(graph_pass_s: float, kernels: tuple[Kernel, ...]) -> float:
    """The launch gap per kernel that makes a job alone take ``graph_pass_s``: the pass beyond
    its kernels' durations, shared evenly (never negative: a pass timed a little faster than
    its kernels' medians leaves no gap)."""
    return max(0.0, graph_pass_s - sum(k.duration_s for k in kernels)) / len(kernels)


def load_chains(
    directory: Path, models: tuple[str, ...], gpu: str, limits: SMLimits
) -> dict[str, KernelChain]:
    """Every model's measured chain on ``gpu`` from ``directory``; a missing one is refused with
    the command that measures it."""
    chains = {}
    for model in models:
        path = profile_path(directory, model, gpu)
        if not path.is_file():
            raise KvsimError(
                f"no measured kernel profile of {model} on {gpu} ({path} does not exist): measure one with "
                f"`simcli gpushare profile --out {directory}` on that GPU (docs/gpushare.md)"
            )
        chains[model] = load_chain(path, model, gpu)
        chains[model].check_fits(limits, str(path))
    return chains
