"""The library's shape: imports flow one way down the method (no import circle inside
``drclib``, counting imports inside functions too), and no module grows past 800 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import drclib

ROOT = Path(drclib.__file__).parent
MAX_LINES = 800
LAYERS = ["paths", "runtime", "config", "io", "checkpoint", "data", "backbone", "judges", "drc",
          "pipeline", "baselines", "evaluation", "train", "exercises", "notebooks", "viz", "widgets", "reproduce", "yardstick",
          "figures",
          "cli"]
"""The top-level parts, lowest first: a part may import from parts to its left only (and
``notebooks`` / ``viz`` sit beside the top, for the pictures and papermill; ``figures`` quotes
every part's results, ``make all``'s plan and the lab retrain's comparison among them, so it sits
above ``reproduce`` and ``yardstick``, which scores a retrain with the shipped judges)."""


def _module_name(path: Path) -> str:
    parts = ["drclib", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the ``drclib`` modules it imports anywhere in its body."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    found.add(target if target in modules else base)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        state[v] = 2
        stack.pop()
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_no_import_circle():
    cycle = _cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_parts_import_only_downward():
    rank = {part: i for i, part in enumerate(LAYERS)}
    part_of = lambda m: m.split(".")[1] if m.count(".") else None  # noqa: E731
    wrong = []
    for mod, targets in import_graph().items():
        src = part_of(mod)
        for t in targets:
            dst = part_of(t)
            if src in rank and dst in rank and rank[dst] > rank[src]:
                wrong.append(f"{mod} -> {t}")
    assert not wrong, "imports that go up the method: " + ", ".join(sorted(wrong))


def test_every_part_is_placed_and_no_module_is_too_long():
    top = {p.stem if p.suffix else p.name for p in ROOT.iterdir() if p.name != "__init__.py"
           and (p.suffix == ".py" or (p / "__init__.py").is_file())}
    assert top == set(LAYERS), f"place new parts in LAYERS: {sorted(top ^ set(LAYERS))}"
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_graph_sees_a_circle():
    """The checker itself: a planted circle is found."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert _cycle({"a": {"b"}, "b": set()}) is None
