"""How good is the cross-GPU transfer? For every model with shipped profiles measured on both
the H100 and the H200: derive each GPU's profile from the other's, and compare with every
step measured on that GPU, next to using the other GPU's profile unchanged.

    python benchmarks/calibration/transfer_check.py [--json FILE]
"""

import argparse
import json
import warnings

from kvsim.calibration.fit import prediction_errors
from kvsim.calibration.transfer import transfer_error
from kvsim.cost.profile import load_profile, shipped_profile, shipped_profiles
from kvsim.cost.profile_model import OutOfRangeWarning, ProfileCostModel
from kvsim.models import load_model

GPUS = ("h100-sxm-80gb", "h200-141gb")
KINDS = ("decode", "prefill", "copy", "swap")


def measured_models() -> list[str]:
    names = {p.stem for p in shipped_profiles()}
    models = {n.split("@")[0] for n in names}
    return sorted(m for m in models if all(f"{m}@{g}" in names for g in GPUS))


def check(model: str, source_gpu: str, target_gpu: str) -> dict:
    spec = load_model(model)
    source = load_profile(shipped_profile(model, source_gpu))
    target = load_profile(shipped_profile(model, target_gpu))
    derived = transfer_error(source, target, spec)
    unchanged = ProfileCostModel(source, spec, target["block_size"], engine=False)
    return {
        kind: {
            "transferred": derived[kind],
            "unchanged": prediction_errors(unchanged, kind, target["measurements"][kind]),
        }
        for kind in KINDS
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    warnings.simplefilter("ignore", OutOfRangeWarning)  # the H200 holds more context than the H100
    results = []
    print(
        f"{'model':12s} {'direction':10s} {'step':8s} {'n':>4s}  transferred MAPE / worst   unchanged MAPE / worst"
    )
    for model in measured_models():
        for source, target in (GPUS, GPUS[::-1]):
            errors = check(model, source, target)
            direction = f"{source[:4]}->{target[:4]}"
            for kind, err in errors.items():
                t, u = err["transferred"], err["unchanged"]
                print(
                    f"{model:12s} {direction:10s} {kind:8s} {t['n']:4d}  {100 * t['mape']:10.1f}% / "
                    f"{100 * t['max_ape']:5.1f}%   {100 * u['mape']:10.1f}% / {100 * u['max_ape']:5.1f}%"
                )
            results.append({"model": model, "source": source, "target": target, "errors": errors})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
