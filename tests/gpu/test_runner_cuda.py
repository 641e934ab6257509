"""The runner on the GPU: full-size layers of OPT-13B and Llama-2-7B (two of them) against
transformers in float32 with the same weights, eager and through captured CUDA graphs
(decode, and prefill with and without a cached prefix)."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

from kvsim.gpu.runner import ModelRunner  # noqa: E402
from kvsim.models import BUILTIN_CONFIGS, spec_from_hf_config  # noqa: E402

BLOCK = 16


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _two_layers(name: str, dtype: str):
    """Transformers' model of ``name`` cut to two full-size layers, random weights (fp32, on
    the GPU), and kvsim's spec of it in ``dtype``."""
    config = dict(BUILTIN_CONFIGS[name], num_hidden_layers=2)
    torch.manual_seed(0)
    cls = transformers.OPTForCausalLM if name.startswith("opt") else transformers.LlamaForCausalLM
    hf_config = (transformers.OPTConfig if name.startswith("opt") else transformers.LlamaConfig)(
        **{k: v for k, v in config.items() if k != "model_type"}
    )
    with torch.device("cuda"):
        hf = cls(hf_config).eval()
    return hf, spec_from_hf_config(config, name, dtype)


@pytest.mark.parametrize(
    "name,dtype", [("opt-13b", "float16"), ("llama-2-7b", "float16"), ("llama-2-7b", "bfloat16")]
)
def test_full_size_layers_match_transformers(name, dtype):
    hf, spec = _two_layers(name, dtype)
    runner = ModelRunner(spec, num_blocks=64, block_size=BLOCK, weights=hf.state_dict())
    gen = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, spec.vocab_size, (n,), generator=gen).tolist() for n in (100, 37)]
    follow = torch.randint(0, spec.vocab_size, (2, 3), generator=gen).tolist()
    tables = [list(range(0, 20)), list(range(40, 60))]
    # Rounding of the 16-bit runner against float32: a few units of the dtype's epsilon
    # (seen: fp16 ~1.5e-3, bf16 ~2e-2).
    bound = 5 * torch.finfo(runner.dtype).eps

    def hf_last(tokens):
        with torch.no_grad():
            return hf(input_ids=torch.tensor([tokens], device="cuda")).logits[0, -1]

    logits = runner.prefill(seqs, tables)
    errs = [_rel_err(logits[i], hf_last(s)) for i, s in enumerate(seqs)]
    runner.capture([1, 2, 4], prefill_tokens=[32, 64])
    for step in range(3):
        positions = [len(s) + step for s in seqs]
        logits = runner.decode([f[step] for f in follow], positions, tables)
        errs += [
            _rel_err(logits[i], hf_last(s + f[: step + 1])) for i, (s, f) in enumerate(zip(seqs, follow))
        ]
    # A graphed prefill (7 + 50 tokens, padded to 64): the first sequence goes on after its
    # 103 cached tokens, a fresh one starts in blocks 20-39.
    extra, fresh = (torch.randint(0, spec.vocab_size, (n,), generator=gen).tolist() for n in (7, 50))
    logits = runner.prefill([extra, fresh], [tables[0], list(range(20, 40))], [103, 0])
    errs += [_rel_err(logits[0], hf_last(seqs[0] + follow[0] + extra)), _rel_err(logits[1], hf_last(fresh))]
    # The first sequence alone: a batch of one, whose projections run kvsim's GEMV.
    context = seqs[0] + follow[0] + extra
    solo = torch.randint(0, spec.vocab_size, (1,), generator=gen).tolist()
    logits = runner.decode(solo, [len(context)], tables[:1])
    errs.append(_rel_err(logits[0], hf_last(context + solo)))
    print(
        f"{name} {dtype}: relative logit errors vs transformers fp32: " + " ".join(f"{e:.1e}" for e in errs)
    )
    assert max(errs) < bound, errs


@pytest.mark.parametrize("name", ["opt-13b", "llama-2-7b"])
def test_unfused_runner_matches_transformers(name):
    """The 2023 engine's unfused operations (what eager profiles measure) compute the same
    model: a prefill and eager decode steps at batch 2 and 1 (cuBLAS, not the GEMV)."""
    hf, spec = _two_layers(name, "float16")
    runner = ModelRunner(spec, num_blocks=64, block_size=BLOCK, weights=hf.state_dict(), fused=False)
    gen = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, spec.vocab_size, (n,), generator=gen).tolist() for n in (60, 21)]
    follow = torch.randint(0, spec.vocab_size, (2,), generator=gen).tolist()
    tables = [list(range(0, 20)), list(range(40, 60))]

    def hf_last(tokens):
        with torch.no_grad():
            return hf(input_ids=torch.tensor([tokens], device="cuda")).logits[0, -1]

    logits = runner.prefill(seqs, tables)
    errs = [_rel_err(logits[i], hf_last(s)) for i, s in enumerate(seqs)]
    logits = runner.decode(follow, [len(s) for s in seqs], tables)
    errs += [_rel_err(logits[i], hf_last(s + [f])) for i, (s, f) in enumerate(zip(seqs, follow))]
    logits = runner.decode(follow[:1], [len(seqs[0]) + 1], tables[:1])
    errs.append(_rel_err(logits[0], hf_last(seqs[0] + follow[:1] + follow[:1])))
    print(
        f"{name} unfused: relative logit errors vs transformers fp32: " + " ".join(f"{e:.1e}" for e in errs)
    )
    assert max(errs) < 5 * torch.finfo(runner.dtype).eps, errs
