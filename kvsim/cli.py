"""simcli: the command-line front of kvsim.

Every bad input is refused before any work starts, with one line on stderr and exit status 2:
a KvsimError and click's own usage errors (unknown option, malformed number) alike. Nothing
else should ever reach the user as a traceback. A run that completes no request says so on
stderr and exits 1, after writing its outputs.

The simulation options of `run`, `sweep`, `compare` and `validate` are SimConfig's fields
(kvsim.config), with the help and defaults declared there.
"""

from __future__ import annotations

import copy
import inspect
import os
import sys
import warnings
from dataclasses import Field, fields, replace
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typer.core import TyperCommand, TyperGroup
from typer.main import get_command

from kvsim.config import FIELD_TYPES, SimConfig, field_type, option_name
from kvsim.errors import KvsimError

try:  # recent typer carries its own copy of click
    from typer._click import ClickException
except ImportError:
    from click import ClickException

EXIT_NOTHING_SERVED, EXIT_BAD_INPUT = 1, 2
console = Console()
err_console = Console(stderr=True)


def _error(message: str) -> None:
    """``message`` as one line on stderr, however wide the terminal."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


class OneLineErrors(TyperGroup):
    """Turns every refusal into one line on stderr and exit 2: a KvsimError raised by a command,
    and click's usage errors, which typer would otherwise frame with the usage text."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        # Always standalone: it exits with the status, as click's main does by default.
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except KvsimError as err:
            _error(str(err))
            code = EXIT_BAD_INPUT
        except ClickException as err:
            # A bare `simcli` raises this after printing the help (typer skips it by name too).
            if type(err).__name__ != "NoArgsIsHelpError":
                ctx = getattr(err, "ctx", None)
                _error(f"{ctx.info_name}: {err.format_message()}" if ctx else err.format_message())
            code = EXIT_BAD_INPUT
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    help="Simulate LLM serving: model x GPU x KV-cache policy x traffic.",
)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )


# -- options generated from SimConfig -------------------------------------------------------------
SIMULATION_PANEL = "Simulation options"


def _help(f: Field) -> str:
    return escape(f.metadata["help"])  # rich markup would swallow "[...]"


def _shown_default(f: Field) -> bool | str:
    """What --help gives as the default: the value, or what None stands for."""
    return f.metadata["default_text"] or True


def _config_parameters(
    panel: str, listed: bool = False, skip: tuple[str, ...] = ()
) -> list[inspect.Parameter]:
    """An option for every SimConfig field but ``skip``, typed, with its help and default, in
    help panel ``panel``. A switch is --x/--no-x (--no-x undoes a --config); ``listed``: as
    `sweep` reads it instead, a word (``--x false,true``)."""
    parameters = []
    for f in fields(SimConfig):
        if f.name in skip:
            continue
        base, _ = field_type(f.name)
        flag, default, shape = option_name(f.name), f.default, {}
        if base is bool and listed:
            base, default, shape = str, str(default).lower(), {"metavar": "<bool>"}
        decls = [f"{flag}/--no-{flag[2:]}"] if base is bool else [flag, *f.metadata["aliases"]]
        option = typer.Option(
            default, *decls, help=_help(f), show_default=_shown_default(f), rich_help_panel=panel, **shape
        )
        parameters.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[base]
            )
        )
    return parameters


def with_config_options(command):
    """Gives ``command`` (whose signature ends in ``**settings``) an option for every SimConfig
    field; typer passes their values as keyword arguments (see ``_explicit``)."""
    own = [
        p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD
    ]
    command.__signature__ = inspect.Signature(own + _config_parameters(SIMULATION_PANEL))
    return command


def _explicit(ctx: typer.Context, settings: dict) -> dict:
    """The options of ``settings`` given on the command line, not left at their default."""
    return {
        name: value for name, value in settings.items() if ctx.get_parameter_source(name).name != "DEFAULT"
    }


def listing_options(note: str, skip: tuple[str, ...] = ()) -> type[TyperCommand]:
    """A command class for the commands that read SimConfig options from their extra arguments
    (``parse_option_args``: lists of values, a switch alone): their --help lists those options
    as well, with help and defaults, in a panel that says ``note`` about their values."""

    class ListingOptions(TyperCommand):
        def format_help(self, ctx, formatter):
            def options(**_):
                """Never run: only its options are shown."""

            options.__signature__ = inspect.Signature(
                _config_parameters(f"{SIMULATION_PANEL}: {note}", listed=True, skip=skip)
            )
            shown = typer.Typer(add_completion=False)
            shown.command()(options)
            listed = copy.copy(self)
            listed.params = [*self.params, *get_command(shown).params]
            return TyperCommand.format_help(listed, ctx, formatter)

    return ListingOptions


def check_out(out: Path, file: bool = False, option: str = "--out") -> None:
    """Refuses an --out that could not be written, before any work and creating nothing: a
    directory where a file is wanted or the reverse, a parent that is a file, or one that is
    not writable. ``file``: --out names a file (sweep's CSV), else a directory; ``option``:
    the option named in the message."""
    kind = "file" if file else "directory"
    if out.exists() and out.is_dir() == file:
        raise KvsimError(f"{option} {out} is {'a directory' if file else 'a file'}; it must name a {kind}")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if existing != out and not existing.is_dir():
        raise KvsimError(f"cannot create output {kind} {out}: {existing} is not a directory")
    if not os.access(existing, os.W_OK):
        raise KvsimError(f"cannot write output {kind} {out}: {existing} is not writable")


