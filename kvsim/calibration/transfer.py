"""Derive a profile for a GPU nobody measured, from one that was, by each term's scaling class.

The rule (docs/calibration.md): a coefficient of class
  * "compute" is multiplied by source / target dense fp16 FLOP/s,
  * "memory"  by source / target HBM bandwidth,
  * "pcie"    by source / target PCIe bandwidth,
  * "fixed"   (host work, launch latency) is kept;
the prefill token table's first entry splits into the weight read (memory) and the rest
(fixed), and what each later entry adds to it is compute,
all from the datasheets (``kvsim.hardware``): the measured GPU's efficiency at each
rate is assumed to carry over. The decode kernel's block-size table (``decode_block_size``)
is kept as it is: its factors are ratios of one kernel's times on one GPU, assumed to hold on
another; so is prefill attention's solo rate (a ratio of paces on one SM), while its SM count
becomes the target's (built in: ``kvsim.hardware.SM_LIMITS``). An eager profile stays eager (``MODEL-eager@GPU``). The result says it is derived,
from what, and by which ratios; it carries no measurements of its own.

``python -m kvsim.calibration.transfer SRC.json GPU [--out FILE] [--block-sizes-from P.json]``
writes one (the last: the table of another profile of the model, where SRC has none);
:func:`transfer_error` measures the rule where both ends were measured.
"""

from __future__ import annotations

import argparse
import datetime
from dataclasses import asdict
from pathlib import Path

from kvsim.calibration.fit import prediction_errors
from kvsim.cost.profile import TERMS, check_model, is_eager, load_profile, profile_name, save_profile
from kvsim.errors import KvsimError
from kvsim.hardware import SM_LIMITS, GPUSpec, load_gpu
from kvsim.models import ModelSpec

RULE = (
    "compute terms x FLOP/s ratio, memory terms x HBM bandwidth ratio, PCIe terms x PCIe "
    "bandwidth ratio (datasheets, source over target); fixed terms kept; prefill token table: "
    "weight read x HBM ratio, rest of its first entry kept, increments x FLOP/s ratio"
)


def scaling_ratios(source: dict, target: GPUSpec) -> dict[str, float]:
    """Factor applied to each scaling class's coefficients going from ``source`` to ``target``."""
    return {
        "fixed": 1.0,
        "compute": source["fp16_flops"] / target.fp16_flops,
        "memory": source["hbm_bandwidth"] / target.hbm_bandwidth,
        "pcie": source["pcie_bandwidth"] / target.pcie_bandwidth,
    }


def scaled_terms(source: dict, ratios: dict[str, float]) -> tuple[dict, dict]:
    """``source``'s coefficients and prefill token table with each scaling class's terms
    multiplied by ``ratios[class]``: the token table's weight read as memory, the rest of its
    first entry as fixed, what each later entry adds as compute."""
    coefficients = {
        kind: {term: source["coefficients"][kind][term] * ratios[cls] for term, cls in terms}
        for kind, terms in TERMS.items()
        if kind in source["coefficients"]  # an optional kind the source did not measure stays absent
    }
    table = source["prefill_tokens"]
    first, weights = table["seconds"][0], table["weights_s"]
    base = weights * ratios["memory"] + (first - weights) * ratios["fixed"]
    prefill_tokens = {
        "tokens": table["tokens"],
        "weights_s": weights * ratios["memory"],
        "seconds": [base + (s - first) * ratios["compute"] for s in table["seconds"]],
    }
    return coefficients, prefill_tokens


def derive_profile(
    source: dict, target: GPUSpec, created: str | None = None, block_sizes: dict | None = None
) -> dict:
    """``source`` (a measured profile document) transferred to ``target``; ``block_sizes``: a
    profile of the same model whose decode block-size table to carry instead of the source's
    (the source measured none)."""
    if block_sizes is not None:
        check_model(block_sizes, ModelSpec(**source["model"]), block_sizes["name"])
        if block_sizes["block_size"] != source["block_size"] or "decode_block_size" not in block_sizes:
            raise KvsimError(
                f"--block-sizes-from {block_sizes['name']}: it holds no decode_block_size table "
                f"relative to block size {source['block_size']}"
            )
    if target.name not in SM_LIMITS:
        raise KvsimError(
            f"GPU {target.name!r} has no built-in SM count, which prefill attention's term needs "
            f"(GPUs with one: {', '.join(SM_LIMITS)})"
        )
    ratios = scaling_ratios(source["gpu"], target)
    coefficients, prefill_tokens = scaled_terms(source, ratios)
    keep = (
        "format",
        "version",
        "model",
        "dtype",
        "tensor_parallel",
        "block_size",
        "grid",
        "graph_batch_sizes",
        "prefill_padding",
        "attention_partition",
        "term_classes",
        "graphs",
        "decode_block_size",
    )
    doc = {k: source[k] for k in keep if k in source}
    if block_sizes is not None:
        doc["decode_block_size"] = {**block_sizes["decode_block_size"], "profile": block_sizes["name"]}
    doc.update(
        {
            "name": profile_name(source["model"]["name"], target.name, is_eager(source)),
            "gpu": asdict(target),
            "created": created or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "provenance": {
                "kind": "derived",
                "from": source["name"],
                "source_created": source["created"],
                "source_device": source.get("environment", {}).get("device_name"),
                "rule": RULE,
                "ratios": ratios,
            },
            "coefficients": coefficients,
            "prefill_tokens": prefill_tokens,
            "prefill_attention": {
                **source["prefill_attention"],
                "multiprocessors": SM_LIMITS[target.name].num_sms,
            },
            # What the source's fit achieved; the transfer's own error is in docs/calibration.md.
            "fit_report": {"source": source["fit_report"]},
        }
    )
    return doc


def transfer_error(source: dict, measured: dict, spec: ModelSpec) -> dict:
    """Errors of ``source`` transferred to ``measured``'s GPU against every step measured there."""
    from kvsim.cost.profile_model import ProfileCostModel, gpu_of

    model = ProfileCostModel(
        derive_profile(source, gpu_of(measured)), spec, measured["block_size"], engine=False
    )
    return {
        kind: prediction_errors(model, kind, measured["measurements"][kind])
        for kind in ("decode", "prefill", "copy", "swap")
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="measured profile")
    parser.add_argument("gpu", help="target GPU: built-in name or spec file")
    parser.add_argument("--out", type=Path, help="derived profile (default: MODEL@GPU.json)")
    parser.add_argument(
        "--block-sizes-from",
        type=Path,
        help="a profile of the same model whose decode block-size table the derived one carries "
        "(default: the source's, if it has one)",
    )
    args = parser.parse_args(argv)
    try:
        block_sizes = load_profile(args.block_sizes_from) if args.block_sizes_from else None
        doc = derive_profile(load_profile(args.source), load_gpu(args.gpu), block_sizes=block_sizes)
        print(save_profile(doc, args.out or Path(f"{doc['name']}.json")))
    except KvsimError as err:  # a bad file or GPU: one line, as simcli says it
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
