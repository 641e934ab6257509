"""Profiles and GPU specs that parse but would misprice a run (infinite, NaN or negative
costs, unusable GPU rates, another block size or tensor-parallel degree) are refused: one
line on stderr naming the file and the field, exit status 2, no traceback. And a profile's
measured range, past which costs warn as extrapolated, is its fitted points' alone."""

import copy
import json
import warnings

import pytest
from typer.testing import CliRunner

from kvsim.calibration.fit import refit
from kvsim.cli import app
from kvsim.config import SimConfig
from kvsim.cost import BlockSizeWarning, select_cost_model
from kvsim.cost.profile import load_profile, measured_block_sizes, shipped_profile, shipped_profiles
from kvsim.cost.profile_model import OutOfRangeWarning, ProfileCostModel, gpu_of
from kvsim.hardware import BUILTIN_GPUS, load_gpu
from kvsim.models import ModelSpec, load_model

SMALL = ["--num-requests", "5", "--rate", "4"]
H100 = BUILTIN_GPUS["h100-sxm-80gb"]  # the synthetic profile's GPU


def changed(doc: dict, path: tuple, value) -> dict:
    """A deep copy of ``doc`` with the field at ``path`` (keys and list indices) set to ``value``."""
    doc = copy.deepcopy(doc)
    *parents, last = path
    target = doc
    for key in parents:
        target = target[key]
    target[last] = value
    return doc


def refusal(*args: str) -> str:
    """``simcli run`` with ``args``: it must exit 2 with one stderr line and no traceback; the line."""
    result = CliRunner().invoke(app, ["run", *SMALL, *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def write_profile(tmp_path, doc: dict):
    """``doc`` as a file (json writes NaN and infinities as NaN and Infinity, as it reads them)."""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    return path


def assert_refused_by_run(path, field: str, *args: str) -> None:
    line = refusal("--gpu", "h100-sxm-80gb", "--profile", str(path), *args)
    assert str(path) in line and field in line, line


@pytest.mark.parametrize(
    "path, value, field",
    [
        (("coefficients", "decode", "context"), float("inf"), "coefficients.decode.context"),
        (("coefficients", "decode", "fixed"), float("nan"), "coefficients.decode.fixed"),
        (("coefficients", "host", "batch"), -1e-6, "coefficients.host.batch"),  # cheaper with the batch
        (("coefficients", "swap", "blocks"), "1e-4", "coefficients.swap.blocks"),
        (("prefill_tokens", "seconds", -1), float("inf"), "prefill_tokens.seconds"),
        (("prefill_tokens", "weights_s"), -0.001, "weights_s"),
        (("grid", "decode", "total_context", 1), float("inf"), "grid.decode.total_context"),  # never warns
        (("grid", "engine", "seqs", 0), -1, "grid.engine.seqs"),
        (("tensor_parallel",), 0, "tensor_parallel"),
        (("block_size",), True, "block_size"),  # a bool is not a block size, though Python calls it 1
        # Not priced, but a NaN anywhere says the file is broken.
        (("measurements", "decode", 0, "wall_s"), float("nan"), "measurements.decode[0].wall_s"),
    ],
)
def test_profile_with_an_unusable_number_is_refused(tmp_path, synthetic_profile, path, value, field):
    assert_refused_by_run(write_profile(tmp_path, changed(synthetic_profile, path, value)), field)


def test_overflowing_literal_is_refused(tmp_path, synthetic_profile):
    """1e999 is valid JSON that Python reads as infinity."""
    path = tmp_path / "bad.json"
    text = json.dumps(changed(synthetic_profile, ("coefficients", "copy", "blocks"), 12345.5))
    path.write_text(text.replace("12345.5", "1e999"))
    assert_refused_by_run(path, "coefficients.copy.blocks")


BAD_GPU_FIGURES = [
    ("hbm_bandwidth", "3.35e12"),  # was a TypeError in the roofline floor
    ("pcie_bandwidth", 0),  # was a ZeroDivisionError when pricing a swap
    ("fp16_flops", -989e12),  # would take the compute floor away without a word
    ("memory_bytes", True),
    ("nvlink_bandwidth", -1.0),
    ("name", 7),
    ("hbm_bandwidth", float("nan")),
    ("fp16_flops", float("inf")),
]


@pytest.mark.parametrize("field, value", BAD_GPU_FIGURES)
def test_profile_with_an_unusable_gpu_figure_is_refused(tmp_path, synthetic_profile, field, value):
    doc = changed(synthetic_profile, ("gpu", field), value)
    assert_refused_by_run(write_profile(tmp_path, doc), f"gpu.{field}")


def test_profile_gpu_without_nvlink_is_refused(tmp_path, synthetic_profile):
    """Every GPUSpec field must be there: one missing used to crash building the floor."""
    doc = copy.deepcopy(synthetic_profile)
    del doc["gpu"]["nvlink_bandwidth"]
    assert_refused_by_run(write_profile(tmp_path, doc), "nvlink_bandwidth")


def gpu_file(tmp_path, **fields):
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps({**H100.to_dict(), "name": "my-gpu", **fields}))
    return path


@pytest.mark.parametrize("field, value", BAD_GPU_FIGURES)
def test_gpu_file_with_an_unusable_figure_is_refused(tmp_path, field, value):
    path = gpu_file(tmp_path, **{field: value})
    line = refusal("--gpu", str(path))
    assert str(path) in line and field in line, line


def test_gpu_file_that_is_not_an_object_is_refused(tmp_path):
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps(sorted(H100.to_dict())))  # the right names, as a list
    assert str(path) in refusal("--gpu", str(path))


