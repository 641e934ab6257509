"""Generated arrival times: a renewal process with gamma-distributed gaps.

Gaps have mean ``1 / rate`` and coefficient of variation ``cv``: shape ``1 / cv**2``,
scale ``cv**2 / rate``. ``cv = 1`` is the Poisson process, ``cv > 1`` is burstier (more
short gaps and a few long ones), ``cv < 1`` more regular. The first request arrives at
t = 0, as a benchmark client sends its first request at once, so a bursty trace does not
start with a long idle gap.
"""

from __future__ import annotations

import numpy as np

from kvsim.workloads.streams import ARRIVALS, BLOCK, block_rngs


def gamma_arrivals(
    rate: float, cv: float, seed: int, *, num_requests: int | None, duration: float | None
) -> np.ndarray:
    """Arrival times (s) of the first ``num_requests`` requests or of those before ``duration``.

    With both bounds, the trace ends at whichever comes first. Blocks of gaps are drawn from
    the seeded arrivals stream until the bound is reached; each block continues from the
    last time of the one before, so a longer trace extends a shorter one.
    """
    shape, scale = 1.0 / cv**2, cv**2 / rate
    blocks, have, last = [np.zeros(1)], 1, 0.0
    for rng in block_rngs(seed, ARRIVALS):
        enough = num_requests is not None and have >= num_requests
        if enough or (duration is not None and last >= duration):
            break
        times = last + np.cumsum(rng.gamma(shape, scale, BLOCK))
        blocks.append(times)
        have, last = have + BLOCK, times[-1]
    times = np.concatenate(blocks)
    if duration is not None:
        times = times[times < duration]
    return times[:num_requests]
