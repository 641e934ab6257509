"""Step-cost models: measured (or derived) profiles, and the analytic roofline as fallback.

Torch-free and clock-free: the engine, the simulator and the GPU executor price steps with
these; ``kvsim.calibration`` writes the profiles."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from kvsim.cost.cost_model import CostModel
from kvsim.cost.parallel import TensorParallelCost
from kvsim.cost.profile import check_model, load_profile, shipped_profile
from kvsim.cost.profile_model import ProfileCostModel
from kvsim.cost.roofline import RooflineCostModel
from kvsim.errors import KvsimError


class BlockSizeWarning(UserWarning):
    """The run's KV block size differs from the one its (default) profile was measured at."""


def select_cost_model(config, model, gpu) -> CostModel:
    """The cost model a run uses: ``config.profile`` if given, else the shipped profile for
    this model and GPU, else the roofline (with a note saying so). For a tensor-parallel
    replica, that prices one rank's shard, and the ring's collectives are added to it
    (``TensorParallelCost``).

    A profile prices the tensor-parallel degree and KV block size it was measured at. Another
    degree is refused. Another block size is refused for a profile the user named; for the
    default one the run goes on with a warning, so that block-size sweeps keep working (copies
    and swaps are priced by bytes, but decode attention's cost is the one measured)."""
    tp = config.tensor_parallel
    compute = _shard_cost(config, model.shard(tp), gpu)
    return compute if tp == 1 else TensorParallelCost(compute, model, gpu, tp)


def _shard_cost(config, shard, gpu) -> CostModel:
    """One rank's compute: the profile named, else the shipped one of this shard, else the
    roofline of the shard."""
    tp = config.tensor_parallel
    path = config.profile or shipped_profile(shard.name, gpu.name)
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
    if doc["block_size"] != config.block_size:
        measured = (
            f"profile {path}: block_size is {doc['block_size']}, not the run's "
            f"{config.block_size}: the decode attention cost was measured at block size "
            f"{doc['block_size']}"
        )
        if config.profile:
            raise KvsimError(
                f"{measured} (run with --block-size {doc['block_size']}, or calibrate "
                f"a profile with simcli calibrate --block-size {config.block_size})"
            )
        warnings.warn(f"{measured}; this run uses it as measured", BlockSizeWarning, stacklevel=2)
    # summary.json names the file without this checkout's location (a shipped profile by its
    # name), so the same run writes the same bytes from any directory.
    given = config.profile is not None and not Path(config.profile).is_absolute()
    return ProfileCostModel(
        doc, shard, config.block_size, source=config.profile if given else Path(path).name
    )
