"""Interference between co-running kernels: the rule on the simulated GPU, and its fit to a
co-location benchmark recovering what made the benchmark."""

from dataclasses import replace

import pytest
from gpushare_chains import SMALL_GPU, chain, kernel

from kvsim.gpushare.interference import colocated_latency, fit_interference

# Two kernels of 2 blocks of half an SM: two copies fit side by side on the four SMs.
PAIR = chain("pair", kernel(100, 2), kernel(50, 2))


def test_interference_slows_only_kernels_that_run_beside_others():
    alone = colocated_latency(PAIR, SMALL_GPU, 1)
    assert colocated_latency(replace(PAIR, interference=2.0), SMALL_GPU, 1) == pytest.approx(alone)
    assert colocated_latency(PAIR, SMALL_GPU, 2) == pytest.approx(alone)  # room for both: no slowdown
    slowed = colocated_latency(replace(PAIR, interference=2.0), SMALL_GPU, 2)
    # Each copy holds a quarter of the threads: a block placed beside the other copy runs 1.5
    # times as long. A's first kernel is placed on an empty GPU (100 us), its second beside B's
    # first (75 us): 175. B's both run beside A's: 150 + 75 = 225.
    assert slowed == pytest.approx((175e-6 + 225e-6) / 2)


def test_the_fit_recovers_the_interference_that_made_the_benchmark():
    made = replace(PAIR, interference=1.3)
    # A benchmark whose machine ran everything 10% slower than the profile: only slowdowns count.
    measured = {k: 1.1 * colocated_latency(made, SMALL_GPU, k) for k in (1, 2, 3, 4)}
    interference, errors = fit_interference(PAIR, SMALL_GPU, measured)
    assert interference == pytest.approx(1.3, abs=0.01)
    assert all(abs(e) < 1e-3 for e in errors.values())


def test_the_fit_needs_the_model_alone_and_one_count_above():
    with pytest.raises(ValueError, match="one copy alone"):
        fit_interference(PAIR, SMALL_GPU, {2: 1e-3, 4: 2e-3})
