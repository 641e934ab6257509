"""A request as the scheduler sees it: lengths, its sequences, and where it stands."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Status(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    SWAPPED = "swapped"
    FINISHED = "finished"
    REJECTED = "rejected"


@dataclass(eq=False, slots=True)
class Request:
    request_id: int
    prompt_len: int
    output_len: int  # forced: every sequence generates exactly this many tokens
    seqs: list[int] = field(default_factory=list)  # sequence ids, given by the scheduler
    status: Status = Status.WAITING
    num_preemptions: int = 0
    recomputed_tokens: int = 0  # tokens prefilled again after preemptions
    reject_reason: str = ""

    @property
    def max_tokens(self) -> int:
        """Tokens whose KV the request must hold at its end (the last one is never written)."""
        return self.prompt_len + self.output_len - 1
