"""Generated arrivals realise their rate and burstiness; seeds make everything repeatable."""

import numpy as np
import pytest

from kvsim.workloads import build_trace


def _gaps(trace):
    return np.diff(trace.arrival_time)


def test_poisson_realises_its_rate():
    trace = build_trace("sharegpt", num_requests=20_000, rate=4.0)
    assert trace.arrival_time[0] == 0.0
    assert np.all(_gaps(trace) >= 0)
    assert trace.stats()["offered_rate"] == pytest.approx(4.0, rel=0.03)
    assert _gaps(trace).std() / _gaps(trace).mean() == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("cv", [0.5, 2.0, 4.0])
def test_gamma_realises_its_cv_and_rate(cv):
    trace = build_trace("sharegpt", num_requests=50_000, rate=2.0, arrival="gamma", burstiness_cv=cv)
    gaps = _gaps(trace)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.1)
    assert 1 / gaps.mean() == pytest.approx(2.0, rel=0.05)


def test_duration_bounds_the_trace():
    trace = build_trace("alpaca", duration=500.0, rate=3.0)
    assert trace.arrival_time.max() < 500.0
    assert len(trace) == pytest.approx(1500, rel=0.1)


@pytest.mark.parametrize(("num_requests", "duration", "expected"), [(100, 1000.0, 100), (10_000, 10.0, None)])
def test_the_first_bound_reached_ends_the_trace(num_requests, duration, expected):
    trace = build_trace("sharegpt", num_requests=num_requests, duration=duration, rate=1.0)
    if expected:
        assert len(trace) == expected
    else:
        assert len(trace) < 100 and trace.arrival_time.max() < duration


@pytest.mark.parametrize("source", ["sharegpt", "alpaca"])
def test_same_seed_same_trace(source):
    kwargs = dict(num_requests=5000, rate=2.0, arrival="gamma", burstiness_cv=3.0, seed=7)
    a, b = build_trace(source, **kwargs), build_trace(source, **kwargs)
    for column in ("arrival_time", "prompt_len", "output_len"):
        np.testing.assert_array_equal(getattr(a, column), getattr(b, column))


def test_another_seed_another_trace():
    a = build_trace("sharegpt", num_requests=1000, rate=2.0, seed=0)
    b = build_trace("sharegpt", num_requests=1000, rate=2.0, seed=1)
    assert not np.array_equal(a.prompt_len, b.prompt_len)
    assert not np.array_equal(a.arrival_time, b.arrival_time)


def test_the_rate_does_not_change_the_lengths():
    slow = build_trace("sharegpt", num_requests=3000, rate=0.5)
    fast = build_trace("sharegpt", num_requests=3000, rate=8.0, arrival="gamma", burstiness_cv=2.0)
    np.testing.assert_array_equal(slow.prompt_len, fast.prompt_len)
    np.testing.assert_array_equal(slow.output_len, fast.output_len)


def test_a_longer_trace_extends_a_shorter_one():
    """Across block boundaries too: the same seed gives the same first requests at any length."""
    short = build_trace("sharegpt", duration=2000.0, rate=5.0)
    long = build_trace("sharegpt", duration=6000.0, rate=5.0)
    assert len(short) > 8192  # more than one block of draws
    for column in ("arrival_time", "prompt_len", "output_len"):
        np.testing.assert_array_equal(getattr(short, column), getattr(long, column)[: len(short)])


def test_no_rate_means_an_offline_batch():
    trace = build_trace("alpaca", num_requests=50)
    assert len(trace) == 50 and not trace.arrival_time.any()
