"""Attention, KV-cache and fused layer operations: the CUDA kernels for CUDA tensors, the
torch reference otherwise. The model runner calls only these."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kvsim.gpu import reference


@dataclass(frozen=True)
class Norm:
    """A normalization layer: LayerNorm (OPT: weight and bias) or RMSNorm (LLaMA: no bias)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    eps: float


def add_norm(
    x: torch.Tensor,
    norm: Norm,
    delta: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    fused: bool = True,
) -> torch.Tensor:
    """``norm`` of each row of the residual stream ``x`` ``[tokens, hidden]``, after adding the
    previous sub-layer's output ``delta`` (and its bias) to x in place: the residual add and
    the norm that follows it, one kernel on GPU.

    ``fused`` off runs them as vLLM's 2023 engine did (the engine of the PagedAttention
    paper, which eager profiles stand for): the residual add as torch ops, then LayerNorm as
    torch's, RMSNorm as a kernel of its own (that engine had a custom RMSNorm kernel)."""
    if not x.is_cuda:
        return reference.add_norm(x, norm.weight, norm.bias, norm.eps, delta, delta_bias)
    from kvsim.gpu import kernels

    if fused:
        return kernels.add_norm(x, norm.weight, norm.bias, norm.eps, delta, delta_bias)
    if delta is not None:
        x.add_(delta)
        if delta_bias is not None:
            x.add_(delta_bias)
    if norm.bias is not None:
        return F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, eps=norm.eps)
    return kernels.add_norm(x, norm.weight, None, norm.eps)


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    relu: bool = False,
    out: torch.Tensor | None = None,
    fused: bool = True,
) -> torch.Tensor:
    """``x @ weight.T`` (+ ``bias``), then ReLU if asked (OPT's fc1), into ``out`` if given.

    On GPU, a decode batch of up to ``kernels.GEMV_MAX_ROWS`` rows runs kvsim's GEMV, which
    reads the weight once at close to the copy bandwidth; larger batches run cuBLAS, ReLU in
    cuBLASLt's bias epilogue (``_addmm_activation``) rather than a launch of its own.
    ``fused`` off runs cuBLAS at every batch size and ReLU as a launch of its own, as vLLM's
    2023 engine did."""
    if x.is_cuda and fused:
        from kvsim.gpu import kernels

        if kernels.gemv_fits(x, weight):
            return kernels.gemv(x, weight, bias, relu, out)
    if relu and not fused:
        return F.relu_(torch.addmm(bias, x, weight.t(), out=out))
    if relu:
        assert bias is not None and out is None
        return torch._addmm_activation(bias, x, weight.t())
    if bias is None:
        return torch.mm(x, weight.t(), out=out)
    return torch.addmm(bias, x, weight.t(), out=out)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """LLaMA's MLP activation ``silu(gate) * up`` of the merged gate/up projection (gate the
    first half of each row): one kernel on GPU, reading the projection once."""
    if gate_up.is_cuda:
        from kvsim.gpu import kernels

        return kernels.silu_mul(gate_up)
    return reference.silu_mul(gate_up)


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
    """LLaMA's rotary embedding of new tokens' q and k ``[tokens, heads, d]`` in place (cos/sin
    tables ``[max_len, d]`` by position), then k and v stored at ``slots`` (-1: skip): what
    ``write_kv`` does for OPT, with the rotation in the same kernel on GPU."""
    if q.is_cuda:
        from kvsim.gpu import kernels

        kernels.rotary_and_cache(q, k, v, positions, cos, sin, k_cache, v_cache, slots)
        return
    q.copy_(reference.rotary(q, positions, cos, sin))
    k.copy_(reference.rotary(k, positions, cos, sin))
    reference.reshape_and_cache(k, v, k_cache, v_cache, slots)


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    max_context_len: int,
) -> torch.Tensor:
    """``[num_seqs, heads, d]``: each sequence's one query over its paged context."""
    if q.is_cuda:
        from kvsim.gpu import kernels

        return kernels.paged_decode_attention(
            q, k_cache, v_cache, block_tables, context_lens, scale, max_context_len
        )
    return reference.paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale)


