"""The cost models: the profile's prices worked out by hand, monotone, never below the
physical floor, warns beyond its grid; the roofline's formulas."""

import warnings

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from synthetic_steps import (
    BLOCK_SIZE,
    H100,
    TRUE,
    blocks_s,
    causal_pairs,
    decode_step_s,
    mixed_step_s,
    token_table_s,
)

from kvsim.cost.profile import (
    TERMS,
    decode_features,
    engine_features,
    graph_for,
    host_features,
    load_profile,
    prefill_features,
    shipped_profile,
)
from kvsim.cost.profile_model import PHYSICAL_FLOOR, OutOfRangeWarning, ProfileCostModel
from kvsim.cost.roofline import RooflineAssumptions, RooflineCostModel
from kvsim.hardware import load_gpu
from kvsim.models import load_model
from kvsim.policies.scheduler import DECODE, PREFILL, StepKind, StepPlan

SPEC = load_model("opt-13b")
MODELS = {
    gpu: ProfileCostModel(load_profile(shipped_profile("opt-13b", gpu)), SPEC, 16)
    for gpu in ("h100-sxm-80gb", "a100-40gb")
}
FLOORS = {gpu: RooflineCostModel(SPEC, load_gpu(gpu), 16, PHYSICAL_FLOOR) for gpu in MODELS}
gpus = st.sampled_from(sorted(MODELS))


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutOfRangeWarning)
        yield


@settings(max_examples=200, deadline=None)
@given(gpus, st.integers(1, 300), st.integers(1, 300), st.integers(0, 200_000), st.integers(1, 50))
def test_decode_monotone_and_above_floor(gpu, b1, b2, context, steps):
    model, floor = MODELS[gpu], FLOORS[gpu]
    small, large = sorted((b1, b2))
    times = model.decode_times(small, context, steps)
    assert np.all(np.diff(times) >= 0)  # context grows every step
    assert np.all(times >= floor.decode_times(small, context, steps))
    # more sequences of the same context never cost less (at a fixed total, fewer tokens per
    # sequence shorten attention's critical path: not monotone in batch alone, by design)
    per_seq = context // small
    assert (
        model.decode_times(large, per_seq * large, 1)[0] >= model.decode_times(small, per_seq * small, 1)[0]
    )


@settings(max_examples=300, deadline=None)
@given(gpus, st.integers(1, 300), st.integers(1, 300_000), st.integers(1, 1024))
@example("a100-40gb", 8, 8 * 500, 40)  # crosses the partition's bend (512 per sequence) mid-run
@example("h100-sxm-80gb", 1, 1, 1024)
def test_decode_run_is_its_features_priced_step_by_step(gpu, batch, context, steps):
    """The decode run's line, priced from its ends, is the fitted features' price at every
    step (``decode_features`` @ coefficients, host and engine, floored): the simulator's
    shortcut cannot drift from what calibration fitted."""
    model, floor = MODELS[gpu], FLOORS[gpu]
    rows, partition = graph_for(model.graph_sizes, model.partitions, batch)
    host = float(host_features(batch) @ model.coef["host"]) + float(
        engine_features(batch) @ model.coef["engine"]
    )
    contexts = context + batch * np.arange(steps, dtype=np.float64)
    expected = np.maximum(
        decode_features(batch, rows, partition, contexts) @ model.coef["decode"] + host,
        floor.decode_times(batch, context, steps),
    )
    np.testing.assert_allclose(model.decode_times(batch, context, steps), expected, rtol=1e-12, atol=0)


@settings(max_examples=200, deadline=None)
@given(
    gpus,
    st.lists(st.tuples(st.integers(1, 2048), st.integers(0, 2048)), min_size=1, max_size=64),
    st.integers(0, 63),
    st.integers(1, 512),
    st.integers(1, 512),
)
def test_prefill_monotone_and_above_floor(gpu, seqs, which, more_new, more_cached):
    model, floor = MODELS[gpu], FLOORS[gpu]
    new = np.array([n for n, _ in seqs])
    ctx = new + np.array([c for _, c in seqs])
    t = model.prefill_time(new, ctx)
    assert t >= floor.prefill_time(new, ctx)
    i = which % len(seqs)
    grown_new, grown_ctx = new.copy(), ctx.copy()
    grown_new[i] += more_new
    grown_ctx[i] += more_new + more_cached
    assert model.prefill_time(grown_new, grown_ctx) >= t
    assert model.prefill_time(np.append(new, more_new), np.append(ctx, more_new)) >= t


