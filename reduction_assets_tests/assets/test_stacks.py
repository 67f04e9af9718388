"""stacks as a Dagster asset, against the simulator's truth: positions, fluxes, noise, cosmic rays,
members left out, incremental runs and bad input."""

import shutil

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from sqlalchemy import select

from reduction_assets.catalog import Catalog, Product, Stack
from reduction_assets.catalog.stacks import stacks_of
from reduction_assets.simulator.night import SimulationConfig, _render_stars, simulate_night
from reduction_assets.support.home import Home
from reduction_assets_tests.conftest import NIGHT, deliver, with_header
from reduction_assets_tests.runs import metadata, run_asset, run_partition

TARGET = "NGC 253 field"
N_DITHER = 4
EXPTIME = 60.0
CONFIG = SimulationConfig(seed=2024, size=(256, 256), n_dither=N_DITHER, n_targets=1, stars_per_10k_pixels=12)


@pytest.fixture(scope="module")
def built(tmp_path_factory, registry):
    """A 256x256 lcosim night with four dithered frames per filter, through the whole partition
    run (stacks included), built once for the module."""
    root = tmp_path_factory.mktemp("stacks")
    night = simulate_night(registry["lcosim"], NIGHT, root / "simulated", CONFIG)
    home = Home(root / "home").ensure()
    result = run_partition(home, deliver(night.frames, home.landing))
    return home, night, result


@pytest.fixture
def home_copy(tmp_path, built):
    home, night, _ = built
    copy = Home(tmp_path / "home")
    shutil.copytree(home.root, copy.root, symlinks=True)
    return copy, night


def run_stacks(home, **config):
    return run_asset(home, "stacks", **config)


def stack_rows(home) -> list[Stack]:
    with Catalog(home.catalog_url()).session() as session:
        return stacks_of(session, "lcosim", NIGHT)


def open_stack(home, row):
    return fits.open(home.products / row.path)


def truth_in_stack(night, wcs, filter_name):
    stars = night.truth.stars[night.truth.stars["target"] == TARGET]
    x, y = wcs.all_world2pix(stars["ra"], stars["dec"], 0)
    return x, y, stars[f"rate_{filter_name}"] * EXPTIME


def isolated_bright(x, y, flux, shape, cat, min_flux=1e5, margin=10):
    """Truth stars bright enough, away from the edges and from other stars, with their CAT match."""
    pairs = []
    for k in range(len(x)):
        if flux[k] < min_flux or not (
            margin < x[k] < shape[1] - margin and margin < y[k] < shape[0] - margin
        ):
            continue
        others = np.hypot(x - x[k], y - y[k])
        others[k] = np.inf
        if others.min() < 12:
            continue
        distance = np.hypot(cat["x"] - x[k], cat["y"] - y[k])
        j = int(np.argmin(distance))
        if distance[j] < 1.0 and cat["flag"][j] == 0:
            pairs.append((k, j))
    return pairs


def test_each_target_and_filter_gets_one_stack_of_all_its_frames(built):
    home, _, result = built
    rows = stack_rows(home)
    assert [(r.group_key, r.status, r.n_members) for r in rows] == [
        (f"{TARGET}|gp|1x1", "stacked", N_DITHER),
        (f"{TARGET}|rp|1x1", "stacked", N_DITHER),
    ]
    assert metadata(result, "stacks")["stacked"].value == 2
    with open_stack(home, rows[0]) as hdul:
        assert [h.name for h in hdul] == [
            "PRIMARY",
            "SCI",
            "ERR",
            "DQ",
            "EXPMAP",
            "NIMAGES",
            "CAT",
            "MEMBERS",
        ]
        assert hdul[0].header["NCOMBINE"] == N_DITHER and hdul[0].header["FINGERPR"] == rows[0].fingerprint
        assert hdul[0].header["EXPTIME"] == EXPTIME and hdul[0].header["IMCMB001"]
        assert WCS(hdul["SCI"].header).wcs.ctype[0] == "RA---TAN"
        assert hdul["EXPMAP"].data.max() == N_DITHER * EXPTIME and hdul["NIMAGES"].data.max() == N_DITHER
        members = hdul["MEMBERS"].data
        assert members["included"].all() and np.allclose(members["scale"], 1.0, atol=0.02)
    assert all(m.included and m.weight > 0 for m in rows[0].members)