# -- run ------------------------------------------------------------------------------------------
@app.command()
@with_config_options
def run(
    ctx: typer.Context,
    out: Optional[Path] = typer.Option(
        None, help="Write requests.csv, iterations.csv, summary.json, config.json here."
    ),
    config: Optional[Path] = typer.Option(
        None, help="Start from a config.json written by an earlier run; options given here override it."
    ),
    timeline: Optional[Path] = typer.Option(
        None, help="Write the run as a Perfetto / chrome://tracing trace (JSON) to this file."
    ),
    plots: bool = typer.Option(
        False, help="With --out: also write figures (KV cache and queue over time, latency CDFs, requests)."
    ),
    **settings,
):
    """Simulate one configuration and print its summary."""
    # kvsim.api (pandas) only for figures and timelines: importing it takes longer than a small run.
    from kvsim.experiments.run import run as simulate_run
    from kvsim.reports.tables import print_run_summary

    if plots and out is None:
        raise KvsimError("--plots needs --out: the figures are written there")
    if out is not None:
        check_out(out)
    if timeline is not None:
        check_out(timeline, file=True, option="--timeline")
    base = SimConfig.from_file(config) if config is not None else SimConfig()
    sim_config = replace(base, **_explicit(ctx, settings)).validate()
    with _progress() as bar:
        task = bar.add_task("simulating", total=None)
        result = simulate_run(
            sim_config, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    print_run_summary(console, result)
    if out is not None:
        written = result.write(out)
        console.print(f"wrote {written}/requests.csv, iterations.csv, summary.json, config.json")
    if plots or timeline is not None:
        from kvsim.api import Result
    if plots:
        figures = Result.of(result).write_figures(out)
        console.print(f"wrote {out}/" + ", ".join(f.name for f in figures))
    if timeline is not None:
        timeline.parent.mkdir(parents=True, exist_ok=True)
        console.print(f"wrote {Result.of(result).write_timeline(timeline)} (open it in ui.perfetto.dev)")
    if result.summary["completed"] == 0:
        rejected = result.recorder.reject_reason[result.recorder.status == "rejected"]
        _error(
            f"no request completed: {len(rejected)} of {len(result.trace)} rejected"
            + (f" (the first: {rejected[0]})" if len(rejected) else "")
        )
        raise typer.Exit(EXIT_NOTHING_SERVED)


# -- sweep ------------------------------------------------------------------------------------
# What a switch's values may say in a list (e.g. `simcli sweep --prefix-caching false,true`).
TRUE_WORDS, FALSE_WORDS = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def _field_type(command: str, name: str) -> type:
    """The type of option ``--name`` (a SimConfig field; Optional unwrapped)."""
    if name not in FIELD_TYPES:
        raise KvsimError(
            f"{command}: unknown option {option_name(name)} "
            f"(options: {', '.join(option_name(f) for f in FIELD_TYPES)})"
        )
    return field_type(name)[0]


def _parse_value(command: str, name: str, text: str):
    """One value of option ``--name``; errors name ``command``, the command the user ran."""
    base = _field_type(command, name)
    if text.lower() == "none" and base not in (str, bool):
        return None
    if base is bool:  # bool("false") would be True
        if text.lower() in TRUE_WORDS + FALSE_WORDS:
            return text.lower() in TRUE_WORDS
    else:
        try:
            return base(text)
        except ValueError:
            pass
    raise KvsimError(f"{command}: {option_name(name)} value {text!r} is not a {base.__name__}")


def _split(command: str, flag: str, text: str) -> list[str]:
    """``'8,16'`` -> ['8', '16']. An empty element (``8,,16``, a trailing comma) is refused:
    dropping it would run fewer points than the user counted."""
    items = text.split(",")
    if any(not item.strip() for item in items):
        raise KvsimError(f"{command}: {flag} has an empty value in {text!r}")
    return items


def _number(command: str, flag: str, text: str) -> float:
    """One number of a list option that is not a run option (``_parse_value`` parses those)."""
    try:
        return float(text)
    except ValueError:
        raise KvsimError(f"{command}: {flag} value {text!r} is not a number") from None


#: Other names of SimConfig options (``setting(aliases=...)``) -> the field they set.
ALIASES = {alias: f.name for f in fields(SimConfig) for alias in f.metadata["aliases"]}


def parse_option_args(command: str, args: list[str]) -> dict[str, list]:
    """``--block-size 1,2,4 --rate 0.5,1 --prefix-caching`` -> {'block_size': [1, 2, 4],
    'rate': [0.5, 1.0], 'prefix_caching': [True]}: any `simcli run` option with one value or a
    comma-separated list. A switch (boolean option) given alone means true, as in `run`;
    ``command`` names the command in error messages."""
    grid: dict[str, list] = {}
    rest = list(args)
    while rest:
        flag = rest.pop(0)
        if not flag.startswith("--"):
            raise KvsimError(f"{command}: expected an option, got {flag!r}")
        name = ALIASES.get(flag, flag[2:].replace("-", "_"))
        if not rest or rest[0].startswith("--"):
            if _field_type(command, name) is not bool:
                raise KvsimError(f"{command}: {flag} needs a value")
            grid[name] = [True]
            continue
        grid[name] = [_parse_value(command, name, v) for v in _split(command, flag, rest.pop(0))]
    return grid


EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}
LISTS = "each one value or a comma-separated list"


def _jobs():
    return typer.Option(2, min=1, help="Parallel worker processes.")


def _executor():
    return typer.Option("local", help="Where the points run: local (processes) or ray.")


def _address():
    return typer.Option(
        None, help="With --executor ray: the Ray cluster to join.", show_default="a local Ray of --jobs CPUs"
    )


def check_executor(command: str, executor: str, address: str | None) -> None:
    """Refuses an unknown --executor, an --address without Ray, and Ray when it is not
    installed, before any work."""
    from kvsim.experiments.ray_pool import require_ray
    from kvsim.experiments.sweep import EXECUTORS

    if executor not in EXECUTORS:
        raise KvsimError(f"{command}: --executor must be one of {', '.join(EXECUTORS)} (got {executor!r})")
    if address is not None and executor != "ray":
        raise KvsimError(f"{command}: --address is for --executor ray")
    if executor == "ray":
        require_ray()


