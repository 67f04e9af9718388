"""The operator CLI, ``reduction-assets``: one module per command group, the parser in ``main``."""

from reduction_assets.cli.main import main

__all__ = ["main"]
