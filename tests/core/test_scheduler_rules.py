"""vLLM's scheduling rules in situations sized by hand, where a wrong rule gives another schedule.

Every scenario uses blocks of 2 tokens and a cache of a few blocks, so each step's free
blocks can be counted in the comments; the expected schedules follow from the rules in
``kvsim/policies/scheduler.py``'s docstring, not from running the code.
"""

from test_scheduler import make_scheduler

from kvsim.policies.paged import PagedKVManager
from kvsim.policies.request import Request, Status
from kvsim.policies.scheduler import DECODE, PREFILL, Scheduler

BLOCK = 2


def swap_scheduler(num_blocks: int, watermark: float) -> Scheduler:
    """Preemption by swapping, with a CPU swap space that never runs out."""
    kv = PagedKVManager(num_blocks, BLOCK, watermark, swap_blocks=num_blocks)
    return Scheduler(kv, max_num_seqs=16, max_num_batched_tokens=64, preemption_mode="swap")


def submit(scheduler: Scheduler, *requests: Request) -> None:
    """Queue requests the engine would accept (so no scenario relies on an impossible one)."""
    for request in requests:
        assert scheduler.rejection_reason(request) == ""
        scheduler.add_request(request)


def ids(requests) -> list[int]:
    return [r.request_id for r in requests]


def step(scheduler: Scheduler) -> tuple | None:
    """Plan and run one step; return (kind, batch, preempted, blocks swapped in)."""
    plan = scheduler.schedule()
    if plan is None:
        return None
    scheduler.complete(plan)
    return plan.kind, ids(plan.requests), ids(plan.preempted), plan.swap_in_blocks


def run_out(scheduler: Scheduler, limit: int = 100) -> list[tuple]:
    """The remaining steps, until the scheduler has nothing it can run."""
    steps = []
    while len(steps) < limit and (entry := step(scheduler)) is not None:
        steps.append(entry)
    return steps


def test_preemption_takes_the_latest_admitted_until_the_earlier_ones_fit():
    """Four requests of 2 blocks fill 8 blocks; each needs a third for its next token.
    Served in arrival order: request 0 preempts request 3 (2 blocks free), 0 and 1 take one
    each, and request 2, with nobody behind it, preempts itself. The victims go back to the
    head of the queue in arrival order, ahead of a request that arrived since."""
    s = make_scheduler(num_blocks=8, block_size=BLOCK, max_batched=64)
    requests = [Request(rid, prompt_len=4, output_len=4) for rid in range(4)]
    submit(s, *requests)
    assert step(s) == (PREFILL, [0, 1, 2, 3], [], 0)
    plan = s.schedule()
    late = Request(4, prompt_len=2, output_len=1)
    submit(s, late)
    assert plan.kind == DECODE
    assert ids(plan.preempted) == [3, 2] and ids(plan.requests) == [0, 1]
    assert ids(s.waiting) == [2, 3, 4]
    for victim in requests[2:]:
        assert victim.status is Status.WAITING and victim.num_preemptions == 1
        assert not set(victim.seqs) & set(s.kv.block_tables)  # all its KV dropped
    # The survivors: 4 prompt tokens + 1 generated, and room for the token being written
    # (5 tokens: 3 blocks each); the 2 blocks request 2 let go are free.
    survivors = [seq for r in requests[:2] for seq in r.seqs]
    assert plan.seqs.tolist() == survivors and plan.context_lens.tolist() == [5, 5]
    assert [len(s.kv.block_tables[seq]) for seq in survivors] == [3, 3]
    assert s.kv.allocator.num_free == 8 - 2 * 3
    s.complete(plan)
    assert [r.status for r in requests[:2]] == [Status.RUNNING] * 2

    run_out(s)
    assert not s.has_work() and s.kv.allocator.num_free == 8
    # Each victim had generated one token (at its prefill) and recomputes it as prompt.
    assert [r.recomputed_tokens for r in requests] == [0, 0, 1, 1]


def watermark_scenario(scheduler: Scheduler) -> list[Request]:
    """6 blocks, watermark 1 block. A (1 block), B and C (2 each) are admitted, leaving
    exactly the watermark free. Each needs a block for its first decode step: A takes the
    free one, B swaps C out (2 blocks back) and takes one. A then finishes: 3 free."""
    assert scheduler.kv.watermark_blocks == 1
    a, b, c = Request(0, 2, 2), Request(1, 4, 4), Request(2, 4, 4)
    submit(scheduler, a, b, c)
    assert step(scheduler) == (PREFILL, [0, 1, 2], [], 0)
    assert step(scheduler) == (DECODE, [0, 1], [2], 0)
    assert c.status is Status.SWAPPED and scheduler.kv.allocator.num_free == 3
    return [a, b, c]


def test_swap_in_keeps_the_watermark_while_others_run():
    """C needs its 2 blocks back plus 1 for its next token: the 3 free blocks would hold it,
    but B still runs, so the watermark's block stays free and C waits for B to finish (B's
    next step takes a fourth block, leaving 2). With nothing running it comes back."""
    s = swap_scheduler(num_blocks=6, watermark=0.2)
    watermark_scenario(s)
    assert run_out(s) == [
        (DECODE, [1], [], 0),  # 3 free - 3 needed < the 1-block watermark
        (DECODE, [1], [], 0),  # B's fourth block: 2 free; B finishes, all 6 free
        (DECODE, [2], [], 2),
        (DECODE, [2], [], 0),
        (DECODE, [2], [], 0),
    ]
    assert not s.has_work() and s.kv.allocator.num_free == 6


def test_nothing_is_admitted_while_a_group_is_swapped_out():
    """D (1 block) arrives while C is swapped out; with 3 free blocks it would pass the
    admission watermark, but vLLM admits nobody until the swapped group is back."""
    s = swap_scheduler(num_blocks=6, watermark=0.2)
    watermark_scenario(s)
    submit(s, Request(3, prompt_len=2, output_len=2))
    steps = run_out(s)
    assert steps[:4] == [
        (DECODE, [1], [], 0),
        (DECODE, [1], [], 0),
        (DECODE, [2], [], 2),  # C is back ...
        (PREFILL, [3], [], 0),  # ... and only then is D admitted
    ]
    assert not s.has_work() and s.kv.allocator.num_free == 6


def test_the_only_group_left_swaps_in_below_the_watermark():
    """4 blocks, watermark 1. B (1 block) and a group G of two samples of a 3-token prompt
    (2 shared blocks) are admitted, 1 block free. G's first decode step must copy its shared
    partial block and B needs a block: B takes the free one, G preempts itself (swapped).
    B finishes; G needs its 2 blocks plus one per sequence: all 4. The watermark would keep
    it out of an empty cache for ever, so with nothing running it is waived."""
    s = swap_scheduler(num_blocks=4, watermark=0.25)
    assert s.kv.watermark_blocks == 1
    submit(s, Request(0, prompt_len=2, output_len=2), Request(1, prompt_len=3, output_len=2, width=2))
    assert run_out(s) == [
        (PREFILL, [0, 1], [], 0),
        (DECODE, [0], [1], 0),
        (DECODE, [1], [], 2),
    ]
    assert not s.has_work() and s.kv.allocator.num_free == 4
