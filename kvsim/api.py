"""kvsim as a library: ``kvsim.simulate(config) -> Result``, the same run as ``simcli run``.

A Result holds the run's tables as pandas DataFrames (``requests``: one row per request,
``steps``: one row per engine step or run of identical decode steps, the columns of
requests.csv and iterations.csv) and its ``summary`` (summary.json's metrics), and writes what
``simcli run`` writes: the output files, the timeline and the figures. docs/api.md walks
through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from kvsim import __version__
from kvsim.config import SimConfig
from kvsim.cost.cost_model import CostModel
from kvsim.errors import KvsimError
from kvsim.experiments.compare import caption
from kvsim.experiments.run import CostModelFactory, RunResult, run
from kvsim.hardware import GPUSpec
from kvsim.models import ModelSpec


@dataclass(frozen=True)
class Result:
    config: SimConfig
    summary: dict  # summary.json's metrics
    requests: pd.DataFrame  # requests.csv
    steps: pd.DataFrame  # iterations.csv
    run: RunResult  # the rest: model, GPU, KV capacity, cost model, generated trace

    @classmethod
    def of(cls, result: RunResult) -> "Result":
        return cls(
            result.config,
            result.summary,
            result.recorder.requests_frame(),
            result.recorder.steps_frame(),
            result,
        )

    @property
    def caption(self) -> str:
        """What was simulated, in one line (the figures' caption)."""
        return f"policy {self.config.policy} · " + caption(
            self.config, len(self.run.trace), self.run.cost_model
        )

    def write(self, out_dir: str | Path) -> Path:
        """requests.csv, iterations.csv, summary.json and config.json, as `simcli run --out`."""
        return self.run.write(out_dir)

    def write_timeline(self, path: str | Path) -> Path:
        """The run as a Perfetto / chrome://tracing trace (kvsim.reports.timeline)."""
        from kvsim.reports.timeline import write_timeline  # imported on use, as matplotlib below

        about = {"kvsim_version": __version__, "run": self.caption, "config": self.config.to_dict()}
        return write_timeline(self.requests, self.steps, self.config.num_replicas, Path(path), about)

    def write_figures(self, out_dir: str | Path) -> list[Path]:
        """KV usage and queue over time, latency CDFs and the per-request scatter, as PNGs."""
        # Imported on use: matplotlib takes longer to import than a small run takes to simulate.
        from kvsim.reports.run_plots import write_run_figures

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        return write_run_figures(self.requests, self.steps, self.run.capacity.num_blocks, self.caption, out)


def _config(config: SimConfig | dict | str | Path | None, settings: dict) -> SimConfig:
    if config is None:
        base = SimConfig()
    elif isinstance(config, SimConfig):
        base = config
    elif isinstance(config, dict):
        base = SimConfig(**config)
    elif isinstance(config, (str, Path)):
        base = SimConfig.from_file(config)
    else:
        raise KvsimError(
            f"config must be a SimConfig, a dict or a config.json path, not {type(config).__name__}"
        )
    return replace(base, **settings).validate()


def simulate(
    config: SimConfig | dict | str | Path | None = None,
    *,
    cost_model: CostModel | CostModelFactory | None = None,
    progress: Callable[[int, int], None] | None = None,
    **settings,
) -> Result:
    """Simulate one configuration, as `simcli run` does.

    ``config``: a SimConfig, a dict of its fields, the path of a config.json written by
    `simcli run --out`, or None for the defaults; keyword ``settings`` (SimConfig fields, e.g.
    ``rate=2.0``) override it. ``cost_model``: one's own step-cost model instead of the shipped
    profile, as a CostModel (kvsim.cost.cost_model) or as a function
    ``(config, model, gpu) -> CostModel``. ``progress(arrived, total)`` is called as requests
    arrive. Bad settings raise KvsimError before anything runs."""
    chosen = _config(config, settings)
    if cost_model is None:
        return Result.of(run(chosen, progress))
    if isinstance(cost_model, CostModel):
        given = cost_model

        def factory(config: SimConfig, model: ModelSpec, gpu: GPUSpec) -> CostModel:
            return given
    elif callable(cost_model):
        factory = cost_model
    else:
        raise KvsimError(f"cost_model must be a CostModel or a function returning one, not {cost_model!r}")
    return Result.of(run(chosen, progress, cost_model_for=factory))
