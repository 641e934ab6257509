"""The rule by which a prefill's new tokens are padded to the shapes calibration measured.

The runner pads every prefill by ``PREFILL_PADDING``, calibration measures the padded sizes,
and a profile records the padding it was measured under and prices by it: so every step
runs a shape its profile priced. GEMM time is not monotone in rows (benchmarks/KERNELS.md
shows a layer faster at a padded row count than just above a multiple), so interpolating
between measured counts could not be trusted.
"""

from __future__ import annotations

import bisect
import math

#: Up to the last of ``sizes`` a prefill runs as the next of them; above, as the next
#: multiple of ``multiple``.
PREFILL_PADDING = {"sizes": [16, 32, 64], "multiple": 128}


def padded_tokens(padding: dict, tokens: float) -> int:
    """The rows a prefill of ``tokens`` new tokens runs as under ``padding`` (a profile's
    ``prefill_padding``, or ``PREFILL_PADDING``)."""
    fits = bisect.bisect_left(padding["sizes"], tokens)
    if fits < len(padding["sizes"]):
        return padding["sizes"][fits]
    return math.ceil(tokens / padding["multiple"]) * padding["multiple"]
