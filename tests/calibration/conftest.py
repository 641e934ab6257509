"""Synthetic profiles for the calibration tests (the data: synthetic_steps.py)."""

import copy

import pytest
from synthetic_steps import TABLE_TOKENS, TRUE, WEIGHT_READ_S, fit, synthetic_raw, token_table_s


@pytest.fixture(scope="session")
def raw_points() -> dict:
    return synthetic_raw()


@pytest.fixture(scope="session")
def synthetic_profile(raw_points) -> dict:
    """A measured H100 profile of opt-13b, fitted from noisy synthetic measurements."""
    return fit(raw_points)


@pytest.fixture(scope="session")
def true_profile(synthetic_profile) -> dict:
    """The synthetic profile with the true coefficients and token table in place of the fitted
    ones: its every price can be worked out by hand from synthetic_steps' formulas."""
    doc = copy.deepcopy(synthetic_profile)
    doc["coefficients"] = copy.deepcopy(TRUE)
    doc["prefill_tokens"] = {
        "tokens": TABLE_TOKENS,
        "seconds": [token_table_s(t) for t in TABLE_TOKENS],
        "weights_s": WEIGHT_READ_S,
    }
    return doc


@pytest.fixture
def cuda_h100(monkeypatch):
    """CUDA present and an H100 80GB as far as `simcli calibrate` can tell (no GPU touched)."""
    from types import SimpleNamespace

    import torch

    monkeypatch.setattr("kvsim.calibration.calibrate.require_cuda", lambda command="calibrate": None)
    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda i: SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=80 << 30),
    )
