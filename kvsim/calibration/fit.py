"""From raw measurements to a profile: non-negative least squares per step kind, a held-out report.

Coefficients are fitted with ``scipy.optimize.nnls`` on relative errors (each row divided
by its measured time), so short and long steps weigh alike and every coefficient is >= 0,
which keeps the cost monotone. Prefill's cost in its token count is not fitted but read from
the measured token table (made monotone); its terms fit what the table leaves, with attention's
solo rate searched on a grid (the one whose fit leaves the least error). The constant
of decode (and the token table's first entry) is split into the time to stream the weights
once at the bandwidth measured in the same run (memory-bound: scales with HBM bandwidth on
another GPU) and the rest (launches and host work: kept).
Held-out points are never fitted; the report predicts them with the finished cost model,
floor included, exactly as the simulator will.
"""

from __future__ import annotations

import datetime
import json
import warnings
from dataclasses import asdict

import numpy as np
from scipy.optimize import nnls

from kvsim.cost.profile import (
    ATTENTION_HEAD_DIM,
    FORMAT,
    SOLO_RATE_RANGE,
    TERMS,
    VERSION,
    PrefillAttention,
    PrefillTokens,
    block_features,
    decode_features,
    engine_features,
    graph_for,
    host_features,
    mixed_composition,
    mixed_features,
    model_fields,
    prefill_features,
    profile_name,
)
from kvsim.errors import KvsimError
from kvsim.hardware import SM_LIMITS, GPUSpec
from kvsim.models import ModelSpec

SPLIT_TERMS = ("fixed", "weights")  # one fitted intercept, split by the measured weight read
# An eager decode step whose GPU part ends within this factor of the host's issue of it was
# paced by the host (the GPU only finishes the last launches after it); beyond it, by the
# GPU's own work. The tenth leaves room for the last layer's kernels and the head.
HOST_PACED = 1.1
#: The solo rates (``prefill_attention.solo_rate``) the prefill fit tries: SOLO_RATE_RANGE in
#: twentieths. The rate enters the attention feature inside a maximum, not as a coefficient.
SOLO_RATES = tuple(round(float(r), 2) for r in np.linspace(*SOLO_RATE_RANGE, 11))


def nnls_fit(
    features: np.ndarray, measured: np.ndarray, relative: bool = True, known: np.ndarray | float = 0.0
) -> np.ndarray:
    """Non-negative coefficients for ``measured - known`` minimising the squared error,
    relative to ``measured`` by default."""
    scale = 1.0 / measured if relative else np.ones_like(measured)
    coef, _ = nnls(features * scale[:, None], (measured - known) * scale)
    return coef


def _fit_kind(
    kind: str,
    rows: np.ndarray,
    measured: np.ndarray,
    weight_read_s: float,
    relative: bool = True,
    known: np.ndarray | float = 0.0,
) -> dict[str, float]:
    """Fit one step kind (``known``: the part of each measurement already accounted for);
    where TERMS has both "fixed" and "weights", fit them as one."""
    names = [t for t, _ in TERMS[kind]]
    split = all(t in names for t in SPLIT_TERMS)
    keep = [i for i, t in enumerate(names) if not (split and t == "weights")]
    coef = dict(zip([names[i] for i in keep], nnls_fit(rows[:, keep], measured, relative, known)))
    if split:
        coef["weights"] = min(coef["fixed"], weight_read_s)
        coef["fixed"] -= coef["weights"]
    return {t: float(coef[t]) for t in names}


def multiprocessors(raw: dict, gpu: GPUSpec) -> int:
    """The measured GPU's SM count: as calibration recorded it, else the built-in GPU's."""
    recorded = raw["environment"].get("multiprocessors")
    if recorded:
        return int(recorded)
    if gpu.name in SM_LIMITS:
        return SM_LIMITS[gpu.name].num_sms
    raise KvsimError(f"the SM count of GPU {gpu.name!r} is neither recorded nor built in")


