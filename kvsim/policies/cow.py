"""Copy-on-write for forked sequences: whose last block may be shared, and the copy itself.

Forking (parallel sampling, beam search) gives the child the parent's block table with one
more reference on every block. Full blocks are never written again, so sharing them costs
nothing; the partial last block is where the next token of *every* sharer goes. Whoever
writes first while others still point at it gets a private copy (one block copy, priced by
the cost model) and lets go of the original; the last sharer left writes in place.

The tracker keeps the (usually empty) set of sequences that may hold a shared tail, so the
plain never-forked case pays nothing per decode step.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from kvsim.policies.block_allocator import BlockAllocator


class CopyOnWrite:
    def __init__(self, allocator: BlockAllocator, block_size: int) -> None:
        self.allocator = allocator
        self.block_size = block_size
        self._maybe_shared: set[int] = set()
        self.copies: list[tuple[int, int]] = []  # (original, copy) since last taken

    @property
    def active(self) -> bool:
        """May any sequence hold a shared tail? (False keeps the plain decode path untouched.)"""
        return bool(self._maybe_shared)

    def watch(self, seqs) -> None:
        """These sequences were just forked (or came back from swap sharing blocks)."""
        self._maybe_shared.update(seqs)

    def forget(self, seq: int) -> None:
        self._maybe_shared.discard(seq)

    def writers(
        self, seqs: np.ndarray, num_tokens: np.ndarray, held: np.ndarray, tables: dict[int, list[int]]
    ) -> list[int]:
        """Those of ``seqs`` whose next write (token ``num_tokens - 1``) lands in a shared block."""
        if not self._maybe_shared:
            return []
        found = []
        ref = self.allocator.ref_count
        for i in np.flatnonzero(np.isin(seqs, list(self._maybe_shared))).tolist():
            seq = int(seqs[i])
            if num_tokens[i] <= held[i] * self.block_size and ref[tables[seq][-1]] > 1:
                found.append(seq)
            else:  # its tail is private now, or it moves on to a fresh block
                self._maybe_shared.discard(seq)
        return found

    def duplicated_tail_slots(
        self, seqs: np.ndarray, num_tokens: np.ndarray, held: np.ndarray, tables: dict[int, list[int]]
    ) -> int:
        """Unwritten slots counted more than once when every sequence's last-block tail
        (``held * block_size - num_tokens``) is summed: sharers of one partial last block
        each count its tail, which physically exists once, as the fullest sharer leaves it."""
        if not self._maybe_shared:
            return 0
        tails: dict[int, list[int]] = {}  # shared-candidate last block -> its sharers' tails
        for i in np.flatnonzero(np.isin(seqs, list(self._maybe_shared))).tolist():
            tail = int(held[i]) * self.block_size - int(num_tokens[i])
            tails.setdefault(tables[int(seqs[i])][-1], []).append(tail)
        return sum(sum(t) - min(t) for t in tails.values())

    def copies_needed(self, writers: list[int], tables: dict[int, list[int]]) -> int:
        """Copies the writers will make: of k writers into a block with r references, the
        last one writes in place if all r are writing."""
        ref = self.allocator.ref_count
        per_block = Counter(tables[seq][-1] for seq in writers)
        return sum(min(k, int(ref[block]) - 1) for block, k in per_block.items())

    def write(self, writers: list[int], tables: dict[int, list[int]]) -> None:
        """Copy the tail of each writer that still shares it, in order."""
        for seq in writers:
            table = tables[seq]
            if self.allocator.ref_count[table[-1]] > 1:
                (copy,) = self.allocator.allocate(1)
                self.copies.append((table[-1], copy))
                self.allocator.release([table[-1]])
                table[-1] = copy
            self._maybe_shared.discard(seq)