@app.command(cls=listing_options(LISTS), context_settings=EXTRA_ARGS)
def sweep(
    ctx: typer.Context,
    out: Path = typer.Option(
        Path("sweep.csv"), help="CSV file with one row per point, each appended as its point finishes."
    ),
    jobs: int = _jobs(),
    resume: bool = typer.Option(
        False, help="Keep the rows already in --out (an interrupted sweep's) and run only the other points."
    ),
    executor: str = _executor(),
    address: Optional[str] = _address(),
):
    """Run every combination of option values: simcli sweep --block-size 8,16,32 --rate 1,2 [--model ...].

    Any `simcli run` option can be given, with one value or a comma-separated list.
    """
    from kvsim.experiments.sweep import grid_points, run_sweep

    check_out(out, file=True)
    check_executor("sweep", executor, address)
    points = grid_points(parse_option_args("sweep", list(ctx.args)))
    ran = []
    with _progress() as bar:
        task = bar.add_task("sweeping", total=len(points))
        table = run_sweep(
            points,
            jobs,
            on_row=lambda row: (ran.append(row), bar.advance(task)),
            out=out,
            resume=resume,
            executor=executor,
            address=address,
        )
    console.print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    kept = f" ({len(points) - len(ran)} of {len(points)} points kept from the earlier run)" if resume else ""
    console.print(f"wrote {out}{kept}")


# -- compare ----------------------------------------------------------------------------------
@app.command(cls=listing_options("one value each", skip=("policy", "rate")), context_settings=EXTRA_ARGS)
def compare(
    ctx: typer.Context,
    policies: str = typer.Option(
        "paged,orca-oracle,orca-pow2,orca-max,ft", help="Comma-separated KV-cache policies."
    ),
    rate: str = typer.Option("1", help="Request rates (req/s), comma-separated; each policy runs at each."),
    out: Optional[Path] = typer.Option(None, help="Write compare.csv and the figures (PNG) here."),
    jobs: int = _jobs(),
):
    """Run several policies on the same trace: simcli compare --policies paged,orca-max --rate 1,2 [--model ...].

    Any other `simcli run` option can follow, with one value (a switch such as
    --prefix-caching alone). Every policy sees the same requests, lengths and arrival times;
    --preemption applies to the policies that preempt (paged).
    """
    from kvsim.experiments.compare import caption, compare_policies, parse_policies, sharing_settings
    from kvsim.reports.tables import print_compare_table

    if out is not None:
        check_out(out)
    _split("compare", "--policies", policies)  # parse_policies would drop an empty name
    names = parse_policies(policies)
    rates = [_parse_value("compare", "rate", v) for v in _split("compare", "--rate", rate)]
    settings = parse_option_args("compare", list(ctx.args))
    for name, values in settings.items():
        if name == "policy":
            raise KvsimError("compare: give the policies with --policies")
        if len(values) != 1:
            raise KvsimError(
                f"compare: {option_name(name)} takes one value (only --policies and --rate take lists)"
            )
    base = SimConfig(**{name: values[0] for name, values in settings.items()}).validate()
    with _progress() as bar:
        task = bar.add_task("comparing", total=len(names) * len(rates))
        table = compare_policies(base, names, rates, jobs, on_point=lambda: bar.advance(task))
    text = caption(base, int(table["completed"].iloc[0] + table["rejected"].iloc[0]))
    print_compare_table(console, table, text, sharing=bool(sharing_settings(base)))
    if out is not None:
        from kvsim.reports.plots import write_compare_figures

        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "compare.csv", index=False)
        figures = write_compare_figures(table, text, out)
        console.print(f"wrote {out / 'compare.csv'}, " + ", ".join(f.name for f in figures))


# -- report -----------------------------------------------------------------------------------
report_app = typer.Typer(no_args_is_help=True, help="Reports built from many runs.")
app.add_typer(report_app, name="report")


@report_app.command("paper")
def report_paper(
    quick: bool = typer.Option(False, help="Fewer rates and requests: the whole page in minutes."),
    out: Path = typer.Option(Path("paper"), help="Folder for README.md and the figures (PNG)."),
    jobs: int = _jobs(),
    sections: Optional[str] = typer.Option(None, hidden=True, help="Only these sections, comma-separated."),
    num_requests: Optional[int] = typer.Option(
        None, hidden=True, help="Requests per point instead of the scale's."
    ),
):
    """The vLLM paper's Table 1 and Figures 2, 12-17, 18b and 19 from kvsim's runs, as a Markdown page."""
    import dataclasses

    from kvsim.experiments.paper import SCALES, SECTIONS, paper_sections
    from kvsim.reports.paper import write_paper_page

    check_out(out)
    only = tuple(s.strip() for s in _split("report paper", "--sections", sections)) if sections else SECTIONS
    unknown = [key for key in only if key not in SECTIONS]
    if unknown:
        raise KvsimError(f"report paper: unknown section {unknown[0]!r} (known: {', '.join(SECTIONS)})")
    scale = SCALES["quick" if quick else "full"]
    if num_requests is not None:
        if num_requests < 1:
            raise KvsimError(f"report paper: --num-requests must be at least 1 (got {num_requests})")
        scale = dataclasses.replace(scale, num_requests=num_requests)
    with _progress() as bar:
        task = bar.add_task("paper sections", total=len(only))
        found = paper_sections(scale, jobs, only, on_step=lambda key: bar.advance(task))
    command = "simcli report paper" + (" --quick" if quick else "")
    page = write_paper_page(found, out, scale.name, command)
    console.print(f"wrote {page} and {sum(len(s.figures) for s in found)} figures")


