"""The runner's fused kernels (residual add + norm, silu(gate) * up, rotary embedding + KV-cache
write, the small-batch GEMV) against the unfused torch reference in float64, on fresh random
inputs (needs a GPU).

Each output is compared row by row (``sequence_errors``: float64 rounded to the dtype first),
so a fault confined to one row or to the tail of a row is not averaged away. A fused kernel
rounds once where the unfused ops round after every op, so it is held to a fraction of the
dtype's unit roundoff; a dropped bias, residual or rotation is off by orders of magnitude more.
"""

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

from kernel_checks import sequence_errors  # noqa: E402

from kvsim.gpu import kernels, ops, reference  # noqa: E402

DTYPES = [torch.float16, torch.bfloat16]


def _bound(dtype: torch.dtype) -> float:
    """eps / 4, as for decode attention (kernel_checks.decode_bound): 2.4e-4 in float16."""
    return torch.finfo(dtype).eps / 4


def _randn(*shape, dtype, g, scale=1.0):
    return (torch.randn(*shape, device="cuda", generator=g) * scale).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rms", [False, True])
@pytest.mark.parametrize("hidden", [64, 2056, 5120, 12288])
@pytest.mark.parametrize("with_delta,with_bias", [(False, False), (True, False), (True, True)])
def test_add_norm(dtype, rms, hidden, with_delta, with_bias):
    """Rows of 64 to 12288 values (2056: some threads without a share; 12288: two shares for
    some); the residual updated in place and the norm of the sum, LayerNorm and RMSNorm, with
    random weights."""
    g = torch.Generator(device="cuda").manual_seed(hidden + 2 * rms + with_delta + 4 * with_bias)
    rows = 7
    x = _randn(rows, hidden, dtype=dtype, g=g, scale=3.0) + 1.0  # a mean for LayerNorm to remove
    delta = _randn(rows, hidden, dtype=dtype, g=g) if with_delta else None
    delta_bias = _randn(hidden, dtype=dtype, g=g) if with_bias else None
    norm = ops.Norm(_randn(hidden, dtype=dtype, g=g), None if rms else _randn(hidden, dtype=dtype, g=g), 1e-5)
    double = lambda t: None if t is None else t.double()
    x_ref = x.double()
    expect = reference.add_norm(
        x_ref, double(norm.weight), double(norm.bias), norm.eps, double(delta), double(delta_bias)
    )
    before = x.clone()
    out = ops.add_norm(x, norm, delta, delta_bias)
    if with_delta:
        assert float(sequence_errors(x, x_ref).max()) < _bound(dtype) / 8
    else:
        assert torch.equal(x, before)
    # The residual is rounded to the dtype before it is normalised (as the unfused stream
    # was), which the float64 reference does not do: one more rounding, u = eps / 2.
    errors = sequence_errors(out, expect)
    print(f"add_norm rel err per row {errors.tolist()}")
    assert float(errors.max()) < torch.finfo(dtype).eps


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [8, 1000, 11008])
def test_silu_mul(dtype, width):
    g = torch.Generator(device="cuda").manual_seed(width)
    gate_up = _randn(5, 2 * width + 16, dtype=dtype, g=g, scale=2.0)[:, : 2 * width]  # row-strided
    out = ops.silu_mul(gate_up)
    errors = sequence_errors(out, reference.silu_mul(gate_up.double()))
    assert float(errors.max()) < _bound(dtype), errors.tolist()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head", [64, 80, 128])
@pytest.mark.parametrize("heads,kv_heads", [(8, 8), (8, 2)])
def test_rotary_and_cache(dtype, head, heads, kv_heads):
    """q and k rotated in place inside a fused QKV output, k (rotated) and v stored at their
    slots, padding slots (-1) left alone, the rest of the cache untouched."""
    g = torch.Generator(device="cuda").manual_seed(head * 10 + kv_heads)
    tokens, max_len, block_size, num_blocks = 37, 300, 16, 8
    qkv = _randn(tokens, heads + 2 * kv_heads, head, dtype=dtype, g=g)
    q, k, v = qkv[:, :heads], qkv[:, heads : heads + kv_heads], qkv[:, heads + kv_heads :]
    angles = torch.rand(max_len, head // 2, device="cuda", generator=g) * 6.3
    angles = torch.cat([angles, angles], dim=-1)
    cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
    positions = torch.randint(0, max_len, (tokens,), device="cuda", generator=g)
    slots = torch.randperm(num_blocks * block_size, device="cuda", generator=g)[:tokens]
    slots[::5] = -1
    caches = [torch.full((num_blocks, block_size, kv_heads, head), float("nan"), dtype=dtype, device="cuda")]
    caches.append(caches[0].clone())
    q_ref = reference.rotary(q.double(), positions, cos.double(), sin.double())
    k_ref = reference.rotary(k.double(), positions, cos.double(), sin.double())
    v_before = v.clone()

    ops.rotary_and_cache(q, k, v, positions, cos, sin, *caches, slots)

    for got, expect in ((q, q_ref), (k, k_ref)):
        errors = sequence_errors(got.reshape(tokens, -1), expect.reshape(tokens, -1))
        assert float(errors.max()) < _bound(dtype), errors.tolist()
    assert torch.equal(v, v_before)
    kept = slots >= 0
    for cache, new in zip(caches, (k, v)):
        flat = cache.view(-1, kv_heads, head)
        assert torch.equal(flat[slots[kept]], new[kept])  # bit for bit what the kernel left in qkv
        unwritten = torch.ones(flat.shape[0], dtype=torch.bool, device="cuda")
        unwritten[slots[kept]] = False
        assert flat[unwritten].isnan().all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 64])
@pytest.mark.parametrize("n,k", [(5003, 5120), (4096, 1000)])
@pytest.mark.parametrize("bias,relu", [(False, False), (True, False), (True, True)])
def test_linear(dtype, rows, n, k, bias, relu):
    """``ops.linear`` against float64: kvsim's GEMV up to GEMV_MAX_ROWS rows (an odd number of
    output rows: a warp's second row past the end; K not a multiple of a warp's 256-value
    step), cuBLAS / cuBLASLt (bias and ReLU epilogue) beyond; x a row-strided view."""
    g = torch.Generator(device="cuda").manual_seed(rows * 7 + n + bias + 2 * relu)
    x = _randn(rows, k + 8, dtype=dtype, g=g)[:, :k]
    w = _randn(n, k, dtype=dtype, g=g, scale=k**-0.5)
    b = _randn(n, dtype=dtype, g=g) if bias else None
    assert kernels.gemv_fits(x, w) == (rows <= kernels.GEMV_MAX_ROWS)
    out = ops.linear(x, w, b, relu=relu)
    expect = x.double() @ w.double().t() + (b.double() if bias else 0.0)
    if relu:
        expect = expect.clamp_min(0.0)
        assert bool((out >= 0).all())
    errors = sequence_errors(out, expect)
    # cuBLAS may reduce in the input precision (allow_fp16_reduced_precision_reduction): held
    # to the dtype's eps rather than the fused kernels' eps / 4.
    bound = _bound(dtype) if rows <= kernels.GEMV_MAX_ROWS else torch.finfo(dtype).eps
    print(f"linear rows {rows} rel err per row {errors.tolist()}")
    assert float(errors.max()) < bound, errors.tolist()
