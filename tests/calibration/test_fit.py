"""The calibration fit, on noisy measurements of steps whose true costs are written out in
synthetic_steps.py (not made through kvsim's own features)."""

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import nnls
from synthetic_steps import (
    H100_SMS,
    NOISE,
    SOLO_RATE,
    SPEC,
    TRUE,
    attention_s,
    causal_pairs,
    fit,
    token_table_s,
)

from kvsim.cost.profile import PrefillTokens, prefill_features

# The fit recovers every coefficient to within a few noise widths, except the mixed step's own
# fixed cost (fitted on what the fitted token table and prefill terms leave of a step tens of
# times larger, so their errors land in it).
RECOVERY = 0.03
LOOSE = {("mixed", "fixed"): 0.1}


def test_fit_recovers_the_true_coefficients(synthetic_profile):
    fitted = synthetic_profile["coefficients"]
    for kind, terms in TRUE.items():
        for term, value in terms.items():
            assert fitted[kind][term] == pytest.approx(value, rel=LOOSE.get((kind, term), RECOVERY)), (
                f"{kind}.{term}"
            )


def test_fit_recovers_the_attention_solo_rate_and_sms(synthetic_profile):
    assert synthetic_profile["prefill_attention"] == {"multiprocessors": H100_SMS, "solo_rate": SOLO_RATE}


def test_pairs_and_longest_context_misfit_prefill_attention(raw_points, synthetic_profile):
    """The terms before attention's blocks -- causal (query, key) pairs plus the longest context
    added to them -- fitted to the same prefills cannot follow the kernel's blocks (query tiles
    padded to 128 rows, SMs idle or shared by long tiles): held out, they miss by several times
    the noise where the blocks' fit stays within it."""

    def old_features(point):
        new, cached = point["new_tokens"], point["cached_tokens"]
        context = [n + c for n, c in zip(new, cached)]
        gathered = sum(context) if any(cached) else 0
        pairs = sum(causal_pairs(n, c) for n, c in zip(new, cached))
        return [len(new), pairs, gathered, float(any(cached)), max(context)]

    points = raw_points["prefill"]
    rows = np.array([old_features(p) for p in points], dtype=float)
    measured = np.array([p["wall_s"] for p in points])
    table = np.array([token_table_s(sum(p["new_tokens"])) for p in points])  # the true table
    held = np.array([p["heldout"] for p in points])
    scale = 1 / measured[~held]
    coef, _ = nnls(rows[~held] * scale[:, None], (measured[~held] - table[~held]) * scale)
    error = np.abs((rows[held] @ coef + table[held]) / measured[held] - 1)
    assert error.mean() > 2 * NOISE and error.max() > 5 * NOISE
    report = synthetic_profile["fit_report"]["prefill"]["heldout"]
    assert report["mape"] < 1.5 * NOISE and report["max_ape"] < 5 * NOISE


def test_fit_predicts_held_out_steps_to_within_the_noise(synthetic_profile, raw_points):
    """The finished cost model predicts steps it never saw about as well as the timings'
    own noise allows (mean |error| of a normal is 0.8 sigma; the worst of 120, ~3 sigma)."""
    report = synthetic_profile["fit_report"]
    for kind in ("decode", "prefill"):
        held = sum(p["heldout"] for p in raw_points[kind])
        assert report[kind]["heldout"]["n"] == held > 0
        assert report[kind]["fitted"]["n"] == len(raw_points[kind]) - held
    assert report["overall_heldout"]["mape"] < 1.5 * NOISE
    assert report["overall_heldout"]["max_ape"] < 5 * NOISE


