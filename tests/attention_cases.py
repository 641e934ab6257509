"""Random batched-prefill cases shared by the CPU reference tests and the CUDA tests."""

from __future__ import annotations

import random

import torch

from kvsim.gpu import ops, reference


def prefill_case(
    new: list[int],
    cached: list[int],
    heads: int,
    kv_heads: int,
    head_dim: int,
    block_size: int,
    dtype=torch.float64,
    device="cpu",
    seed: int = 0,
):
    """Sequences whose ``cached[i]`` first tokens already sit in a paged cache (random
    blocks) and whose ``new[i]`` next tokens are computed now. Returns the arguments of
    ``ops.prefill_attention`` (new tokens' K/V already written to the cache, as the runner
    does) and the expected output, from plain float64 attention over contiguous tensors."""
    rng = random.Random(seed)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)
    contexts = [n + c for n, c in zip(new, cached)]
    per_seq = [-(-t // block_size) for t in contexts]
    num_blocks = sum(per_seq) + 3
    free = rng.sample(range(num_blocks), num_blocks)
    k_cache, v_cache = (
        rand(num_blocks, block_size, kv_heads, head_dim),
        rand(num_blocks, block_size, kv_heads, head_dim),
    )
    qs, ks, vs, expected, slots = [], [], [], [], []
    for n, c, blocks in zip(new, cached, per_seq):
        table, free = free[:blocks], free[blocks:]
        q, k, v = rand(n, heads, head_dim), rand(n + c, kv_heads, head_dim), rand(n + c, kv_heads, head_dim)
        seq_slots = [table[i // block_size] * block_size + i % block_size for i in range(n + c)]
        k_cache.view(-1, kv_heads, head_dim)[seq_slots] = k
        v_cache.view(-1, kv_heads, head_dim)[seq_slots] = v
        expected.append(reference.attention(q, k, v, 0.3, causal_offset=c))
        qs.append(q)
        ks.append(k[c:])
        vs.append(v[c:])
        slots += seq_slots
    offsets = lambda lengths: torch.tensor(
        [0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device
    )
    layout = ops.PrefillLayout(list(new), list(cached), offsets(new))
    if any(cached):
        layout.context_offsets = offsets(contexts)
        layout.context_slots = torch.tensor(slots, device=device)
    to = lambda t: t.to(device=device, dtype=dtype)
    args = (to(torch.cat(qs)), to(torch.cat(ks)), to(torch.cat(vs)), to(k_cache), to(v_cache), layout, 0.3)
    return args, torch.cat(expected)
