"""Scheduler and paged-policy behaviour that mutation testing found unchecked (docs/testing.md).

Each test pins down a rule whose mutants survived the rest of the suite: swapping several
groups out and in and counting it, preemption counts, copy-on-write after a swap-in and
after a recompute, a lone sequence's room while another group shares a tail, the naming and
pinning of prefix blocks, and private prompt and beam copies under a policy without sharing.
Scenarios use blocks of a few tokens, so the expected numbers can be counted by hand in the
docstrings.
"""

import numpy as np
import pytest
from scripted_beams import ScriptedBeams

from kvsim.policies.contiguous import ContiguousKVManager, reserve_exact
from kvsim.policies.paged import PagedKVManager
from kvsim.policies.registry import PolicyContext, get_policy
from kvsim.policies.request import Request, Status
from kvsim.policies.scheduler import PREFILL, Scheduler

BLOCK = 4  # tokens per block, unless a scenario says otherwise
MAX_STEPS = 200  # every scenario here ends long before; a hang fails instead


def drain(scheduler: Scheduler) -> list:
    """Plan and complete steps until the scheduler has nothing to run; return the plans."""
    plans = []
    while (plan := scheduler.schedule()) is not None:
        plans.append(plan)
        scheduler.complete(plan)
        assert len(plans) < MAX_STEPS
    return plans


# -- swapping: every block that goes out comes back, and is counted once ---------------------


def swap_run(
    requests: list[Request], num_blocks: int, swap_blocks: int | None = None
) -> tuple[Scheduler, list, list[int]]:
    """Blocks of 2 tokens, no watermark, swap space as large as the cache unless given.
    Returns the scheduler, its plans, and for each plan how many groups it swapped back in."""
    kv = PagedKVManager(
        num_blocks, 2, watermark=0.0, swap_blocks=num_blocks if swap_blocks is None else swap_blocks
    )
    s = Scheduler(kv, max_num_seqs=16, max_num_batched_tokens=64, preemption_mode="swap")
    for r in requests:
        s.add_request(r)
    plans, groups_in = [], []
    while True:
        swapped = {r.request_id for r in s.swapped}
        plan = s.schedule()
        if plan is None:
            break
        groups_in.append(sum(r.request_id in swapped and r.status is Status.RUNNING for r in requests))
        plans.append(plan)
        s.complete(plan)
        assert len(plans) < MAX_STEPS
    assert not s.has_work()
    return s, plans, groups_in


@pytest.mark.parametrize("swap_blocks", [6, 2])
def test_two_groups_swapped_in_one_step_move_both_groups_blocks(swap_blocks):
    """6 blocks. A (4 tokens: 2 blocks), B, C, D (2 tokens: 1 block each) leave 1 free, and
    each needs one more for its first decode step. A takes the free block; B swaps D out and
    takes its block; C, with nobody behind it, swaps itself out. A and B finish, and the next
    step brings D and C back together: 2 blocks, one each. A swap space of exactly 2 blocks
    is enough: the second victim takes its last block."""
    a = Request(0, prompt_len=4, output_len=2)
    b, c, d = (Request(rid, prompt_len=2, output_len=2) for rid in (1, 2, 3))
    s, plans, groups_in = swap_run([a, b, c, d], num_blocks=6, swap_blocks=swap_blocks)
    assert [p.swap_out_blocks for p in plans] == [0, 2, 0]
    assert [p.swap_in_blocks for p in plans] == [0, 0, 2]
    assert groups_in == [0, 0, 2]
    assert s.counters.swap_out_blocks == s.counters.swap_in_blocks == 2
    assert s.counters.preempted_swap == 2 and s.counters.preempted_recompute == 0


