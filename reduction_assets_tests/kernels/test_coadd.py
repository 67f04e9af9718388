"""Co-adding: clipped, weighted means with propagated variance, exposure and count maps."""

import numpy as np
import pytest

from reduction_assets.kernels import coadd

CR = 128


def members(n=5, shape=(40, 50), sigma=10.0, level=1000.0, seed=0):
    rng = np.random.default_rng(seed)
    sci = rng.normal(level, sigma, (n, *shape)).astype(np.float32)
    return sci, np.full(sci.shape, sigma**2, np.float32), np.zeros(sci.shape, np.uint16)


def run(sci, var, dq, **options):
    n = sci.shape[0]
    settings = {"weights": np.ones(n), "scales": np.ones(n), "offsets": np.zeros(n),
                "exptimes": np.full(n, 60.0), "reject_bits": CR, **options}  # fmt: skip
    return coadd(sci, var, dq, **settings)


def test_equal_members_give_their_mean_with_the_variance_over_n():
    sci, var, dq = members()
    out = run(sci, var, dq)
    np.testing.assert_allclose(out.sci, sci.mean(0), rtol=1e-6)
    np.testing.assert_allclose(out.variance, 100.0 / 5, rtol=1e-6)
    assert (out.count == 5).all() and (out.exposure == 300.0).all()


def test_an_unflagged_outlier_is_clipped_and_a_flagged_one_never_enters():
    sci, var, dq = members()
    sci[2, 10, 10] += 5000.0  # a cosmic ray the frame's DQ missed
    sci[3, 20, 20] += 5000.0
    dq[3, 20, 20] = CR
    out = run(sci, var, dq)
    assert out.count[10, 10] == 4 and out.rejected[10, 10] == 1
    assert out.count[20, 20] == 4 and out.rejected[20, 20] == 0
    assert abs(out.sci[10, 10] - 1000) < 30 and abs(out.sci[20, 20] - 1000) < 30
    assert out.exposure[10, 10] == 240.0


def test_star_cores_in_different_seeing_are_kept_by_the_amplitude_fraction():
    sci, var, dq = members(n=3)
    sci[:, 5, 5] = [51000.0, 61000.0, 46000.0]  # signals 20 % apart: far beyond the noise, within 30 %
    sci[:, 6, 6] = [1900.0, 1000.0, 1000.0]  # a hit of 900 e- on the sky: 90 % of the level, clipped
    out = run(sci, var, dq, background=1000.0)
    assert out.count[5, 5] == 3
    assert out.count[6, 6] == 2


def test_weights_scales_and_offsets_are_applied_before_averaging():
    sci, var, dq = members(n=2, sigma=1e-3)
    sci[1] = (sci[1] - 1000.0) * 0 + 600.0  # half the exposure, a lower sky
    out = run(sci, var, dq, scales=np.array([1.0, 2.0]), offsets=np.array([0.0, -200.0]),
              weights=np.array([3.0, 1.0]))  # fmt: skip
    np.testing.assert_allclose(out.sci, 1000.0, rtol=1e-5)
    # variance: (9 v0 + 1 * 4 v1) / 16
    np.testing.assert_allclose(out.variance, (9 * 1e-6 + 4 * 1e-6) / 16, rtol=1e-4)


def test_a_pixel_without_usable_values_is_zero_with_count_zero_and_no_nan():
    sci, var, dq = members(n=3)
    dq[:, 0, 0] = CR
    sci[:, 1, 1] = np.nan
    out = run(sci, var, dq)
    for y, x in ((0, 0), (1, 1)):
        assert out.count[y, x] == 0 and out.sci[y, x] == 0 and out.variance[y, x] == 0
    assert np.isfinite(out.sci).all()


def test_bad_per_member_values_are_refused():
    sci, var, dq = members(n=2)
    with pytest.raises(ValueError, match="weights"):
        run(sci, var, dq, weights=np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="scales must be 2"):
        run(sci, var, dq, scales=np.ones(3))
