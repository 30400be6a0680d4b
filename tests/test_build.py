"""Tests for drclib.data.build.

The fast tests check the pure helpers and need no network. The full rebuild is
opt-in: set DRC_TEST_BUILD=1 (it needs npm and the package registry, and takes
about a minute).
"""
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from drclib.data import build as B

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "data" / "stickers_32px.npz"


def test_codepoint_normalisation():
    assert B.normalise_codepoints("2764-FE0F") == "2764"
    assert B.normalise_codepoints("1f600") == "1F600"
    assert B.normalise_codepoints("a9") == "00A9"
    assert B.normalise_codepoints("0023-fe0f-20e3") == "0023-20E3"
    assert B.parse_codepoints("263a-fe0f") == (0x263A,)
    assert B.parse_codepoints("grinning-face") is None


def test_cldr_slug_and_fluent_keys():
    assert B.cldr_slug("grinning face") == "grinning-face"
    assert B.cldr_slug("piñata") == "pinata"
    assert B.cldr_slug("man\u2019s shoe") == "mans-shoe"
    assert B.cldr_slug("flag: Japan") == "flag-japan"
    assert B.cldr_slug("A button (blood type)") == "a-button-blood-type"
    assert B.fluent_stem_candidates("1F44D", "thumbs up") == ["thumbs-up", "thumbs-up-default"]
    # hand alias wins over the CLDR name
    assert B.fluent_stem_candidates("1F917", "smiling face with open hands") == ["hugging-face"]
    for code, stem in B.FLUENT_FLAT_ALIASES.items():
        assert B.normalise_codepoints(code) == code and stem == B.cldr_slug(stem)


def test_tarball_name():
    assert B.tarball_name("@twemoji/svg", "15.0.0") == "twemoji-svg-15.0.0.tgz"
    assert B.tarball_name("openmoji", "17.0.0") == "openmoji-17.0.0.tgz"


def test_constants():
    assert B.STYLES == ("twemoji", "noto", "openmoji", "openmoji_black", "fluent_flat", "fluent_3d")
    for style in B.STYLES:
        assert B.STYLE_SOURCES[style][0] in B.PACKAGES
        assert style in B.STYLE_LICENCES and style in B.STYLE_COPYRIGHT


def test_write_npz_deterministic(tmp_path):
    arrays = {
        "b": np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        "a": np.array(["x", "yz"], dtype=str),
        "n": np.array(1, dtype=np.int64),
    }
    h1 = B.write_npz(tmp_path / "one.npz", arrays)
    h2 = B.write_npz(tmp_path / "two.npz", dict(reversed(list(arrays.items()))))
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    assert h1 == h2 == hashlib.sha256((tmp_path / "one.npz").read_bytes()).hexdigest()
    with np.load(tmp_path / "one.npz", allow_pickle=False) as d:
        assert d.files == ["a", "b", "n"]
        np.testing.assert_array_equal(d["b"], arrays["b"])
        assert d["a"].dtype.kind == "U" and list(d["a"]) == ["x", "yz"]
        assert int(d["n"]) == 1
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob("*.tmp"))
    with pytest.raises(TypeError):
        B.write_npz(tmp_path / "bad.npz", {"o": np.array([1, "a"], dtype=object)})


@pytest.mark.skipif(os.environ.get("DRC_TEST_BUILD") != "1",
                    reason="opt-in: set DRC_TEST_BUILD=1 (needs npm and the registry, about a minute)")
def test_rebuild_matches_shipped(tmp_path):
    assert SHIPPED.exists(), f"{SHIPPED} is missing"
    out = tmp_path / "stickers_32px.npz"
    summary = B.build(out, size=32, workers=2, verbose=False)
    with np.load(out, allow_pickle=False) as new, np.load(SHIPPED, allow_pickle=False) as old:
        assert sorted(new.files) == sorted(old.files)
        for name in old.files:
            np.testing.assert_array_equal(new[name], old[name], err_msg=name)
        assert new["images"].shape == (6, summary["kept"], 32, 32, 3)
        assert int(new["format_version"]) == B.FORMAT_VERSION
    assert summary["sha256"] == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
