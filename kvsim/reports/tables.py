"""Terminal output: the run summary and the built-in catalogues as rich tables."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from kvsim.hardware import GiB


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


def print_run_summary(console: Console, result) -> None:
    s, cap, cfg = result.summary, result.capacity, result.config
    cost = result.cost_model
    console.print(f"[bold]{result.model.name}[/] on [bold]{cfg.num_replicas}x {result.gpu.name}[/], "
                  f"policy [bold]{cfg.policy}[/], block size {cfg.block_size}, "
                  f"cost model [bold]{cost.name}[/] ({cost.kind})")
    console.print(f"KV cache: {cap.kv_cache_bytes / GiB:.2f} GiB = {cap.num_blocks:,} blocks = "
                  f"{cap.num_slots:,} token slots per replica "
                  f"(weights {cap.weight_bytes / GiB:.2f} GiB, activations "
                  f"{cap.activation_bytes / GiB:.2f} GiB)")
    stats = result.trace.stats()
    console.print(f"Workload {result.trace.name}: {stats['num_requests']:,} requests, mean prompt "
                  f"{stats['mean_prompt_len']:.1f}, mean output {stats['mean_output_len']:.1f} tokens, "
                  f"offered {stats['offered_rate']:.2f} req/s")

    table = Table(title="Simulated serving", show_header=True)
    table.add_column("metric")
    table.add_column("mean", justify="right")
    table.add_column("p50", justify="right")
    table.add_column("p90", justify="right")
    table.add_column("p99", justify="right")
    for label, key in (("TTFT (ms)", "ttft_s"), ("TPOT (ms)", "tpot_s"),
                       ("end-to-end latency (ms)", "e2e_latency_s")):
        table.add_row(label, *(_ms(s[f"{key}_{q}"]) for q in ("mean", "p50", "p90", "p99")))
    console.print(table)

    totals = Table(show_header=False)
    totals.add_column("metric")
    totals.add_column("value", justify="right")
    rows = (
        ("completed / rejected", f"{s['completed']:,} / {s['rejected']:,}"),
        ("throughput", f"{s['throughput_req_s']:.3f} req/s, {s['throughput_output_tok_s']:,.0f} output tok/s"),
        ("normalized latency", f"{s['normalized_latency_s_per_token'] * 1e3:.2f} ms/token"),
        ("mean batch size", f"{s['mean_batch_size']:.2f} requests"),
        ("KV cache usage", f"mean {s['mean_kv_usage']:.1%}, peak {s['peak_kv_usage']:.1%}"),
        ("preemptions", f"{s['preemptions']:,} ({s['recomputed_tokens']:,} tokens recomputed)"),
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
