"""The per-sequence check the CUDA kernel tests use, tried on CPU with the torch reference in
half precision standing in for a kernel: a correct implementation passes it, and a fault the
old whole-batch check let through fails it."""

import pytest

torch = pytest.importorskip("torch")

from kernel_checks import CONTEXTS, decode_bound, random_decode_case, sequence_errors  # noqa: E402

from kvsim.gpu import reference  # noqa: E402

HALF = [torch.float16, torch.bfloat16]


def _decode(dtype, contexts):
    """The reference decode of one random case in ``dtype`` (float32 arithmetic, as CPU-only
    code runs it) with the given context lengths, and the float64 result with the true ones."""
    q, kc, vc, tables, lens = random_decode_case(dtype, 128, 16, 8, 2, CONTEXTS, seed=5, device="cpu")
    out = reference.paged_decode_attention(q, kc, vc, tables, contexts, 128**-0.5)
    exact = reference.paged_decode_attention(q.double(), kc.double(), vc.double(), tables, lens, 128**-0.5)
    return out, exact


@pytest.mark.parametrize("dtype", HALF)
def test_a_correct_half_precision_decode_passes(dtype):
    """The check forgives what a correct kernel cannot avoid, rounding its output to ``dtype``
    (the exact result rounded is 0 off), and passes float32 arithmetic rounded once."""
    out, exact = _decode(dtype, CONTEXTS)
    assert float(sequence_errors(exact.to(dtype), exact).max()) == 0
    assert float(sequence_errors(out, exact).max()) < decode_bound(dtype)


@pytest.mark.parametrize("dtype", HALF)
def test_a_dropped_newest_token_fails_per_sequence_but_not_over_the_batch(dtype):
    """Attending to 512 of a 513-token sequence's tokens: that sequence, and only it, is out of
    bounds, while the batch-wide norm stays inside the 1e-2 the kernel tests used to allow."""
    faulty = [n - 1 if n == 513 else n for n in CONTEXTS]
    out, exact = _decode(dtype, faulty)
    errors = sequence_errors(out, exact)
    assert [bool(e > decode_bound(dtype)) for e in errors] == [n == 513 for n in CONTEXTS]
    assert float((out.double() - exact).norm() / exact.norm()) < 1e-2


def test_rows_group_a_prefill_by_sequence():
    """With ``rows``, each sequence's error is its rows' norm together: a wrong row counts in
    its own sequence only."""
    ref = torch.ones(5, 2, 4, dtype=torch.float64)
    out = ref.clone()
    out[3, 0, 0] = 1.5  # rows 0-1, 2-3 and 4 are the three sequences: row 3 is the second's
    errors = sequence_errors(out, ref, rows=[2, 2, 1])
    # The second sequence's reference has 2 rows x 8 ones: norm 4; its error norm is 0.5.
    torch.testing.assert_close(errors, torch.tensor([0, 0.5 / 4, 0], dtype=torch.float64))
