"""Fingerprints and step versions: one function, and a version that moves with each step's code."""

import json

from reduction_assets.support.provenance import STEPS, fingerprint
from reduction_assets_tests.step_code import RECORD, current


def test_a_change_to_a_steps_code_comes_with_a_new_version():
    recorded = json.loads(RECORD.read_text())
    for step, now in current().items():
        before = recorded.get(step)
        assert before is not None, (
            f"step {step} is new: run python -m reduction_assets_tests.step_code --update"
        )
        if now["code"] != before["code"]:
            assert now["version"] != before["version"], (
                f"the code of step {step!r} changed but its version is still {now['version']}: bump "
                f"STEPS[{step!r}] in reduction_assets/support/provenance.py (its products are then redone), "
                "then run python -m reduction_assets_tests.step_code --update"
            )
            raise AssertionError(
                f"step {step!r} is at version {now['version']}: record its code with "
                "python -m reduction_assets_tests.step_code --update"
            )
        assert now["version"] == before["version"], f"update {RECORD.name} for step {step!r}"


def test_a_new_step_version_changes_every_fingerprint_of_that_step(monkeypatch):
    from reduction_assets.support.provenance import Step

    before = fingerprint("reduced", raw="abc")
    monkeypatch.setitem(STEPS, "reduced", Step(STEPS["reduced"].version + 1, STEPS["reduced"].modules))
    assert fingerprint("reduced", raw="abc") != before
    assert fingerprint("master", raw="abc") == fingerprint("master", raw="abc")


def test_fingerprints_do_not_depend_on_the_order_of_their_parts():
    assert fingerprint("master", a=1, b=[2, 3]) == fingerprint("master", b=[2, 3], a=1)