def write_kv(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Store new tokens' K/V ``[num_tokens, kv_heads, d]`` at flat slots (-1: skip)."""
    if key.is_cuda:
        from kvsim.gpu import kernels

        kernels.reshape_and_cache(key, value, k_cache, v_cache, slot_mapping)
    else:
        reference.reshape_and_cache(key, value, k_cache, v_cache, slot_mapping)


def copy_blocks(src: list[torch.Tensor], dst: list[torch.Tensor], pairs: list[tuple[int, int]]) -> None:
    """Block copy between caches (copy-on-write when ``src is dst``, swap across devices)."""
    if any(t.is_cuda for t in src + dst):
        from kvsim.gpu import kernels

        device = next(t.device for t in src + dst if t.is_cuda)
        kernels.copy_blocks(src, dst, torch.tensor(pairs, dtype=torch.int64, device=device).view(-1, 2))
    else:
        reference.copy_blocks(src, dst, pairs)


@dataclass
class PrefillLayout:
    """Where a batched prefill's sequences sit, built once per step and read by every layer.

    The new tokens of sequence i are rows ``new_offsets[i] .. new_offsets[i + 1]`` of q, k
    and v; it has ``cached[i]`` earlier tokens in the paged cache. ``context_slots`` holds
    the flat cache slots of every sequence's whole context (cached and new), concatenated,
    and ``context_offsets`` where each starts; both are None when nothing is cached.
    ``*_offsets`` are int32 device tensors (cumulative lengths, first 0).
    """

    new_lengths: list[int]
    cached: list[int]
    new_offsets: torch.Tensor
    context_offsets: torch.Tensor | None = None
    context_slots: torch.Tensor | None = None

    @property
    def any_cached(self) -> bool:
        return self.context_slots is not None


def _flash_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: PrefillLayout,
    context_offsets: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """PyTorch's flash-attention kernel over packed variable-length sequences (causal, the
    queries aligned with the end of each context; grouped-query heads handled natively).
    Called through aten directly: the public wrapper, torch.nn.attention.varlen, took 75 us
    of host time per call against 19 us here (H100 machine, torch 2.11), and eager prefill
    pays it in every layer."""
    longest = max(n + c for n, c in zip(layout.new_lengths, layout.cached))
    return torch.ops.aten._flash_attention_forward(
        q,
        k,
        v,
        layout.new_offsets,
        context_offsets,
        max(layout.new_lengths),
        longest,
        0.0,
        True,
        False,
        scale=scale,
    )[0]


def prefill_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    layout: PrefillLayout,
    scale: float,
) -> torch.Tensor:
    """New tokens (q, k, v ``[total_new, heads, d]``) attend causally to themselves and to
    their sequence's cached tokens in the paged cache (which already holds k and v).

    On GPU, one variable-length flash-attention call covers the whole batch: the host issues
    the same few launches whatever the number of sequences. A cached prefix is gathered from
    the cache first (one indexing op for all sequences); the causal mask then aligns each
    sequence's queries with the end of its context. On CPU each sequence runs through SDPA
    in turn.
    """
    if layout.any_cached:  # whole rows by index_select: a bandwidth-bound copy
        k, v = (
            cache.view(-1, cache[0, 0].numel())
            .index_select(0, layout.context_slots)
            .view(-1, *cache.shape[2:])
            for cache in (k_cache, v_cache)
        )
    if q.is_cuda:
        return _flash_varlen(
            q, k, v, layout, layout.context_offsets if layout.any_cached else layout.new_offsets, scale
        )
    outputs, q_start, k_start = [], 0, 0
    for n, c in zip(layout.new_lengths, layout.cached):
        outputs.append(
            sequence_prefill_attention(
                q[q_start : q_start + n], k[k_start : k_start + n + c], v[k_start : k_start + n + c], c, scale
            )
        )
        q_start, k_start = q_start + n, k_start + n + c
    return torch.cat(outputs)


def sequence_prefill_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_cached: int, scale: float
) -> torch.Tensor:
    """One sequence: q ``[n, heads, d]`` over its whole context k, v ``[num_cached + n, ...]``,
    causal with the queries at the context's end, through PyTorch's fused SDPA."""
    n, length = q.shape[0], k.shape[0]
    mask = torch.ones(n, length, dtype=torch.bool, device=q.device).tril(num_cached) if num_cached else None
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1),
        k.transpose(0, 1),
        v.transpose(0, 1),
        attn_mask=mask,
        is_causal=mask is None,
        scale=scale,
        enable_gqa=q.shape[1] != k.shape[1],
    )
    return out.transpose(0, 1)
