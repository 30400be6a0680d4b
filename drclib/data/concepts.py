"""Concept sets: which emoji the kit's world is made of.

The shipped sticker array holds 1,370 emoji in six styles. A 3.6 M-parameter LMM over 4 x 4-pixel
codes, trained for minutes on two CPU cores, cannot master that many concepts (RESULTS.md,
section 1: it draws the asked emoji 41% of the time after two hours), and then nothing
downstream has anything to compose. So the kit works on a **concept set**: a named, fixed list
of emoji indices into the sticker array, chosen by the rule below. Everything downstream is
defined over the active set: users, samples, splits, held-out cells, triplets, the training
cells of every model and the judges' candidate classes (:meth:`StickerSet.subset`).

============  =======  ====================================================================
name          emoji    used by
============  =======  ====================================================================
``mini``      32       the quick profile and the tests (the first 32 of the ranking)
``core``      128      the full profile (the first 128; sized by the scaling study,
                       ``benchmarks/scaling_study.py`` and RESULTS.md section 1)
``all``       1,370    exploration and GPU runs: the whole array, unranked
============  =======  ====================================================================

``mini`` is a prefix of ``core``, so the weights trained on ``core`` serve the quick profile.

The rule (:func:`concept_ranking`), in code and deterministic, with no trained model in it:

1. **Not a colour or a glyph.** Colour is a style cue here (each artist has a palette), so an
   emoji whose identity *is* a colour or a sign makes a poor concept: the whole ``Symbols``
   category (letters, keycaps, arrows, geometric shapes, zodiac and warning signs ...), flags,
   coloured hearts, clock faces, and every emoji whose name holds a colour word ("blue book").
2. **Recognisable across the six artists.** Each sticker is reduced to a style-robust shape
   descriptor (its filled silhouette and its edge map, blurred to 16 x 16). For every ordered
   pair of artists (s, t), the emoji drawn by s looks for its nearest drawing by t among all
   candidates; an emoji's score is the share of the 30 pairs in which it finds itself.
3. **Distinct from each other.** Two emoji that find each other in three or more of those
   60 searches (both directions) are confusable; a candidate confusable with one already
   chosen is skipped.
4. **Spread over the CLDR categories and balanced for the held-out split.** Emoji are taken
   in turn from the seven remaining categories, best score first, and in turn from the emoji
   that have a held-out cell (:func:`drclib.data.splits.heldout_cells`: half of all emoji lose
   one style) and those that do not, so every set of even size has exactly half of its emoji
   with a held-out cell, as the kit's held-out rule asks.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from drclib.io import atomic_path
from drclib.paths import data_dir

CONCEPT_SETS = {"mini": 32, "core": 128, "all": None}
"""Set name -> size (``None``: every emoji of the array, in array order)."""

EXCLUDED_CATEGORIES = ("Symbols", "Flags")
"""Signs, letters, shapes and flags: their identity is a glyph or a colour."""
EXCLUDED_SUBCATEGORIES = ("heart",)
"""Coloured hearts: the same shape in another colour is another emoji."""
COLOUR_WORDS = re.compile(r"\b(red|orange|yellow|green|blue|purple|brown|black|white)\b")
"""A name with a colour word names a colour (``blue book``, ``green apple``)."""
CLOCK_FACES = re.compile(r"o[’']clock|thirty")
CONFUSABLE = 3
"""Two emoji that retrieve each other in this many of the 60 cross-artist searches are confusable."""


def candidates(stickers) -> np.ndarray:
    """Indices of emoji whose identity is not a colour or a glyph (rule 1)."""
    keep = [e for e in range(stickers.n_emoji)
            if stickers.categories[e] not in EXCLUDED_CATEGORIES
            and stickers.subcategories[e] not in EXCLUDED_SUBCATEGORIES
            and not COLOUR_WORDS.search(stickers.names[e].lower())
            and not CLOCK_FACES.search(stickers.names[e].lower())]
    return np.array(keep, dtype=np.int64)


def shape_descriptors(images: np.ndarray) -> np.ndarray:
    """Style-robust shape descriptors of stickers ``uint8 [..., 32, 32, 3]`` -> ``float32 [..., 512]``:
    the filled silhouette (pixels that are not white, with enclosed holes filled, so an
    outline drawing and a filled one agree) and the edge map (luminance gradients), each
    blurred to 16 x 16, centred and normalised to unit length."""
    import torch
    import torch.nn.functional as F

    arr = np.asarray(images)
    lead = arr.shape[:-3]
    x = torch.from_numpy(arr.reshape(-1, *arr.shape[-3:])).float().div(255).permute(0, 3, 1, 2)
    ink = 1 - x.min(1, keepdim=True).values
    fg = (ink > 0.08).float()
    bg = torch.zeros_like(fg)
    bg[..., 0, :] = bg[..., -1, :] = bg[..., :, 0] = bg[..., :, -1] = 1
    bg = bg * (1 - fg)
    for _ in range(x.shape[-1] + 8):           # flood the background in from the border
        bg = F.max_pool2d(bg, 3, 1, 1) * (1 - fg)
    silhouette = 1 - bg
    grey = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    edges = F.pad((grey[..., :, 1:] - grey[..., :, :-1]).abs(), (0, 1, 0, 0)) \
        + F.pad((grey[..., 1:, :] - grey[..., :-1, :]).abs(), (0, 0, 0, 1))

    def blur(t):
        return F.avg_pool2d(F.avg_pool2d(t, 2), 3, 1, 1, count_include_pad=False).flatten(1)

    d = torch.cat([blur(silhouette), blur(edges)], 1)
    d = F.normalize(d - d.mean(1, keepdim=True), dim=1)
    return d.numpy().reshape(*lead, -1)


def cross_style_retrieval(stickers, emoji: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rules 2 and 3: for every ordered pair of styles (s, t), each emoji drawn by s finds its
    nearest drawing by t among ``emoji``. Returns ``(score [N], confusion [N, N])``: the share
    of the pairs in which an emoji found itself, and how often emoji i found emoji j."""
    d = shape_descriptors(stickers.images[:, emoji])           # [S, N, D]
    n_styles, n = d.shape[:2]
    hits = np.zeros(n)
    confusion = np.zeros((n, n), dtype=np.int64)
    for s in range(n_styles):
        for t in range(n_styles):
            if s == t:
                continue
            found = (d[s] @ d[t].T).argmax(1)
            hits += found == np.arange(n)
            np.add.at(confusion, (np.arange(n), found), 1)
    return hits / (n_styles * (n_styles - 1)), confusion


