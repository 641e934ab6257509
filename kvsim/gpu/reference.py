"""Pure-torch versions of kvsim's kernels: the specification the CUDA kernels are tested
against, and the implementation CPU-only code runs.

Shapes follow the CUDA side: caches are ``[num_blocks, block_size, num_kv_heads, head_dim]``;
token ``i`` of a sequence lives in block ``table[i // block_size]``, slot ``i % block_size``.
Arithmetic runs in float32, or float64 when the inputs are float64 (tests use that).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def gather_kv(cache: torch.Tensor, table: list[int] | torch.Tensor, length: int) -> torch.Tensor:
    """The first ``length`` tokens of one sequence as a contiguous ``[length, kv_heads, head_dim]``."""
    block_size = cache.shape[1]
    pos = torch.arange(length, device=cache.device)
    table = torch.as_tensor(table, device=cache.device, dtype=torch.long)
    return cache[table[pos // block_size], pos % block_size]


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal_offset: int | None = None
) -> torch.Tensor:
    """Naive attention of q ``[nq, heads, d]`` over k, v ``[nk, kv_heads, d]`` (GQA by repeat).

    With ``causal_offset`` c, query i sees keys ``0 .. c + i`` (a prefix of c cached tokens).
    """
    acc = _acc_dtype(q)
    group = q.shape[1] // k.shape[1]
    k = k.to(acc).repeat_interleave(group, dim=1)
    v = v.to(acc).repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.to(acc), k) * scale
    if causal_offset is not None:
        nq, nk = q.shape[0], k.shape[0]
        visible = torch.arange(nk, device=q.device)[None, :] <= (
            causal_offset + torch.arange(nq, device=q.device)[:, None]
        )
        scores = scores.masked_fill(~visible, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(dim=-1), v)


def paged_decode_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables, context_lens, scale: float
) -> torch.Tensor:
    """One query token per sequence (q ``[num_seqs, heads, d]``) over its paged context.

    Rows with context length 0 (padding of a captured batch) come out as zeros.
    """
    out = torch.zeros(q.shape, dtype=q.dtype, device=q.device)
    for i, length in enumerate(torch.as_tensor(context_lens).tolist()):
        if length > 0:
            k = gather_kv(k_cache, block_tables[i], length)
            v = gather_kv(v_cache, block_tables[i], length)
            out[i] = attention(q[i : i + 1], k, v, scale)[0].to(q.dtype)
    return out


def reshape_and_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Write key/value ``[num_tokens, kv_heads, d]`` into flat slots; slot -1 is skipped."""
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    k_cache.view(-1, *k_cache.shape[2:])[slots] = key[keep].to(k_cache.dtype)
    v_cache.view(-1, *v_cache.shape[2:])[slots] = value[keep].to(v_cache.dtype)


def copy_blocks(src: list[torch.Tensor], dst: list[torch.Tensor], pairs: list[tuple[int, int]]) -> None:
    """``dst[j][d] = src[j][s]`` for every tensor j and pair (s, d); all reads before writes.

    With ``src is dst`` this is copy-on-write; with device and host tensors it is a swap.
    """
    if not pairs:
        return
    s_idx, d_idx = (list(x) for x in zip(*pairs))
    for s, d in zip(src, dst, strict=True):
        d[torch.tensor(d_idx, device=d.device)] = s[torch.tensor(s_idx, device=s.device)].to(d.device)


def add_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    eps: float,
    delta: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x += delta (+ delta_bias)`` in place when ``delta`` is given, then each row's norm:
    LayerNorm with ``bias``; RMSNorm without, in float32 and rounded to x's dtype before the
    weight (as Hugging Face's LLaMA does)."""
    if delta is not None:
        x.add_(delta if delta_bias is None else delta + delta_bias)
    if bias is not None:
        return F.layer_norm(x, (x.shape[-1],), weight, bias, eps=eps)
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` with gate and up the two halves of each row."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def rotary(x: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """LLaMA's rotary embedding of ``x`` ``[tokens, heads, d]``: each head's halves (x1, x2)
    become ``(x1 cos - x2 sin, x2 cos + x1 sin)`` at the token's position (tables
    ``[max_len, d]``, the angles repeated over the halves)."""
    cos, sin = cos[positions][:, None], sin[positions][:, None]
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin
