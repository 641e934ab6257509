"""The cross-machine campaign's tables, as docs/validation/README.md quotes them.

    python docs/validation/cross_machine.py

Reads docs/validation/cross-machine/machine-N/ (what `run.sh` there brought back from one
separately started H200 machine each): the anchor steps `simcli calibrate --check` timed
against the profile shipped at the time (check-MODEL.check.json, or the printed table in check-MODEL.log
where the machine ran the check before it wrote JSON), and each model's 1,000-request
validation folder, re-priced here without a GPU (`simcli validate --reprice`) by that profile
and, where the check wrote one on that machine, by the adjusted profile (made again here from
the anchors the check recorded, by its rule: adjusted_profile). The profile shipped at
the time is today's shipped one, unless the machine's ``profiles.txt`` names a folder here that
keeps the one it was checked against (a machine measured before the profiles were calibrated
again).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from kvsim.calibration.check import adjustment_needed, fit_factors, predict, with_factors
from kvsim.cost.profile import TERMS, decode_features, graph_for, load_profile, save_profile, shipped_profile
from kvsim.experiments.validate import reprice_campaign

ROOT = Path(__file__).resolve().parent / "cross-machine"
MODELS = ("opt-13b", "llama-2-7b")
GPU = "h200-141gb"


def machines() -> list[Path]:
    return sorted(p for p in ROOT.glob("machine-*") if p.is_dir())


def profile_of(machine: Path, model: str) -> Path:
    """The profile ``machine`` was checked and validated against (see the module docstring)."""
    named = machine / "profiles.txt"
    if named.exists():
        return ROOT / named.read_text().strip() / f"{model}@{GPU}.json"
    return shipped_profile(model, GPU)


def _from_log(text: str) -> list[dict]:
    """The anchors of a check that printed the decode's GPU and host parts as separate rows."""
    decode: dict[tuple[int, int], dict] = {}
    prefill = []
    for kind, a, b, ms in re.findall(r"^(decode|host|prefill) (\d+) x (\d+)\s+([\d.]+)", text, re.M):
        a, b, seconds = int(a), int(b), float(ms) / 1e3
        if kind == "prefill":
            prefill.append({"kind": "prefill", "new_tokens": [b] * a, "measured_s": seconds})
        elif kind == "decode":
            decode[a, b] = {"kind": "decode", "batch": a, "total_context": a * b, "gpu_s": seconds}
        else:
            decode[a, b]["measured_s"] = decode[a, b]["gpu_s"] + seconds
    return [*decode.values(), *prefill]


def anchors(machine: Path, model: str) -> tuple[list[dict], dict]:
    """The check's anchors on ``machine`` (decode: whole step and GPU part), and its report."""
    report_path = machine / f"{model}.adjusted.check.json"
    if report_path.exists():
        report = json.loads(report_path.read_text())
        return report["anchors"], report
    text = (machine / f"check-{model}.log").read_text()
    load = re.search(r"SM clock ([\d.]+) MHz.*?([\d.]+) W", text, re.S)
    report = {"under_load": {"clocks.sm": float(load[1]), "power.draw": float(load[2])}} if load else {}
    return _from_log(text), report


def gpu_part(doc: dict, anchor: dict) -> float:
    """The profile's price of a decode anchor's GPU time (its host work left out)."""
    coef = np.array([doc["coefficients"]["decode"][t] for t, _ in TERMS["decode"]])
    rows, partition = graph_for(doc["graph_batch_sizes"], doc["attention_partition"], anchor["batch"])
    return float(
        decode_features(anchor["batch"], rows, partition, np.array([anchor["total_context"]]))[0] @ coef
    )


