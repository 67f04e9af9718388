import datetime as dt
import re

import pytest

from reduction_assets.instruments import QUALITY_DEFAULTS, RegistryError, Threshold, night_of, parse_registry

UTC = dt.UTC


def test_registry_ships_two_simulated_instruments_and_the_st7(registry):
    assert registry.names == ["lcosim", "noirsim", "st7"]


def test_simulated_instruments_use_different_header_conventions(registry):
    lco, noir = registry["lcosim"], registry["noirsim"]
    assert lco.keywords["frame_type"] == "OBSTYPE" and noir.keywords["frame_type"] == "IMAGETYP"
    assert "day_obs" in lco.keywords and "day_obs" not in noir.keywords
    assert lco.frame_type("EXPOSE") == "science" and noir.frame_type("object") == "science"
    assert lco.frame_type("SKYFLAT") == "flat" and noir.frame_type("zero") == "bias"
    assert noir.filter_name("V Harris c6026") == "V"


def test_st7_reads_maxim_dl_keywords(registry):
    st7 = registry["st7"]
    assert st7.frame_type("LIGHT") == "science" and st7.frame_type("dark") == "dark"
    assert st7.keywords["gain"] == "EGAIN" and st7.darks_include_bias
    assert st7.filter_name(None) == "none"


def test_geometry_places_overscan_on_the_instrument_side(registry):
    right = registry["lcosim"].geometry((128, 144), (1, 1))
    left = registry["noirsim"].geometry((96, 180), (1, 1))
    assert right.imaging[1] == slice(0, 128) and right.overscan[1] == slice(128, 144)
    assert left.imaging[1] == slice(20, 180) and left.overscan[1] == slice(0, 20)
    assert right.fits_section(right.overscan) == "[129:144,1:128]"


def test_geometry_rejects_shapes_the_camera_cannot_read_out(registry):
    assert registry["st7"].geometry((100, 100), (1, 1)) is None  # the ST-7 reads full frames only
    assert registry["lcosim"].geometry((64, 80), (2, 2)) is not None
    assert registry["lcosim"].geometry((128, 144), (3, 3)) is None  # no 3x3 binning
    assert registry["lcosim"].geometry((4097, 4112), (1, 1)) is None  # larger than the chip
    assert registry["lcosim"].geometry((100, 10), (1, 1)) is None  # narrower than the overscan


def test_a_camera_that_reads_windows_accepts_any_window_within_its_chip(registry):
    geometry = registry["lcosim"].geometry((100, 116), (1, 1))
    assert geometry.imaging == (slice(0, 100), slice(0, 100))
    assert geometry.overscan == (slice(0, 100), slice(100, 116))
    assert registry["lcosim"].geometry((2048, 1040), (2, 2)) is not None  # 4096x2048 window, 2x2


def test_malformed_registry_is_refused_with_the_reason():
    with pytest.raises(RegistryError, match="frame types"):
        parse_registry("""
instruments:
  cam:
    site: {longitude: 0}
    match: [cam]
    keywords: {frame_type: T, date_obs: D, exptime: E, binning: B}
    frame_types: {X: spectrum}
    gain: 1
    read_noise: 1
    saturation: 1
    readout_sizes: [[10, 10]]
""")


MINIMAL = """
instruments:
  cam:
    site: {longitude: 0}
    match: [cam]
    keywords: {frame_type: T, date_obs: D, exptime: E, binning: B}
    frame_types: {X: science}
    gain: 1
    read_noise: 1
    saturation: 1
    readout_sizes: [[10, 10]]
"""


@pytest.mark.parametrize(
    "line, message",
    [
        (
            "    darks_include_bais: true\n",
            "cams.yaml: instrument 'cam': unknown key darks_include_bais "
            "(did you mean 'darks_include_bias'?)",
        ),
        (
            "    windows: yes please\n",
            "cams.yaml: instrument 'cam': windows = 'yes please' must be true or false",
        ),
        ("    gain: fast\n", "cams.yaml: instrument 'cam': gain = 'fast' is not a number"),
    ],
)
def test_a_registry_typo_is_refused_naming_the_file_instrument_and_key(line, message):
    text = MINIMAL.replace("    gain: 1\n", "") + line if line.startswith("    gain") else MINIMAL + line
    with pytest.raises(RegistryError) as refused:
        parse_registry(text, source="cams.yaml")
    assert str(refused.value) == message


@pytest.mark.parametrize(
    "find, replace, message",
    [
        (
            "site: {longitude: 0}",
            "site: {longitude: 0, longtitude: 1}",
            "unknown key site.longtitude (did you mean 'longitude'?)",
        ),
        ("binning: B}", "binning: B, filtre: F}", "unknown key keywords.filtre (did you mean 'filter'?)"),
    ],
)
def test_typos_in_nested_mappings_are_refused(find, replace, message):
    with pytest.raises(RegistryError, match=re.escape(message)):
        parse_registry(MINIMAL.replace(find, replace), source="cams.yaml")


