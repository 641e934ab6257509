"""Decode attention's cost by block size (the profile's ``decode_block_size`` table): priced by
its factor, measured sizes run quietly and others warn (or are refused for a named profile), the
table survives a refit and a transfer, and bad tables are refused in one line."""

import copy
import json
import warnings

import numpy as np
import pytest
from synthetic_steps import SIZES, SPEC, TRUE, decode_step_s, mixed_step_s, token_table_s
from test_profile_refusals import assert_refused_by_run, changed, write_profile

from kvsim.calibration.fit import block_size_factors, refit
from kvsim.calibration.transfer import derive_profile
from kvsim.config import SimConfig
from kvsim.cost import BlockSizeWarning, select_cost_model
from kvsim.cost.profile import validate
from kvsim.cost.profile_model import OutOfRangeWarning, ProfileCostModel
from kvsim.errors import KvsimError
from kvsim.hardware import BUILTIN_GPUS, load_gpu
from kvsim.models import load_model

# Decode attention at block 1 costs twice block 16's, at 256 a quarter more; 8 was not measured.
FACTORS = {"1": 2.0, "16": 1.0, "256": 1.25}


def with_table(doc: dict, factors: dict = FACTORS) -> dict:
    doc = copy.deepcopy(doc)
    doc["decode_block_size"] = {
        "factors": dict(factors),
        "shapes": [[4, 2048], [256, 128]],
        "device": "synthetic",
        "created": "2026-01-01T00:00:00+00:00",
    }
    return doc


def scaled(factor: float) -> dict:
    """TRUE with the decode terms that read the KV cache (context, partition) times ``factor``."""
    coef = copy.deepcopy(TRUE)
    for term in ("context", "partition"):
        coef["decode"][term] *= factor
    return coef


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutOfRangeWarning)
        yield


@pytest.mark.parametrize("block_size", [1, 16, 256])
@pytest.mark.parametrize("batch, context", [(1, 900), (7, 40), (64, 64 * 700), (256, 256 * 1500)])
def test_decode_reads_the_kv_cache_at_the_factor_of_the_run_block_size(
    true_profile, block_size, batch, context
):
    """Worked out by hand (synthetic_steps' formula, the KV terms times the factor): a run at
    block 1 and one at 256 price the same decode run apart by exactly their factors."""
    model = ProfileCostModel(with_table(true_profile), SPEC, block_size)
    steps = 5
    contexts = [context + batch * i for i in range(steps)]
    coef = scaled(FACTORS[str(block_size)])
    expected = [decode_step_s(coef, [c / batch] * batch) for c in contexts]
    np.testing.assert_allclose(model.decode_times(batch, context, steps), expected, rtol=1e-12)


def test_only_the_kv_reading_part_of_a_decode_step_changes_with_the_block_size(true_profile):
    doc = with_table(true_profile)

    def price(block_size: int, context: int) -> float:
        return ProfileCostModel(doc, SPEC, block_size).decode_times(32, context, 1)[0]

    assert price(1, 0) == price(256, 0) == price(16, 0)  # weights, rows, host and engine alike
    kv_part = {block: price(block, 32 * 1000) - price(block, 0) for block in (1, 256)}
    assert kv_part[1] / kv_part[256] == pytest.approx(2.0 / 1.25, rel=1e-12)


def test_a_mixed_step_reads_its_decodes_context_at_the_factor_too(true_profile):
    new, cached, contexts = 300, 100, [700, 1200, 90]
    tokens = np.array([new, 1, 1, 1])
    lens = np.array([new + cached, *contexts])
    priced = ProfileCostModel(with_table(true_profile), SPEC, 1, engine=False).mixed_time(tokens, lens)
    assert priced == pytest.approx(mixed_step_s(scaled(2.0), new, cached, contexts, token_table_s), rel=1e-12)


def test_a_block_size_the_table_lacks_is_priced_as_measured(true_profile):
    doc = with_table(true_profile)
    at_8, at_16 = (ProfileCostModel(doc, SPEC, b).decode_times(64, 64 * 500, 3) for b in (8, 16))
    np.testing.assert_array_equal(at_8, at_16)


