"""simcli: the command-line front of kvsim.

Every command turns bad input into one line on stderr and exit status 2; nothing else
should ever reach the user as a traceback.
"""

from __future__ import annotations

import functools
import itertools
import sys
import typing
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields, replace
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kvsim.config import SimConfig
from kvsim.errors import KvsimError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Simulate LLM serving: model x GPU x KV-cache policy x traffic.")
console = Console()
err_console = Console(stderr=True)


def friendly_errors(command):
    """Show KvsimError as one line and exit 2."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KvsimError as err:
            err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    return wrapper


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err_console, transient=True,
                    disable=not err_console.is_terminal)


@app.command()
@friendly_errors
def run(
    model: str = typer.Option("opt-13b", help="Built-in model name or path to a HF config.json."),
    gpu: str = typer.Option("a100-40gb", help="Built-in GPU name or path to a GPU spec JSON."),
    policy: str = typer.Option("paged", help="KV-cache policy (see `simcli policies`)."),
    trace: str = typer.Option("sharegpt", help="Built-in workload (sharegpt, alpaca) or a trace file."),
    rate: Optional[float] = typer.Option(2.0, help="Requests per second; 0 < rate."),
    num_requests: Optional[int] = typer.Option(None, help="Number of requests [default: 1000, or all that arrive within --duration]."),
    duration: Optional[float] = typer.Option(None, help="Stop generating arrivals after this many seconds."),
    arrival: str = typer.Option("poisson", help="poisson, gamma, or trace (the file's timestamps)."),
    burstiness_cv: float = typer.Option(1.0, help="Coefficient of variation of gamma inter-arrivals."),
    block_size: int = typer.Option(16, help="Tokens per KV block (1 to 256)."),
    gpu_memory_utilization: float = typer.Option(0.9, help="Fraction of GPU memory kvsim may use."),
    max_num_seqs: int = typer.Option(256, help="Most sequences in one batch."),
    max_num_batched_tokens: Optional[int] = typer.Option(None, help="Most prompt tokens in one prefill step [default: max(2560, context length)]."),
    ft_batch_size: Optional[int] = typer.Option(None, help="Policy ft: requests per batch [default: the most max-length reservations that fit]."),
    num_replicas: int = typer.Option(1, help="Model replicas behind the router."),
    router: str = typer.Option("round-robin", help="round-robin or least-loaded."),
    profile: Optional[str] = typer.Option(None, help="Step-cost profile file [default: see README]."),
    seed: int = typer.Option(0, help="Seed for lengths and arrivals."),
    tokenizer: Optional[str] = typer.Option(None, help="Local tokenizer directory for ShareGPT JSON traces."),
    over_length: str = typer.Option("reject", help="Requests longer than the model's context: reject or clip."),
    n: int = typer.Option(1, "--n", help="Parallel samples per request (sharing the prompt's blocks)."),
    independent_sample_lengths: bool = typer.Option(False, help="Each sample draws its own output length [default: all generate the trace's]."),
    beam_width: int = typer.Option(1, help="Beam search with this many beams."),
    beam_stay: float = typer.Option(0.5, help="Beam model: chance a new beam continues the beam of its own rank."),
    beam_skew: float = typer.Option(1.0, help="Beam model: otherwise parent rank r drawn with weight (r+1)^-skew."),
    prefix_len: int = typer.Option(0, help="Shared system prompt of this many tokens prepended to every request."),
    num_prefixes: int = typer.Option(1, help="How many different shared prefixes."),
    prefix_popularity: float = typer.Option(1.0, help="Zipf exponent of the prefixes' popularity (0: uniform)."),
    prefix_caching: bool = typer.Option(False, help="Automatic prefix caching: reuse cached full blocks by content hash."),
    preemption: str = typer.Option("recompute", help="Preemption: recompute or swap."),
    swap_space: float = typer.Option(4.0, help="CPU swap space per replica, GiB."),
    out: Optional[Path] = typer.Option(None, help="Write requests.csv, iterations.csv, summary.json, config.json here."),
    config: Optional[Path] = typer.Option(None, help="Take all settings from a config.json written by an earlier run."),
):
    """Simulate one configuration and print its summary."""
    from kvsim.reports.tables import print_run_summary
    from kvsim.sim.run import run as simulate_run

    if config is not None:
        sim_config = SimConfig.from_file(config)
    else:
        sim_config = SimConfig(
            model=model, gpu=gpu, policy=policy, trace=trace, rate=rate, num_requests=num_requests,
            duration=duration, arrival=arrival, burstiness_cv=burstiness_cv, block_size=block_size,
            gpu_memory_utilization=gpu_memory_utilization, max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens, ft_batch_size=ft_batch_size,
            num_replicas=num_replicas, router=router, profile=profile, seed=seed, tokenizer=tokenizer, over_length=over_length,
            n=n, independent_sample_lengths=independent_sample_lengths, beam_width=beam_width,
            beam_stay=beam_stay, beam_skew=beam_skew, prefix_len=prefix_len,
            num_prefixes=num_prefixes, prefix_popularity=prefix_popularity,
            prefix_caching=prefix_caching, preemption=preemption, swap_space=swap_space).validate()
    with _progress() as bar:
        task = bar.add_task("simulating", total=None)
        result = simulate_run(sim_config, progress=lambda done, total: bar.update(task, completed=done, total=total))
    print_run_summary(console, result)
    if out is not None:
        written = result.write(out)
        console.print(f"wrote {written}/requests.csv, iterations.csv, summary.json, config.json")


# -- sweep ------------------------------------------------------------------------------------
SWEEP_COLUMNS = ("completed", "rejected", "throughput_req_s", "throughput_output_tok_s",
                 "normalized_latency_s_per_token", "ttft_s_mean", "ttft_s_p90", "tpot_s_mean",
                 "e2e_latency_s_mean", "e2e_latency_s_p90", "mean_batch_size", "mean_kv_usage",
                 "preemptions")


# What a switch's values may say in a list (e.g. `simcli sweep --prefix-caching false,true`).
TRUE_WORDS, FALSE_WORDS = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def _field_type(command: str, name: str) -> type:
    """The type of option ``--name`` (a SimConfig field; Optional unwrapped)."""
    hints = typing.get_type_hints(SimConfig)
    if name not in hints:
        raise KvsimError(f"{command}: unknown option --{name.replace('_', '-')} "
                         f"(options: {', '.join('--' + f.name.replace('_', '-') for f in fields(SimConfig))})")
    return next((t for t in typing.get_args(hints[name]) if t is not type(None)), hints[name])


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
    raise KvsimError(f"{command}: --{name.replace('_', '-')} value {text!r} is not a {base.__name__}")


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
        name = flag[2:].replace("-", "_")
        if not rest or rest[0].startswith("--"):
            if _field_type(command, name) is not bool:
                raise KvsimError(f"{command}: {flag} needs a value")
            grid[name] = [True]
            continue
        grid[name] = [_parse_value(command, name, v) for v in rest.pop(0).split(",") if v != ""]
    return grid


def _sweep_point(overrides: dict) -> dict:
    from kvsim.sim.run import run as simulate_run

    try:
        result = simulate_run(SimConfig(**overrides).validate())
    except KvsimError as err:
        return {**overrides, "error": str(err)}
    row = {**overrides, "num_blocks": result.capacity.num_blocks}
    row.update({k: result.summary[k] for k in SWEEP_COLUMNS})
    return row


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@friendly_errors
def sweep(
    ctx: typer.Context,
    out: Path = typer.Option(Path("sweep.csv"), help="CSV file with one row per point."),
    jobs: int = typer.Option(2, help="Parallel worker processes."),
):
    """Run every combination of option values: simcli sweep --block-size 8,16,32 --rate 1,2 [--model ...].

    Any `simcli run` option can be given, with one value or a comma-separated list.
    """
    import pandas as pd

    grid = parse_option_args("sweep", list(ctx.args))
    names = list(grid)
    points = [dict(zip(names, combo)) for combo in itertools.product(*grid.values())] or [{}]
    for point in points:
        SimConfig(**point).validate()
    with _progress() as bar:
        task = bar.add_task("sweeping", total=len(points))
        rows = []
        with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
            for row in pool.map(_sweep_point, points):
                rows.append(row)
                bar.advance(task)
    table = pd.DataFrame(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    console.print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    console.print(f"wrote {out}")


# -- compare ----------------------------------------------------------------------------------
@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@friendly_errors
def compare(
    ctx: typer.Context,
    policies: str = typer.Option("paged,orca-oracle,orca-pow2,orca-max,ft", help="Comma-separated KV-cache policies."),
    rate: str = typer.Option("1", help="Request rates (req/s), comma-separated; each policy runs at each."),
    out: Optional[Path] = typer.Option(None, help="Write compare.csv and the figures (PNG) here."),
    jobs: int = typer.Option(2, help="Parallel worker processes."),
):
    """Run several policies on the same trace: simcli compare --policies paged,orca-max --rate 1,2 [--model ...].

    Any other `simcli run` option can follow, with one value (a switch such as
    --prefix-caching alone). Every policy sees the same requests, lengths and arrival times;
    --preemption applies to the policies that preempt (paged).
    """
    from kvsim.reports.tables import print_compare_table
    from kvsim.sim.compare import caption, compare_policies, parse_policies, sharing_settings

    names = parse_policies(policies)
    rates = [_parse_value("compare", "rate", v) for v in rate.split(",") if v.strip()]
    settings = parse_option_args("compare", list(ctx.args))
    for name, values in settings.items():
        if name == "policy":
            raise KvsimError("compare: give the policies with --policies")
        if len(values) != 1:
            raise KvsimError(f"compare: --{name.replace('_', '-')} takes one value (only --policies and --rate take lists)")
    base = SimConfig(**{name: values[0] for name, values in settings.items()}).validate()
    if out is not None:  # before the runs, so a bad path costs nothing
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise KvsimError(f"cannot create output directory {out}: {err}") from None
    with _progress() as bar:
        task = bar.add_task("comparing", total=len(names) * max(1, len(rates)))
        table = compare_policies(base, names, rates or [base.rate], jobs, on_point=lambda: bar.advance(task))
    text = caption(base, int(table["completed"].iloc[0] + table["rejected"].iloc[0]))
    print_compare_table(console, table, text, sharing=bool(sharing_settings(base)))
    if out is not None:
        from kvsim.reports.plots import write_compare_figures

        table.to_csv(out / "compare.csv", index=False)
        figures = write_compare_figures(table, text, out)
        console.print(f"wrote {out / 'compare.csv'}, " + ", ".join(f.name for f in figures))


# -- catalogues --------------------------------------------------------------------------------
@app.command()
def models():
    """Built-in models and what kvsim derives from their shapes."""
    from kvsim.models import BUILTIN_CONFIGS, load_model
    from kvsim.reports.tables import print_catalogue

    rows = []
    for name in BUILTIN_CONFIGS:
        spec = load_model(name)
        rows.append([name, spec.family, f"{spec.param_count / 1e9:.2f}B",
                     f"{spec.weight_bytes / 2**30:.1f}", f"{spec.kv_bytes_per_token / 1024:.0f}",
                     f"{spec.num_heads}/{spec.num_kv_heads}", str(spec.max_model_len)])
    print_catalogue(console, "Built-in models (fp16)",
                    ["name", "family", "params", "weights GiB", "KV KiB/token", "heads/KV heads", "context"], rows)


@app.command()
def gpus():
    """Built-in GPUs and their datasheet numbers."""
    from kvsim.hardware import BUILTIN_GPUS, GiB
    from kvsim.reports.tables import print_catalogue

    rows = [[g.name, f"{g.memory_bytes / GiB:.1f}", f"{g.fp16_flops / 1e12:.0f}",
             f"{g.hbm_bandwidth / 1e9:,.0f}", f"{g.pcie_bandwidth / 1e9:.0f}",
             f"{g.nvlink_bandwidth / 1e9:.0f}", g.source] for g in BUILTIN_GPUS.values()]
    print_catalogue(console, "Built-in GPUs",
                    ["name", "memory GiB", "fp16 TFLOP/s", "HBM GB/s", "PCIe GB/s", "NVLink GB/s", "source"], rows)


@app.command()
def policies():
    """KV-cache allocation policies."""
    from kvsim.policies.registry import available_policies
    from kvsim.reports.tables import print_catalogue

    print_catalogue(console, "Policies", ["name", "description"],
                    [[p.name, p.description] for p in available_policies().values()])


# -- calibration ------------------------------------------------------------------------------
@app.command()
@friendly_errors
def calibrate(
    model: str = typer.Option("opt-13b", help="Built-in model name or path to a HF config.json."),
    out: Optional[Path] = typer.Option(None, help="Profile file to write (default: MODEL@GPU.json)."),
    block_size: int = typer.Option(16, help="Tokens per KV block of the measured cache."),
    quick: bool = typer.Option(False, help="Thinner grid and fewer repeats: a rough profile, fast."),
    gpu: Optional[str] = typer.Option(None, help="GPU spec the profile is for (default: the one detected)."),
):
    """Measure step costs on this machine's GPU, fit them, write a profile (needs CUDA)."""
    from kvsim.calibration.calibrate import calibrate as run_calibration

    run_calibration(model, out, block_size, quick, gpu,
                    log=lambda line: console.print(line, highlight=False, markup=False))


