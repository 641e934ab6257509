"""Figures of the shared-GPU experiments, in the shapes of Paella's: p99 latency against
achieved throughput per model and overall for every dispatch policy (Figs. 11-12), and each
model's mean latency against the fairness threshold with Jain's index (Fig. 13)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from kvsim.reports.plots import finish_figure, plt


def plot_load_sweep(table: pd.DataFrame, caption: str, path: Path) -> Path:
    """One panel per model and one for all jobs: each policy's p99 latency against the total
    throughput the GPU achieved at that load."""
    overall = table[table.model == "all"].set_index(["policy", "load"]).throughput_jobs_s
    panels = [*[m for m in table.model.unique() if m != "all"], "all"]
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows + 0.6), squeeze=False)
    for ax, model in zip(axes.flat, panels):
        for policy, group in table[table.model == model].groupby("policy", sort=False):
            x = overall.loc[list(zip(group.policy, group.load))].to_numpy()
            ax.plot(x, group.latency_p99_s * 1e3, marker="o", markersize=3, label=policy)
        ax.set_title("all jobs" if model == "all" else model, fontsize=9)
        ax.set_xlabel("achieved throughput (jobs/s)", fontsize=8)
        ax.set_ylabel("p99 latency (ms)", fontsize=8)
        ax.set_yscale("log")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    return finish_figure(fig, caption, path)


def plot_fairness(table: pd.DataFrame, caption: str, path: Path) -> Path:
    """Mean latency per model (left) and Jain's index over slowdowns (right) against the
    fairness threshold; an infinite threshold (pure SRPT) is drawn at the right end."""
    thresholds = sorted(table.threshold.unique())
    positions = {t: i for i, t in enumerate(thresholds)}
    labels = ["inf" if np.isinf(t) else f"{t:g}" for t in thresholds]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    for model, group in table[table.model != "all"].groupby("model", sort=False):
        left.plot(group.threshold.map(positions), group.latency_mean_s * 1e3, marker="o", label=model)
    jain = table.drop_duplicates("threshold")
    right.plot(jain.threshold.map(positions), jain.jain_index, marker="o", color="black")
    for ax, ylabel in ((left, "mean latency (ms)"), (right, "Jain's index over slowdowns")):
        ax.set_xticks(range(len(thresholds)), labels)
        ax.set_xlabel("fairness threshold", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
    left.set_yscale("log")
    right.set_ylim(0, 1.05)
    left.legend(fontsize=7)
    return finish_figure(fig, caption, path)


def plot_measured_vs_simulated(table: pd.DataFrame, caption: str, path: Path) -> Path:
    """One column per model and one for all jobs, p99 (top) and mean latency (bottom) against
    the throughput achieved, per policy: measured (solid, filled) beside simulated (dashed,
    open) at the same loads (kvsim.experiments.gpushare_real.measured_vs_simulated's table)."""
    panels = [*[m for m in table.model.unique() if m != "all"], "all"]
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 6.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    overall = table[table.model == "all"].set_index(["policy", "load"])
    for column, model in enumerate(panels):
        for index, (policy, group) in enumerate(table[table.model == model].groupby("policy", sort=False)):
            point = list(zip(group.policy, group.load))
            for row, metric in enumerate(("latency_p99_s", "latency_mean_s")):
                ax = axes[row, column]
                for source, style in (("measured", "-o"), ("simulated", "--o")):
                    x = overall.loc[point, f"throughput_jobs_s_{source}"].to_numpy()
                    ax.plot(
                        x,
                        group[f"{metric}_{source}"] * 1e3,
                        style,
                        color=colors[index % len(colors)],
                        markersize=3,
                        markerfacecolor="none" if source == "simulated" else None,
                        label=f"{policy} {source}",
                    )
                ax.set_yscale("log")
                ax.set_xlabel("achieved throughput (jobs/s)", fontsize=8)
                ax.set_ylabel(f"{'p99' if row == 0 else 'mean'} latency (ms)", fontsize=8)
        axes[0, column].set_title("all jobs" if model == "all" else model, fontsize=9)
    axes[0, 0].legend(fontsize=6)
    return finish_figure(fig, caption, path)
