"""The beam model's fit (kvsim/experiments/beam_fit.py) picks the grid point nearest the paper's
Fig. 15, and the defaults it ships are the same wherever the model is built."""

import pytest

from kvsim.config import SimConfig
from kvsim.experiments.beam_fit import FIT_SETTING, PAPER_BEAM_SAVING, BeamFit, fit_beam
from kvsim.policies.beam import BeamModel

SMALL = {**FIT_SETTING, "num_requests": 40}


def test_the_model_and_the_options_share_the_fitted_defaults():
    assert (BeamModel().stay, BeamModel().skew) == (SimConfig().beam_stay, SimConfig().beam_skew)


@pytest.fixture(scope="module")
def small_fit():
    return fit_beam(stays=(0.3, 0.95), skews=(0.5,), jobs=1, setting=SMALL)


def test_the_fit_keeps_the_point_with_the_least_error(small_fit):
    best, rows = small_fit
    by_point = {}
    for row in rows:
        by_point.setdefault((row["beam_stay"], row["beam_skew"]), {})[row["beam_width"]] = row[
            "sharing_saving_per_step"
        ]
    fits = [BeamFit(stay, skew, saving) for (stay, skew), saving in by_point.items()]
    assert len(fits) == 2 and best.rms == min(fit.rms for fit in fits)
    assert best.residuals == {w: best.saving[w] - PAPER_BEAM_SAVING[w] for w in PAPER_BEAM_SAVING}


def test_beams_that_stay_on_their_own_lineage_share_less(small_fit):
    _, rows = small_fit
    saving = {(row["beam_stay"], row["beam_width"]): row["sharing_saving_per_step"] for row in rows}
    for width in PAPER_BEAM_SAVING:
        assert saving[(0.95, width)] < saving[(0.3, width)]
    for stay in (0.3, 0.95):  # wider beams share more of what they hold
        assert saving[(stay, 2)] < saving[(stay, 4)] < saving[(stay, 6)]
