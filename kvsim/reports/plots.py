"""Figures of a policy comparison (``simcli compare --out``), in the formats of the vLLM paper:
normalized latency against request rate (Fig. 12), the KV-cache waste breakdown (Fig. 2)
and the mean batch size (Fig. 13). Each figure says what was simulated in its caption.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from kvsim.engine.metrics import WASTE_KEYS  # noqa: E402

WASTE_LABELS = (
    "token states",
    "reservation",
    "internal fragmentation",
    "external fragmentation & other (free)",
)
WASTE_COLORS = ("#2b8cbe", "#a6bddb", "#fdae6b", "#d9d9d9")


def finish_figure(fig, caption: str, path: Path, right: float = 1.0) -> Path:
    """Caption at the bottom, layout (leaving ``right`` of the width to the axes), write, close."""
    fig.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=8, color="#444444", wrap=True)
    fig.tight_layout(rect=(0, 0.05, right, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _policies(table: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(table["policy"]))


def plot_latency_vs_rate(table: pd.DataFrame, caption: str, path: Path) -> Path:
    """Normalized latency (mean end-to-end latency / output length) against offered load."""
    fig, ax = plt.subplots(figsize=(8, 4.4))
    for policy in _policies(table):
        rows = table[table["policy"] == policy].sort_values("rate")
        ax.plot(rows["rate"], rows["normalized_latency_s_per_token"], marker="o", label=policy)
    ax.set_yscale("log")
    ax.set_xlabel("request rate (requests/s)")
    ax.set_ylabel("normalized latency (s/token, log scale)")
    ax.set_title("Normalized latency vs request rate")
    ax.grid(True, which="both", alpha=0.3)
    _legend_outside(ax, "policy")
    return finish_figure(fig, caption, path)


def _legend_outside(ax, title: str) -> None:
    """The legend right of the axes, where it hides no data however many lines there are."""
    ax.legend(title=title, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)


#: Panels per row of the waste figure: more rates wrap to further rows, not a wider strip.
PANELS_PER_ROW = 4


def plot_waste_breakdown(table: pd.DataFrame, caption: str, path: Path) -> Path:
    """Time-averaged share of the KV cache per use, one stacked bar per policy, one panel per rate."""
    rates = sorted(table["rate"].unique())
    policies = _policies(table)
    columns = min(len(rates), PANELS_PER_ROW)
    rows = -(-len(rates) // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(3.9 + 2.9 * columns, 0.6 + 4.2 * rows), sharey=True, squeeze=False
    )
    for ax in axes.flat[len(rates) :]:
        ax.set_visible(False)
    for ax, rate in zip(axes.flat, rates):
        rows = table[table["rate"] == rate].set_index("policy").loc[policies]
        bottom = pd.Series(0.0, index=policies)
        for key, label, color in zip(WASTE_KEYS, WASTE_LABELS, WASTE_COLORS):
            share = 100 * rows[key]
            ax.bar(policies, share, bottom=bottom, label=label, color=color, edgecolor="white")
            for x, (value, base) in enumerate(zip(share, bottom)):
                if value >= 6:
                    ax.text(x, base + value / 2, f"{value:.0f}", ha="center", va="center", fontsize=7)
            bottom += share
        ax.set_title(f"rate {rate:g} req/s")
        ax.tick_params(axis="x", rotation=45, labelsize=8)
        ax.set_ylim(0, 100)
    for row in axes:
        row[0].set_ylabel("share of KV cache, time average (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles[::-1], labels[::-1], loc="center right", fontsize=8, title="KV slots holding")
    fig.suptitle("Where the KV cache goes (time average over the run)")
    return finish_figure(fig, caption, path, right=1 - 3.5 / fig.get_figwidth())


def plot_batch_size(table: pd.DataFrame, caption: str, path: Path) -> Path:
    """Mean number of requests per engine step, per policy, one bar per request rate."""
    rates = sorted(table["rate"].unique())
    policies = _policies(table)
    width = 0.8 / len(rates)
    fig, ax = plt.subplots(figsize=(8, 4.4))
    for i, rate in enumerate(rates):
        rows = table[table["rate"] == rate].set_index("policy").loc[policies]
        xs = [x + (i - (len(rates) - 1) / 2) * width for x in range(len(policies))]
        ax.bar(xs, rows["mean_batch_size"], width, label=f"{rate:g}")
    ax.set_xticks(range(len(policies)), policies)
    ax.set_ylabel("mean batch size (requests per step)")
    ax.set_title("Mean batch size")
    ax.grid(True, axis="y", alpha=0.3)
    _legend_outside(ax, "request rate (req/s)")
    return finish_figure(fig, caption, path)


def write_compare_figures(table: pd.DataFrame, caption: str, out: Path) -> list[Path]:
    return [
        plot_latency_vs_rate(table, caption, out / "latency_vs_rate.png"),
        plot_waste_breakdown(table, caption, out / "waste_breakdown.png"),
        plot_batch_size(table, caption, out / "batch_size.png"),
    ]
