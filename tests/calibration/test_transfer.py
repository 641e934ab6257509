"""The cross-GPU transfer rule, on a synthetic profile."""

import pytest

from kvsim.calibration.profile import TERMS, validate
from kvsim.calibration.transfer import derive_profile, transfer_error
from kvsim.hardware import BUILTIN_GPUS


def test_each_class_scales_by_its_datasheet_ratio(synthetic_profile):
    h100, a100 = BUILTIN_GPUS["h100-sxm-80gb"], BUILTIN_GPUS["a100-40gb"]
    derived = validate(derive_profile(synthetic_profile, a100), "derived")
    ratio = {"fixed": 1.0, "compute": h100.fp16_flops / a100.fp16_flops,
             "memory": h100.hbm_bandwidth / a100.hbm_bandwidth,
             "pcie": h100.pcie_bandwidth / a100.pcie_bandwidth}
    for kind, terms in TERMS.items():
        for term, cls in terms:
            assert derived["coefficients"][kind][term] == pytest.approx(
                synthetic_profile["coefficients"][kind][term] * ratio[cls])
    source, table = synthetic_profile["prefill_tokens"], derived["prefill_tokens"]
    assert table["weights_s"] == pytest.approx(source["weights_s"] * ratio["memory"])
    rest = source["seconds"][0] - source["weights_s"]  # launches and host work: kept
    assert table["seconds"][0] == pytest.approx(table["weights_s"] + rest)
    for new, old in zip(table["seconds"], source["seconds"]):  # what more tokens add is compute
        assert new - table["seconds"][0] == pytest.approx((old - source["seconds"][0]) * ratio["compute"])
    assert derived["provenance"]["kind"] == "derived"
    assert derived["provenance"]["from"] == "opt-13b@h100-sxm-80gb"
    assert derived["name"] == "opt-13b@a100-40gb" and "measurements" not in derived


def test_transfer_to_the_same_gpu_is_exact(synthetic_profile):
    from kvsim.models import load_model

    errors = transfer_error(synthetic_profile, synthetic_profile, load_model("opt-13b"))
    assert all(e["max_ape"] < 1e-6 for e in errors.values())
