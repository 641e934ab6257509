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
# Rows of x up to which ``gemv`` replaces cuBLAS, and its shape: output rows per warp, 16-byte
# pieces of each in flight per lane (csrc/gemv.cu). One row: on an H200 (benchmarks/KERNELS.md,
# decode GEMMs) kvsim's GEMV read the weights faster than cuBLAS at one row on 9 of the 10
# decode matrices of OPT-13B and Llama-2-7B (up to a third faster), while cuBLAS was faster on
# half of them at 2 rows and on all but one at 4.
GEMV_MAX_ROWS = 1
GEMV_SHAPE = (2, 4)
_GEMV_WARPS = 8
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


def _gemv_name(dtype: str, rows: int, shape: tuple[int, int] | None = None) -> str:
    per_warp, unroll = shape or GEMV_SHAPE
    return f"gemv<{dtype}, {rows}, {per_warp}, {unroll}>"


def _template_names() -> list[str]:
    """The template instances every module compiles (extern "C" kernels need no name)."""
    names = [_decode_name(t, h) for t in _DTYPES.values() for h in HEAD_SIZES]
    for t in _DTYPES.values():
        names += [f"paged_decode_reduce<{t}>", f"silu_mul<{t}>", f"rotary_and_cache<{t}>"]
        names += [f"add_norm<{t}, {rms}>" for rms in ("false", "true")]
        names += [_gemv_name(t, m) for m in range(1, GEMV_MAX_ROWS + 1)]
    return names


@functools.cache
def _module(extra_names: tuple[str, ...] = ()):
    import cupy

    source = "\n".join(
        (CSRC / f).read_text() for f in ("paged_attention.cu", "cache_ops.cu", "fused_ops.cu", "gemv.cu")
    )
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


_NULL = np.uint64(0)


def _ptr_or_null(t: torch.Tensor | None) -> np.uint64:
    return _NULL if t is None else _ptr(t)


def _vectorizable(*tensors: torch.Tensor) -> bool:
    """Whether the 16-byte loads of csrc/fused_ops.cu and gemv.cu may read these rows: each
    tensor's last dimension contiguous, its rows and its start 16-byte aligned."""
    return all(
        t.stride(-1) == 1 and t.data_ptr() % 16 == 0 and all(s % 8 == 0 for s in t.stride()[:-1])
        for t in tensors
    )