def concept_ranking(stickers) -> np.ndarray:
    """Every eligible emoji in the order the rule picks them (see the module docstring); a
    concept set of size K is the first K. Deterministic: no seed, no trained model."""
    from drclib.data.splits import heldout_cells

    if getattr(stickers, "concepts", None) is not None and len(stickers.concepts) != stickers.full_n_emoji:
        raise ValueError("rank concepts on the whole sticker array (StickerSet.load()), not on a subset")
    pool = candidates(stickers)
    score, confusion = cross_style_retrieval(stickers, pool)
    confusable = (confusion + confusion.T) >= CONFUSABLE
    np.fill_diagonal(confusable, False)
    held = heldout_cells(stickers).any(0)[pool]                 # has a held-out cell
    cats = np.array([stickers.categories[e] for e in pool])
    order = sorted(dict.fromkeys(cats), key=lambda c: list(stickers.category_names).index(c))
    # best first within each (category, held-out group); ties by array index
    queues = {(c, h): [i for i in np.lexsort((pool, -score)) if cats[i] == c and held[i] == h]
              for c in order for h in (False, True)}
    chosen: list[int] = []
    taken = np.zeros(len(pool), dtype=bool)
    n_held = 0
    for strict in (True, False):              # then the confusable ones, so the ranking covers every candidate
        blocked = taken | (confusable[taken].any(0) if strict else False)
        progressed = True
        while progressed:
            progressed = False
            for c in order:
                want_held = n_held < len(chosen) - n_held     # the group behind; ties: one without
                for h in (want_held, not want_held):
                    q = [i for i in queues[(c, h)] if not blocked[i]]
                    if q:
                        i = q[0]
                        chosen.append(i)
                        taken[i] = blocked[i] = True
                        n_held += int(h)
                        if strict:
                            blocked |= confusable[i]
                        progressed = True
                        break
    return pool[np.array(chosen, dtype=np.int64)]


