"""The cross-GPU transfer rule: H100 -> A100-40GB, each term scaled by the datasheet ratio of
the rate that bounds it, as docs/calibration.md states the rule."""

from dataclasses import asdict, replace

import pytest
from synthetic_steps import BLOCK_SIZE, SPEC, TABLE_TOKENS, TRUE, WEIGHT_READ_S, synthetic_raw, token_table_s

from kvsim.calibration.transfer import derive_profile, transfer_error
from kvsim.cost.profile import validate
from kvsim.errors import KvsimError
from kvsim.hardware import BUILTIN_GPUS

H100, A100 = BUILTIN_GPUS["h100-sxm-80gb"], BUILTIN_GPUS["a100-40gb"]
# Source over target: what takes 1 s on the H100 takes this long on the A100.
FLOPS = H100.fp16_flops / A100.fp16_flops  # dense fp16 tensor-core FLOP/s
HBM = H100.hbm_bandwidth / A100.hbm_bandwidth  # GPU memory bandwidth
PCIE = H100.pcie_bandwidth / A100.pcie_bandwidth  # host <-> GPU bandwidth
KEPT = 1.0  # host work and kernel launches do not depend on the GPU's rates
A100_SMS = 108  # the A100's streaming multiprocessors (its datasheet)

# Each term's factor, from what bounds it (written out here, not read from kvsim's TERMS).
FACTOR = {
    # launches; streaming the weights; rows through the GEMMs (linear and squared: compute);
    # reading the KV of the context and of a sequence's partition
    "decode": {
        "fixed": KEPT,
        "weights": HBM,
        "batch": FLOPS,
        "context": HBM,
        "partition": HBM,
        "batch_squared": FLOPS,
    },
    "host": {"fixed": KEPT, "batch": KEPT},  # the runner's Python
    "engine": {"fixed": KEPT, "seqs": KEPT},  # the serving loop's Python
    # per-sequence work and the gather's launches are host-side; attention's blocks are FLOPs
    # (the GPU's time per block with every SM busy); gathering the cached context reads GPU memory
    "prefill": {"seqs": KEPT, "attention": FLOPS, "gathered": HBM, "cached": KEPT},
    "copy": {"fixed": KEPT, "blocks": HBM},  # a block copy reads and writes GPU memory
    "swap": {"fixed": KEPT, "blocks": PCIE},  # a swap crosses PCIe
    "mixed": {"fixed": KEPT, "decodes": KEPT},  # the decodes' launches and uploads beside a chunk
}
SCALED = {
    kind: {term: value * FACTOR[kind][term] for term, value in terms.items()} for kind, terms in TRUE.items()
}


def a100_table_s(tokens: int) -> float:
    """The token table on an A100 where the rule holds: the weight read at its HBM bandwidth,
    the rest of the smallest prefill (launches) kept, what more rows add at its FLOP/s."""
    first = token_table_s(TABLE_TOKENS[0])
    return WEIGHT_READ_S * HBM + (first - WEIGHT_READ_S) + (token_table_s(tokens) - first) * FLOPS


@pytest.fixture(scope="module")
def derived(true_profile) -> dict:
    return validate(derive_profile(true_profile, A100), "derived")


def test_each_term_scales_by_the_ratio_of_its_class(derived):
    assert len({FLOPS, HBM, PCIE, KEPT}) == 4  # else a term in the wrong class could pass
    assert derived["coefficients"].keys() == SCALED.keys()
    for kind, terms in SCALED.items():
        assert derived["coefficients"][kind].keys() == terms.keys(), kind
        for term, value in terms.items():
            assert derived["coefficients"][kind][term] == pytest.approx(value, rel=1e-12), f"{kind}.{term}"


def test_token_table_scales_weights_by_bandwidth_and_increments_by_flops(derived):
    table = derived["prefill_tokens"]
    assert table["tokens"] == TABLE_TOKENS
    assert table["weights_s"] == pytest.approx(WEIGHT_READ_S * HBM, rel=1e-12)
    assert table["seconds"] == pytest.approx([a100_table_s(t) for t in TABLE_TOKENS], rel=1e-12)


def test_derived_profile_says_what_it_came_from(derived, true_profile):
    assert derived["name"] == "opt-13b@a100-40gb" and derived["gpu"] == asdict(A100)
    provenance = derived["provenance"]
    assert provenance["kind"] == "derived" and provenance["from"] == true_profile["name"]
    assert provenance["ratios"] == pytest.approx(
        {"fixed": KEPT, "compute": FLOPS, "memory": HBM, "pcie": PCIE}
    )
    assert "measurements" not in derived


def test_prefill_attention_keeps_its_solo_rate_on_the_target_sms(derived, true_profile):
    """The solo rate is a ratio of paces on one SM (kept); the SMs are the A100's."""
    assert derived["prefill_attention"] == {
        "multiprocessors": A100_SMS,
        "solo_rate": true_profile["prefill_attention"]["solo_rate"],
    }


def test_a_gpu_without_a_known_sm_count_is_refused(true_profile):
    """Prefill attention's critical path needs the target's SMs; a GPU file does not give them."""
    with pytest.raises(KvsimError, match="'my-a100' has no built-in SM count"):
        derive_profile(true_profile, replace(A100, name="my-a100"))


def test_transfer_error_measures_the_rule_against_the_target(true_profile):
    """Against an A100 whose steps really scale by the rule the transfer is exact; against
    one that runs as fast as the H100 it is off by the ratios."""

    def errors(table_s, coef):
        measured = {
            "gpu": asdict(A100),
            "block_size": BLOCK_SIZE,
            "measurements": synthetic_raw(
                train=20, heldout=0, coef=coef, table_s=table_s, noise=0.0, sms=A100_SMS
            ),
        }
        return transfer_error(true_profile, measured, SPEC)

    for kind, error in errors(a100_table_s, SCALED).items():
        assert error["n"] > 0 and error["max_ape"] < 1e-9, kind
    for kind, error in errors(token_table_s, TRUE).items():
        assert error["mape"] > 0.3, kind
