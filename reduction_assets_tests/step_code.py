"""The code behind each step's products, hashed, so that a change without a version bump is caught.

``python -m reduction_assets_tests.step_code --update`` records the current hashes after a version
bump in ``reduction_assets/support/provenance.py`` (or after a change that does not alter any product: say
so in the commit message).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

from reduction_assets.support.provenance import STEPS

RECORD = Path(__file__).with_name("step_code.json")


def _normalised_source(module: str) -> str:
    """The module's syntax tree without docstrings: comments, formatting and docs do not count."""
    path = Path(importlib.util.find_spec(module).origin)
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False)


def code_hash(step: str) -> str:
    digest = hashlib.sha256()
    for module in sorted(STEPS[step].modules):
        digest.update(module.encode() + b"\0" + _normalised_source(module).encode() + b"\0")
    return digest.hexdigest()[:16]


def current() -> dict[str, dict]:
    return {step: {"version": STEPS[step].version, "code": code_hash(step)} for step in sorted(STEPS)}


if __name__ == "__main__":
    if "--update" in sys.argv:
        RECORD.write_text(json.dumps(current(), indent=2) + "\n")
    print(json.dumps(current(), indent=2))
