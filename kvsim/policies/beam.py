"""A stochastic model of beam search's parent selection, the only part that matters for memory.

After each step, the K new beams are the top-K continuations of the K current beams; which
parent each new beam comes from decides what is forked (a parent chosen c > 1 times is
forked c - 1 times, sharing all its blocks) and what is dropped (a parent chosen 0 times
frees its blocks). kvsim does not run a model, so it draws the parents:

* with probability ``stay``, new beam j continues current beam j (the beams' ranks are
  stable and nothing is forked or dropped);
* otherwise it continues another beam: its parent is drawn over the other current ranks
  r = 0 (best) .. K-1, r != j, with probability proportional to ``(r + 1) ** -skew``
  (``skew = 0``: uniform; large: the best beam fathers everyone). Leaving its lineage
  always means taking another's, so ``stay`` is the chance a beam keeps its own lineage at
  every width (were its own rank among the draws, wider beams would leave theirs more
  often, and they share more than the vLLM paper's Fig. 15 measured).

Assumptions: decisions are independent across beams and steps, and ranks are the only
state. To fit it to a model, log the parent index of every new beam for a few hundred
prompts (e.g. from vLLM's or HF's beam search outputs): ``stay`` is the fraction of new
beams whose parent index equals their own index, and ``skew`` is the maximum-likelihood
exponent of the other parents' ranks.
Draws come from a generator seeded by (seed, request id), so a request forks the same way
under every policy and every rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvsim.errors import KvsimError


@dataclass(frozen=True)
class BeamModel:
    # Fitted to the vLLM paper's Fig. 15 (benchmarks/calibration/fit_beam.py, docs/sharing.md).
    stay: float = 0.95
    skew: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.stay <= 1:
            raise KvsimError(f"--beam-stay must be in [0, 1] (got {self.stay})")
        if self.skew < 0:
            raise KvsimError(f"--beam-skew must be >= 0 (got {self.skew})")

    def rng(self, request_id: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, request_id])

    def parents(self, rng: np.random.Generator, width: int) -> np.ndarray:
        """Parent rank of each of ``width`` new beams."""
        ranks = np.arange(width)
        if width == 1:
            return ranks
        weights = np.tile((ranks + 1.0) ** -self.skew, (width, 1))
        weights[ranks, ranks] = 0.0  # row j: the parents beam j may switch to
        bounds = np.cumsum(weights, axis=1)
        draws = rng.random(width) * bounds[:, -1]
        drawn = np.minimum((draws[:, None] >= bounds).sum(axis=1), width - 1)
        return np.where(rng.random(width) < self.stay, ranks, drawn)
