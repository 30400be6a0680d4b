"""The drc command line: help texts and the info command."""

import subprocess
import sys

import pytest

from drclib.cli import build_parser, main


def test_help_explains_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("run-notebooks", "build-data", "info"):
        assert cmd in out
    with pytest.raises(SystemExit):
        main(["run-notebooks", "--help"])
    assert "--profile" in capsys.readouterr().out


def test_info_prints_sizes(capsys):
    assert main(["info", "--profile", "quick"]) == 0
    out = capsys.readouterr().out
    assert "6 styles" in out and "split sample" in out and "CC-BY-SA-4.0" in out


def test_errors_are_messages_not_tracebacks(capsys, tmp_path):
    assert main(["info", "--data", str(tmp_path / "missing.npz")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "drclib.data.build" in err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run-notebooks", "--profile", "medium"])


def test_module_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "drclib.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "drc-kit" in r.stdout
