import pytest

from kvsim.calibration.profile import PrefillTokens


def test_fit_recovers_known_coefficients(synthetic_profile, true_coefficients):
    for kind, terms in true_coefficients.items():
        for term, value in terms.items():
            assert synthetic_profile["coefficients"][kind][term] == pytest.approx(value, rel=1e-3, abs=1e-12), \
                f"{kind}.{term}"


def test_fit_report_is_exact_on_noise_free_data(synthetic_profile):
    report = synthetic_profile["fit_report"]
    assert report["decode"]["heldout"]["n"] == 20 and report["prefill"]["heldout"]["n"] == 20
    assert report["overall_heldout"]["max_ape"] < 1e-6


def test_profile_records_provenance_and_ranges(synthetic_profile):
    assert synthetic_profile["provenance"]["kind"] == "measured"
    grid = synthetic_profile["grid"]
    assert grid["decode"]["batch"][1] <= 256 and grid["copy"]["blocks"] == [1, 256]
    assert synthetic_profile["tensor_parallel"] == 1 and synthetic_profile["dtype"] == "float16"


def test_prefill_is_priced_at_the_padded_size_it_runs_as():
    """A prefill runs padded to the next of the small sizes, or to a multiple of 128 above
    them, and costs what the table measured at that size."""
    table = PrefillTokens({"tokens": [16, 32, 64, 128, 256], "seconds": [1.0, 2.0, 3.0, 5.0, 9.0],
                           "weights_s": 0.5}, {"sizes": [16, 32, 64], "multiple": 128})
    assert table(1) == table(16) == 1.0
    assert table(17) == table(32) == 2.0
    assert table(65) == table(128) == 5.0
    assert table(129) == table(256) == 9.0
    assert table(300) == 13.0  # padded to 384, past the table along its last segment
