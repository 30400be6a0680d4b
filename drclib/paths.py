"""Where the kit lives on disk: its top folder and its data folder.

The lowest module of the library (nothing in ``drclib`` below it), so that writing files
(:mod:`drclib.io`), checkpoints and the sticker set can all find the repository.
"""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The kit's top folder (the one holding ``data/`` and ``notebooks/``)."""
    return Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """Where data files live: ``$DRC_DATA_DIR`` if set, else ``<repo>/data``."""
    env = os.environ.get("DRC_DATA_DIR")
    return Path(env) if env else repo_root() / "data"
