"""Figures of one run (``simcli run --out DIR --plots``), from the tables it recorded: the KV cache
and the queue over time per replica, latency distributions, and every request's latency.

The over-time figure shows what the summary's means hide (a queue that keeps growing is a
system past its capacity; a cache pinned at full, one preempting); the CDFs show the tails
an SLO is written against; the scatter shows when in the run, and for which requests, the
latency went up.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from kvsim.engine.metrics import STATUS_COMPLETED, time_per_output_token  # noqa: E402
from kvsim.reports.plots import finish_figure  # noqa: E402


def plot_kv_and_queue(steps: pd.DataFrame, num_blocks: int, caption: str, path: Path) -> Path:
    """KV-cache usage and waiting requests per replica, as each step left them."""
    fig, (kv, queue) = plt.subplots(2, 1, figsize=(8, 5.6), sharex=True)
    for replica, rows in steps.groupby("replica", sort=True):
        end = rows["start"] + rows["duration"]
        label = f"replica {replica}"
        kv.step(end, 100 * rows["kv_blocks_used"] / num_blocks, where="post", linewidth=0.8, label=label)
        queue.step(end, rows["num_waiting"], where="post", linewidth=0.8, label=label)
    kv.set_ylabel("KV cache used (% of blocks)")
    kv.set_ylim(0, 105)
    kv.set_title("KV cache and queue over time")
    queue.set_ylabel("waiting requests")
    queue.yaxis.set_major_locator(MaxNLocator(integer=True))
    queue.set_xlabel("simulated time (s)")
    for ax in (kv, queue):
        ax.grid(True, alpha=0.3)
    if steps["replica"].nunique() > 1:
        kv.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return finish_figure(fig, caption, path)


def _cdf(ax, values: np.ndarray, title: str) -> None:
    values = np.sort(values[np.isfinite(values)])
    if not len(values):
        ax.text(0.5, 0.5, "no requests", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.plot(values, np.arange(1, len(values) + 1) / len(values), linewidth=1.2)
        for q, style in ((50, ":"), (90, "--"), (99, "-.")):
            v = np.percentile(values, q)
            ax.axvline(v, color="#888888", linestyle=style, linewidth=0.8, label=f"p{q} {v:.3g} s")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("seconds")
    ax.set_ylim(0, 1.01)
    ax.grid(True, alpha=0.3)


def plot_latency_cdfs(requests: pd.DataFrame, caption: str, path: Path) -> Path:
    """Distribution of TTFT, time per output token and end-to-end latency over completed requests."""
    done = requests[requests["status"] == STATUS_COMPLETED]
    tpot = time_per_output_token(
        done["first_token"].to_numpy(), done["finish"].to_numpy(), done["output_len"].to_numpy()
    )
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), sharey=True)
    _cdf(axes[0], done["ttft"].to_numpy(), "time to first token")
    _cdf(axes[1], tpot, "time per output token")
    _cdf(axes[2], done["e2e_latency"].to_numpy(), "end-to-end latency")
    axes[0].set_ylabel("share of completed requests")
    fig.suptitle("Latency distributions (CDF)")
    return finish_figure(fig, caption, path)


def plot_request_scatter(requests: pd.DataFrame, caption: str, path: Path) -> Path:
    """Each completed request: TTFT against its arrival time, and end-to-end latency against its
    output length (preempted requests marked)."""
    done = requests[requests["status"] == STATUS_COMPLETED]
    preempted = done["preemptions"] > 0
    fig, (ttft, e2e) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mask, label, color in ((~preempted, "not preempted", "#2b8cbe"), (preempted, "preempted", "#e34a33")):
        rows = done[mask]
        if len(rows):
            ttft.scatter(rows["arrival"], rows["ttft"], s=5, alpha=0.6, color=color, label=label)
            e2e.scatter(rows["output_len"], rows["e2e_latency"], s=5, alpha=0.6, color=color, label=label)
    ttft.set_xlabel("arrival time (s)")
    ttft.set_ylabel("time to first token (s)")
    ttft.set_title("TTFT by arrival", fontsize=10)
    e2e.set_xlabel("output length (tokens)")
    e2e.set_ylabel("end-to-end latency (s)")
    e2e.set_title("End-to-end latency by output length", fontsize=10)
    for ax in (ttft, e2e):
        ax.grid(True, alpha=0.3)
    e2e.legend(fontsize=7, loc="upper left", markerscale=3)
    return finish_figure(fig, caption, path)


def write_run_figures(
    requests: pd.DataFrame, steps: pd.DataFrame, num_blocks: int, caption: str, out: Path
) -> list[Path]:
    return [
        plot_kv_and_queue(steps, num_blocks, caption, out / "kv_and_queue.png"),
        plot_latency_cdfs(requests, caption, out / "latency_cdf.png"),
        plot_request_scatter(requests, caption, out / "request_scatter.png"),
    ]
