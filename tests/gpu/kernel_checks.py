"""Attention outputs against a float64 reference one sequence at a time: shared by the CUDA
kernel tests (test_kernels_cuda.py) and the CPU tests of the check itself
(test_kernel_checks.py).

Why per sequence: one relative-error norm over a whole batch dilutes a fault that touches one
sequence. On an H200, a decode kernel that drops the newest token of a 513-token sequence
is at least 8.3e-3 off on that sequence (random inputs, every case of test_paged_decode_grid)
but under 9.5e-3 over the batch of CONTEXTS, inside the 1e-2 the whole-batch check allowed:
the one-token sequence's output, a single V row, outweighs the long ones' averages.
"""

from __future__ import annotations

import torch

CONTEXTS = [1, 37, 512, 513, 2000]  # inside one split-K partition, at its edge, over it


def random_decode_case(dtype, head, block_size, heads, kv_heads, contexts, seed, device="cuda"):
    """Caches filled with random values, each sequence on randomly chosen blocks; q is a
    row-strided view, as the runner passes a slice of the fused QKV output. Returns q,
    k_cache, v_cache, block tables and context lengths."""
    g = torch.Generator(device=device).manual_seed(seed)
    per_seq = [-(-n // block_size) for n in contexts]
    num_blocks = sum(per_seq) + 3
    k_cache = torch.randn(num_blocks, block_size, kv_heads, head, device=device, generator=g).to(dtype)
    v_cache = torch.randn(num_blocks, block_size, kv_heads, head, device=device, generator=g).to(dtype)
    perm = torch.randperm(num_blocks, device=device, generator=g).tolist()
    tables, width = [], max(per_seq)
    for n in per_seq:
        tables.append(perm[:n] + [0] * (width - n))
        perm = perm[n:]
    qkv = torch.randn(len(contexts), heads + 2 * kv_heads, head, device=device, generator=g).to(dtype)
    tables_t = torch.tensor(tables, dtype=torch.int32, device=device)
    lens_t = torch.tensor(contexts, dtype=torch.int32, device=device)
    return qkv[:, :heads], k_cache, v_cache, tables_t, lens_t


def sequence_errors(out: torch.Tensor, ref: torch.Tensor, rows: list[int] | None = None) -> torch.Tensor:
    """Each sequence's relative error ``|out_i - ref_i| / |ref_i|`` (Frobenius norms over its
    rows, heads and channels); ``rows``: output rows per sequence (a prefill's new tokens),
    one each by default (decode). ``ref`` (float64) is first rounded to ``out``'s dtype, so a
    correct kernel is held to its own arithmetic rather than to the output format's rounding,
    which alone is 2.1e-4 in float16 and 1.7e-3 in bfloat16 (measured on the decode grid)."""
    assert not out.isnan().any(), "unwritten (NaN-poisoned) or NaN output"
    out, ref = out.double().cpu(), ref.to(out.dtype).double().cpu()
    sizes = rows or [1] * len(out)
    return torch.stack([(o - r).norm() / r.norm() for o, r in zip(out.split(sizes), ref.split(sizes))])


def decode_bound(dtype: torch.dtype) -> float:
    """Half the format's unit roundoff (eps / 4: 2.4e-4 in float16, 2.0e-3 in bfloat16). On an
    H200 the decode kernel's worst sequence over test_paged_decode_grid is 6.3e-5 off in
    float16 and 4.4e-4 in bfloat16 (a few outputs rounded the other way): the bound is about
    4x above that, and 4x (bfloat16) to 34x (float16) below the dropped-token fault."""
    return torch.finfo(dtype).eps / 4
