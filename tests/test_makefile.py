"""README's two commands live in the Makefile: `make all` must regenerate the kit and
`make test` must run the whole suite (an edit once redefined `test` as the browser test alone)."""

from __future__ import annotations

import re

from tests.conftest import REPO


def _recipes() -> dict[str, list[str]]:
    targets: dict[str, list[str]] = {}
    current = None
    for line in (REPO / "Makefile").read_text().splitlines():
        m = re.match(r"^([A-Za-z$][\w.$()/-]*)\s*:(?!=)", line)
        if m and not line.startswith("\t"):
            current = m.group(1)
            assert current not in targets, f"Makefile defines target {current!r} twice"
            targets[current] = []
        elif line.startswith("\t") and current:
            targets[current].append(line.strip())
    return targets


def test_each_target_once_and_the_two_commands():
    t = _recipes()
    assert t["test"] == ["$(PY) -m pytest"]
    assert t["all"] == ["$(PY) -m drclib.reproduce --profile $(PROFILE) $(if $(FROM_SCRATCH),--from-scratch) --recipe $(RECIPE) $(if $(PRETRAINED),--pretrained \"$(PRETRAINED)\")"]
    assert any("tests/test_browser.py" in line for line in t["browser-test"])
    readme = (REPO / "README.md").read_text()
    assert "make all" in readme and "make test" in readme
