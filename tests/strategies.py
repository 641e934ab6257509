"""Hypothesis strategies shared by the property tests."""

import numpy as np
from hypothesis import strategies as st

from kvsim.workloads.trace import Trace


@st.composite
def random_traces(draw, max_requests: int, max_gap: float, max_len: int) -> Trace:
    """Up to ``max_requests`` requests with random gaps and prompt/output lengths."""
    n = draw(st.integers(1, max_requests))
    gaps = draw(st.lists(st.floats(0, max_gap), min_size=n, max_size=n))
    prompts = draw(st.lists(st.integers(1, max_len), min_size=n, max_size=n))
    outputs = draw(st.lists(st.integers(1, max_len), min_size=n, max_size=n))
    return Trace(
        "random", np.cumsum(gaps), np.array(prompts, dtype=np.int64), np.array(outputs, dtype=np.int64)
    )
