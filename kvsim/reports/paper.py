"""Write ``simcli report paper``'s page: each section's figures as PNG and its paragraph, table
and images in one Markdown file (README.md in the output folder)."""

from __future__ import annotations

from pathlib import Path

from kvsim.reports.paper_plots import plot_grouped_bars, plot_lines
from kvsim.reports.plots import plot_batch_size, plot_latency_vs_rate, plot_waste_breakdown

PAGE = "README.md"


def draw(figure, out: Path) -> Path:
    """One figure of a section (``kvsim.experiments.paper.Figure``) as a PNG in ``out``."""
    path, args = out / figure.file, figure.args
    if figure.kind == "latency":
        return plot_latency_vs_rate(args["table"], figure.caption, path)
    if figure.kind == "waste":
        return plot_waste_breakdown(args["table"], figure.caption, path)
    if figure.kind == "batch":
        return plot_batch_size(args["table"], figure.caption, path)
    if figure.kind == "lines":
        return plot_lines(path, caption=figure.caption, **args)
    if figure.kind == "bars":
        return plot_grouped_bars(path, caption=figure.caption, **args)
    raise ValueError(f"unknown figure kind {figure.kind!r}")


def write_paper_page(sections, out: Path, scale_name: str, command: str) -> Path:
    """The page and its PNGs in ``out``; returns the page's path."""
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# The vLLM paper, reproduced by kvsim",
        "",
        f"Written by `{command}` ({scale_name} settings). Each section: what the paper "
        '(Kwon et al., "Efficient Memory Management for Large Language Model Serving with '
        "PagedAttention\", SOSP 2023) reports, quoted as the paper's, and what kvsim's runs show. "
        "Settings throughout: A100-40GB profiles (A100-80GB for OPT-175B), of kvsim's runner with "
        "CUDA graphs off where such an eager profile is shipped, as the paper's engine ran (each "
        "caption says which: eager or CUDA-graph profile), block size 16, the v0 scheduler (the "
        "paper's engine), Poisson arrivals, seed 0, output lengths forced.",
        "",
    ]
    for section in sections:
        lines += [f"## {section.title}", "", section.paragraph, ""]
        if section.table:
            lines += [section.table, ""]
        for figure in section.figures:
            path = draw(figure, out)
            lines += [f"![{section.title}]({path.name})", ""]
    page = out / PAGE
    page.write_text("\n".join(lines))
    return page
