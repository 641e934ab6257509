"""Everything that defines a run. Written next to its results, so any run can be repeated.

Each field carries its command-line help (``setting``): the options of `simcli run`, `sweep`,
`compare` and `validate` are generated from these fields, so they cannot drift apart.
"""

from __future__ import annotations

import json
import math
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from kvsim.errors import KvsimError
from kvsim.models import DTYPE_BYTES

DEFAULT_MAX_BATCHED_TOKENS = 2560  # vLLM's default when the paper was written
SCHEDULERS = ("v0", "v1")
DEFAULT_NUM_REQUESTS = 1000
# Limits that keep a typo from exhausting memory before the run even starts (each run holds
# arrays per request, and swap space is a free list of blocks). Both are far above any real use.
MAX_NUM_REQUESTS = 10_000_000
MAX_SWAP_SPACE_GIB = 256.0  # the host memory a DGX H200 has per GPU (2 TiB / 8)
MAX_GPUS_PER_NODE = 8  # a tensor-parallel replica stays within one node's NVLink domain


def setting(default, help: str, default_text: str | None = None, aliases: tuple[str, ...] = ()):
    """A SimConfig field with its --help text; ``default_text`` says what a None default means;
    ``aliases``: other option names for it (``--tp``)."""
    return field(default=default, metadata={"help": help, "default_text": default_text, "aliases": aliases})


