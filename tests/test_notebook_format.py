"""Every notebook is ready for Colab and for students: a Colab badge pointing at itself, a
guarded set-up cell that installs the kit only on Colab and never reinstalls torch, one cell
tagged ``parameters`` of plain assignments (PROFILE, SEED, DEVICE, ARTIFACTS), a final cell
that writes the notebook's JSON, no stored outputs, no widget state, the python3 kernel."""

import ast
import json

import pytest

from drclib.notebooks import find_notebooks

NOTEBOOKS = find_notebooks()


def load(nb):
    return json.loads(nb.read_text(encoding="utf-8"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_is_colab_ready_and_clean(notebook):
    nb = load(notebook)
    cells = nb["cells"]
    first = "".join(cells[0]["source"])
    assert "colab.research.google.com/assets/colab-badge.svg" in first
    assert f"notebooks/{notebook.name}" in first, "the badge must open this notebook"
    setup = "".join(cells[1]["source"])
    assert 'if "google.colab" in sys.modules:' in setup
    install_lines = [ln for ln in setup.splitlines() if "pip install" in ln]
    assert install_lines and not any("torch" in ln for ln in install_lines), "never reinstall torch on Colab"
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    tree = ast.parse("".join(tagged[0]["source"]))
    assert all(isinstance(node, ast.Assign) for node in tree.body), "the parameters cell holds plain assignments"
    names = {t.id for node in tree.body for t in node.targets}
    assert {"PROFILE", "SEED", "DEVICE", "ARTIFACTS"} <= names
    assert "write_json" in "".join(cells[-1]["source"]) and notebook.stem in "".join(cells[-1]["source"])
    for c in cells:
        if c["cell_type"] == "code":
            assert c.get("outputs", []) == [] and c.get("execution_count") is None, "store notebooks without outputs"
    assert "widgets" not in nb.get("metadata", {}), "no stored widget state"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert any("<details>" in "".join(c["source"]) for c in cells if c["cell_type"] == "markdown"), "exercises"


def test_notebooks_are_numbered_without_gaps():
    numbers = [int(nb.name[:2]) for nb in NOTEBOOKS]
    assert numbers == list(range(len(numbers)))
