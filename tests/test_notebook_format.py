"""Every notebook is ready for Colab and for students: a Colab badge pointing at itself, a
guarded set-up cell that installs the kit only on Colab and never reinstalls torch, one cell
tagged ``parameters`` of plain assignments (PROFILE, SEED, DEVICE, ARTIFACTS), a final cell
that writes the notebook's JSON, no stored outputs, no widget state, the python3 kernel; it opens
with objectives and ends with a summary, every figure has its sentence, and every exercise has
an answer cell, a self-check and a folded, executable solution (``drclib.exercises``)."""

import ast
import json

import pytest

from drclib.notebooks import exercises, find_notebooks

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
    assert "write_json" in "".join(cells[-1]["source"]) and '"exercises": summary()' in "".join(cells[-1]["source"])


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_reads_as_a_lecture(notebook):
    cells = load(notebook)["cells"]
    text = lambda c: "".join(c["source"])
    assert "You will learn" in text(cells[0]), "open with the notebook's objectives"
    assert any("## What you saw" in text(c) for c in cells if c["cell_type"] == "markdown"), "end with a summary"
    for i, c in enumerate(cells):
        if c["cell_type"] == "code" and "plt.show()" in text(c):
            assert "caption(" in text(c), f"cell {i} shows a figure without a sentence on what it shows (viz.caption)"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_every_exercise_has_a_check_and_a_runnable_solution(notebook):
    nb = load(notebook)
    found = exercises(nb)
    assert len(found) >= 2, "every notebook has exercises"
    stem = notebook.stem[:2]
    for ex in found:
        answer = "".join(nb["cells"][ex["answer"]]["source"])
        check = "".join(nb["cells"][ex["check"]]["source"])
        name = f"ex{ex['index']}"
        assert f"{name} = None" in answer, f"the answer cell of exercise {ex['index']} starts as `{name} = None`"
        assert f'"{stem}.{ex["index"]}"' in check and name in check, f"the check of exercise {ex['index']}"
        assert name in ex["solution"], f"the solution of exercise {ex['index']} assigns {name}"
        compile(ex["solution"], f"{notebook.name} solution {ex['index']}", "exec")   # it is Python, not a shell line
        solution_md = "".join(nb["cells"][ex["solution_cell"]]["source"])
        assert "<details>" in solution_md, "solutions are folded"


def test_exercise_parser_rejects_broken_exercises():
    md = lambda src, tags: {"cell_type": "markdown", "source": src, "metadata": {"tags": tags}}
    code = lambda src, tags: {"cell_type": "code", "source": src, "metadata": {"tags": tags}}
    good = [code("ex1 = None", ["exercise"]), code('check("00.1", ex1, 1)', ["check"]),
            md("<details>\n```python\nex1 = 1\n```\n</details>", ["solution"])]
    assert exercises({"cells": good})[0]["solution"] == "ex1 = 1\n"
    with pytest.raises(ValueError, match="without its check"):
        exercises({"cells": good[:1]})
    with pytest.raises(ValueError, match="exactly one"):
        exercises({"cells": good[:2] + [md("no code", ["solution"])]})
    with pytest.raises(ValueError, match="follows no exercise"):
        exercises({"cells": good[1:]})


def test_notebooks_are_numbered_without_gaps():
    numbers = [int(nb.name[:2]) for nb in NOTEBOOKS]
    assert numbers == list(range(len(numbers)))
