"""Attention and KV-cache operations: the CUDA kernels for CUDA tensors, the torch
reference otherwise. The model runner calls only these."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kvsim.gpu import reference


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     block_tables: torch.Tensor, context_lens: torch.Tensor, scale: float,
                     max_context_len: int) -> torch.Tensor:
    """``[num_seqs, heads, d]``: each sequence's one query over its paged context."""
    if q.is_cuda:
        from kvsim.gpu import kernels
        return kernels.paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens,
                                              scale, max_context_len)
    return reference.paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale)


def write_kv(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
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


def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                      v_cache: torch.Tensor, block_table: list[int], num_cached: int,
                      scale: float) -> torch.Tensor:
    """One sequence's new tokens (q, k, v ``[n, heads, d]``) attend causally to themselves
    and to its ``num_cached`` earlier tokens in the paged cache (already holding k, v).

    PyTorch's fused SDPA does the work (flash attention on GPU when nothing is cached).
    With a cached prefix the whole context is gathered from the cache into contiguous
    tensors and masked bottom-right causally.
    """
    if num_cached:
        length = num_cached + q.shape[0]
        k = reference.gather_kv(k_cache, block_table, length)
        v = reference.gather_kv(v_cache, block_table, length)
        mask = torch.ones(q.shape[0], length, dtype=torch.bool, device=q.device).tril(num_cached)
    else:
        mask = None
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask,
        is_causal=mask is None, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    return out.transpose(0, 1)
