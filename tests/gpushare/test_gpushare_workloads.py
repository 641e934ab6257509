"""Paella's workloads: the mixes as the issue gives them, log-normal gaps of the asked mean."""

import numpy as np
import pytest

from kvsim.errors import KvsimError
from kvsim.gpushare.workloads import MIXES, generate_jobs, load_mix


def test_mixes_are_distributions_with_a_cap_per_model():
    for mix in MIXES.values():
        assert sum(mix.probabilities) == pytest.approx(1.0, abs=1e-3)
        assert len(mix.models) == len(mix.probabilities) == len(mix.caps)


@pytest.mark.parametrize("sigma", [1.5, 2.0])
def test_gaps_are_log_normal_with_mean_one_over_rate(sigma):
    jobs = generate_jobs(MIXES["extremes"], rate=200.0, num_jobs=400_000, sigma=sigma, seed=1)
    gaps = np.diff(jobs.arrivals)
    assert jobs.arrivals[0] == 0 and (gaps > 0).all()
    assert np.log(gaps).std() == pytest.approx(sigma, rel=0.01)
    assert np.median(gaps) == pytest.approx(np.exp(np.log(1 / 200) - sigma**2 / 2), rel=0.02)
    assert gaps.mean() == pytest.approx(1 / 200, rel=0.1)


def test_models_follow_the_mix_and_do_not_depend_on_the_rate():
    mix = MIXES["paella-8"]
    slow = generate_jobs(mix, rate=10.0, num_jobs=200_000, sigma=1.5, seed=3)
    fast = generate_jobs(mix, rate=1000.0, num_jobs=200_000, sigma=1.5, seed=3)
    assert (slow.model_index == fast.model_index).all()
    shares = np.bincount(slow.model_index, minlength=len(mix.models)) / len(slow.model_index)
    assert shares == pytest.approx(np.array(mix.probabilities) / sum(mix.probabilities), abs=0.005)


def test_unknown_mix_is_refused():
    with pytest.raises(KvsimError, match="unknown mix"):
        load_mix("nine-models")
