"""Terminal output: the run summary and the built-in catalogues as rich tables."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from kvsim.hardware import GiB


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


def print_run_summary(console: Console, result) -> None:
    s, cap, cfg = result.summary, result.capacity, result.config
    cost = result.cost_model
    tp = cfg.tensor_parallel
    n = cfg.num_replicas
    replicas = (
        f"{n}x {result.gpu.name}" if tp == 1 else f"{n} replica{'s' * (n > 1)} of {tp}x {result.gpu.name}"
    )
    console.print(
        f"[bold]{result.model.name}[/] on [bold]{replicas}[/]"
        + (f" (tensor parallel {tp})" if tp > 1 else "")
        + ", "
        f"policy [bold]{cfg.policy}[/], block size {cfg.block_size}, scheduler "
        f"[bold]{cfg.step_scheduler}[/] ({result.policy_context.max_num_batched_tokens:,} tokens per step), "
        f"cost model [bold]{cost.name}[/] ({cost.kind})"
    )
    per_gpu = "" if tp == 1 else " per GPU"
    console.print(
        f"KV cache: {cap.kv_cache_bytes / GiB:.2f} GiB{per_gpu} = {cap.num_blocks:,} blocks = "
        f"{cap.num_slots:,} token slots per replica "
        f"(weights {cap.weight_bytes / GiB:.2f} GiB{per_gpu}, activations "
        f"{cap.activation_bytes / GiB:.2f} GiB{per_gpu})"
    )
    stats = result.trace.stats()
    console.print(
        f"Workload {result.trace.name}: {stats['num_requests']:,} requests, mean prompt "
        f"{stats['mean_prompt_len']:.1f}, mean output {stats['mean_output_len']:.1f} tokens, "
        f"offered {stats['offered_rate']:.2f} req/s"
    )

    table = Table(title="Simulated serving", show_header=True)
    table.add_column("metric")
    table.add_column("mean", justify="right")
    table.add_column("p50", justify="right")
    table.add_column("p90", justify="right")
    table.add_column("p99", justify="right")
    for label, key in (
        ("TTFT (ms)", "ttft_s"),
        ("TPOT (ms)", "tpot_s"),
        ("end-to-end latency (ms)", "e2e_latency_s"),
    ):
        table.add_row(label, *(_ms(s[f"{key}_{q}"]) for q in ("mean", "p50", "p90", "p99")))
    console.print(table)

    totals = Table(show_header=False)
    totals.add_column("metric")
    totals.add_column("value", justify="right")
    rows = (
        ("completed / rejected", f"{s['completed']:,} / {s['rejected']:,}"),
        (
            "throughput",
            f"{s['throughput_req_s']:.3f} req/s, {s['throughput_output_tok_s']:,.0f} output tok/s",
        ),
        (
            "steady throughput",
            "- (too short a run)"
            if s["steady_window_s"] != s["steady_window_s"]  # NaN: no window
            else f"{s['steady_throughput_req_s']:.3f} req/s over {s['steady_window_s']:,.0f} s of arrivals",
        ),
        ("normalized latency", f"{s['normalized_latency_s_per_token'] * 1e3:.2f} ms/token"),
        ("mean batch size", f"{s['mean_batch_size']:.2f} requests"),
        ("KV cache usage", f"mean {s['mean_kv_usage']:.1%}, peak {s['peak_kv_usage']:.1%}"),
        ("preemptions", f"{s['preemptions']:,} ({s['recomputed_tokens']:,} tokens recomputed)"),
        (
            "preempted by",
            f"swap {s['preempted_by_swap']:,}, recompute {s['preempted_by_recompute']:,} "
            f"(swap space full {s['swap_space_full_fallbacks']:,}); "
            f"swapped {s['swapped_bytes'] / GiB:,.2f} GiB",
        ),
        (
            "sharing",
            f"saves {s['sharing_memory_saving']:.1%} of blocks; {s['forks']:,} forks, "
            f"{s['block_copies']:,} block copies",
        ),
        (
            "prefix cache",
            (
                "on, no prompt content to match (the trace has lengths only)"
                if cfg.prefix_caching_on
                else "off"
            )
            if s["prefix_hit_rate"] != s["prefix_hit_rate"]
            # NaN: no look-ups
            else f"hit rate {s['prefix_hit_rate']:.1%}, {s['prefill_tokens_saved']:,} prefill tokens saved",
        ),
        ("engine steps", f"{s['num_steps']:,} in {s['num_step_events']:,} events"),
    )
    for row in rows:
        totals.add_row(*row)
    console.print(totals)


def print_catalogue(console: Console, title: str, columns: list[str], rows: list[list[str]]) -> None:
    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, no_wrap=i == 0)  # names must survive a narrow terminal
    for row in rows:
        table.add_row(*row)
    console.print(table)


# The two tables of `simcli compare`: (header, summary key, format); "%" shows a share.
COMPARE_SERVING = (
    ("tput\nreq/s", "throughput_req_s", "{:.2f}"),
    ("norm lat\ns/tok", "normalized_latency_s_per_token", "s"),
    ("TTFT\np50 s", "ttft_s_p50", "s"),
    ("TTFT\np99 s", "ttft_s_p99", "s"),
    ("TPOT\np50 ms", "tpot_s_p50", "ms"),
    ("TPOT\np99 ms", "tpot_s_p99", "ms"),
    ("mean\nbatch", "mean_batch_size", "{:.1f}"),
    ("rej.", "rejected", "{:,}"),
)
COMPARE_WASTE = (
    ("token states", "waste_token_states", "%"),
    ("reservation", "waste_reservation", "%"),
    ("internal frag.", "waste_internal_fragmentation", "%"),
    ("external & other", "waste_external_and_other", "%"),
)
# A third table when blocks may be shared: what sharing saved, and what it cost.
COMPARE_SHARING = (
    ("memory saved\nby sharing", "sharing_memory_saving", "%"),
    ("forks", "forks", "{:,}"),
    ("block copies", "block_copies", "{:,}"),
    ("prefix hit rate", "prefix_hit_rate", "%"),
)


def _compare_cell(value, fmt: str) -> str:
    if value != value:  # NaN: not measured (e.g. no prefix lookups)
        return "-"
    if fmt == "ms":
        return f"{value * 1e3:.1f}"
    if fmt == "s":  # 3 significant digits, never in scientific notation
        return f"{value:.3g}" if value < 1000 else f"{value:.0f}"
    if fmt == "%":
        return f"{100 * value:.1f}%"
    return fmt.format(value)


def print_compare_table(console: Console, table, caption: str, sharing: bool = False) -> None:
    """A ``simcli compare`` table, one row per (policy, rate): serving metrics, then where
    the KV cache went (time-averaged shares of its slots, summing to 100%), and with
    ``sharing`` (sampling, beams, prefixes on) what block sharing saved and cost."""
    tables = [
        ("Policy comparison: serving (same trace for every policy)", COMPARE_SERVING),
        ("Policy comparison: KV cache by use, time average", COMPARE_WASTE),
    ]
    if sharing:
        tables.append(("Policy comparison: block sharing", COMPARE_SHARING))
    for i, (title, columns) in enumerate(tables):
        note = caption if i == len(tables) - 1 else None
        out = Table(title=title, caption=note, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        out.add_column("policy", no_wrap=True)
        out.add_column("rate\nreq/s", justify="right", no_wrap=True)
        for header, _, _ in columns:
            out.add_column(header, justify="right")
        for _, row in table.iterrows():
            out.add_row(
                row["policy"], f"{row['rate']:g}", *(_compare_cell(row[key], fmt) for _, key, fmt in columns)
            )
        console.print(out)
