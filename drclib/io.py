"""Safe writes: nothing already saved is lost or half-written.

Every file the kit writes (datasets, checkpoints, results JSON) goes through
:func:`atomic_path`: the content is written to a temporary file in the same folder, flushed to
disk, then renamed over the target in one step (``os.replace``). A write killed half-way leaves
the previous file intact and only a stray ``*.tmp`` file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``.

    >>> with atomic_path("out.json") as tmp:      # doctest: +SKIP
    ...     tmp.write_text("{}")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # make sure the bytes are on disk before the rename
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``sha256`` for data and checkpoints, ``sha1`` for npm)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"refusing to write a non-finite number ({obj}) to JSON")
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return _to_jsonable(obj.item())  # 0-d torch tensors
    return obj


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """Write ``data`` as indented JSON, atomically. NumPy values become plain numbers."""
    text = json.dumps(_to_jsonable(data), indent=2, sort_keys=True, ensure_ascii=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return Path(path)


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON file written by :func:`write_json`, with a clear error if it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the notebook or command that writes it")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it and run again") from e


def repo_relative(path: str | os.PathLike) -> str:
    """``path`` relative to the repository root when it lies inside it, else as given: how
    model cards and configs name files, so they stay true in any clone."""
    from drclib.paths import repo_root

    try:
        return str(Path(path).resolve().relative_to(repo_root()))
    except ValueError:
        return str(path)
