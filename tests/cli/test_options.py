"""The simulation options are SimConfig's fields: every command offers each of them, --help
shows each one's help and default, and an option given explicitly beats --config."""

import json
import re
from concurrent.futures import Future
from dataclasses import fields, replace

import pytest
from typer.testing import CliRunner

from kvsim.cli import app
from kvsim.config import MAX_NUM_REQUESTS, MAX_SWAP_SPACE_GIB, SimConfig, option_name
from kvsim.errors import KvsimError

runner = CliRunner()

# Valid, and different from the default in every field: each option must be seen to arrive.
OTHER = SimConfig(
    model="llama-2-7b",
    gpu="h100-sxm-80gb",
    dtype="bfloat16",
    num_replicas=2,
    tensor_parallel=2,
    router="least-loaded",
    policy="orca-max",
    block_size=32,
    gpu_memory_utilization=0.8,
    max_num_seqs=128,
    scheduler="v0",
    max_num_batched_tokens=4096,
    long_prefill_token_threshold=256,
    max_num_partial_prefills=2,
    watermark=0.02,
    ft_batch_size=8,
    profile="p.json",
    eager=True,
    trace="alpaca",
    rate=3.0,
    num_requests=7,
    duration=60.0,
    arrival="gamma",
    burstiness_cv=2.0,
    seed=5,
    tokenizer="tok",
    over_length="clip",
    n=2,
    independent_sample_lengths=True,
    beam_width=2,
    beam_stay=0.25,
    beam_skew=2.0,
    prefix_len=8,
    num_prefixes=2,
    prefix_popularity=0.5,
    prefix_caching=True,
    preemption="swap",
    swap_space=2.0,
).validate()


def run_args(settings: dict) -> list[str]:
    """`simcli run` options giving each of ``settings`` (a switch as --x or --no-x)."""
    args = []
    for name, value in settings.items():
        flag = option_name(name)
        args += [flag if value else f"--no-{flag[2:]}"] if isinstance(value, bool) else [flag, str(value)]
    return args


def list_args(config: SimConfig, skip=()) -> list[str]:
    """The settings of ``config`` as `sweep` and `compare` take them: ``--x value``, switches too."""
    return [
        arg
        for f in fields(config)
        if f.name not in skip
        for arg in (option_name(f.name), str(getattr(config, f.name)))
    ]


@pytest.fixture
def simulated(monkeypatch):
    """The configs `simcli run` hands to the simulator, which is replaced by a refusal."""
    seen = []

    def skip(config, progress=None):
        seen.append(config)
        raise KvsimError("simulation skipped")

    monkeypatch.setattr("kvsim.experiments.run.run", skip)
    return seen


def test_other_differs_from_the_default_in_every_field():
    """Keeps the tests below complete: a new field must be given a value in OTHER."""
    default = SimConfig()
    assert [f.name for f in fields(SimConfig) if getattr(OTHER, f.name) == getattr(default, f.name)] == []


def test_run_takes_every_field(simulated):
    result = runner.invoke(app, ["run", *run_args(OTHER.to_dict())])
    assert "simulation skipped" in result.stderr, result.output
    assert simulated == [OTHER]


def test_sweep_takes_every_field(monkeypatch, tmp_path):
    points = []

    class Pool:
        """Records the points in place of running them."""

        def __init__(self, max_workers):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, function, point):
            points.append(point)
            done = Future()
            done.set_result((dict(point), []))  # a worker's row and the warnings it recorded
            return done

    monkeypatch.setattr("kvsim.experiments.sweep.ProcessPoolExecutor", Pool)
    result = runner.invoke(app, ["sweep", "--out", str(tmp_path / "sweep.csv"), *list_args(OTHER)])
    assert result.exit_code == 0, result.output
    assert [SimConfig(**point) for point in points] == [OTHER]


def test_compare_takes_every_field_but_policy_and_rate(monkeypatch):
    bases = []

    def compare_policies(base, *args, **kwargs):
        bases.append(base)
        raise KvsimError("comparison skipped")

    monkeypatch.setattr("kvsim.experiments.compare.compare_policies", compare_policies)
    result = runner.invoke(
        app, ["compare", "--policies", "paged", *list_args(OTHER, skip=("policy", "rate"))]
    )
    assert "comparison skipped" in result.stderr, result.output
    assert bases == [replace(OTHER, policy=SimConfig().policy, rate=SimConfig().rate)]


@pytest.mark.parametrize("overrides", [{}, {"rate": 2.0, "prefix_caching": False, "block_size": 16}])
def test_explicit_options_beat_config_even_at_their_default(tmp_path, simulated, overrides):
    """Each override is SimConfig's default: given explicitly, it still replaces the file's value."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(OTHER.to_dict()))
    runner.invoke(app, ["run", "--config", str(path), *run_args(overrides)])
    assert simulated == [replace(OTHER, **overrides)]


def help_rows(command: str) -> dict[str, str]:
    """Option -> its row in ``command --help``, wide enough that no row wraps."""
    text = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"}).stdout
    return {m.group(1): line for line in text.splitlines() if (m := re.match(r"│ (--[a-z-]+)", line))}


@pytest.mark.parametrize(
    "command, skipped", [("run", ()), ("sweep", ()), ("validate", ()), ("compare", ("policy", "rate"))]
)
def test_help_shows_every_option_whole_with_its_default(command, skipped):
    """Bracketed text (a default, an interval) once vanished as rich markup."""
    rows = help_rows(command)
    for f in fields(SimConfig):
        if f.name not in skipped:
            row = rows[option_name(f.name)]
            assert f.metadata["help"] in row and "[default: " in row, row
            if f.default is None:
                assert f.metadata["default_text"] in row, row


@pytest.mark.parametrize(
    "name, limit, shown",
    [
        ("num_requests", MAX_NUM_REQUESTS, f"{MAX_NUM_REQUESTS:,}"),
        ("swap_space", MAX_SWAP_SPACE_GIB, f"{MAX_SWAP_SPACE_GIB:g}"),
    ],
)
def test_limits_are_stated_in_the_help_and_inclusive(name, limit, shown):
    assert f"at most {shown}" in help_rows("run")[option_name(name)]
    SimConfig(**{name: limit}).validate()
    with pytest.raises(KvsimError, match=option_name(name)):
        SimConfig(**{name: limit + 1}).validate()


def test_an_option_alias_works_in_the_list_commands_too():
    """`--tp` is `--tensor-parallel` in sweep, compare and validate, as in run."""
    from kvsim.cli import parse_option_args

    assert parse_option_args("sweep", ["--tp", "2,4", "--rate", "1"]) == {
        "tensor_parallel": [2, 4],
        "rate": [1.0],
    }
