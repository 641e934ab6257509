"""Physical KV blocks: a free list plus a reference count per block.

Reference counts are what make sharing possible (copy-on-write, prefix caching): a block
returns to the free list only when the last block table that points at it lets go.
"""

from __future__ import annotations

import numpy as np


class OutOfBlocks(RuntimeError):
    """Asked for more blocks than are free; callers check ``num_free`` first."""


class BlockAllocator:
    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        # Pop from the end: block 0 is handed out first, which keeps runs reproducible to read.
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))
        self.ref_count = np.zeros(num_blocks, dtype=np.int32)
        self._shared = False  # has any block ever had a second reference?

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def num_free_uncached(self) -> int:
        """Free blocks that hold no cached prefix: taking them evicts nothing."""
        return len(self._free)

    def allocate(self, count: int) -> list[int]:
        if count > len(self._free):
            raise OutOfBlocks(f"asked for {count} blocks, {len(self._free)} free")
        if count == 0:
            return []
        if count == 1:  # most allocations are a decode step's one new block: no array from a list
            block = self._free.pop()
            self.ref_count[block] = 1
            return [block]
        blocks = self._free[-count:]
        del self._free[-count:]
        self.ref_count[blocks] = 1
        return blocks

    def share(self, blocks: list[int]) -> None:
        """One more block table points at each of ``blocks``."""
        self._shared = True
        np.add.at(self.ref_count, blocks, 1)

    def release(self, blocks: list[int]) -> None:
        """One block table lets go of each of ``blocks``; unreferenced ones become free.

        A block table never lists a block twice, so one vectorised decrement is exact. Until
        anything is shared every held block has one reference, and all of them free at once.
        """
        if not blocks:
            return
        ids = np.array(blocks, dtype=np.intp)  # the dtype given: half the cost of inferring it
        if not self._shared:
            if not self.ref_count[ids].all():
                raise AssertionError(f"blocks {ids[self.ref_count[ids] == 0].tolist()} released twice")
            self.ref_count[ids] = 0
            self._free.extend(blocks)
            return
        counts = self.ref_count[ids] - 1
        if (counts < 0).any():
            raise AssertionError(f"blocks {ids[counts < 0].tolist()} released more often than referenced")
        self.ref_count[ids] = counts
        self._free.extend(ids[counts == 0].tolist())
