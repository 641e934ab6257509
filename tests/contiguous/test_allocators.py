"""The contiguous allocators: buddy split/merge and coalescing, first-fit, and invariants over
random allocate/release sequences (hypothesis)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsim.policies.buddy import BuddyAllocator, OutOfSlots


def canonical(num_slots):
    """[0, n) cut into maximal aligned power-of-two blocks: the buddy's fully coalesced state."""
    pieces, offset = [], 0
    for k in reversed(range(num_slots.bit_length())):
        if num_slots >> k & 1:
            pieces.append((offset, 1 << k))
            offset += 1 << k
    return pieces


def test_buddy_splits_the_smallest_block_and_returns_the_tail():
    buddy = BuddyAllocator(16)
    assert buddy.allocate(3) == 0  # 16 -> 8 + 8 -> 4 + 4 (+8); tail slot 3 goes back
    assert buddy.free_ranges() == [(3, 1), (4, 4), (8, 8)]
    assert buddy.allocate(4) == 4
    assert buddy.allocate(1) == 3
    assert buddy.num_free == 8


def test_buddy_merges_buddies_back_on_release():
    buddy = BuddyAllocator(16)
    a, b = buddy.allocate(4), buddy.allocate(4)
    buddy.release(a)
    assert buddy.free_ranges() == [(0, 4), (8, 8)]  # 0 cannot merge: its buddy 4 is held
    buddy.release(b)
    assert buddy.free_ranges() == [(0, 16)]


def test_buddy_alignment_makes_external_fragmentation():
    buddy = BuddyAllocator(16)
    first, middle, last = buddy.allocate(4), buddy.allocate(8), buddy.allocate(4)
    assert (first, middle, last) == (0, 8, 4)
    buddy.release(first)
    buddy.release(middle)
    # 12 slots free, but the largest free aligned block has 8.
    assert buddy.num_free == 12 and not buddy.can_allocate(9) and buddy.can_allocate(8)
    with pytest.raises(OutOfSlots):
        buddy.allocate(9)


def test_buddy_over_a_cache_that_is_not_a_power_of_two():
    buddy = BuddyAllocator(15_728)
    assert buddy.free_ranges() == canonical(15_728)
    assert buddy.max_allocation == 8192
    sizes = [2048] * 7
    offsets = [buddy.allocate(s) for s in sizes]
    assert not buddy.can_allocate(2048) and buddy.num_free == 15_728 - 7 * 2048
    for offset in offsets:
        buddy.release(offset)
    assert buddy.free_ranges() == canonical(15_728)


def test_bad_calls_are_caught():
    buddy = BuddyAllocator(8)
    with pytest.raises(ValueError):
        buddy.allocate(0)
    with pytest.raises(AssertionError):
        buddy.release(2)


@st.composite
def programs(draw):
    num_slots = draw(st.integers(1, 300))
    ops = draw(st.lists(st.tuples(st.booleans(), st.integers(1, 80), st.integers(0, 10**6)), max_size=60))
    return num_slots, ops


def check_invariants(alloc, num_slots):
    live, free = alloc.allocated_ranges(), alloc.free_ranges()
    pieces = sorted(live + free)
    position = 0
    for offset, size in pieces:  # live and free ranges tile [0, n) exactly: no overlap, no gap
        assert offset == position and size >= 1
        position += size
    assert position == num_slots
    assert alloc.num_free == sum(size for _, size in free)


@settings(max_examples=150, deadline=None)
@given(program=programs())
def test_random_programs_keep_ranges_disjoint_and_coalesce_when_empty(program):
    num_slots, ops = program
    alloc = BuddyAllocator(num_slots)
    for do_allocate, size, pick in ops:
        live = alloc.allocated_ranges()
        if do_allocate or not live:
            if alloc.can_allocate(size):
                offset = alloc.allocate(size)
                assert 0 <= offset and offset + size <= num_slots
            else:
                with pytest.raises(OutOfSlots):
                    alloc.allocate(size)
        else:
            alloc.release(live[pick % len(live)][0])
        check_invariants(alloc, num_slots)
        free = alloc.free_ranges()
        for offset, size in free:  # power-of-two, aligned, never next to its free buddy
            assert size & (size - 1) == 0 and offset % size == 0
            assert (offset ^ size, size) not in free
    for offset, _ in alloc.allocated_ranges():
        alloc.release(offset)
    assert alloc.free_ranges() == canonical(num_slots)
    assert alloc.num_free == num_slots
