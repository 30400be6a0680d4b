"""Run the kit's notebooks with papermill, in order, writing executed copies elsewhere.

Each notebook has a cell tagged ``parameters`` (``PROFILE``, ``SEED``, ``DEVICE``,
``ARTIFACTS``, ...); papermill injects the values given here after it. Each notebook's last
cell writes its key numbers to ``ARTIFACTS/<notebook stem>.json``, which the tests read back.
The notebooks in ``notebooks/`` are stored without outputs; executed copies go to ``runs/``
(git-ignored).

Exercises (see :mod:`drclib.exercises`) are cells tagged ``exercise`` (the student's answer),
``check`` (the self-check) and ``solution`` (the worked answer, folded, as one fenced python
block). :func:`with_solutions` writes a copy with every answer cell replaced by its solution's
code; the tests run that copy, so every solution executes and every check must pass.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path

from drclib.data.stickers import repo_root

KERNEL_NAME = "python3"
"""The kernel every notebook runs on: ipykernel's own spec, i.e. the Python running papermill."""


def notebook_dir() -> Path:
    return repo_root() / "notebooks"


def find_notebooks(folder: str | Path | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``), in order."""
    folder = Path(folder) if folder is not None else notebook_dir()
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb") if p.is_file())


def artifact_json(notebook: str | Path, artifacts: str | Path) -> Path:
    """Where a notebook writes its key numbers."""
    return Path(artifacts) / f"{Path(notebook).stem}.json"


_FENCE = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def exercises(notebook: str | Path | dict) -> list[dict]:
    """The notebook's exercises, in order: ``{"index", "answer", "check", "solution"}`` with the
    cell indices of the three cells and the solution's python code. Raises ``ValueError`` when an
    exercise cell lacks its check or its solution, or a solution has no single python block."""
    nb = notebook if isinstance(notebook, dict) else json.loads(Path(notebook).read_text(encoding="utf-8"))
    cells = nb["cells"]
    found, current = [], None
    for i, cell in enumerate(cells):
        tags = _tags(cell)
        if "exercise" in tags:
            if current is not None:
                raise ValueError(f"cell {current['answer']}: an exercise without its check and solution before cell {i}")
            current = {"index": len(found) + 1, "answer": i, "check": None, "solution": None}
        elif "check" in tags:
            if current is None or current["check"] is not None:
                raise ValueError(f"cell {i}: a check cell that follows no exercise cell")
            current["check"] = i
        elif "solution" in tags:
            if current is None or current["check"] is None:
                raise ValueError(f"cell {i}: a solution that follows no exercise and check cell")
            blocks = _FENCE.findall("".join(cell["source"]))
            if len(blocks) != 1:
                raise ValueError(f"cell {i}: a solution needs exactly one ```python block, found {len(blocks)}")
            current["solution"], current["solution_cell"] = blocks[0], i
            found.append(current)
            current = None
    if current is not None:
        raise ValueError(f"cell {current['answer']}: an exercise without its check and solution")
    return found


def with_solutions(notebook: str | Path, out: str | Path | None = None) -> Path:
    """A copy of the notebook with every ``exercise`` cell's code replaced by its solution's;
    returns its path (a temporary file unless ``out`` is given)."""
    notebook = Path(notebook)
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    for ex in exercises(nb):
        nb["cells"][ex["answer"]]["source"] = ex["solution"].splitlines(keepends=True)
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="drc-solved-")) / notebook.name
    Path(out).write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")
    return Path(out)


def run_notebook(notebook: str | Path, out_dir: str | Path, *, profile: str = "quick", seed: int = 0,
                 device: str = "auto", timeout: int | None = 1800, parameters: dict | None = None,
                 progress: bool = False, solutions: bool = False) -> Path:
    """Execute one notebook with papermill; returns the path of the executed copy.

    The executed copy and the notebook's JSON both go to ``out_dir``. ``timeout`` bounds each
    cell, in seconds. ``solutions``: run the copy with every exercise answered by its solution
    (:func:`with_solutions`). Raises papermill's ``PapermillExecutionError`` if a cell fails
    (the executed copy up to the failure is still written, for reading).
    """
    import papermill as pm

    notebook = Path(notebook).resolve()
    if not notebook.is_file():
        raise FileNotFoundError(f"no notebook at {notebook}")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    params = dict(PROFILE=profile, SEED=seed, DEVICE=device, ARTIFACTS=str(out_dir))
    params.update(parameters or {})
    out = out_dir / notebook.name
    source = with_solutions(notebook) if solutions else notebook
    try:
        pm.execute_notebook(str(source), str(out), parameters=params, kernel_name=KERNEL_NAME,
                            cwd=str(notebook.parent), execution_timeout=timeout,
                            progress_bar=progress, log_output=False, report_mode=False)
    finally:
        if solutions:
            source.unlink(missing_ok=True)
            source.parent.rmdir()
    return out


LONGEST_FIRST = ("04", "05", "01", "02", "06", "07", "03", "00")
"""The order the notebooks start in when they run in lanes: longest first, so the short ones
fill the gaps. Measured by ``python benchmarks/notebook_lanes.py`` (full profile, shipped
weights, the evaluation already done as in make all, one at a time on two threads, 2-core Xeon):
04 214 s, 05 157, 01 101, 02 90, 06 27, 07 15, 03 11, 00 9 (``data/results/notebook_lanes.json``)."""


def run_all(out_dir: str | Path, *, profile: str = "quick", seed: int = 0, device: str = "auto",
            only: list[str] | None = None, timeout: int | None = 1800, lanes: int = 1,
            books: list[Path] | None = None) -> dict[str, float]:
    """Run every notebook (or those whose name starts with one of ``only``), printing progress
    and wall times; returns {notebook name: seconds}. ``lanes=1`` runs them in order in this
    process; ``lanes=N`` runs N at a time, each in its own process with one torch thread
    (:data:`LONGEST_FIRST` order; the notebooks read only checkpoints and write only their own
    files, so their order does not matter), its output in ``out_dir/logs/notebook_<stem>.log``.
    ``books``: the notebooks to run instead of the kit's (:func:`find_notebooks`)."""
    books = [Path(b) for b in books] if books is not None else find_notebooks()
    if only:
        books = [b for b in books if any(b.name.startswith(o) for o in only)]
        if not books:
            raise ValueError(f"no notebook in {notebook_dir()} starts with any of {only}")
    if lanes < 1:
        raise ValueError(f"lanes must be >= 1, got {lanes}")
    times: dict[str, float] = {}
    start = time.perf_counter()
    if lanes > 1 and len(books) > 1:
        times = _run_in_lanes(books, Path(out_dir), lanes, profile=profile, seed=seed, device=device, timeout=timeout)
    else:
        for i, nb in enumerate(books, 1):
            print(f"[{i}/{len(books)}] {nb.name} (profile {profile}) ...", flush=True)
            t0 = time.perf_counter()
            run_notebook(nb, out_dir, profile=profile, seed=seed, device=device, timeout=timeout)
            times[nb.name] = time.perf_counter() - t0
            print(f"      done in {times[nb.name]:.1f} s -> {Path(out_dir) / nb.name}", flush=True)
    total = time.perf_counter() - start
    print(f"all {len(books)} notebooks ran in {total:.1f} s" + (f" ({lanes} at a time)" if lanes > 1 else "")
          + f"; executed copies and JSON in {out_dir}")
    return times


