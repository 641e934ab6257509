"""Contiguous allocators over the KV cache's token slots, for policies that reserve one range
per sequence (Orca, FasterTransformer).

``BuddyAllocator`` is what the paper's Orca re-implementation used: free space is kept as
power-of-two blocks aligned to their size, split on demand and merged with their buddy on
release. Its alignment rule is what makes external fragmentation appear by itself: slots
can be free yet unusable because no free *block* is large enough. Another placement rule is
one more ``ContiguousAllocator`` subclass, passed to ``ContiguousKVManager``.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod


class OutOfSlots(RuntimeError):
    """No free range is large enough; callers check ``can_allocate`` first."""


class ContiguousAllocator(ABC):
    """Hands out ``[offset, offset + size)`` ranges of ``num_slots`` token slots."""

    def __init__(self, num_slots: int) -> None:
        if num_slots < 1:
            raise ValueError(f"a contiguous allocator needs at least one slot (got {num_slots})")
        self.num_slots = num_slots
        self.num_free = num_slots
        self._allocated: dict[int, int] = {}  # offset -> size of each live range

    def allocate(self, size: int) -> int:
        """Reserve ``size`` contiguous slots and return the first one's offset."""
        if size < 1:
            raise ValueError(f"cannot allocate {size} slots")
        if not self.can_allocate(size):
            raise OutOfSlots(f"no free range of {size} slots ({self.num_free} slots free)")
        offset = self._take(size)
        self._allocated[offset] = size
        self.num_free -= size
        return offset

    def release(self, offset: int) -> None:
        """Give back the range that starts at ``offset``."""
        size = self._allocated.pop(offset, None)
        if size is None:
            raise AssertionError(f"slot {offset} does not start a live range")
        self._give_back(offset, size)
        self.num_free += size

    def allocated_ranges(self) -> list[tuple[int, int]]:
        """Live ``(offset, size)`` ranges in address order."""
        return sorted(self._allocated.items())

    @property
    @abstractmethod
    def max_allocation(self) -> int:
        """The largest range this allocator can ever hand out (when nothing is allocated)."""

    @abstractmethod
    def can_allocate(self, size: int) -> bool:
        """Is there a free range that can hold ``size`` slots now?"""

    @abstractmethod
    def free_ranges(self) -> list[tuple[int, int]]:
        """Free ``(offset, size)`` pieces in address order, as the allocator keeps them."""

    @abstractmethod
    def _take(self, size: int) -> int:
        """Carve ``size`` slots out of the free space (``can_allocate`` holds)."""

    @abstractmethod
    def _give_back(self, offset: int, size: int) -> None:
        """Return ``[offset, offset + size)`` to the free space."""


def _order(size: int) -> int:
    """The smallest k with 2**k >= size."""
    return (size - 1).bit_length()


class BuddyAllocator(ContiguousAllocator):
    """Binary buddy system over ``[0, num_slots)``; ``num_slots`` need not be a power of two.

    A request is served from the lowest-addressed smallest block of 2**k >= size slots;
    the block's unused tail goes straight back to the free lists (as Linux's
    ``alloc_pages_exact`` does), so the reservation rule, not the allocator, decides how
    many slots a sequence holds, while the power-of-two alignment still decides *where*
    a range can go.
    """

    def __init__(self, num_slots: int) -> None:
        super().__init__(num_slots)
        self._max_order = num_slots.bit_length() - 1
        # Free blocks of 2**k slots, by order k, as sorted offsets (lowest address first).
        self._free: list[list[int]] = [[] for _ in range(self._max_order + 1)]
        self._give_back(0, num_slots)

    @property
    def max_allocation(self) -> int:
        return 1 << self._max_order

    def can_allocate(self, size: int) -> bool:
        return any(self._free[k] for k in range(_order(size), self._max_order + 1))

    def free_ranges(self) -> list[tuple[int, int]]:
        return sorted((offset, 1 << k) for k, offsets in enumerate(self._free) for offset in offsets)

    def _take(self, size: int) -> int:
        want = _order(size)
        k = next(k for k in range(want, self._max_order + 1) if self._free[k])
        offset = self._free[k].pop(0)
        while k > want:  # split, keeping the lower half and freeing the upper buddy
            k -= 1
            bisect.insort(self._free[k], offset + (1 << k))
        if size < 1 << want:
            self._give_back(offset + size, (1 << want) - size)
        return offset

    def _give_back(self, offset: int, size: int) -> None:
        # Cut the range into maximal aligned power-of-two blocks and free each one.
        end = offset + size
        while offset < end:
            k = (end - offset).bit_length() - 1
            if offset:
                k = min(k, (offset & -offset).bit_length() - 1)
            self._free_block(offset, k)
            offset += 1 << k

    def _free_block(self, offset: int, k: int) -> None:
        while k < self._max_order:
            buddy = offset ^ (1 << k)
            blocks = self._free[k]
            i = bisect.bisect_left(blocks, buddy)
            if i == len(blocks) or blocks[i] != buddy:
                break
            del blocks[i]  # merge with the free buddy into a block twice as large
            offset = min(offset, buddy)
            k += 1
        bisect.insort(self._free[k], offset)
