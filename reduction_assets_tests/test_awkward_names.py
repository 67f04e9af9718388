"""Header values and file names are data: an OBJECT, a FILTER and file names holding ``|``, ``,``,
quotes, ``/``, spaces, non-ASCII characters or 68 characters go through the whole night (ingest,
masters, reduced frames, stacks, archive) and the operator's views (progress, report, archive find)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from astropy.io import fits
from sqlalchemy import select

from reduction_assets.catalog import Catalog, Stack
from reduction_assets.cli import main
from reduction_assets.support.home import Home
from reduction_assets_tests.conftest import NIGHT, deliver

pytestmark = pytest.mark.slow(120)

# 68 characters: the longest value a FITS card holds on one line.
OBJECT = "M31 | core, \"north\" / field 7 'b' | " + "x" * 32
FILTER = 'r\' | "wide", 2/3'
NAME_PREFIX = "raw |, \"q\" 's' été "


@pytest.fixture(scope="module")
def awkward_night(tmp_path_factory, lcosim_night):
    """The lcosim night with its first target and first filter renamed awkwardly, in landing/ under
    awkward file names, through `process`; the home and the command's JSON."""
    assert len(OBJECT) == 68
    sources = tmp_path_factory.mktemp("awkward_sources")
    first_target = first_filter = None
    paths = []
    for path in lcosim_night.frames:
        with fits.open(path) as hdul:
            header, data = hdul[0].header.copy(), hdul[0].data
        if header.get("OBJECT") and header["OBJECT"].strip() and first_target is None:
            first_target = header["OBJECT"]
        if header.get("FILTER") and first_filter is None:
            first_filter = header["FILTER"]
        if first_target is not None and header.get("OBJECT") == first_target:
            header["OBJECT"] = OBJECT
        if first_filter is not None and header.get("FILTER") == first_filter:
            header["FILTER"] = FILTER
        target = sources / path.name
        fits.PrimaryHDU(data=data, header=header).writeto(target)
        paths.append(target)
    home = Home(tmp_path_factory.mktemp("awkward") / "home").ensure()
    deliver(paths, home.landing, names=[NAME_PREFIX + p.name for p in paths])
    code = main(["--home", str(home.root), "process", "--settle-seconds", "0", "--json"])
    return home, code


def test_process_takes_the_whole_night(awkward_night, capsys):
    home, code = awkward_night
    assert code == 0
    assert main(["--home", str(home.root), "progress", NIGHT.isoformat(), "--json"]) == 0
    (row,) = [r for r in json.loads(capsys.readouterr().out) if r["instrument"] == "lcosim"]
    assert row["raw"] == 32 and row["quarantined"] == 0
    assert row["reduced"] == 12 and row["not_reducible"] == 0
    assert row["stacked"] >= 1


def test_the_awkward_group_is_stacked_with_its_own_fields(awkward_night):
    home, _ = awkward_night
    with Catalog(home.catalog_url()).session() as session:
        stacks = session.scalars(select(Stack).where(Stack.target == OBJECT)).all()
        session.expunge_all()
    assert stacks, "no stack of the awkward target"
    assert {s.status for s in stacks} == {"stacked"}
    assert FILTER in {s.filter for s in stacks}
    for stack in stacks:
        with fits.open(home.products / stack.path) as hdul:
            assert hdul[0].header["OBJECT"] == OBJECT


def test_archive_find_returns_the_awkward_target(awkward_night, capsys):
    home, _ = awkward_night
    capsys.readouterr()
    assert main(["--home", str(home.root), "archive", "find", "--target", OBJECT, "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert records and {r["target"] for r in records} == {OBJECT}


def test_the_report_shows_the_night(awkward_night, tmp_path):
    home, _ = awkward_night
    out = tmp_path / "report.html"
    assert main(["--home", str(home.root), "report", NIGHT.isoformat(), "--out", str(out)]) == 0
    html = Path(out).read_text()
    assert "lcosim" in html and NIGHT.isoformat() in html
