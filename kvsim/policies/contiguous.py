"""Contiguous KV reservation (the Orca baselines): each sequence gets one range of token slots,
sized by a reservation rule at admission and held until it finishes.

Because a reservation already covers the sequence's whole life, decoding never runs out of
room and nothing is preempted; the price is paid at admission, where a request waits at the
queue's head until a range of its reservation's size is free. Which rule is used is the
only difference between ``orca-max``, ``orca-pow2`` and ``orca-oracle``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kvsim.policies.buddy import BuddyAllocator, ContiguousAllocator
from kvsim.policies.kv_manager import BlockTransfers, CacheUsage, PrivateCopyKVManager
from kvsim.policies.registry import PolicyContext, register
from kvsim.policies.scheduler import Scheduler

#: (prompt tokens, final tokens: KV slots the sequence will fill by its end) -> slots to
#: reserve. The Orca rules reserve the prompt plus an estimate of the output, as the vLLM
#: paper's artifact defines them; the slots beyond the true length are internal fragmentation.
ReservationRule = Callable[[int, int], int]


def reserve_exact(prompt_tokens: int, final_tokens: int) -> int:
    """Orca (Oracle): knows the output length and reserves exactly the slots it will fill
    (prompt + output - 1: the last generated token's KV is never written)."""
    return final_tokens


def reserve_pow2(max_model_len: int) -> ReservationRule:
    """Orca (Pow2): the prompt plus the true output length rounded up to a power of two
    (under 2x the output: 25 -> 32), capped at the context."""

    def rule(prompt_tokens: int, final_tokens: int) -> int:
        output = final_tokens - prompt_tokens + 1
        estimate = prompt_tokens + (1 << (output - 1).bit_length()) - 1
        return max(final_tokens, min(estimate, max_model_len))

    return rule


def reserve_max(max_model_len: int) -> ReservationRule:
    """Orca (Max) and FasterTransformer: the model's whole context, whatever the request."""
    return lambda prompt_tokens, final_tokens: max(final_tokens, max_model_len)


class ContiguousKVManager(PrivateCopyKVManager):
    """One contiguous range per sequence, from a ``ContiguousAllocator`` over the cache's slots.

    ``block_size`` only sets the unit of ``num_used_blocks``, so KV usage reads the same as
    the paged policy's; allocation itself is by token slot.
    """

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        reservation: ReservationRule,
        allocator: type[ContiguousAllocator] = BuddyAllocator,
    ) -> None:
        self.num_blocks, self.block_size = num_blocks, block_size
        self.reservation = reservation
        self.allocator = allocator(num_blocks * block_size)
        # sequence id -> (start of its range, tokens it fills by its end: fixed at admission)
        self._ranges: dict[int, tuple[int, int]] = {}
        self._final_total = 0  # their sum, kept so that ``usage`` needs no pass over the ranges
        self._copied_blocks = 0  # private prompt and beam copies since the step's moves were taken

    def admit_group(self, seqs: list[int], num_tokens: list[int], final_tokens: list[int]) -> bool:
        admitted = []
        for seq, tokens, final in zip(seqs, num_tokens, final_tokens):
            if not self.can_admit(tokens, final):
                for done in admitted:
                    self.free(done)
                return False
            self.admit(seq, tokens, final)
            admitted.append(seq)
        self._copied_blocks += (len(seqs) - 1) * -(-num_tokens[0] // self.block_size)
        return True

    def copy_from_parent(self, parent_tokens: int) -> None:
        self._copied_blocks += -(-parent_tokens // self.block_size)

    def take_step_moves(self) -> BlockTransfers:
        moves = BlockTransfers(private_copies=self._copied_blocks)
        self._copied_blocks = 0
        return moves

    def fits_alone(self, final_tokens: list[int], prompt_tokens: int) -> bool:
        """Place the reservations in an empty allocator of the same kind: with buddy rounding,
        ranges that add up to less than the cache can still fail to fit together."""
        empty = type(self.allocator)(self.num_blocks * self.block_size)
        for tokens in final_tokens:
            size = self.reservation(prompt_tokens, tokens)
            if not empty.can_allocate(size):
                return False
            empty.allocate(size)
        return True

    def can_admit(self, num_tokens: int, final_tokens: int) -> bool:
        return self.allocator.can_allocate(self.reservation(num_tokens, final_tokens))

    def admit(self, seq: int, num_tokens: int, final_tokens: int) -> None:
        size = self.reservation(num_tokens, final_tokens)
        if size < final_tokens:
            raise AssertionError(f"reservation of {size} slots for a sequence that fills {final_tokens}")
        self._ranges[seq] = (self.allocator.allocate(size), final_tokens)
        self._final_total += final_tokens

    def decode_headroom(
        self, seqs: np.ndarray, num_tokens: np.ndarray, max_steps: int, keep_cached: bool = False
    ) -> int:
        return max_steps  # the reservation covers every token the sequence will produce

    def can_append(self, seq: int, num_tokens: int) -> bool:
        return True

    def append(self, seqs: np.ndarray, num_tokens: np.ndarray, steps: int) -> None:
        """Nothing to allocate: tokens are written into the range reserved at admission."""

    def free(self, seq: int) -> None:
        offset, final_tokens = self._ranges.pop(seq)
        self.allocator.release(offset)
        self._final_total -= final_tokens

    def num_used_blocks(self) -> float:
        return (self.allocator.num_slots - self.allocator.num_free) / self.block_size

    def usage(self, seqs: np.ndarray, num_tokens: np.ndarray) -> CacheUsage:
        # Every held slot belongs to a running sequence (there is no preemption), so the
        # allocator's count of held slots splits into what those sequences store, will
        # store, and will never store.
        if len(seqs) != len(self._ranges):
            raise AssertionError(f"usage of {len(seqs)} sequences; {len(self._ranges)} hold ranges")
        held = self.allocator.num_slots - self.allocator.num_free
        stored = int(num_tokens.sum())
        return CacheUsage(
            token_states=stored,
            reserved=self._final_total - stored,
            internal_fragmentation=held - self._final_total,
            free=self.allocator.num_free,
        )


def build_contiguous(ctx: PolicyContext, reservation: ReservationRule) -> Scheduler:
    kv = ContiguousKVManager(ctx.num_blocks, ctx.block_size, reservation)
    return Scheduler(kv, ctx.max_num_seqs, ctx.max_num_batched_tokens, preemption=False, beam=ctx.beam)


@register(
    "orca-max",
    "Orca: contiguous buddy-allocated reservation of the model's full context per request",
    preempts=False,
)
def build_orca_max(ctx: PolicyContext) -> Scheduler:
    return build_contiguous(ctx, reserve_max(ctx.max_model_len))


@register(
    "orca-pow2",
    "Orca: contiguous reservation of the prompt + the output length rounded up to a power of two",
    preempts=False,
)
def build_orca_pow2(ctx: PolicyContext) -> Scheduler:
    return build_contiguous(ctx, reserve_pow2(ctx.max_model_len))


@register(
    "orca-oracle",
    "Orca: contiguous reservation of exactly prompt + output (knows the output length)",
    preempts=False,
)
def build_orca_oracle(ctx: PolicyContext) -> Scheduler:
    return build_contiguous(ctx, reserve_exact)
