from kvsim.policies.paged import PagedKVManager
from kvsim.policies.request import Request, Status
from kvsim.policies.scheduler import DECODE, PREFILL, Scheduler


def make_scheduler(num_blocks=64, block_size=4, max_num_seqs=256, max_batched=64, watermark=0.0):
    kv = PagedKVManager(num_blocks, block_size, watermark)
    return Scheduler(kv, max_num_seqs, max_batched)


def drain(scheduler, limit=10_000):
    """Run one step at a time; return (plan kinds, finished request ids in order)."""
    kinds, finished = [], []
    for _ in range(limit):
        plan = scheduler.schedule()
        if plan is None:
            break
        kinds.append(plan.kind)
        finished += [r.request_id for r in scheduler.complete(plan)]
    return kinds, finished


def test_prefill_comes_first_then_decode_until_done():
    s = make_scheduler()
    s.add_request(Request(0, prompt_len=5, output_len=3))
    kinds, finished = drain(s)
    assert kinds == [PREFILL, DECODE, DECODE]  # first token from prefill, two decode steps
    assert finished == [0]
    assert s.kv.allocator.num_free == 64


def test_admission_is_fcfs_and_bounded_by_batched_tokens_and_seqs():
    s = make_scheduler(max_num_seqs=2, max_batched=10)
    for rid, prompt in enumerate([4, 4, 1]):
        s.add_request(Request(rid, prompt, 5))
    plan = s.schedule()
    assert plan.kind == PREFILL and [r.request_id for r in plan.requests] == [0, 1]
    s.complete(plan)
    assert [r.request_id for r in s.waiting] == [2]  # max_num_seqs=2 holds it back
    assert s.schedule().kind == DECODE


def test_head_of_line_blocks_smaller_requests_behind_it():
    s = make_scheduler(num_blocks=4, block_size=4, max_batched=64)
    s.add_request(Request(0, 12, 4))  # 3 blocks
    s.complete(s.schedule())
    s.add_request(Request(1, 8, 2))  # needs 2 blocks, only 1 free
    s.add_request(Request(2, 2, 2))  # would fit, but waits behind request 1
    plan = s.schedule()
    assert plan.kind == DECODE and [r.request_id for r in plan.requests] == [0]


def test_out_of_blocks_preempts_the_latest_request_and_recomputes_it():
    s = make_scheduler(num_blocks=4, block_size=2, max_batched=64)
    s.add_request(Request(0, 4, 4))  # at most 7 tokens: fits the 4 blocks alone
    s.add_request(Request(1, 4, 4))
    s.complete(s.schedule())  # both prefilled: 2 blocks each, cache full
    plan = s.schedule()
    assert plan.kind == DECODE
    assert [r.request_id for r in plan.preempted] == [1]
    assert [r.request_id for r in plan.requests] == [0]
    victim = plan.preempted[0]
    assert victim.status is Status.WAITING and s.waiting[0] is victim
    s.complete(plan)
    kinds, finished = drain(s)
    assert finished == [0, 1]
    assert victim.num_preemptions == 1
    assert victim.recomputed_tokens == 1  # the one output token it had generated


def test_headroom_charges_runs_of_identical_decode_steps():
    s = make_scheduler(num_blocks=100, block_size=4)
    s.add_request(Request(0, 4, 10))
    s.add_request(Request(1, 4, 20))
    s.complete(s.schedule())
    plan = s.schedule()
    steps = s.headroom(plan, max_steps=1000)
    assert steps == 9  # request 0 has 9 tokens left to generate
    finished = s.complete(plan, steps)
    assert [r.request_id for r in finished] == [0]
    assert s.seq_table.num_tokens[s.running[0].seqs[0]] == 4 + 1 + 9


def test_fast_forward_equals_step_by_step():
    """Charging k steps at once leaves the same state as k single steps."""

    def run(fast):
        s = make_scheduler(num_blocks=40, block_size=4)
        for rid, (p, o) in enumerate([(7, 30), (3, 12), (9, 25), (2, 40)]):
            s.add_request(Request(rid, p, o))
        order, steps_taken = [], 0
        while (plan := s.schedule()) is not None:
            k = s.headroom(plan, 1000) if fast else 1
            steps_taken += k
            order += [r.request_id for r in s.complete(plan, k)]
        return order, steps_taken, s.kv.allocator.num_free

    assert run(fast=True) == run(fast=False)


def test_rejection_reasons():
    s = make_scheduler(num_blocks=4, block_size=4, max_batched=8)
    assert "max-num-batched-tokens" in s.rejection_reason(Request(0, 9, 1))
    assert "whole KV cache" in s.rejection_reason(Request(1, 8, 10))
    assert s.rejection_reason(Request(2, 8, 9)) == ""