def test_gpu_without_nvlink_is_accepted(tmp_path):
    """A PCIe card has no NVLink: 0 is a real figure, not a defect."""
    assert load_gpu(str(gpu_file(tmp_path, nvlink_bandwidth=0))).nvlink_bandwidth == 0


def test_profile_of_another_tensor_parallel_degree_is_refused(tmp_path, synthetic_profile):
    """A profile prices the shard of the degree it measured: a run at another degree (here
    one GPU per replica, the profile a shard of two) would misprice every step."""
    path = write_profile(tmp_path, changed(synthetic_profile, ("tensor_parallel",), 2))
    assert_refused_by_run(
        path, "measured a shard of tensor parallelism 2, but the run uses --tensor-parallel 1"
    )


def test_named_profile_of_another_block_size_is_refused(tmp_path, synthetic_profile):
    path = write_profile(tmp_path, synthetic_profile)  # measured at block size 16
    assert_refused_by_run(path, "block_size", "--block-size", "8")


def default_cost_model(block_size: int):
    config = SimConfig(block_size=block_size)
    return select_cost_model(config, load_model(config.model), load_gpu(config.gpu))


def test_default_profile_of_another_block_size_warns_once_and_runs():
    """Block-size sweeps run on the shipped profiles (fitted at 16): at a block size whose decode
    attention they did not measure (12: no power of two), they warn, in one line saying where
    it was measured, and go on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cost = default_cost_model(12)
    assert [w.category for w in caught] == [BlockSizeWarning]
    message = str(caught[0].message)
    sizes = ", ".join(map(str, measured_block_sizes(cost.doc)))
    assert "\n" not in message and "block_size is 16" in message and "measured at block size" in message
    assert sizes in message and isinstance(cost, ProfileCostModel) and cost.source in message


def test_default_profile_at_its_block_size_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", BlockSizeWarning)
        assert isinstance(default_cost_model(16), ProfileCostModel)


def training_spans(measurements: dict) -> dict:
    """[min, max] of each warned-about axis over the points the fit used: the prefill token
    table and the non-held-out grid points."""
    span = lambda values: [min(values), max(values)]
    decode = [p for p in measurements["decode"] if not p["heldout"]]
    prefill = [p for p in measurements["prefill"] if not p["heldout"]]
    return {
        "decode": {
            "batch": span([p["batch"] for p in decode]),
            "total_context": span([p["total_context"] for p in decode]),
        },
        "prefill": {
            "tokens": span([sum(p["new_tokens"]) for p in prefill + measurements["prefill_tokens"]]),
            "seqs": span([len(p["new_tokens"]) for p in prefill]),
            "context": span([sum(p["new_tokens"]) + sum(p["cached_tokens"]) for p in prefill]),
        },
    }


def test_heldout_points_do_not_widen_the_measured_range(synthetic_profile):
    """Held-out points test the fit; beyond the fitted points the cost is an extrapolation
    and must warn, wherever held-out points lie."""
    doc = copy.deepcopy(synthetic_profile)
    points = doc["measurements"]
    far_decode = max((p for p in points["decode"] if p["heldout"]), key=lambda p: p["total_context"])
    far_prefill = max((p for p in points["prefill"] if p["heldout"]), key=lambda p: sum(p["new_tokens"]))
    expected = training_spans(points)
    beyond = 2 * expected["decode"]["total_context"][1]
    points["decode"].append(
        {**far_decode, "batch": 300, "total_context": beyond, "max_context": beyond // 300}
    )
    points["prefill"].append({**far_prefill, "new_tokens": [4000] * 40, "cached_tokens": [9000] * 40})
    spec = ModelSpec(**doc["model"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutOfRangeWarning)  # the report predicts the far points
        refitted = refit(doc, spec, gpu_of(doc))
    for kind, axes in expected.items():
        for axis, span in axes.items():
            assert refitted["grid"][kind][axis] == span, f"{kind}.{axis}"
    model = ProfileCostModel(refitted, spec, doc["block_size"])
    with pytest.warns(OutOfRangeWarning, match="total context"):
        model.decode_times(8, expected["decode"]["total_context"][1] + 1, 1)


def test_shipped_profiles_range_over_their_fitted_points():
    """A derived profile keeps the range of the measured one it comes from."""
    for path in shipped_profiles():
        doc = measured = load_profile(path)
        if doc["provenance"]["kind"] == "derived":
            measured = load_profile(shipped_profile(*doc["provenance"]["from"].split("@")))
        for kind, axes in training_spans(measured["measurements"]).items():
            for axis, span in axes.items():
                assert doc["grid"][kind][axis] == span, f"{path.name} {kind}.{axis}"


def test_a_shard_profile_prices_one_rank_of_its_degree(tmp_path, synthetic_profile):
    """A profile of OPT-13B's shard over 2 GPUs (as `simcli calibrate --tp 2` writes it)
    prices a --tp 2 run's compute, the ring's collectives added; it is refused at --tp 1."""
    shard = load_model("opt-13b").shard(2)
    doc = copy.deepcopy(synthetic_profile)
    doc["tensor_parallel"] = 2
    doc["model"] = {**doc["model"], "name": shard.name, "num_heads": shard.num_heads}
    doc["model"].update(num_kv_heads=shard.num_kv_heads, intermediate_size=shard.intermediate_size)
    doc["model"]["vocab_size"] = shard.vocab_size
    path = write_profile(tmp_path, doc)
    config = SimConfig(model="opt-13b", gpu="h100-sxm-80gb", tensor_parallel=2, profile=str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cost = select_cost_model(config, load_model("opt-13b"), H100)
    assert isinstance(cost.compute, ProfileCostModel) and "ring collectives over 2 GPUs" in cost.name
    assert_refused_by_run(
        path, "measured a shard of tensor parallelism 2, but the run uses --tensor-parallel 1"
    )


def test_refitting_a_shard_profile_keeps_its_tensor_parallel_degree():
    """A shard's refit is the same shard's profile: its degree and name come back with it (a
    refit that said TP 1 would be refused by every run at --tp 4)."""
    doc = load_profile(shipped_profile("llama-2-70b-tp4", "h200-141gb"))
    refitted = refit(doc, ModelSpec(**doc["model"]), gpu_of(doc))
    assert (refitted["tensor_parallel"], refitted["name"]) == (4, doc["name"])
