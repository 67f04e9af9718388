"""Flag planes of a DQ image in one pass ((dq & bits) != 0 for several groups of bits), and the
positions of flagged pixels (np.nonzero on every core)."""

import numpy as np
import pytest

from reduction_assets.kernels.bits import any_set, flagged_positions
from reduction_assets.reduction.dq import DQ


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, ">u2", np.uint8])
def test_each_plane_is_where_any_of_its_bits_is_set(dtype):
    rng = np.random.default_rng(7)
    dq = rng.integers(0, 256, (67, 45)).astype(dtype)
    groups = (1, 2 | 8, 128, 255, 64 | 4)
    planes = any_set(dq, *groups)
    assert len(planes) == len(groups)
    for plane, group in zip(planes, groups, strict=True):
        assert plane.dtype == np.bool_ and plane.shape == dq.shape
        assert np.array_equal(plane, (dq & group) != 0)
        assert 0 < plane.sum() < plane.size


def test_the_pipelines_flags_are_found_in_a_dq_plane():
    dq = np.zeros((4, 4), dtype=np.uint16)
    dq[0, 0] = DQ.COSMIC_RAY | DQ.SATURATED
    dq[1, 2] = DQ.NO_DATA
    hits, unusable, saturated = any_set(dq, DQ.COSMIC_RAY, DQ.NO_DATA | DQ.BAD_PIXEL, DQ.SATURATED)
    assert list(zip(*np.nonzero(hits))) == [(0, 0)]
    assert list(zip(*np.nonzero(unusable))) == [(1, 2)]
    assert list(zip(*np.nonzero(saturated))) == [(0, 0)]


@pytest.mark.parametrize(
    "dq, groups, message",
    [
        (np.zeros(5, np.uint16), (1,), "2-d integer array"),
        (np.zeros((5, 5), np.float32), (1,), "2-d integer array"),
        (np.zeros((5, 5), np.uint16), (), "no groups"),
        (np.zeros((5, 5), np.uint16), (0,), "positive integer"),
        (np.zeros((5, 5), np.uint16), (1 << 16,), "fits uint16"),
        (np.zeros((5, 5), np.uint16), (1.5,), "positive integer"),
    ],
)
def test_bad_input_is_refused_with_the_reason(dq, groups, message):
    with pytest.raises(ValueError, match=message):
        any_set(dq, *groups)


@pytest.mark.parametrize("fraction", [0.0, 0.003, 0.3, 1.0])
def test_flagged_positions_are_numpys_nonzero_in_row_major_order(fraction):
    mask = np.random.default_rng(int(fraction * 1000)).random((203, 157)) < fraction
    ys, xs = flagged_positions(mask)
    theirs = np.nonzero(mask)
    assert np.array_equal(ys, theirs[0]) and np.array_equal(xs, theirs[1])
    assert ys.dtype == theirs[0].dtype and ys.size == int(mask.sum())
    # A view (every other column) is found like its copy.
    assert all(
        np.array_equal(a, b) for a, b in zip(flagged_positions(mask[:, ::2]), np.nonzero(mask[:, ::2]))
    )


@pytest.mark.parametrize("mask", [np.zeros(5, bool), np.zeros((3, 3), np.uint8), np.zeros((2, 2, 2), bool)])
def test_flagged_positions_refuse_anything_but_a_2d_boolean_mask(mask):
    with pytest.raises(ValueError, match="2-d boolean"):
        flagged_positions(mask)
