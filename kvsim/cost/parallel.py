"""A tensor-parallel step: one rank's compute plus the collectives that join the ranks.

Every rank of a tensor-parallel replica runs the same shard shapes (``ModelSpec.shard``), so
a step takes the compute of one rank, priced by any cost model of the shard, plus the
communication Megatron-style sharding needs: two all-reduces per layer (after attention and
after the MLP) of every token's hidden state, and the vocabulary-parallel head's all-gather
of each sampled sequence's logits. The communication model is a ring over the GPUs' NVLink,
analytic until issue 15 measures collectives: each of the 2(N - 1) ring steps moves 1/N of
the data at the link's bandwidth in one direction and pays a fixed latency. Bytes over
bandwidth is the physical floor; the latency is an assumption, stated below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvsim.cost.cost_model import CostModel
from kvsim.hardware import GPUSpec
from kvsim.models import ModelSpec
from kvsim.policies.scheduler import StepPlan


@dataclass(frozen=True)
class RingAssumptions:
    #: Seconds each ring step costs beyond its bytes (launch, synchronisation, the hop): an
    #: assumption, not a measurement (a small all-reduce over 8 GPUs, 2(N - 1) = 14 steps,
    #: then costs about 8 us); issue 15 replaces it with measured collectives.
    step_latency_s: float = 0.6e-6


class RingCollectives:
    """Ring all-reduce and all-gather among ``ranks`` GPUs over NVLink. ``GPUSpec.nvlink_bandwidth``
    is the datasheet's total (both directions); a ring sends one way on each link."""

    def __init__(self, gpu: GPUSpec, ranks: int, assumptions: RingAssumptions = RingAssumptions()):
        self.ranks, self.assumptions = ranks, assumptions
        self.one_way = gpu.nvlink_bandwidth / 2

    def all_reduce(self, nbytes: float) -> float:
        n = self.ranks
        return 2 * (n - 1) * (nbytes / n / self.one_way + self.assumptions.step_latency_s)

    def all_gather(self, nbytes: float) -> float:
        """``nbytes`` in all when gathered (each rank contributes 1/N)."""
        n = self.ranks
        return (n - 1) * (nbytes / n / self.one_way + self.assumptions.step_latency_s)


class TensorParallelCost(CostModel):
    """``compute`` prices one rank's shard; the ring prices what the ranks exchange."""

    def __init__(self, compute: CostModel, model: ModelSpec, gpu: GPUSpec, tensor_parallel: int):
        self.compute, self.model, self.tensor_parallel = compute, model, tensor_parallel
        self.ring = RingCollectives(gpu, tensor_parallel)
        self.name = f"{compute.name} + ring collectives over {tensor_parallel} GPUs"
        self.kind = compute.kind
        self._hidden_bytes = model.hidden_size * model.dtype_bytes
        self._logits_bytes = model.vocab_size * 4  # fp32 logits of one sequence, gathered

    def step_communication(self, tokens: int, sampled: int) -> float:
        """Seconds of collectives in a step of ``tokens`` tokens sampling ``sampled`` sequences."""
        layers = 2 * self.model.num_layers * self.ring.all_reduce(tokens * self._hidden_bytes)
        return layers + self.ring.all_gather(sampled * self._logits_bytes)

    def communication_time(self, plan: StepPlan) -> float:
        sampled = len(plan.seqs) if plan.samples is None else int(plan.samples.sum())
        return self.step_communication(int(plan.new_tokens.sum()), sampled)

    def prefill_time(self, new_tokens: np.ndarray, context_lens: np.ndarray) -> float:
        return self.compute.prefill_time(new_tokens, context_lens) + self.step_communication(
            int(new_tokens.sum()), len(new_tokens)
        )

    def mixed_time(self, new_tokens: np.ndarray, context_lens: np.ndarray) -> float:
        return self.compute.mixed_time(new_tokens, context_lens) + self.step_communication(
            int(new_tokens.sum()), len(new_tokens)
        )

    def decode_times(self, batch_size: int, total_context: int, steps: int) -> np.ndarray:
        times = self.compute.decode_times(batch_size, total_context, steps)
        return times + self.step_communication(batch_size, batch_size)

    def copy_time(self, num_blocks: int) -> float:
        return self.compute.copy_time(num_blocks)  # every rank copies its own heads at once

    def swap_time(self, num_blocks: int) -> float:
        # Every rank moves its shard over its own PCIe link at once: one rank's time.
        return self.compute.swap_time(num_blocks)

    def describe(self) -> dict:
        return {
            **self.compute.describe(),
            "name": self.name,
            "tensor_parallel": self.tensor_parallel,
            "communication": {
                "model": "ring over NVLink (analytic)",
                "nvlink_one_way_bytes_per_s": self.ring.one_way,
                "step_latency_s": self.ring.assumptions.step_latency_s,
            },
        }
