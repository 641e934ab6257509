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


def _targets(spec) -> str:
    """``20 req/s``; ``10, 20, 40 req/s``."""
    return f"{', '.join(f'{t:g}' for t in spec.target_rates)} req/s"


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
    """The question, one table of every configuration at every target (each target's rows
    cheapest first, the target a column when there are several: the tables of a range would
    repeat every capacity, and one table shows how cost grows with the load), then the answer
    at each target, then the prices."""
    spec = result.spec
    base = spec.config(spec.configs[0])
    several = len(spec.target_rates) > 1
    console.print(
        f"Plan: [bold]{base.model}[/] serving {base.trace} ({base.arrival} arrivals) at "
        f"[bold]{_targets(spec)}[/]; SLOs: {', '.join(s.label for s in spec.slos)}"
        + (f"; at least {spec.min_goodput:.0%} of requests meeting all" if spec.min_goodput else ""),
        highlight=False,
    )
    console.print(
        f"Each probe: {spec.requests_per_replica:,} requests per replica, seeds "
        f"{', '.join(map(str, spec.seeds))}, judged after warm-up; one replica's capacity by "
        f"bisection on the rate to within {spec.tolerance:.0%}"
        + (" (once for every target)" if several else "")
        + f"; every replica count checked by simulating the cluster at {_targets(spec)}.",
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
    title = "Configurations by target rate, cheapest first" if several else "Configurations, cheapest first"
    table = Table(title=title, show_header=True)
    for column in (
        *(["target\nreq/s"] if several else []),
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
    for target in spec.target_rates:
        if target != spec.target_rates[0]:
            table.add_section()
        for row, c in enumerate(result.ranked(target)):
            capacity = "-" if not c.capacities else f"{_rate(min(c.capacities))}-{_rate(max(c.capacities))}"
            resolved = {"gpu": c.gpu, "tensor_parallel": c.tensor_parallel}  # defaults filled in
            head = [f"{target:g}" if row == 0 else ""] if several else []
            head += [str(resolved.get(k, c.hardware.get(k, ""))) for k in varied]
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
    # a reason shared by every target (weights that do not fit) is said once
    failures = (
        f"{hardware_label(result, c)}: {c.error}"
        for t in spec.target_rates
        for c in result.ranked(t)
        if c.replicas is None
    )
    for line in dict.fromkeys(failures):
        console.print(line, highlight=False, markup=False)
    for target in spec.target_rates:
        print_answer(console, result, target)
    prices = spec.prices
    console.print(
        "Prices, dollars per GPU-hour: "
        + ", ".join(f"{gpu} {prices.prices[gpu]:g}" for gpu in sorted({c.gpu for c in result.configs}))
        + f" ({prices.path}, dated {prices.date}: {prices.source}).",
        highlight=False,
        markup=False,
    )


def print_answer(console: Console, result, target: float) -> None:
    """The cheapest configuration at ``target``, how it was checked and how sure the answer is."""
    spec, best = result.spec, result.cheapest(target)
    if best is None:
        console.print(
            f"[bold]No configuration[/] meets the SLOs at {target:g} req/s within "
            f"{spec.max_replicas} replicas.",
            highlight=False,
        )
        return
    console.print(
        f"[bold]Answer: {describe_config(result, best)}[/] ({best.gpus} GPUs) serve "
        f"{target:g} req/s within the SLOs: ${best.cost_per_hour:,.2f} per hour, "
        f"${best.cost_per_million_output_tokens:,.3f} per million output tokens.",
        highlight=False,
    )
    worst = ", ".join(f"{s.name} {_seconds(best.worst(s.key))}" for s in spec.slos)
    console.print(
        f"Checked: {best.replicas} replicas at {target:g} req/s meet the SLOs with "
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
    by_best = math.ceil(target / high - 1e-9)
    console.print(
        f"Confidence: one replica carries {low:.2f} req/s at the worst seed, {high:.2f} at the "
        f"best (spread {best.spread:.0%} of the mean over {len(spec.seeds)} seeds); "
        + (
            f"the best seed's capacity would also give {by_best} replicas before the check."
            if by_best == math.ceil(target / low - 1e-9)
            else f"the best seed's capacity would give {by_best} replicas, the worst's "
            f"{math.ceil(target / low - 1e-9)}: the count is close to a boundary, "
            "settled by the cluster check (more seeds, --seeds, make it surer)."
        ),
        highlight=False,
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
    """Cost per hour against each SLO's statistic at the target (worst seed): a panel per SLO,
    a row of them per target rate, the cost axis shared so that the rows show what the load
    costs; the Pareto front joined, the SLO's limit dashed. Rows, not one panel per SLO with a
    colour per target: a configuration that serves several targets with the same replicas
    costs the same at each, and its points and labels would lie on top of each other."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = result.spec
    targets, slos = spec.target_rates, spec.slos
    fig, axes = plt.subplots(
        len(targets),
        len(slos),
        figsize=(5.5 * len(slos), 0.6 + 3.6 * len(targets)),
        squeeze=False,
        sharex=True,
    )
    for row, target in zip(axes, targets):
        feasible = [c for c in result.at(target) if c.replicas is not None]
        for ax, slo in zip(row, slos):
            for c in feasible:
                ax.scatter(c.cost_per_hour, c.worst(slo.key), color="tab:blue", zorder=3)
                ax.annotate(
                    describe_config(result, c),
                    (c.cost_per_hour, c.worst(slo.key)),
                    textcoords="offset points",
                    xytext=(5, 5),
                    fontsize=8,
                )
            front = sorted(result.pareto(slo, target), key=lambda c: c.cost_per_hour)
            if front:
                ax.plot(
                    [c.cost_per_hour for c in front],
                    [c.worst(slo.key) for c in front],
                    color="tab:orange",
                    drawstyle="steps-post",
                    label="Pareto front",
                )
            ax.axhline(slo.limit_s, color="grey", linestyle="--", label=f"SLO: {slo.label}")
            ax.set_ylabel(f"{slo.name} at {target:g} req/s (s)")
            ax.set_ylim(bottom=0)
            ax.margins(x=0.2)  # room for the labels
    for ax in axes[-1]:
        ax.set_xlabel("cost, $ per hour")
        ax.tick_params(labelbottom=True)
        ax.legend(loc="upper left", bbox_to_anchor=(0, -0.15), fontsize=8, frameon=False)
    fig.suptitle(f"{spec.config(spec.configs[0]).model}: configurations meeting the SLOs", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
