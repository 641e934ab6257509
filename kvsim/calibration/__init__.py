"""Step-cost models: the analytic roofline, and (later) measured profiles."""

from __future__ import annotations

from kvsim.calibration.cost_model import CostModel
from kvsim.calibration.roofline import RooflineCostModel


def select_cost_model(config, model, gpu) -> CostModel:
    """The cost model a run uses: the roofline until measured profiles exist."""
    return RooflineCostModel(model, gpu, config.block_size)
