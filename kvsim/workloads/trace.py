"""A workload as columns: one row per request, sorted by arrival time.

Columns rather than objects because sweeps build traces of 100k requests; the engine
makes a request object only when the request arrives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Trace:
    name: str
    arrival_time: np.ndarray  # float64 seconds from the start, non-decreasing
    prompt_len: np.ndarray  # int64 tokens, >= 1
    output_len: np.ndarray  # int64 tokens to generate, >= 1 (forced: no early stop)
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # optional per-request columns

    def __post_init__(self) -> None:
        n = len(self.arrival_time)
        for column in (self.prompt_len, self.output_len, *self.extra.values()):
            if len(column) != n:
                raise ValueError("trace columns differ in length")

    def __len__(self) -> int:
        return len(self.arrival_time)

    @property
    def has_token_content(self) -> bool:
        """Do requests carry token ids (shared prefixes, conversations), so that equal
        content can be found in a cache? A trace of lengths alone does not."""
        return "prefix_id" in self.extra or "stream_id" in self.extra

    def stats(self) -> dict:
        """Realised workload statistics, reported next to the metrics they produced."""
        duration = float(self.arrival_time[-1] - self.arrival_time[0]) if len(self) > 1 else 0.0
        return {
            "num_requests": len(self),
            "mean_prompt_len": float(self.prompt_len.mean()) if len(self) else 0.0,
            "mean_output_len": float(self.output_len.mean()) if len(self) else 0.0,
            "max_total_len": int((self.prompt_len + self.output_len).max()) if len(self) else 0,
            "arrival_span_s": duration,
            "offered_rate": (len(self) - 1) / duration if duration > 0 else float("nan"),
        }
