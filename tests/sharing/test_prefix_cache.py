"""Automatic prefix caching: what a prompt finds cached, what it must still compute, what is evicted.

A block is found again only by the hash chain of every token up to and including it, and
a prefill always computes at least one prompt token (its logits give the first output
token), as in vLLM, even when every full block of the prompt is cached.
"""

import numpy as np
import pytest

from kvsim.policies.block_allocator import OutOfBlocks
from kvsim.policies.paged import PagedKVManager
from kvsim.policies.prefix_cache import CachingBlockAllocator
from kvsim.policies.request import Request
from kvsim.policies.scheduler import PREFILL, Scheduler

BLOCK = 4


def caching_scheduler(num_blocks: int = 16) -> Scheduler:
    kv = PagedKVManager(num_blocks, BLOCK, watermark=0.0, prefix_cache=True)
    return Scheduler(kv, max_num_seqs=8, max_num_batched_tokens=64, prefix_caching=True)


def request(rid: int, prompt: list[int], output_len: int = 1) -> Request:
    """A request whose stream starts with ``prompt`` (output tokens follow it)."""
    stream = np.array(prompt + list(range(1000, 1000 + output_len)), dtype=np.int64)
    return Request(rid, len(prompt), output_len, token_ids=lambda count: stream[:count])


def prefill(scheduler: Scheduler, *requests: Request):
    """Queue the requests, plan the next step (a prefill), run it; return the plan and the
    block tables the admitted requests held during it."""
    for r in requests:
        scheduler.add_request(r)
    plan = scheduler.schedule()
    assert plan.kind == PREFILL
    tables = {r.request_id: list(scheduler.kv.block_tables[r.seqs[0]]) for r in plan.requests}
    scheduler.complete(plan)
    return plan, tables


@pytest.mark.parametrize("prompt_len", [1, 3, 4, 5, 8, 11, 12])
def test_a_fully_cached_prompt_still_computes_its_last_tokens(prompt_len):
    """The same prompt again: the cached part is whole blocks of the first run, and what is
    computed is 1 to BLOCK tokens (so at most the last block is recomputed, never nothing,
    even when the prompt is an exact number of blocks)."""
    s = caching_scheduler()
    prompt = list(range(prompt_len))
    _, first = prefill(s, request(0, prompt))  # one output token: done, blocks named and freed
    plan, second = prefill(s, request(1, prompt))
    computed = int(plan.new_tokens[0])
    cached = prompt_len - computed
    assert 1 <= computed <= BLOCK and cached % BLOCK == 0
    assert plan.context_lens.tolist() == [prompt_len]
    assert second[1][: cached // BLOCK] == first[0][: cached // BLOCK]  # the very same blocks
    assert s.counters.prefill_tokens_saved == cached
    assert s.counters.prefix_hit_blocks == cached // BLOCK


def test_a_block_is_found_only_with_everything_before_it():
    """Blocks are named by the chain of all tokens so far: a prompt that differs in its
    second block reuses only the first; one that differs in its first token reuses nothing,
    though its later blocks hold the same tokens."""
    s = caching_scheduler()
    prompt = list(range(12))
    _, cached = prefill(s, request(0, prompt))
    plan, tables = prefill(s, request(1, prompt[:5] + [99] + prompt[6:]))
    assert plan.new_tokens.tolist() == [12 - BLOCK] and tables[1][0] == cached[0][0]
    plan, tables = prefill(s, request(2, [99] + prompt[1:]))
    assert plan.new_tokens.tolist() == [12] and not set(tables[2]) & set(cached[0])


def test_reviving_cached_blocks_counts_against_the_room():
    """4 blocks. Request 0's 2 prompt blocks are cached and evictable (counted free), and
    request 2 holds 1 block: 3 free. Request 1 would revive the 2 cached blocks and need 2
    new ones: 4 > 3, so it waits (FCFS behind nothing), its hits left cached, until request
    2 finishes and frees the room."""
    s = caching_scheduler(num_blocks=4)
    prompt = list(range(8))
    _, cached = prefill(s, request(0, prompt))
    long_prompt = prompt + list(range(100, 108))
    plan, _ = prefill(s, request(2, [50, 51, 52, 53]), request(1, long_prompt))
    assert [r.request_id for r in plan.requests] == [2]
    assert [r.request_id for r in s.waiting] == [1]
    assert all(s.kv.allocator.is_evictable(b) for b in cached[0])
    plan, tables = prefill(s)  # request 2 finished with its prefill (one output token)
    assert plan.new_tokens.tolist() == [16 - 8] and tables[1][:2] == cached[0]


def test_eviction_takes_the_least_recently_freed_and_never_a_pinned_block():
    allocator = CachingBlockAllocator(4)
    blocks = allocator.allocate(4)
    for name, block in enumerate(blocks):
        allocator.name(block, name, pin=name == 0)
    for block in (blocks[2], blocks[1], blocks[3], blocks[0]):
        allocator.release([block])
    assert allocator.num_free == 3  # the pinned block keeps the cache's own reference
    assert allocator.allocate(1) == [blocks[2]]  # freed first, evicted first
    assert allocator.lookup(2) is None and allocator.lookup(1) == blocks[1]
    assert sorted(allocator.allocate(2)) == sorted([blocks[1], blocks[3]])
    with pytest.raises(OutOfBlocks):
        allocator.allocate(1)
    assert allocator.lookup(0) == blocks[0]
