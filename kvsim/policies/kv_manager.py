"""The interface between a scheduler and a KV-cache allocation policy.

A KV manager decides where each sequence's keys and values live and whether there is room
for more; it knows tokens and blocks, never time or GPUs. Sequences are small integers
(ids handed out by the scheduler); their token counts live in the scheduler's arrays and
are passed in, so that a whole batch is handled with one numpy call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from kvsim.policies.block_allocator import BlockAllocator


@dataclass
class CacheUsage:
    """How the cache's token slots are spent right now (see ``KVCacheManager.usage``)."""

    token_states: int  # slots holding KV of tokens already processed (each physical slot once)
    reserved: int  # slots held for tokens the sequence will still produce
    internal_fragmentation: int  # held slots the sequence will never use
    free: int  # slots the allocator can hand out now

    def slots(self) -> tuple[int, int, int, int]:
        """The four categories in the order of the step records' columns."""
        return self.token_states, self.reserved, self.internal_fragmentation, self.free


@dataclass
class BlockTransfers:
    """Block moves a step needs before its forward pass, performed in this field order:
    swap-outs first, since the blocks they free may be reused by the step itself."""

    swap_out: list[tuple[int, int]] = field(default_factory=list)  # (GPU block, CPU block)
    swap_in: list[tuple[int, int]] = field(default_factory=list)  # (CPU block, GPU block)
    copies: list[tuple[int, int]] = field(default_factory=list)  # (source, copy), both on the GPU
    # Blocks copied inside memory no block table maps (a private copy's contiguous range):
    # priced like copies, with no block pairs for an executor.
    private_copies: int = 0

    @property
    def num_copies(self) -> int:
        return len(self.copies) + self.private_copies


class KVCacheManager(ABC):
    """A KV-cache allocation policy (one implementation per file, chosen by name)."""

    block_size: int
    num_blocks: int

    @property
    def num_slots(self) -> int:
        return self.block_size * self.num_blocks

    @abstractmethod
    def fits_alone(self, final_tokens: list[int], prompt_tokens: int) -> bool:
        """Could sequences that end at these token counts, each in memory of its own, all run
        at once with the cache otherwise empty? (A group runs together or not at all; its
        prompt, of ``prompt_tokens``, sizes what a reservation policy holds for it.)"""

    @abstractmethod
    def can_admit(self, num_tokens: int, final_tokens: int) -> bool:
        """Is there room now to prefill ``num_tokens`` (the sequence ends at ``final_tokens``)?"""

    @abstractmethod
    def admit(self, seq: int, num_tokens: int, final_tokens: int) -> None:
        """Allocate for the prefill of sequence ``seq``."""

    @abstractmethod
    def decode_headroom(
        self, seqs: np.ndarray, num_tokens: np.ndarray, max_steps: int, keep_cached: bool = False
    ) -> int:
        """How many decode steps (<= max_steps) all ``seqs`` can take before one lacks room
        (``keep_cached``: before one would evict a cached prefix block to grow).

        Step j (0-based) writes the KV of token ``num_tokens + j - 1`` of each sequence, so
        it needs room for ``num_tokens + j`` tokens.
        """

    @abstractmethod
    def can_append(self, seq: int, num_tokens: int) -> bool:
        """Is there room for sequence ``seq`` to hold ``num_tokens`` tokens?"""

    @abstractmethod
    def append(self, seqs: np.ndarray, num_tokens: np.ndarray, steps: int) -> None:
        """Grow each of ``seqs`` to hold ``num_tokens + steps - 1`` tokens (``steps`` decode steps)."""

    def try_append(self, seqs: np.ndarray, num_tokens: np.ndarray) -> bool:
        """One decode step's room for every sequence (``append(seqs, num_tokens, 1)``) if all
        of it fits, else nothing: the check and the growth of every decode step, which a
        policy may do in one pass."""
        if self.decode_headroom(seqs, num_tokens, 1) < 1:
            return False
        self.append(seqs, num_tokens, 1)
        return True

    @abstractmethod
    def free(self, seq: int) -> None:
        """The sequence finished or was preempted: give back everything it holds."""

    @abstractmethod
    def num_used_blocks(self) -> int:
        """Blocks held by some sequence (for KV usage over time)."""

    def num_logical_blocks(self) -> int:
        """Blocks the live sequences would hold if nothing were shared (memory-saving metric)."""
        return self.num_used_blocks()

    def take_step_moves(self) -> BlockTransfers:
        """The physical block moves (copies, swaps) made since the last call: the step that
        asked for them prices them and a real executor performs them. None without block
        tables: contiguous ranges never move."""
        return BlockTransfers()

    @abstractmethod
    def usage(self, seqs: np.ndarray, num_tokens: np.ndarray) -> CacheUsage:
        """Account every slot of the cache once, from the allocator's actual state.

        ``seqs`` must be every sequence that holds KV (the running ones) and ``num_tokens``
        the tokens whose KV each has written. Called at every engine step, so managers keep
        running totals and touch the per-sequence arrays as little as they can.
        """


class BlockTableManager(KVCacheManager):
    """A policy whose sequences live in fixed-size blocks found through block tables: what a
    real executor needs to address the KV cache on the GPU."""

    #: sequence id -> the physical blocks holding its tokens, in order
    block_tables: dict[int, list[int]]


class SharingKVManager(BlockTableManager):
    """Block tables that may share physical blocks. With such a policy the scheduler forks
    sequences (sampling, beam search), maps cached prefixes and swaps block by block; a
    policy without it gets a full private copy of a group's prompt per sequence."""

    swap_space: BlockAllocator  # CPU memory for swapped-out blocks

    @abstractmethod
    def admit_cached(self, seq: int, num_tokens: int, names: list[int], pinned: int) -> int | None:
        """Admit ``seq`` reusing the cached blocks named ``names`` (its prompt's full blocks
        by content hash); return the tokens found cached, or None if there is no room now."""

    @abstractmethod
    def name_blocks(self, seq: int, names: list[int]) -> None:
        """Name ``seq``'s full blocks by content so that later prompts can find them."""

    @abstractmethod
    def fork(self, parent: int, child: int) -> None:
        """``child`` shares every block of ``parent`` (copied on its first write)."""

    @abstractmethod
    def swap_out_blocks(self, seqs: list[int]) -> int:
        """Distinct blocks a swap-out of the group ``seqs`` would move."""

    @abstractmethod
    def swap_out(self, seqs: list[int]) -> int:
        """Move the group's blocks to CPU memory, sharing kept; return the blocks moved."""

    @abstractmethod
    def can_swap_in(self, seqs: list[int], keep_watermark: bool = True) -> bool:
        """Room for the group's blocks and one new block per sequence for its next token."""

    @abstractmethod
    def swap_in(self, seqs: list[int]) -> int:
        """Bring the group's blocks back to the GPU; return the blocks moved."""


class PrivateCopyKVManager(KVCacheManager):
    """Memory that is never shared: every sequence of a group holds a whole copy of the prompt,
    and a beam that takes another parent copies that parent's KV into its own memory. The
    copies are the policy's to count, and come back with the step's moves."""

    @abstractmethod
    def admit_group(self, seqs: list[int], num_tokens: list[int], final_tokens: list[int]) -> bool:
        """Admit every sequence of a group, each with its own copy of the prompt (of
        ``num_tokens[0]`` tokens: the first sequence computes it, the others copy it), or none."""

    @abstractmethod
    def copy_from_parent(self, parent_tokens: int) -> None:
        """A beam took another parent: its ``parent_tokens`` tokens of KV are copied over."""
