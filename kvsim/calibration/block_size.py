"""Decode attention's cost by KV block size: the profile's ``decode_block_size`` table.

A profile's decode terms were fitted at one block size. The paged decode kernel reads each
sequence's context through its block table, one table entry per block, so the block size
changes what a token costs it (the lookups, and how many tokens of a block a thread group
reads in turn). This measures the kernel alone (``kernels.paged_decode_attention``, as the
runner calls it) over a few decode steps of the profile's model (its heads, KV heads and head
size) at every block size a run may use, and turns the times into one factor per block size:
the mean over the shapes of its time over the time at the profile's own block size. The cost
model multiplies the decode terms that read the KV cache (``BLOCK_TABLE_TERMS``) by it.

Each time is the median device time of the kernel replayed in a CUDA graph (no launch gaps),
its grid sized as the runner sizes it: for the model's whole context when the runner
replays graphs, for the step's own context when it runs eagerly. Caches hold random values and
block tables scatter a sequence's blocks over the cache, as a serving cache does. Needs CUDA.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import torch

from kvsim.calibration.fit import block_size_factors
from kvsim.cost.profile import BLOCK_SIZES
from kvsim.gpu import kernels, timing
from kvsim.models import ModelSpec

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
# (sequences, context of each) of the decode steps measured, within the model's context: a few
# long sequences (ShareGPT-like, latency-bound), a middling batch, many short ones (Alpaca-like,
# bandwidth-bound).
SHAPES = ((4, 2048), (32, 1024), (128, 512), (256, 128))


class PagedDecodeCase:
    """Random q and a cache of ``batch`` sequences of ``context`` tokens each in blocks of
    ``block_size`` tokens, for one attention layer of ``heads`` query heads, ``kv_heads`` K/V
    heads of ``head_size``; ``shuffled``: each sequence's blocks scattered over the cache."""

    def __init__(
        self,
        batch: int,
        context: int,
        block_size: int,
        heads: int,
        kv_heads: int,
        head_size: int,
        dtype: torch.dtype = torch.float16,
        shuffled: bool = True,
    ):
        per_seq = -(-context // block_size)
        num_blocks = batch * per_seq
        self.k = torch.randn(num_blocks, block_size, kv_heads, head_size, device="cuda", dtype=dtype)
        self.v = torch.randn_like(self.k)
        order = (
            torch.randperm(num_blocks, device="cuda") if shuffled else torch.arange(num_blocks, device="cuda")
        )
        self.tables = order.view(batch, per_seq).to(torch.int32)
        self.lens = torch.full((batch,), context, dtype=torch.int32, device="cuda")
        self.q = torch.randn(batch, heads, head_size, device="cuda", dtype=dtype)
        self.context, self.scale = context, head_size**-0.5
        self.kv_bytes = 2 * batch * context * kv_heads * head_size * self.k.element_size()

    def ms(self, max_context_len: int | None = None, shape: tuple[int, int] | None = None) -> float:
        """Median device time of one kernel call, its grid sized for ``max_context_len``
        (default: the context); ``shape`` overrides the kernel's thread split (benchmarks)."""
        longest = max_context_len or self.context
        return timing.graph_ms(
            lambda: kernels.paged_decode_attention(
                self.q, self.k, self.v, self.tables, self.lens, self.scale, longest, shape=shape
            )
        )


def shapes_for(spec: ModelSpec) -> list[tuple[int, int]]:
    """``SHAPES`` with each context within the model's (a decode step's context is below it)."""
    return [(batch, min(context, spec.max_model_len - 1)) for batch, context in SHAPES]


def measure_block_sizes(
    spec: ModelSpec,
    reference: int,
    graphs: bool = True,
    block_sizes: tuple[int, ...] = BLOCK_SIZES,
    log: Callable[[str], None] = print,
    by: str = "simcli calibrate",
) -> dict:
    """The ``decode_block_size`` section for a profile of ``spec`` fitted at block size
    ``reference``, measured on GPU 0; ``graphs``: whether that profile's runner replays CUDA
    graphs (sizes the kernel's grid as the runner does)."""
    dtype = _DTYPES.get(spec.dtype)
    if dtype is None:
        raise ValueError(f"the decode kernel takes float16 or bfloat16, not {spec.dtype}")
    shapes = shapes_for(spec)
    sizes = sorted({*block_sizes, reference})
    seconds: dict[int, list[float]] = {}
    for size in sizes:
        seconds[size] = []
        for batch, context in shapes:
            case = PagedDecodeCase(
                batch, context, size, spec.num_heads, spec.num_kv_heads, spec.head_dim, dtype
            )
            seconds[size].append(case.ms(spec.max_model_len if graphs else None) / 1e3)
            del case
        torch.cuda.empty_cache()
    table = block_size_factors(seconds, reference)
    log(
        "decode attention by block size (x block "
        f"{reference}): " + ", ".join(f"{size} {table[size]:.3f}" for size in sizes)
    )
    return {
        "factors": {str(size): table[size] for size in sizes},
        "shapes": [list(shape) for shape in shapes],
        "seconds": {str(size): seconds[size] for size in sizes},
        "graphs": graphs,
        "device": torch.cuda.get_device_name(0),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "by": by,
    }
