import pytest


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