def test_held_out_points_are_reported_not_fitted(synthetic_profile, raw_points):
    """Held-out timings made ten times too long must leave every coefficient as it was, and
    show in the held-out report (and only there) as a ~90% error: predicted ~ true, measured
    = 10 x true, so |predicted / measured - 1| ~ 0.9."""
    corrupted = copy.deepcopy(raw_points)
    for kind in ("decode", "prefill"):
        for point in corrupted[kind]:
            for timing in ("wall_s", "gpu_s"):
                if point["heldout"] and timing in point:
                    point[timing] *= 10
    refitted = fit(corrupted)
    assert refitted["coefficients"] == synthetic_profile["coefficients"]
    assert refitted["prefill_tokens"] == synthetic_profile["prefill_tokens"]
    for kind in ("decode", "prefill"):
        report, clean = refitted["fit_report"][kind], synthetic_profile["fit_report"][kind]
        assert report["fitted"] == clean["fitted"]
        assert report["heldout"]["n"] == clean["heldout"]["n"]
        assert report["heldout"]["mape"] == pytest.approx(0.9, abs=0.01)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 2048), st.integers(0, 8192)), min_size=1, max_size=16),
    st.sampled_from([0.5, 0.7, 1.0]),
)
def test_prefill_features_match_their_definitions(seqs, solo_rate):
    """Each prefill feature as docs/calibration.md defines it: sequences, attention's blocks
    (synthetic_steps counts them block by block) with every SM busy, context tokens gathered
    when any prefix is cached, whether one is."""
    new = np.array([n for n, _ in seqs])
    cached = np.array([c for _, c in seqs])
    any_cached = bool(cached.any())
    attention = {"multiprocessors": H100_SMS, "solo_rate": solo_rate}
    features = prefill_features(new, new + cached, SPEC.num_heads, attention)
    blocks = attention_s({"prefill": {"attention": 1.0}}, new.tolist(), cached.tolist(), H100_SMS, solo_rate)
    assert features.tolist() == [len(seqs), pytest.approx(blocks, rel=1e-12), *features[2:]]
    assert features[2:].tolist() == [float((new + cached).sum()) if any_cached else 0.0, float(any_cached)]


@pytest.mark.parametrize(
    "heads, solo_rate, blocks",
    [
        # 2 blocks on 132 SMs: each alone; the longer (5 key tiles) at the solo rate, x 132 SMs
        (1, 1.0, 132 * 5),
        (1, 0.5, 132 * 10),
        # 200 blocks: the 4- and 5-tile ones share an SM (2 x 4), then the 5-tile one is alone
        (100, 1.0, 132 * (2 * 4 + 1)),
        # 1000 blocks of 9 key tiles per head, spread over 132 SMs
        (500, 1.0, 500 * 9),
    ],
)
def test_attention_blocks_of_a_hand_made_prefill(heads, solo_rate, blocks):
    """200 new tokens after 100 cached: its query tiles (128 rows) end at positions 228 and
    300, so they walk 4 and 5 key tiles (64 keys) per head."""
    attention = {"multiprocessors": 132, "solo_rate": solo_rate}
    assert prefill_features(np.array([200]), np.array([300]), heads, attention)[1] == blocks


def test_profile_records_provenance_and_ranges(synthetic_profile, raw_points):
    """The grid is the measured range (the cost model warns beyond it)."""
    assert synthetic_profile["provenance"]["kind"] == "measured"
    blocks = [p["blocks"] for p in raw_points["copy"]]
    assert synthetic_profile["grid"]["copy"]["blocks"] == [min(blocks), max(blocks)]
    assert synthetic_profile["tensor_parallel"] == 1 and synthetic_profile["dtype"] == "float16"


def test_prefill_is_priced_at_the_padded_size_it_runs_as():
    """A prefill runs padded to the next of the small sizes, or to a multiple of 128 above
    them, and costs what the table measured at that size."""
    table = PrefillTokens(
        {"tokens": [16, 32, 64, 128, 256], "seconds": [1.0, 2.0, 3.0, 5.0, 9.0], "weights_s": 0.5},
        {"sizes": [16, 32, 64], "multiple": 128},
    )
    assert table(1) == table(16) == 1.0
    assert table(17) == table(32) == 2.0
    assert table(65) == table(128) == 5.0
    assert table(129) == table(256) == 9.0
    # padded to 384, past the table along its last segment: 9 + (9 - 5) / 128 per token
    assert table(300) == 9.0 + (9.0 - 5.0) / (256 - 128) * (384 - 256)


def test_a_head_size_the_attention_tiles_do_not_describe_is_warned(raw_points):
    """Prefill attention's blocks are the kernel's tiles at head size 128; a model of another
    head size is fitted with them only after a warning, never silently."""
    import dataclasses

    from synthetic_steps import BLOCK_SIZE, H100

    from kvsim.calibration.fit import fit_profile

    other = dataclasses.replace(SPEC, head_dim=SPEC.head_dim // 2, num_heads=SPEC.num_heads * 2)
    with pytest.warns(UserWarning, match="head size 64"):
        fit_profile(raw_points, other, H100, BLOCK_SIZE, created="2026-01-01T00:00:00+00:00")