def stars_measured_and_true(built, filter_name):
    """The stack's CAT, the truth stars' positions and fluxes in it, and isolated bright matches."""
    home, night, _ = built
    row = next(r for r in stack_rows(home) if f"|{filter_name}|" in r.group_key)
    with open_stack(home, row) as hdul:
        wcs, cat, shape = WCS(hdul["SCI"].header), np.array(hdul["CAT"].data), hdul["SCI"].data.shape
    x, y, flux = truth_in_stack(night, wcs, filter_name)
    return cat, x, y, flux, isolated_bright(x, y, flux, shape, cat)


@pytest.mark.parametrize("filter_name", ["gp", "rp"])
def test_star_positions_in_the_stack_are_within_0_05_px_of_the_truth(built, filter_name):
    cat, x, y, _, pairs = stars_measured_and_true(built, filter_name)
    assert len(pairs) >= 8
    dx = np.array([cat["x"][j] - x[k] for k, j in pairs])
    dy = np.array([cat["y"][j] - y[k] for k, j in pairs])
    assert np.abs(np.median(dx)) < 0.02 and np.abs(np.median(dy)) < 0.02
    assert np.max(np.hypot(dx, dy)) < 0.05


@pytest.mark.parametrize("filter_name", ["gp", "rp"])
def test_star_fluxes_in_the_stack_are_within_1_percent_of_the_truth(built, filter_name):
    cat, _, _, flux, pairs = stars_measured_and_true(built, filter_name)
    assert len(pairs) >= 8
    ratios = np.array([cat["flux"][j] / flux[k] for k, j in pairs])
    assert np.median(ratios) == pytest.approx(1.0, abs=0.01)


