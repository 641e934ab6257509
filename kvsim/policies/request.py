"""A request as the scheduler sees it: lengths, its sequences, and where it stands."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import numpy as np


class Status(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    SWAPPED = "swapped"
    FINISHED = "finished"


@dataclass(eq=False, slots=True)
class Request:
    request_id: int
    prompt_len: int
    output_len: int  # forced: every sequence generates exactly this many tokens (the longest sample's)
    seqs: list[int] = field(default_factory=list)  # live sequence ids, given by the scheduler
    # A group of sequences shares the prompt: `width` parallel samples, or beams if `beam`.
    width: int = 1
    beam: bool = False
    sample_output_lens: tuple[int, ...] = ()  # per-sample lengths, when drawn independently
    # Token ids of the request's stream (prompt, then forced output): `token_ids(k)` gives the
    # first k. Only needed to find shared content (shared prefixes, prefix caching).
    token_ids: Callable[[int], np.ndarray] | None = None
    shared_prefix_len: int = 0  # leading prompt tokens of a service-defined shared prefix
    block_names: list[int] | None = None  # hashes of the prompt's full blocks, computed once
    beam_rng: np.random.Generator | None = None
    status: Status = Status.WAITING
    num_preemptions: int = 0
    recomputed_tokens: int = 0  # tokens prefilled again after preemptions

    @property
    def max_tokens(self) -> int:
        """Tokens whose KV the request must hold at its end (the last one is never written)."""
        return self.prompt_len + self.output_len - 1
