"""`simcli calibrate --check`'s arithmetic, on a machine written out by hand: the synthetic
world of synthetic_steps.py with its memory-bound terms slower, its compute-bound terms faster
and its fixed work slower, as a second machine of one GPU kind might be."""

import copy

import pytest
from synthetic_steps import (
    TABLE_EAGER_PER_ROW_S,
    TABLE_FIXED_S,
    TABLE_PER_ROW_S,
    TABLE_TOKENS,
    TRUE,
    WEIGHT_READ_S,
    decode_gpu_s,
    engine_s,
    host_s,
    prefill_terms_s,
    token_table_s,
)

from kvsim.calibration.check import (
    DECODE_ANCHORS,
    PREFILL_ANCHORS,
    anchors_within,
    check_profile,
    format_check,
    with_factors,
)
from kvsim.cost.profile import load_profile, save_profile

MEMORY, COMPUTE, FIXED = 1.08, 0.95, 1.10
# The terms of each class, named here rather than read from kvsim's TERMS.
MEMORY_TERMS = {"decode": ("weights", "context", "partition"), "prefill": ("gathered",)}
COMPUTE_TERMS = {"decode": ("batch", "batch_squared"), "prefill": ("attention",)}
MACHINE = {"environment": {}, "ceilings": {}, "under_load": {"samples": 0}, "setup_seconds": 0.0}
ENGINE_SLOWER = 1.3


def other_machine() -> dict:
    coef = copy.deepcopy(TRUE)
    for kind in ("decode", "host", "prefill"):  # the engine is scaled apart (engine_steps)
        for term in coef[kind]:
            if term in MEMORY_TERMS.get(kind, ()):
                coef[kind][term] *= MEMORY
            elif term in COMPUTE_TERMS.get(kind, ()):
                coef[kind][term] *= COMPUTE
            else:
                coef[kind][term] *= FIXED
    return coef


def table_s(tokens: int) -> float:
    rows = next(t for t in TABLE_TOKENS if t >= tokens)
    per_row = TABLE_PER_ROW_S * rows + TABLE_EAGER_PER_ROW_S * max(0, rows - 1024)
    return WEIGHT_READ_S * MEMORY + TABLE_FIXED_S * FIXED + per_row * COMPUTE


def anchors(coef: dict, table) -> list[dict]:
    decode, prefill = anchors_within(2048)
    points = []
    for batch, context in decode:
        gpu = decode_gpu_s(coef, batch, batch * context)
        points.append(
            {
                "kind": "decode",
                "batch": batch,
                "total_context": batch * context,
                "measured_s": gpu + host_s(coef, batch),
                "gpu_s": gpu,
            }
        )
    for seqs, tokens in prefill:
        new = [tokens] * seqs
        measured = table(seqs * tokens) + prefill_terms_s(coef, new, [0] * seqs)
        points.append({"kind": "prefill", "new_tokens": new, "measured_s": measured})
    return points


def engine_steps(scale: float) -> list[dict]:
    return [{"seqs": n, "engine_s": scale * engine_s(TRUE, n)} for n in (1, 7, 64, 200)]


def test_anchors_fit_the_model_context():
    decode, prefill = anchors_within(1024)
    assert decode and all(context < 1024 for _, context in decode)
    assert prefill and all(tokens <= 1024 for _, tokens in prefill)
    assert len(decode) < len(DECODE_ANCHORS) and len(prefill) < len(PREFILL_ANCHORS)


def test_a_profile_on_its_own_machine_needs_no_adjustment(true_profile):
    report, adjusted = check_profile(true_profile, anchors(TRUE, token_table_s), engine_steps(1.0), MACHINE)
    assert report["mean_abs_drift"] < 1e-9
    assert adjusted is None


def test_drift_on_another_machine_is_reported_and_adjusted_by_class(true_profile, tmp_path):
    report, adjusted = check_profile(
        true_profile, anchors(other_machine(), table_s), engine_steps(ENGINE_SLOWER), MACHINE
    )
    assert report["mean_abs_drift"] > 0.03
    factors = report["factors"]
    # The token table's first row is taken as fixed work although part of it is per-row
    # (compute): the fit lands close to, not exactly on, the machine's factors.
    assert factors["memory"] == pytest.approx(MEMORY, rel=0.01)
    assert factors["compute"] == pytest.approx(COMPUTE, rel=0.02)
    assert factors["fixed"] == pytest.approx(FIXED, rel=0.02)
    assert report["mean_abs_drift_adjusted"] < 0.005
    assert adjusted is not None and adjusted["provenance"]["kind"] == "adjusted"
    assert adjusted["provenance"]["from"] == true_profile["name"]
    assert report["engine_factor"] == pytest.approx(ENGINE_SLOWER)
    engine = adjusted["coefficients"]["engine"]
    assert engine["seqs"] == pytest.approx(ENGINE_SLOWER * true_profile["coefficients"]["engine"]["seqs"])
    # Terms the anchors do not reach stay as measured.
    assert adjusted["coefficients"]["swap"]["blocks"] == true_profile["coefficients"]["swap"]["blocks"]
    reloaded = load_profile(save_profile(adjusted, tmp_path / "adjusted.json"))
    assert reloaded["coefficients"] == adjusted["coefficients"]
    assert any("drift" in line for line in format_check(report))


def test_unit_factors_leave_the_profile_unchanged(true_profile):
    same = with_factors(true_profile, {})
    assert same["coefficients"] == true_profile["coefficients"]
    table, original = same["prefill_tokens"], true_profile["prefill_tokens"]
    assert table["seconds"] == pytest.approx(original["seconds"], rel=1e-12)
    assert table["weights_s"] == original["weights_s"]
