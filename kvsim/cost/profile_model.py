"""Step costs from a profile: fitted physical terms, clamped to the roofline's physical floor.

A decode step costs its GPU time (graph replay) plus the runner's host work; a prefill
step its measured wall time by token count (the token table: graphed pieces up to ~1k
tokens, eager above, launch gaps included) plus attention (in the kernel's thread blocks, as
the SMs get through them), gathering and per-sequence terms. Every step
also pays the engine's own work around the runner (scheduling, bookkeeping). Every
coefficient is non-negative and every feature grows with tokens, context and blocks, so
the cost is monotone; the floor (datasheet FLOP/s and bandwidth at 100% efficiency)
is monotone too, and the larger of the two is charged. Asking beyond the measured grid
still answers (linear extrapolation) but warns once per quantity.
"""

from __future__ import annotations

import warnings
from dataclasses import fields

import numpy as np

from kvsim.cost.cost_model import CostModel
from kvsim.cost.profile import (
    BLOCK_TABLE_TERMS,
    GRID_AXES,
    TERMS,
    PrefillTokens,
    ProfileDoc,
    block_features,
    decode_block_factor,
    decode_features,
    engine_features,
    graph_for,
    host_features,
    mixed_composition,
    mixed_features,
    prefill_features,
)
from kvsim.cost.roofline import RooflineAssumptions, RooflineCostModel
from kvsim.hardware import GPUSpec
from kvsim.models import ModelSpec

# The physical floor: datasheet rates at full efficiency, no overheads.
PHYSICAL_FLOOR = RooflineAssumptions(
    prefill_flops_efficiency=1.0, memory_efficiency=1.0, step_overhead_s=0.0, transfer_latency_s=0.0
)


class OutOfRangeWarning(UserWarning):
    """A step outside the profile's measured grid: its cost is an extrapolation."""


def gpu_of(doc: ProfileDoc) -> GPUSpec:
    known = {f.name for f in fields(GPUSpec)}
    return GPUSpec(**{k: v for k, v in doc["gpu"].items() if k in known})


