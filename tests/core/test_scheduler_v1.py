"""The v1 scheduler (token budget, chunked prefill, mixed steps) against the rules it states:
every request ends, the budget holds every step, a prompt is computed once unless preempted,
admission is first come first served, prefix-cache hits change no output, and the cache
is whole again at the end. Small caches and budgets make chunks, mixed steps, prefix hits
and preemptions common."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import random_traces

from kvsim.cost.roofline import RooflineCostModel
from kvsim.hardware import load_gpu
from kvsim.models import load_model
from kvsim.policies.paged import PagedKVManager
from kvsim.policies.registry import PolicyContext, get_policy
from kvsim.policies.request import Request
from kvsim.policies.scheduler import DECODE, MIXED, PREFILL
from kvsim.policies.scheduler_v1 import V1Scheduler
from kvsim.sim import engine
from kvsim.sim.cluster import RoundRobinRouter
from kvsim.workloads.prefixes import add_shared_prefixes

COST = RooflineCostModel(load_model("opt-13b"), load_gpu("a100-40gb"), 4)


@st.composite
def v1_runs(draw):
    trace = draw(random_traces(max_requests=20, max_gap=0.5, max_len=150))
    caching = draw(st.booleans())
    if caching:  # prompts that share content, so the prefix cache has something to find
        trace = add_shared_prefixes(trace, draw(st.sampled_from([8, 40])), num_prefixes=2, seed=1)
    context = PolicyContext(
        # Room for the longest request beside the shared prefixes' pinned blocks (at most 20)
        num_blocks=draw(st.integers(110, 200)),
        block_size=4,
        max_num_seqs=draw(st.integers(1, 8)),
        max_num_batched_tokens=draw(st.sampled_from([8, 30, 256])),
        max_model_len=512,
        watermark=0.0,
        prefix_caching=caching,
        shared_prefix=caching,
        scheduler="v1",
        long_prefill_token_threshold=draw(st.sampled_from([0, 12])),
        max_num_partial_prefills=draw(st.integers(1, 3)),
    )
    return trace, context


def simulate(trace, context):
    scheduler = get_policy("paged").build(context)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recorder = engine.simulate(trace, [scheduler], COST, RoundRobinRouter())
    return recorder, scheduler


@settings(max_examples=80, deadline=None, derandomize=True)
@given(v1_runs())
def test_v1_runs_keep_their_rules(run):
    trace, context = run
    recorder, scheduler = simulate(trace, context)
    requests, steps = recorder.requests_frame(), recorder.steps_frame()
    # Every request ends; none is lost.
    assert set(requests.status) <= {"completed", "rejected"}
    done = requests[requests.status == "completed"]
    # The budget holds in every step, and a step's tokens are its prefill and decode tokens.
    assert (steps.tokens <= context.max_num_batched_tokens).all()
    assert (steps.tokens == steps.prefill_tokens + steps.decode_tokens).all()
    assert set(steps.kind) <= {PREFILL.value, DECODE.value, MIXED.value}
    assert (steps.num_chunks[steps.kind == DECODE.value] == 0).all()
    # Time moves forward, one step after another.
    ends = (steps.start + steps.duration).to_numpy()
    assert (steps.start.to_numpy()[1:] >= ends[:-1] - 1e-12).all()
    # First come, first served: no request starts before one that arrived earlier.
    first = done.sort_values("request_id").admitted.to_numpy()
    assert (np.diff(first) >= 0).all()
    counters = recorder.counters
    if counters.preempted_recompute == 0:
        # Each prompt computed exactly once, less what the prefix cache held; each other
        # output token decoded once (the first comes with the prompt's last chunk).
        decoded = int((steps.decode_tokens * steps.steps).sum())
        assert int(steps.prefill_tokens.sum()) == int(done.prompt_len.sum()) - counters.prefill_tokens_saved
        assert decoded == int((done.output_len - 1).sum())
    # The cache is whole again: no sequence holds a block; only the shared prefixes' blocks,
    # pinned by the cache itself (one reference each), stay in use.
    kv, refs = scheduler.kv, scheduler.kv.allocator.ref_count
    assert not kv.block_tables and ((refs == 0) | (refs == 1)).all()
    assert kv.num_used_blocks() == int((refs == 1).sum())
    if not context.shared_prefix:
        assert kv.num_used_blocks() == 0


@settings(max_examples=40, deadline=None, derandomize=True)
@given(v1_runs())
def test_prefix_cache_hits_change_no_output(run):
    trace, context = run
    with_cache, _ = simulate(trace, context)
    without, _ = simulate(trace, PolicyContext(**{**vars(context), "prefix_caching": False}))
    a, b = with_cache.requests_frame(), without.requests_frame()
    assert a.status.tolist() == b.status.tolist()
    assert a.output_len.tolist() == b.output_len.tolist()
    decoded = [
        int((r.steps_frame().decode_tokens * r.steps_frame().steps).sum()) for r in (with_cache, without)
    ]
    if not (with_cache.counters.preempted_recompute or without.counters.preempted_recompute):
        assert decoded[0] == decoded[1]


def test_a_long_prompt_is_chunked_while_others_decode():
    """Budget 8: request 0 (4-token prompt) decodes while request 1's 20-token prompt runs
    in chunks of 7 (the budget less request 0's decode token), 7 and 6, in mixed steps; its
    first token comes with the last chunk."""
    kv = PagedKVManager(64, 4, watermark=0.0)
    s = V1Scheduler(kv, max_num_seqs=4, max_num_batched_tokens=8, prefix_caching=False)
    first, second = Request(0, prompt_len=4, output_len=10), Request(1, prompt_len=20, output_len=3)
    s.add_request(first)
    plan = s.schedule()
    assert plan.kind is PREFILL and plan.new_tokens.tolist() == [4]
    s.complete(plan)
    s.add_request(second)
    chunks = []
    for _ in range(3):
        plan = s.schedule()
        assert plan.kind is MIXED and plan.new_tokens.tolist()[0] == 1
        chunks.append(plan.new_tokens.tolist()[1])
        assert plan.first_tokens == ([second] if len(chunks) == 3 else [])
        s.complete(plan)
    assert chunks == [7, 7, 6]
    plan = s.schedule()
    assert plan.kind is DECODE and plan.new_tokens.tolist() == [1, 1]


def test_partial_prefills_are_capped():
    """Threshold 4 and budget 16: with one partial prefill allowed, a second long prompt
    waits for the first to finish; with two, both advance in the same step."""
    for partials, expected in ((1, [[4]]), (2, [[4, 4]])):
        kv = PagedKVManager(64, 4, watermark=0.0)
        s = V1Scheduler(
            kv, 4, 16, prefix_caching=False, long_prefill_token_threshold=4, max_num_partial_prefills=partials
        )
        for rid in range(2):
            s.add_request(Request(rid, prompt_len=12, output_len=2))
        plan = s.schedule()
        assert [plan.new_tokens.tolist()] == expected


@pytest.mark.parametrize("caching", [False, True])
def test_a_preempted_request_recomputes_every_token_it_had(caching):
    """Budget 64, cache of 6 blocks of 4: two requests of 8-token prompts fill 4 blocks; each
    decode grows them until the later one is preempted, then it recomputes prompt and output."""
    kv = PagedKVManager(6, 4, watermark=0.0, prefix_cache=caching)
    s = V1Scheduler(kv, 4, 64, prefix_caching=caching)
    requests = [Request(rid, prompt_len=8, output_len=8) for rid in range(2)]
    for r in requests:
        s.add_request(r)
    preempted = []
    for _ in range(40):
        plan = s.schedule()
        if plan is None:
            break
        preempted += plan.preempted
        if plan.preempted:  # vLLM v1 admits nobody in a step that preempted
            assert plan.started == [] and not set(plan.requests) & set(plan.preempted)
        s.complete(plan)
    assert preempted and preempted[0] is requests[1]
    assert requests[1].recomputed_tokens > 0
    assert all(r.status.value == "finished" for r in requests)


@pytest.mark.parametrize("budget", [5, 6, 9, 64])
@pytest.mark.parametrize("num_blocks", [6, 7, 9])
def test_a_step_that_preempts_admits_nobody(budget, num_blocks):
    """Three requests squeezed into a few blocks of 4, stepped to the end: whenever a step
    preempts, its victims wait at the queue's head for a later step, and no one is admitted
    (small budgets make the victim's first chunk small enough to fit at once)."""
    kv = PagedKVManager(num_blocks, 4, watermark=0.0)
    s = V1Scheduler(kv, 4, budget, prefix_caching=False)
    for rid in range(3):
        s.add_request(Request(rid, prompt_len=6, output_len=12))
    preemptions = 0
    for _ in range(500):
        plan = s.schedule()
        if plan is None:
            break
        if plan.preempted:
            preemptions += 1
            assert plan.started == [] and not set(plan.requests) & set(plan.preempted)
        s.complete(plan)
    assert not s.has_work()
    assert preemptions > 0