def drift(machine: Path, model: str) -> dict:
    """Mean drift (measured / profile - 1) of the decode's GPU part, its host part (whole
    step minus GPU) and the prefills against the machine's profile (profile_of); and what the
    machine recorded under load."""
    doc = load_profile(profile_of(machine, model))
    points, report = anchors(machine, model)
    decode = [a for a in points if a["kind"] == "decode"]
    prefill = [a for a in points if a["kind"] == "prefill"]
    host = lambda a: predict(doc, a) - gpu_part(doc, a)  # noqa: E731
    return {
        "gpu": float(np.mean([a["gpu_s"] / gpu_part(doc, a) - 1 for a in decode])),
        "gpu_batch1": float(np.mean([a["gpu_s"] / gpu_part(doc, a) - 1 for a in decode if a["batch"] == 1])),
        "host_ms": float(np.mean([1e3 * (a["measured_s"] - a["gpu_s"]) for a in decode])),
        "host_profile_ms": float(np.mean([1e3 * host(a) for a in decode])),
        "prefill": float(np.mean([a["measured_s"] / predict(doc, a) - 1 for a in prefill])),
        "engine_factor": report.get("engine_factor"),
        "sm_clock": report.get("under_load", {}).get("clocks.sm"),
        "power": report.get("under_load", {}).get("power.draw"),
    }


def campaign(machine: Path, model: str) -> list[dict]:
    """The machine's validation point of ``model`` priced by its profile (profile_of), named
    by the date it was measured, and by the adjusted one where the check wrote it."""
    rows = []
    shipped = profile_of(machine, model)
    profiles = [(f"shipped, {created(shipped)}", shipped)]
    with tempfile.TemporaryDirectory() as tmp:
        adjusted = adjusted_profile(machine, model)
        if adjusted is not None:
            path = Path(tmp) / f"{model}.adjusted.json"
            save_profile(adjusted, path)
            profiles.append(("adjusted by --check", path))
        for name, profile in profiles:
            table = reprice_campaign(machine / model, str(profile))
            rows += [{"profile": name, **row} for row in table.to_dict("records")]
    return rows


def adjusted_profile(machine: Path, model: str) -> dict | None:
    """The profile `simcli calibrate --check` wrote on ``machine`` (where its drift passed the
    threshold), made again from the anchors it recorded and the machine's profile (profile_of)
    by the check's own rule, so that it follows the profile's terms when they are refitted."""
    report_path = machine / f"{model}.adjusted.check.json"
    if not report_path.exists():
        return None
    report = json.loads(report_path.read_text())
    if not adjustment_needed(report):
        return None
    doc = load_profile(profile_of(machine, model))
    return with_factors(doc, fit_factors(doc, report["anchors"]), report["engine_factor"] or 1.0)


def created(profile: Path) -> str:
    """The day ``profile`` was measured."""
    return json.loads(profile.read_text())["created"][:10]


def pct(x: float) -> str:
    return f"{100 * x:+.1f}%"


def drift_table() -> str:
    lines = [
        "| machine | model | decode GPU part | at batch 1 | runner host work, ms (profile) "
        "| prefill | engine work | SM clock under load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for machine in machines():
        for model in MODELS:
            d = drift(machine, model)
            engine = "not measured" if d["engine_factor"] is None else f"{d['engine_factor']:.2f}x"
            clock = (
                "not recorded" if d["sm_clock"] is None else f"{d['sm_clock']:.0f} MHz ({d['power']:.0f} W)"
            )
            lines.append(
                f"| {machine.name} | {model} | {pct(d['gpu'])} | {pct(d['gpu_batch1'])} "
                f"| {d['host_ms']:.2f} ({d['host_profile_ms']:.2f}) | {pct(d['prefill'])} | {engine} | {clock} |"
            )
    return "\n".join(lines)


def campaign_table() -> str:
    lines = [
        "| machine | point | profile | throughput | normalized latency | TTFT p90 | TPOT mean | e2e p90 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for machine in machines():
        for model in MODELS:
            for r in campaign(machine, model):
                lines.append(
                    f"| {machine.name} | {r['point']} | {r['profile']} "
                    f"| {pct(r['throughput_req_s_rel_error'])} "
                    f"| {pct(r['normalized_latency_s_per_token_rel_error'])} "
                    f"| {pct(r['ttft_s_p90_rel_error'])} | {pct(r['tpot_s_mean_rel_error'])} "
                    f"| {pct(r['e2e_latency_s_p90_rel_error'])} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(f"{drift_table()}\n\n{campaign_table()}\n")