class ProfileCostModel(CostModel):
    """``engine=False`` prices the runner's steps alone, as calibration's grid timed them
    (fit reports); the simulator always includes the engine."""

    def __init__(
        self, doc: ProfileDoc, model: ModelSpec, block_size: int, source: str = "", engine: bool = True
    ):
        self.doc, self.source = doc, source
        self.name = f"profile:{doc['name']}"
        self.kind = doc["provenance"]["kind"]
        self.coef = {
            kind: np.array([float(doc["coefficients"][kind][t]) for t, _ in terms])
            for kind, terms in TERMS.items()
            if kind in doc["coefficients"]  # optional kinds (OPTIONAL_KINDS) may be absent
        }
        # Decode attention reads the KV cache through the block table: its terms take the
        # factor measured at the run's block size, here once, so every cached decode line and
        # a mixed step's decodes carry it (as measured at the profile's own block size where
        # no factor was: select_cost_model warns).
        factor = decode_block_factor(doc, block_size) or 1.0
        self.coef["decode"] = self.coef["decode"] * [
            factor if term in BLOCK_TABLE_TERMS else 1.0 for term, _ in TERMS["decode"]
        ]
        self.engine = engine
        self.prefill_tokens = PrefillTokens(doc["prefill_tokens"], doc["prefill_padding"])
        self._heads, self._attention = doc["model"]["num_heads"], doc["prefill_attention"]
        self.floor = RooflineCostModel(model, gpu_of(doc), block_size, PHYSICAL_FLOOR)
        self.graph_sizes = np.asarray(doc["graph_batch_sizes"])
        self.partitions = np.asarray(doc["attention_partition"])
        self.limits = {
            kind: {axis: doc["grid"][kind][axis][1] for axis in axes}
            for kind, axes in GRID_AXES.items()
            if kind in doc["grid"]
        }
        # Copies and swaps were fitted per block of the profile's size; price bytes, not blocks.
        self.block_scale = block_size / doc["block_size"]
        self._warned: set[tuple[str, str]] = set()
        self._lines: dict[int, tuple[float, float, float, float, float]] = {}
        self._decode_context_s = float(self.coef["decode"][[t for t, _ in TERMS["decode"]].index("context")])
        self._engine_s: dict[int, float] = {}
        self._lone_prompt_s: dict[int, float] = {}  # prefill_time of one uncached prompt, by length

    def _check(self, kind: str, **values: float) -> None:
        for axis, value in values.items():
            limit = self.limits.get(kind, {}).get(axis)
            if limit is not None and value > limit and (kind, axis) not in self._warned:
                self._warned.add((kind, axis))
                warnings.warn(
                    f"{self.name}: {kind} {axis.replace('_', ' ')} {value:g} is beyond the "
                    f"measured {limit:g}; its cost is extrapolated",
                    OutOfRangeWarning,
                    stacklevel=3,
                )

    def _engine(self, num_seqs: int) -> float:
        if not self.engine:
            return 0.0
        seconds = self._engine_s.get(num_seqs)
        if seconds is None:
            self._check("engine", seqs=num_seqs)
            seconds = self._engine_s[num_seqs] = float(engine_features(num_seqs) @ self.coef["engine"])
        return seconds

    def _decode_line(self, batch_size: int) -> tuple[float, float, float, float, float]:
        """``decode_features(...) @ coefficients`` plus host and engine time for ``batch_size``
        sequences, expanded as ``base + per_token x context + per_partition x min(context /
        batch, partition)``, returned as (base, per_token, per_partition, partition, issued):
        ``issued`` is the least a step can take when an eager runner's host issues its
        launches (0 for a graph profile). Every term but the context's is fixed per batch
        size and asked for once per simulated event, so it is computed once per size;
        ``test_decode_run_is_its_features_priced_step_by_step``
        (tests/calibration/test_cost_model.py) holds the expansion to ``decode_features``."""
        line = self._lines.get(batch_size)
        if line is None:
            rows, partition = graph_for(self.graph_sizes, self.partitions, batch_size)
            host = float(host_features(batch_size) @ self.coef["host"]) + self._engine(batch_size)
            at_zero = float(
                decode_features(batch_size, rows, partition, np.zeros(1))[0] @ self.coef["decode"]
            )
            per_partition = self.coef["decode"][[term for term, _ in TERMS["decode"]].index("partition")]
            issued = (
                float(host_features(batch_size) @ self.coef["issue"]) + host if "issue" in self.coef else 0.0
            )
            line = (at_zero + host, self._decode_context_s, per_partition, partition, issued)
            self._lines[batch_size] = line
        return line

    def decode_times(self, batch_size: int, total_context: int, steps: int) -> np.ndarray:
        last = total_context + batch_size * (steps - 1)
        self._check("decode", batch=batch_size, total_context=last)
        base, per_token, per_partition, partition, issued = self._decode_line(batch_size)
        # Usually the whole run sits on one side of the partition's bend and above the
        # floor and the host's issue: then its steps lie on one line, priced from its ends.
        # The floor is convex (the larger of two lines), so above it at both ends is above it
        # throughout; the issue is constant and the line rises.
        if last <= partition * batch_size:
            intercept, slope = base, per_token + per_partition / batch_size
        elif total_context >= partition * batch_size:
            intercept, slope = base + per_partition * partition, per_token
        else:
            intercept = None
        if intercept is not None:
            first_s = intercept + slope * total_context
            if first_s >= max(issued, self.floor.decode_time(batch_size, total_context)) and (
                intercept + slope * last >= self.floor.decode_time(batch_size, last)
            ):
                return first_s + (slope * batch_size) * np.arange(steps, dtype=np.float64)
        context = total_context + batch_size * np.arange(steps, dtype=np.float64)
        fitted = np.minimum(context / batch_size, partition)
        fitted *= per_partition
        fitted += context * per_token
        fitted += base
        if issued:  # an eager profile's host issue; a graph profile has none
            np.maximum(fitted, issued, out=fitted)
        return np.maximum(fitted, self.floor.decode_times(batch_size, total_context, steps), out=fitted)

    def prefill_time(self, new_tokens: np.ndarray, context_lens: np.ndarray) -> float:
        """Most prefill steps of a run compute one prompt with nothing cached, and prompt
        lengths repeat: those are priced once per length (at most the context length of
        them), the others every time."""
        if len(new_tokens) == 1 and new_tokens[0] == context_lens[0]:
            tokens = int(new_tokens[0])
            seconds = self._lone_prompt_s.get(tokens)
            if seconds is None:
                seconds = self._lone_prompt_s[tokens] = self._prefill_time(new_tokens, context_lens)
            return seconds
        return self._prefill_time(new_tokens, context_lens)

    def _prefill_time(self, new_tokens: np.ndarray, context_lens: np.ndarray) -> float:
        tokens = float(new_tokens.sum())
        self._check("prefill", tokens=tokens, seqs=len(new_tokens), context=float(context_lens.sum()))
        fitted = self.prefill_tokens(tokens) + self._prefill_terms(new_tokens, context_lens)
        return max(fitted, self.floor.prefill_time(new_tokens, context_lens)) + self._engine(len(new_tokens))

    def _prefill_terms(self, new_tokens: np.ndarray, context_lens: np.ndarray) -> float:
        """The prefill terms beyond the token table, priced (a prefill's, or a mixed step's chunks')."""
        features = prefill_features(new_tokens, context_lens, self._heads, self._attention)
        return float(features @ self.coef["prefill"])

    def mixed_time(self, new_tokens: np.ndarray, context_lens: np.ndarray) -> float:
        """One forward pass over chunks and decodes, from the terms calibration measured:
        every token through the dense layers (the token table at the step's total tokens),
        the chunks' attention and gather as a prefill prices them, and
        the decodes' attention as a decode prices it (HBM reads of their context). Mixed
        steps' own cost beyond those (the decodes' attention launched beside the chunks', per
        step and per decode) is the profile's mixed term, measured on mixed steps where the
        profile has one."""
        decode = new_tokens == 1
        self._check(
            "prefill",
            tokens=float(new_tokens.sum()),
            seqs=int((~decode).sum()),
            context=float(context_lens[~decode].sum()),
        )
        fitted = mixed_composition(
            self.prefill_tokens, self._prefill_terms, self._decode_context_s, new_tokens, context_lens
        )
        num_decodes = int(decode.sum())
        if "mixed" in self.coef:
            self._check("mixed", decodes=num_decodes)
            fitted += float(mixed_features(num_decodes) @ self.coef["mixed"])
        elif "mixed" not in self._warned:
            self._warned.add("mixed")
            warnings.warn(
                f"{self.name} did not measure mixed steps (it predates them): they are priced by "
                "their prefill and decode terms alone",
                OutOfRangeWarning,
                stacklevel=3,
            )
        return max(fitted, self.floor.prefill_time(new_tokens, context_lens)) + self._engine(len(new_tokens))

    def _blocks(self, kind: str, num_blocks: int, floor: float) -> float:
        if num_blocks == 0:
            return 0.0
        equivalent = num_blocks * self.block_scale
        self._check(kind, blocks=equivalent)
        return max(float(block_features(equivalent) @ self.coef[kind]), floor)

    def copy_time(self, num_blocks: int) -> float:
        return self._blocks("copy", num_blocks, self.floor.copy_time(num_blocks))

    def swap_time(self, num_blocks: int) -> float:
        return self._blocks("swap", num_blocks, self.floor.swap_time(num_blocks))

    def describe(self) -> dict:
        d = self.doc
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "provenance": d["provenance"],
            "gpu": d["gpu"]["name"],
            "device": d.get("environment", {}).get("device_name"),
            "created": d["created"],
            "block_size": d["block_size"],
            "fit_report": d["fit_report"],
            "coefficients": d["coefficients"],
        }
