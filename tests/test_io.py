"""drclib.io: atomic writes keep the previous file when a write fails half-way."""

import json

import numpy as np
import pytest

from drclib.io import atomic_path, read_json, write_json


def test_write_and_read_json_converts_numpy(tmp_path):
    p = write_json(tmp_path / "sub" / "r.json", {"a": np.int64(3), "b": np.array([1.5, 2.0]), "c": {1: "x"}})
    assert read_json(p) == {"a": 3, "b": [1.5, 2.0], "c": {"1": "x"}}


def test_non_finite_numbers_are_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(ValueError, match="non-finite"):
        write_json(tmp_path / "r.json", {"x": float("nan")})
    assert not (tmp_path / "r.json").exists()


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half-")
            raise RuntimeError("killed half-way")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_read_json_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_json(bad)
    assert json.loads(write_json(tmp_path / "ok.json", {}).read_text()) == {}