def _fit_prefill(
    points: list[dict], linear: PrefillTokens, heads: int, sms: int, weight_read_s: float
) -> tuple[dict[str, float], PrefillAttention]:
    """The prefill terms beyond the token table ``linear`` and the attention's solo rate: the
    terms fitted at each rate of SOLO_RATES, and the rate whose fit leaves the least relative
    squared error on ``points`` (the fitted ones: held-out points never choose)."""
    measured = np.array([p["wall_s"] for p in points])
    known = np.array([linear(sum(p["new_tokens"])) for p in points])
    best = None
    for rate in SOLO_RATES:
        attention: PrefillAttention = {"multiprocessors": sms, "solo_rate": rate}
        rows = np.array([prefill_features(*_prefill_args(p), heads, attention) for p in points])
        coef = _fit_kind("prefill", rows, measured, weight_read_s, known=known)
        predicted = rows @ np.array([coef[t] for t, _ in TERMS["prefill"]]) + known
        error = float(np.sum((predicted / measured - 1.0) ** 2))
        if best is None or error < best[0]:
            best = (error, coef, attention)
    return best[1], best[2]


def _host_paced(point: dict) -> bool:
    """Whether the host's issue set a decode step's pace (eager points carry ``issue_s``)."""
    return "issue_s" in point and point["gpu_s"] <= HOST_PACED * point["issue_s"]


def _errors(predicted: list[float], measured: list[float]) -> dict:
    if not measured:
        return {"n": 0}
    ape = np.abs(np.asarray(predicted) / np.asarray(measured) - 1.0)
    return {"n": len(measured), "mape": float(ape.mean()), "max_ape": float(ape.max())}


def _prefill_args(point: dict) -> tuple[np.ndarray, np.ndarray]:
    new = np.array(point["new_tokens"])
    return new, new + np.array(point["cached_tokens"])


def _span(values) -> list:
    return [min(values), max(values)]


def _mixed_args(point: dict) -> tuple[np.ndarray, np.ndarray]:
    """A mixed point's entries as the cost model takes them: chunks, then one-token decodes."""
    new, context = _prefill_args(point)
    decodes = np.array(point["decode_contexts"])
    return np.concatenate([new, np.ones_like(decodes)]), np.concatenate([context, decodes])


def _predict(model, kind: str, point: dict) -> float:
    if kind == "decode":
        return float(model.decode_times(point["batch"], point["total_context"], 1)[0])
    if kind == "prefill":
        return model.prefill_time(*_prefill_args(point))
    if kind == "mixed":
        return model.mixed_time(*_mixed_args(point))
    return model.copy_time(point["blocks"]) if kind == "copy" else model.swap_time(point["blocks"])


def prediction_errors(model, kind: str, points: list[dict]) -> dict:
    """MAPE and worst error of ``model`` on measured steps of one kind (wall time)."""
    return _errors([_predict(model, kind, p) for p in points], [p["wall_s"] for p in points])


def engine_residuals(coefficients: dict, points: list[dict]) -> dict:
    """How far the fitted engine term is from the measured steps, in seconds (its values are
    fractions of a millisecond and noisy, so relative errors would say little)."""
    if not points:
        return {"n": 0}
    predicted = np.array([engine_features(p["seqs"]) for p in points]) @ np.array(
        [coefficients[t] for t, _ in TERMS["engine"]]
    )
    measured = np.array([p["engine_s"] for p in points])
    return {
        "n": len(points),
        "mean_s": float(measured.mean()),
        "mean_abs_error_s": float(np.abs(predicted - measured).mean()),
        "mean_error_s": float((predicted - measured).mean()),
    }


