"""A validation campaign's results as the Markdown tables docs/validation/README.md quotes.

    python docs/validation/table.py docs/validation/v1/opt-13b

Reads the folder `simcli validate --out` wrote: validation.csv (each metric measured,
simulated and the simulator's relative error), steps.csv (every executed step, measured and
predicted) and environment.json (each point's full configuration).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from kvsim.experiments.validate import step_error_summary

COLUMNS = {  # metric -> heading of its relative-error column
    "throughput_req_s": "throughput",
    "normalized_latency_s_per_token": "normalized latency",
    "ttft_s_p90": "TTFT p90",
    "tpot_s_p90": "TPOT p90",
    "e2e_latency_s_p90": "e2e p90",
    "ttft_s_p99": "TTFT p99",
    "preemptions": "preemptions",
}


def label(config: dict) -> str:
    trace = Path(config["trace"]).stem.split("_")[0] if "/" in config["trace"] else config["trace"]
    if "/" in config["trace"]:
        trace = f"Vidur's {trace}"
    parts = [f"{trace} {config['rate']:g} req/s", f"{config['scheduler']}"]
    if config.get("max_num_batched_tokens"):
        parts[-1] += f" (budget {config['max_num_batched_tokens']:,})"
    if config["gpu_memory_utilization"] != 0.9:
        parts.append(f"memory {config['gpu_memory_utilization']:g}")
    return ", ".join(parts)


def pct(value: float) -> str:
    return "-" if pd.isna(value) else f"{100 * value:+.1f}%"


def tables(folder: Path) -> str:
    results = pd.read_csv(folder / "validation.csv")
    configs = json.loads((folder / "environment.json").read_text())["configs"]
    lines = [
        "| point | requests | measured req/s | measured norm. latency (ms/token) | "
        + " | ".join(COLUMNS.values())
        + " |",
        "|---|---|---|---|" + "---|" * len(COLUMNS),
    ]
    for (_, row), config in zip(results.iterrows(), configs):
        errors = " | ".join(pct(row[f"{metric}_rel_error"]) for metric in COLUMNS)
        lines.append(
            f"| {label(config)} | {row.num_requests} | {row.throughput_req_s_measured:.2f} | "
            f"{1e3 * row.normalized_latency_s_per_token_measured:.1f} | {errors} |"
        )
    steps = pd.read_csv(folder / "steps.csv")
    lines.append("")
    for kind, e in step_error_summary(steps).items():
        lines.append(
            f"Per step, {kind}: {e['steps']:,} steps, mean error {100 * e['mean']:+.1f}%, "
            f"mean |error| {100 * e['mean_abs']:.1f}%, p90 |error| {100 * e['p90_abs']:.1f}%"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(f"### {Path(name).name}\n\n{tables(Path(name))}\n")
