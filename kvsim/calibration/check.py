"""``simcli calibrate --check``: does the profile a run would use still hold on this machine?

A profile carried to another machine of the same GPU kind can be off by several percent
(docs/calibration.md, the drift study). The check times a few anchor steps in about a minute
-- whole decode steps (GPU and the runner's host work) from batch 1 (the weight read) to 256
(the KV read and the GEMMs' turn to compute), prefills from 128 to 2,048 tokens, and a short
burst served by the real executor for the engine's own per-step work -- and compares each
with what the profile prices. It records what could make this machine differ (clocks under
load and throttling, power limit, driver, cuBLAS, host CPU, the copy and matmul ceilings)
beside the profile's own record.

When the anchors drift by more than a threshold, it writes an *adjusted* profile. The rule
follows the one that derives a profile for another GPU (``kvsim.calibration.transfer``): each
scaling class of terms (fixed host and launch work, HBM bytes, tensor-core FLOPs) is
multiplied by one factor, here fitted to the anchors (non-negative least squares on relative
error) instead of taken from datasheets; the engine's term by its measured over priced time.
Copies and swaps (PCIe, not anchored) are kept. The adjusted profile says what it came from,
the factors, and every anchor before and after.

Predictions here leave out the physical floor the cost model applies (it never binds at the
anchors' sizes): then a prediction is linear in each class's coefficients, which the fit needs.
"""

from __future__ import annotations

import copy
import datetime
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kvsim.calibration.fit import nnls_fit
from kvsim.calibration.transfer import scaled_terms
from kvsim.cost.profile import (
    TERMS,
    PrefillTokens,
    decode_features,
    engine_features,
    graph_for,
    host_features,
    is_eager,
    prefill_features,
    save_profile,
)

#: Decode anchors: (sequences, context of each).
DECODE_ANCHORS = ((1, 256), (1, 1024), (16, 512), (64, 512), (128, 1024), (256, 256))
#: Prefill anchors: (sequences, new tokens of each), no cached prefix.
PREFILL_ANCHORS = ((1, 128), (1, 512), (4, 256), (1, 1024), (1, 2048))
#: Mean |drift| over the anchors above which an adjusted profile is written: the profiles'
#: own held-out goal (docs/calibration.md).
DRIFT_THRESHOLD = 0.03
#: The classes the anchors can tell apart; PCIe (swaps) is not anchored and stays as measured.
FITTED_CLASSES = ("fixed", "memory", "compute")
RULE = (
    "each scaling class's terms (fixed, memory, compute) x one factor fitted to the anchor "
    "steps' wall time (non-negative least squares on relative error); the engine term x its "
    "measured / priced seconds over a served burst; PCIe terms kept"
)