def fit_report(doc: dict, raw: dict, spec: ModelSpec) -> dict:
    """Errors of the finished cost model on held-out points (decode, prefill) and, for copies
    and swaps (too few sizes to hold any out), on the fitted points. Grid points time the
    runner alone, so the engine term is left out of these predictions and reported apart."""
    from kvsim.cost.profile_model import ProfileCostModel

    model = ProfileCostModel(doc, spec, doc["block_size"], engine=False)
    report = {
        kind: {
            split: prediction_errors(model, kind, [p for p in raw[kind] if p["heldout"] is held])
            for split, held in (("heldout", True), ("fitted", False))
        }
        for kind in ("decode", "prefill")
    }
    for kind in ("copy", "swap", "mixed"):
        if raw.get(kind):
            report[kind] = {"fitted": prediction_errors(model, kind, raw[kind])}
    report["engine"] = engine_residuals(doc["coefficients"]["engine"], raw["engine"])
    held = [report[k]["heldout"] for k in ("decode", "prefill") if report[k]["heldout"]["n"]]
    n = sum(h["n"] for h in held)
    report["overall_heldout"] = {
        "n": n,
        "mape": sum(h["mape"] * h["n"] for h in held) / n if n else None,
        "max_ape": max((h["max_ape"] for h in held), default=None),
    }
    return report


def token_table(points: list[dict], weight_read_s: float) -> dict:
    """The prefill token table from its measurements: wall seconds by token count, each at
    least the one before (noise must not make more tokens cheaper)."""
    points = sorted(points, key=lambda p: sum(p["new_tokens"]))
    seconds = np.maximum.accumulate([p["wall_s"] for p in points])
    return {
        "tokens": [int(sum(p["new_tokens"])) for p in points],
        "seconds": seconds.tolist(),
        "weights_s": float(min(seconds[0], weight_read_s)),
    }


def block_size_factors(seconds: dict[int, list[float]], reference: int) -> dict[int, float]:
    """The ``decode_block_size`` factors from the decode kernel's times per block size (one
    per measured shape): the mean over the shapes of a block size's time over the time at
    ``reference``, the profile's own block size (exactly 1 there). Each shape weighs alike,
    whatever its length."""
    base = seconds[reference]
    return {
        size: 1.0 if size == reference else sum(t / b for t, b in zip(times, base)) / len(base)
        for size, times in seconds.items()
    }