@settings(max_examples=100, deadline=None)
@given(gpus, st.integers(1, 5000), st.integers(1, 5000))
def test_copies_and_swaps_monotone(gpu, k1, k2):
    model = MODELS[gpu]
    small, large = sorted((k1, k2))
    assert model.copy_time(0) == model.swap_time(0) == 0.0
    assert model.copy_time(small) <= model.copy_time(large)
    assert model.swap_time(small) <= model.swap_time(large)
    assert model.swap_time(small) >= FLOORS[gpu].swap_time(small)


def test_warns_once_beyond_the_measured_grid():
    model = ProfileCostModel(MODELS["h100-sxm-80gb"].doc, SPEC, 16)
    limit = model.limits["decode"]["total_context"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.decode_times(8, int(limit) - 100, 1)
        assert not caught
        model.decode_times(8, int(limit) + 1, 1)
        model.decode_times(8, int(limit) + 2, 1)
    assert len(caught) == 1 and issubclass(caught[0].category, OutOfRangeWarning)
    assert "total context" in str(caught[0].message)


def test_block_size_scales_copies_by_bytes():
    doc = MODELS["h100-sxm-80gb"].doc
    at16, at32 = ProfileCostModel(doc, SPEC, 16), ProfileCostModel(doc, SPEC, 32)
    assert at32.copy_time(10) == pytest.approx(at16.copy_time(20))


def _plan(kind: str, context_lens, new_tokens=None, **moves) -> StepPlan:
    """A hand-made step of ``kind`` ("prefill" or "decode")."""
    context_lens = np.asarray(context_lens, dtype=np.int64)
    new = np.ones_like(context_lens) if new_tokens is None else np.asarray(new_tokens, dtype=np.int64)
    return StepPlan(StepKind(kind), [], np.arange(len(context_lens)), new, context_lens, **moves)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 1500), min_size=1, max_size=8), st.integers(1, 20))
def test_a_decode_run_prices_each_step_at_its_grown_context(true_profile, contexts, steps):
    """Charging ``steps`` decode steps at once prices step i as a single step in which every
    sequence has i more tokens of context, and as the true cost at that context."""
    model = ProfileCostModel(true_profile, SPEC, BLOCK_SIZE)
    durations = model.plan_durations(_plan(DECODE, contexts), steps)
    assert len(durations) == steps
    for i, charged in enumerate(durations):
        grown = [c + i for c in contexts]
        assert charged == pytest.approx(model.plan_durations(_plan(DECODE, grown))[0], rel=1e-12)
        assert charged == pytest.approx(decode_step_s(TRUE, grown), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 1500),
    st.integers(0, 1024),
    st.lists(st.integers(1, 2048), min_size=1, max_size=64),
)
def test_a_mixed_step_costs_its_measured_terms(true_profile, new, cached, decode_contexts):
    """With a profile that measured mixed steps, a chunk beside decodes costs its token table
    at all the step's tokens, the chunk's prefill terms, the decodes' context reads and the
    mixed step's own fixed and per-decode cost: the true cost, worked out by hand."""
    model = ProfileCostModel(true_profile, SPEC, BLOCK_SIZE, engine=False)
    entries = np.array([new] + [1] * len(decode_contexts))
    contexts = np.array([new + cached] + decode_contexts)
    expected = mixed_step_s(TRUE, new, cached, decode_contexts, token_table_s)
    assert model.mixed_time(entries, contexts) == pytest.approx(expected, rel=1e-9)