def block_sum_noise(image, usable, block=6):
    h, w = (image.shape[0] // block) * block, (image.shape[1] // block) * block
    sums = image[:h, :w].reshape(h // block, block, w // block, block).sum(axis=(1, 3))
    whole = usable[:h, :w].reshape(h // block, block, w // block, block).all(axis=(1, 3))
    values = sums[whole]
    assert values.size > 150
    return 1.4826 * np.median(np.abs(values - np.median(values)))


def away_from_stars(night, wcs, shape, filter_name):
    x, y, flux = truth_in_stack(night, wcs, filter_name)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    near = np.zeros(shape, dtype=bool)
    sigma = CONFIG.fwhm / 2.3548
    for xs, ys, f in zip(x, y, flux):
        radius = 1.5 + sigma * np.sqrt(2 * np.log(max(f, 10.0) / 10.0))  # where the wings fall below 1 e-
        near |= (xx - xs) ** 2 + (yy - ys) ** 2 < radius**2
    return ~near


def test_stack_noise_on_sky_is_the_single_frame_noise_over_root_n(built):
    home, night, _ = built
    row = next(r for r in stack_rows(home) if "|gp|" in r.group_key)
    with open_stack(home, row) as hdul:
        sci, err, dq = hdul["SCI"].data, hdul["ERR"].data, hdul["DQ"].data
        count, wcs = hdul["NIMAGES"].data, WCS(hdul["SCI"].header)
    sky = away_from_stars(night, wcs, sci.shape, "gp") & (dq == 0) & (count == N_DITHER)
    stack_noise = block_sum_noise(sci, sky)
    singles = []
    with Catalog(home.catalog_url()).session() as session:
        paths = [session.get(Product, m.product_id).path for m in row.members]
    for path in paths:
        with fits.open(home.products / path) as hdul:
            single, single_dq, single_wcs = hdul["SCI"].data, hdul["DQ"].data, WCS(hdul["SCI"].header)
        usable = away_from_stars(night, single_wcs, single.shape, "gp") & (single_dq == 0)
        singles.append(block_sum_noise(single, usable))
    assert stack_noise == pytest.approx(np.mean(singles) / np.sqrt(N_DITHER), rel=0.10)
    # ERR tells the truth about the pixel-to-pixel scatter of the stack
    pixel_scatter = 1.4826 * np.median(np.abs(sci[sky] - np.median(sci[sky])))
    assert pixel_scatter == pytest.approx(np.median(err[sky]), rel=0.10)


def test_no_injected_cosmic_ray_survives_into_the_stack(built):
    home, night, _ = built
    truth = night.truth
    rows = {r.group_key.split("|")[1]: r for r in stack_rows(home)}
    sigma = CONFIG.fwhm / 2.3548
    checked = 0
    for filter_name, row in rows.items():
        with open_stack(home, row) as hdul:
            sci, err = hdul["SCI"].data, hdul["ERR"].data
            wcs, count = WCS(hdul["SCI"].header), hdul["NIMAGES"].data
        x, y, flux = truth_in_stack(night, wcs, filter_name)
        model = CONFIG.sky_rate * EXPTIME + _render_stars(sci.shape, x, y, flux, sigma)
        for index, frame in enumerate(truth.frames):
            if frame.frame_type != "science" or frame.filter != filter_name:
                continue
            path = next(p for p in night.frames if p.name == frame.name)
            raw_wcs = WCS(fits.getheader(path))
            hits = truth.cosmic_rays[truth.cosmic_rays["frame"] == index]
            ra, dec = raw_wcs.all_pix2world(hits["x"], hits["y"], 0)
            cx, cy = wcs.all_world2pix(ra, dec, 0)
            for hx, hy, electrons in zip(cx, cy, hits["electrons"]):
                i, j = int(round(hy)), int(round(hx))
                # clipping needs three values; where fewer members overlap only the frames' DQ can help
                if not (0 <= i < sci.shape[0] and 0 <= j < sci.shape[1]) or count[i, j] < 3:
                    continue
                # a hit kept in one of four members would add >= electrons / 4 / 2 (resampled)
                residual = sci[i, j] - model[i, j]
                assert residual < max(5 * err[i, j], 0.02 * model[i, j], electrons / 16), (
                    filter_name,
                    hx,
                    hy,
                )
                checked += 1
    assert checked >= 10


def test_a_member_with_a_wcs_30_arcsec_off_is_left_out_with_its_reason(tmp_path, home_copy):
    home, night = home_copy
    source = next(
        p
        for p in night.frames
        if p.name.endswith("_science.fits") and "_gp_" in fits.getheader(p).get("FILTER", "") + "_gp_"
    )
    header = fits.getheader(source)
    shifted = with_header(
        source,
        tmp_path / "shifted" / "late_copy_science.fits",
        CRVAL2=header["CRVAL2"] + 30 / 3600,
        DATE_OBS=header["DATE-OBS"].replace("T", "T").rsplit(":", 1)[0] + ":59.000",
    )
    result = run_partition(home, deliver([shifted], home.landing))
    row = next(r for r in stack_rows(home) if r.group_key == f"{header['OBJECT']}|{header['FILTER']}|1x1")
    left_out = [m for m in row.members if not m.included]
    assert row.status == "stacked" and row.n_members == N_DITHER and len(left_out) == 1
    assert "WCS disagrees with the group's by 30.0 arcsec" in left_out[0].reason
    assert left_out[0].wcs_offset_arcsec == pytest.approx(30.0, abs=0.3)
    assert metadata(result, "stacks")["stacked"].value == 1  # the other filter's stack is up to date


def test_rematerializing_redoes_only_stacks_whose_members_changed(home_copy):
    home, _ = home_copy
    before = {r.group_key: (r.fingerprint, r.updated_at) for r in stack_rows(home)}
    result = run_partition(home, [])
    assert metadata(result, "stacks")["up_to_date"].value == 2
    assert {r.group_key: (r.fingerprint, r.updated_at) for r in stack_rows(home)} == before
    with Catalog(home.catalog_url()).session() as session:
        gp = next(r for r in session.scalars(select(Stack)) if "|gp|" in r.group_key)
        member = session.get(Product, gp.members[0].product_id)
        member.fingerprint = "0" * 64  # as if it had been reduced again differently
    result = run_stacks(home)
    assert metadata(result, "stacks")["stacked"].value == 1
    assert metadata(result, "stacks")["up_to_date"].value == 1


def test_members_resampled_side_by_side_give_the_bytes_resampled_one_at_a_time(home_copy, built):
    home, _ = home_copy
    serial = {r.group_key: r.checksum for r in stack_rows(home)}
    result = run_stacks(home, full_refresh=True, frame_workers=2)
    assert metadata(result, "stacks")["stacked"].value == 2
    assert metadata(result, "stacks")["frame_workers"].value == 2
    assert {r.group_key: r.checksum for r in stack_rows(home)} == serial
    assert metadata(built[2], "stacks")["frame_workers"].value == 1  # the default


def test_a_member_missing_from_the_store_fails_the_run_naming_it_and_other_groups_are_stacked(home_copy):
    home, _ = home_copy
    rows = stack_rows(home)
    with Catalog(home.catalog_url()).session() as session:
        victim = session.get(Product, rows[0].members[1].product_id).path
    (home.products / victim).unlink()
    result = run_stacks(home, full_refresh=True)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert victim in failure.event_specific_data.error.message or victim in str(failure.event_specific_data)
    after = {r.group_key: r for r in stack_rows(home)}
    assert after[rows[0].group_key].status == "failed" and victim in after[rows[0].group_key].reason
    assert after[rows[1].group_key].status == "stacked"
    assert after[rows[1].group_key].updated_at > rows[1].updated_at


def test_a_single_frame_and_an_unsafe_target_name(tmp_path, home_copy):
    home, night = home_copy
    science = [p for p in night.frames if p.name.endswith("_science.fits")][:3]
    renamed = [
        with_header(path, tmp_path / "renamed" / f"{k}_science.fits", OBJECT=name)
        for k, (path, name) in enumerate(
            zip(science, ["../../etc/passwd", "../../etc/passwd", "lonely target"])
        )
    ]
    run_partition(home, deliver(renamed, home.landing))
    rows = {r.group_key.split("|")[0]: r for r in stack_rows(home)}
    lonely = rows["lonely target"]
    assert lonely.status == "not_stacked" and "single frame" in lonely.reason
    assert lonely.path is None and len(lonely.members) == 1 and not lonely.members[0].included
    unsafe = rows["../../etc/passwd"]
    assert unsafe.status == "stacked"
    assert unsafe.path.startswith("stacks/lcosim/2026-11-20/") and ".." not in unsafe.path
    assert (home.products / unsafe.path).resolve().is_relative_to(home.products.resolve())


def test_progress_counts_the_stacks_of_each_night(built):
    from reduction_assets.catalog.reports import progress_rows

    home, _, _ = built
    with Catalog(home.catalog_url()).session() as session:
        row = progress_rows(session, NIGHT, NIGHT, ["lcosim"])[0]
    assert (row["reduced"], row["stacked"]) == (2 * N_DITHER, 2)


def test_frames_of_one_target_in_two_binnings_make_separate_stacks(tmp_path, home_copy, registry):
    home, _ = home_copy
    binned = simulate_night(
        registry["lcosim"],
        NIGHT,
        tmp_path / "binned",
        SimulationConfig(seed=7, size=(256, 256), binning=(2, 2), n_dither=3, n_targets=1, filters=("gp",)),
    )
    run_partition(
        home, deliver(binned.frames, home.landing, names=[f"binned_{p.name}" for p in binned.frames])
    )
    rows = {r.group_key: r for r in stack_rows(home)}
    assert rows[f"{TARGET}|gp|1x1"].n_members == N_DITHER
    binned_stack = rows[f"{TARGET}|gp|2x2"]
    assert binned_stack.status == "stacked" and binned_stack.n_members == 3, binned_stack.reason
    with open_stack(home, rows[f"{TARGET}|gp|2x2"]) as hdul:
        scale = np.sqrt(abs(np.linalg.det(WCS(hdul["SCI"].header).pixel_scale_matrix))) * 3600
        assert scale == pytest.approx(2 * registry["lcosim"].pixel_scale)


def test_a_damaged_stack_is_found_by_verify_and_made_again(home_copy, capsys):
    from reduction_assets.cli import main

    home, _ = home_copy
    row = stack_rows(home)[0]
    path = home.products / row.path
    path.chmod(0o644)
    with open(path, "r+b") as handle:
        handle.seek(20000)
        handle.write(b"\0\1\2\3")
    assert main(["--home", str(home.root), "verify", "--repair"]) == 0
    assert "marked for rebuilding" in capsys.readouterr().out
    result = run_stacks(home)
    assert metadata(result, "stacks")["stacked"].value == 1
    assert metadata(result, "stacks")["up_to_date"].value == 1
