"""Analytic step costs from model shape and GPU datasheet: a roofline with stated efficiencies.

A step takes the longer of its FLOPs over the achievable FLOP rate and its bytes over the
achievable HBM bandwidth, plus a fixed per-step overhead (kernel launches, scheduling,
sampling). The efficiencies and the overhead are assumptions, documented here and in the
README; a measured profile (``simcli calibrate``) replaces them with the GPU's own numbers.
Because every efficiency is at most 1, a step never costs less than its physical floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvsim.cost.cost_model import CostModel
from kvsim.hardware import GPUSpec
from kvsim.models import ModelSpec


@dataclass(frozen=True)
class RooflineAssumptions:
    # Large prefill GEMMs reach roughly half to two thirds of dense peak once attention,
    # norms and activations are counted (typical model-FLOPs utilisation of serving prefill).
    prefill_flops_efficiency: float = 0.6
    # Decode streams all weights and the batch's KV once per step; well-written GEMV and
    # paged-attention kernels sustain about 80% of HBM bandwidth.
    memory_efficiency: float = 0.8
    # Host-side scheduling, input preparation, sampling and launch gaps per step.
    step_overhead_s: float = 0.003
    # Fixed cost of starting one PCIe transfer of a block (DMA setup).
    transfer_latency_s: float = 10e-6

    def __post_init__(self) -> None:
        for name in ("prefill_flops_efficiency", "memory_efficiency"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1]")


class RooflineCostModel(CostModel):
    kind = "analytic"

    def __init__(
        self,
        model: ModelSpec,
        gpu: GPUSpec,
        block_size: int,
        assumptions: RooflineAssumptions = RooflineAssumptions(),
    ) -> None:
        self.name = f"roofline:{model.name}@{gpu.name}"
        self.model, self.gpu, self.block_size, self.assumptions = model, gpu, block_size, assumptions
        a = assumptions
        self._flop_rate = gpu.fp16_flops * a.prefill_flops_efficiency
        self._byte_rate = gpu.hbm_bandwidth * a.memory_efficiency
        # ModelSpec derives these on every access; the simulator prices a step per event.
        self._linear_flops = model.linear_flops_per_token
        self._pair_flops = model.attention_flops_per_pair
        self._kv_bytes = model.kv_bytes_per_token
        self._weight_bytes = model.weight_bytes
        self._block_bytes = block_size * self._kv_bytes

    def prefill_time(self, new_tokens: np.ndarray, context_lens: np.ndarray) -> float:
        # Plain Python over the batch's few sequences: numpy's per-call overhead would cost
        # more than the arithmetic, which is on integers (exact either way).
        new, context = new_tokens.astype(np.int64).tolist(), context_lens.astype(np.int64).tolist()
        pairs = sum(n * (n + 1) // 2 + n * (c - n) for n, c in zip(new, context))  # causal attention pairs
        flops = self._linear_flops * sum(new) + self._pair_flops * pairs
        kv_bytes = self._kv_bytes * sum(context)  # write new, read cached
        busy = max(flops / self._flop_rate, (self._weight_bytes + kv_bytes) / self._byte_rate)
        return busy + self.assumptions.step_overhead_s

    def decode_times(self, batch_size: int, total_context: int, steps: int) -> np.ndarray:
        """Each step's FLOPs and bytes are affine in its context, which grows by
        ``batch_size`` a step: two lines over the run, and the larger of them per step."""
        context = total_context + batch_size * np.arange(steps, dtype=np.float64)
        compute = context * (self._pair_flops / self._flop_rate)
        compute += self._linear_flops * batch_size / self._flop_rate
        memory = context * (self._kv_bytes / self._byte_rate)
        memory += (self._weight_bytes + self._kv_bytes * batch_size) / self._byte_rate
        busy = np.maximum(compute, memory, out=compute)
        busy += self.assumptions.step_overhead_s
        return busy

    def decode_time(self, batch_size: int, total_context: float) -> float:
        """One step of ``decode_times``, as a number: a convex function of the context."""
        compute = total_context * (self._pair_flops / self._flop_rate)
        compute += self._linear_flops * batch_size / self._flop_rate
        memory = total_context * (self._kv_bytes / self._byte_rate)
        memory += (self._weight_bytes + self._kv_bytes * batch_size) / self._byte_rate
        return max(compute, memory) + self.assumptions.step_overhead_s

    def copy_time(self, num_blocks: int) -> float:
        if num_blocks == 0:
            return 0.0
        return 2 * num_blocks * self._block_bytes / self._byte_rate  # read and write

    def swap_time(self, num_blocks: int) -> float:
        if num_blocks == 0:
            return 0.0
        return num_blocks * self._block_bytes / self.gpu.pcie_bandwidth + self.assumptions.transfer_latency_s

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "assumptions": vars(self.assumptions)}
