"""CPU swap space: where a preempted group's blocks wait, sharing preserved, until GPU room frees.

Swapping moves every *distinct* physical block of a group once, so blocks shared by forked
sequences (or with other groups through a prefix) cost one transfer and one CPU block, and
come back shared exactly as they left. The CPU pool is a block allocator of its own, with
the same reference counts as the GPU pool.
"""

from __future__ import annotations

from kvsim.policies.block_allocator import BlockAllocator


def distinct_blocks(tables: list[list[int]]) -> list[int]:
    """The physical blocks of ``tables``, each once, in first-seen order (deterministic)."""
    return list(dict.fromkeys(block for table in tables for block in table))


def remap(
    tables: list[list[int]], source: BlockAllocator, target: BlockAllocator
) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """Move ``tables`` from ``source`` to ``target``: one new block per distinct old block,
    referenced by as many tables as before; the old references are released. Returns the
    new tables and the (old, new) block pairs a real executor must copy."""
    old = distinct_blocks(tables)
    mapping = dict(zip(old, target.allocate(len(old))))
    moved = [[mapping[block] for block in table] for table in tables]
    for table in moved:
        target.share(table)
    target.release(list(mapping.values()))  # allocate() gave each one reference of its own
    for table in tables:
        source.release(table)
    return moved, list(mapping.items())
