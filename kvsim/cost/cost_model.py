"""The cost-model interface: how long one engine step takes, from its batch alone.

The simulator asks for a prefill step's time from its per-sequence token counts, and for a
run of identical decode steps at once (a decode step's cost depends on the batch size and
the total context, which grows by the batch size every step), so that it can charge many
steps per event. Block copies (copy-on-write) and swaps over PCIe are priced separately.
The roofline model and measured profiles are the two implementations.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from kvsim.policies.scheduler import StepKind, StepPlan


class CostModel(ABC):
    name: str
    #: "analytic", "measured" or "derived": shown next to every result it priced.
    kind: str

    @abstractmethod
    def prefill_time(self, new_tokens: np.ndarray, context_lens: np.ndarray) -> float:
        """Seconds for one prefill step; sequence i computes ``new_tokens[i]`` tokens attending
        to ``context_lens[i]`` (cached prefix included)."""

    @abstractmethod
    def decode_times(self, batch_size: int, total_context: int, steps: int) -> np.ndarray:
        """Seconds of each of ``steps`` consecutive decode steps of ``batch_size`` sequences;
        the first attends to ``total_context`` tokens in all, each next one to ``batch_size`` more."""

    def mixed_time(self, new_tokens: np.ndarray, context_lens: np.ndarray) -> float:
        """Seconds for one step of prompt chunks and decodes together (v1's chunked prefill);
        an entry of one new token is a decode. By default priced as a prefill of all of them,
        which is exact for a model that counts only FLOPs and bytes."""
        return self.prefill_time(new_tokens, context_lens)

    @abstractmethod
    def copy_time(self, num_blocks: int) -> float:
        """Seconds to copy ``num_blocks`` KV blocks inside GPU memory (copy-on-write); none
        cost nothing."""

    @abstractmethod
    def swap_time(self, num_blocks: int) -> float:
        """Seconds to move ``num_blocks`` KV blocks one way between GPU and host memory; none
        cost nothing."""

    def communication_time(self, plan: StepPlan) -> float:
        """Seconds of one execution of ``plan`` spent in collectives between GPUs (a
        tensor-parallel replica's; none on one GPU). Part of what ``plan_durations`` charges."""
        return 0.0

    def transfer_time(self, plan: StepPlan) -> float:
        """Seconds the step's swaps spend on the host link, both ways."""
        return self.swap_time(plan.swap_in_blocks) + self.swap_time(plan.swap_out_blocks)

    def plan_durations(self, plan: StepPlan, steps: int = 1, with_transfers: bool = True) -> np.ndarray:
        """Seconds of each of ``steps`` executions of a scheduler's StepPlan (decode plans may
        repeat; copies and swaps are paid once, before the first step). ``with_transfers``
        False leaves the swaps out, for a clock that runs them on the host link itself
        (``transfer_time``)."""
        if plan.kind is StepKind.DECODE:
            durations = self.decode_times(len(plan.seqs), int(plan.context_lens.sum()), steps)
        elif plan.kind is StepKind.MIXED:
            durations = np.array([self.mixed_time(plan.new_tokens, plan.context_lens)])
        else:
            durations = np.array([self.prefill_time(plan.new_tokens, plan.context_lens)])
        if plan.block_copies or plan.swap_in_blocks or plan.swap_out_blocks:  # most steps move none
            moves = self.copy_time(plan.block_copies)
            if with_transfers:
                moves = moves + self.swap_time(plan.swap_in_blocks) + self.swap_time(plan.swap_out_blocks)
            durations[0] += moves
        return durations

    def describe(self) -> dict:
        """What priced this run, for summary.json."""
        return {"name": self.name, "kind": self.kind}