RANKING_FILE = "concept_ranking.json"
"""The rule's ranking of the shipped array, stored beside it (``data/``) so a process need not
recompute it (about 5 s); :func:`ranking` checks that it belongs to the images it is used
with, and the tests recompute it (``python -m drclib.data.build --ranking`` rewrites it)."""

_RANKING_CACHE: dict[str, np.ndarray] = {}


def _stored() -> dict | None:
    """``data/concept_ranking.json`` as a dict, or ``None`` when it is absent or unreadable."""
    import json

    path = data_dir() / RANKING_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        doc["ranking"] = np.asarray(doc["ranking"], dtype=np.int64)
        return doc
    except (ValueError, KeyError, TypeError):
        return None


def ranking(stickers=None) -> np.ndarray:
    """:func:`concept_ranking` of the whole sticker array (a :class:`drclib.data.StickerSet`
    from ``StickerSet.load()``), read from ``data/concept_ranking.json`` when it was made from
    these images, else computed (once a process). Without ``stickers``, the stored ranking is
    used as it is (it names the images it was made from by their digest)."""
    if stickers is None:
        doc = _stored()
        if doc is None:
            raise FileNotFoundError(f"{data_dir() / RANKING_FILE} is missing or unreadable: pass the stickers "
                                    "(StickerSet.load()) to compute the ranking, or rewrite the file with "
                                    "`python -m drclib.data.build --ranking`")
        return doc["ranking"]
    if len(stickers.concepts) != stickers.full_n_emoji:
        raise ValueError("the ranking is defined on the whole sticker array (StickerSet.load()), not a subset")
    key = stickers.digest()
    if key not in _RANKING_CACHE:
        doc = _stored()
        stored = doc["ranking"] if doc is not None and doc.get("images_digest") == key else None
        _RANKING_CACHE[key] = stored if stored is not None else concept_ranking(stickers)
    return _RANKING_CACHE[key]


def write_ranking(stickers) -> Path:
    """Compute the ranking of ``stickers`` (the whole array) and write
    ``data/concept_ranking.json`` (atomic); ``python -m drclib.data.build --ranking`` runs it."""
    import json

    order = concept_ranking(stickers)
    path = data_dir() / RANKING_FILE
    doc = {"what": "drclib.data.concepts.concept_ranking of data/stickers_32px.npz: emoji indices, best first",
           "images_digest": stickers.digest(), "n_emoji": int(stickers.full_n_emoji),
           "sizes": {k: v for k, v in CONCEPT_SETS.items() if v},
           "ranking": [int(i) for i in order],
           "names": [stickers.names[i] for i in order]}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    _RANKING_CACHE[stickers.digest()] = order
    return path


def concept_set(name: str, stickers=None) -> np.ndarray:
    """The emoji of concept set ``name`` (``"mini"``, ``"core"`` or ``"all"``), as sorted
    indices into the shipped sticker array (``int64``). Without ``stickers`` (the whole
    :class:`drclib.data.StickerSet`), the stored ranking says which."""
    key = str(name).strip().lower()
    if key not in CONCEPT_SETS:
        raise ValueError(f"unknown concept set {name!r}: use one of {', '.join(CONCEPT_SETS)}")
    size = CONCEPT_SETS[key]
    if size is None:
        if stickers is not None:
            return np.arange(stickers.full_n_emoji, dtype=np.int64)
        doc = _stored()
        if doc is None or "n_emoji" not in doc:
            raise FileNotFoundError(f"{data_dir() / RANKING_FILE} does not say how many emoji the array has: "
                                    "pass the stickers, or rewrite it with `python -m drclib.data.build --ranking`")
        return np.arange(int(doc["n_emoji"]), dtype=np.int64)
    return ranked_prefix(size, stickers)


def ranked_prefix(k: int, stickers=None) -> np.ndarray:
    """The first ``k`` emoji of the rule's ranking, sorted (a concept set of size ``k``; the
    scaling study's sets)."""
    order = ranking(stickers)
    if not 2 <= k <= len(order):
        raise ValueError(f"a concept set needs 2..{len(order)} emoji (the rule admits {len(order)}), asked {k}")
    return np.sort(order[:k])