def test_the_cached_decode_line_holds_the_factor(true_profile):
    """The simulator prices a decode run from a line cached per batch size: the factor is in it,
    not applied per step."""
    model = ProfileCostModel(with_table(true_profile), SPEC, 1)
    model.decode_times(SIZES[3], 5000, 2)
    _, per_token, per_partition, _, _ = model._lines[SIZES[3]]
    assert per_token == 2.0 * TRUE["decode"]["context"]
    assert per_partition == 2.0 * TRUE["decode"]["partition"]


# -- which block sizes warn ---------------------------------------------------------------------


def default_cost_model(monkeypatch, tmp_path, doc: dict, block_size: int):
    """The cost model a run at ``block_size`` gets when ``doc`` is the shipped profile."""
    monkeypatch.setattr("kvsim.cost.profile.SHIPPED_DIR", tmp_path)
    (tmp_path / f"{doc['name']}.json").write_text(json.dumps(doc))
    config = SimConfig(model="opt-13b", gpu="h100-sxm-80gb", block_size=block_size)
    return select_cost_model(config, load_model("opt-13b"), load_gpu("h100-sxm-80gb"))


@pytest.mark.parametrize("block_size", [1, 16, 256])
def test_a_measured_block_size_does_not_warn(monkeypatch, tmp_path, synthetic_profile, block_size):
    with warnings.catch_warnings():
        warnings.simplefilter("error", BlockSizeWarning)
        default_cost_model(monkeypatch, tmp_path, with_table(synthetic_profile), block_size)


@pytest.mark.parametrize("block_size", [8, 12])
def test_an_unmeasured_block_size_warns_naming_the_measured_ones(
    monkeypatch, tmp_path, synthetic_profile, block_size
):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        default_cost_model(monkeypatch, tmp_path, with_table(synthetic_profile), block_size)
    assert [w.category for w in caught] == [BlockSizeWarning]
    message = str(caught[0].message)
    assert f"not the run's {block_size}" in message and "measured at block sizes 1, 16, 256" in message


def test_a_named_profile_runs_at_its_measured_block_sizes_and_refuses_others(tmp_path, synthetic_profile):
    path = write_profile(tmp_path, with_table(synthetic_profile))
    for block_size in (1, 256):
        config = SimConfig(gpu="h100-sxm-80gb", profile=str(path), block_size=block_size)
        with warnings.catch_warnings():
            warnings.simplefilter("error", BlockSizeWarning)
            select_cost_model(config, load_model("opt-13b"), load_gpu("h100-sxm-80gb"))
    assert_refused_by_run(path, "measured at block sizes 1, 16, 256", "--block-size", "8")


# -- the table through refits and transfers ---------------------------------------------------------


def test_a_refit_keeps_the_table(synthetic_profile):
    doc = with_table(synthetic_profile)
    assert refit(doc, SPEC, BUILTIN_GPUS["h100-sxm-80gb"])["decode_block_size"] == doc["decode_block_size"]


def test_a_derived_profile_keeps_the_table_as_the_same_ratios(synthetic_profile):
    doc = with_table(synthetic_profile)
    derived = validate(derive_profile(doc, BUILTIN_GPUS["a100-40gb"]), "derived")
    assert derived["decode_block_size"] == doc["decode_block_size"]


def test_a_derived_profile_takes_the_table_of_another_profile_of_the_model(synthetic_profile):
    """The source measured none (an H100 profile): the table measured with another GPU's
    profile of the same model, which says where it came from."""
    other = with_table(changed(synthetic_profile, ("name",), "opt-13b@h200-141gb"))
    derived = derive_profile(synthetic_profile, BUILTIN_GPUS["a100-40gb"], block_sizes=other)
    assert derived["decode_block_size"]["factors"] == FACTORS
    assert derived["decode_block_size"]["profile"] == "opt-13b@h200-141gb"


def test_a_table_of_another_model_or_none_is_not_taken(synthetic_profile):
    other_model = with_table(changed(synthetic_profile, ("model", "num_layers"), 20))
    with pytest.raises(KvsimError, match="measured for opt-13b"):
        derive_profile(synthetic_profile, BUILTIN_GPUS["a100-40gb"], block_sizes=other_model)
    with pytest.raises(KvsimError, match="no decode_block_size table"):
        derive_profile(synthetic_profile, BUILTIN_GPUS["a100-40gb"], block_sizes=synthetic_profile)


