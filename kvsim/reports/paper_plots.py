"""The figures of ``simcli report paper`` that compare plots do not already draw: lines of one
metric against a setting, and grouped bars, each with its caption."""

from __future__ import annotations

from pathlib import Path

from kvsim.reports.plots import finish_figure, plt


def plot_lines(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    series: dict[str, tuple[list, list]],
    caption: str,
    logy: bool = False,
    logx: bool = False,
) -> Path:
    """One line per series (label -> (xs, ys))."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return finish_figure(fig, caption, path)


def plot_grouped_bars(
    path: Path, title: str, ylabel: str, groups: list[str], series: dict[str, list[float]], caption: str
) -> Path:
    """Bars of each series (label -> one value per group) side by side within each group."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(groups))]
        ax.bar(xs, values, width, label=label)
        for x, value in zip(xs, values):
            ax.text(x, value, f"{value:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return finish_figure(fig, caption, path)