# -- plan -------------------------------------------------------------------------------------
PLAN_LISTS = "one value each; lists for --gpu, --tp, --block-size, --policy, --scheduler, --max-num-seqs, --max-num-batched-tokens, --router"


@app.command(
    cls=listing_options(PLAN_LISTS, skip=("rate", "seed", "num_replicas", "num_requests", "duration")),
    context_settings=EXTRA_ARGS,
)
def plan(
    ctx: typer.Context,
    target_rate: str = typer.Option(
        ..., help="Requests per second the cluster must serve; a comma-separated list plans for each."
    ),
    slo: list[str] = typer.Option(
        [],
        help="METRIC:STAT:LIMIT, repeatable: ttft, tpot or e2e; mean, p50, p90, p99 or max; e.g. 2s, 100ms.",
    ),
    goodput: Optional[float] = typer.Option(
        None, help="Also require this share of requests to meet every SLO.", show_default="not required"
    ),
    seeds: int = typer.Option(3, help="Seeds per probe (0, 1, ...); the capacity is the worst seed's."),
    requests_per_replica: int = typer.Option(3000, help="Requests per replica in every simulation."),
    tolerance: float = typer.Option(0.05, help="Bisection stops when the capacity is known to this share."),
    max_replicas: int = typer.Option(64, help="Most replicas to consider per configuration."),
    prices: Optional[Path] = typer.Option(
        None,
        help="GPU price table (JSON, as the shipped one).",
        show_default="kvsim/experiments/gpu_prices.json",
    ),
    out: Optional[Path] = typer.Option(None, help="Write plan.csv, points.csv and pareto.png here."),
    jobs: int = _jobs(),
    executor: str = _executor(),
    address: Optional[str] = _address(),
):
    """How many replicas of which hardware serve a traffic within SLOs, and at what cost:
    simcli plan --model llama-2-13b --gpu a100-80gb,h100-sxm-80gb --target-rate 20 --slo ttft:p90:2s --slo tpot:mean:100ms

    For each configuration: one replica's capacity by bisection on the rate (several seeds,
    instability read from the queue's trend), the replicas for the target, checked by
    simulating the whole cluster, and the cost from a GPU price table. With several target
    rates the capacity is searched once and each target gets its replicas, check and cost;
    the exit status is 1 when some target has no configuration that meets the SLOs.
    """
    from kvsim.experiments.plan import make_spec, plan_capacity
    from kvsim.reports.plan_report import print_plan, profile_warnings, write_pareto_figure

    if out is not None:
        check_out(out)
    check_executor("plan", executor, address)
    spec = make_spec(
        parse_option_args("plan", list(ctx.args)),
        [_number("plan", "--target-rate", text) for text in _split("plan", "--target-rate", target_rate)],
        slo,
        goodput,
        seeds,
        requests_per_replica,
        tolerance,
        max_replicas,
        prices,
    )
    with _progress() as bar:
        task = bar.add_task("planning", total=None)
        result = plan_capacity(
            spec,
            jobs,
            on_round=lambda what, n: bar.update(task, description=what),
            executor=executor,
            address=address,
        )
    print_plan(console, result)
    for line in profile_warnings(result):
        _show_warning(line, UserWarning, "", 0)
    if out is not None:
        result.write_tables(out)
        figure = write_pareto_figure(result, out / "pareto.png")
        console.print(f"wrote {out / 'plan.csv'}, points.csv, {figure.name}")
    if any(result.cheapest(target) is None for target in spec.target_rates):
        raise typer.Exit(EXIT_NOTHING_SERVED)


# -- catalogues --------------------------------------------------------------------------------
@app.command()
def models():
    """Built-in models and what kvsim derives from their shapes."""
    from kvsim.models import BUILTIN_CONFIGS, load_model
    from kvsim.reports.tables import print_catalogue

    rows = []
    for name in BUILTIN_CONFIGS:
        spec = load_model(name)
        rows.append(
            [
                name,
                spec.family,
                f"{spec.param_count / 1e9:.2f}B",
                f"{spec.weight_bytes / 2**30:.1f}",
                f"{spec.kv_bytes_per_token / 1024:.0f}",
                f"{spec.num_heads}/{spec.num_kv_heads}",
                str(spec.max_model_len),
            ]
        )
    print_catalogue(
        console,
        "Built-in models (fp16)",
        ["name", "family", "params", "weights GiB", "KV KiB/token", "heads/KV heads", "context"],
        rows,
    )


@app.command()
def gpus():
    """Built-in GPUs and their datasheet numbers."""
    from kvsim.hardware import BUILTIN_GPUS, GiB
    from kvsim.reports.tables import print_catalogue

    rows = [
        [
            g.name,
            f"{g.memory_bytes / GiB:.1f}",
            f"{g.fp16_flops / 1e12:.0f}",
            f"{g.hbm_bandwidth / 1e9:,.0f}",
            f"{g.pcie_bandwidth / 1e9:.0f}",
            f"{g.nvlink_bandwidth / 1e9:.0f}",
            g.source,
        ]
        for g in BUILTIN_GPUS.values()
    ]
    print_catalogue(
        console,
        "Built-in GPUs",
        ["name", "memory GiB", "fp16 TFLOP/s", "HBM GB/s", "PCIe GB/s", "NVLink GB/s", "source"],
        rows,
    )


@app.command()
def policies():
    """KV-cache allocation policies."""
    from kvsim.policies.registry import available_policies
    from kvsim.reports.tables import print_catalogue

    print_catalogue(
        console,
        "Policies",
        ["name", "description"],
        [[p.name, p.description] for p in available_policies().values()],
    )