@dataclass(frozen=True)
class SimConfig:
    # What is served, on what
    model: str = setting("opt-13b", "Built-in model name or path to a HF config.json.")
    gpu: str = setting("a100-40gb", "Built-in GPU name or path to a GPU spec JSON.")
    dtype: str = setting("float16", f"Element type of weights and KV cache: {', '.join(DTYPE_BYTES)}.")
    num_replicas: int = setting(1, "Model replicas behind the router.")
    tensor_parallel: int = setting(
        1,
        f"GPUs per replica, the model split over them (tensor parallelism), at most {MAX_GPUS_PER_NODE}.",
        aliases=("--tp",),
    )
    router: str = setting("round-robin", "round-robin or least-loaded.")
    # KV cache and batching
    policy: str = setting("paged", "KV-cache policy (see `simcli policies`).")
    block_size: int = setting(16, "Tokens per KV block (1 to 256).")
    gpu_memory_utilization: float = setting(0.9, "Fraction of GPU memory kvsim may use, in (0, 1].")
    max_num_seqs: int = setting(256, "Most sequences in one batch.")
    scheduler: str | None = setting(
        None,
        "Step scheduler: v1 (vLLM since 0.8: token budget, chunked prefill, mixed steps) or "
        "v0 (a prefill or a decode per step, as in the vLLM paper).",
        "v1; v0 for what only v0 models: policies other than paged, --preemption swap, --n, --beam-width",
    )
    max_num_batched_tokens: int | None = setting(
        None,
        "Most tokens in one step (v0: prompt tokens of a prefill step).",
        "v1: 8192 on GPUs of 70 GiB or more other than A100s, else 2048 (vLLM's online-serving "
        "defaults); v0: max(2560, the model's context length)",
    )
    long_prefill_token_threshold: int = setting(
        0, "v1: most prompt tokens one request computes per step (0: as the budget allows)."
    )
    max_num_partial_prefills: int = setting(1, "v1: most requests part-way through their prompt at once.")
    watermark: float = setting(
        0.01, "Fraction of KV blocks kept free when admitting (policy paged), in [0, 1)."
    )
    ft_batch_size: int | None = setting(
        None, "Policy ft: requests per batch.", "the most max-length reservations that fit"
    )
    profile: str | None = setting(
        None, "Step-cost profile file.", "the shipped profile of this model and GPU, else the roofline"
    )
    eager: bool = setting(
        False,
        "Price steps as the runner measured with CUDA graphs off (every kernel launched by the "
        "host, as vLLM's 2023 engine ran): the shipped MODEL-eager@GPU profile, or --profile an "
        "eager one.",
    )
    # Workload
    trace: str = setting("sharegpt", "Built-in workload (sharegpt, alpaca, chatbot) or a trace file.")
    # The default: OPT-13B on an A100-40GB loaded but below saturation (the README's default run)
    rate: float | None = setting(2.0, "Requests per second; 0 < rate.")
    num_requests: int | None = setting(
        None,
        f"Number of requests, at most {MAX_NUM_REQUESTS:,}.",
        f"{DEFAULT_NUM_REQUESTS}; the whole file with --arrival trace; or all that arrive within --duration",
    )
    duration: float | None = setting(None, "Stop generating arrivals after this many seconds.", "no limit")
    arrival: str = setting("poisson", "poisson, gamma, or trace (the file's timestamps).")
    burstiness_cv: float = setting(1.0, "Coefficient of variation of gamma inter-arrivals.")
    seed: int = setting(0, "Seed for lengths and arrivals.")
    tokenizer: str | None = setting(None, "Local tokenizer directory for ShareGPT JSON traces.", "none")
    over_length: str = setting("reject", "Requests longer than the model's context: reject or clip.")
    # Sharing (docs/sharing.md): groups of sequences, shared prefixes, prefix caching
    n: int = setting(1, "Parallel samples per request (sharing the prompt's blocks).")
    independent_sample_lengths: bool = setting(
        False, "Each sample draws its own output length (off: all generate the trace's)."
    )
    beam_width: int = setting(1, "Beam search with this many beams.")
    beam_stay: float = setting(0.95, "Beam model: chance a new beam continues the beam of its own rank.")
    beam_skew: float = setting(0.0, "Beam model: otherwise parent rank r drawn with weight (r+1)^-skew.")
    prefix_len: int = setting(0, "Shared system prompt of this many tokens prepended to every request.")
    num_prefixes: int = setting(1, "How many different shared prefixes.")
    prefix_popularity: float = setting(1.0, "Zipf exponent of the prefixes' popularity (0: uniform).")
    prefix_caching: bool | None = setting(
        None, "Automatic prefix caching: reuse cached full blocks by content hash.", "on with v1, off with v0"
    )
    # Preemption
    preemption: str = setting("recompute", "Preemption: recompute or swap.")
    swap_space: float = setting(
        4.0, f"CPU swap space per replica, GiB, at most {MAX_SWAP_SPACE_GIB:g} (4: vLLM's default)."
    )

    def validate(self) -> "SimConfig":
        check_types(self)
        positive = {
            "block_size": self.block_size,
            "max_num_seqs": self.max_num_seqs,
            "num_replicas": self.num_replicas,
            "tensor_parallel": self.tensor_parallel,
        }
        for name, value in positive.items():
            if value < 1:
                raise KvsimError(f"{option_name(name)} must be at least 1 (got {value})")
        if not 1 <= self.block_size <= 256:
            raise KvsimError(f"--block-size must be between 1 and 256 (got {self.block_size})")
        if self.dtype not in DTYPE_BYTES:
            raise KvsimError(f"--dtype must be one of {', '.join(DTYPE_BYTES)} (got {self.dtype!r})")
        if self.rate is not None and self.rate <= 0:
            raise KvsimError(f"--rate must be positive (got {self.rate})")
        if self.num_requests is not None and not 1 <= self.num_requests <= MAX_NUM_REQUESTS:
            raise KvsimError(
                f"--num-requests must be between 1 and {MAX_NUM_REQUESTS:,} (got {self.num_requests})"
            )
        if self.duration is not None and self.duration <= 0:
            raise KvsimError(f"--duration must be positive (got {self.duration})")
        if (
            self.num_requests is None
            and self.duration is not None
            and self.rate is not None
            and self.arrival != "trace"
            and self.rate * self.duration > MAX_NUM_REQUESTS
        ):
            raise KvsimError(
                f"--rate {self.rate:g} for --duration {self.duration:g} s makes about "
                f"{self.rate * self.duration:,.0f} requests, more than the limit of "
                f"{MAX_NUM_REQUESTS:,} (bound them with --num-requests)"
            )
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
        if self.swap_space > MAX_SWAP_SPACE_GIB:
            raise KvsimError(
                f"--swap-space must be at most {MAX_SWAP_SPACE_GIB:g} GiB (got {self.swap_space:g})"
            )
        if max(self.n, self.beam_width) > self.max_num_seqs:
            raise KvsimError(
                f"a group of {max(self.n, self.beam_width)} sequences (--n / --beam-width) "
                f"can never run with --max-num-seqs {self.max_num_seqs}"
            )
        if self.tensor_parallel > MAX_GPUS_PER_NODE:
            raise KvsimError(
                f"--tensor-parallel {self.tensor_parallel} is more GPUs than a node has "
                f"({MAX_GPUS_PER_NODE}): a replica's collectives stay on one node's NVLink"
            )
        if self.scheduler not in (None, *SCHEDULERS):
            raise KvsimError(f"--scheduler must be one of {', '.join(SCHEDULERS)} (got {self.scheduler!r})")
        if self.scheduler == "v1" and self.v0_only:
            raise KvsimError(f"--scheduler v1 does not model {self.v0_only}: use --scheduler v0")
        if self.long_prefill_token_threshold < 0:
            raise KvsimError(
                f"--long-prefill-token-threshold must be at least 0 (got {self.long_prefill_token_threshold})"
            )
        if self.max_num_partial_prefills < 1:
            raise KvsimError(
                f"--max-num-partial-prefills must be at least 1 (got {self.max_num_partial_prefills})"
            )
        if self.ft_batch_size is not None and self.ft_batch_size < 1:
            raise KvsimError(f"--ft-batch-size must be at least 1 (got {self.ft_batch_size})")
        return self

    @property
    def request_count(self) -> int | None:
        """Requests to generate: as asked, else 1000 unless a duration bounds the trace or
        ``arrival="trace"`` replays a file (None: the whole file)."""
        if self.num_requests is None and self.duration is None and self.arrival != "trace":
            return DEFAULT_NUM_REQUESTS
        return self.num_requests

    @property
    def step_scheduler(self) -> str:
        """The scheduler this run uses: as asked; else v1, today's vLLM, unless the run needs
        what only v0 models (``v0_only``)."""
        if self.scheduler is not None:
            return self.scheduler
        return "v0" if self.v0_only else "v1"

    @property
    def v0_only(self) -> str:
        """What in this run only the v0 scheduler models ('' if nothing): the 2023 baselines,
        swapping, and groups of sequences (vLLM v1 has none of these in its scheduler)."""
        if self.policy != "paged":
            return f"policy {self.policy}"
        if self.preemption != "recompute":
            return f"--preemption {self.preemption}"
        if self.n > 1:
            return "--n"
        if self.beam_width > 1:
            return "--beam-width"
        return ""

    @property
    def prefix_caching_on(self) -> bool:
        return self.prefix_caching if self.prefix_caching is not None else self.step_scheduler == "v1"

    def batched_tokens_for(self, max_model_len: int, gpu_memory_bytes: int, gpu_name: str) -> int:
        """The step's token budget. v1 takes vLLM's online-serving default, which depends on
        the GPU (vLLM keeps A100s at the smaller budget: a larger one cost them throughput)."""
        if self.max_num_batched_tokens is not None:
            return self.max_num_batched_tokens
        if self.step_scheduler == "v1":
            large = gpu_memory_bytes >= 70 * 2**30 and "a100" not in gpu_name.lower()
            return 8192 if large else 2048
        return max(DEFAULT_MAX_BATCHED_TOKENS, max_model_len)

    def with_overrides(self, **overrides) -> "SimConfig":
        return replace(self, **overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_file(cls, path: str | Path) -> "SimConfig":
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise KvsimError(f"cannot read config {path}: {err}") from None
        if not isinstance(raw, dict):
            raise KvsimError(f"config {path} must hold a JSON object of settings (got {json_kind(raw)})")
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise KvsimError(f"config {path}: unknown fields {', '.join(sorted(unknown))}")
        try:
            return cls(**raw).validate()
        except KvsimError as err:
            raise KvsimError(f"config {path}: {err}") from None


def option_name(name: str) -> str:
    """The command-line option of SimConfig field ``name``: block_size -> --block-size."""
    return "--" + name.replace("_", "-")


def field_type(name: str) -> tuple[type, bool]:
    """SimConfig field ``name``'s type, Optional unwrapped, and whether it may be None."""
    hint = FIELD_TYPES[name]
    args = typing.get_args(hint)
    if type(None) in args:
        return next(t for t in args if t is not type(None)), True
    return hint, False


def check_types(config: SimConfig) -> None:
    """Each field holds its declared type, and a float is finite: a config file, a campaign or
    a caller can hand in anything, and a NaN passes every ``<`` check unnoticed."""
    for name in FIELD_TYPES:
        value = getattr(config, name)
        base, optional = field_type(name)
        if value is None and optional:
            continue
        if isinstance(value, bool) != (base is bool) or not isinstance(value, ACCEPTED[base]):
            raise KvsimError(f"{option_name(name)} must be {TYPE_WORDS[base]} (got {value!r})")
        if base is float and not math.isfinite(value):
            raise KvsimError(f"{option_name(name)} must be a finite number (got {value!r})")


def json_kind(value) -> str:
    """What JSON calls ``value``'s type, for messages about a file's contents."""
    return {list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(value), "a number"
    )


FIELD_TYPES: dict[str, type] = typing.get_type_hints(SimConfig)
ACCEPTED = {bool: bool, int: int, float: (int, float), str: str}  # a whole number is a float too
TYPE_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
