"""FasterTransformer behind a Triton-style dynamic batcher: request-level batching.

FasterTransformer has no scheduler of its own; the paper serves it by taking up to B of the
earliest waiting requests as one batch and running that batch until all of its requests
have finished. New requests join only when the whole batch is done, so a batch's short
requests leave early and their slots stay idle until its longest one finishes. Each
request holds a contiguous max-length reservation, and B defaults to the most such
reservations the cache holds.
"""

from __future__ import annotations

from kvsim.errors import KvsimError
from kvsim.policies.buddy import BuddyAllocator, ContiguousAllocator
from kvsim.policies.contiguous import ContiguousKVManager, reserve_max
from kvsim.policies.registry import PolicyContext, register
from kvsim.policies.scheduler import Scheduler


def max_reservations(num_slots: int, size: int, allocator: type[ContiguousAllocator] = BuddyAllocator) -> int:
    """How many ranges of ``size`` slots an empty cache holds, found by allocating them."""
    pool = allocator(num_slots)
    count = 0
    while pool.can_allocate(size):
        pool.allocate(size)
        count += 1
    return count


@register(
    "ft",
    "FasterTransformer: request-level batches of up to B max-length reservations, run to completion",
    preempts=False,
)
def build_ft(ctx: PolicyContext) -> Scheduler:
    fit = max_reservations(ctx.num_blocks * ctx.block_size, ctx.max_model_len)
    batch = ctx.ft_batch_size or max(1, min(fit, ctx.max_num_seqs))
    if batch > fit:
        raise KvsimError(
            f"--ft-batch-size {batch}: the KV cache holds only {fit} reservations "
            f"of the model's {ctx.max_model_len}-token context"
        )
    kv = ContiguousKVManager(ctx.num_blocks, ctx.block_size, reserve_max(ctx.max_model_len))
    # The batch is prefilled in one pass, as FasterTransformer's context phase does.
    return Scheduler(
        kv,
        batch,
        max(ctx.max_num_batched_tokens, batch * ctx.max_model_len),
        preemption=False,
        beam=ctx.beam,
        batch_level=True,
    )
