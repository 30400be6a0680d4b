"""Model cards: the README.md written beside every trained checkpoint, and their shared parts.

A card says what was trained, on which concept set, with which command, on which machine, in
how long, and what it scored; the per-stage cards are in the stage modules.
"""

from __future__ import annotations

import numpy as np


def previous_lines(extra: dict) -> str:
    """Earlier runs this one continued from (``--init-from``), oldest first."""
    out = ""
    for p in extra.get("previous", []):
        out += (f"\n- Continued from: `{p.get('command', '?')}` ({p.get('pretrain', {}).get('steps', '?')} steps, "
                f"{p.get('train_minutes', 0):.1f} min).")
    return out


def concept_record(stickers) -> dict:
    """What a trained model records of its world: the concept set's name and its emoji
    (indices into the whole sticker array), so it can be reloaded with the same stickers."""
    return {"concept_set": stickers.concept_name, "concepts": [int(c) for c in stickers.concepts]}


def model_stickers(model):
    """The sticker set a trained model (anything with ``training_info`` from
    :func:`concept_record`, e.g. the LMM, or that record itself as a dict) was trained on; the
    whole array for models without a record."""
    from drclib.data import StickerSet

    info = (model if isinstance(model, dict) else getattr(model, "training_info", None)) or {}
    concepts = info.get("concepts")
    stickers = StickerSet.load()
    if concepts is None or len(concepts) == stickers.n_emoji:
        return stickers
    name = info.get("concept_set")
    from drclib.data.concepts import CONCEPT_SETS, concept_set

    if name in CONCEPT_SETS and np.array_equal(concept_set(name, stickers), concepts):
        return stickers.subset(name)
    return stickers.subset(np.asarray(concepts))


def pm(rate: float, n: int) -> str:
    """``"0.520 ± 0.029"``: a rate with its standard error ``sqrt(p (1 - p) / n)``."""
    from drclib.judges import format_rate

    return format_rate(rate, max(int(n), 1))


SWAP_COLUMNS = (("style_of_A", "style of A"), ("emoji_of_B", "emoji of B"), ("both", "both"),
                ("style_of_B", "style of B (collapse)"), ("emoji_of_A", "emoji of A (collapse)"))
"""The swap-test columns of every stage-1 table, in order."""
PAIR_TITLES = {"train": "pairs of training cells (their target cell was trained on)",
               "heldout": "pairs of held-out cells (never trained on)"}


def swap_row(label: str, r: dict) -> str:
    return f"| {label} | " + " | ".join(pm(r[k], r["n"]) for k, _ in SWAP_COLUMNS) + " |"


def swap_header(first: str) -> list[str]:
    return [f"| {first} | " + " | ".join(t for _, t in SWAP_COLUMNS) + " |", "|---" * (len(SWAP_COLUMNS) + 1) + "|"]


def swap_markdown(rows: dict, first: str = "model") -> str:
    """A swap-test table as markdown: one row per ``{label: swap_rates}``, every column a rate
    ± its standard error (the notebooks and cards share it)."""
    return "\n".join(swap_header(first) + [swap_row(label, r) for label, r in rows.items()])
