"""Cost-model behaviour that mutation testing found unchecked (docs/testing.md): the range
check of the roofline's efficiencies, what a profile cost model reports about itself in
summary.json, and its warnings when a step or a block move lies beyond the measured grid.
"""

import numpy as np
import pytest

from kvsim.cost.profile import load_profile, shipped_profile
from kvsim.cost.profile_model import OutOfRangeWarning, ProfileCostModel
from kvsim.cost.roofline import RooflineAssumptions
from kvsim.models import load_model

EFFICIENCIES = ("prefill_flops_efficiency", "memory_efficiency")


@pytest.mark.parametrize("name", EFFICIENCIES)
def test_an_efficiency_of_one_is_the_physical_limit_and_allowed(name):
    """Efficiency 1 is the datasheet rate itself (the profile model's physical floor uses it)."""
    assert getattr(RooflineAssumptions(**{name: 1.0}), name) == 1.0


@pytest.mark.parametrize("name", EFFICIENCIES)
@pytest.mark.parametrize("value", [0.0, -0.5, 1.01])
def test_an_efficiency_outside_zero_to_one_is_refused_by_name(name, value):
    """No efficiency can beat the datasheet (> 1) and a zero one would make steps endless;
    the error names the assumption at fault, the other one being valid."""
    with pytest.raises(ValueError, match=f"^{name} must be in"):
        RooflineAssumptions(**{name: value})


def test_describe_reports_the_profile_it_priced_with():
    """summary.json's record of a profile: which one (name, kind, file given), for which GPU
    and device, when it was made, at which block size, and its fit and coefficients."""
    path = shipped_profile("opt-13b", "h100-sxm-80gb")
    doc = load_profile(path)
    described = ProfileCostModel(doc, load_model("opt-13b"), block_size=16, source="given.json").describe()
    assert described["name"] == f"profile:{doc['name']}"
    assert described["kind"] == doc["provenance"]["kind"] and described["provenance"] == doc["provenance"]
    assert described["source"] == "given.json"
    assert described["gpu"] == doc["gpu"]["name"]
    assert described["device"] == doc["environment"]["device_name"]
    assert described["created"] == doc["created"] and described["block_size"] == doc["block_size"]
    assert described["fit_report"] == doc["fit_report"]
    assert described["coefficients"] == doc["coefficients"]


@pytest.mark.parametrize("kind", ["copy", "swap"])
def test_copies_and_swaps_beyond_the_measured_blocks_warn(kind):
    """Block moves are priced by a line fitted over the measured range of block counts;
    beyond it the price is an extrapolation, and the run says so (once), naming the move."""
    doc = load_profile(shipped_profile("opt-13b", "h100-sxm-80gb"))
    model = ProfileCostModel(doc, load_model("opt-13b"), block_size=doc["block_size"])
    price = model.copy_time if kind == "copy" else model.swap_time
    largest = doc["grid"][kind]["blocks"][1]
    beyond = f"{kind} blocks {2 * largest} is beyond the measured {largest}"
    with pytest.warns(OutOfRangeWarning, match=beyond):
        price(2 * largest)


@pytest.mark.filterwarnings("ignore:.*engine seqs")  # the batch is beyond the engine's grid too
def test_steps_beyond_the_measured_grid_warn_by_axis():
    """A decode batch or a prefill's token count beyond what calibration measured is priced
    by extrapolation; each is reported, naming the step kind, the axis and both values."""
    doc = load_profile(shipped_profile("opt-13b", "h100-sxm-80gb"))
    model = ProfileCostModel(doc, load_model("opt-13b"), block_size=doc["block_size"])
    batch = doc["grid"]["decode"]["batch"][1]
    with pytest.warns(OutOfRangeWarning, match=f"decode batch {batch + 1} is beyond the measured {batch}"):
        model.decode_times(batch + 1, total_context=batch + 1, steps=1)
    tokens = doc["grid"]["prefill"]["tokens"][1]
    beyond = f"prefill tokens {tokens + 1} is beyond the measured {tokens}"
    with pytest.warns(OutOfRangeWarning, match=beyond):
        model.prefill_time(np.array([tokens + 1]), np.array([tokens + 1]))
