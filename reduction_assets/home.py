"""REDUCTION_HOME: the one folder that holds all state of an installation.

    $REDUCTION_HOME/
      landing/        raw files arrive here (the telescope's transfer writes here; we only read)
      raw/            the raw store: checksummed copies under canonical names
      products/       masters, reduced frames, stacks
      quarantine/     copies of refused files
      catalog.sqlite  the catalog (unless $REDUCTION_CATALOG_URL names another database)
      dagster/        the Dagster instance (DAGSTER_HOME): runs, events, schedules, sensor cursors
      state/          small state files of the command-line tools

An empty folder is a fresh installation: :meth:`Home.ensure` creates what is missing.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

HOME_ENV = "REDUCTION_HOME"
CATALOG_ENV = "REDUCTION_CATALOG_URL"
DEFAULT_HOME = "~/reduction_home"


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def products(self) -> Path:
        return self.root / "products"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def dagster(self) -> Path:
        return self.root / "dagster"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def catalog_url(self) -> str:
        return os.environ.get(CATALOG_ENV) or f"sqlite:///{self.root / 'catalog.sqlite'}"

    def ensure(self) -> "Home":
        """Create the folders and the Dagster instance config if missing (idempotent)."""
        for folder in (self.landing, self.raw, self.products, self.quarantine, self.dagster, self.state):
            folder.mkdir(parents=True, exist_ok=True)
        instance_yaml = self.dagster / "dagster.yaml"
        if not instance_yaml.exists():
            shutil.copyfile(str(resources.files("reduction_assets") / "defaults" / "dagster.yaml"),
                            instance_yaml)
        return self


def resolve_home(path: str | os.PathLike | None = None) -> Home:
    """The home folder: ``path`` if given, else ``$REDUCTION_HOME``, else ``~/reduction_home``."""
    chosen = path or os.environ.get(HOME_ENV) or DEFAULT_HOME
    return Home(Path(chosen).expanduser().resolve())
