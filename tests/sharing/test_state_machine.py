"""Random fork / append / free / swap-out / swap-in / preempt sequences on the paged manager.

A shadow model writes token ids into physical blocks exactly where the manager's block
tables say, so a missed copy-on-write (a write into a block another table still reads) or
a wrong swap mapping shows up as a sequence whose logical contents changed.
"""

from __future__ import annotations

from collections import Counter

import hypothesis.strategies as st
import numpy as np
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kvsim.policies.paged import PagedKVManager

BLOCK = 4


class SharingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.kv = PagedKVManager(num_blocks=24, block_size=BLOCK, watermark=0.0, swap_blocks=16)
        self.tokens: dict[int, list[int]] = {}  # live GPU sequences: what each should hold
        self.swapped: dict[int, list[int]] = {}
        self.gpu: dict[int, int] = {}  # (block, slot) contents: block * BLOCK + slot -> token id
        self.cpu: dict[int, int] = {}
        self.next_seq = 0
        self.next_token = 1000

    def _new_seq(self) -> int:
        self.next_seq += 1
        return self.next_seq

    def _write(self, seq: int, count: int) -> None:
        table = self.kv.block_tables[seq]
        for _ in range(count):
            pos = len(self.tokens[seq])
            self.next_token += 1
            self.gpu[table[pos // BLOCK] * BLOCK + pos % BLOCK] = self.next_token
            self.tokens[seq].append(self.next_token)

    def _contents(self, table: list[int], length: int, memory: dict[int, int]) -> list[int]:
        return [memory.get(table[p // BLOCK] * BLOCK + p % BLOCK) for p in range(length)]

    @staticmethod
    def _copy_block(src: dict[int, int], old: int, dst: dict[int, int], new: int) -> None:
        """A block copy (copy-on-write, swap) in the shadow: what block ``old`` of ``src``
        holds, slot by slot, into block ``new`` of ``dst``."""
        for slot in range(BLOCK):
            if old * BLOCK + slot in src:
                dst[new * BLOCK + slot] = src[old * BLOCK + slot]

    @rule(length=st.integers(1, 14))
    def admit(self, length: int) -> None:
        if self.kv.can_admit(length, length):
            seq = self._new_seq()
            self.kv.admit(seq, length, length)
            self.tokens[seq] = []
            self._write(seq, length)

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def fork(self, data) -> None:
        parent = data.draw(st.sampled_from(sorted(self.tokens)))
        child = self._new_seq()
        self.kv.fork(parent, child)
        self.tokens[child] = list(self.tokens[parent])

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def append(self, data) -> None:
        """One decode step for a random subset (writes the next token of each)."""
        seqs = data.draw(st.lists(st.sampled_from(sorted(self.tokens)), min_size=1, unique=True))
        arr = np.array(seqs, dtype=np.int64)
        num = np.array([len(self.tokens[s]) + 1 for s in seqs], dtype=np.int64)
        if self.kv.decode_headroom(arr, num, 1) < 1:
            return
        before = {s: list(self.kv.block_tables[s]) for s in seqs}
        self.kv.append(arr, num, 1)
        for s in seqs:
            after = self.kv.block_tables[s]
            for i, (old, new) in enumerate(zip(before[s], after)):
                if old != new:  # a copy: the table points at the copy, which holds the old contents
                    assert i == len(before[s]) - 1, "only the last block is ever copied"
                    self._copy_block(self.gpu, old, self.gpu, new)
            self._write(s, 1)
        self.kv.take_step_moves()

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def free(self, data) -> None:
        seq = data.draw(st.sampled_from(sorted(self.tokens)))
        self.kv.free(seq)
        del self.tokens[seq]

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def swap_out(self, data) -> None:
        group = data.draw(st.lists(st.sampled_from(sorted(self.tokens)), min_size=1, unique=True))
        if self.kv.swap_out_blocks(group) > self.kv.swap_space.num_free:
            return
        before = {s: list(self.kv.block_tables[s]) for s in group}
        self.kv.swap_out(group)
        for s in group:
            for old, new in zip(before[s], self.kv.cpu_tables[s]):
                self._copy_block(self.gpu, old, self.cpu, new)
            self.swapped[s] = self.tokens.pop(s)

    @precondition(lambda self: self.swapped)
    @rule()
    def swap_in(self) -> None:
        group = sorted(self.swapped)
        if not self.kv.can_swap_in(group, keep_watermark=False):
            return
        before = {s: list(self.kv.cpu_tables[s]) for s in group}
        self.kv.swap_in(group)
        for s in group:
            for old, new in zip(before[s], self.kv.block_tables[s]):
                self._copy_block(self.cpu, old, self.gpu, new)
            self.tokens[s] = self.swapped.pop(s)
            assert self._contents(self.kv.block_tables[s], len(self.tokens[s]), self.gpu) == self.tokens[s]

    @precondition(lambda self: self.tokens)
    @rule()
    def preempt_all(self) -> None:
        """Recompute preemption of everything running: all KV dropped."""
        for seq in list(self.tokens):
            self.kv.free(seq)
        self.tokens.clear()

    @invariant()
    def ref_counts_match_tables(self) -> None:
        for allocator, tables in (
            (self.kv.allocator, self.kv.block_tables),
            (self.kv.swap_space, self.kv.cpu_tables),
        ):
            refs = Counter(b for table in tables.values() for b in table)
            expected = np.zeros(allocator.num_blocks, dtype=np.int64)
            for block, count in refs.items():
                expected[block] = count
            assert (allocator.ref_count == expected).all()
            free = set(allocator._free)
            assert not free & set(refs), "a referenced block is on the free list"
            assert len(free) + len(refs) == allocator.num_blocks, "a block leaked"

    @invariant()
    def contents_intact(self) -> None:
        for seq, expected in self.tokens.items():
            assert self._contents(self.kv.block_tables[seq], len(expected), self.gpu) == expected

    @invariant()
    def logical_blocks(self) -> None:
        held = sum(len(t) for t in self.kv.block_tables.values())
        assert self.kv.num_logical_blocks() == held


TestSharing = SharingMachine.TestCase
TestSharing.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