# -- calibration ------------------------------------------------------------------------------
@app.command()
def calibrate(
    model: str = typer.Option("opt-13b", help="Built-in model name or path to a HF config.json."),
    out: Optional[Path] = typer.Option(None, help="Profile file to write.", show_default="MODEL@GPU.json"),
    block_size: int = typer.Option(16, help="Tokens per KV block of the measured cache."),
    quick: bool = typer.Option(False, help="Thinner grid and fewer repeats: a rough profile, fast."),
    gpu: Optional[str] = typer.Option(
        None, help="GPU spec the profile is for.", show_default="the one detected"
    ),
    tensor_parallel: int = typer.Option(
        1,
        "--tensor-parallel",
        "--tp",
        help="Measure one rank's shard of the model split over this many GPUs.",
    ),
    check: bool = typer.Option(
        False,
        "--check",
        help="Instead of calibrating: time a few anchor steps (under a minute) against the profile a "
        "run would use, report the drift, and write an adjusted profile (to --out) if it exceeds "
        "--threshold.",
    ),
    block_sizes_only: bool = typer.Option(
        False,
        "--block-sizes-only",
        help="Instead of calibrating: measure only the decode attention kernel at block sizes 1 to 256 "
        "(seconds) and write --profile with that table added (to --out).",
    ),
    profile: Optional[Path] = typer.Option(
        None,
        help="With --check or --block-sizes-only: the profile to work on.",
        show_default="the shipped one for this GPU",
    ),
    threshold: float = typer.Option(
        0.03, help="With --check: mean |drift| over the anchors above which an adjusted profile is written."
    ),
    eager: bool = typer.Option(
        False,
        help="Measure the runner with CUDA graphs off, every kernel launched by the host (as vLLM's 2023 "
        "engine ran): writes MODEL-eager@GPU.json. With --check or --block-sizes-only: the shipped eager "
        "profile by default.",
    ),
):
    """Measure step costs on this machine's GPU, fit them, write a profile (needs CUDA)."""
    from kvsim.calibration.calibrate import add_block_sizes
    from kvsim.calibration.calibrate import calibrate as run_calibration
    from kvsim.calibration.calibrate import check as run_check

    if out is not None:
        check_out(out, file=True)
    if check and block_sizes_only:
        raise KvsimError("--check and --block-sizes-only are two different commands: give one")
    log = lambda line: console.print(line, highlight=False, markup=False)  # noqa: E731
    given = dict(gpu=gpu, log=log, tensor_parallel=tensor_parallel, eager=eager)
    if check:
        run_check(model, profile, out, threshold, **given)
        return
    if block_sizes_only:
        add_block_sizes(model, profile, out, **given)
        return
    if profile is not None:
        raise KvsimError("--profile is for --check and --block-sizes-only (calibrate measures a new profile)")
    run_calibration(model, out, block_size, quick, **given)


@app.command()
def profiles():
    """Shipped step-cost profiles: measured on a GPU, or derived from a measured one."""
    from kvsim.cost.profile import is_eager, load_profile, measured_block_sizes, shipped_profiles
    from kvsim.reports.tables import print_catalogue

    def block_text(doc: dict) -> str:
        """The fitted block size, and the range of those the decode kernel was measured at."""
        sizes = measured_block_sizes(doc)
        return str(doc["block_size"]) + (f" (decode {sizes[0]}-{sizes[-1]})" if len(sizes) > 1 else "")

    rows = []
    for path in shipped_profiles():
        doc = load_profile(path)
        prov = doc["provenance"]
        # A derived profile shows the fit of the measured one it comes from.
        report = doc["fit_report"].get("source", doc["fit_report"])
        fit = " / ".join(f"{100 * report[k]['heldout']['mape']:.1f}%" for k in ("decode", "prefill"))
        origin = "measured" if prov["kind"] == "measured" else f"derived ({prov['from'].split('@')[-1]})"
        rows.append(
            [
                doc["model"]["name"] + (" (eager)" if is_eager(doc) else ""),
                doc["gpu"]["name"],
                origin,
                doc["created"][:10],
                block_text(doc),
                fit,
            ]
        )
    print_catalogue(
        console,
        "Shipped profiles (kvsim/cost/profiles)",
        ["model", "gpu", "provenance", "date", "block", "held-out MAPE decode / prefill"],
        rows,
    )


