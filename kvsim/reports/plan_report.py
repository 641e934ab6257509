"""What `simcli plan` prints and draws: the ranked table, the answer with its confidence and
the assumptions it rests on, and the cost-latency Pareto front. Takes the planner's
``PlanResult`` (kvsim.experiments.plan) as given: reports and experiments share a layer."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

#: The planner's search axes, in its order, as the table heads them.
AXIS_LABELS = {
    "gpu": "GPU",
    "tensor_parallel": "TP",
    "block_size": "block",
    "policy": "policy",
    "scheduler": "scheduler",
    "max_num_seqs": "max seqs",
    "max_num_batched_tokens": "max tokens",
    "router": "router",
}


def _seconds(value: float) -> str:
    if value != value:
        return "-"
    return f"{value * 1e3:,.0f} ms" if value < 1 else f"{value:,.2f} s"


def _rate(value: float) -> str:
    return f"{value:.2f}"


def hardware_label(result, c) -> str:
    """``a100-80gb``, ``4x a100-80gb (TP 4)``, with the other searched options that vary."""
    gpus = c.gpu if c.tensor_parallel == 1 else f"{c.tensor_parallel}x {c.gpu} (TP {c.tensor_parallel})"
    others = [
        f"{AXIS_LABELS[k]} {v}"
        for k, v in c.hardware.items()
        if k not in ("gpu", "tensor_parallel") and len({h.get(k) for h in result.spec.configs}) > 1
    ]
    return gpus + (f", {', '.join(others)}" if others else "")


def describe_config(result, c) -> str:
    """``4 x a100-80gb``: the replicas of a configuration."""
    return f"{c.replicas} x {hardware_label(result, c)}"


def print_plan(console: Console, result) -> None:
    spec = result.spec
    base = spec.config(spec.configs[0])
    console.print(
        f"Plan: [bold]{base.model}[/] serving {base.trace} ({base.arrival} arrivals) at "
        f"[bold]{spec.target_rate:g} req/s[/]; SLOs: {', '.join(s.label for s in spec.slos)}"
        + (f"; at least {spec.min_goodput:.0%} of requests meeting all" if spec.min_goodput else ""),
        highlight=False,
    )
    console.print(
        f"Each probe: {spec.requests_per_replica:,} requests per replica, seeds "
        f"{', '.join(map(str, spec.seeds))}, judged after warm-up; one replica's capacity by "
        f"bisection on the rate to within {spec.tolerance:.0%}; every replica count checked by "
        f"simulating the cluster at {spec.target_rate:g} req/s.",
        highlight=False,
    )
    # the GPU always; tensor parallelism when any replica is split; the others when they vary
    varied = [
        k
        for k in AXIS_LABELS
        if k == "gpu"
        or (k == "tensor_parallel" and any(c.tensor_parallel > 1 for c in result.configs))
        or len({h.get(k) for h in spec.configs}) > 1
    ]
    table = Table(title="Configurations, cheapest first", show_header=True)
    for column in (
        *(AXIS_LABELS[k] for k in varied),
        "replicas",
        "$/hour",
        "$/M tok",
        "req/s per\nreplica",  # by seed: the worst, which sizes the cluster, to the best
        *(f"{s.name}\nat target" for s in spec.slos),
        "goodput",
        "profile",
    ):
        table.add_column(column, justify="left" if column in AXIS_LABELS.values() else "right")
    for c in result.ranked():
        capacity = "-" if not c.capacities else f"{_rate(min(c.capacities))}-{_rate(max(c.capacities))}"
        resolved = {"gpu": c.gpu, "tensor_parallel": c.tensor_parallel}  # defaults filled in
        head = [str(resolved.get(k, c.hardware.get(k, ""))) for k in varied]
        if c.replicas is None:  # the reason is printed under the table
            table.add_row(*head, "-", "", "", capacity)
            continue
        table.add_row(
            *head,
            str(c.replicas),
            f"{c.cost_per_hour:,.2f}",
            f"{c.cost_per_million_output_tokens:,.3f}",
            capacity,
            *(_seconds(c.worst(s.key)) for s in spec.slos),
            f"{c.goodput:.1%}",
            result.cost_models.get(c.check[0]["cost_model"], ""),
        )
    console.print(table)
    for c in result.ranked():
        if c.replicas is None:
            console.print(f"{hardware_label(result, c)}: {c.error}", highlight=False, markup=False)
    print_answer(console, result)


def print_answer(console: Console, result) -> None:
    """The cheapest configuration, how it was checked, how sure the answer is, and what it
    assumes."""
    spec, best = result.spec, result.cheapest
    prices = spec.prices
    if best is None:
        console.print(
            f"[bold]No configuration[/] meets the SLOs at {spec.target_rate:g} req/s within "
            f"{spec.max_replicas} replicas.",
            highlight=False,
        )
    else:
        console.print(
            f"[bold]Answer: {describe_config(result, best)}[/] ({best.gpus} GPUs) serve "
            f"{spec.target_rate:g} req/s within the SLOs: ${best.cost_per_hour:,.2f} per hour, "
            f"${best.cost_per_million_output_tokens:,.3f} per million output tokens.",
            highlight=False,
        )
        worst = ", ".join(f"{s.name} {_seconds(best.worst(s.key))}" for s in spec.slos)
        console.print(
            f"Checked: {best.replicas} replicas at {spec.target_rate:g} req/s meet the SLOs with "
            f"every seed (worst seed: {worst}, goodput {best.goodput:.1%}).",
            highlight=False,
        )
        if best.fewer_check:
            failing = [r for r in best.fewer_check if not r.get("meets")]
            unstable = sum(1 for r in failing if r.get("stable") is False)
            first = spec.slos[0]
            console.print(
                f"{best.replicas - 1} replicas do not: {len(failing)} of {len(spec.seeds)} seeds miss "
                f"(worst {first.name} "
                f"{_seconds(max(r.get(first.key, math.nan) for r in best.fewer_check))}"
                + (f"; the queue grows in {unstable} of them" if unstable else "")
                + ").",
                highlight=False,
            )
        low, high = min(best.capacities), max(best.capacities)
        by_best = math.ceil(spec.target_rate / high - 1e-9)
        console.print(
            f"Confidence: one replica carries {low:.2f} req/s at the worst seed, {high:.2f} at the "
            f"best (spread {best.spread:.0%} of the mean over {len(spec.seeds)} seeds); "
            + (
                f"the best seed's capacity would also give {by_best} replicas before the check."
                if by_best == math.ceil(spec.target_rate / low - 1e-9)
                else f"the best seed's capacity would give {by_best} replicas, the worst's "
                f"{math.ceil(spec.target_rate / low - 1e-9)}: the count is close to a boundary, "
                "settled by the cluster check (more seeds, --seeds, make it surer)."
            ),
            highlight=False,
        )
    console.print(
        "Prices, dollars per GPU-hour: "
        + ", ".join(f"{gpu} {prices.prices[gpu]:g}" for gpu in sorted({c.gpu for c in result.configs}))
        + f" ({prices.path}, dated {prices.date}: {prices.source}).",
        highlight=False,
        markup=False,
    )


def profile_warnings(result) -> list[str]:
    """A line for each cost model behind the answers that was not measured on its GPU (a
    derived profile, or the analytic roofline), then the runs' own warnings, each once."""
    lines = []
    for name, kind in sorted(result.cost_models.items()):
        if kind == "derived":
            lines.append(
                f"{name} is a derived profile (another GPU's measurements scaled by datasheet "
                "ratios), not measured on its GPU: answers priced by it inherit that error"
            )
        elif kind == "analytic":
            lines.append(f"{name} is the analytic roofline, not a measured profile")
    return lines + result.notes


