"""A block's footprint and how many blocks an SM holds: CUDA's occupancy arithmetic."""

import pytest

from kvsim.gpushare.kernels import Kernel
from kvsim.hardware import SM_LIMITS

H200 = SM_LIMITS["h200-141gb"]


@pytest.mark.parametrize(
    "threads, registers, smem, expected, limit",
    [
        (1024, 32, 0, 2, "threads: 2,048 per SM"),
        (32, 16, 0, 32, "blocks: 32 per SM"),
        (256, 255, 0, 1, "registers: 8 warps x 32 x 256 = the SM's 65,536"),
        (256, 128, 0, 2, "registers: 8 warps x 16 x 256 = half the SM's"),
        (128, 32, 100 * 1024, 2, "shared memory: 101 KiB each of 228"),
        (128, 32, 113 * 1024, 2, "shared memory: 114 KiB each of 228 (the reserved KiB included)"),
        (128, 32, 114 * 1024, 1, "shared memory: 115 KiB each, one fits"),
        (48, 32, 0, 32, "threads count in whole warps: 48 takes 64, and 32 blocks take 2,048"),
    ],
)
def test_blocks_per_sm(threads, registers, smem, expected, limit):
    assert Kernel("k", 1e-5, 100, threads, registers, smem).blocks_per_sm(H200) == expected, limit


def test_every_block_needs_some_of_each_resource():
    need = Kernel("k", 1e-5, 1, 1, 0, 0).block_need(H200)
    assert (need > 0).all()