def anchors_within(max_model_len: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The anchors a model of this context length can run."""
    return (
        [(b, c) for b, c in DECODE_ANCHORS if c < max_model_len],
        [(s, n) for s, n in PREFILL_ANCHORS if n <= max_model_len],
    )


def predict(doc: dict, anchor: dict) -> float:
    """What ``doc`` prices an anchor at: the runner's whole step (seconds, without the floor
    and the engine's term), a decode's GPU time and host work, or a prefill's step."""
    coef = {
        kind: np.array([doc["coefficients"][kind][t] for t, _ in TERMS[kind]])
        for kind in ("decode", "host", "prefill")
    }
    if anchor["kind"] == "prefill":
        new = np.array(anchor["new_tokens"])
        tokens = PrefillTokens(doc["prefill_tokens"], doc["prefill_padding"])
        features = prefill_features(new, new, doc["model"]["num_heads"], doc["prefill_attention"])
        return tokens(float(new.sum())) + float(features @ coef["prefill"])
    batch = anchor["batch"]
    rows, partition = graph_for(doc["graph_batch_sizes"], doc["attention_partition"], batch)
    gpu = float(
        decode_features(batch, rows, partition, np.array([anchor["total_context"]]))[0] @ coef["decode"]
    )
    if "issue" in doc["coefficients"]:  # an eager step's GPU part waits for the host's issue
        issue = np.array([doc["coefficients"]["issue"][t] for t, _ in TERMS["issue"]])
        gpu = max(gpu, float(host_features(batch) @ issue))
    return gpu + float(host_features(batch) @ coef["host"])


def engine_factor(doc: dict, steps: list[dict]) -> float:
    """Measured over priced seconds of the engine's own work, over a served burst's steps."""
    coef = np.array([doc["coefficients"]["engine"][t] for t, _ in TERMS["engine"]])
    priced = sum(float(engine_features(s["seqs"]) @ coef) for s in steps)
    return sum(s["engine_s"] for s in steps) / priced


def with_factors(doc: dict, factors: dict[str, float], engine: float = 1.0) -> dict:
    """``doc`` with each scaling class's terms multiplied by ``factors`` (missing classes: 1)
    and the engine's term by ``engine``."""
    ratios = {cls: 1.0 for cls in ("fixed", "memory", "compute", "pcie")} | factors
    scaled = copy.deepcopy(doc)
    scaled["coefficients"], scaled["prefill_tokens"] = scaled_terms(doc, ratios)
    # The engine's term is the serving loop's host work, measured apart (engine_factor).
    scaled["coefficients"]["engine"] = {t: v * engine for t, v in doc["coefficients"]["engine"].items()}
    return scaled


def fit_factors(doc: dict, anchors: list[dict]) -> dict[str, float]:
    """The class factors that bring ``doc``'s predictions closest to the anchors (relative
    squared error). A class no anchor depends on keeps factor 1."""
    columns = []
    for cls in FITTED_CLASSES:
        alone = with_factors(doc, {c: float(c == cls) for c in (*FITTED_CLASSES, "pcie")})
        columns.append([predict(alone, a) for a in anchors])
    features = np.array(columns).T
    measured = np.array([a["measured_s"] for a in anchors])
    used = features.any(axis=0)
    factors = np.ones(len(FITTED_CLASSES))
    factors[used] = nnls_fit(features[:, used], measured)
    return dict(zip(FITTED_CLASSES, map(float, factors)))


def drift_table(doc: dict, anchors: list[dict]) -> list[dict]:
    """Each anchor with the profile's prediction and its drift (measured / predicted - 1)."""
    rows = []
    for a in anchors:
        predicted = predict(doc, a)
        rows.append({**a, "predicted_s": predicted, "drift": a["measured_s"] / predicted - 1.0})
    return rows


def mean_abs_drift(rows: list[dict]) -> float:
    return float(np.mean([abs(r["drift"]) for r in rows]))


def measure_anchors(
    spec, block_size: int, log: Callable[[str], None], graphs: bool = True
) -> tuple[list[dict], list[dict], dict]:
    """Time the anchors with the runner (only their graphs captured; none with ``graphs``
    off, as an eager profile measured it) and serve a short burst with the real executor
    (the engine's own work per step); return the anchors, the burst's steps, and the
    machine's ceilings, environment and clocks under load."""
    from kvsim.calibration.measure import Calibrator, Grid, LoadSampler, environment
    from kvsim.gpu.runner import padded_prefill_tokens

    decode, prefill = anchors_within(spec.max_model_len)
    grid = Grid(
        decode_batches=tuple(b for b, _ in decode),
        swap_blocks=(1,),
        engine_requests=128,
        repeats=10,
        prefill_repeats=5,
    )
    calibrator = Calibrator(spec, block_size, grid, log=log, graphs=graphs)
    graphable = {padded_prefill_tokens(s * n) for s, n in prefill}
    calibrator.setup(
        decode_graphs=sorted({b for b, _ in decode}),
        prefill_graphs=sorted(t for t in graphable if t <= 1024),
    )
    anchors = []
    with LoadSampler() as load:
        for batch, context in decode:
            point = calibrator.decode_point([context] * batch, heldout=False, mixed=False)
            anchors.append(
                {
                    "kind": "decode",
                    "batch": batch,
                    "total_context": batch * context,
                    "measured_s": point["wall_s"],
                    "gpu_s": point["gpu_s"],
                }
            )
        for seqs, tokens in prefill:
            point = calibrator.prefill_point([tokens] * seqs, [0] * seqs, heldout=False)
            anchors.append({"kind": "prefill", "new_tokens": [tokens] * seqs, "measured_s": point["wall_s"]})
        engine = calibrator.engine_points()
    machine = {
        "environment": environment(),
        "ceilings": calibrator.ceilings,
        "under_load": load.summary(),
        "setup_seconds": calibrator.setup_seconds,
    }
    return anchors, engine, machine


def adjustment_needed(report: dict) -> bool:
    """Whether a check's ``report`` (check_profile's) calls for the adjusted profile: the drift
    passed the threshold, and the fitted factors leave less of it."""
    drift = report["mean_abs_drift"]
    return drift > report["threshold"] and report["mean_abs_drift_adjusted"] < drift


def check_profile(
    doc: dict, anchors: list[dict], engine: list[dict], machine: dict, threshold: float = DRIFT_THRESHOLD
) -> tuple[dict, dict | None]:
    """The drift report of ``doc`` on the measured ``anchors`` and ``engine`` steps; and the
    adjusted profile when the anchors' mean |drift| exceeds ``threshold`` and the adjustment
    reduces it (else None)."""
    before = drift_table(doc, anchors)
    factors = fit_factors(doc, anchors)
    engine_scale = engine_factor(doc, engine)
    adjusted = with_factors(doc, factors, engine_scale)
    after = drift_table(adjusted, anchors)
    report = {
        "profile": doc["name"],
        "profile_created": doc["created"],
        "threshold": threshold,
        "mean_abs_drift": mean_abs_drift(before),
        "mean_abs_drift_adjusted": mean_abs_drift(after),
        "factors": factors,
        "engine_factor": engine_scale,
        "engine_steps": len(engine),
        "anchors": [
            {**b, "adjusted_s": a["predicted_s"], "adjusted_drift": a["drift"]} for b, a in zip(before, after)
        ],
        "ceilings": {"profile": doc.get("ceilings"), "here": machine["ceilings"]},
        "environment": {"profile": doc.get("environment"), "here": machine["environment"]},
        "under_load": machine["under_load"],
    }
    if not adjustment_needed(report):
        return report, None
    adjusted["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    adjusted["provenance"] = {
        "kind": "adjusted",
        "by": "simcli calibrate --check",
        "from": doc["name"],
        "source_created": doc["created"],
        "source_device": doc.get("environment", {}).get("host"),
        "rule": RULE,
        "factors": factors,
        "engine_factor": engine_scale,
    }
    adjusted["environment"] = machine["environment"]
    adjusted["ceilings"] = machine["ceilings"]
    adjusted["check"] = report
    return report, adjusted


def format_check(report: dict) -> list[str]:
    """The report as lines for the terminal."""
    lines = [
        f"{'anchor':<20}{'measured ms':>12}{'of it GPU':>11}{'profile ms':>12}{'drift':>9}{'adjusted':>10}"
    ]
    for a in report["anchors"]:
        if a["kind"] == "prefill":
            name, gpu = f"prefill {len(a['new_tokens'])} x {a['new_tokens'][0]}", ""
        else:
            name, gpu = f"decode {a['batch']} x {a['total_context'] // a['batch']}", f"{1e3 * a['gpu_s']:.3f}"
        lines.append(
            f"{name:<20}{1e3 * a['measured_s']:>12.3f}{gpu:>11}{1e3 * a['predicted_s']:>12.3f}"
            f"{100 * a['drift']:>+8.1f}%{100 * a['adjusted_drift']:>+9.1f}%"
        )
    here, there = report["ceilings"]["here"], report["ceilings"]["profile"] or {}
    for key, unit in (("copy_bandwidth", "TB/s"), ("matmul_flops", "TFLOP/s")):
        if key in there and key in here:
            lines.append(f"{key}: {here[key] / 1e12:.2f} {unit} here, {there[key] / 1e12:.2f} in the profile")
    load = report["under_load"]
    if load.get("samples"):
        lines.append(
            f"under load: SM clock {load['clocks.sm']} MHz, memory clock {load['clocks.mem']} MHz, "
            f"{load['power.draw']} W, throttle reasons {', '.join(load['throttle_reasons'])}"
        )
    f = report["factors"]
    lines.append(
        f"engine (serving loop) work: {report['engine_factor']:.2f}x the profile's, over "
        f"{report['engine_steps']} steps"
    )
    lines.append(
        f"mean |drift| {100 * report['mean_abs_drift']:.1f}% (threshold {100 * report['threshold']:.0f}%); "
        f"fitted factors fixed {f['fixed']:.3f}, memory {f['memory']:.3f}, compute {f['compute']:.3f} "
        f"leave {100 * report['mean_abs_drift_adjusted']:.1f}%"
    )
    return lines


def run_check(
    spec,
    doc: dict,
    out: Path | None,
    threshold: float,
    log: Callable[[str], None] = print,
) -> tuple[dict, Path | None]:
    """Measure the anchors, report (printed, and as JSON beside the adjusted profile's path),
    and write the adjusted profile when it is needed."""
    anchors, engine, machine = measure_anchors(spec, doc["block_size"], log, graphs=not is_eager(doc))
    report, adjusted = check_profile(doc, anchors, engine, machine, threshold)
    for line in format_check(report):
        log(line)
    out = out or Path(f"{doc['name']}.adjusted.json")
    report_path = out.with_name(out.name.removesuffix(".json") + ".check.json")
    report_path.write_text(json.dumps(report, indent=1) + "\n")
    log(f"wrote {report_path}")
    if adjusted is None:
        log("the profile holds on this machine: no adjusted profile written")
        return report, None
    path = save_profile(adjusted, out)
    log(f"wrote {path}: run with --profile {path}")
    return report, path
