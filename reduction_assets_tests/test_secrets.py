"""Secrets stay out: masked in every URL and message, redacted from the catalog's copy of a header
and from every product, and nowhere in a home after a night that carried one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from astropy.io import fits
from sqlalchemy import select

from reduction_assets.catalog import Catalog, CatalogUnavailable, Product, RawFrame, safe_url
from reduction_assets.cli import main
from reduction_assets.support.secrets import masked_url, without_credentials
from reduction_assets_tests.conftest import deliver, frames_of
from reduction_assets_tests.s3 import free_port

PLANTED = "hunter2-planted-secret"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg2://obs:pw1@db:5432/cat", "postgresql+psycopg2://obs:***@db:5432/cat"),
        (
            "postgresql+psycopg2://obs@db/cat?password=pw2&sslmode=require",
            "postgresql+psycopg2://obs@db/cat?password=***&sslmode=require",
        ),
        ("amqp://guest:pw3@127.0.0.1:5672//", "amqp://guest:***@127.0.0.1:5672//"),
        ("https://hooks.example/x?token=pw4&channel=ops", "https://hooks.example/x?token=***&channel=ops"),
        ("https://s3.example/b?X-Amz-Signature=pw5", "https://s3.example/b?X-Amz-Signature=***"),
        ("sqlite:////var/reduction/catalog.sqlite", "sqlite:////var/reduction/catalog.sqlite"),
    ],
)
def test_a_url_is_shown_with_its_secrets_masked_and_the_rest_as_written(url, shown):
    assert masked_url(url) == shown == safe_url(url)


def test_messages_lose_passwords_of_urls_and_of_connection_strings():
    text = 'connect "host=db user=obs password=pw6 dbname=c" failed; also amqp://u:pw7@h// and x?api_key=pw8'
    cleaned = without_credentials(text)
    assert not any(f"pw{n}" in cleaned for n in (6, 7, 8))
    assert "host=db user=obs" in cleaned and "dbname=c" in cleaned


def test_a_password_in_the_catalog_urls_query_never_reaches_the_error(tmp_path):
    url = f"postgresql+psycopg2://obs@127.0.0.1:{free_port()}/catalog?password={PLANTED}"
    with pytest.raises(CatalogUnavailable) as caught:
        Catalog(url, connect_timeout=2).check()
    assert PLANTED not in str(caught.value) and "password=***" in str(caught.value)


@pytest.fixture(scope="module")
def night_with_a_secret(tmp_path_factory, lcosim_night):
    """The lcosim night, one science frame carrying a PASSWORD card and a HISTORY card with a token,
    through `process`."""
    from reduction_assets.support.home import Home

    sources = tmp_path_factory.mktemp("secret_sources")
    paths = []
    for path in lcosim_night.frames:
        target = sources / path.name
        with fits.open(path) as hdul:
            header, data = hdul[0].header.copy(), hdul[0].data
        if path == frames_of(lcosim_night, "science")[0]:
            header["PASSWORD"] = PLANTED
            header["HISTORY"] = f"uploaded with token={PLANTED}"
        fits.PrimaryHDU(data=data, header=header).writeto(target)
        paths.append(target)
    home = Home(tmp_path_factory.mktemp("secret") / "home").ensure()
    deliver(paths, home.landing)
    assert main(["--home", str(home.root), "process", "--settle-seconds", "0"]) == 0
    return home


def test_the_catalogs_header_copy_says_what_was_redacted_not_what_it_was(night_with_a_secret):
    with Catalog(night_with_a_secret.catalog_url()).session() as session:
        headers = [f.header for f in session.scalars(select(RawFrame))]
    (redacted,) = [h for h in headers if "REDACTED" in h]
    assert redacted["REDACTED"] == "PASSWORD HISTORY" and "PASSWORD" not in redacted
    assert PLANTED not in json.dumps(headers)


def test_the_reduced_product_carries_no_credential_but_says_which_cards_were_dropped(night_with_a_secret):
    home = night_with_a_secret
    with Catalog(home.catalog_url()).session() as session:
        paths = [p.path for p in session.scalars(select(Product).where(Product.status == "reduced"))]
    marked = []
    for path in paths:
        header = fits.getheader(home.products / path)
        assert "PASSWORD" not in header
        if "REDACTED" in header:
            marked.append(header["REDACTED"])
    assert marked == ["PASSWORD HISTORY"]


def test_nothing_in_the_home_but_the_verbatim_raw_copy_holds_the_secret(night_with_a_secret):
    home = night_with_a_secret
    verbatim = (home.landing, home.raw)  # the operator's file and its checksummed copy, as they came
    holding = [
        str(path.relative_to(home.root))
        for path in Path(home.root).rglob("*")
        if path.is_file()
        and not any(folder in path.parents for folder in verbatim)
        and PLANTED.encode() in path.read_bytes()
    ]
    assert holding == []
    # The catalog, the products, the archive, Dagster's event log and the step logs were all read.
    read = {p.relative_to(home.root).parts[0] for p in Path(home.root).rglob("*") if p.is_file()}
    assert {"catalog.sqlite", "products", "archive", "dagster"} <= read
