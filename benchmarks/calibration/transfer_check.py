"""How good is the cross-GPU transfer? Predict the H200 from the measured H100 profile (OPT-13B)
and compare with every step measured on the H200, next to using the H100 profile unchanged.

    python benchmarks/calibration/transfer_check.py
"""

import json
import warnings
from pathlib import Path

from kvsim.calibration.fit import prediction_errors
from kvsim.calibration.profile import load_profile, shipped_profile
from kvsim.calibration.profile_model import OutOfRangeWarning, ProfileCostModel
from kvsim.calibration.transfer import transfer_error
from kvsim.models import load_model

MEASURED = Path(__file__).parent / "measured" / "opt-13b@h200-141gb.json"


def main() -> None:
    warnings.simplefilter("ignore", OutOfRangeWarning)  # the H200 holds more context than the H100
    spec = load_model("opt-13b")
    source = load_profile(shipped_profile("opt-13b", "h100-sxm-80gb"))
    target = json.loads(MEASURED.read_text())
    derived = transfer_error(source, target, spec)
    unchanged = ProfileCostModel(source, spec, target["block_size"], engine=False)
    print(f"{'step':8s} {'n':>4s}  transferred MAPE / worst   H100 unchanged MAPE / worst")
    for kind, err in derived.items():
        same = prediction_errors(unchanged, kind, target["measurements"][kind])
        print(f"{kind:8s} {err['n']:4d}  {100 * err['mape']:10.1f}% / {100 * err['max_ape']:5.1f}%"
              f"   {100 * same['mape']:12.1f}% / {100 * same['max_ape']:5.1f}%")


if __name__ == "__main__":
    main()