# -- validation -------------------------------------------------------------------------------
@app.command(cls=listing_options(LISTS), context_settings=EXTRA_ARGS)
def validate(
    ctx: typer.Context,
    out: Path = typer.Option(Path("validation"), help="Directory for validation.csv, plots and logs."),
    campaign: Optional[Path] = typer.Option(
        None, help="JSON list of points, each a dict of `run` options (see docs/validation/)."
    ),
    calibrate_first: bool = typer.Option(
        False,
        "--calibrate",
        help="Calibrate each model on this GPU first (profiles written to --out) and simulate with those profiles.",
    ),
    reprice: Optional[Path] = typer.Option(
        None,
        help="No GPU: simulate a measured campaign's folder again (with --profile P if given) and compare "
        "it with what was measured there.",
    ),
):
    """Run traces through the real GPU executor and the simulator, and compare them.

    Takes `simcli run` options, each with one value or a comma-separated list (the points are
    their cross product), e.g. simcli validate --model opt-13b --rate 1,2,4 --num-requests 100,
    or a --campaign file. The GPU is the one found; the simulator uses its calibrated profile,
    or with --calibrate one measured on this very machine just before (host speed, which sets
    the pace of short eager prefills, differs between machines of one GPU model).
    """
    from kvsim.experiments.sweep import grid_points
    from kvsim.experiments.validate import (
        detect_gpu,
        load_campaign,
        relative_errors,
        run_campaign,
        step_error_summary,
        with_fresh_profiles,
    )
    from kvsim.reports.validation_plots import latency_scatter, step_error_histogram

    grid = parse_option_args("validate", list(ctx.args))
    if reprice is not None:
        from kvsim.experiments.validate import REPRICED, reprice_campaign

        if set(grid) - {"profile"} or len(grid.get("profile", [None])) > 1:
            raise KvsimError("validate --reprice takes one --profile and no other simulation option")
        table = reprice_campaign(reprice, grid.get("profile", [None])[0])
        errors = table[["point", "cost_model", *(f"{m}_rel_error" for m in REPRICED)]]
        errors.columns = ["point", "cost model", *REPRICED.values()]
        print("simulated vs measured (relative error)")
        print(errors.to_string(index=False, float_format=lambda x: f"{100 * x:+.1f}%"))
        return
    check_out(out)
    if campaign:  # options given beside a campaign apply to all its points (e.g. --profile)
        if any(len(values) > 1 for values in grid.values()):
            raise KvsimError("validate: with --campaign, other options take one value")
        points = [
            {**point, **{name: values[0] for name, values in grid.items()}}
            for point in load_campaign(campaign)
        ]
    else:
        points = grid_points(grid)
    gpu = detect_gpu()
    configs = [SimConfig(**{"gpu": gpu, **point}).validate() for point in points]
    if calibrate_first:
        configs = with_fresh_profiles(configs, out, log=lambda text: err_console.print(text))
    table = run_campaign(configs, out, progress=lambda text: err_console.print(text))
    import pandas as pd

    requests, steps = pd.read_csv(out / "requests.csv"), pd.read_csv(out / "steps.csv")
    caption = f"GPU {configs[0].gpu}; " + "; ".join(sorted({f"{c.model} on {c.trace}" for c in configs}))
    latency_scatter(requests, out / "latency_scatter.png", caption)
    step_error_histogram(steps, out / "step_error.png", caption)
    errors = relative_errors(table)
    console.print(
        errors.to_string(
            index=False,
            formatters={c: (lambda v: f"{v:+.1%}") for c in errors.columns if c.endswith("_rel_error")},
        )
    )
    console.print(f"per-step cost-model error: {step_error_summary(steps)}")
    console.print(f"wrote {out}/validation.csv, requests.csv, steps.csv, latency_scatter.png, step_error.png")


# -- several models on one GPU ----------------------------------------------------------------
gpushare_app = typer.Typer(
    no_args_is_help=True,
    help="Several models on one GPU: kernel chains, dispatch policies (docs/gpushare.md).",
)
app.add_typer(gpushare_app, name="gpushare")


def _gpushare_setup(hardware_queues, outstanding_limit, dispatch_overhead_us, ewma_alpha, **workload):
    """The experiment's setup from the shared options (``workload``: GPU, mix, profiles, jobs)."""
    from kvsim.experiments.gpushare import load_setup
    from kvsim.gpushare.policies.base import DispatchSettings

    settings = DispatchSettings(hardware_queues, outstanding_limit, dispatch_overhead_us * 1e-6, ewma_alpha)
    return load_setup(**workload, settings=settings)


def _gpushare_options(command):
    """The options ``load`` and ``fairness`` share: GPU, mix, profiles, workload, policy knobs."""
    shared = {
        "gpu": typer.Option("h200-141gb", help="GPU (its SM limits and its measured profiles)."),
        "mix": typer.Option("paella-8", help="Workload: paella-8 (Paella's 8 models) or extremes."),
        "profiles": typer.Option(
            None, help="Folder of measured MODEL@GPU.json kernel profiles.", show_default="the shipped ones"
        ),
        "num_jobs": typer.Option(3000, help="Jobs per point."),
        "sigma": typer.Option(1.5, help="Sigma of the log-normal inter-arrival gaps."),
        "seed": typer.Option(0, help="Seed of the arrivals and of each job's model."),
        "hardware_queues": typer.Option(8, help="Hardware queues (CUDA_DEVICE_MAX_CONNECTIONS)."),
        "outstanding_limit": typer.Option(
            2, help="Paella: issued kernels allowed to wait for SM room (Paella's default)."
        ),
        "dispatch_overhead_us": typer.Option(0.0, help="Paella: the dispatcher's time per kernel (us)."),
        "ewma_alpha": typer.Option(0.25, help="Paella SRPT: weight of the newest kernel length."),
        "jobs": _jobs(),
    }
    own = [p for p in inspect.signature(command).parameters.values() if p.kind != p.VAR_KEYWORD]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
        for (name, option), annotation in zip(
            shared.items(), (str, str, Optional[Path], int, float, int, int, int, float, float, int)
        )
    ]
    command.__signature__ = inspect.Signature(own + added)
    return command


def _floats(command: str, flag: str, text: str) -> list[float]:
    from kvsim.experiments.gpushare import check_positive

    values = [_number(command, flag, item) for item in _split(command, flag, text)]
    check_positive(flag, values)
    return values


@gpushare_app.command("load")
@_gpushare_options
def gpushare_load(
    policies: str = typer.Option("all", help="Comma-separated dispatch policies, or all."),
    load: str = typer.Option(
        "0.25,0.5,0.75,1,1.25,1.5,2", help="Offered loads (x the rate one-job-at-a-time serving handles)."
    ),
    out: Path = typer.Option(Path("gpushare-load"), help="Folder for load.csv and load.png."),
    **options,
):
    """p99 latency per model and overall against achieved throughput, for every policy."""
    from kvsim.experiments.gpushare import load_sweep
    from kvsim.gpushare.policies.registry import parse_policies
    from kvsim.reports.gpushare_plots import plot_load_sweep

    check_out(out)
    names = parse_policies(policies)
    loads = _floats("gpushare load", "--load", load)
    jobs = options.pop("jobs")
    setup = _gpushare_setup(**options)
    with _progress() as bar:
        task = bar.add_task("simulating", total=len(names) * len(loads))
        table = load_sweep(setup, names, loads, jobs, on_point=lambda: bar.advance(task))
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "load.csv", index=False)
    plot_load_sweep(table, setup.caption(), out / "load.png")
    shown = table[table.model == "all"][
        ["policy", "load", "offered_jobs_s", "throughput_jobs_s", "latency_p99_s"]
    ]
    console.print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    console.print(f"wrote {out / 'load.csv'}, {out / 'load.png'}")


