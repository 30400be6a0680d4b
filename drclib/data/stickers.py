"""The multi-style sticker set: the same emoji drawn by six artists.

``data/stickers_32px.npz`` holds ``images`` (uint8, ``[style, emoji, 32, 32, 3]``, RGB on
white) and metadata arrays (codepoint, character, CLDR name, category, subcategory; style
names, source packages, licences), all loadable without pickle. STYLE is the artist set,
SEMANTICS is which emoji: the same emoji in another style is the paper's positive-semantic
sample, for real. :mod:`drclib.data.build` makes the file from pinned npm tarballs.

Image conventions used across the kit:
- numpy: ``uint8`` ``[H, W, 3]`` (or ``[B, H, W, 3]``), RGB, white background;
- torch: ``float32`` ``[3, H, W]`` (or ``[B, 3, H, W]``) in ``[0, 1]``;
- PIL: ``RGB`` images.
"""

from __future__ import annotations

import os
import unicodedata
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from drclib.io import file_digest
from drclib.paths import data_dir, repo_root  # noqa: F401  (re-exported: drclib.data.stickers.repo_root)

FORMAT_VERSION = 1
"""Version of the npz layout this loader reads; :mod:`drclib.data.build` writes the same."""

STYLES = ("twemoji", "noto", "openmoji", "openmoji_black", "fluent_flat", "fluent_3d")
"""The six artist styles, in the order of the ``images`` array's first axis."""

SHIPPED_SHA256 = {
    "stickers_32px.npz": "af1e86f438790183a38c6cb080cd853182505686e57deea8af68e19f5f1c55c9",
}
"""sha256 of the data files shipped in ``data/``; checked on load. The build is deterministic,
so a rebuild gives the same bytes (``python -m drclib.data.build --check`` verifies it)."""

REBUILD_HINT = "python -m drclib.data.build  (or `make data`; needs Node.js/npm and about a minute)"

_REQUIRED = ("images", "styles", "style_packages", "style_licences", "style_copyright",
             "codepoints", "chars", "names", "categories", "subcategories",
             "format_version", "image_size")


class DataFileError(RuntimeError):
    """A data file is missing, truncated, corrupt or of another version. The message names
    the file and the command that rebuilds it."""




def default_path(size: int = 32) -> Path:
    return data_dir() / f"stickers_{size}px.npz"


def to_tensor(images: np.ndarray):
    """uint8 ``[..., H, W, 3]`` -> torch float32 ``[..., 3, H, W]`` in [0, 1]."""
    import torch

    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim < 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected uint8 images shaped [..., H, W, 3], got {arr.dtype} {arr.shape}")
    arr = np.ascontiguousarray(arr) if arr.flags.writeable else np.array(arr)
    t = torch.from_numpy(arr).float().div_(255.0)
    return t.movedim(-1, -3)


def _fold(text: str) -> str:
    """Lower-case, accents stripped, spaces collapsed: for forgiving name look-ups."""
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(text.lower().replace("_", " ").replace("-", " ").split())


