"""Fast-forwarding (charging a run of identical decode steps in one event) must give exactly
the schedule of stepping one step at a time, under every policy, sharing mode, preemption
mode and cost model: a shortcut that is exact only in the easy cases is a wrong answer in
the hard ones (preemption, swapped groups, forks, beams, cached prefixes)."""

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from strategies import random_traces

from kvsim.cost.profile import load_profile, shipped_profile
from kvsim.cost.profile_model import ProfileCostModel
from kvsim.cost.roofline import RooflineCostModel
from kvsim.hardware import load_gpu
from kvsim.models import load_model
from kvsim.policies.beam import BeamModel
from kvsim.policies.registry import PolicyContext, available_policies
from kvsim.sim import engine
from kvsim.sim.cluster import RoundRobinRouter
from kvsim.workloads.prefixes import add_shared_prefixes
from kvsim.workloads.sampling import add_sampling
from kvsim.workloads.trace import Trace

MODEL, GPU = load_model("opt-13b"), load_gpu("a100-40gb")
PROFILE = load_profile(shipped_profile(MODEL.name, GPU.name))
SHARING = ("none", "samples", "independent-samples", "beam", "shared-prefix", "prefix-caching")
TIMING_COLUMNS = ["admitted", "first_token", "finish", "ttft", "e2e_latency"]


@st.composite
def scenarios(draw):
    """A small cluster squeezed for KV room, so runs preempt, swap and fork often."""
    policy = draw(st.sampled_from(sorted(available_policies())))
    block_size = draw(st.sampled_from([1, 4, 16]))
    sharing = draw(st.sampled_from(SHARING))
    width = draw(st.integers(2, 3)) if sharing in ("samples", "independent-samples", "beam") else 1
    trace = draw(random_traces(max_requests=24, max_gap=1.0, max_len=200))
    if sharing in ("shared-prefix", "prefix-caching"):
        trace = add_shared_prefixes(trace, draw(st.sampled_from([16, 40])), num_prefixes=2, seed=1)
    trace = add_sampling(
        trace,
        n=width if "samples" in sharing else 1,
        beam_width=width if sharing == "beam" else 1,
        independent_lengths=sharing == "independent-samples",
        seed=2,
    )
    tokens_held = draw(st.integers(520, 1500))  # FasterTransformer needs one whole context
    preemption = draw(st.sampled_from(["recompute", "swap"])) if policy == "paged" else "recompute"
    v1 = policy == "paged" and width == 1 and preemption == "recompute" and draw(st.booleans())
    context = PolicyContext(
        num_blocks=tokens_held // block_size + 3,
        block_size=block_size,
        max_num_seqs=draw(st.integers(2, 12)),
        # v1 chunks prompts longer than its budget: small budgets make mixed steps common
        max_num_batched_tokens=draw(st.sampled_from([24, 100, 512])) if v1 else 512,
        scheduler="v1" if v1 else "v0",
        long_prefill_token_threshold=draw(st.sampled_from([0, 40])) if v1 else 0,
        max_num_partial_prefills=draw(st.integers(1, 2)) if v1 else 1,
        max_model_len=512,
        preemption=preemption,
        swap_blocks=draw(st.integers(0, 600)) // block_size + 1,
        prefix_caching=sharing == "prefix-caching",
        shared_prefix=sharing == "shared-prefix",
        beam=BeamModel(seed=3),
    )
    cost = draw(st.sampled_from(["roofline", "profile"]))
    replicas = draw(st.integers(1, 2))
    return policy, context, trace, cost, replicas


def simulate(scenario, max_steps_per_event):
    policy, context, trace, cost, replicas = scenario
    cost_model = (
        RooflineCostModel(MODEL, GPU, context.block_size)
        if cost == "roofline"
        else ProfileCostModel(PROFILE, MODEL, context.block_size, source="shipped")
    )
    schedulers = [available_policies()[policy].build(context) for _ in range(replicas)]
    original = engine.MAX_STEPS_PER_EVENT
    engine.MAX_STEPS_PER_EVENT = max_steps_per_event
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # extrapolation notes are beside the point here
            return engine.simulate(trace, schedulers, cost_model, RoundRobinRouter())
    finally:
        engine.MAX_STEPS_PER_EVENT = original


def swap_space_full():
    """The shape of the bug the first version of this test missed: a decode step preempts by
    recompute (the swap space is full), and charging the steps after it in one event kept
    the victim out of the very next step's admission."""
    trace = Trace(
        "swap-space-full",
        np.zeros(11),
        np.array([1, 1, 107, 167, 1, 135, 1, 18, 1, 1, 1], dtype=np.int64),
        np.array([1, 88, 85, 86, 3, 30, 1, 3, 1, 1, 1], dtype=np.int64),
    )
    context = PolicyContext(
        num_blocks=523,
        block_size=1,
        max_num_seqs=4,
        max_num_batched_tokens=512,
        max_model_len=512,
        preemption="swap",
        swap_blocks=161,
    )
    return "paged", context, trace, "roofline", 1


