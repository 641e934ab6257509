"""The ``fake_gpu`` fixture: a FakeGPU (fake_device.py) whose clock the executor reads."""

from types import SimpleNamespace

import pytest
from fake_device import FakeGPU


@pytest.fixture
def fake_gpu(monkeypatch):
    """``fake_gpu(cost, vocab_size)``: a FakeGPU charging ``cost``; while the test runs, the
    executor times its steps on that GPU's clock, so each step measures exactly the GPU work
    it asked for (scheduling and bookkeeping take no fake time)."""
    import kvsim.gpu.executor as executor_module  # imports torch: only once a test asks

    def make(cost, vocab_size: int) -> FakeGPU:
        gpu = FakeGPU(cost, vocab_size)
        monkeypatch.setattr(executor_module, "time", SimpleNamespace(perf_counter=lambda: gpu.now))
        return gpu

    return make