def fit_profile(
    raw: dict,
    spec: ModelSpec,
    gpu: GPUSpec,
    block_size: int,
    created: str | None = None,
    tensor_parallel: int = 1,
) -> dict:
    """The profile document for ``raw`` (what :class:`~kvsim.calibration.measure.Calibrator`
    returns), measured on ``gpu`` with KV blocks of ``block_size`` tokens; ``spec`` is one
    rank's shard of a model split over ``tensor_parallel`` GPUs (``ModelSpec.shard``); ``raw``
    says whether the runner replayed CUDA graphs (``graphs``; an eager profile is named
    ``MODEL-eager@GPU``) and may carry the decode kernel's block-size table."""
    sizes, partitions = list(raw["graph_batch_sizes"]), list(raw["attention_partition"])
    graphs = raw.get("graphs", True)
    weight_read_s = spec.weight_bytes / raw["ceilings"]["copy_bandwidth"]
    dec = [p for p in raw["decode"] if not p["heldout"]]
    # An eager step's GPU part is the longer of the host's issue and the GPU's work: the
    # decode terms are fitted where the GPU set the pace, the issue where the host did.
    gpu_paced = [p for p in dec if not _host_paced(p)]
    host_paced = [p for p in dec if _host_paced(p)]
    pre = [p for p in raw["prefill"] if not p["heldout"]]
    table = token_table(raw["prefill_tokens"], weight_read_s)
    linear = PrefillTokens(table, raw["prefill_padding"])
    if spec.head_dim != ATTENTION_HEAD_DIM:
        warnings.warn(
            f"{spec.name}: head size {spec.head_dim}; prefill attention's thread blocks are those of "
            f"head size {ATTENTION_HEAD_DIM}, so its attention term is fitted to another kernel's tiling",
            stacklevel=2,
        )
    prefill, attention = _fit_prefill(pre, linear, spec.num_heads, multiprocessors(raw, gpu), weight_read_s)
    coefficients = {
        "decode": _fit_kind(
            "decode",
            np.array(
                [
                    decode_features(p["batch"], *graph_for(sizes, partitions, p["batch"]), p["total_context"])
                    for p in gpu_paced
                ]
            ),
            np.array([p["gpu_s"] for p in gpu_paced]),
            weight_read_s,
        ),
        # Host overhead is small and noisy (wall - GPU can be near 0): absolute errors.
        "host": _fit_kind(
            "host",
            np.array([host_features(p["batch"]) for p in dec]),
            np.array([max(p["wall_s"] - p["gpu_s"], 0.0) for p in dec]),
            weight_read_s,
            relative=False,
        ),
        "prefill": prefill,
        "copy": _fit_kind(
            "copy",
            np.array([block_features(p["blocks"]) for p in raw["copy"]]),
            np.array([p["wall_s"] for p in raw["copy"]]),
            weight_read_s,
        ),
        "swap": _fit_kind(
            "swap",
            np.array([block_features(p["blocks"]) for p in raw["swap"]]),
            np.array([p["wall_s"] for p in raw["swap"]]),
            weight_read_s,
        ),
        # Mean seconds matter to the simulated clock, outliers included: absolute errors.
        "engine": _fit_kind(
            "engine",
            np.array([engine_features(p["seqs"]) for p in raw["engine"]]),
            np.array([p["engine_s"] for p in raw["engine"]]),
            weight_read_s,
            relative=False,
        ),
    }
    if raw.get("mixed"):  # the mixed steps' own cost, beyond the prefill and decode terms in them
        context_s = coefficients["decode"]["context"]
        prefill_coef = np.array([prefill[t] for t, _ in TERMS["prefill"]])
        prefill_s = lambda new, context: float(
            prefill_features(new, context, spec.num_heads, attention) @ prefill_coef
        )
        coefficients["mixed"] = _fit_kind(
            "mixed",
            np.array([mixed_features(len(p["decode_contexts"])) for p in raw["mixed"]]),
            np.array([p["wall_s"] for p in raw["mixed"]]),
            weight_read_s,
            known=np.array(
                [mixed_composition(linear, prefill_s, context_s, *_mixed_args(p)) for p in raw["mixed"]]
            ),
        )
    if host_paced:
        coefficients["issue"] = _fit_kind(
            "issue",
            np.array([host_features(p["batch"]) for p in host_paced]),
            np.array([p["issue_s"] for p in host_paced]),
            weight_read_s,
            relative=False,
        )
    # The measured range is the fitted points': held-out ones test the fit, not widen it.
    prefill_tokens = [sum(p["new_tokens"]) for p in pre + raw["prefill_tokens"]]
    grid = {
        "decode": {
            "batch": _span([p["batch"] for p in dec]),
            "total_context": _span([p["total_context"] for p in dec]),
            "context_per_seq": _span([p["max_context"] for p in dec]),
        },
        "prefill": {
            "tokens": _span(prefill_tokens),
            "seqs": _span([len(p["new_tokens"]) for p in pre]),
            "context": _span([sum(p["new_tokens"]) + sum(p["cached_tokens"]) for p in pre]),
            "cached": _span([sum(p["cached_tokens"]) for p in pre]),
        },
        "copy": {"blocks": _span([p["blocks"] for p in raw["copy"]])},
        "swap": {"blocks": _span([p["blocks"] for p in raw["swap"]])},
        "engine": {"seqs": _span([p["seqs"] for p in raw["engine"]])},
    }
    if raw.get("mixed"):
        grid["mixed"] = {"decodes": _span([len(p["decode_contexts"]) for p in raw["mixed"]])}
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "name": profile_name(spec.name, gpu.name, eager=not graphs),
        "model": model_fields(spec),
        "gpu": asdict(gpu),
        "dtype": spec.dtype,
        "tensor_parallel": tensor_parallel,
        "block_size": block_size,
        "attention_partition": partitions,
        "created": created or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "provenance": {"kind": "measured", "by": "simcli calibrate" + ("" if graphs else " --eager")},
        "graphs": graphs,
        "environment": raw["environment"],
        "ceilings": raw["ceilings"],
        "calibration": {
            k: raw[k]
            for k in (
                "kv_capacity_tokens",
                "max_batched_tokens",
                "repeats",
                "setup_seconds",
                "measure_seconds",
            )
        },
        "grid": grid,
        "graph_batch_sizes": sizes,
        "prefill_padding": raw["prefill_padding"],
        "coefficients": coefficients,
        "prefill_tokens": table,
        "prefill_attention": attention,
        "term_classes": {kind: dict(terms) for kind, terms in TERMS.items()},
        "fit_report": {},
        "measurements": {
            k: raw[k]
            for k in ("decode", "prefill", "prefill_tokens", "copy", "swap", "engine", "mixed")
            if k in raw
        },
    }
    if "decode_block_size" in raw:
        doc["decode_block_size"] = raw["decode_block_size"]
    doc["fit_report"] = fit_report(doc, raw, spec)
    return doc


