"""Prefix sharing by content: full blocks named by the hash of their token-id chain.

Block i of a sequence is named ``hash((name of block i-1, *its token ids))``, so equal names
mean equal prefixes up to and including that block (as in vLLM's automatic prefix caching).
Only full blocks are named: a partial block will still be written.

``CachingBlockAllocator`` keeps a name -> block map. A block whose last reference goes away
keeps its name and waits, evictable, in least-recently-freed order; a request that finds it
takes it back without recomputing it, and ``allocate`` evicts the oldest when the free list
runs dry. A *pinned* block (a service-defined shared prefix, as in the paper's section 4.4)
keeps one reference held by the cache itself, so it is never evicted.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from kvsim.policies.block_allocator import BlockAllocator, OutOfBlocks


def block_hashes(token_ids: np.ndarray, block_size: int) -> list[int]:
    """Names of the full blocks of ``token_ids`` (int hashing is not salted: deterministic)."""
    names, previous = [], 0
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        previous = hash((previous, *token_ids[start : start + block_size].tolist()))
        names.append(previous)
    return names


class CachingBlockAllocator(BlockAllocator):
    def __init__(self, num_blocks: int) -> None:
        super().__init__(num_blocks)
        self._block_of: dict[int, int] = {}  # name -> block
        self._name_of: dict[int, int] = {}  # block -> name
        self._evictable: OrderedDict[int, None] = OrderedDict()  # unreferenced named blocks

    @property
    def num_free(self) -> int:
        return len(self._free) + len(self._evictable)

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    @property
    def num_free_uncached(self) -> int:
        return len(self._free)

    def allocate(self, count: int) -> list[int]:
        short = count - len(self._free)
        if short > len(self._evictable):
            raise OutOfBlocks(f"asked for {count} blocks, {self.num_free} free")
        for _ in range(max(short, 0)):
            block, _ = self._evictable.popitem(last=False)
            del self._block_of[self._name_of.pop(block)]
            self._free.append(block)
        return super().allocate(count)

    def release(self, blocks: list[int]) -> None:
        """As ``BlockAllocator.release``, but an unreferenced block with a name waits,
        evictable, instead of going to the free list (in the order released)."""
        if not blocks:
            return
        ids = np.asarray(blocks)
        counts = self.ref_count[ids] - 1
        if (counts < 0).any():
            raise AssertionError(f"blocks {ids[counts < 0].tolist()} released more often than referenced")
        self.ref_count[ids] = counts
        named = self._name_of
        for block in ids[counts == 0].tolist():
            if block in named:
                self._evictable[block] = None
            else:
                self._free.append(block)

    def lookup(self, name: int) -> int | None:
        return self._block_of.get(name)

    def is_evictable(self, block: int) -> bool:
        return block in self._evictable

    def take(self, block: int) -> None:
        """One more table points at a cached block (reviving it if it was evictable)."""
        self._evictable.pop(block, None)
        self.ref_count[block] += 1

    def name(self, block: int, name: int, pin: bool = False) -> None:
        """Remember that ``block`` holds the content ``name`` (first block with a name wins)."""
        if name in self._block_of or block in self._name_of:
            return
        self._block_of[name] = block
        self._name_of[block] = name
        if pin:
            self.ref_count[block] += 1
