"""The model runner against Hugging Face transformers on tiny random models (CPU, float32).

Weights travel through a safetensors checkpoint, so the loader is tested too. Block tables
are shuffled block ids, so paging is exercised, not just contiguous storage.
"""

import random

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from kvsim.gpu.runner import ModelRunner  # noqa: E402
from kvsim.models import load_model  # noqa: E402

BLOCK = 4


def _tiny(family: str):
    if family == "opt":
        return transformers.OPTConfig(
            vocab_size=96,
            hidden_size=64,
            num_hidden_layers=2,
            ffn_dim=128,
            num_attention_heads=4,
            max_position_embeddings=64,
            word_embed_proj_dim=64,
        )
    # LLaMA-3-like: grouped-query attention, untied LM head.
    return transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )


@pytest.fixture(scope="module", params=["opt", "llama"])
def models(request, tmp_path_factory):
    torch.manual_seed(0)
    config = _tiny(request.param)
    model_cls = transformers.OPTForCausalLM if request.param == "opt" else transformers.LlamaForCausalLM
    hf = model_cls(config).eval()
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path, safe_serialization=True)
    spec = load_model(str(path), dtype="float32")
    return hf, lambda fused=True: ModelRunner(
        spec, num_blocks=40, block_size=BLOCK, device="cpu", weights=str(path), num_host_blocks=8, fused=fused
    )


def _hf_logits(hf, tokens: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf(input_ids=torch.tensor([tokens])).logits[0]


def _tables(lengths: list[int], seed: int) -> list[list[int]]:
    free = random.Random(seed).sample(range(40), 40)
    return [[free.pop() for _ in range(-(-n // BLOCK))] for n in lengths]


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert float((a - b).norm() / b.norm()) < 1e-4


def test_prefill_matches_transformers(models):
    hf, make = models
    runner = make()
    seqs = [[3, 17, 5, 9, 44, 2, 61], [8, 1], [90, 4, 4, 4, 12]]
    logits = runner.prefill(seqs, _tables([len(s) for s in seqs], 1))
    for row, seq in zip(logits, seqs):
        _close(row, _hf_logits(hf, seq)[-1])


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused-2023-engine"])
def test_prefill_then_paged_decode_matches_full_forward(models, fused):
    hf, make = models
    runner = make(fused)
    seqs = [[5, 6, 7, 8, 9], [11, 12, 13]]
    follow = [[20, 21, 22, 23, 24, 25], [30, 31, 32, 33, 34, 35]]
    tables = _tables([len(s) + len(f) for s, f in zip(seqs, follow)], 2)
    runner.prefill(seqs, tables)
    for step in range(len(follow[0])):
        positions = [len(s) + step for s in seqs]
        logits = runner.decode([f[step] for f in follow], positions, tables)
        for i, (s, f) in enumerate(zip(seqs, follow)):
            _close(logits[i], _hf_logits(hf, s + f[: step + 1])[-1])


def test_prefill_with_cached_prefix(models):
    hf, make = models
    runner = make()
    seq = [7, 3, 9, 1, 4, 4, 2, 8, 50, 51, 52]
    table = _tables([len(seq)], 3)
    runner.prefill([seq[:6]], table)
    logits = runner.prefill([seq[6:]], table, num_cached=[6])
    _close(logits[0], _hf_logits(hf, seq)[-1])


def test_mixed_prefill_batch_of_cached_and_fresh_sequences(models):
    """Fresh sequences go through padded groups, cached ones through the paged path, in one step."""
    hf, make = models
    runner = make()
    cached_seq = [7, 3, 9, 1, 4, 4, 2, 8, 50, 51, 52]
    fresh = [[5, 6, 7, 8, 9, 10, 11, 12, 13], [2, 3], [40, 41, 42, 43, 44, 45, 46, 47]]
    tables = _tables([len(cached_seq)] + [len(s) for s in fresh], 5)
    runner.prefill([cached_seq[:6]], tables[:1])
    logits = runner.prefill([cached_seq[6:]] + fresh, tables, num_cached=[6, 0, 0, 0])
    for row, seq in zip(logits, [cached_seq] + fresh):
        _close(row, _hf_logits(hf, seq)[-1])


def test_a_mixed_step_of_chunks_and_decodes_matches_full_forward(models):
    """v1's mixed step: a first chunk, a later chunk over its cached start, and two decodes,
    in one forward pass, give each sequence the logits of its whole tokens so far."""
    hf, make = models
    runner = make()
    decoding = [[5, 6, 7, 8, 9], [11, 12, 13]]
    chunked = [7, 3, 9, 1, 4, 4, 2, 8, 50, 51, 52]
    fresh = [40, 41, 42, 43, 44, 45]
    tables = _tables([len(decoding[0]) + 1, len(decoding[1]) + 1, len(chunked), len(fresh)], 6)
    runner.prefill(decoding, tables[:2])
    runner.prefill([chunked[:4]], tables[2:3])
    follow = [60, 61]
    logits = runner.mixed(
        [chunked[4:], fresh[:3]],
        tables[2:],
        [4, 0],
        follow,
        [len(decoding[0]), len(decoding[1])],
        tables[:2],
    )
    expected = [chunked, fresh[:3], decoding[0] + [60], decoding[1] + [61]]
    assert logits.shape[0] == 4
    for row, seq in zip(logits, expected):
        _close(row, _hf_logits(hf, seq)[-1])


def test_copy_on_write_block_gives_same_continuation(models):
    """A forked sequence whose last, partly filled block was copied decodes like the original."""
    _, make = models
    runner = make()
    seq = [1, 2, 3, 4, 5, 6]  # blocks of 4: the second block holds 2 tokens
    table = _tables([8], 4)[0]
    runner.prefill([seq], [table])
    fork = [table[0], next(b for b in range(40) if b not in table)]
    runner.copy_blocks([(table[1], fork[1])])
    logits = runner.decode([9, 9], [6, 6], [table, fork])
    torch.testing.assert_close(logits[0], logits[1])


def test_swap_out_and_in_preserves_the_sequence(models):
    """Blocks swapped to host, the device copy destroyed, swapped back into other blocks."""
    _, make = models
    runner = make()
    seq = [4, 8, 15, 16, 23, 42, 7]
    table = _tables([8], 5)[0]
    runner.prefill([seq], [table])
    before = runner.decode([1], [7], [table])
    runner.swap_out([(b, h) for b, h in zip(table, [5, 2])])
    for cache in runner.caches:
        cache.fill_(float("nan"))
    moved = [b for b in range(40) if b not in table][:2]
    runner.swap_in(list(zip([5, 2], moved)))
    torch.testing.assert_close(runner.decode([1], [7], [moved]), before)


def test_runner_pads_prefills_as_profiles_price_them():
    """The runner's padding and the cost model's reading of a profile's ``prefill_padding``
    are one rule: a step is priced at the shape it runs as."""
    from kvsim.cost.padding import PREFILL_PADDING, padded_tokens
    from kvsim.gpu.runner import PREFILL_GRAPH_TOKENS, padded_prefill_tokens

    padding = dict(PREFILL_PADDING)
    for tokens in range(1, 3000):
        rows = padded_prefill_tokens(tokens)
        assert rows >= tokens and rows == padded_tokens(padding, tokens)
    assert all(padded_prefill_tokens(t) == t for t in PREFILL_GRAPH_TOKENS)
    assert padded_prefill_tokens(65) == 128 and padded_prefill_tokens(1025) == 1152