def cached_prefix_evicted():
    """The shape of a bug Hypothesis found: under v1 with prefix caching, a preempted request
    whose freed blocks all wait cached is refused (its first chunk must hold every block it
    hits, more than are free), and the decode run that follows evicts them, after which its
    first chunk is small enough to admit: charging that run in one event kept it out."""
    trace = Trace(
        "prefix-evicted",
        np.zeros(17),
        np.array([145, 174] + [17] * 14 + [173], dtype=np.int64),
        np.array([36, 30] + [1] * 15, dtype=np.int64),
        extra={
            "prefix_id": np.array([0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 1, 0, 1, 0, 0, 0]),
            "prefix_len": np.full(17, 16),
        },
    )
    context = PolicyContext(
        num_blocks=523,
        block_size=1,
        max_num_seqs=3,
        max_num_batched_tokens=24,
        max_model_len=512,
        preemption="recompute",
        swap_blocks=1,
        prefix_caching=True,
        scheduler="v1",
    )
    return "paged", context, trace, "roofline", 1


@example(swap_space_full())
@example(cached_prefix_evicted())
@settings(max_examples=60, deadline=None, derandomize=True)  # the same cases in CI every time
@given(scenarios())
def test_fast_forward_gives_the_one_step_schedule(scenario):
    fast, slow = simulate(scenario, 1024), simulate(scenario, 1)
    a, b = fast.requests_frame(), slow.requests_frame()
    pd.testing.assert_frame_equal(a.drop(columns=TIMING_COLUMNS), b.drop(columns=TIMING_COLUMNS))
    for column in TIMING_COLUMNS:
        np.testing.assert_allclose(
            a[column].to_numpy(float),
            b[column].to_numpy(float),
            rtol=1e-9,
            atol=1e-12,
            equal_nan=True,
            err_msg=column,
        )
    assert fast.counters == slow.counters  # preemptions, swaps, forks and copies alike
    for counter in ("preempted_recompute", "preempted_swap", "forks", "prefix_hit_blocks"):
        if getattr(slow.counters, counter):
            event(counter)  # `--hypothesis-show-statistics` shows how often each hard case ran
    fast_steps, slow_steps = fast.steps_frame(), slow.steps_frame()
    assert fast_steps.steps.sum() == slow_steps.steps.sum()
    assert len(slow_steps) == slow_steps.steps.sum()  # the reference really took one step per event


def one_running_and_one_arriving(max_num_seqs: int, num_blocks: int) -> tuple:
    """Request 0 (8-token prompt, 200 tokens out) runs alone; request 1 (a 208-token
    prompt: 52 blocks of 4 tokens) arrives while it decodes, holding 3 to 52 blocks."""
    trace = Trace(
        "arrival-during-run",
        np.array([0.0, 0.5]),
        np.array([8, 208], dtype=np.int64),
        np.array([200, 2], dtype=np.int64),
    )
    context = PolicyContext(
        num_blocks=num_blocks,
        block_size=4,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=512,
        max_model_len=512,
        watermark=0.0,
    )
    return "paged", context, trace, "roofline", 1


@pytest.mark.parametrize(
    "limit, cut",
    [
        ((2, 200), True),  # room for the newcomer: the run stops at the next step boundary
        ((1, 200), False),  # the batch is full: it waits for request 0 to finish
        ((2, 54), False),  # its prompt's 52 blocks are not free, and none free before the run ends
    ],
)
def test_an_arrival_cuts_a_decode_run_only_if_it_could_be_admitted(limit, cut):
    scenario = one_running_and_one_arriving(*limit)
    fast, slow = simulate(scenario, 1024), simulate(scenario, 1)
    assert fast.status.tolist() == slow.status.tolist() == ["completed"] * 2
    np.testing.assert_allclose(fast.finish, slow.finish, rtol=1e-12)
    kinds = [(kind, steps) for kind, steps in fast.steps_frame()[["kind", "steps"]].itertuples(index=False)]
    assert kinds[0] == ("prefill", 1)
    if cut:  # the run is cut where request 1 is admitted: both then decode together
        assert kinds[1][0] == "decode" and kinds[2] == ("prefill", 1) and kinds[1][1] < 199
    else:  # request 0's decode run goes to its end in one event, then request 1 runs
        assert kinds[1] == ("decode", 199) and kinds[2] == ("prefill", 1)