def test_the_calibration_key_is_one_rule_for_grouping_and_selection(registry):
    lco, st7 = registry["lcosim"], registry["st7"]

    def key(camera, kind, **frame):
        return camera.calibration_key(kind, binning="1x1", readout="128x144", **frame).label()

    assert key(lco, "flat", filter="rp", exptime=3.0) == "1x1 128x144 rp"
    assert key(lco, "dark", filter="rp", exptime=300.0) == "1x1 128x144"
    assert key(st7, "dark", filter="none", exptime=120.0) == "1x1 128x144 120s"
    assert st7.science_mode({"IMAGETYP": "LIGHT"}).optional == ("flat",)
    assert lco.science_mode({"OBSTYPE": "EXPOSE"}).required == ("bias", "dark", "flat")


# A night runs from one local noon to the next, so frames on both sides of UTC midnight share it.
@pytest.mark.parametrize(
    "utc, longitude, night",
    [
        # Kitt Peak (-111.6 deg, UTC-7.44 h, local noon 19:26 UTC): evening frames are on the next UTC date.
        (dt.datetime(2026, 11, 21, 2, 0, tzinfo=UTC), -111.6, dt.date(2026, 11, 20)),
        (dt.datetime(2026, 11, 21, 12, 0, tzinfo=UTC), -111.6, dt.date(2026, 11, 20)),
        (dt.datetime(2026, 11, 21, 19, 20, tzinfo=UTC), -111.6, dt.date(2026, 11, 20)),
        (dt.datetime(2026, 11, 21, 19, 30, tzinfo=UTC), -111.6, dt.date(2026, 11, 21)),
        # Siding Spring (+149.1 deg, UTC+9.94 h): local noon is 02:04 UTC.
        (dt.datetime(2026, 11, 20, 23, 30, tzinfo=UTC), 149.1, dt.date(2026, 11, 20)),
        (dt.datetime(2026, 11, 21, 2, 0, tzinfo=UTC), 149.1, dt.date(2026, 11, 20)),
        (dt.datetime(2026, 11, 21, 2, 10, tzinfo=UTC), 149.1, dt.date(2026, 11, 21)),
        (dt.datetime(2026, 11, 20, 10, 0, tzinfo=UTC), 149.1, dt.date(2026, 11, 20)),
        # Greenwich: noon UTC is the boundary.
        (dt.datetime(2026, 11, 21, 11, 59), 0.0, dt.date(2026, 11, 20)),
        (dt.datetime(2026, 11, 21, 12, 0), 0.0, dt.date(2026, 11, 21)),
    ],
)
def test_night_is_the_local_date_at_the_noon_before(utc, longitude, night):
    assert night_of(utc, longitude=longitude) == night


def test_night_uses_civil_time_when_a_timezone_is_given():
    # Toronto is UTC-4 in October (daylight saving): civil noon is 16:00 UTC, mean solar noon 17:18.
    at = dt.datetime(2019, 10, 29, 16, 30, tzinfo=UTC)
    assert night_of(at, timezone="America/Toronto") == dt.date(2019, 10, 29)
    assert night_of(at, longitude=-79.4) == dt.date(2019, 10, 28)


def test_quality_thresholds_default_and_are_overridden_key_by_key():
    registry = parse_registry(
        MINIMAL + "    quality: {fwhm: 1.8, read_noise: {severity: warn}, zero_points: {V: 24.5}}\n"
    )
    quality = registry["cam"].quality
    assert quality["fwhm"] == Threshold(1.8, "warn")  # a number sets the limit, keeps the severity
    assert quality["read_noise"] == Threshold(QUALITY_DEFAULTS["read_noise"].limit, "warn")
    assert quality["dark_current"] == QUALITY_DEFAULTS["dark_current"]
    assert quality.zero_points == {"V": 24.5}
    assert parse_registry(MINIMAL)["cam"].quality.thresholds == QUALITY_DEFAULTS


@pytest.mark.parametrize(
    "entry, message",
    [
        ("{seeing: 2}", "unknown key quality.seeing; known: bias_level_drift, dark_current"),
        ("{fwhm: {limit: 2, severity: fatal}}", "quality.fwhm.severity = 'fatal': expected warn or error"),
        ("{fwhm: wide}", "quality.fwhm = 'wide' is not a number"),
        ("{hot_pixels: -1}", "quality.hot_pixels limit -1.0 must not be negative"),
        ("{zero_points: {V: bright}}", "quality.zero_points.V = 'bright' is not a number"),
    ],
)
def test_a_malformed_quality_section_is_refused_naming_the_key(entry, message):
    with pytest.raises(RegistryError, match=re.escape(message)):
        parse_registry(MINIMAL + f"    quality: {entry}\n", source="cams.yaml")


def test_a_readout_shape_is_read_and_written_as_ny_x_nx():
    from reduction_assets.instruments import ReadoutShape

    assert ReadoutShape.parse("1024x1056") == ReadoutShape(1024, 1056)
    assert ReadoutShape(510, 765).label == "510x765"
    with pytest.raises(ValueError, match="not a readout shape"):
        ReadoutShape.parse("1024|1056")


def test_a_binning_is_read_and_written_as_x_by_y():
    from reduction_assets.fits.headers import Binning, parse_binning_label

    assert Binning.parse("2x1") == Binning(2, 1) and Binning(2, 1).label == "2x1"
    assert parse_binning_label("3x3") == (3, 3)
    with pytest.raises(ValueError, match="not a binning label"):
        Binning.parse("2 by 2")