@app.command()
@friendly_errors
def profiles():
    """Shipped step-cost profiles: measured on a GPU, or derived from a measured one."""
    from kvsim.calibration.profile import load_profile, shipped_profiles
    from kvsim.reports.tables import print_catalogue

    rows = []
    for path in shipped_profiles():
        doc = load_profile(path)
        prov = doc["provenance"]
        # A derived profile shows the fit of the measured one it comes from.
        report = doc["fit_report"].get("source", doc["fit_report"])
        fit = " / ".join(f"{100 * report[k]['heldout']['mape']:.1f}%" for k in ("decode", "prefill"))
        origin = "measured" if prov["kind"] == "measured" else f"derived ({prov['from'].split('@')[-1]})"
        rows.append([doc["model"]["name"], doc["gpu"]["name"], origin, doc["created"][:10],
                     str(doc["block_size"]), fit])
    print_catalogue(console, "Shipped profiles (kvsim/calibration/profiles)",
                    ["model", "gpu", "provenance", "date", "block", "held-out MAPE decode / prefill"], rows)


# -- validation -------------------------------------------------------------------------------
@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@friendly_errors
def validate(
    ctx: typer.Context,
    out: Path = typer.Option(Path("validation"), help="Directory for validation.csv, plots and logs."),
    campaign: Optional[Path] = typer.Option(None, help="JSON list of points, each a dict of `run` options (see docs/validation/)."),
    calibrate_first: bool = typer.Option(False, "--calibrate", help="Calibrate each model on this GPU first (profiles written to --out) and simulate with those profiles."),
):
    """Run traces through the real GPU executor and the simulator, and compare them.

    Takes `simcli run` options, each with one value or a comma-separated list (the points are
    their cross product), e.g. simcli validate --model opt-13b --rate 1,2,4 --num-requests 100,
    or a --campaign file. The GPU is the one found; the simulator uses its calibrated profile,
    or with --calibrate one measured on this very machine just before (host speed, which sets
    the pace of short eager prefills, differs between machines of one GPU model).
    """
    from kvsim.gpu.validate import detect_gpu, load_campaign, relative_errors, run_campaign, step_error_summary
    from kvsim.reports.validation_plots import latency_scatter, step_error_histogram

    grid = parse_option_args("validate", list(ctx.args))
    if campaign:  # options given beside a campaign apply to all its points (e.g. --profile)
        if any(len(values) > 1 for values in grid.values()):
            raise KvsimError("validate: with --campaign, other options take one value")
        points = [{**point, **{name: values[0] for name, values in grid.items()}}
                  for point in load_campaign(campaign)]
    else:
        points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    gpu = detect_gpu()
    configs = [SimConfig(**{"gpu": gpu, **point}).validate() for point in points]
    if calibrate_first:
        configs = _with_fresh_profiles(configs, out)
    table = run_campaign(configs, out, progress=lambda text: err_console.print(text))
    import pandas as pd

    requests, steps = pd.read_csv(out / "requests.csv"), pd.read_csv(out / "steps.csv")
    caption = f"GPU {configs[0].gpu}; " + "; ".join(sorted({f"{c.model} on {c.trace}" for c in configs}))
    latency_scatter(requests, out / "latency_scatter.png", caption)
    step_error_histogram(steps, out / "step_error.png", caption)
    errors = relative_errors(table)
    console.print(errors.to_string(index=False, formatters={
        c: (lambda v: f"{v:+.1%}") for c in errors.columns if c.endswith("_rel_error")}))
    console.print(f"per-step cost-model error: {step_error_summary(steps)}")
    console.print(f"wrote {out}/validation.csv, requests.csv, steps.csv, latency_scatter.png, step_error.png")


def _with_fresh_profiles(configs: list[SimConfig], out: Path) -> list[SimConfig]:
    """Each config pointed at a profile calibrated now, on this GPU, one per model and block size."""
    from kvsim.calibration.calibrate import calibrate as run_calibration

    profiles: dict[tuple[str, int], Path] = {}
    for config in configs:
        key = (config.model, config.block_size)
        if key not in profiles:
            _, profiles[key] = run_calibration(
                config.model, out / f"{config.model}-block{config.block_size}.profile.json",
                block_size=config.block_size, log=lambda text: err_console.print(text))
    return [replace(c, profile=str(profiles[(c.model, c.block_size)])) for c in configs]


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
