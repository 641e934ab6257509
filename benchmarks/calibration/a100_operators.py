"""Derived A100 profiles against real A100 measurements: the dense layers' part of kvsim's
derived ``MODEL@a100-80gb`` step cost beside the sum of the per-operator times Vidur measured on
A100s (github.com/microsoft/vidur, ``data/profiling/compute/a100/<model>/mlp.csv``), at Vidur's
token counts; where Vidur also measured the GPU the profile was derived from, the same on that
GPU, and the error of the rule alone.

    python benchmarks/calibration/a100_operators.py VIDUR_CHECKOUT [--commit SHA] [--out CSV]

VIDUR_CHECKOUT holds ``data/profiling/compute/``; SHA is the commit those files come from
(default: the checkout's HEAD). The CSV (default ``benchmarks/results/a100_operators.csv``) holds
the comparison only, never Vidur's data. docs/calibration.md quotes it.

What is compared, per model and token count n (one token per sequence for a decode, sequences of
32 tokens for a prefill, as the token table was measured):

* Vidur: the operators its predictor adds up for one decoder layer (norms, QKV projection, rotary
  embedding, output projection, MLP up/gate, activation, down projection, the residual add it
  times), each its median kernel time, summed and times the number of layers. Attention, the
  KV-cache write, embedding, LM head, sampling and CPU work are not in it.
* kvsim: the profile's memory and compute terms for the same work. Decode: the weight read
  (the layers' share of the weight bytes) plus the per-row terms at the graph's padded batch
  (the layers' share of the matmul FLOPs; the rest is the LM head's), context 0. Prefill: the
  layers' share of the weight read plus what the token table adds beyond its first entry (at the
  padded size the runner runs; the attention of 32-token sequences and the LM head of one row in
  32 are in it, both under a thousandth of a layer's FLOPs). The fixed-class remainder the
  transfer rule keeps unchanged (launch gaps, small kernels beyond the weight read, host work)
  is written beside it (``kvsim_kept_ms``), not added: Vidur's sum has no such term.

Errors are kvsim / Vidur - 1. ``rule_error`` = (kvsim derived / kvsim source) / (Vidur target /
Vidur source) - 1: how far the rule's factor from the source GPU to the A100 is from the factor
Vidur measured between the same two GPUs, whatever either runner's own speed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

from kvsim.cost.profile import PrefillTokens, graph_for, load_profile, shipped_profile
from kvsim.errors import KvsimError
from kvsim.models import ModelSpec, load_model

TARGET = "a100-80gb"  # Vidur's A100s are 80 GB ones
VIDUR_DEVICES = {"a100-80gb": "a100", "h100-sxm-80gb": "h100"}
VIDUR_MODELS = {
    "llama-2-7b": "meta-llama/Llama-2-7b-hf",
    "llama-2-70b": "meta-llama/Llama-2-70b-hf",
    "llama-3-8b": "meta-llama/Meta-Llama-3-8B",
    "llama-3-70b": "meta-llama/Meta-Llama-3-70B",
}
# One decoder layer's token-level operators, as Vidur's predictor adds them up per layer.
LAYER_OPERATORS = (
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
)
# Vidur's shape columns and the ModelSpec fields they must equal (at tensor parallelism 1).
SHAPE_COLUMNS = {
    "n_embd": "hidden_size",
    "n_expanded_embd": "intermediate_size",
    "n_head": "num_heads",
    "n_kv_head": "num_kv_heads",
}
COLUMNS = [
    "model",
    "step",
    "tokens",
    "kvsim_a100_ms",
    "vidur_a100_ms",
    "a100_error",
    "kvsim_kept_ms",
    "source_gpu",
    "kvsim_source_ms",
    "vidur_source_ms",
    "source_error",
    "rule_error",
    "vidur_commit",
]
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "a100_operators.csv"


def vidur_file(root: Path, gpu: str, model: str) -> Path:
    return root / "data" / "profiling" / "compute" / VIDUR_DEVICES[gpu] / VIDUR_MODELS[model] / "mlp.csv"


def read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise KvsimError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None


def vidur_layers_ms(table: pd.DataFrame, spec: ModelSpec, tensor_parallel: int, where: str) -> pd.Series:
    """Milliseconds of ``spec``'s decoder layers per step, by token count: Vidur's per-layer
    operator medians summed, times the layers (a token count measured twice: the median of
    each operator's). Refused when Vidur's shape columns describe another model."""
    wanted = [f"time_stats.{op}.median" for op in LAYER_OPERATORS]
    missing = [
        c for c in (*wanted, *SHAPE_COLUMNS, "num_tokens", "num_tensor_parallel_workers") if c not in table
    ]
    if missing:
        raise KvsimError(f"{where}: no column {missing[0]}")
    not_numbers = [c for c in (*wanted, "num_tokens") if not pd.api.types.is_numeric_dtype(table[c])]
    if not_numbers:
        raise KvsimError(f"{where}: {not_numbers[0]} holds something other than numbers")
    for column, field in SHAPE_COLUMNS.items():
        if set(table[column]) != {getattr(spec, field)}:
            raise KvsimError(
                f"{where}: {column} is {sorted(set(table[column]))}, {spec.name}'s {field} is "
                f"{getattr(spec, field)}"
            )
    rows = table[table["num_tensor_parallel_workers"] == tensor_parallel]
    if rows.empty:
        raise KvsimError(f"{where}: no rows at {tensor_parallel} tensor-parallel workers")
    per_layer = rows.groupby("num_tokens")[wanted].median().sum(axis=1)
    return per_layer * spec.num_layers


def layer_shares(spec: ModelSpec) -> tuple[float, float]:
    """The decoder layers' share of the weight bytes (the rest: embedding, final norm, LM head)
    and of the matmul FLOPs per token (the rest: the LM head)."""
    layer_matmul = spec.matmul_params_per_token - spec.vocab_size * spec.hidden_size
    return (
        spec.num_layers * spec.layer_params / spec.param_count,
        layer_matmul / spec.matmul_params_per_token,
    )


def kvsim_dense_s(doc: dict, spec: ModelSpec, step: str, tokens: int) -> float:
    """Seconds the profile's memory and compute terms give the decoder layers' dense work for
    ``tokens`` tokens in a ``step`` ("decode": one per sequence; "prefill")."""
    byte_share, flop_share = layer_shares(spec)
    if step == "decode":
        c = doc["coefficients"]["decode"]
        padded, _ = graph_for(doc["graph_batch_sizes"], doc["attention_partition"], tokens)
        rows = c["batch"] * padded + c["batch_squared"] * padded**2
        return c["weights"] * byte_share + rows * flop_share
    table = doc["prefill_tokens"]
    added = PrefillTokens(table, doc["prefill_padding"])(tokens) - table["seconds"][0]
    return table["weights_s"] * byte_share + added


def kvsim_kept_s(doc: dict, step: str) -> float:
    """The fixed-class part of a step that the rule keeps from the source GPU (not compared)."""
    if step == "decode":
        return doc["coefficients"]["decode"]["fixed"]
    return doc["prefill_tokens"]["seconds"][0] - doc["prefill_tokens"]["weights_s"]


def step_tokens(doc: dict, vidur_tokens) -> dict[str, list[int]]:
    """Vidur's token counts inside what the profile measured: decode batches up to its largest
    graph, prefills up to its token table's last entry."""
    largest_graph, last_entry = max(doc["graph_batch_sizes"]), doc["prefill_tokens"]["tokens"][-1]
    return {
        "decode": [int(n) for n in vidur_tokens if n <= largest_graph],
        "prefill": [int(n) for n in vidur_tokens if n <= last_entry],
    }


def compare(
    model: str, derived: dict, source: dict, vidur: dict[str, pd.Series], commit: str
) -> pd.DataFrame:
    """One model's rows: ``derived`` (its A100 profile) and ``source`` (the measured profile it
    was derived from) against ``vidur`` (layer milliseconds by token count, per kvsim GPU name;
    the source GPU's may be absent)."""
    spec = load_model(model).shard(derived["tensor_parallel"])
    source_gpu = source["gpu"]["name"]
    target, on_source = vidur[TARGET], vidur.get(source_gpu)
    rows = []
    for step, counts in step_tokens(derived, target.index).items():
        for n in counts:
            row = {
                "model": model,
                "step": step,
                "tokens": n,
                "kvsim_a100_ms": 1e3 * kvsim_dense_s(derived, spec, step, n),
                "vidur_a100_ms": target[n],
                "kvsim_kept_ms": 1e3 * kvsim_kept_s(derived, step),
                "source_gpu": source_gpu,
                "kvsim_source_ms": 1e3 * kvsim_dense_s(source, spec, step, n),
                "vidur_source_ms": on_source[n] if on_source is not None and n in on_source else float("nan"),
            }
            row["a100_error"] = row["kvsim_a100_ms"] / row["vidur_a100_ms"] - 1
            row["source_error"] = row["kvsim_source_ms"] / row["vidur_source_ms"] - 1
            row["rule_error"] = (row["kvsim_a100_ms"] / row["kvsim_source_ms"]) / (
                row["vidur_a100_ms"] / row["vidur_source_ms"]
            ) - 1
            rows.append(row | {"vidur_commit": commit})
    return pd.DataFrame(rows, columns=COLUMNS)


def models_to_compare() -> list[str]:
    """Models with a shipped derived A100-80GB profile and Vidur A100 data."""
    out = []
    for model in VIDUR_MODELS:
        path = shipped_profile(model, TARGET)
        if path is not None and load_profile(path)["provenance"]["kind"] == "derived":
            out.append(model)
    return out


def comparison(root: Path, commit: str) -> pd.DataFrame:
    frames = []
    for model in models_to_compare():
        derived = load_profile(shipped_profile(model, TARGET))
        source = load_profile(shipped_profile(model, derived["provenance"]["from"].split("@")[1]))
        spec = load_model(model)
        vidur = {}
        for gpu in (TARGET, source["gpu"]["name"]):
            path = vidur_file(root, gpu, model)
            if path.is_file():
                vidur[gpu] = vidur_layers_ms(read_csv(path), spec, derived["tensor_parallel"], str(path))
            elif gpu == TARGET:
                raise KvsimError(f"{path}: no such file (is {root} a Vidur checkout?)")
        frames.append(compare(model, derived, source, vidur, commit))
    return pd.concat(frames, ignore_index=True)


def head_commit(root: Path) -> str:
    """The commit checked out at ``root``, which must be the top of its own repository (inside
    another one, git would answer with that one's commit)."""
    git = lambda *args: subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    top = git("rev-parse", "--show-toplevel")
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root.resolve():
        raise KvsimError(f"{root}: not the top of a git checkout; name the commit of its data with --commit")
    return git("rev-parse", "HEAD").stdout.strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vidur", type=Path, help="a checkout of microsoft/vidur (its data/profiling/compute)")
    parser.add_argument(
        "--commit", help="the Vidur commit the data comes from (default: the checkout's HEAD)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the comparison CSV")
    args = parser.parse_args(argv)
    try:
        if not (args.vidur / "data" / "profiling" / "compute").is_dir():
            raise KvsimError(f"{args.vidur}: no data/profiling/compute (not a Vidur checkout)")
        if args.commit is not None and not re.fullmatch(r"[0-9a-f]{40}", args.commit):
            raise KvsimError(f"--commit {args.commit!r}: not a full 40-digit hexadecimal commit")
        table = comparison(args.vidur, args.commit or head_commit(args.vidur))
    except KvsimError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    table.to_csv(args.out, index=False, float_format="%.5g")
    for (model, step), rows in table.groupby(["model", "step"], sort=False):
        errors = rows["a100_error"].abs()
        print(
            f"{model:12s} {step:8s} {len(rows):4d} token counts {rows['tokens'].min()}-{rows['tokens'].max()}: "
            f"mean |error| {100 * errors.mean():.1f}%, worst {100 * errors.max():.1f}%"
        )
    print(args.out)


if __name__ == "__main__":
    main()
