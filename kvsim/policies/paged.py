"""vLLM's PagedAttention policy: fixed-size blocks allocated on demand through block tables.

A sequence holds ``ceil(tokens / block_size)`` blocks, anywhere in the pool; the only
waste is the unfilled tail of its last block. Block tables may share blocks (reference
counted): forks copy a table and copy-on-write its shared tail (``cow.py``), named full
blocks are found again by content (``prefix_cache.py``), and a preempted group can be
moved block by block to a CPU swap space (``swap.py``).
"""

from __future__ import annotations

import numpy as np

from kvsim.policies.block_allocator import BlockAllocator
from kvsim.policies.cow import CopyOnWrite
from kvsim.policies.kv_manager import BlockTransfers, CacheUsage, SharingKVManager
from kvsim.policies.prefix_cache import CachingBlockAllocator
from kvsim.policies.registry import PolicyContext, register
from kvsim.policies.scheduler import Scheduler
from kvsim.policies.scheduler_v1 import V1Scheduler
from kvsim.policies.swap import distinct_blocks, remap


def blocks_for(tokens, block_size: int):
    """Blocks needed to hold ``tokens`` tokens (works on ints and numpy arrays)."""
    return -(-tokens // block_size)


class PagedKVManager(SharingKVManager):
    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        watermark: float = 0.01,
        prefix_cache: bool = False,
        swap_blocks: int = 0,
    ) -> None:
        self.block_size = block_size
        self.num_blocks = num_blocks
        # Named blocks cost dict look-ups on every free; only runs that share prefixes pay it.
        self.allocator = CachingBlockAllocator(num_blocks) if prefix_cache else BlockAllocator(num_blocks)
        self.cow = CopyOnWrite(self.allocator, block_size)
        self.swap_space = BlockAllocator(swap_blocks)
        self.cpu_tables: dict[int, list[int]] = {}  # block tables of swapped-out sequences
        self.transfers = BlockTransfers()  # physical moves not yet taken by the scheduler
        self._logical = 0  # sum of held blocks over sequences: blocks needed without sharing
        # Admission keeps this many blocks free so running sequences can grow a little
        # before the first preemption (vLLM's watermark, 1% by default).
        self.watermark_blocks = int(watermark * num_blocks)
        self.block_tables: dict[int, list[int]] = {}
        self._held = np.zeros(1024, dtype=np.int64)  # blocks held, indexed by sequence id

    def _ensure(self, seq: int) -> None:
        if seq >= len(self._held):
            self._held = np.concatenate(
                [self._held, np.zeros(max(seq + 1, 2 * len(self._held)) - len(self._held), np.int64)]
            )

    def fits_alone(self, final_tokens: list[int], prompt_tokens: int) -> bool:
        needed = sum(blocks_for(tokens, self.block_size) for tokens in final_tokens)
        return needed <= self.num_blocks - self.watermark_blocks

    def can_admit(self, num_tokens: int, final_tokens: int) -> bool:
        needed = blocks_for(num_tokens, self.block_size)
        return self.allocator.num_free - needed >= self.watermark_blocks

    def admit(self, seq: int, num_tokens: int, final_tokens: int) -> None:
        self._ensure(seq)
        blocks = self.allocator.allocate(blocks_for(num_tokens, self.block_size))
        self._install(seq, blocks)

    def _install(self, seq: int, table: list[int]) -> None:
        self._ensure(seq)
        self.block_tables[seq] = table
        self._held[seq] = len(table)
        self._logical += len(table)

    def admit_cached(self, seq: int, num_tokens: int, names: list[int], pinned: int) -> int | None:
        """Admit with the prompt's named full blocks: reuse those cached, name the new ones.

        Returns the number of tokens found cached (not to be prefilled), or None if there is
        no room. The first ``pinned`` blocks (a service-defined shared prefix) stay cached for
        good. At least one token is always computed: its logits are what the step is for.
        """
        allocator = self.allocator
        hits: list[int] = []
        for name in names[: (num_tokens - 1) // self.block_size]:
            block = allocator.lookup(name)
            if block is None:
                break
            hits.append(block)
        revived = sum(allocator.is_evictable(b) for b in hits)
        needed = blocks_for(num_tokens, self.block_size) - len(hits)
        if allocator.num_free - revived - needed < self.watermark_blocks:
            return None
        for block in hits:
            allocator.take(block)
        table = hits + allocator.allocate(needed)
        for i in range(len(hits), min(len(names), num_tokens // self.block_size)):  # full ones
            allocator.name(table[i], names[i], pin=i < pinned)
        self._install(seq, table)
        return len(hits) * self.block_size

    def count_cached(self, names: list[int], num_tokens: int) -> int:
        """Leading blocks of ``names`` found cached, as ``admit_cached`` of ``num_tokens``
        tokens would take them (looked up only: nothing is taken)."""
        hits = 0
        for name in names[: (num_tokens - 1) // self.block_size]:
            if self.allocator.lookup(name) is None:
                break
            hits += 1
        return hits

    def name_blocks(self, seq: int, names: list[int]) -> None:
        """Name the sequence's full blocks (e.g. generated ones, before freeing) for later hits."""
        for block, name in zip(self.block_tables[seq], names):
            self.allocator.name(block, name)

    def fork(self, parent: int, child: int) -> None:
        """The child starts as the parent: same blocks, one more reference each."""
        table = list(self.block_tables[parent])
        self.allocator.share(table)
        self._install(child, table)
        self.cow.watch((parent, child))

    def _new_blocks(self, seqs: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        needed = tokens + (self.block_size - 1)
        needed //= self.block_size
        needed -= self._held[seqs]
        return np.maximum(needed, 0, out=needed)

    def _writers(self, seqs: np.ndarray, num_tokens: np.ndarray) -> list[int]:
        """Those of ``seqs`` whose next write lands in a shared block (copy first)."""
        return self.cow.writers(seqs, num_tokens, self._held[seqs], self.block_tables)

    def decode_headroom(
        self, seqs: np.ndarray, num_tokens: np.ndarray, max_steps: int, keep_cached: bool = False
    ) -> int:
        free = self.allocator.num_free_uncached if keep_cached else self.allocator.num_free
        if self.cow.active:  # copies happen in the first step, before anything grows
            free -= self.cow.copies_needed(self._writers(seqs, num_tokens), self.block_tables)
        if self._new_blocks(seqs, num_tokens + (max_steps - 1)).sum() <= free:
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
        if self.cow.active:
            return self.decode_headroom(np.array([seq]), np.array([num_tokens]), 1) >= 1
        needed = blocks_for(num_tokens, self.block_size) - self._held[seq]
        return needed <= self.allocator.num_free

    def try_append(self, seqs: np.ndarray, num_tokens: np.ndarray) -> bool:
        if self.cow.active:  # copies come first and change what is free
            return super().try_append(seqs, num_tokens)
        new = self._new_blocks(seqs, num_tokens)
        if new.sum() > self.allocator.num_free:
            return False
        self._grow(seqs, new)
        return True

    def append(self, seqs: np.ndarray, num_tokens: np.ndarray, steps: int) -> None:
        if self.cow.active:
            self.cow.write(self._writers(seqs, num_tokens), self.block_tables)
        self._grow(seqs, self._new_blocks(seqs, num_tokens + (steps - 1)))

    def _grow(self, seqs: np.ndarray, new: np.ndarray) -> None:
        """Give each of ``seqs`` its ``new`` blocks, in one allocation dealt out in order."""
        growing = new.nonzero()[0]
        if not len(growing):
            return
        counts = new[growing].tolist()
        total = sum(counts)
        blocks = self.allocator.allocate(total)
        tables, start = self.block_tables, 0
        for seq, count in zip(seqs[growing].tolist(), counts):
            tables[seq].extend(blocks[start : start + count])
            start += count
        self._held[seqs] += new
        self._logical += total

    def take_step_moves(self) -> BlockTransfers:
        moves, self.transfers = self.transfers, BlockTransfers()
        moves.copies.extend(self.cow.copies)
        self.cow.copies = []
        return moves

    def free(self, seq: int) -> None:
        table = self._uninstall(seq)
        if self.cow.copies:  # a copy into a block freed before the step runs is never made
            freed = set(table)
            self.cow.copies = [(source, copy) for source, copy in self.cow.copies if copy not in freed]
        self.allocator.release(table)

    def _uninstall(self, seq: int) -> list[int]:
        table = self.block_tables.pop(seq)
        self._logical -= len(table)
        self._held[seq] = 0
        self.cow.forget(seq)
        return table

    # -- swapping: a group's tables move together, sharing preserved --------------------
    def swap_out_blocks(self, seqs: list[int]) -> int:
        """Distinct blocks a swap-out of ``seqs`` moves (and CPU blocks it needs)."""
        return len(distinct_blocks([self.block_tables[s] for s in seqs]))

    def swap_out(self, seqs: list[int]) -> int:
        moved = self.swap_out_blocks(seqs)
        tables = [self._uninstall(s) for s in seqs]
        moved_tables, pairs = remap(tables, self.allocator, self.swap_space)
        self.transfers.swap_out.extend(pairs)
        for seq, table in zip(seqs, moved_tables):
            self.cpu_tables[seq] = table
        return moved

    def can_swap_in(self, seqs: list[int], keep_watermark: bool = True) -> bool:
        """Room for the group's blocks plus one new block per sequence for its next token."""
        needed = len(distinct_blocks([self.cpu_tables[s] for s in seqs])) + len(seqs)
        reserve = self.watermark_blocks if keep_watermark else 0
        return self.allocator.num_free - needed >= reserve

    def swap_in(self, seqs: list[int]) -> int:
        tables = [self.cpu_tables.pop(s) for s in seqs]
        moved = len(distinct_blocks(tables))
        moved_tables, pairs = remap(tables, self.swap_space, self.allocator)
        self.transfers.swap_in.extend(pairs)
        for seq, table in zip(seqs, moved_tables):
            self._install(seq, table)
        if len(seqs) > 1:
            self.cow.watch(seqs)
        return moved

    def num_logical_blocks(self) -> int:
        return self._logical

    def num_used_blocks(self) -> int:
        return self.allocator.num_used

    def usage(self, seqs: np.ndarray, num_tokens: np.ndarray) -> CacheUsage:
        """Each physical block once. The held blocks (pinned prefix blocks included) split
        into written slots (token states) and the unwritten tails of the sequences' last
        blocks (internal fragmentation); nothing is reserved ahead. Evictable cached blocks
        count as free: the allocator hands them out on demand exactly like free ones, and
        their KV is only a chance of a future hit.

        Every sequence holds room for its tokens and less than a block more, so the summed
        tails are ``logical blocks x block size - tokens``, from a running total and one
        sum; only sharers of a partial last block (after a fork, until copy-on-write) need
        a look at their block tables, so that the shared tail counts once.
        """
        if len(seqs) != len(self.block_tables):
            raise AssertionError(f"usage of {len(seqs)} sequences; {len(self.block_tables)} hold blocks")
        size, free = self.block_size, self.allocator.num_free
        unwritten = self._logical * size - int(np.add.reduce(num_tokens))
        if self.cow.active:
            unwritten -= self.cow.duplicated_tail_slots(seqs, num_tokens, self._held[seqs], self.block_tables)
        return CacheUsage(
            token_states=(self.num_blocks - free) * size - unwritten,
            reserved=0,
            internal_fragmentation=unwritten,
            free=free * size,
        )


@register(
    "paged",
    "vLLM PagedAttention: on-demand blocks through block tables, copy-on-write sharing, preemption by recompute or swap",
)
def build_paged(ctx: PolicyContext) -> Scheduler:
    kv = PagedKVManager(
        ctx.num_blocks,
        ctx.block_size,
        ctx.watermark,
        prefix_cache=ctx.prefix_caching or ctx.shared_prefix,
        swap_blocks=ctx.swap_blocks,
    )
    if ctx.scheduler == "v1":
        return V1Scheduler(
            kv,
            ctx.max_num_seqs,
            ctx.max_num_batched_tokens,
            prefix_caching=ctx.prefix_caching,
            long_prefill_token_threshold=ctx.long_prefill_token_threshold,
            max_num_partial_prefills=ctx.max_num_partial_prefills,
        )
    return Scheduler(
        kv,
        ctx.max_num_seqs,
        ctx.max_num_batched_tokens,
        preemption_mode=ctx.preemption,
        beam=ctx.beam,
        prefix_caching=ctx.prefix_caching,
    )