def test_a_group_back_from_swap_copies_its_shared_tail_before_writing():
    """Blocks of 4, 3 blocks. A (4 tokens) holds 1 block; a group of 2 samples of a 3-token
    prompt shares 1 partial block. The first decode step needs 1 new block for A and 1 copy
    for the group's first writer; only 1 is free. A, first in line, steps (the group's fork
    does not concern its block), and the group swaps itself out with its tail still shared.
    When A is done the group comes back, and before its samples write their 4th token the
    first writer copies the shared block: 1 copy, and from then on 2 different last blocks."""
    kv = PagedKVManager(3, BLOCK, watermark=0.0, swap_blocks=3)
    s = Scheduler(kv, max_num_seqs=8, max_num_batched_tokens=64, preemption_mode="swap")
    a, group = Request(0, prompt_len=4, output_len=2), Request(1, prompt_len=3, output_len=3, width=2)
    s.add_request(a)
    s.add_request(group)
    plans = []
    for _ in range(3):
        plans.append(plan := s.schedule())
        s.complete(plan)
    assert [p.requests for p in plans] == [[a, group], [a], [group]]
    assert plans[1].preempted == [group] and plans[1].block_copies == 0
    assert plans[2].swap_in_blocks == 1 and plans[2].block_copies == 1
    first, second = (kv.block_tables[seq] for seq in group.seqs)
    assert first[-1] != second[-1]


def test_a_lone_sequence_steps_while_a_group_still_shares_a_tail():
    """Blocks of 4, 5 blocks. A and X (4 tokens each) hold a block each, and a group of 2
    samples of a 3-token prompt shares one partial block: 2 free. The first decode step
    needs a block for A, a copy for the group's first writer and a block for X: one too
    many. In arrival order A takes a block while the group's fork is still pending (a fork
    A is no part of), the group copies into the last free block, and only X, last in line,
    is preempted."""
    kv = PagedKVManager(5, BLOCK, watermark=0.0)
    s = Scheduler(kv, max_num_seqs=8, max_num_batched_tokens=64)
    a, x = Request(0, prompt_len=4, output_len=3), Request(2, prompt_len=4, output_len=3)
    group = Request(1, prompt_len=3, output_len=3, width=2)
    for r in (a, group, x):
        s.add_request(r)
    s.complete(s.schedule())
    plan = s.schedule()
    assert plan.requests == [a, group] and plan.preempted == [x] and plan.block_copies == 1


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_each_preemption_of_a_request_is_counted(mode):
    """A request's preemption count is the number of steps that preempted it, and the run's
    counters add them all up; in this workload (6 blocks of 2 tokens) one request is
    preempted more than once. With no swap space at all, every swap falls back to recompute
    and is counted as such."""
    kv = PagedKVManager(6, 2, watermark=0.0, swap_blocks=0)
    s = Scheduler(kv, max_num_seqs=16, max_num_batched_tokens=64, preemption_mode=mode)
    requests = [Request(rid, prompt_len=2 + rid % 3, output_len=6 - rid % 2) for rid in range(5)]
    for r in requests:
        s.add_request(r)
    plans = drain(s)
    preempted = [sum(r in p.preempted for p in plans) for r in requests]
    assert max(preempted) >= 2
    assert [r.num_preemptions for r in requests] == preempted
    assert s.counters.preempted_recompute == sum(preempted) and s.counters.preempted_swap == 0
    assert s.counters.swap_space_full == (sum(preempted) if mode == "swap" else 0)


def test_swap_in_counter_adds_up_over_steps():
    """Swap-ins in different steps (and steps where the swapped group does not fit yet)
    all add to the run's counter: when the run drains, every block swapped out has come back,
    so the counter equals the blocks swapped out and the sum over the plans."""
    requests = [Request(0, 4, 2), Request(1, 2, 10), Request(2, 4, 2), Request(3, 2, 6)]
    s, plans, groups_in = swap_run(requests, num_blocks=6)
    steps_in = [p.swap_in_blocks for p in plans if p.swap_in_blocks]
    assert len(steps_in) >= 2  # the scenario swaps in at more than one step
    swapped_out = sum(p.swap_out_blocks for p in plans)
    assert sum(steps_in) == swapped_out == s.counters.swap_out_blocks
    assert s.counters.swap_in_blocks == swapped_out


