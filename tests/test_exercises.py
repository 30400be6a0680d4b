"""drclib.exercises: the notebooks' self-checks say right, wrong or not attempted in words,
never raise on a wrong answer, and record every outcome for the notebook's JSON."""

import numpy as np
import pytest

from drclib import exercises as ex
from drclib.judges import diff_se, format_rate, rate_se
from drclib.viz import caption, pct


@pytest.fixture(autouse=True)
def fresh():
    ex.reset()
    yield
    ex.reset()


def test_not_attempted_is_said_and_recorded(capsys):
    assert ex.check("00.1", None, 3) is None
    assert "not attempted" in capsys.readouterr().out
    assert ex.summary() == {"00.1": ex.TODO}


def test_right_and_wrong_answers(capsys):
    ex.check("00.1", 3, 3, explain="three it is")
    assert "correct" in capsys.readouterr().out
    ex.check("00.2", 2.5, 3.0, hint="count again")
    out = capsys.readouterr().out
    assert "not yet" in out and "expected 3" in out and "count again" in out
    assert ex.summary() == {"00.1": ex.CORRECT, "00.2": ex.WRONG}


def ok(name, *args, **kw):
    ex.check(name, *args, **kw)
    return ex.summary()[name] == ex.CORRECT


def test_numbers_arrays_strings_dicts():
    assert ok("a", 0.30000001, 0.3)
    assert ok("b", np.array([1, 2, 3]), [1, 2, 3])
    assert not ok("c", np.array([1, 2]), [1, 2, 3])            # a wrong shape is wrong, not an error
    assert ok("d", " Z(a,a) ", "z(a,a)")
    assert ok("e", {"x": 1, "y": 2.0}, {"y": 2, "x": 1})
    assert not ok("f", {"x": 1}, {"x": 1, "y": 2})
    assert not ok("g", "text", 3)


def test_test_functions_and_broken_answers(capsys):
    assert ok("t", 7, test=lambda a: a % 7 == 0)
    assert not ok("u", "seven", test=lambda a: a % 7 == 0)    # the test raises: a wrong answer, in words
    assert "could not read your answer" in capsys.readouterr().out
    ex.check_true("v", [1])
    ex.check_true("w", [])
    assert ex.summary()["v"] == ex.CORRECT and ex.summary()["w"] == ex.WRONG


def test_a_check_needs_a_name_and_a_target():
    with pytest.raises(ValueError, match="name"):
        ex.check("", 1, 1)
    with pytest.raises(ValueError, match="expected answer or a test"):
        ex.check("x", 1)


def test_rate_standard_errors():
    assert rate_se(0.5, 100) == pytest.approx(0.05)
    assert rate_se(0.0, 10) == 0.0
    assert format_rate(0.35, 200) == "0.350 ± 0.034"
    assert pct(0.35) == "35%" and pct(0.35, 200) == "35% ± 3" and pct(None) == "n/a"
    with pytest.raises(ValueError, match="at least one sample"):
        rate_se(0.5, 0)
    # the difference of two independent rates: the errors add in quadrature
    assert diff_se(0.5, 100, 0.5, 100) == pytest.approx(0.05 * 2 ** 0.5)
    assert diff_se(0.5, 100, 0.0, 10) == pytest.approx(0.05)
    assert diff_se(0.3, 50, 0.6, 80) == pytest.approx(diff_se(0.6, 80, 0.3, 50))
    with pytest.raises(ValueError, match="at least one sample"):
        diff_se(0.5, 100, 0.5, 0)


def test_caption_prints_one_sentence_outside_jupyter(capsys):
    assert caption("two\n  lines") is None
    assert capsys.readouterr().out == "two lines\n"
