"""The profile cost model: monotone, never below the physical floor, warns beyond its grid."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsim.calibration.profile import load_profile, shipped_profile
from kvsim.calibration.profile_model import PHYSICAL_FLOOR, OutOfRangeWarning, ProfileCostModel
from kvsim.calibration.roofline import RooflineCostModel
from kvsim.hardware import load_gpu
from kvsim.models import load_model

SPEC = load_model("opt-13b")
MODELS = {gpu: ProfileCostModel(load_profile(shipped_profile("opt-13b", gpu)), SPEC, 16)
          for gpu in ("h100-sxm-80gb", "a100-40gb")}
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
    assert model.decode_times(large, per_seq * large, 1)[0] >= model.decode_times(small, per_seq * small, 1)[0]


@settings(max_examples=200, deadline=None)
@given(gpus, st.lists(st.tuples(st.integers(1, 2048), st.integers(0, 2048)), min_size=1, max_size=64),
       st.integers(0, 63), st.integers(1, 512), st.integers(1, 512))
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