@pytest.mark.parametrize(
    "num_blocks, a_len, prompt, output, tokens, copies, blocks",
    [
        # 3-token prompt: the samples' 4th tokens go into the shared partial block, so one
        # sample copies it; each holds 8 tokens in 2 blocks.
        (6, (4, 6), 3, 7, 8, 1, 2),
        # 4-token prompt: the shared block is full, the 5th tokens go to fresh blocks, no copy.
        (3, (4, 3), 4, 3, 5, 0, 2),
    ],
)
def test_a_recomputed_group_copies_only_a_shared_partial_tail(
    num_blocks, a_len, prompt, output, tokens, copies, blocks
):
    """Blocks of 4. A runs first; a group of 2 samples is preempted by recompute when A needs
    a block, and readmitted once A is done, each sample now ``tokens`` long (prompt and
    output so far). Its prefill forks the prompt, then grows every sample: first the token
    after the prompt, copying the shared tail if partial, then the rest, holding no more
    blocks than its tokens need."""
    kv = PagedKVManager(num_blocks, BLOCK, watermark=0.0)
    s = Scheduler(kv, max_num_seqs=8, max_num_batched_tokens=64)
    a = Request(0, *a_len)
    group = Request(1, prompt_len=prompt, output_len=output, width=2)
    for r in (a, group):
        assert s.rejection_reason(r) == ""
        s.add_request(r)
    readmitted = []  # (plan, blocks held by each sample while it runs)
    while (plan := s.schedule()) is not None:
        if plan.kind == PREFILL and plan.requests == [group]:
            readmitted.append((plan, [len(kv.block_tables[seq]) for seq in group.seqs]))
        s.complete(plan)
    assert group.num_preemptions == 1 and len(readmitted) == 1
    plan, held = readmitted[0]
    assert plan.context_lens.tolist() == [tokens, tokens]
    assert plan.new_tokens.tolist() == [tokens, tokens - prompt]
    assert plan.block_copies == copies
    assert held == [blocks, blocks]


# -- prefix blocks: named at admission, pinned when a shared prefix, named again at the end ----


def stream_request(rid: int, prompt: list[int], output_len: int, shared_prefix_len: int = 0) -> Request:
    """A request whose token stream is ``prompt`` then tokens 1000, 1001, ... as output."""
    stream = np.array(prompt + list(range(1000, 1000 + output_len)), dtype=np.int64)
    return Request(
        rid,
        len(prompt),
        output_len,
        token_ids=lambda count: stream[:count],
        shared_prefix_len=shared_prefix_len,
    )


def prefill_step(s: Scheduler, request: Request):
    """Queue ``request``, run the next step (its prefill, alone) and return its plan."""
    s.add_request(request)
    plan = s.schedule()
    assert plan.kind == PREFILL and plan.requests == [request]
    s.complete(plan)
    return plan


def test_a_running_prompts_blocks_are_found_by_the_next_request():
    """Prefix caching names a prompt's full blocks when it is admitted, not only when it
    finishes: B arrives with A's 12-token prompt while A still runs, and finds A's first two
    blocks (its last one is recomputed: at least one token is always computed)."""
    kv = PagedKVManager(16, BLOCK, watermark=0.0, prefix_cache=True)
    s = Scheduler(kv, max_num_seqs=8, max_num_batched_tokens=64, prefix_caching=True)
    prompt = list(range(12))
    prefill_step(s, stream_request(0, prompt, output_len=20))
    plan = prefill_step(s, stream_request(1, prompt, output_len=20))
    assert plan.new_tokens.tolist() == [12 - 2 * BLOCK]
    assert s.counters.prefix_hit_blocks == 2


def test_generated_blocks_are_named_when_a_request_finishes():
    """A chatbot's next turn starts with the previous turn's prompt and answer. A's prompt
    is 4 tokens and it generates 6; its stored KV is 9 tokens, two full blocks, the second
    made of generated tokens. B's prompt is those 9 tokens and 3 more: both blocks hit."""
    kv = PagedKVManager(16, BLOCK, watermark=0.0, prefix_cache=True)
    s = Scheduler(kv, max_num_seqs=8, max_num_batched_tokens=64, prefix_caching=True)
    s.add_request(stream_request(0, [0, 1, 2, 3], output_len=6))
    drain(s)
    turn = [0, 1, 2, 3] + list(range(1000, 1005)) + [7, 8, 9]
    plan = prefill_step(s, stream_request(1, turn, output_len=1))
    assert plan.new_tokens.tolist() == [12 - 2 * BLOCK]


