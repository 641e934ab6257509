"""kvsim's CUDA kernels (``csrc/*.cu``), compiled with NVRTC through cupy and launched on
torch's current stream, so they mix with torch ops and are captured by CUDA graphs.

Why NVRTC: a ``torch.utils.cpp_extension`` build takes about a minute; NVRTC compiles the
few template instances kvsim uses in seconds, and cupy caches the binaries on disk
(``~/.cupy/kernel_cache``), so a second run loads them at once. Tensors cross as raw
pointers (``data_ptr()``); the kernels check nothing, so the wrappers check shapes.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

CSRC = Path(__file__).parent / "csrc"
HEAD_SIZES = (64, 80, 96, 128, 256)
MAX_PARTITION = 512  # most tokens per split-K partition
# Threads per K/V row and tokens in flight per thread group, by head size (see
# paged_attention.cu); chosen by benchmarks/bench_kernels.py's variant table.
DECODE_SHAPES = {64: (8, 4), 80: (8, 4), 96: (8, 4), 128: (8, 4), 256: (16, 4)}
_THREADS = 128
_DTYPES = {torch.float16: "Half", torch.bfloat16: "BFloat16"}


@functools.cache
def _num_sms(device: int) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def partition_size(num_rows: int, max_context_len: int, device: int) -> int:
    """Tokens per partition: 512, halved (down to 64) while the grid of
    ``num_rows`` (sequences x heads) x partitions has fewer than 4 blocks per SM, so that
    small batches still fill the GPU."""
    size = MAX_PARTITION
    while size > 64 and num_rows * -(-max_context_len // size) < 4 * _num_sms(device):
        size //= 2
    return size


def _decode_name(dtype: str, head: int, shape: tuple[int, int] | None = None) -> str:
    threads_per_row, unroll = shape or DECODE_SHAPES[head]
    return f"paged_decode<{dtype}, {head}, {threads_per_row}, {unroll}>"


def _template_names() -> list[str]:
    """The template instances every module compiles (extern "C" kernels need no name)."""
    return [_decode_name(t, h) for t in _DTYPES.values() for h in HEAD_SIZES] + [
        f"paged_decode_reduce<{t}>" for t in _DTYPES.values()
    ]


@functools.cache
def _module(extra_names: tuple[str, ...] = ()):
    import cupy

    source = "\n".join((CSRC / f).read_text() for f in ("paged_attention.cu", "cache_ops.cu"))
    return cupy.RawModule(
        code=source,
        options=("-std=c++17", f"-I{CSRC}"),
        name_expressions=_template_names() + list(extra_names),
    )


@functools.cache
def _function(name: str):
    """The compiled kernel; an instance outside the default set (a benchmark variant) gets a
    module of its own."""
    known = "<" not in name or name in _template_names()
    return (_module() if known else _module((name,))).get_function(name)


@functools.cache
def _cupy_stream(pointer: int):
    """cupy's handle on a torch stream, made once per stream rather than at every launch
    (eager prefill launches a few kernels per layer)."""
    import cupy

    return cupy.cuda.ExternalStream(pointer)


def _launch(name: str, grid, block, args) -> None:
    with _cupy_stream(torch.cuda.current_stream().cuda_stream):
        _function(name)(grid, block, args)


def _ptr(t: torch.Tensor) -> np.uint64:
    return np.uint64(t.data_ptr())


def _dtype_tag(t: torch.Tensor) -> str:
    if t.dtype not in _DTYPES:
        raise TypeError(f"kvsim kernels take float16 or bfloat16, not {t.dtype}")
    return _DTYPES[t.dtype]


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    max_context_len: int,
    out: torch.Tensor | None = None,
    shape: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Decode attention; see csrc/paged_attention.cu. ``q`` may be a row-strided view.

    ``max_context_len`` sizes the grid (one block per partition, see ``partition_size``);
    a CUDA graph captures it at the model's maximum so that any mix of shorter contexts
    replays. ``shape`` overrides ``DECODE_SHAPES`` (benchmarks compare variants).
    """
    num_seqs, num_heads, head = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    tag = _dtype_tag(q)
    assert head in HEAD_SIZES and q.stride(2) == 1 and q.stride(1) == head
    assert k_cache.is_contiguous() and v_cache.is_contiguous() and k_cache.shape[-1] == head
    assert k_cache.dtype == v_cache.dtype == q.dtype and num_heads % num_kv_heads == 0
    assert block_tables.dtype == context_lens.dtype == torch.int32 and block_tables.stride(1) == 1
    part = partition_size(num_seqs * num_heads, max_context_len, q.device.index)
    max_parts = max(1, -(-max_context_len // part))
    if out is None:
        out = torch.empty(num_seqs, num_heads, head, dtype=q.dtype, device=q.device)
    assert out.shape == q.shape and out.is_contiguous() and out.dtype == q.dtype
    part_out = torch.empty(num_seqs, num_heads, max_parts, head, dtype=torch.float32, device=q.device)
    part_stats = torch.empty(num_seqs, num_heads, max_parts, 2, dtype=torch.float32, device=q.device)
    if num_seqs == 0:
        return out
    _launch(
        _decode_name(tag, head, shape),
        (num_heads, num_seqs, max_parts),
        (_THREADS,),
        (
            _ptr(out),
            _ptr(part_out),
            _ptr(part_stats),
            _ptr(q),
            _ptr(k_cache),
            _ptr(v_cache),
            _ptr(block_tables),
            _ptr(context_lens),
            np.float32(scale),
            np.int32(block_size),
            np.int32(num_kv_heads),
            np.int32(block_tables.stride(0)),
            np.int64(q.stride(0)),
            np.int32(part),
        ),
    )
    if max_parts > 1:
        _launch(
            f"paged_decode_reduce<{tag}>",
            (num_heads, num_seqs),
            (_THREADS,),
            (
                _ptr(out),
                _ptr(part_out),
                _ptr(part_stats),
                _ptr(context_lens),
                np.int32(head),
                np.int32(max_parts),
                np.int32(part),
            ),
        )
    return out


def reshape_and_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Write key/value ``[num_tokens, kv_heads, d]`` (rows may be strided) into their slots."""
    num_tokens = key.shape[0]
    row = k_cache.shape[2] * k_cache.shape[3]
    _dtype_tag(key)
    assert key.shape == value.shape and key.shape[1:] == k_cache.shape[2:]
    assert key[0].is_contiguous() and value[0].is_contiguous()
    assert key.dtype == value.dtype == k_cache.dtype and slot_mapping.dtype == torch.int64
    assert k_cache.is_contiguous() and v_cache.is_contiguous()
    if num_tokens:
        _launch(
            "reshape_and_cache",
            (num_tokens,),
            (min(1024, row),),
            (
                _ptr(k_cache),
                _ptr(v_cache),
                _ptr(key),
                _ptr(value),
                _ptr(slot_mapping),
                np.int32(row),
                np.int64(key.stride(0)),
                np.int64(value.stride(0)),
            ),
        )


def copy_blocks(src: list[torch.Tensor], dst: list[torch.Tensor], pairs: torch.Tensor) -> None:
    """Copy block ``pairs[i, 0]`` of each ``src[j]`` to block ``pairs[i, 1]`` of ``dst[j]``, one launch.

    Tensors may be device tensors or pinned host tensors (zero-copy over unified addressing).
    ``pairs`` is an int64 device tensor ``[n, 2]``; destinations must not also be sources.
    """
    assert len(src) == len(dst) > 0 and pairs.dtype == torch.int64 and pairs.is_contiguous()
    block_bytes = src[0][0].numel() * src[0].element_size()
    for s, d in zip(src, dst):
        assert s.is_contiguous() and d.is_contiguous() and s.dtype == d.dtype
        assert s.shape[1:] == d.shape[1:] == src[0].shape[1:]
        assert all(t.is_cuda or t.is_pinned() for t in (s, d))
    assert block_bytes % 16 == 0
    if pairs.shape[0] == 0:
        return
    bases = torch.tensor([[s.data_ptr() for s in src], [d.data_ptr() for d in dst]], dtype=torch.int64).to(
        pairs.device, non_blocking=True
    )
    _launch(
        "copy_blocks",
        (pairs.shape[0], len(src)),
        (256,),
        (_ptr(bases[0]), _ptr(bases[1]), _ptr(pairs), np.int64(block_bytes)),
    )
