"""Build the emoji sticker set ``data/stickers_{size}px.npz`` from pinned npm packages.

Run ``python -m drclib.data.build --help`` for usage.

Pipeline
--------
1. ``npm pack NAME@VERSION`` every pinned package into a cache folder and verify
   the tarball's sha1 (npm's ``dist.shasum``). A cached tarball with the right
   sha1 is reused; a wrong one is deleted and fetched again.
2. Read the needed files straight out of the tarballs with :mod:`tarfile`.
3. Candidates: every single-codepoint emoji (after dropping U+FE0F) outside the
   "Component" category of emoji-datasource, in ``sort_order``.
4. Render every candidate in the six styles on a white background, measure its
   content box, drop emoji that are missing or empty in any style.
5. One scale factor per style (its median content box fills the frame), then a
   Lanczos resize to ``size x size`` RGB uint8.
6. Write a byte-for-byte deterministic ``.npz`` atomically, plus ``NOTICE`` and
   ``LICENSES/`` next to it.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import unicodedata
import zipfile
from pathlib import Path

import numpy as np

from drclib.data.stickers import FORMAT_VERSION, STYLES
from drclib.io import atomic_path, file_digest

# name -> (version, sha1 of the npm tarball, i.e. npm's dist.shasum)
PACKAGES = {
    "emoji-datasource": ("16.0.0", "7977edaa5b0099696bc720e43dd608d91ae2f208"),
    "emoji-datasource-google": ("16.0.0", "a80ac3e8106cbd4d8648ce758aa099e8827b6157"),
    "@twemoji/svg": ("15.0.0", "0e3828c654726f1848fe11f31ef4e8a75854cc7f"),
    "openmoji": ("17.0.0", "ee8094c5c0de0d2126b77ceb074d62b6fe2071d0"),
    "fluentui-emoji": ("1.3.0", "d0e7c7f37d9a93199ef8753b3dcffef6a189c743"),
    "@lobehub/fluent-emoji-3d": ("1.1.0", "ff0679b2bbbf6100dd9709d8952498f08f364ac6"),
    # Only for the full licence texts written to LICENSES/ (no artwork).
    "spdx-license-list": ("6.12.0", "20b9ae77c3410ad08720bcd5cf562e9d4eeebadb"),
}

# style -> (package, member folder inside the tarball, file extension, file kind)
STYLE_SOURCES = {
    "twemoji": ("@twemoji/svg", "package/", ".svg", "svg"),
    "noto": ("emoji-datasource-google", "package/img/google/64/", ".png", "raster"),
    "openmoji": ("openmoji", "package/color/svg/", ".svg", "svg"),
    "openmoji_black": ("openmoji", "package/black/svg/", ".svg", "svg"),
    "fluent_flat": ("fluentui-emoji", "package/icons/flat/", ".svg", "svg"),
    "fluent_3d": ("@lobehub/fluent-emoji-3d", "package/assets/", ".webp", "raster"),
}

STYLE_LICENCES = {
    "twemoji": "CC-BY-4.0",
    "noto": "Apache-2.0",
    "openmoji": "CC-BY-SA-4.0",
    "openmoji_black": "CC-BY-SA-4.0",
    "fluent_flat": "MIT",
    "fluent_3d": "MIT",
}

STYLE_COPYRIGHT = {
    "twemoji": "Twemoji graphics (c) Twitter/X Corp and contributors, CC-BY 4.0",
    "noto": "Noto Emoji (c) Google, Apache-2.0",
    "openmoji": "OpenMoji (openmoji.org), CC BY-SA 4.0",
    "openmoji_black": "OpenMoji (openmoji.org), CC BY-SA 4.0",
    "fluent_flat": "Fluent Emoji (c) Microsoft, MIT",
    "fluent_3d": "Fluent Emoji (c) Microsoft, MIT",
}

# Hand aliases: codepoint -> file stem in fluentui-emoji's icons/flat folder, for
# emoji whose Fluent file name does not follow from OpenMoji's CLDR annotation
# (Fluent uses older or different CLDR names). Filled in from the build's
# "fluent name not found" report. Emoji 16.0 additions and the family/couple
# emoji 1F46A-1F46D, 1F48F, 1F491 have no Fluent file at all and are dropped.
FLUENT_FLAT_ALIASES = {
    "1F917": "hugging-face",                 # CLDR: smiling face with open hands
    "1F635": "knocked-out-face",             # CLDR: face with crossed-out eyes
    "1F621": "pouting-face",                 # CLDR: enraged face (1F620 is angry-face)
    "1F53A": "red-triangle",                 # CLDR: red triangle pointed up
    "1F959": "stuffedbread-flat",            # CLDR: stuffed flatbread
    "1F471": "person-blonde-hair-default",   # CLDR: person: blond hair
    "1F9CF": "person-deaf-default",          # CLDR: deaf person
    "1F9B8": "person-superhero-default",     # CLDR: superhero
    "1F9B9": "person-supervillain-default",  # CLDR: supervillain
    "1F9D9": "person-mage-default",          # CLDR: mage
    "1F9DA": "person-fairy-default",         # CLDR: fairy
    "1F9DB": "person-vampire-default",       # CLDR: vampire
    "1F9DC": "person-merpeople-default",     # CLDR: merperson
    "1F9DD": "person-elf-default",           # CLDR: elf
    "1F9DE": "person-genie",                 # CLDR: genie
    "1F9DF": "person-zombie",                # CLDR: zombie
    "1F46F": "person-with-bunny-ears",       # CLDR: people with bunny ears
    "1F93C": "person-wrestling",             # CLDR: people wrestling
}

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO_ROOT / ".cache" / "npm"
DEFAULT_OUT_DIR = REPO_ROOT / "data"

FE0F = 0xFE0F
# SVGs are rendered at RENDER_FACTOR x the output size (at least MIN_RENDER px).
RENDER_FACTOR = 4
MIN_RENDER = 128
# A pixel counts as content when some channel is below this (after compositing
# on white); a drawing with fewer content pixels than EMPTY_FRACTION of its
# canvas counts as empty.
WHITE_LEVEL = 250
EMPTY_FRACTION = 0.002
# The style's median content box spans this fraction of the output frame: a
# 15% margin, so that the larger half of each style is not clipped (OpenMoji
# and Fluent vary much more in size than Twemoji and Noto, which nearly always
# fill their canvas).
FILL = 0.85


class BuildError(RuntimeError):
    """A clear, user-facing build failure."""


# --------------------------------------------------------------------------- helpers


def parse_codepoints(text: str) -> tuple[int, ...] | None:
    """'2764-FE0F' / '2764-fe0f' / '00a9' -> (0x2764,) / (0xA9,); None if not hex."""
    parts = re.split(r"[-_ ]", text.strip())
    try:
        cps = tuple(int(p, 16) for p in parts if p)
    except ValueError:
        return None
    cps = tuple(c for c in cps if c != FE0F)
    return cps or None


def codepoints_to_hex(cps: tuple[int, ...]) -> str:
    """(0x1F600,) -> '1F600'; (0xA9,) -> '00A9' (upper case, at least 4 digits)."""
    return "-".join("%04X" % c for c in cps)


def normalise_codepoints(text: str) -> str:
    """'2764-fe0f' -> '2764'; '1f600' -> '1F600'."""
    cps = parse_codepoints(text)
    if cps is None:
        raise ValueError(f"not a codepoint sequence: {text!r}")
    return codepoints_to_hex(cps)


def cldr_slug(name: str) -> str:
    """CLDR short name -> fluentui-emoji file stem: 'piñata' -> 'pinata',
    "man's shoe" -> 'mans-shoe', 'flag: Japan' -> 'flag-japan'."""
    s = unicodedata.normalize("NFKD", name)
    s = "".join(ch for ch in s if not unicodedata.combining(ch))
    s = s.lower()
    s = re.sub(r"[\"'\u2018\u2019\u201c\u201d]", "", s)
    s = re.sub(r"[^a-z0-9]+", "-", s)
    return s.strip("-")


def fluent_stem_candidates(hexcode: str, cldr_name: str) -> list[str]:
    """File stems to try, in order, for one emoji in fluentui-emoji's flat folder."""
    if hexcode in FLUENT_FLAT_ALIASES:
        return [FLUENT_FLAT_ALIASES[hexcode]]
    slug = cldr_slug(cldr_name)
    return [slug, slug + "-default"]


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> str:
    """Write ``arrays`` to an .npz byte-for-byte deterministically and atomically.

    Members are in alphabetical order, stamped 1980-01-01, deflated. Returns the
    file's sha256 (hex)."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for name in sorted(arrays):
                arr = np.asarray(arrays[name])
                if arr.dtype == object:
                    raise TypeError(f"array {name!r} has dtype object; use a fixed-width dtype")
                buf = io.BytesIO()
                np.lib.format.write_array(buf, arr, allow_pickle=False)
                info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue())
    return file_digest(path)


# --------------------------------------------------------------------------- fetching


def tarball_name(name: str, version: str) -> str:
    """The file name ``npm pack`` gives: '@twemoji/svg' -> 'twemoji-svg-15.0.0.tgz'."""
    return name.lstrip("@").replace("/", "-") + "-" + version + ".tgz"


def fetch_package(name: str, cache_dir: str | os.PathLike) -> Path:
    """Return the path of the verified tarball of pinned package ``name``."""
    version, sha1 = PACKAGES[name]
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / tarball_name(name, version)
    if path.exists():
        if file_digest(path, "sha1") == sha1:
            return path
        print(f"  cached {path.name} has the wrong sha1; fetching it again", flush=True)
        path.unlink()
    npm = shutil.which("npm")
    if npm is None:
        raise BuildError(
            "npm was not found on PATH. Install Node.js (which includes npm) to build "
            "the sticker set; it is used only to download the pinned packages with `npm pack`.")
    spec = f"{name}@{version}"
    print(f"  npm pack {spec}", flush=True)
    proc = subprocess.run(
        [npm, "pack", spec, "--pack-destination", str(cache_dir), "--json"],
        capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"`npm pack {spec}` failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
    try:
        fname = json.loads(proc.stdout)[0]["filename"]
        got_path = cache_dir / Path(fname).name
        if got_path != path and got_path.exists():
            os.replace(got_path, path)
    except (ValueError, KeyError, IndexError):
        pass
    if not path.exists():
        raise BuildError(f"`npm pack {spec}` did not produce {path}")
    got = file_digest(path, "sha1")
    if got != sha1:
        path.unlink()
        raise BuildError(
            f"sha1 mismatch for {spec}: expected {sha1}, got {got}. "
            f"The cached file {path} was removed; check the pin or try again.")
    return path


def read_members(tgz: Path, wanted) -> dict[str, bytes]:
    """Read, in one sequential pass, the regular files for which ``wanted(name)`` is true."""
    out = {}
    with tarfile.open(tgz, "r:gz") as tf:
        for member in tf:
            if member.isfile() and wanted(member.name):
                out[member.name] = tf.extractfile(member).read()
    return out


def read_one(tgz: Path, member: str) -> bytes:
    got = read_members(tgz, lambda n: n == member)
    if member not in got:
        raise BuildError(f"file {member!r} is missing from {tgz.name}")
    return got[member]


# --------------------------------------------------------------------------- rendering


def _to_rgb_on_white(kind: str, data: bytes, render_px: int):
    """Decode/render one drawing and composite it on white -> PIL RGB image."""
    from PIL import Image

    if kind == "svg":
        import resvg_py

        png = resvg_py.svg_to_bytes(svg_string=data.decode("utf-8"), width=render_px,
                                    height=render_px, skip_system_fonts=True)
        im = Image.open(io.BytesIO(bytes(png)))
    else:
        im = Image.open(io.BytesIO(data))
    im = im.convert("RGBA")
    white = Image.new("RGBA", im.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, im).convert("RGB")


def _measure(task):
    """-> (content fraction, symmetric half-extent about the centre / half canvas)."""
    kind, data, render_px = task
    im = _to_rgb_on_white(kind, data, render_px)
    a = np.asarray(im)
    mask = a.min(axis=2) < WHITE_LEVEL
    frac = float(mask.mean())
    if not mask.any():
        return frac, 0.0
    h, w = mask.shape
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    cx, cy = w / 2.0, h / 2.0
    ext = max((cx - xs[0]) / cx, (xs[-1] + 1 - cx) / cx, (cy - ys[0]) / cy, (ys[-1] + 1 - cy) / cy)
    return frac, float(ext)


def _final(task):
    """Render, crop/pad a square of half-side ``half`` (fraction of half canvas)
    about the canvas centre, Lanczos-resize to size x size -> uint8 array."""
    from PIL import Image

    kind, data, render_px, half, size = task
    im = _to_rgb_on_white(kind, data, render_px)
    w, h = im.size
    cx, cy = w / 2.0, h / 2.0
    hx, hy = half * cx, half * cy
    pad = 0
    if hx > cx or hy > cy:
        pad = int(np.ceil(max(hx - cx, hy - cy))) + 1
        big = Image.new("RGB", (w + 2 * pad, h + 2 * pad), (255, 255, 255))
        big.paste(im, (pad, pad))
        im = big
    box = (cx + pad - hx, cy + pad - hy, cx + pad + hx, cy + pad + hy)
    out = im.resize((size, size), Image.Resampling.LANCZOS, box=box)
    return np.asarray(out, dtype=np.uint8).copy()


def _pmap(fn, tasks, workers):
    if workers <= 1 or len(tasks) < 64:
        return [fn(t) for t in tasks]
    import multiprocessing as mp

    with mp.get_context().Pool(workers) as pool:
        return pool.map(fn, tasks, chunksize=32)


# --------------------------------------------------------------------------- licences


def write_notices(out_dir: Path, tarballs: dict[str, Path], n_emoji: int | None = None) -> None:
    """Write ``NOTICE`` and ``LICENSES/`` into ``out_dir``."""
    out_dir = Path(out_dir)
    lic = out_dir / "LICENSES"
    lic.mkdir(parents=True, exist_ok=True)
    texts = {"CC-BY-SA-4.0.txt": read_one(tarballs["openmoji"], "package/LICENSE.txt").decode("utf-8")}
    spdx = read_members(tarballs["spdx-license-list"], lambda n: n.startswith("package/licenses/"))
    for ident in ("CC-BY-4.0", "Apache-2.0", "MIT"):
        member = f"package/licenses/{ident}.json"
        if member not in spdx:
            raise BuildError(f"file {member!r} is missing from {tarballs['spdx-license-list'].name}")
        texts[ident + ".txt"] = json.loads(spdx[member])["licenseText"]
    texts["MIT-emoji-datasource.txt"] = read_one(tarballs["emoji-datasource"], "package/LICENSE").decode("utf-8")
    texts["MIT-twemoji-svg-package.txt"] = read_one(tarballs["@twemoji/svg"], "package/license").decode("utf-8")
    texts["MIT-fluentui-emoji-package.txt"] = read_one(tarballs["fluentui-emoji"], "package/LICENSE").decode("utf-8")
    for fname, text in texts.items():
        (lic / fname).write_text(text.rstrip("\n") + "\n", encoding="utf-8")

    def pkg(name):
        return f"{name}@{PACKAGES[name][0]}"

    lines = [
        "Emoji sticker set (data/stickers_*px.npz)",
        "=========================================",
        "",
        "The image arrays are derived from third-party emoji artwork: each drawing was",
        "rasterised, composited on white, scaled (one factor per style) and resized.",
        "Because OpenMoji is licensed CC BY-SA 4.0 (ShareAlike), the shipped array as a",
        "whole is licensed under the Creative Commons Attribution-ShareAlike 4.0",
        "International licence (CC BY-SA 4.0, LICENSES/CC-BY-SA-4.0.txt). Each style",
        "also stays under its own artwork licence and attribution:",
        "",
    ]
    for style in STYLES:
        name = STYLE_SOURCES[style][0]
        lines.append(f"  {style:15s} {pkg(name):32s} {STYLE_LICENCES[style]:13s} {STYLE_COPYRIGHT[style]}")
    lines += [
        "",
        "In short: Twemoji graphics (c) Twitter/X Corp and contributors, CC-BY 4.0;",
        "Noto Emoji (c) Google, Apache-2.0; OpenMoji (openmoji.org), CC BY-SA 4.0;",
        "Fluent Emoji (c) Microsoft, MIT; resized and composited on white.",
        "",
        f"Metadata (codepoints, categories, sort order) comes from {pkg('emoji-datasource')}",
        "(MIT, Copyright (c) 2013 Cal Henderson, LICENSES/MIT-emoji-datasource.txt);",
        f"emoji names are the CLDR annotations shipped in {pkg('openmoji')} (data/openmoji.json).",
        "",
        "Licence texts in LICENSES/: CC-BY-SA-4.0.txt (from the openmoji package),",
        f"CC-BY-4.0.txt, Apache-2.0.txt and MIT.txt (from {pkg('spdx-license-list')}),",
        "and the MIT licences of the npm wrapper packages (emoji-datasource,",
        "@twemoji/svg, fluentui-emoji).",
        "",
        "Rebuild (needs Node.js/npm to download the pinned packages, about a minute):",
        "",
        "    python -m drclib.data.build               # writes data/stickers_32px.npz",
        "    python -m drclib.data.build --size 64     # writes data/stickers_64px.npz",
        "    python -m drclib.data.build --check       # rebuild and compare sha256",
        "",
        "Pinned packages (name@version, sha1 of the npm tarball):",
        "",
    ]
    for name, (ver, sha1) in PACKAGES.items():
        lines.append(f"  {name}@{ver}  {sha1}")
    (out_dir / "NOTICE").write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- build


def build(out_path, size: int = 32, cache_dir=None, workers: int = 2, notices: bool = True,
          verbose: bool = True) -> dict:
    """Build the sticker set into ``out_path``; returns a summary dict."""
    t0 = time.time()
    log = print if verbose else (lambda *a, **k: None)
    out_path = Path(out_path)
    cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    render_px = max(MIN_RENDER, RENDER_FACTOR * size)

    log(f"fetching packages into {cache_dir}")
    tarballs = {name: fetch_package(name, cache_dir) for name in PACKAGES}

    # -- metadata
    emoji_json = json.loads(read_one(tarballs["emoji-datasource"], "package/emoji.json"))
    openmoji_json = json.loads(read_one(tarballs["openmoji"], "package/data/openmoji.json"))
    annotations = {}
    for e in openmoji_json:
        key = parse_codepoints(e["hexcode"])
        if key is not None and key not in annotations:
            annotations[key] = e["annotation"]

    candidates = []
    for e in sorted(emoji_json, key=lambda e: e["sort_order"]):
        key = parse_codepoints(e["unified"])
        if key is None or len(key) != 1 or e["category"] == "Component":
            continue
        candidates.append((key, e))
    cand_keys = {k for k, _ in candidates}
    log(f"{len(candidates)} single-codepoint candidates (outside 'Component')")

    # -- artwork bytes per style: style -> key -> bytes
    sources: dict[str, dict] = {}
    fluent_unmatched = []
    for style in STYLES:
        pkg, prefix, ext, kind = STYLE_SOURCES[style]
        if style == "fluent_flat":
            members = read_members(tarballs[pkg], lambda n: n.startswith(prefix) and n.endswith(ext)
                                   and "/" not in n[len(prefix):])
            by_stem = {n[len(prefix):-len(ext)]: b for n, b in members.items()}
            got = {}
            for key, e in candidates:
                hexcode = codepoints_to_hex(key)
                name = annotations.get(key)
                if name is None:
                    continue
                for stem in fluent_stem_candidates(hexcode, name):
                    if stem in by_stem:
                        got[key] = by_stem[stem]
                        break
                else:
                    fluent_unmatched.append((hexcode, name))
        else:
            def wanted(n, prefix=prefix, ext=ext):
                if not (n.startswith(prefix) and n.endswith(ext)):
                    return False
                stem = n[len(prefix):-len(ext)]
                return "/" not in stem and parse_codepoints(stem) in cand_keys
            members = read_members(tarballs[pkg], wanted)
            got = {}
            for n in sorted(members):
                key = parse_codepoints(n[len(prefix):-len(ext)])
                got.setdefault(key, members[n])
        sources[style] = got

    # -- pass 1: measure every available drawing
    tasks, index = [], []
    for si, style in enumerate(STYLES):
        kind = STYLE_SOURCES[style][3]
        for key, _ in candidates:
            if key in sources[style]:
                tasks.append((kind, sources[style][key], render_px))
                index.append((si, key))
    log(f"measuring {len(tasks)} drawings at {render_px} px with {workers} worker(s)")
    stats = dict(zip(index, _pmap(_measure, tasks, workers)))

    dropped = {style: {"missing": [], "empty": []} for style in STYLES}
    kept = []
    for key, e in candidates:
        ok = True
        for si, style in enumerate(STYLES):
            st = stats.get((si, key))
            hexcode = codepoints_to_hex(key)
            if st is None:
                dropped[style]["missing"].append(hexcode)
                ok = False
            elif st[0] < EMPTY_FRACTION:
                dropped[style]["empty"].append(hexcode)
                ok = False
        if ok:
            kept.append((key, e))
    if not kept:
        raise BuildError("no emoji is present in all six styles")

    # -- one scale per style: median symmetric content extent fills FILL of the frame
    halves = {}
    for si, style in enumerate(STYLES):
        med = float(np.median([stats[(si, key)][1] for key, _ in kept]))
        halves[style] = med / FILL
    clipped = {style: sum(stats[(si, key)][1] > halves[style] * 1.05 for key, _ in kept)
               for si, style in enumerate(STYLES)}
    for si, style in enumerate(STYLES):
        q = np.quantile([stats[(si, key)][1] for key, _ in kept], [0.1, 0.5, 0.9, 0.99, 1.0])
        log(f"  {style:15s} content extent quantiles 10/50/90/99/100%: "
            + " ".join(f"{v:.3f}" for v in q) + f"; clipped >5%: {clipped[style]}")
    log("per-style crop (half side / half canvas): "
        + ", ".join(f"{s} {halves[s]:.3f}" for s in STYLES))

    # -- pass 2: final images
    tasks = []
    for style in STYLES:
        kind = STYLE_SOURCES[style][3]
        for key, _ in kept:
            tasks.append((kind, sources[style][key], render_px, halves[style], size))
    log(f"rendering {len(tasks)} images at {size} px")
    imgs = _pmap(_final, tasks, workers)
    E = len(kept)
    images = np.stack(imgs).reshape(len(STYLES), E, size, size, 3).astype(np.uint8)

    arrays = {
        "images": images,
        "styles": np.array(STYLES, dtype=str),
        "style_packages": np.array(
            [f"{STYLE_SOURCES[s][0]}@{PACKAGES[STYLE_SOURCES[s][0]][0]}" for s in STYLES], dtype=str),
        "style_licences": np.array([STYLE_LICENCES[s] for s in STYLES], dtype=str),
        "style_copyright": np.array([STYLE_COPYRIGHT[s] for s in STYLES], dtype=str),
        "codepoints": np.array([codepoints_to_hex(k) for k, _ in kept], dtype=str),
        "chars": np.array(["".join(chr(c) for c in k) for k, _ in kept], dtype=str),
        "names": np.array([annotations[k].lower() for k, _ in kept], dtype=str),
        "categories": np.array([e["category"] for _, e in kept], dtype=str),
        "subcategories": np.array([e["subcategory"] for _, e in kept], dtype=str),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "image_size": np.array(size, dtype=np.int64),
    }
    digest = write_npz(out_path, arrays)
    if notices:
        write_notices(out_path.parent, tarballs)

    per_cat = {}
    for _, e in kept:
        per_cat[e["category"]] = per_cat.get(e["category"], 0) + 1
    summary = {
        "out": str(out_path),
        "size": size,
        "candidates": len(candidates),
        "kept": E,
        "dropped": len(candidates) - E,
        "per_category": per_cat,
        "dropped_per_style": {s: {r: len(v) for r, v in d.items()} for s, d in dropped.items()},
        "dropped_codepoints": {s: d for s, d in dropped.items()},
        "fluent_name_not_found": fluent_unmatched,
        "crop_half": halves,
        "clipped_over_5pct": clipped,
        "sha256": digest,
        "bytes": out_path.stat().st_size,
        "seconds": round(time.time() - t0, 1),
    }
    log(format_summary(summary))
    return summary


def format_summary(s: dict) -> str:
    lines = [f"candidates {s['candidates']}, kept {s['kept']}, dropped {s['dropped']}",
             "kept per category: " + ", ".join(f"{k} {v}" for k, v in s["per_category"].items()),
             "dropped per style (an emoji can count in several styles):"]
    for style, d in s["dropped_per_style"].items():
        lines.append(f"  {style:15s} missing {d['missing']:4d}  empty {d['empty']:3d}"
                     + (f"  empty: {' '.join(s['dropped_codepoints'][style]['empty'])}" if d["empty"] else ""))
    lines.append(f"wrote {s['out']} ({s['bytes']} bytes) in {s['seconds']} s")
    lines.append(f"sha256 {s['sha256']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m drclib.data.build",
        description=(
            "Build the emoji sticker set data/stickers_{size}px.npz.\n\n"
            "Downloads the pinned npm packages with `npm pack` (needs Node.js/npm; the\n"
            "tarballs are sha1-verified and cached), renders every single-codepoint emoji\n"
            "present in all six styles (twemoji, noto, openmoji, openmoji_black,\n"
            "fluent_flat, fluent_3d) on white, and writes a byte-for-byte deterministic\n"
            ".npz plus NOTICE and LICENSES/ next to it. Takes about a minute."),
        epilog=(
            "examples:\n"
            "  python -m drclib.data.build              # data/stickers_32px.npz\n"
            "  python -m drclib.data.build --size 64    # data/stickers_64px.npz\n"
            "  python -m drclib.data.build --check      # verify the shipped file rebuilds identically\n"
            "  python -m drclib.data.build --ranking    # rewrite data/concept_ranking.json\n"
            "Exit status: 0 ok, 1 --check mismatch, 2 build error (npm missing, sha1 mismatch, ...)."),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None,
                   help="output .npz (default: <repo>/data/stickers_{size}px.npz)")
    p.add_argument("--size", type=int, default=32, help="image side in pixels (default: 32)")
    p.add_argument("--cache", default=None,
                   help=f"folder for the npm tarballs (default: {DEFAULT_CACHE})")
    p.add_argument("--workers", type=int, default=2, help="render processes, 1 = no multiprocessing (default: 2); the result does not depend on it")
    p.add_argument("--check", action="store_true",
                   help="rebuild into a temporary file and compare its sha256 with the existing "
                        "--out file; exit 1 on mismatch (the existing file is not changed)")
    p.add_argument("--ranking", action="store_true",
                   help="only recompute the concept-set rule's ranking of the shipped array and write "
                        "data/concept_ranking.json (drclib.data.concepts; about 5 s)")
    args = p.parse_args(argv)
    if args.ranking:
        from drclib.data.concepts import write_ranking
        from drclib.data.stickers import StickerSet

        print(f"wrote {write_ranking(StickerSet.load())}")
        return 0
    out = Path(args.out) if args.out else DEFAULT_OUT_DIR / f"stickers_{args.size}px.npz"
    try:
        if args.check:
            if not out.exists():
                print(f"--check: {out} does not exist", file=sys.stderr)
                return 1
            with tempfile.TemporaryDirectory() as td:
                s = build(Path(td) / out.name, size=args.size, cache_dir=args.cache,
                          workers=args.workers, notices=False)
            want = file_digest(out)
            if s["sha256"] != want:
                print(f"MISMATCH: rebuilt sha256 {s['sha256']} != {out} sha256 {want}", file=sys.stderr)
                return 1
            print(f"OK: rebuild matches {out} (sha256 {want})")
            return 0
        build(out, size=args.size, cache_dir=args.cache, workers=args.workers)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