def test_a_shared_prefix_stays_pinned_after_its_requests_finish():
    """A service-defined shared prefix of 2 blocks is computed once and kept for good: after
    the only request using it has finished, its 2 blocks are still held (not free, not
    evictable), and a later request finds them."""
    kv = PagedKVManager(8, BLOCK, watermark=0.0, prefix_cache=True)
    s = Scheduler(kv, max_num_seqs=8, max_num_batched_tokens=64)
    prompt = list(range(10))  # 8 shared tokens (2 blocks) + 2 of its own
    s.add_request(stream_request(0, prompt, output_len=3, shared_prefix_len=8))
    drain(s)
    assert kv.allocator.num_free == 8 - 2
    plan = prefill_step(s, stream_request(1, prompt[:8] + [50, 51, 52], 2, shared_prefix_len=8))
    assert plan.new_tokens.tolist() == [11 - 8]


# -- private prompt copies: policies without sharing ---------------------------------------


def orca_oracle(num_blocks: int, block_size: int = 4) -> Scheduler:
    """Orca with exact reservations: every sequence reserves prompt + output - 1 slots."""
    return get_policy("orca-oracle").build(PolicyContext(num_blocks, block_size, 16, 256, 256))


def test_private_copies_prefill_every_prompt_token_and_count_the_copies():
    """Without sharing, a group's prefill computes its prompt once (no prefix is cached) and
    copies it into each other sequence's own memory: 2 groups of 3 and 2 sequences with
    prompts of 10 and 5 tokens in blocks of 4 copy 2 x 3 + 1 x 2 = 8 blocks."""
    s = orca_oracle(num_blocks=64)
    s.add_request(Request(0, prompt_len=10, output_len=3, width=3))
    s.add_request(Request(1, prompt_len=5, output_len=3, width=2))
    plan = s.schedule()
    assert plan.kind == PREFILL and len(plan.requests) == 2
    assert plan.new_tokens.tolist() == [10, 5]
    assert plan.block_copies == 8 and s.counters.block_copies == 8


def test_a_group_that_only_partly_fits_holds_nothing():
    """A 64-slot buddy cache. X reserves 20 + 5 - 1 = 24 slots, in a 32-slot buddy block.
    The group's 3 sequences reserve 8 + 5 - 1 = 12 slots each, in 16-slot blocks: two fit
    in the 32 left, the third does not, so the group is refused whole, its two ranges given
    back (only X's 24 slots stay reserved), and it waits until X has finished."""
    s = orca_oracle(num_blocks=16)
    x = Request(0, prompt_len=20, output_len=5)
    group = Request(1, prompt_len=8, output_len=5, width=3)
    s.add_request(x)
    s.add_request(group)
    plan = s.schedule()
    assert plan.requests == [x] and group.status is Status.WAITING
    assert s.kv.allocator.num_free == 64 - 24 and len(s.kv.allocator.allocated_ranges()) == 1
    s.complete(plan)
    admitted = [p.requests for p in drain(s) if p.kind == PREFILL]
    assert admitted == [[group]]


def test_beams_without_sharing_copy_their_parents_kv():
    """Beam search under a policy without sharing: each new beam whose parent is another
    beam copies that parent's stored KV into its own memory. 4 beams, a prompt of 3 tokens,
    4 output tokens, blocks of 4, parents always (2, 0, 2, 2): beams 0, 1 and 3 change
    parent. The prefill copies the prompt's block to 3 beams. After the first decode step a
    beam has 5 tokens and has stored the KV of 4 (the newest is written by the next step):
    1 block, copied 3 times; after the second, 5 stored tokens: 2 blocks, copied 3 times.
    The last step re-selects nobody, as the beams are done."""
    kv = ContiguousKVManager(num_blocks=64, block_size=4, reservation=reserve_exact)
    s = Scheduler(kv, 16, 256, preemption=False, beam=ScriptedBeams(script=(2, 0, 2, 2)))
    s.add_request(Request(0, prompt_len=3, output_len=4, width=4, beam=True))
    plans = drain(s)
    assert [p.block_copies for p in plans] == [3, 0, 3, 6]
    assert s.counters.block_copies == 12