class StickerSet:
    """The sticker array with its metadata, and look-ups by index or by name.

    >>> s = StickerSet.load()                                   # doctest: +SKIP
    >>> s.image("noto", "grinning face").shape                  # doctest: +SKIP
    (32, 32, 3)

    Styles are addressed by index or name (``"noto"``); emoji by index, CLDR name
    (``"grinning face"``), the character itself (``"😀"``) or the codepoint (``"1F600"``).
    """

    def __init__(self, images: np.ndarray, *, styles: Sequence[str], codepoints: Sequence[str],
                 chars: Sequence[str], names: Sequence[str], categories: Sequence[str],
                 subcategories: Sequence[str], style_packages: Sequence[str] = (),
                 style_licences: Sequence[str] = (), style_copyright: Sequence[str] = (),
                 path: Path | None = None, concepts: Sequence[int] | None = None,
                 full_n_emoji: int | None = None, concept_name: str | None = None):
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 5 or images.shape[-1] != 3 \
                or images.shape[2] != images.shape[3]:
            raise ValueError("images must be uint8 [style, emoji, size, size, 3], "
                             f"got {images.dtype} {images.shape}")
        n_styles, n_emoji = images.shape[:2]
        self.images = images
        self.styles = [str(x) for x in styles]
        self.codepoints = [str(x) for x in codepoints]
        self.chars = [str(x) for x in chars]
        self.names = [str(x) for x in names]
        self.categories = [str(x) for x in categories]
        self.subcategories = [str(x) for x in subcategories]
        self.style_packages = [str(x) for x in style_packages] or [""] * n_styles
        self.style_licences = [str(x) for x in style_licences] or [""] * n_styles
        self.style_copyright = [str(x) for x in style_copyright] or [""] * n_styles
        self.path = path
        self.concepts = (np.arange(n_emoji, dtype=np.int64) if concepts is None
                         else np.asarray(concepts, dtype=np.int64))
        """Index of each emoji in the whole sticker array (``arange`` unless this is a subset)."""
        self.full_n_emoji = int(full_n_emoji if full_n_emoji is not None else n_emoji)
        self.concept_name = concept_name or ("all" if concepts is None else "custom")
        """The concept set this object holds (``"all"``, ``"core"``, ``"mini"`` or ``"custom"``)."""
        if len(self.concepts) != n_emoji:
            raise ValueError(f"concepts has {len(self.concepts)} entries but images has {n_emoji} emoji")
        for label, seq, n in (("styles", self.styles, n_styles), ("codepoints", self.codepoints, n_emoji),
                              ("chars", self.chars, n_emoji), ("names", self.names, n_emoji),
                              ("categories", self.categories, n_emoji),
                              ("subcategories", self.subcategories, n_emoji),
                              ("style_packages", self.style_packages, n_styles),
                              ("style_licences", self.style_licences, n_styles),
                              ("style_copyright", self.style_copyright, n_styles)):
            if len(seq) != n:
                raise ValueError(f"{label} has {len(seq)} entries but images has {n}")
        self._style_lookup = {s: i for i, s in enumerate(self.styles)}
        self._emoji_lookup: dict[str, int] = {}
        for i in range(n_emoji):
            for key in (self.codepoints[i].upper(), self.chars[i], _fold(self.names[i])):
                self._emoji_lookup.setdefault(key, i)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | os.PathLike | None = None, *, verify: bool = True,
             concepts: str | Sequence[int] | None = None) -> "StickerSet":
        """Load a sticker npz (default: ``data/stickers_32px.npz``).

        ``concepts`` restricts the set to a concept set (``"mini"``, ``"core"``, ``"all"``, see
        :mod:`drclib.data.concepts`) or to a list of emoji indices (:meth:`subset`).

        ``verify`` checks the sha256 of a shipped file against :data:`SHIPPED_SHA256`. A
        missing, truncated, corrupt or wrong-version file raises :class:`DataFileError` naming
        the file and the command that rebuilds it. Nothing is unpickled.
        """
        path = Path(path) if path is not None else default_path()
        hint = f"rebuild it with: {REBUILD_HINT}"
        if not path.is_file():
            raise DataFileError(f"sticker data file {path} is missing; {hint}")
        if verify and path.name in SHIPPED_SHA256 and SHIPPED_SHA256[path.name] != "PENDING":
            got = file_digest(path)
            if got != SHIPPED_SHA256[path.name]:
                raise DataFileError(
                    f"sticker data file {path} has sha256 {got[:16]}..., expected "
                    f"{SHIPPED_SHA256[path.name][:16]}... (truncated, modified, or from another "
                    f"version of the kit); restore it with `git checkout -- {path.name}` in data/ "
                    f"or {hint}")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in _REQUIRED if k not in z.files]
                if missing:
                    raise DataFileError(f"sticker data file {path} lacks arrays {missing}: it is not "
                                        f"a drc-kit sticker file or is of an older version; {hint}")
                version = int(z["format_version"])
                if version != FORMAT_VERSION:
                    raise DataFileError(f"sticker data file {path} has format version {version}, this "
                                        f"kit reads version {FORMAT_VERSION}; {hint}")
                arrays = {k: z[k] for k in _REQUIRED}
        except DataFileError:
            raise
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
            raise DataFileError(f"sticker data file {path} is unreadable ({type(e).__name__}: {e}); "
                                f"it may be truncated or corrupt; {hint}") from e
        whole = cls(arrays["images"], styles=arrays["styles"], codepoints=arrays["codepoints"],
                    chars=arrays["chars"], names=arrays["names"], categories=arrays["categories"],
                    subcategories=arrays["subcategories"], style_packages=arrays["style_packages"],
                    style_licences=arrays["style_licences"], style_copyright=arrays["style_copyright"],
                    path=path)
        return whole if concepts is None else whole.subset(concepts)

    @classmethod
    def for_profile(cls, profile="full", path: str | os.PathLike | None = None) -> "StickerSet":
        """The stickers of a profile's concept set (``quick``: ``mini``, ``full``: ``core``)."""
        from drclib.config import get_profile

        return cls.load(path, concepts=get_profile(profile).concepts)

    # ------------------------------------------------------------------ concept sets
    def subset(self, concepts: str | Sequence[int]) -> "StickerSet":
        """The same stickers restricted to some emoji: a concept set by name (``"mini"``,
        ``"core"``, ``"all"``; :func:`drclib.data.concepts.concept_set`) or indices into this
        set. The result numbers its emoji 0..K-1 and keeps, in :attr:`concepts`, where each
        sits in the whole array; held-out cells, users, samples and the judges' classes all
        follow it. A subset of a subset keeps indices into the whole array."""
        name = None
        if isinstance(concepts, str):
            from drclib.data.concepts import concept_set

            if len(self.concepts) != self.full_n_emoji:
                raise ValueError("take a named concept set of the whole array: StickerSet.load(concepts=name)")
            name = concepts.strip().lower()
            idx = concept_set(name, self)
        else:
            idx = np.asarray(concepts)
            if idx.ndim != 1 or len(idx) < 2 or not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(f"concepts must be a name or at least 2 integer emoji indices, got {concepts!r}")
            if (idx < 0).any() or (idx >= self.n_emoji).any() or len(np.unique(idx)) != len(idx):
                raise ValueError(f"concept indices must be distinct and in 0..{self.n_emoji - 1}")
        pick = lambda seq: [seq[i] for i in idx]  # noqa: E731
        return StickerSet(self.images[:, idx], styles=self.styles, codepoints=pick(self.codepoints),
                          chars=pick(self.chars), names=pick(self.names), categories=pick(self.categories),
                          subcategories=pick(self.subcategories), style_packages=self.style_packages,
                          style_licences=self.style_licences, style_copyright=self.style_copyright,
                          path=self.path, concepts=self.concepts[idx], full_n_emoji=self.full_n_emoji,
                          concept_name=name if name else ("all" if len(idx) == self.full_n_emoji
                                                          and (np.diff(idx) == 1).all() else "custom"))

    def digest(self) -> str:
        """A short sha256 of the images and the concept indices (a cache key)."""
        import hashlib

        h = hashlib.sha256(np.ascontiguousarray(self.images).tobytes())
        h.update(self.concepts.tobytes())
        return h.hexdigest()[:24]

    # ------------------------------------------------------------------ sizes
    @property
    def n_styles(self) -> int:
        return self.images.shape[0]

    @property
    def n_emoji(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[2]

    @property
    def shape(self) -> tuple[int, int]:
        """(n_styles, n_emoji): the grid of (style, emoji) cells."""
        return self.images.shape[:2]

    def __len__(self) -> int:
        return self.n_styles * self.n_emoji

    def __repr__(self) -> str:
        src = f", path={str(self.path)!r}" if self.path else ""
        part = f", concept set {self.concept_name!r}" if self.n_emoji != self.full_n_emoji else ""
        return (f"StickerSet({self.n_styles} styles x {self.n_emoji} emoji{part}, "
                f"{self.image_size}px{src})")

    # ------------------------------------------------------------------ look-ups
    def style_index(self, style: int | str) -> int:
        """Index of a style given by index or name."""
        if isinstance(style, (int, np.integer)) and not isinstance(style, bool):
            if not 0 <= int(style) < self.n_styles:
                raise IndexError(f"style index {style} out of range: there are {self.n_styles} styles")
            return int(style)
        key = str(style).strip().lower()
        if key not in self._style_lookup:
            raise KeyError(f"unknown style {style!r}; the styles are {', '.join(self.styles)}")
        return self._style_lookup[key]

    def emoji_index(self, emoji: int | str) -> int:
        """Index of an emoji given by index, CLDR name, character or codepoint."""
        if isinstance(emoji, (int, np.integer)) and not isinstance(emoji, bool):
            if not 0 <= int(emoji) < self.n_emoji:
                raise IndexError(f"emoji index {emoji} out of range: there are {self.n_emoji} emoji")
            return int(emoji)
        text = str(emoji).strip()
        for key in (text.replace("\ufe0f", ""), text.upper().removeprefix("U+"), _fold(text)):
            if key in self._emoji_lookup:
                return self._emoji_lookup[key]
        close = self.search(text)[:5]
        hint = f"; did you mean {', '.join(repr(self.names[i]) for i in close)}?" if close else \
            "; use StickerSet.search(text) to find names"
        raise KeyError(f"no emoji called {emoji!r}{hint}")

    def search(self, text: str) -> list[int]:
        """Indices of emoji whose name contains every word of ``text`` (case-insensitive)."""
        words = _fold(text).split()
        if not words:
            return []
        return [i for i, n in enumerate(self.names) if all(w in _fold(n) for w in words)]

    def describe(self, emoji: int | str) -> str:
        """One line about an emoji: character, name, codepoint and category."""
        i = self.emoji_index(emoji)
        return (f"{self.chars[i]} {self.names[i]} (U+{self.codepoints[i]}, "
                f"{self.categories[i]} / {self.subcategories[i]})")

    @property
    def category_names(self) -> list[str]:
        """Categories in the order they first appear (emoji are sorted by category)."""
        return list(dict.fromkeys(self.categories))

    def emoji_in(self, categories: str | Iterable[str] | None = None,
                 subcategories: str | Iterable[str] | None = None) -> np.ndarray:
        """Indices of the emoji in any of the given categories and/or subcategories."""
        keep = np.ones(self.n_emoji, dtype=bool)
        for wanted, values, label in ((categories, self.categories, "category"),
                                      (subcategories, self.subcategories, "subcategory")):
            if wanted is None:
                continue
            wanted = {wanted} if isinstance(wanted, str) else set(wanted)
            unknown = wanted - set(values)
            if unknown:
                raise KeyError(f"unknown {label} {sorted(unknown)}; known: {sorted(set(values))}")
            keep &= np.isin(np.array(values), list(wanted))
        return np.flatnonzero(keep)

    # ------------------------------------------------------------------ images
    def image(self, style: int | str, emoji: int | str) -> np.ndarray:
        """One sticker as uint8 ``[H, W, 3]`` (a read-only view; copy before editing)."""
        view = self.images[self.style_index(style), self.emoji_index(emoji)]
        view = view.view()
        view.flags.writeable = False
        return view

    def pil(self, style: int | str, emoji: int | str):
        """One sticker as a PIL RGB image."""
        from PIL import Image

        return Image.fromarray(np.array(self.image(style, emoji)), mode="RGB")

    def tensor(self, style: int | str, emoji: int | str):
        """One sticker as a torch float tensor ``[3, H, W]`` in [0, 1]."""
        return to_tensor(self.image(style, emoji))

    def batch(self, cells: np.ndarray, as_torch: bool = False):
        """Stickers for an array of (style, emoji) index pairs shaped ``[..., 2]``.

        Returns uint8 ``[..., H, W, 3]``, or with ``as_torch`` float ``[..., 3, H, W]``.
        """
        cells = np.asarray(cells)
        if cells.shape[-1:] != (2,) or not np.issubdtype(cells.dtype, np.integer):
            raise ValueError(f"cells must be integer (style, emoji) pairs shaped [..., 2], got "
                             f"{cells.dtype} {cells.shape}")
        s, e = cells[..., 0], cells[..., 1]
        if (s < 0).any() or (s >= self.n_styles).any() or (e < 0).any() or (e >= self.n_emoji).any():
            raise IndexError("a (style, emoji) pair is out of range (negative entries are "
                             "padding and must be dropped before fetching images)")
        out = self.images[s, e]
        return to_tensor(out) if as_torch else out

    def licence_table(self) -> list[dict[str, str]]:
        """One row a style: name, source package, licence and copyright line."""
        return [dict(style=s, package=p, licence=lic, copyright=c) for s, p, lic, c in
                zip(self.styles, self.style_packages, self.style_licences, self.style_copyright)]
