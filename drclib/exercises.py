"""Self-checks for the notebooks' exercises.

Every exercise in a notebook is four cells:

1. a markdown cell that asks the question and names the variable to fill (``ex1``, ...);
2. a code cell tagged ``exercise`` where the student writes the answer (stored as
   ``ex1 = None``: not attempted);
3. a code cell tagged ``check`` that calls :func:`check`, which says, in words, whether the
   answer is right, and what to look at if not;
4. a markdown cell tagged ``solution`` with the worked answer folded in ``<details>``, as one
   fenced ``python`` block that assigns the same variable.

The tests execute every notebook with each ``exercise`` cell replaced by its solution's code
(:func:`drclib.notebooks.with_solutions`), so every solution runs in its notebook's context and
every check must pass; each notebook's JSON records :func:`summary`.

A check never raises on a wrong answer (a student reads the message, not a traceback) and
returns nothing (a check cell shows only its message); it records the outcome, which the tests
read back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

_OUTCOMES: dict[str, str] = {}

CORRECT, WRONG, TODO = "correct", "wrong", "not attempted"


def _close(a, b, atol: float, rtol: float) -> bool:
    if isinstance(b, dict):
        return isinstance(a, dict) and set(a) == set(b) and all(_close(a[k], b[k], atol, rtol) for k in b)
    if isinstance(b, str):
        return isinstance(a, str) and a.strip().lower() == b.strip().lower()
    try:
        aa, bb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    except (TypeError, ValueError):
        return a == b
    if aa.shape != bb.shape:
        return False
    return bool(np.allclose(aa, bb, atol=atol, rtol=rtol, equal_nan=True))


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if (hasattr(value, "shape") and len(value.shape) > 0) or (isinstance(value, (list, tuple)) and len(value) > 8):
        shape = tuple(value.shape) if hasattr(value, "shape") else (len(value),)
        if int(np.prod(shape)) > 8:
            return f"an array of shape {shape}"
        return repr(value.tolist() if hasattr(value, "tolist") else list(value))
    return repr(value)


def check(name: str, answer: Any, expected: Any = None, *, test: Callable[[Any], bool] | None = None,
          atol: float = 1e-6, rtol: float = 1e-4, hint: str = "", explain: str = "") -> None:
    """Say whether an exercise's answer is right, in words, and record the outcome
    (:func:`summary`). Returns nothing, so a check cell shows only its message.

    - ``answer is None``: not attempted yet (the exercise cell still holds its placeholder).
    - ``test``: a function of the answer that returns True when it is right (for answers with
      more than one right form, e.g. "any index of a noisy history item").
    - otherwise the answer must equal ``expected``: numbers and arrays within ``atol`` /
      ``rtol``, strings case-insensitively, dicts key by key.

    ``hint`` is printed on a wrong answer; ``explain`` on a right one (what the number means).
    """
    if not isinstance(name, str) or not name:
        raise ValueError("check() needs the exercise's name first, e.g. check('00.1', ex1, 0)")
    if test is None and expected is None:
        raise ValueError(f"exercise {name}: give the expected answer or a test function")
    if answer is None:
        _OUTCOMES[name] = TODO
        print(f"Exercise {name}: not attempted yet. Write your answer in the cell above, run it, then run this cell.")
        return
    try:
        ok = bool(test(answer)) if test is not None else _close(answer, expected, atol, rtol)
    except Exception as err:   # a malformed answer is a wrong answer, said in words
        ok = False
        hint = f"the check could not read your answer ({type(err).__name__}: {err}). {hint}"
    _OUTCOMES[name] = CORRECT if ok else WRONG
    if ok:
        print(f"Exercise {name}: correct ({_show(answer)}). {explain}".rstrip())
    else:
        want = "" if test is not None else f", expected {_show(expected)}"
        print(f"Exercise {name}: not yet: got {_show(answer)}{want}. {hint}".rstrip())


def check_true(name: str, condition: Any, *, hint: str = "", explain: str = "") -> None:
    """:func:`check` for an answer that is a yes/no statement the student computed."""
    check(name, condition, test=lambda c: bool(c), hint=hint, explain=explain)


def summary() -> dict[str, str]:
    """Every exercise checked in this session (this kernel), by name: correct / wrong / not attempted."""
    return dict(_OUTCOMES)


def reset() -> None:
    """Forget recorded outcomes (the tests use this)."""
    _OUTCOMES.clear()

