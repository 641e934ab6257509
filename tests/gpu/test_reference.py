"""The torch reference kernels (what CPU-only code runs) against plain contiguous attention."""

import random

import pytest

torch = pytest.importorskip("torch")

from attention_cases import prefill_case  # noqa: E402

from kvsim.gpu import ops, reference  # noqa: E402


def _scatter(cache: torch.Tensor, table: list[int], x: torch.Tensor) -> None:
    """Write contiguous ``x [len, kv_heads, d]`` into ``cache`` through a block table."""
    block_size = cache.shape[1]
    for i in range(x.shape[0]):
        cache[table[i // block_size], i % block_size] = x[i]


@pytest.mark.parametrize("block_size", [1, 3, 16])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (8, 2), (4, 1)])
def test_paged_decode_matches_contiguous(block_size, heads, kv_heads):
    rng, d = random.Random(block_size * 100 + heads * 10 + kv_heads), 16
    lens = [1, 7, 33]
    q = torch.randn(len(lens), heads, d, dtype=torch.float64)
    ks = [torch.randn(n, kv_heads, d, dtype=torch.float64) for n in lens]
    vs = [torch.randn(n, kv_heads, d, dtype=torch.float64) for n in lens]
    num_blocks = sum(-(-n // block_size) for n in lens) + 5
    k_cache = torch.randn(num_blocks, block_size, kv_heads, d, dtype=torch.float64)
    v_cache = torch.randn_like(k_cache)
    free, tables = rng.sample(range(num_blocks), num_blocks), []
    for k, v in zip(ks, vs):
        tables.append([free.pop() for _ in range(-(-k.shape[0] // block_size))])
        _scatter(k_cache, tables[-1], k)
        _scatter(v_cache, tables[-1], v)
    out = reference.paged_decode_attention(q, k_cache, v_cache, tables, lens, 0.25)
    for i, (k, v) in enumerate(zip(ks, vs)):
        # Naive attention written out with explicit per-head loops.
        for h in range(heads):
            kh = k[:, h // (heads // kv_heads)]
            p = torch.softmax(kh @ q[i, h] * 0.25, dim=0)
            torch.testing.assert_close(out[i, h], p @ v[:, h // (heads // kv_heads)])


def test_padding_rows_are_zero():
    q = torch.randn(2, 2, 8)
    cache = torch.randn(4, 2, 2, 8)
    out = reference.paged_decode_attention(q, cache, cache, [[0], [1]], [0, 2], 1.0)
    assert torch.equal(out[0], torch.zeros(2, 8)) and out[1].abs().sum() > 0


def test_reshape_and_cache_skips_negative_slots():
    k_cache, v_cache = torch.zeros(3, 4, 2, 8), torch.zeros(3, 4, 2, 8)
    key, value = torch.randn(3, 2, 8), torch.randn(3, 2, 8)
    reference.reshape_and_cache(key, value, k_cache, v_cache, torch.tensor([5, -1, 11]))
    assert torch.equal(k_cache[1, 1], key[0]) and torch.equal(v_cache[2, 3], value[2])
    assert int((k_cache.abs().sum(dim=(2, 3)) > 0).sum()) == 2


def test_copy_blocks_reads_before_writes():
    a = torch.randn(6, 2, 1, 4)
    b = torch.randn(6, 2, 1, 4)
    before = [a.clone(), b.clone()]
    reference.copy_blocks([a, b], [a, b], [(0, 3), (1, 4)])
    for t, old in zip((a, b), before):
        assert torch.equal(t[3], old[0]) and torch.equal(t[4], old[1])
        assert torch.equal(t[[0, 1, 2, 5]], old[[0, 1, 2, 5]])
    host = torch.zeros(2, 2, 1, 4)
    reference.copy_blocks([a], [host], [(5, 1)])
    assert torch.equal(host[1], a[5]) and torch.equal(host[0], torch.zeros(2, 1, 4))


@pytest.mark.parametrize("cached", [[0, 0, 0], [5, 0, 17], [3, 9, 1]])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2)])
def test_batched_prefill_attention_with_cached_prefixes(cached, heads, kv_heads):
    args, expect = prefill_case([6, 1, 11], cached, heads, kv_heads, 16, block_size=4, seed=sum(cached))
    out = ops.prefill_attention(*args)
    torch.testing.assert_close(out, expect, rtol=1e-5, atol=1e-5)