def gemv_fits(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``gemv`` takes ``x @ weight.T``: a batch of at most ``GEMV_MAX_ROWS`` rows, 16-bit
    operands it can read with vector loads, and enough output rows to give every SM a block."""
    n, k = weight.shape
    return (
        x.dim() == 2
        and 0 < x.shape[0] <= GEMV_MAX_ROWS
        and x.dtype == weight.dtype
        and x.dtype in _DTYPES
        and k % 8 == 0
        and weight.is_contiguous()
        and _vectorizable(x, weight)
        and -(-n // (GEMV_SHAPE[0] * _GEMV_WARPS)) >= _num_sms(x.device.index)
    )


def gemv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    relu: bool = False,
    out: torch.Tensor | None = None,
    shape: tuple[int, int] | None = None,
) -> torch.Tensor:
    """``x @ weight.T`` (+ ``bias``) (ReLU) for a few rows of x (``gemv_fits``); see csrc/gemv.cu.
    ``shape`` overrides ``GEMV_SHAPE`` (benchmarks compare variants)."""
    m, k = x.shape
    n = weight.shape[0]
    tag = _dtype_tag(x)
    assert gemv_fits(x, weight) and weight.shape[1] == k
    assert bias is None or (bias.shape == (n,) and bias.is_contiguous() and bias.dtype == x.dtype)
    if out is None:
        out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    assert out.shape == (m, n) and out.stride(1) == 1 and out.dtype == x.dtype
    _launch(
        _gemv_name(tag, m, shape),
        (-(-n // ((shape or GEMV_SHAPE)[0] * _GEMV_WARPS)),),
        (32 * _GEMV_WARPS,),
        (
            _ptr(out),
            _ptr(x),
            _ptr(weight),
            _ptr_or_null(bias),
            np.int32(n),
            np.int32(k),
            np.int64(x.stride(0)),
            np.int64(out.stride(0)),
            np.int32(relu),
        ),
    )
    return out


_NORM_CHUNKS = 2  # csrc/fused_ops.cu's NORM_CHUNKS


def add_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    eps: float,
    delta: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x += delta (+ delta_bias)`` in place (when ``delta`` is given), then the norm of each
    row of x: LayerNorm with ``bias``, RMSNorm without; see csrc/fused_ops.cu."""
    rows, hidden = x.shape
    tag = _dtype_tag(x)
    threads = min(1024, -(-hidden // 256) * 32)  # one 8-value chunk per thread, up to 1024 threads
    assert hidden % 8 == 0 and hidden <= 8 * _NORM_CHUNKS * threads and x.is_contiguous()
    vectors = [t for t in (x, delta, delta_bias, weight, bias) if t is not None]
    assert all(t.dtype == x.dtype and t.is_contiguous() for t in vectors) and _vectorizable(*vectors)
    assert delta is None or delta.shape == x.shape
    out = torch.empty_like(x)
    if rows:
        _launch(
            f"add_norm<{tag}, {'false' if bias is not None else 'true'}>",
            (rows,),
            (threads,),
            (
                _ptr(out),
                _ptr(x),
                _ptr_or_null(delta),
                _ptr_or_null(delta_bias),
                _ptr(weight),
                _ptr_or_null(bias),
                np.int32(hidden),
                np.float32(eps),
            ),
        )
    return out


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` of a merged ``[rows, 2 * width]`` gate/up projection; see csrc/fused_ops.cu."""
    rows, width = gate_up.shape[0], gate_up.shape[1] // 2
    tag = _dtype_tag(gate_up)
    assert width % 8 == 0 and _vectorizable(gate_up)
    out = torch.empty(rows, width, dtype=gate_up.dtype, device=gate_up.device)
    if rows:
        _launch(
            f"silu_mul<{tag}>",
            (-(-width // (8 * _THREADS)), rows),
            (_THREADS,),
            (_ptr(out), _ptr(gate_up), np.int32(width), np.int64(gate_up.stride(0))),
        )
    return out


def rotary_and_cache(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    positions: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slots: torch.Tensor,
) -> None:
    """Rotate q and k ``[tokens, heads, d]`` (row-strided views) in place by their tokens'
    positions, then store k and v at ``slots`` (-1: skip); see csrc/fused_ops.cu."""
    tokens, heads, head = q.shape
    kv_heads = k.shape[1]
    tag = _dtype_tag(q)
    assert head % 16 == 0 and k.shape == v.shape == (tokens, kv_heads, head)
    assert all(t.stride(1) == head for t in (q, k, v)) and _vectorizable(q, k, v, cos, sin)
    assert k_cache.is_contiguous() and v_cache.is_contiguous() and k_cache.shape[2:] == (kv_heads, head)
    assert cos.is_contiguous() and sin.is_contiguous() and cos.shape[1] == head
    assert all(t.dtype == q.dtype for t in (k, v, cos, sin, k_cache, v_cache))
    assert positions.dtype == slots.dtype == torch.int64 and positions.stride(0) == slots.stride(0) == 1
    items = (heads + kv_heads) * head // 16 + kv_heads * head // 8
    if tokens:
        _launch(
            f"rotary_and_cache<{tag}>",
            (-(-items // _THREADS), tokens),
            (_THREADS,),
            (
                _ptr(q),
                _ptr(k),
                _ptr(v),
                _ptr(k_cache),
                _ptr(v_cache),
                _ptr(positions),
                _ptr(slots),
                _ptr(cos),
                _ptr(sin),
                np.int32(heads),
                np.int32(kv_heads),
                np.int32(head),
                np.int64(q.stride(0)),
                np.int64(k.stride(0)),
                np.int64(v.stride(0)),
            ),
        )
