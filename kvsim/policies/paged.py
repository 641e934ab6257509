"""vLLM's PagedAttention policy: fixed-size blocks allocated on demand through block tables.

A sequence holds ``ceil(tokens / block_size)`` blocks, anywhere in the pool; the only
waste is the unfilled tail of its last block.
"""

from __future__ import annotations

import numpy as np

from kvsim.policies.block_allocator import BlockAllocator
from kvsim.policies.kv_manager import CacheUsage, KVCacheManager
from kvsim.policies.registry import PolicyContext, register
from kvsim.policies.scheduler import Scheduler


def blocks_for(tokens, block_size: int):
    """Blocks needed to hold ``tokens`` tokens (works on ints and numpy arrays)."""
    return -(-tokens // block_size)


class PagedKVManager(KVCacheManager):
    def __init__(self, num_blocks: int, block_size: int, watermark: float = 0.01) -> None:
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.allocator = BlockAllocator(num_blocks)
        # Admission keeps this many blocks free so running sequences can grow a little
        # before the first preemption (vLLM's watermark, 1% by default).
        self.watermark_blocks = int(watermark * num_blocks)
        self.block_tables: dict[int, list[int]] = {}
        self._held = np.zeros(1024, dtype=np.int64)  # blocks held, indexed by sequence id

    def _ensure(self, seq: int) -> None:
        if seq >= len(self._held):
            self._held = np.concatenate([self._held, np.zeros(max(seq + 1, 2 * len(self._held)) - len(self._held), np.int64)])

    def fits_alone(self, total_tokens: int) -> bool:
        return blocks_for(total_tokens, self.block_size) <= self.num_blocks - self.watermark_blocks

    def can_admit(self, num_tokens: int, final_tokens: int) -> bool:
        needed = blocks_for(num_tokens, self.block_size)
        return self.allocator.num_free - needed >= self.watermark_blocks

    def admit(self, seq: int, num_tokens: int, final_tokens: int) -> None:
        self._ensure(seq)
        blocks = self.allocator.allocate(blocks_for(num_tokens, self.block_size))
        self.block_tables[seq] = blocks
        self._held[seq] = len(blocks)

    def _new_blocks(self, seqs: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        return np.maximum(blocks_for(tokens, self.block_size) - self._held[seqs], 0)

    def decode_headroom(self, seqs: np.ndarray, num_tokens: np.ndarray, max_steps: int) -> int:
        free = self.allocator.num_free
        if self._new_blocks(seqs, num_tokens + max_steps - 1).sum() <= free:
            return max_steps
        lo, hi = 0, max_steps - 1  # lo steps fit, max_steps do not
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._new_blocks(seqs, num_tokens + mid - 1).sum() <= free:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def can_append(self, seq: int, num_tokens: int) -> bool:
        needed = blocks_for(num_tokens, self.block_size) - self._held[seq]
        return needed <= self.allocator.num_free

    def append(self, seqs: np.ndarray, num_tokens: np.ndarray, steps: int) -> None:
        new = self._new_blocks(seqs, num_tokens + steps - 1)
        growing = np.flatnonzero(new)
        if not len(growing):
            return
        blocks = self.allocator.allocate(int(new.sum()))  # one call, then dealt out in order
        ends = np.cumsum(new[growing]).tolist()
        start = 0
        for i, end in zip(growing.tolist(), ends):
            self.block_tables[int(seqs[i])].extend(blocks[start:end])
            start = end
        self._held[seqs] += new

    def free(self, seq: int) -> None:
        self.allocator.release(self.block_tables.pop(seq))
        self._held[seq] = 0

    def num_used_blocks(self) -> int:
        return self.allocator.num_used

    def usage(self, seqs: np.ndarray, num_tokens: np.ndarray, final_tokens: np.ndarray) -> CacheUsage:
        held_slots = int(self._held[seqs].sum()) * self.block_size
        # The newest token's KV is written by the next step; its slot already counts as used.
        stored = int(np.minimum(num_tokens, self._held[seqs] * self.block_size).sum())
        return CacheUsage(token_states=stored, reserved=0,
                          internal_fragmentation=held_slots - stored,
                          free=self.allocator.num_free * self.block_size)


@register("paged", "vLLM PagedAttention: on-demand blocks through block tables, preemption by recompute")
def build_paged(ctx: PolicyContext) -> Scheduler:
    kv = PagedKVManager(ctx.num_blocks, ctx.block_size, ctx.watermark)
    return Scheduler(kv, ctx.max_num_seqs, ctx.max_num_batched_tokens)
