"""Seeded random streams that make a request's draws depend on its index only.

Every stream (lengths, arrivals) is cut into blocks, and block ``b`` of stream ``s`` gets
its own generator seeded with ``(seed, s, b)``. So lengths never change when the rate
does (separate streams), and a longer trace extends a shorter one with the same seed
instead of reshuffling it (a ``--duration`` sweep over rates compares the same requests).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np

LENGTHS = 0
ARRIVALS = 1

#: Requests drawn per block: large enough to vectorise, small enough to bound memory.
BLOCK = 8192


def block_rngs(seed: int, stream: int) -> Iterator[np.random.Generator]:
    """The endless sequence of per-block generators of one stream."""
    for block in itertools.count():
        yield np.random.default_rng([seed, stream, block])


def take_lengths(
    draw: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]], n: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` (prompt, output) pairs of the lengths stream, ``draw`` giving one block."""
    prompts, outputs, have = [], [], 0
    rngs = block_rngs(seed, LENGTHS)
    while have < n:
        prompt, output = draw(next(rngs))
        prompts.append(prompt)
        outputs.append(output)
        have += len(prompt)
    return np.concatenate(prompts)[:n], np.concatenate(outputs)[:n]