@gpushare_app.command("fairness")
@_gpushare_options
def gpushare_fairness(
    thresholds: str = typer.Option(
        "1,2,4,8,16,32,inf", help="Fairness thresholds of Paella SRPT (inf: none)."
    ),
    load: float = typer.Option(1.0, help="Offered load (x the rate one-job-at-a-time serving handles)."),
    out: Path = typer.Option(Path("gpushare-fairness"), help="Folder for fairness.csv and fairness.png."),
    **options,
):
    """Mean latency per model against the fairness threshold, with Jain's index over slowdowns."""
    from kvsim.experiments.gpushare import fairness_sweep
    from kvsim.reports.gpushare_plots import plot_fairness

    check_out(out)
    values = _floats("gpushare fairness", "--thresholds", thresholds)
    _floats("gpushare fairness", "--load", str(load))
    jobs = options.pop("jobs")
    setup = _gpushare_setup(**options)
    with _progress() as bar:
        task = bar.add_task("simulating", total=len(values))
        table = fairness_sweep(setup, values, load, jobs, on_point=lambda: bar.advance(task))
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "fairness.csv", index=False)
    plot_fairness(table, setup.caption() + f", load {load:g}", out / "fairness.png")
    shown = table[table.model != "all"][["threshold", "model", "latency_mean_s", "slowdown", "jain_index"]]
    console.print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    console.print(f"wrote {out / 'fairness.csv'}, {out / 'fairness.png'}")


@gpushare_app.command("profile")
def gpushare_profile(
    out: Path = typer.Option(..., help="Folder for the MODEL@GPU.json profiles."),
    models: str = typer.Option(
        "paella", help="Comma-separated torchvision models, or paella (Paella's eight)."
    ),
    dtype: str = typer.Option("float32", help="float32 or float16."),
    repeats: int = typer.Option(5, help="Profiled forward passes per model (the median is kept)."),
    warmup: int = typer.Option(10, help="Untimed forward passes first."),
    gpu: Optional[str] = typer.Option(
        None, help="GPU spec the profiles are for.", show_default="the one detected"
    ),
    llm: Optional[str] = typer.Option(
        None,
        help="Comma-separated kvsim LLMs (e.g. llama-2-7b,opt-13b): measure their decode and prefill "
        "steps instead, into MODEL@GPU.steps.json.",
    ),
):
    """Measure each model's kernel chain at batch 1 with torch.profiler (needs CUDA and torchvision),
    or with --llm each LLM's steps (needs CUDA)."""
    from kvsim.calibration.kernel_chains import PAELLA_MODELS, profile_models

    check_out(out)
    if llm is not None:
        from kvsim.calibration.llm_chains import profile_llms

        if models != "paella" or dtype != "float32":
            raise KvsimError(
                "--models and --dtype are for torchvision models: --llm measures kvsim's LLMs in their own dtype"
            )

        names = _split("gpushare profile", "--llm", llm)
        log = lambda line: console.print(line, highlight=False, markup=False)  # noqa: E731
        profile_llms(out, [n.strip() for n in names], gpu, repeats, warmup, log=log)
        return
    names = PAELLA_MODELS if models == "paella" else tuple(_split("gpushare profile", "--models", models))
    profile_models(
        out,
        names,
        dtype,
        repeats,
        warmup,
        gpu,
        log=lambda line: console.print(line, highlight=False, markup=False),
    )


@gpushare_app.command("llm")
def gpushare_llm(
    models: str = typer.Option("llama-2-7b,opt-13b", help="Comma-separated LLMs sharing the GPU."),
    rates: str = typer.Option("2,2", help="ShareGPT requests per second, one per model."),
    memory_shares: str = typer.Option(
        "0.5,0.5", help="Each model's share of the GPU memory one server uses, summing to at most 1."
    ),
    policy: str = typer.Option(
        "paella-srpt", help="Dispatch policy (gpushare load --help lists them; not mps)."
    ),
    num_requests: int = typer.Option(200, help="Requests per model."),
    seed: int = typer.Option(0, help="Seed of the first model's requests (model i: seed + i)."),
    gpu: str = typer.Option("h200-141gb", help="GPU (its memory, SM limits and measured step profiles)."),
    profiles: Optional[Path] = typer.Option(
        None, help="Folder of MODEL@GPU.steps.json step profiles.", show_default="the shipped ones"
    ),
    hardware_queues: int = typer.Option(8, help="Hardware queues (CUDA_DEVICE_MAX_CONNECTIONS)."),
    outstanding_limit: int = typer.Option(2, help="Paella: issued kernels allowed to wait for SM room."),
    dispatch_overhead_us: float = typer.Option(0.0, help="Paella: the dispatcher's time per kernel (us)."),
    ewma_alpha: float = typer.Option(0.25, help="Paella SRPT: weight of the newest kernel length."),
    out: Path = typer.Option(Path("gpushare-llm"), help="Folder for llm.csv and llm-steps.csv."),
):
    """LLMs served by kvsim's engines on one simulated GPU, each step a kernel chain: TTFT, TPOT,
    normalized latency and throughput per model, shared and alone, and the slowdowns."""
    from kvsim.experiments.gpushare_llm import placements_of, run_colocation
    from kvsim.gpushare.policies.base import DispatchSettings

    check_out(out)
    names = [n.strip() for n in _split("gpushare llm", "--models", models)]
    placements = placements_of(
        names,
        [_number("gpushare llm", "--rates", r) for r in _split("gpushare llm", "--rates", rates)],
        [
            _number("gpushare llm", "--memory-shares", m)
            for m in _split("gpushare llm", "--memory-shares", memory_shares)
        ],
    )
    settings = DispatchSettings(hardware_queues, outstanding_limit, dispatch_overhead_us * 1e-6, ewma_alpha)
    table, steps = run_colocation(placements, policy, gpu, profiles, num_requests, seed, settings)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "llm.csv", index=False)
    steps.to_csv(out / "llm-steps.csv", index=False)
    console.print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    console.print(f"wrote {out / 'llm.csv'}, {out / 'llm-steps.csv'}")


