"""Everything that defines a run. Written next to its results, so any run can be repeated."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from kvsim.errors import KvsimError

DEFAULT_MAX_BATCHED_TOKENS = 2560  # vLLM's default when the paper was written
DEFAULT_NUM_REQUESTS = 1000


@dataclass(frozen=True)
class SimConfig:
    # What is served, on what
    model: str = "opt-13b"
    gpu: str = "a100-40gb"
    dtype: str = "float16"
    num_replicas: int = 1
    router: str = "round-robin"
    # KV cache and batching
    policy: str = "paged"
    block_size: int = 16
    gpu_memory_utilization: float = 0.9
    max_num_seqs: int = 256
    max_num_batched_tokens: int | None = None  # None: max(2560, the model's context length)
    watermark: float = 0.01
    ft_batch_size: int | None = None  # policy ft: requests per batch; None: the most that fit
    # Cost model: None takes the default (see kvsim.calibration.select_cost_model)
    profile: str | None = None
    # Workload
    trace: str = "sharegpt"
    rate: float | None = 2.0  # OPT-13B on an A100-40GB: loaded (57% KV, some preemption), below saturation
    num_requests: int | None = None  # None: 1000, or as many as arrive within `duration`
    duration: float | None = None
    arrival: str = "poisson"
    burstiness_cv: float = 1.0
    seed: int = 0
    tokenizer: str | None = None
    over_length: str = "reject"  # requests longer than the model's context: reject or clip
    # Sharing (docs/sharing.md): groups of sequences, shared prefixes, prefix caching
    n: int = 1  # parallel samples per request
    independent_sample_lengths: bool = False  # samples draw their own output lengths
    beam_width: int = 1
    beam_stay: float = 0.5  # see kvsim.policies.beam.BeamModel
    beam_skew: float = 1.0
    prefix_len: int = 0  # tokens of a shared system prompt prepended to every request
    num_prefixes: int = 1
    prefix_popularity: float = 1.0  # Zipf exponent over the prefixes
    prefix_caching: bool = False
    # Preemption
    preemption: str = "recompute"  # or swap
    swap_space: float = 4.0  # GiB of CPU memory for swapped blocks (vLLM's default)

    def validate(self) -> "SimConfig":
        positive = {"block_size": self.block_size, "max_num_seqs": self.max_num_seqs,
                    "num_replicas": self.num_replicas}
        for name, value in positive.items():
            if value < 1:
                raise KvsimError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")
        if not 1 <= self.block_size <= 256:
            raise KvsimError(f"--block-size must be between 1 and 256 (got {self.block_size})")
        if self.rate is not None and self.rate <= 0:
            raise KvsimError(f"--rate must be positive (got {self.rate})")
        if self.num_requests is not None and self.num_requests < 1:
            raise KvsimError(f"--num-requests must be at least 1 (got {self.num_requests})")
        if self.duration is not None and self.duration <= 0:
            raise KvsimError(f"--duration must be positive (got {self.duration})")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise KvsimError("--gpu-memory-utilization must be in (0, 1]")
        if not 0 <= self.watermark < 1:
            raise KvsimError("--watermark must be in [0, 1)")
        if self.over_length not in ("reject", "clip"):
            raise KvsimError(f"--over-length must be 'reject' or 'clip' (got {self.over_length!r})")
        if self.max_num_batched_tokens is not None and self.max_num_batched_tokens < 1:
            raise KvsimError("--max-num-batched-tokens must be at least 1")
        if self.preemption not in ("recompute", "swap"):
            raise KvsimError(f"--preemption must be 'recompute' or 'swap' (got {self.preemption!r})")
        if self.swap_space < 0 or (self.preemption == "swap" and self.swap_space <= 0):
            raise KvsimError(f"--swap-space must be positive with --preemption swap (got {self.swap_space})")
        if max(self.n, self.beam_width) > self.max_num_seqs:
            raise KvsimError(f"a group of {max(self.n, self.beam_width)} sequences (--n / --beam-width) "
                             f"can never run with --max-num-seqs {self.max_num_seqs}")
        if self.ft_batch_size is not None and self.ft_batch_size < 1:
            raise KvsimError(f"--ft-batch-size must be at least 1 (got {self.ft_batch_size})")
        return self

    @property
    def request_count(self) -> int | None:
        """Requests to generate: as asked, else 1000 unless a duration bounds the trace."""
        if self.num_requests is None and self.duration is None:
            return DEFAULT_NUM_REQUESTS
        return self.num_requests

    def batched_tokens_for(self, max_model_len: int) -> int:
        if self.max_num_batched_tokens is not None:
            return self.max_num_batched_tokens
        return max(DEFAULT_MAX_BATCHED_TOKENS, max_model_len)

    def with_overrides(self, **overrides) -> "SimConfig":
        return replace(self, **overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_file(cls, path: str | Path) -> "SimConfig":
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise KvsimError(f"cannot read config {path}: {err}") from None
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise KvsimError(f"config {path}: unknown fields {', '.join(sorted(unknown))}")
        return cls(**raw).validate()
