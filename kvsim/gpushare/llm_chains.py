"""An LLM's engine steps as kernel chains: measured at a grid of sizes, picked per step.

Unlike a torchvision model at batch 1, an LLM's step is not the same job every time: a decode
step runs one token of each sequence in the batch, a prefill step the batch's new prompt
tokens, and both take longer as they grow. ``simcli gpushare profile --llm`` (kvsim.calibration
.llm_chains) measures a chain for a decode step at each of a grid of batch sizes (all
sequences at one context length) and for a prefill step at each of a grid of token counts, and
writes them to one file per model and GPU, ``MODEL@GPU.steps.json``:

    {"format": "kvsim-llm-steps/1", "model": ..., "gpu": {"name": ..., ...}, "how": {...},
     "decode_context_len": 512,
     "steps": [{"kind": "decode", "size": 8, "profile": {<a kernel-chain profile>}}, ...]}

where each ``profile`` is a kernel-chain document as a torchvision model's profile file holds
it (kvsim.gpushare.kernels, format ``kvsim-kernel-chain/1``, its ``model`` the LLM's).

**Which chain a step runs** (:meth:`StepChains.for_step`): a decode step of ``b`` sequences
runs the chain of the smallest measured batch size at least ``b``; a prefill of ``t`` tokens
the chain of the smallest measured token count at least ``t``. A step is never charged less
than a measurement at or above its size (step time grows with size). Past the largest
measured size, the largest one's chain runs with every kernel's duration stretched in
proportion to the size (linear through zero, as a prefill's work grows with its tokens; a
decode step, bound by reading the weights, grows slower, so this overstates it), with a
warning once per model and kind. The decode chain is measured at one context length and used
at every context: a step's attention over longer contexts is not priced.
"""

from __future__ import annotations

import bisect
import json
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

from kvsim.errors import KvsimError
from kvsim.gpushare.kernels import KernelChain, chain_from_doc
from kvsim.hardware import SMLimits

STEPS_FORMAT = "kvsim-llm-steps/1"
#: The kinds of measured step, and what their size counts.
STEP_KINDS = {"decode": "sequences in the batch", "prefill": "new tokens"}


class StepOutOfRangeWarning(UserWarning):
    """A step larger than every measured one: its chain is the largest one, stretched."""


def step_profile_path(directory: Path, model: str, gpu: str) -> Path:
    return Path(directory) / f"{model}@{gpu}.steps.json"


def variant_name(model: str, kind: str, size: int) -> str:
    """The name a measured step's chain runs under on the shared GPU (a dispatch policy's
    "model": SRPT learns each one's kernel lengths apart)."""
    return f"{model} {kind} {size}"


@dataclass
class StepChains:
    """One LLM's measured step chains: ``by_kind[kind][size]``, each named by
    :func:`variant_name`."""

    model: str
    by_kind: dict[str, dict[int, KernelChain]]
    _stretched: dict[tuple[str, int], KernelChain] = field(default_factory=dict, repr=False)
    _warned: set[str] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self._sizes = {kind: sorted(chains) for kind, chains in self.by_kind.items()}  # for_step's search

    def measured(self) -> list[KernelChain]:
        """Every measured chain, by kind then size."""
        return [self.by_kind[kind][size] for kind in STEP_KINDS for size in sorted(self.by_kind[kind])]

    def for_step(self, kind: str, size: int) -> tuple[KernelChain, KernelChain]:
        """The measured chain a step of ``kind`` and ``size`` is charged from, and the chain
        it runs (the same one, or past the measured range that one stretched): module
        docstring."""
        sizes = self._sizes[kind]
        at = bisect.bisect_left(sizes, size)
        if at < len(sizes):
            chain = self.by_kind[kind][sizes[at]]
            return chain, chain
        largest = sizes[-1]
        measured = self.by_kind[kind][largest]
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(
                f"{self.model}: a {kind} step of {size} {STEP_KINDS[kind]} is beyond the largest measured "
                f"({largest}); its chain is that one's, stretched in proportion",
                StepOutOfRangeWarning,
                stacklevel=2,
            )
        stretched = self._stretched.get((kind, size))
        if stretched is None:
            scale = size / largest
            kernels = tuple(replace(k, duration_s=k.duration_s * scale) for k in measured.kernels)
            stretched = self._stretched[(kind, size)] = replace(measured, kernels=kernels)
        return measured, stretched


def step_chains_from_doc(doc: object, model: str, gpu: str, where: str) -> StepChains:
    """The step chains a ``kvsim-llm-steps/1`` document holds: refused in one line naming
    ``where`` and the entry when it is not one of ``model`` on ``gpu``, or lacks a kind."""
    if not isinstance(doc, dict) or doc.get("format") != STEPS_FORMAT:
        raise KvsimError(f"{where}: not a {STEPS_FORMAT} file")
    if doc.get("model") != model:
        raise KvsimError(f"{where}: holds {doc.get('model')!r}, not {model!r}")
    steps = doc.get("steps")
    if not isinstance(steps, list) or not steps:
        raise KvsimError(f"{where}: steps must be a non-empty list")
    by_kind: dict[str, dict[int, KernelChain]] = {kind: {} for kind in STEP_KINDS}
    for i, entry in enumerate(steps):
        here = f"{where}: steps[{i}]"
        kind, size = (entry.get("kind"), entry.get("size")) if isinstance(entry, dict) else (None, None)
        if kind not in STEP_KINDS:
            raise KvsimError(f"{here}.kind must be one of {', '.join(STEP_KINDS)} (got {kind!r})")
        if not (isinstance(size, int) and not isinstance(size, bool) and size > 0):
            raise KvsimError(f"{here}.size must be a positive integer (got {size!r})")
        if size in by_kind[kind]:
            raise KvsimError(f"{here}: a second {kind} step of size {size}")
        chain = chain_from_doc(entry.get("profile"), model, gpu, f"{here}.profile")
        by_kind[kind][size] = replace(chain, model=variant_name(model, kind, size))
    missing = [kind for kind, chains in by_kind.items() if not chains]
    if missing:
        raise KvsimError(f"{where}: no {' or '.join(missing)} steps measured")
    return StepChains(model, by_kind)


def load_step_chains(directory: Path, model: str, gpu: str, limits: SMLimits) -> StepChains:
    """``model``'s measured step chains on ``gpu`` from ``directory``; a missing file is
    refused with the command that measures it."""
    path = step_profile_path(directory, model, gpu)
    if not path.is_file():
        raise KvsimError(
            f"no measured step profile of {model} on {gpu} ({path} does not exist): measure one with "
            f"`simcli gpushare profile --llm {model} --out {directory}` on that GPU (docs/gpushare.md)"
        )
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise KvsimError(f"cannot read step profile {path}: {err}") from None
    chains = step_chains_from_doc(doc, model, gpu, f"step profile {path}")
    for chain in chains.measured():
        chain.check_fits(limits, f"{path} ({chain.model})")
    return chains