def test_a_profile_without_mixed_steps_says_so_once():
    """A profile measured before mixed steps existed prices them by their other terms, and
    says so once."""
    model = ProfileCostModel(load_profile(shipped_profile("opt-13b", "a100-40gb")), SPEC, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            model.mixed_time(np.array([100, 1, 1]), np.array([100, 300, 400]))
    said = [w for w in caught if "did not measure mixed steps" in str(w.message)]
    assert len(said) == 1


# A run at twice the profile's block size: copies and swaps are priced by bytes.
RUN_BLOCK = 2 * BLOCK_SIZE
BLOCK_BYTES = RUN_BLOCK * 2 * SPEC.num_layers * SPEC.num_kv_heads * SPEC.head_dim * 2  # K and V, fp16
ROOFLINE = RooflineAssumptions()


def _move_time(cost: str, kind: str, blocks: int) -> float:
    """Seconds to copy (inside GPU memory) or swap (over PCIe) ``blocks`` KV blocks."""
    if cost == "profile":
        return blocks_s(TRUE, kind, blocks * RUN_BLOCK / BLOCK_SIZE)
    if kind == "copy":  # read and write every byte at the achievable HBM bandwidth
        return 2 * blocks * BLOCK_BYTES / (H100.hbm_bandwidth * ROOFLINE.memory_efficiency)
    return blocks * BLOCK_BYTES / H100.pcie_bandwidth + ROOFLINE.transfer_latency_s


@pytest.mark.parametrize("cost", ["profile", "roofline"])
@pytest.mark.parametrize(
    "move, kind", [("block_copies", "copy"), ("swap_in_blocks", "swap"), ("swap_out_blocks", "swap")]
)
def test_block_moves_cost_their_copy_and_swap_time(true_profile, cost, move, kind):
    """A step that copies (copy-on-write) or swaps blocks costs that much more than the same
    step without, paid once before the first of its steps."""
    model = (
        ProfileCostModel(true_profile, SPEC, RUN_BLOCK)
        if cost == "profile"
        else RooflineCostModel(SPEC, H100, RUN_BLOCK)
    )
    for plan, steps in (
        (lambda **m: _plan(DECODE, [300, 40, 1200], **m), 3),
        (lambda **m: _plan(PREFILL, [500, 900], new_tokens=[500, 100], **m), 1),
    ):
        for blocks in (1, 7, 100):
            extra = model.plan_durations(plan(**{move: blocks}), steps) - model.plan_durations(plan(), steps)
            assert extra[0] == pytest.approx(_move_time(cost, kind, blocks), rel=1e-9)
            assert not extra[1:].any()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 2048), st.integers(0, 4096)), min_size=1, max_size=8))
@example([(2048, 4096)])  # compute-bound, a seventh of its FLOPs in attention pairs
def test_roofline_prefill_is_the_slower_of_its_flops_and_bytes(seqs):
    """Every new token multiplies through the weights and every causal pair costs attention
    FLOPs; the weights and every context token's KV cross HBM once."""
    model = RooflineCostModel(SPEC, H100, BLOCK_SIZE)
    new = np.array([n for n, _ in seqs])
    context = new + np.array([c for _, c in seqs])
    flops = SPEC.linear_flops_per_token * new.sum() + SPEC.attention_flops_per_pair * sum(
        causal_pairs(n, c) for n, c in seqs
    )
    kv_bytes = 2 * SPEC.num_layers * SPEC.num_kv_heads * SPEC.head_dim * 2 * context.sum()
    expected = max(
        flops / (H100.fp16_flops * ROOFLINE.prefill_flops_efficiency),
        (SPEC.weight_bytes + kv_bytes) / (H100.hbm_bandwidth * ROOFLINE.memory_efficiency),
    )
    assert model.prefill_time(new, context) == pytest.approx(expected + ROOFLINE.step_overhead_s, rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(
    gpus,
    st.lists(st.tuples(st.integers(2, 2048), st.integers(0, 2048)), min_size=1, max_size=4),
    st.lists(st.integers(1, 4000), min_size=0, max_size=64),
)
def test_a_mixed_step_is_its_chunks_prefill_plus_its_decodes_reads(gpu, chunks, decode_contexts):
    """A mixed step (v1): with no decodes it is the chunks' prefill; each decode adds its one
    token to the dense layers' rows and its context's reads at the decode's per-token rate;
    it never costs less than the floor, nor less than the same chunks alone."""
    model, floor = MODELS[gpu], FLOORS[gpu]
    new = np.array([n for n, _ in chunks] + [1] * len(decode_contexts))
    context = np.array([n + c for n, c in chunks] + decode_contexts)
    k = len(chunks)
    alone = model.mixed_time(new[:k], context[:k])
    assert alone == model.prefill_time(new[:k], context[:k])
    mixed = model.mixed_time(new, context)
    assert mixed >= floor.prefill_time(new, context)
    assert mixed >= alone
    names = [term for term, _ in TERMS["decode"]]
    reads = model.coef["decode"][names.index("context")] * sum(decode_contexts)
    fitted = (
        model.prefill_tokens(float(new.sum()))
        + float(
            prefill_features(new[:k], context[:k], SPEC.num_heads, model.doc["prefill_attention"])
            @ model.coef["prefill"]
        )
        + reads
    )
    engine = float(engine_features(len(new)) @ model.coef["engine"])
    assert mixed == pytest.approx(max(fitted, floor.prefill_time(new, context)) + engine, rel=1e-12)