@gpushare_app.command("measure")
def gpushare_measure(
    mix: str = typer.Option("extremes", help="Workload: paella-8 (Paella's 8 models) or extremes."),
    policies: str = typer.Option(
        "cuda-multi-stream,cuda-single-stream,paella-srpt",
        help="Comma-separated: cuda-multi-stream, cuda-single-stream, paella-srpt|kernel-fifo|job-fifo.",
    ),
    load: str = typer.Option("0.5,1,1.5,2", help="Offered loads, as `gpushare load` counts them."),
    num_jobs: int = typer.Option(3000, help="Jobs per point."),
    sigma: float = typer.Option(1.5, help="Sigma of the log-normal inter-arrival gaps."),
    seed: int = typer.Option(0, help="Seed of the arrivals and of each job's model."),
    gpu: str = typer.Option("h200-141gb", help="The GPU measured (and simulated by compare-real)."),
    profiles: Optional[Path] = typer.Option(
        None, help="Profiles that set the rate of a load.", show_default="the shipped ones"
    ),
    hardware_queues: int = typer.Option(8, help="CUDA_DEVICE_MAX_CONNECTIONS for the run."),
    ewma_alpha: float = typer.Option(0.25, help="Paella SRPT: weight of the newest step length."),
    streams: int = typer.Option(32, help="cuda-multi-stream: streams the jobs take in turn."),
    inflight_steps: int = typer.Option(4, help="Paella dispatcher: blocks in flight at once."),
    out: Path = typer.Option(Path("gpushare-measure"), help="Folder for load.csv, jobs/ and measure.json."),
):
    """Run the workload for real on this GPU (needs CUDA and torchvision): per-job times and
    `gpushare load`'s table, measured."""
    from kvsim.experiments.gpushare import load_setup
    from kvsim.experiments.gpushare_real import RealSettings, check_real_policies, measure_sweep
    from kvsim.gpushare.policies.base import DispatchSettings
    from kvsim.gpushare.policies.registry import parse_policies
    from kvsim.reports.gpushare_plots import plot_load_sweep

    check_out(out)
    settings = DispatchSettings(hardware_queues=hardware_queues, ewma_alpha=ewma_alpha)
    names = parse_policies(policies)
    check_real_policies(names, settings)
    loads = _floats("gpushare measure", "--load", load)
    setup = load_setup(gpu, mix, profiles, num_jobs, sigma, seed, settings)
    log = lambda line: console.print(line, highlight=False, markup=False)  # noqa: E731
    table = measure_sweep(setup, names, loads, out, RealSettings(streams, inflight_steps), log)
    plot_load_sweep(table, setup.caption() + ", measured", out / "load.png")
    console.print(f"wrote {out / 'load.csv'}, {out / 'load.png'}, {out / 'measure.json'}, {out / 'jobs'}/")


@gpushare_app.command("compare-real")
def gpushare_compare_real(
    folder: Path = typer.Argument(..., help="What `simcli gpushare measure` wrote."),
    profiles: Optional[Path] = typer.Option(
        None, help="Folder of kernel profiles to simulate with.", show_default="the shipped ones"
    ),
    outstanding_limit: int = typer.Option(2, help="Simulated Paella: kernels allowed to wait for SM room."),
    dispatch_overhead_us: float = typer.Option(
        0.0, help="Simulated Paella: the dispatcher's time per kernel (us)."
    ),
    jobs: int = _jobs(),
):
    """Simulate the measured points on the same jobs; write compare.csv (measured, simulated and
    the simulation's relative error), simulated.csv and compare.png into FOLDER."""
    from kvsim.experiments.gpushare_real import BELOW_SATURATION, compare_real, compare_setup
    from kvsim.reports.gpushare_plots import plot_measured_vs_simulated

    setup, measured = compare_setup(folder, profiles, outstanding_limit, dispatch_overhead_us * 1e-6)
    with _progress() as bar:
        task = bar.add_task("simulating", total=measured.policy.nunique() * measured.load.nunique())
        table, simulated = compare_real(setup, measured, jobs, lambda: bar.advance(task))
    table.to_csv(folder / "compare.csv", index=False)
    simulated.to_csv(folder / "simulated.csv", index=False)
    plot_measured_vs_simulated(table, setup.caption() + ": measured and simulated", folder / "compare.png")
    errors = {"throughput": "throughput_jobs_s", "mean": "latency_mean_s", "p99": "latency_p99_s"}
    shown = table[table.model == "all"].rename(
        columns={"below_saturation": "below saturation", **{f"{v}_error": k for k, v in errors.items()}}
    )[["policy", "load", "below saturation", *errors]]
    console.print(
        "simulated vs measured over all jobs, relative error (below saturation: measured "
        f"throughput at least {BELOW_SATURATION:g} x the arrival rate)"
    )
    console.print(shown.to_string(index=False, formatters={c: (lambda v: f"{v:+.1%}") for c in errors}))
    console.print(f"wrote {folder / 'compare.csv'}, {folder / 'simulated.csv'}, {folder / 'compare.png'}")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (e.g. a cost extrapolated past a profile's measured range) as one line each."""
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def main() -> None:
    warnings.showwarning = _show_warning
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
