"""Decoding with several sequences per request: parallel sampling (n) and beam search (width).

These are per-request columns of the trace, so the engine stays free of configuration:
``width`` (sequences in the group), ``beam`` (1 for beam search), and, when samples draw
their own lengths, ``sample_output_lens`` (one row of n lengths per request).
"""

from __future__ import annotations

import numpy as np

from kvsim.errors import KvsimError
from kvsim.workloads.trace import Trace

SAMPLE_LENGTHS_STREAM = 8  # random stream for independent per-sample lengths


def add_sampling(
    trace: Trace, n: int = 1, beam_width: int = 1, independent_lengths: bool = False, seed: int = 0
) -> Trace:
    """Give every request ``n`` parallel samples or ``beam_width`` beams.

    By default every sample generates the request's (forced) output length, as in the
    paper. With ``independent_lengths`` each sample's length is an independent draw from
    the trace's own output lengths (its empirical marginal), capped so the request still
    fits as long as the trace's longest prompt + output; the request's ``output_len``
    becomes its longest sample's.
    """
    if n < 1:
        raise KvsimError(f"--n must be at least 1 (got {n})")
    if beam_width < 1:
        raise KvsimError(f"--beam-width must be at least 1 (got {beam_width})")
    if n > 1 and beam_width > 1:
        raise KvsimError("--n and --beam-width cannot both exceed 1 (choose sampling or beam search)")
    if independent_lengths and n == 1:
        raise KvsimError("--independent-sample-lengths needs --n above 1")
    width = max(n, beam_width)
    if width == 1:
        return trace
    extra = {
        **trace.extra,
        "width": np.full(len(trace), width, dtype=np.int64),
        "beam": np.full(len(trace), int(beam_width > 1), dtype=np.int64),
    }
    output = trace.output_len
    if independent_lengths:
        rng = np.random.default_rng([seed, SAMPLE_LENGTHS_STREAM])
        lengths = rng.choice(trace.output_len, size=(len(trace), n))
        cap = (trace.prompt_len + trace.output_len).max() - trace.prompt_len
        lengths = np.minimum(lengths, cap[:, None])
        extra["sample_output_lens"] = lengths
        output = lengths.max(axis=1)
    return Trace(trace.name, trace.arrival_time, trace.prompt_len, output, extra)
