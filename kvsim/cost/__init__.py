"""Step-cost models: measured (or derived) profiles, and the analytic roofline as fallback.

Torch-free and clock-free: the engine, the simulator and the GPU executor price steps with
these; ``kvsim.calibration`` writes the profiles."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from kvsim.cost.cost_model import CostModel
from kvsim.cost.parallel import TensorParallelCost
from kvsim.cost.profile import (
    BLOCK_SIZES,
    check_model,
    decode_block_factor,
    is_eager,
    load_profile,
    measured_block_sizes,
    profile_name,
    shipped_profile,
)
from kvsim.cost.profile_model import ProfileCostModel
from kvsim.cost.roofline import RooflineCostModel
from kvsim.errors import KvsimError


class BlockSizeWarning(UserWarning):
    """The run's KV block size is not among those its (default) profile measured decode
    attention at."""


def select_cost_model(config, model, gpu) -> CostModel:
    """The cost model a run uses: ``config.profile`` if given, else the shipped profile for
    this model and GPU (its eager one with ``config.eager``), else the roofline (with a note
    saying so; with ``config.eager`` an error: the roofline knows no launches). For a
    tensor-parallel replica, that prices one rank's shard, and the ring's collectives are
    added to it (``TensorParallelCost``).

    A profile prices the tensor-parallel degree it was measured at; another is refused. Decode
    attention's cost depends on the KV block size: a profile knows it at its own block size
    and at those of its ``decode_block_size`` table. Another block size is refused for a
    profile the user named; for the default one the run goes on with a warning, priced as at
    the profile's own block size, so that block-size sweeps keep working (copies and swaps
    are priced by bytes whatever the block size)."""
    tp = config.tensor_parallel
    compute = _shard_cost(config, model.shard(tp), gpu)
    return compute if tp == 1 else TensorParallelCost(compute, model, gpu, tp)


def _shard_cost(config, shard, gpu) -> CostModel:
    """One rank's compute: the profile named, else the shipped one of this shard, else the
    roofline of the shard."""
    tp = config.tensor_parallel
    path = config.profile or shipped_profile(shard.name, gpu.name, eager=config.eager)
    if path is None and config.eager:
        raise KvsimError(
            f"--eager: no eager profile {profile_name(shard.name, gpu.name, eager=True)} is shipped "
            "(measure one with simcli calibrate --eager; derive it for another GPU with "
            "python -m kvsim.calibration.transfer)"
        )
    if path is None:
        how = "simcli calibrate" + ("" if tp == 1 else f" --tensor-parallel {tp}")
        print(
            f"note: no profile for {shard.name} on {gpu.name}; using the analytic roofline (`{how}` measures one)",
            file=sys.stderr,
        )
        return RooflineCostModel(shard, gpu, config.block_size)
    doc = load_profile(path)
    if doc["tensor_parallel"] != tp:
        raise KvsimError(
            f"profile {path} measured a shard of tensor parallelism {doc['tensor_parallel']}, "
            f"but the run uses --tensor-parallel {tp}"
        )
    check_model(doc, shard, str(path))
    if doc["gpu"]["name"] != gpu.name:
        raise KvsimError(
            f"profile {path} prices {doc['gpu']['name']}, but the run is on {gpu.name} "
            f"(pass --gpu {doc['gpu']['name']}, or derive a profile for {gpu.name} "
            "with python -m kvsim.calibration.transfer)"
        )
    if config.eager and not is_eager(doc):
        raise KvsimError(f"profile {path} measured the runner with CUDA graphs, but the run asks for --eager")
    if decode_block_factor(doc, config.block_size) is None:
        sizes = measured_block_sizes(doc)
        measured = (
            f"profile {path}: block_size is {doc['block_size']}, not the run's {config.block_size}: "
            f"the decode attention cost was measured at block size{'s' if len(sizes) > 1 else ''} "
            f"{', '.join(map(str, sizes))}"
        )
        if config.profile:
            add = (
                f"add it to the profile with simcli calibrate --block-sizes-only --profile {path}, or "
                if config.block_size in BLOCK_SIZES
                else ""
            )
            raise KvsimError(
                f"{measured} (run with --block-size {doc['block_size']}, {add}calibrate a profile "
                f"with simcli calibrate --block-size {config.block_size})"
            )
        warnings.warn(
            f"{measured}; this run prices it as at block size {doc['block_size']}",
            BlockSizeWarning,
            stacklevel=2,
        )
    # summary.json names the file without this checkout's location (a shipped profile by its
    # name), so the same run writes the same bytes from any directory.
    given = config.profile is not None and not Path(config.profile).is_absolute()
    return ProfileCostModel(
        doc, shard, config.block_size, source=config.profile if given else Path(path).name
    )
