"""What the scripts in this folder share: the CPU set-up and the shipped inputs of the probe
scripts, the ``NAME=FOLDER`` arguments and the trained models' cards of the comparison scripts.
(The scripts run as ``python benchmarks/<name>.py``, which puts this folder on the import path.)"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def named_paths(items: list[str], what: str = "an argument") -> dict[str, Path]:
    """``["NAME=PATH", ...]`` as ``{NAME: Path(PATH)}``, in order; a clear exit on an item
    without a name or a path (``what`` names the argument in the message)."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"{what} must be NAME=PATH, got {item!r}")
        out[name] = Path(path)
    return out


def named_folder_pairs(items: list[str], what: str = "an argument") -> list[tuple[str, Path, Path]]:
    """``["NAME=LMM_FOLDER:STAGE1_FOLDER", ...]`` as ``[(NAME, LMM folder, stage-1 folder), ...]``
    (folders through :func:`in_repo`), in order; a clear exit on a malformed item."""
    out = []
    for item in items:
        name, sep, folders = item.partition("=")
        lmm, sep2, stage1 = folders.partition(":")
        if not (sep and sep2 and name and lmm and stage1):
            raise SystemExit(f"{what} must be NAME=LMM_FOLDER:STAGE1_FOLDER, got {item!r}")
        out.append((name, in_repo(lmm), in_repo(stage1)))
    return out


def in_repo(path: str | Path) -> Path:
    """``path`` as given when absolute, else under the repository root (scripts and tests
    may run from elsewhere)."""
    return Path(path) if Path(path).is_absolute() else ROOT / path


def read_card(folder: str | Path, what: str = "", sub: str = "", part: str | None = "extra") -> dict:
    """The training record (``extra`` of ``config.json``; ``part=None``: the whole file) of the
    model saved in ``folder`` (or its sub-folder ``sub``), a relative folder read from the
    repository root; a clear exit when there is none (``what``: the kind of model, for the message)."""
    path = in_repo(folder) / sub / "config.json" if sub else in_repo(folder) / "config.json"
    if not path.is_file():
        raise SystemExit(f"no {what + ' ' if what else ''}card at {path}: train it first (see this script's docstring)")
    from drclib.io import read_json
    record = read_json(path)
    return record[part] if part else record


def cpu(threads: int = 0):
    """Use ``threads`` torch threads (0: torch's default) and pick the CPU, which also flushes
    denormal floats (``drclib.runtime.pick_device``; 2-4x faster on this CPU). Returns the device."""
    import torch

    from drclib.runtime import pick_device

    if threads:
        torch.set_num_threads(threads)
    return pick_device("cpu")


def shipped_inputs(threads: int = 0, lmm_folder: str | None = None):
    """Use ``threads`` torch threads (0: torch's default), flush denormal floats
    (``drclib.runtime.pick_device``), and load the sticker set, the pocket LMM (``lmm_folder``,
    default the shipped one, in eval mode), the tokenizer and every sticker's visual codes
    ``[n_styles, n_emoji, 64]``. Returns ``(stickers, lmm, tokenizer, codes)``."""
    from drclib.backbone import tokenizer as tok_mod
    from drclib.backbone import PocketLMM, default_checkpoint_dir, sticker_codes
    from drclib.data import StickerSet

    cpu(threads)
    stickers = StickerSet.load()
    lmm = PocketLMM.from_pretrained(lmm_folder or default_checkpoint_dir()).eval()
    tokenizer = tok_mod.load_default()
    return stickers, lmm, tokenizer, sticker_codes(tokenizer, stickers)


def full_profile_data(threads: int = 0):
    """Use ``threads`` torch threads (0: torch's default), pick the CPU (flushing denormal floats),
    seed everything with 0, and build the full profile's sticker set and dataset (seed 0): the
    test samples and references the shipped cards were scored on. Returns ``(device, stickers, data)``."""
    from drclib.data import StickerSet, make_dataset
    from drclib.runtime import seed_everything

    device = cpu(threads)
    seed_everything(0)
    stickers = StickerSet.for_profile("full")
    return device, stickers, make_dataset(stickers, "full", seed=0)