def write_pareto_figure(result, path: Path) -> Path:
    """Cost per hour against each SLO's statistic at the target (worst seed), one panel per
    SLO; the Pareto front joined, the SLO's limit dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slos = result.spec.slos
    feasible = [c for c in result.configs if c.replicas is not None]
    fig, axes = plt.subplots(1, len(slos), figsize=(5.5 * len(slos), 4.2), squeeze=False)
    for ax, slo in zip(axes[0], slos):
        for c in feasible:
            ax.scatter(c.cost_per_hour, c.worst(slo.key), color="tab:blue", zorder=3)
            ax.annotate(
                describe_config(result, c),
                (c.cost_per_hour, c.worst(slo.key)),
                textcoords="offset points",
                xytext=(5, 5),
                fontsize=8,
            )
        front = sorted(result.pareto(slo), key=lambda c: c.cost_per_hour)
        if front:
            ax.plot(
                [c.cost_per_hour for c in front],
                [c.worst(slo.key) for c in front],
                color="tab:orange",
                drawstyle="steps-post",
                label="Pareto front",
            )
        ax.axhline(slo.limit_s, color="grey", linestyle="--", label=f"SLO: {slo.label}")
        ax.set_xlabel("cost, $ per hour")
        ax.set_ylabel(f"{slo.name} at {result.spec.target_rate:g} req/s (s)")
        ax.set_ylim(bottom=0)
        ax.margins(x=0.2)  # room for the labels
        ax.legend(loc="upper left", bbox_to_anchor=(0, -0.15), fontsize=8, frameon=False)
    fig.suptitle(
        f"{result.spec.config(result.spec.configs[0]).model}: configurations meeting the SLOs", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
