"""The Dagster UI in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`,
driven by selenium) loads the webserver of a home where a night was processed, shows the asset
graph and the night's partition status; the night's HTML report renders with its plots.
Screenshots are kept under $REDUCTION_TEST_ARTIFACTS (default: test-artifacts/ in the checkout)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from reduction_assets.cli import main
from reduction_assets_tests.conftest import NIGHT, deliver, require
from reduction_assets_tests.deployment import ROOT, LocalDeployment

pytestmark = [pytest.mark.slow(seconds=40), pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Without the background-networking switches Chromium keeps calling Google's hosts, which a closed
# network refuses; as root it needs --no-sandbox.
SWITCHES = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1600,1000",
)


def artifacts() -> Path:
    folder = Path(os.environ.get("REDUCTION_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    available = all(shutil.which(p) or Path(p).exists() for p in (CHROMIUM, CHROMEDRIVER))
    require(available, "Debian's chromium and chromium-driver are not installed (make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for switch in (*SWITCHES, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(switch)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def webserver(tmp_path_factory, lcosim_night):
    from reduction_assets.support.home import Home

    home = Home(tmp_path_factory.mktemp("ui") / "home").ensure()
    deliver(lcosim_night.frames, home.landing)
    assert main(["--home", str(home.root), "process", "--settle-seconds", "0"]) == 0
    with LocalDeployment(home) as deployment:
        yield deployment


def page_text(browser, *wanted: str, timeout: float = 90) -> str:
    """The page's visible text once it shows every line of ``wanted`` (the UI renders after loading
    its data)."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        for button in browser.find_elements(By.XPATH, "//button[normalize-space()='Skip']"):
            button.click()  # the community dialog of a new browser profile
        text = browser.find_element(By.TAG_NAME, "body").text
        if set(wanted) <= set(text.split("\n")):
            return text
        time.sleep(0.5)
    raise AssertionError(f"{wanted!r} not shown in {timeout:.0f} s; the page said:\n{text[:2000]}")


def screenshot(browser, name: str) -> Path:
    from PIL import Image

    path = artifacts() / name
    browser.save_screenshot(str(path))
    with Image.open(path) as image:
        colours = image.convert("L").getextrema()
    assert image.size[0] >= 1200 and colours[1] - colours[0] > 100, "a blank screenshot"
    return path


def test_the_asset_graph_shows_every_group_of_the_pipeline(browser, webserver):
    browser.get(f"{webserver.url}/asset-groups")
    page_text(
        browser, "Global asset lineage", "raw", "calibrations", "science", "stacks", "archive", "quality"
    )
    assert screenshot(browser, "ui_asset_graph.png").stat().st_size > 10_000


def test_the_processed_night_shows_as_a_materialized_partition(browser, webserver):
    browser.get(f"{webserver.url}/assets/reduced_frames?view=partitions")
    page_text(browser, "Materialized (1)", "Failed (0)", "lcosim", NIGHT.isoformat())
    assert screenshot(browser, "ui_reduced_frames_partitions.png").stat().st_size > 10_000


def test_the_nightly_report_renders_in_chromium(browser, webserver, tmp_path):
    out = tmp_path / "report.html"
    assert main(["--home", str(webserver.home.root), "report", NIGHT.isoformat(), "--out", str(out)]) == 0
    browser.get(out.as_uri())
    night = NIGHT.isoformat()
    page_text(
        browser, f"Night {night}", "lcosim", "Quality checks", "Masters", f"Trends (the 30 nights to {night})"
    )
    from selenium.webdriver.common.by import By

    images = browser.find_elements(By.TAG_NAME, "img")
    assert len(images) >= 3 and all(image.get_property("naturalWidth") > 100 for image in images)
    assert screenshot(browser, "nightly_report.png").stat().st_size > 10_000