def _run_in_lanes(books: list[Path], out_dir: Path, lanes: int, *, profile: str, seed: int, device: str,
                  timeout: int | None) -> dict[str, float]:
    """:func:`run_all`'s lanes: ``python -m drclib.notebooks <notebook> <out_dir>`` in up to
    ``lanes`` processes at once, each with one torch thread. A failed notebook is reported with
    its log once the running ones end; the others still run."""
    import os
    import subprocess
    import sys

    def rank(nb: Path) -> int:
        head = nb.name[:2]
        return LONGEST_FIRST.index(head) if head in LONGEST_FIRST else len(LONGEST_FIRST)

    queue = sorted(books, key=rank)
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    running: dict[Path, tuple] = {}
    times: dict[str, float] = {}
    failed: list[str] = []
    while queue or running:
        while queue and len(running) < lanes:
            nb = queue.pop(0)
            log = logs / f"notebook_{nb.stem}.log"
            args = [sys.executable, "-m", "drclib.notebooks", str(nb), str(out_dir), "--profile", profile,
                    "--seed", str(seed), "--device", device]
            if timeout is not None:
                args += ["--timeout", str(timeout)]
            handle = open(log, "w")
            running[nb] = (subprocess.Popen(args, env=env, stdout=handle, stderr=subprocess.STDOUT),
                           time.perf_counter(), handle, log)
            print(f"[{len(times) + len(running)}/{len(books)}] {nb.name} (profile {profile}, one thread) started; "
                  f"log {log}", flush=True)
        time.sleep(0.5)
        for nb, (proc, t0, handle, log) in list(running.items()):
            if proc.poll() is None:
                continue
            handle.close()
            del running[nb]
            times[nb.name] = time.perf_counter() - t0
            if proc.returncode:
                failed.append(f"{nb.name} (exit {proc.returncode}; see {log} and the executed copy {out_dir / nb.name})")
                print(f"      FAILED {nb.name} after {times[nb.name]:.1f} s: see {log}", flush=True)
            else:
                print(f"      done in {times[nb.name]:.1f} s -> {out_dir / nb.name}", flush=True)
    if failed:
        raise RuntimeError("notebooks failed: " + "; ".join(failed))
    return times


def main(argv: list[str] | None = None) -> int:
    """``python -m drclib.notebooks NOTEBOOK OUT_DIR [--profile P] [--seed S] [--device D]
    [--timeout T]``: run one notebook (what each lane of :func:`run_all` runs)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m drclib.notebooks", description="Run one notebook with papermill.")
    p.add_argument("notebook")
    p.add_argument("out_dir")
    p.add_argument("--profile", choices=["quick", "full"], default="quick")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    out = run_notebook(args.notebook, args.out_dir, profile=args.profile, seed=args.seed, device=args.device,
                       timeout=args.timeout)
    print(f"{Path(args.notebook).name} ran in {time.perf_counter() - t0:.1f} s -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