def format_report(doc: dict) -> list[str]:
    """The fit report as lines for the terminal."""
    r = doc["fit_report"]
    pct = lambda e: (
        f"MAPE {100 * e['mape']:.2f}%, worst {100 * e['max_ape']:.2f}% (n={e['n']})" if e.get("n") else "n=0"
    )
    lines = [f"{doc['name']} ({doc['provenance']['kind']}), block size {doc['block_size']}"]
    for kind in ("decode", "prefill"):
        lines.append(f"  {kind:8s} held out: {pct(r[kind]['heldout'])}; fitted: {pct(r[kind]['fitted'])}")
    for kind in ("copy", "swap", "mixed"):
        if kind in r:
            lines.append(f"  {kind:8s} fitted: {pct(r[kind]['fitted'])}")
    if "issue" in doc["coefficients"]:
        issue = doc["coefficients"]["issue"]
        lines.append(
            f"  issue    {1e3 * issue['fixed']:.3f} ms + {1e6 * issue['batch']:.2f} us/seq per eager decode "
            "step (the host's launches: the least its GPU part takes)"
        )
    engine, coef = r["engine"], doc["coefficients"]["engine"]
    if engine.get("n"):
        lines.append(
            f"  engine   {1e3 * coef['fixed']:.3f} ms + {1e6 * coef['seqs']:.2f} us/seq per step "
            f"(n={engine['n']} steps, mean {1e3 * engine['mean_s']:.3f} ms, "
            f"mean |error| {1e3 * engine['mean_abs_error_s']:.3f} ms)"
        )
    overall = r["overall_heldout"]
    if overall["n"]:
        goal = "meets" if overall["mape"] <= 0.03 and overall["max_ape"] <= 0.10 else "misses"
        lines.append(f"  all held out: {pct(overall)} -- {goal} the goal (MAPE <= 3%, worst <= 10%)")
    return lines


def refit(doc: dict, spec: ModelSpec, gpu: GPUSpec) -> dict:
    """``doc`` fitted again from the raw measurements it carries (after a change to the cost
    model's terms: no GPU needed). Its creation date, calibration times, block-size table and
    tensor-parallel degree (a shard stays a shard) are kept."""
    raw = {
        **doc["measurements"],
        **doc["calibration"],
        "environment": doc["environment"],
        "ceilings": doc["ceilings"],
        "graph_batch_sizes": doc["graph_batch_sizes"],
        "prefill_padding": doc["prefill_padding"],
        "attention_partition": doc["attention_partition"],
        "graphs": doc.get("graphs", True),
    }
    if "decode_block_size" in doc:  # measured apart from the grid: kept as it is
        raw["decode_block_size"] = doc["decode_block_size"]
    new = fit_profile(
        raw, spec, gpu, doc["block_size"], created=doc["created"], tensor_parallel=doc["tensor_parallel"]
    )
    new["calibration"] = doc["calibration"]
    return new


def main(argv: list[str] | None = None) -> None:
    """``python -m kvsim.calibration.fit PROFILE.json...``: refit measured profiles in place."""
    import argparse

    from kvsim.cost.profile import save_profile
    from kvsim.cost.profile_model import gpu_of

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("profiles", nargs="+")
    for path in parser.parse_args(argv).profiles:
        with open(path) as f:
            doc = json.load(f)
        refitted = refit(doc, ModelSpec(**doc["model"]), gpu_of(doc))
        save_profile(refitted, path)
        print("\n".join(format_report(refitted)))


if __name__ == "__main__":
    main()
