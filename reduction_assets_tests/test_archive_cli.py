"""`reduction-assets archive`: ingest files from outside the graph, find records, get files back."""

import hashlib
import json

import pytest
from astropy.io import fits

from reduction_assets_tests.conftest import frames_of
from reduction_assets_tests.test_cli import cli


def ingest(capsys, home, *files, check_only=False):
    extra = ["--check-only"] if check_only else []
    code, out = cli(capsys, "--home", str(home.root), "archive", "ingest", *map(str, files), *extra, "--json")
    return code, json.loads(out.split("\n[stderr]")[0])


def test_a_raw_frame_is_archived_once_and_check_only_tells_which(home, capsys, lcosim_night):
    frame = frames_of(lcosim_night, "science")[0]
    code, report = ingest(capsys, home, frame, check_only=True)
    assert code == 0 and report["files"][0]["status"] == "would_archive"
    code, report = ingest(capsys, home, frame)
    assert code == 0 and report["files"][0]["status"] == "archived" and report["files"][0]["version"] == 1
    code, report = ingest(capsys, home, frame, check_only=True)
    assert code == 3 and report["files"][0]["status"] == "already_archived"
    code, report = ingest(capsys, home, frame)
    assert code == 3 and report["files"][0]["version"] == 1


def test_changed_content_under_the_same_name_is_version_2(home, capsys, lcosim_night, tmp_path):
    frame = frames_of(lcosim_night, "science")[0]
    copy = tmp_path / frame.name
    copy.write_bytes(frame.read_bytes())
    ingest(capsys, home, copy)
    with fits.open(copy, mode="update") as hdul:
        hdul[0].header["COMMENT"] = "re-written by the camera software"
    code, report = ingest(capsys, home, copy, check_only=True)
    assert (
        code == 0 and report["files"][0]["status"] == "would_archive" and report["files"][0]["version"] == 2
    )
    code, report = ingest(capsys, home, copy)
    assert report["files"][0]["version"] == 2
    code, out = cli(capsys, "--home", str(home.root), "archive", "find", "--instrument", "lcosim", "--json")
    found = json.loads(out)
    assert [r["version"] for r in found if r["name"] == copy.name] == [1, 2]


def test_invalid_files_are_reported_with_exit_4_and_the_rest_archived(home, capsys, lcosim_night, tmp_path):
    good = frames_of(lcosim_night, "bias")[0]
    secret = tmp_path / "with_secret.fits"
    with fits.open(good) as hdul:
        hdul[0].header["PASSWORD"] = "hunter2"
        hdul.writeto(secret)
    text = tmp_path / "notes.fits"
    text.write_text("not a FITS file")
    code, report = ingest(capsys, home, good, secret, text, tmp_path / "missing.fits")
    statuses = {row["file"].rsplit("/", 1)[-1]: row for row in report["files"]}
    assert code == 4
    assert statuses[good.name]["status"] == "archived"
    assert "PASSWORD is on the deny-list" in statuses["with_secret.fits"]["reason"]
    assert "hunter2" not in json.dumps(report)
    assert (
        statuses["notes.fits"]["status"] == "invalid" and statuses["missing.fits"]["reason"] == "no such file"
    )


def test_find_and_get_return_a_file_with_a_verified_md5(home, capsys, lcosim_night, tmp_path):
    frames = frames_of(lcosim_night, "flat")[:3]
    ingest(capsys, home, *frames)
    code, out = cli(capsys, "--home", str(home.root), "archive", "find", "--level", "raw", "--json")
    found = json.loads(out)
    assert code == 0 and len(found) == 3 and {r["night"] for r in found} == {"2026-11-20"}
    wanted = found[0]
    code, out = cli(
        capsys, "--home", str(home.root), "archive", "get", str(wanted["id"]), "--out", str(tmp_path / "got")
    )
    got = tmp_path / "got" / wanted["name"]
    assert code == 0 and "verified" in out
    assert hashlib.md5(got.read_bytes(), usedforsecurity=False).hexdigest() == wanted["md5"]
    code, out = cli(capsys, "--home", str(home.root), "archive", "find", "--md5", wanted["md5"])
    assert wanted["name"] in out


def test_get_refuses_a_damaged_archive_object(home, capsys, lcosim_night, tmp_path):
    frame = frames_of(lcosim_night, "dark")[0]
    code, report = ingest(capsys, home, frame)
    stored = home.archive / report["files"][0]["object_key"]
    stored.chmod(0o644)
    stored.write_bytes(b"damaged" + stored.read_bytes()[7:])
    code, out = cli(capsys, "--home", str(home.root), "archive", "get", str(report["files"][0]["record_id"]),
                    "--out", str(tmp_path / "got"))  # fmt: skip
    assert code == 1 and "not written" in out and not (tmp_path / "got" / frame.name).exists()


@pytest.mark.parametrize("argv", [["archive"], ["archive", "ingest"], ["archive", "get", "x", "--out", "d"]])
def test_bad_arguments_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as raised:
        cli(capsys, *argv)
    assert raised.value.code == 2


LCO_CARDS = {"PROPID": "LCO2026B-001", "SITEID": "coj", "TELID": "1m0a", "BLKUID": 12345}


def test_records_agree_with_lco_ingester_where_the_two_overlap(
    home, capsys, lcosim_night, tmp_path, monkeypatch
):
    import datetime as dt
    import io

    monkeypatch.setenv("OPENTSDB_PYTHON_METRICS_TEST_MODE", "1")
    ingester = pytest.importorskip("ocs_ingester.ingester")
    frame = tmp_path / frames_of(lcosim_night, "science")[0].name
    with fits.open(frames_of(lcosim_night, "science")[0]) as hdul:
        hdul[0].header.update(LCO_CARDS)  # an LCO-like frame: the keywords LCO's ingester requires
        hdul.writeto(frame)
    theirs = ingester.validate_fits_and_create_archive_record(io.BytesIO(frame.read_bytes()), path=frame.name)
    code, _ = ingest(capsys, home, frame)
    assert code == 0
    code, out = cli(capsys, "--home", str(home.root), "archive", "find", "--md5",
                    hashlib.md5(frame.read_bytes(), usedforsecurity=False).hexdigest(), "--json")  # fmt: skip
    ours = json.loads(out)[0]
    from reduction_assets.catalog import Catalog
    from reduction_assets.catalog.models import ArchiveRecord

    with Catalog(home.catalog_url()).session() as session:
        row = session.get(ArchiveRecord, ours["id"])
        assert row.site == theirs["site_id"] and row.telescope == theirs["telescope_id"]
        assert row.proposal == theirs["proposal_id"]
        assert row.configuration_type == theirs["configuration_type"]
    assert ours["instrument"] == theirs["instrument_id"]
    assert ours["night"].replace("-", "") == theirs["observation_day"]
    assert dt.datetime.fromisoformat(ours["date_obs"]) == dt.datetime.fromisoformat(
        theirs["observation_date"]
    )
    assert ours["exptime"] == theirs["exposure_time"] and ours["filter"] == theirs["primary_optical_element"]
    assert (
        ours["target"] == theirs["target_name"] and ours["level"] == "raw" and theirs["reduction_level"] == 0
    )
    assert (
        ours["public_date"] == theirs["public_date"][:10]
        and ours["related"] == theirs["related_frame_filenames"]
    )