def test_transfer_command_refuses_a_bad_table_source_in_one_line(tmp_path, synthetic_profile, capsys):
    from kvsim.calibration.transfer import main

    source = write_profile(tmp_path, synthetic_profile)
    with pytest.raises(SystemExit) as exit:
        main([str(source), "a100-40gb", "--block-sizes-from", str(source), "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and len(err.splitlines()) == 1 and "no decode_block_size table" in err


# -- bad tables -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "table",
    [
        "fast",
        {"shapes": [[4, 2048]]},  # no factors
        {"factors": {}},
        {"factors": {"16": 1.0, "0": 1.5}},  # no such block size
        {"factors": {"16": 1.0, "512": 1.5}},  # beyond the largest a run may use
        {"factors": {"16": 1.0, "08": 1.5}},  # 8, written two ways
        {"factors": {"16": 1.0, "1": 0.0}},  # decode attention for free
        {"factors": {"16": 1.0, "1": -2.0}},
        {"factors": {"16": 1.0, "1": "2"}},
        {"factors": {"16": 1.0, "1": True}},
        {"factors": {"1": 2.0}},  # not at the profile's own block size
        {"factors": {"16": 1.1, "1": 2.0}},  # its own block size is what the fit priced
    ],
)
def test_a_bad_table_is_refused_in_one_line(tmp_path, synthetic_profile, table):
    path = write_profile(tmp_path, changed(synthetic_profile, ("decode_block_size",), table))
    assert_refused_by_run(path, "decode_block_size")


def test_a_factor_that_is_not_finite_is_refused(tmp_path, synthetic_profile):
    path = write_profile(tmp_path, with_table(synthetic_profile, {"16": 1.0, "1": float("inf")}))
    assert_refused_by_run(path, "decode_block_size.factors.1")


# -- the factors from the kernel's times ----------------------------------------------------------


def test_factors_are_the_mean_over_shapes_of_the_time_over_the_reference():
    seconds = {1: [3e-4, 4e-3], 16: [1e-4, 2e-3], 64: [1e-4, 1e-3]}
    factors = block_size_factors(seconds, 16)
    assert factors == {1: pytest.approx((3 + 2) / 2), 16: 1.0, 64: pytest.approx((1 + 0.5) / 2)}


def test_block_sizes_only_adds_the_table_and_changes_nothing_else(
    monkeypatch, tmp_path, synthetic_profile, cuda_h100
):
    """`simcli calibrate --block-sizes-only --profile P --out Q` without a GPU: the measurement
    faked, the plumbing real."""
    from typer.testing import CliRunner

    from kvsim.cli import app

    table = with_table(synthetic_profile)["decode_block_size"]
    asked = []

    def measure(spec, reference, graphs, log, by):
        asked.append((spec.name, reference, graphs))
        return table

    monkeypatch.setattr("kvsim.calibration.block_size.measure_block_sizes", measure)
    source, out = write_profile(tmp_path, synthetic_profile), tmp_path / "with-table.json"
    args = ["calibrate", "--block-sizes-only", "--profile", str(source), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert asked == [("opt-13b", 16, True)]
    written = json.loads(out.read_text())
    assert written.pop("decode_block_size") == table
    assert written == json.loads(source.read_text())


def test_the_paper_says_where_the_block_size_sweep_is_measured_on_the_kernel_side(
    monkeypatch, tmp_path, synthetic_profile
):
    from kvsim.experiments.paper import base_config, kernel_side_text

    monkeypatch.setattr("kvsim.cost.profile.SHIPPED_DIR", tmp_path)
    (tmp_path / "opt-13b@a100-40gb.json").write_text(
        json.dumps(derive_profile(with_table(synthetic_profile), BUILTIN_GPUS["a100-40gb"]))
    )
    measured = kernel_side_text(base_config(), (1, 16, 256))
    assert "is measured" in measured and "x2.00" in measured and "x1.25 at 256" in measured
    assert "synthetic" in measured  # the device the table was measured on
    assert "Not faithful on the kernel side at block size 8:" in kernel_side_text(base_config(), (1, 8, 16))
