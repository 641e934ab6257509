import numpy as np
import pytest

from kvsim.policies.block_allocator import BlockAllocator, OutOfBlocks
from kvsim.policies.paged import PagedKVManager


def test_allocator_hands_out_distinct_blocks_and_takes_them_back():
    alloc = BlockAllocator(8)
    a, b = alloc.allocate(3), alloc.allocate(5)
    assert sorted(a + b) == list(range(8)) and alloc.num_free == 0
    with pytest.raises(OutOfBlocks):
        alloc.allocate(1)
    alloc.release(a)
    assert alloc.num_free == 3 and all(alloc.ref_count[a] == 0)


def test_shared_block_is_freed_by_its_last_holder():
    alloc = BlockAllocator(4)
    blocks = alloc.allocate(2)
    alloc.share(blocks)
    alloc.release(blocks)
    assert alloc.num_free == 2
    alloc.release(blocks)
    assert alloc.num_free == 4
    with pytest.raises(AssertionError):
        alloc.release(blocks)


def test_blocks_are_allocated_on_demand_as_tokens_are_appended():
    kv = PagedKVManager(num_blocks=10, block_size=4, watermark=0.0)
    kv.admit(0, num_tokens=5, final_tokens=12)  # 5 tokens -> 2 blocks
    assert len(kv.block_tables[0]) == 2
    seqs, tokens = np.array([0]), np.array([6])  # after prefill: prompt + first output token
    kv.append(seqs, tokens, steps=1)  # room for 6 tokens: still 2 blocks
    assert len(kv.block_tables[0]) == 2
    kv.append(seqs, tokens, steps=4)  # room for 9 tokens: 3 blocks
    assert len(kv.block_tables[0]) == 3
    kv.free(0)
    assert kv.allocator.num_free == 10


def test_decode_headroom_counts_steps_until_blocks_run_out():
    kv = PagedKVManager(num_blocks=4, block_size=4, watermark=0.0)
    kv.admit(0, 4, 100)
    kv.admit(1, 4, 100)  # two sequences, 2 blocks used, 2 free
    seqs, tokens = np.array([0, 1]), np.array([5, 5])
    # Step j needs room for 5 + j tokens: both need a 2nd block at j=0 and a 3rd at j=4.
    assert kv.decode_headroom(seqs, tokens, 100) == 4
    assert kv.decode_headroom(seqs, tokens, 3) == 3


def test_admission_keeps_the_watermark_free():
    kv = PagedKVManager(num_blocks=100, block_size=1, watermark=0.1)
    assert kv.can_admit(90, 90) and not kv.can_admit(91, 91)
    assert kv.fits_alone([90], 10) and not kv.fits_alone([91], 10)


def test_usage_accounts_every_slot():
    kv = PagedKVManager(num_blocks=10, block_size=4, watermark=0.0)
    kv.admit(0, 5, 20)
    kv.admit(1, 3, 20)
    usage = kv.usage(np.array([0, 1]), np.array([5, 3]))
    assert usage.token_states == 8 and usage.internal_fragmentation == 4
    assert usage.token_states + usage.reserved + usage.internal_fragmentation + usage.free == 40
    kv.fork(0, 2)  # shares both blocks, the partial tail included: nothing new is held
    assert kv.usage(np.array([0, 1, 2]), np.array([5, 3, 5])) == usage


def test_a_copy_into_a_block_freed_before_the_step_runs_is_dropped():
    """A recomputed group whose readmission fails after its tail was copied frees the copy
    again: the step must neither charge that copy nor hand an executor a copy into a freed
    block. Copies for sequences that stay are kept."""
    kv = PagedKVManager(num_blocks=8, block_size=4, watermark=0.0)
    kv.admit(0, 6, 20)  # a partial second block, shared by both forks below
    kv.fork(0, 1)
    kv.fork(0, 2)
    kv.append(np.array([1, 2]), np.array([6, 6]), 1)  # each writer copies the shared tail
    kept_copy = kv.block_tables[2][-1]
    kv.free(1)
    moves = kv.take_step_moves()
    assert [copy for _, copy in moves.copies] == [kept_copy]
