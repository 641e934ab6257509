"""Requests longer than the model's context: find them, or shrink them the way Vidur does.

The engine rejects over-length requests by default; clipping is the opt-in alternative
that reproduces Vidur's setting (its trace generator clips every request to
``max_tokens``), so that kvsim and Vidur simulate the same requests side by side.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from kvsim.errors import KvsimError
from kvsim.workloads.trace import Trace


def over_length_mask(trace: Trace, max_len: int) -> np.ndarray:
    """True for the requests whose prompt + output exceeds ``max_len`` tokens."""
    return trace.prompt_len + trace.output_len > max_len


def clip_to_context(trace: Trace, max_len: int) -> Trace:
    """Shrink over-length requests in proportion so that prompt + output <= ``max_len``.

    Vidur's rule: a request ``excess`` tokens too long loses ``ceil(excess * prompt / total)``
    prompt tokens and ``ceil(excess * output / total)`` output tokens, each kept >= 1.
    Integer arithmetic here, so no float rounding can leave a request one token over.
    Requests that fit are unchanged.
    """
    if max_len < 2:
        raise KvsimError(
            f"cannot clip requests to {max_len} tokens: a request needs at least 2 (1 prompt, 1 output)"
        )
    prompt, output = trace.prompt_len, trace.output_len
    total = prompt + output
    excess = np.maximum(total - max_len, 0)
    # ceil(a / b) for positive b as -((-a) // b), exactly, in int64
    new_prompt = np.maximum(prompt + (-excess * prompt) // total, 1)
    new_output = np.maximum(output + (-excess * output) // total, 1)
    return replace(trace, prompt_len=new_prompt, output_len=new_output)
