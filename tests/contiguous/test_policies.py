"""Orca's reservation rules, FasterTransformer's request-level batches, and the waste
breakdown of every policy (its categories always account for the whole cache)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import random_traces

from kvsim.cost.roofline import RooflineCostModel
from kvsim.engine.metrics import KV_SLOT_COLUMNS, WASTE_KEYS, summarize
from kvsim.errors import KvsimError
from kvsim.hardware import load_gpu
from kvsim.models import load_model
from kvsim.policies.beam import BeamModel
from kvsim.policies.contiguous import reserve_exact, reserve_max, reserve_pow2
from kvsim.policies.registry import PolicyContext, get_policy
from kvsim.policies.request import Request
from kvsim.policies.scheduler import PREFILL
from kvsim.sim import engine
from kvsim.sim.cluster import RoundRobinRouter

MODEL, GPU = load_model("opt-13b"), load_gpu("a100-40gb")
POLICIES = ("paged", "orca-oracle", "orca-pow2", "orca-max", "ft")


def context(num_blocks=64, block_size=16, max_model_len=256, **kw):
    return PolicyContext(num_blocks, block_size, 32, 2048, max_model_len, **kw)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("orca-oracle", 100 + 30 - 1),  # exactly the slots the request fills
        ("orca-pow2", 100 + 32 - 1),  # the prompt + the 30-token output rounded up to 32
        ("orca-max", 512),  # the whole context
    ],
)
def test_each_orca_rule_reserves_its_size(name, expected):
    scheduler = get_policy(name).build(context(num_blocks=64, max_model_len=512))
    scheduler.add_request(Request(0, 100, 30))
    plan = scheduler.schedule()
    assert plan.kind == PREFILL
    assert scheduler.kv.allocator.allocated_ranges() == [(0, expected)]
    usage = scheduler.kv_usage(plan)
    assert (usage.token_states, usage.reserved) == (100, 29)
    assert usage.internal_fragmentation == expected - 129
    assert usage.free == 64 * 16 - expected


def test_reservation_rules():
    """The vLLM paper's artifact: the prompt plus an estimate of the output (the true one, it
    rounded up to a power of two, or up to the maximum length), capped at the maximum."""
    assert reserve_exact(100, 129) == 129
    assert reserve_pow2(2048)(10, 10 + 25 - 1) == 10 + 32 - 1  # 25 output tokens -> 32
    assert reserve_pow2(2048)(100, 100 + 32 - 1) == 100 + 32 - 1  # a power of two already
    assert reserve_pow2(2048)(2000, 2000 + 40 - 1) == 2048  # 2000 + 64 capped at the context
    assert reserve_pow2(2048)(1, 1) == 1  # one output token, no KV written for it
    assert reserve_max(2048)(5, 10) == 2048


def test_a_request_waits_at_the_head_until_its_reservation_fits():
    scheduler = get_policy("orca-max").build(context(num_blocks=32, max_model_len=256))  # 512 slots
    for rid in range(3):
        scheduler.add_request(Request(rid, 10, 5))
    plan = scheduler.schedule()
    assert [r.request_id for r in plan.requests] == [0, 1]  # two 256-slot ranges fill the cache
    assert [r.request_id for r in scheduler.waiting] == [2]
    finished = []
    while not finished:
        finished = scheduler.complete(scheduler.schedule())
    assert scheduler.schedule().requests[0].request_id == 2


def test_contiguous_decode_never_runs_out_and_nothing_is_preempted():
    scheduler = get_policy("orca-oracle").build(context(num_blocks=8, block_size=16))  # 128 slots
    for rid in range(4):
        scheduler.add_request(Request(rid, 10, 20))
    done = []
    while scheduler.has_work():
        plan = scheduler.schedule()
        steps = scheduler.headroom(plan, 1000)
        assert not plan.preempted
        done += scheduler.complete(plan, steps)
    assert len(done) == 4 and scheduler.kv.allocator.num_free == 128


def test_ft_batch_runs_to_completion_before_anyone_joins():
    scheduler = get_policy("ft").build(context(num_blocks=64, max_model_len=256))  # 1024 slots
    assert scheduler.batch_level and scheduler.max_num_seqs == 4
    for rid, output in enumerate([3, 50, 2, 2, 2, 2]):
        scheduler.add_request(Request(rid, 10, output))
    batches = []
    while scheduler.has_work():
        plan = scheduler.schedule()
        if plan.kind == PREFILL:
            assert not scheduler.running[: -len(plan.requests)]  # the previous batch has drained
            batches.append([r.request_id for r in plan.requests])
        else:
            assert {r.request_id for r in scheduler.running} <= set(batches[-1])  # no newcomer
        scheduler.complete(plan, scheduler.headroom(plan, 1000))
    assert batches == [[0, 1, 2, 3], [4, 5]]  # B = 4; 4 and 5 wait for request 1's 50 tokens


def test_ft_batch_size_is_settable_and_checked():
    assert (
        get_policy("ft").build(context(num_blocks=64, max_model_len=256, ft_batch_size=2)).max_num_seqs == 2
    )
    with pytest.raises(KvsimError, match="holds only 4"):
        get_policy("ft").build(context(num_blocks=64, max_model_len=256, ft_batch_size=5))


@st.composite
def workloads(draw):
    trace = draw(random_traces(max_requests=30, max_gap=1.0, max_len=200))
    block_size = draw(st.sampled_from([1, 4, 16]))
    num_blocks = draw(st.integers(512 // block_size, 3000 // block_size))
    return trace, block_size, num_blocks


@pytest.mark.parametrize("policy", POLICIES)
@settings(max_examples=25, deadline=None)
@given(workload=workloads())
def test_waste_categories_always_sum_to_the_whole_cache(policy, workload):
    trace, block_size, num_blocks = workload
    scheduler = get_policy(policy).build(context(num_blocks, block_size, max_model_len=400))
    recorder = engine.simulate(
        trace, [scheduler], RooflineCostModel(MODEL, GPU, block_size), RoundRobinRouter()
    )
    steps = recorder.steps_frame()
    slots = steps[list(KV_SLOT_COLUMNS)]
    assert (slots >= 0).all().all()
    assert np.allclose(slots.sum(axis=1), num_blocks * block_size)  # every slot, every step
    summary = summarize(recorder, num_blocks)
    assert sum(summary[key] for key in WASTE_KEYS) == pytest.approx(1.0)
    if policy == "paged":
        assert summary["waste_reservation"] == 0
    if policy == "orca-oracle":
        assert summary["waste_internal_fragmentation"] == 0
    assert summary["completed"] + summary["rejected"] == len(trace)


def test_a_group_whose_private_copies_cannot_fit_together_is_rejected_at_intake():
    """Without sharing every sample reserves its own range; a group whose ranges fit one at a
    time but not together must be turned away, not admitted to wait forever."""
    scheduler = get_policy("orca-max").build(context(num_blocks=20, block_size=16, max_model_len=256))
    pair, single = Request(0, 1, 1), Request(1, 1, 1)
    pair.width = 2  # two 256-slot reservations; the cache has 320 slots
    assert "token slots" in scheduler.rejection_reason(pair)
    assert scheduler.rejection_reason(single) == ""


@pytest.mark.parametrize("name", ["orca-oracle", "orca-pow2", "orca-max", "ft"])
def test_policies_without_sharing_draw_beams_by_the_runs_beam_model(name):
    """--beam-stay/--beam-skew/seed reach every policy: beams fork the same way under each."""
    model = BeamModel(stay=0.9, skew=2.0, seed=7)
    scheduler = get_policy(name).build(context(num_blocks=64, max_model_len=256, beam=model))
    assert scheduler.beam == model
