"""Figures of a validation campaign: per-request latency, simulated against measured, and the
distribution of the cost model's per-step error on the batches that really ran."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def latency_scatter(requests: pd.DataFrame, path: Path, caption: str) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 6))
    done = requests.dropna(subset=["e2e_measured", "e2e_simulated"])
    for label, group in done.groupby("point", sort=False):
        ax.scatter(group.e2e_measured, group.e2e_simulated, s=8, alpha=0.6, label=label)
    top = float(max(done.e2e_measured.max(), done.e2e_simulated.max())) * 1.05 if len(done) else 1.0
    ax.plot([0, top], [0, top], color="black", linewidth=0.8, label="simulated = measured")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("measured end-to-end latency (s)")
    ax.set_ylabel("simulated end-to-end latency (s)")
    ax.set_title("Per-request latency: simulator vs real executor")
    ax.legend(fontsize=7, loc="upper left")
    fig.text(0.01, 0.005, caption, fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)


def step_error_histogram(steps: pd.DataFrame, path: Path, caption: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    error = 100 * (steps.predicted_s - steps.measured_s) / steps.measured_s
    bins = np.linspace(-30, 30, 61)
    for kind, group in error.groupby(steps.kind):
        ax.hist(
            group.clip(-30, 30),
            bins=bins,
            alpha=0.6,
            label=f"{kind} ({len(group):,} steps, mean |error| {group.abs().mean():.1f}%)",
        )
    ax.set_xlabel("per-step error of the cost model: (predicted - measured) / measured (%)")
    ax.set_ylabel("steps")
    ax.set_title("Step-time error on the batches the real executor ran")
    ax.legend(fontsize=8)
    fig.text(0.01, 0.005, caption, fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)
