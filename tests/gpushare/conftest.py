"""Fixtures shared by the gpushare tests."""

import pytest
from gpushare_chains import profile_kernel, write_profile


@pytest.fixture
def profiles(tmp_path):
    """A folder of kernel-chain profiles of the two extreme models, short and made up: a
    ResNet-18 of small kernels and an Inception-v3 of long wide ones."""
    folder = tmp_path / "profiles"
    folder.mkdir()
    write_profile(folder, "resnet18", "h200-141gb", [profile_kernel(20, 64), profile_kernel(10, 300)] * 3)
    write_profile(folder, "inception_v3", "h200-141gb", [profile_kernel(40, 500)] * 12)
    return folder
