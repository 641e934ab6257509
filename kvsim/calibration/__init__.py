"""Step-cost models: measured (or derived) profiles, and the analytic roofline as fallback."""

from __future__ import annotations

import sys

from kvsim.calibration.cost_model import CostModel
from kvsim.calibration.profile import check_model, load_profile, shipped_profile
from kvsim.calibration.profile_model import ProfileCostModel
from kvsim.calibration.roofline import RooflineCostModel
from kvsim.errors import KvsimError


def select_cost_model(config, model, gpu) -> CostModel:
    """The cost model a run uses: ``config.profile`` if given, else the shipped profile for
    this model and GPU, else the roofline (with a note saying so)."""
    path = config.profile or shipped_profile(model.name, gpu.name)
    if path is None:
        print(f"note: no profile for {model.name} on {gpu.name}; using the analytic roofline "
              "(`simcli calibrate` measures one)", file=sys.stderr)
        return RooflineCostModel(model, gpu, config.block_size)
    doc = load_profile(path)
    check_model(doc, model, str(path))
    if doc["gpu"]["name"] != gpu.name:
        raise KvsimError(f"profile {path} prices {doc['gpu']['name']}, but the run is on {gpu.name} "
                         f"(pass --gpu {doc['gpu']['name']}, or derive a profile for {gpu.name} "
                         "with python -m kvsim.calibration.transfer)")
    return ProfileCostModel(doc, model, config.block_size, source=str(path))
