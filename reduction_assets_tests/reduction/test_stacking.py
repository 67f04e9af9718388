"""Stacking decisions as pure functions: the grid, members left out, and areas without data."""

import numpy as np
import pytest
from astropy.wcs import WCS

from reduction_assets.reduction.dq import DQ
from reduction_assets.reduction.stacking import (
    GroupRefused,
    MemberDecision,
    MemberImage,
    MemberInfo,
    StackSettings,
    assess_members,
    footprint_on,
    output_grid,
    stack_images,
)

SCALE = 0.389  # arcsec per pixel
SHAPE = (96, 96)


def tan(ra=30.0, dec=-20.0, shift=(0.0, 0.0)) -> WCS:
    """A TAN WCS whose pointing is ``shift`` pixels (x east-ish, y north) from (ra, dec)."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [SHAPE[1] / 2 + 0.5 - shift[0], SHAPE[0] / 2 + 0.5 - shift[1]]
    wcs.wcs.cd = np.array([[-SCALE / 3600, 0.0], [0.0, SCALE / 3600]])
    return wcs


def catalogue(wcs: WCS, n=40, seed=0, flux_scale=1.0, wcs_error_arcsec=(0.0, 0.0)) -> np.ndarray:
    """Sources of a fixed star field as this frame would measure them (with a WCS error)."""
    rng = np.random.default_rng(seed)
    ra = 30.0 + rng.uniform(-0.004, 0.004, n)
    dec = -20.0 + rng.uniform(-0.004, 0.004, n)
    flux = np.exp(np.random.default_rng(1).uniform(np.log(1e4), np.log(1e6), n)) * flux_scale
    x, y = wcs.all_world2pix(ra, dec, 0)
    table = np.zeros(n, dtype=[("x", "f8"), ("y", "f8"), ("flux", "f8"), ("flux_err", "f8"), ("flag", "i4"),
                               ("ra", "f8"), ("dec", "f8")])  # fmt: skip
    table["x"], table["y"], table["flux"], table["flux_err"] = x, y, flux, np.sqrt(flux)
    table["ra"] = ra + wcs_error_arcsec[0] / 3600 / np.cos(np.radians(20))
    table["dec"] = dec + wcs_error_arcsec[1] / 3600
    inside = (x > 0) & (x < SHAPE[1] - 1) & (y > 0) & (y < SHAPE[0] - 1)
    return table[inside]


def member(name, shift=(0.0, 0.0), **catalogue_options) -> MemberInfo:
    wcs = tan(shift=shift)
    return MemberInfo(name, wcs, SHAPE, 60.0, 1200.0, 35.0, catalogue(wcs, **catalogue_options))


def test_the_grid_covers_the_union_of_the_footprints_at_the_pixel_scale():
    members = [member("a"), member("b", shift=(10, -6))]
    grid = output_grid(members, SCALE, 4.0)
    # the union is 96 + 6 by 96 + 10 pixels; the grid's pixel centres may sit half a pixel off its edges
    assert SHAPE[0] + 6 <= grid.shape[0] <= SHAPE[0] + 7 and SHAPE[1] + 10 <= grid.shape[1] <= SHAPE[1] + 11
    for info in members:
        x, y = footprint_on(grid.wcs, info)
        assert x.min() >= -1.0 and y.min() >= -1.0
        assert x.max() <= grid.shape[1] and y.max() <= grid.shape[0]
    assert np.sqrt(abs(np.linalg.det(grid.wcs.pixel_scale_matrix))) * 3600 == pytest.approx(SCALE)


def test_frames_far_apart_are_refused_before_anything_is_allocated():
    with pytest.raises(GroupRefused, match="too far apart to stack"):
        output_grid([member("a"), member("b", shift=(400, 0))], SCALE, 4.0)


def test_a_member_that_does_not_overlap_the_reference_is_left_out():
    members = [member("a"), member("b", shift=(2, 1)), member("c", shift=(100, 0))]
    grid = output_grid(members, SCALE, 4.0)
    decisions = assess_members(members, grid, StackSettings())
    assert [d.included for d in decisions] == [True, True, False]
    assert "overlaps the reference" in decisions[2].reason and "0%" in decisions[2].reason


def test_a_member_whose_wcs_is_30_arcsec_off_is_left_out_and_the_others_scaled():
    members = [member("a"), member("b", shift=(3, 2), flux_scale=0.8), member("c", wcs_error_arcsec=(0, 30))]
    decisions = assess_members(members, output_grid(members, SCALE, 4.0), StackSettings())
    assert [d.included for d in decisions] == [True, True, False]
    assert decisions[2].wcs_offset_arcsec == pytest.approx(30.0, abs=0.05)
    assert "WCS disagrees with the group's by 30.0 arcsec" in decisions[2].reason
    assert (
        decisions[1].scale == pytest.approx(1 / 0.8, rel=1e-3)
        and decisions[1].scale_method == "matched sources"
    )


def test_a_member_without_sources_in_common_is_left_out_with_its_reason():
    members = [member("a"), member("b", seed=5)]  # another star field
    decisions = assess_members(members, output_grid(members, SCALE, 4.0), StackSettings())
    assert not all(d.included for d in decisions)
    assert any(
        "sources matched" in (d.reason or "") or "WCS disagrees" in (d.reason or "") for d in decisions
    )


def test_an_area_flagged_in_every_member_has_no_data_and_no_nan():
    members = [member("a"), member("b", shift=(1.5, 0.5)), member("c", shift=(-0.5, 2.5))]
    grid = output_grid(members, SCALE, 4.0)
    decisions = [MemberDecision(m.name, True, weight=1.0) for m in members]

    def load(info):
        dq = np.zeros(SHAPE, np.uint16)
        dq[:, 40:50] = DQ.BAD_PIXEL  # the same columns of every frame: one sky area for all
        sci = np.full(SHAPE, 1200.0, np.float32)
        sci[:, 40:50] = np.nan  # whatever is there must not leak
        return MemberImage(sci, np.full(SHAPE, 35.0, np.float32), dq, info.wcs)

    image = stack_images([lambda m=m: load(m) for m in members], decisions, [60.0] * 3, [1200.0] * 3, grid,
                         StackSettings())  # fmt: skip
    assert np.isfinite(image.sci).all() and np.isfinite(image.err).all()
    empty = image.count == 0
    assert empty[:, 48:52].all()  # columns 40-49 of each member, shifted by at most 2.5 px
    assert (image.dq[empty] & DQ.NO_DATA).all() and (image.sci[empty] == 0).all()
    assert np.allclose(image.sci[~empty], 1200.0, rtol=1e-4)
    assert ((image.dq & DQ.NO_DATA) != 0).sum() == empty.sum()


def test_memory_blocks_give_the_same_stack_as_one_block():
    members = [member("a"), member("b", shift=(1.5, 0.5))]
    grid = output_grid(members, SCALE, 4.0)
    decisions = [MemberDecision(m.name, True, weight=1.0) for m in members]
    rng = np.random.default_rng(2)
    planes = {m.name: rng.normal(1200, 35, SHAPE).astype(np.float32) for m in members}

    def load(info):
        return MemberImage(
            planes[info.name], np.full(SHAPE, 35.0, np.float32), np.zeros(SHAPE, np.uint16), info.wcs
        )

    def run(budget):
        settings = StackSettings(memory_budget=budget)
        return stack_images(
            [lambda m=m: load(m) for m in members], decisions, [60.0] * 2, [1200.0] * 2, grid, settings
        )

    small, large = run(8 * 1024), run(256 << 20)  # a few rows per block, and one block
    np.testing.assert_array_equal(small.sci, large.sci)
    np.testing.assert_array_equal(small.count, large.count)


def test_disk_planes_give_the_same_stack_as_planes_in_memory(tmp_path):
    from reduction_assets.support.scratch import scratch_planes

    members = [member("a"), member("b", shift=(1.5, 0.5)), member("c", shift=(-2.0, 1.0))]
    grid = output_grid(members, SCALE, 4.0)
    decisions = [MemberDecision(m.name, True, weight=1.0 + k) for k, m in enumerate(members)]
    rng = np.random.default_rng(3)
    planes = {m.name: rng.normal(1200, 35, SHAPE).astype(np.float32) for m in members}

    def load(info):
        return MemberImage(
            planes[info.name], np.full(SHAPE, 35.0, np.float32), np.zeros(SHAPE, np.uint16), info.wcs
        )

    loads = [lambda m=m: load(m) for m in members]
    settings = StackSettings(memory_budget=16 * 1024)
    in_memory = stack_images(loads, decisions, [60.0] * 3, [1200.0] * 3, grid, settings)
    with scratch_planes(tmp_path) as on_disk:
        from_disk = stack_images(loads, decisions, [60.0] * 3, [1200.0] * 3, grid, settings, planes=on_disk)
        assert len(list(tmp_path.iterdir())) == 1  # the scratch folder, while it is used
    assert list(tmp_path.iterdir()) == []  # and gone after
    np.testing.assert_array_equal(from_disk.sci, in_memory.sci)
    np.testing.assert_array_equal(from_disk.err, in_memory.err)
    np.testing.assert_array_equal(from_disk.exposure, in_memory.exposure)


def noisy_group(seed):
    members = [member("a"), member("b", shift=(1.5, 0.5)), member("c", shift=(-2.0, 1.0))]
    grid = output_grid(members, SCALE, 4.0)
    decisions = [MemberDecision(m.name, True, weight=1.0 + k) for k, m in enumerate(members)]
    rng = np.random.default_rng(seed)
    planes = {m.name: rng.normal(1200, 35, SHAPE).astype(np.float32) for m in members}

    def load(info):
        return MemberImage(
            planes[info.name], np.full(SHAPE, 35.0, np.float32), np.zeros(SHAPE, np.uint16), info.wcs
        )

    return [lambda m=m: load(m) for m in members], decisions, grid


def test_members_resampled_on_a_pool_of_two_give_the_serial_stack_bit_for_bit():
    from reduction_assets.support.parallel import FramePool

    loads, decisions, grid = noisy_group(seed=4)
    serial = stack_images(loads, decisions, [60.0] * 3, [1200.0] * 3, grid, StackSettings())
    with FramePool(2) as pool:
        assert pool.workers == 2
        pooled = stack_images(
            loads, decisions, [60.0] * 3, [1200.0] * 3, grid, StackSettings(), map_members=pool.map_in_order
        )
    for plane in ("sci", "err", "dq", "exposure", "count"):
        np.testing.assert_array_equal(getattr(pooled, plane), getattr(serial, plane))
    assert pooled.statistics == serial.statistics


def test_a_member_that_cannot_be_loaded_raises_its_own_error_through_the_pool():
    from reduction_assets.support.parallel import FramePool

    loads, decisions, grid = noisy_group(seed=5)

    def missing():
        raise FileNotFoundError("b.fits is not in the store")

    loads[1] = missing
    with FramePool(2) as pool, pytest.raises(FileNotFoundError, match=r"b\.fits is not in the store"):
        stack_images(
            loads, decisions, [60.0] * 3, [1200.0] * 3, grid, StackSettings(), map_members=pool.map_in_order
        )
