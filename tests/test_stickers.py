"""drclib.data.stickers: the shipped sticker set and the StickerSet loader, bad files included."""

import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from drclib.data import STYLES, DataFileError, StickerSet, to_tensor
from drclib.data.stickers import FORMAT_VERSION, SHIPPED_SHA256, default_path
from drclib.io import file_digest


def _save(path, s: StickerSet, **override):
    arrays = dict(images=s.images, styles=np.array(s.styles), style_packages=np.array(s.style_packages),
                  style_licences=np.array(s.style_licences), style_copyright=np.array(s.style_copyright),
                  codepoints=np.array(s.codepoints), chars=np.array(s.chars), names=np.array(s.names),
                  categories=np.array(s.categories), subcategories=np.array(s.subcategories),
                  format_version=np.int64(FORMAT_VERSION), image_size=np.int64(s.image_size))
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez_compressed(path, **arrays)
    return path


# ------------------------------------------------------------------ the shipped file
def test_shipped_file_has_six_styles_and_enough_emoji(shipped_stickers):
    s = shipped_stickers
    assert s.styles == list(STYLES)
    assert s.images.shape[0] == 6 and s.n_emoji >= 1300
    assert s.images.shape[2:] == (32, 32, 3) and s.images.dtype == np.uint8
    assert len(set(s.codepoints)) == s.n_emoji  # one image a codepoint
    assert {"Smileys & Emotion", "Animals & Nature", "Food & Drink"} <= set(s.categories)
    assert "Component" not in s.categories
    assert all(s.style_licences) and all(s.style_packages)
    # on white: corners are (nearly) white, and no image is blank
    corners = s.images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.median(corners) >= 250
    non_white = (s.images.reshape(6, s.n_emoji, -1) < 250).mean(axis=2)
    assert non_white.min() > 0.02  # (white heart and white squares are light but not blank)


def test_shipped_sha256_is_recorded_and_matches():
    path = default_path()
    assert SHIPPED_SHA256[path.name] != "PENDING"
    assert file_digest(path) == SHIPPED_SHA256[path.name]


def test_shipped_file_loads_without_pickle():
    with np.load(default_path(), allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_lookup_by_name_char_and_codepoint(shipped_stickers):
    s = shipped_stickers
    i = s.emoji_index("grinning face")
    assert s.emoji_index("😀") == i == s.emoji_index("1f600") == s.emoji_index("U+1F600")
    assert s.emoji_index("Grinning_Face") == i
    assert s.image("noto", "grinning face").shape == (32, 32, 3)
    assert "grinning face" in s.describe(i)


# ------------------------------------------------------------------ StickerSet API
def test_images_as_numpy_torch_and_pil(tiny_stickers):
    s = tiny_stickers
    arr = s.image(1, 3)
    assert arr.dtype == np.uint8 and arr.shape == (32, 32, 3)
    with pytest.raises(ValueError):
        arr[0, 0, 0] = 1  # read-only view: the dataset cannot be edited by accident
    t = s.tensor("noto", 3)
    assert t.shape == (3, 32, 32) and t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1
    assert torch.allclose(t, torch.from_numpy(np.array(arr)).permute(2, 0, 1).float() / 255)
    im = s.pil(1, 3)
    assert isinstance(im, Image.Image) and im.mode == "RGB" and im.size == (32, 32)
    assert np.array_equal(np.array(im), arr)


def test_batch_gathers_cells(tiny_stickers):
    cells = np.array([[[0, 1], [5, 7]], [[2, 2], [3, 0]]])
    out = tiny_stickers.batch(cells)
    assert out.shape == (2, 2, 32, 32, 3)
    assert np.array_equal(out[0, 1], tiny_stickers.images[5, 7])
    assert tiny_stickers.batch(cells, as_torch=True).shape == (2, 2, 3, 32, 32)
    with pytest.raises(IndexError, match="out of range"):
        tiny_stickers.batch(np.array([[-1, 0]]))
    with pytest.raises(ValueError, match="pairs"):
        tiny_stickers.batch(np.array([1, 2, 3]))


def test_category_filters_and_search(tiny_stickers):
    s = tiny_stickers
    food = s.emoji_in("Food & Drink")
    assert len(food) > 0 and all(s.categories[i] == "Food & Drink" for i in food)
    both = s.emoji_in(["Food & Drink", "Objects"], subcategories="sub0")
    assert all(s.subcategories[i] == "sub0" for i in both)
    assert s.category_names[0] == "Smileys & Emotion"
    assert s.search("Number 77") == [77]
    assert s.search("thing 7") == [7, 17, 27, 37, 47, 57, 67, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79,
                                   87, 97, 107, 117]  # every word is a substring of the name
    assert s.search("") == []
    with pytest.raises(KeyError, match="unknown category"):
        s.emoji_in("Dinosaurs")


@pytest.mark.parametrize("bad, exc, msg", [
    (99, IndexError, "style index 99 out of range"),
    ("comic sans", KeyError, "unknown style 'comic sans'"),
])
def test_bad_style_keys(tiny_stickers, bad, exc, msg):
    with pytest.raises(exc, match=msg):
        tiny_stickers.style_index(bad)


def test_bad_emoji_keys_suggest_names(tiny_stickers):
    with pytest.raises(IndexError, match="out of range"):
        tiny_stickers.emoji_index(10_000)
    with pytest.raises(KeyError, match="did you mean 'thing number 1'"):
        tiny_stickers.emoji_index("number 1")
    with pytest.raises(KeyError, match="search"):
        tiny_stickers.emoji_index("unicorn")


def test_constructor_rejects_bad_arrays(tiny_stickers):
    s = tiny_stickers
    meta = dict(styles=s.styles, codepoints=s.codepoints, chars=s.chars, names=s.names,
                categories=s.categories, subcategories=s.subcategories)
    with pytest.raises(ValueError, match="uint8"):
        StickerSet(s.images.astype(np.float32), **meta)
    with pytest.raises(ValueError, match="uint8"):
        StickerSet(s.images[..., :1], **meta)   # grayscale
    with pytest.raises(ValueError, match="names has"):
        StickerSet(s.images, **{**meta, "names": s.names[:-1]})


def test_to_tensor_rejects_wrong_input():
    with pytest.raises(ValueError, match="uint8"):
        to_tensor(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        to_tensor(np.zeros((4, 4, 4), np.uint8))  # RGBA


# ------------------------------------------------------------------ bad files
def test_round_trip_through_a_file(tmp_path, tiny_stickers):
    loaded = StickerSet.load(_save(tmp_path / "s.npz", tiny_stickers))
    assert np.array_equal(loaded.images, tiny_stickers.images)
    assert loaded.names == tiny_stickers.names and loaded.path == tmp_path / "s.npz"


def test_missing_file_names_file_and_rebuild_command(tmp_path):
    with pytest.raises(DataFileError, match=r"nope\.npz is missing.*drclib\.data\.build"):
        StickerSet.load(tmp_path / "nope.npz")


def test_truncated_file(tmp_path, tiny_stickers):
    path = _save(tmp_path / "s.npz", tiny_stickers)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFileError, match=r"s\.npz is unreadable.*truncated.*drclib\.data\.build"):
        StickerSet.load(path)


def test_not_a_zip_at_all(tmp_path):
    path = tmp_path / "s.npz"
    path.write_text("hello")
    with pytest.raises(DataFileError, match="unreadable"):
        StickerSet.load(path)


def test_wrong_version(tmp_path, tiny_stickers):
    path = _save(tmp_path / "s.npz", tiny_stickers, format_version=np.int64(FORMAT_VERSION + 1))
    with pytest.raises(DataFileError, match=f"format version {FORMAT_VERSION + 1}.*drclib\\.data\\.build"):
        StickerSet.load(path)


def test_missing_arrays(tmp_path, tiny_stickers):
    path = _save(tmp_path / "s.npz", tiny_stickers, names=None)
    with pytest.raises(DataFileError, match=r"lacks arrays \['names'\]"):
        StickerSet.load(path)


def test_pickled_arrays_are_refused(tmp_path, tiny_stickers):
    path = _save(tmp_path / "s.npz", tiny_stickers, names=np.array(tiny_stickers.names, dtype=object))
    with pytest.raises(DataFileError, match="unreadable"):
        StickerSet.load(path)


def test_modified_shipped_file_fails_the_sha_check(tmp_path, monkeypatch):
    src = default_path()
    copy = tmp_path / src.name
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(copy, "w") as zout:
        for item in zin.infolist():  # same arrays, other bytes (no compression)
            zout.writestr(item.filename, zin.read(item.filename))
    with pytest.raises(DataFileError, match="sha256.*git checkout"):
        StickerSet.load(copy)
    assert StickerSet.load(copy, verify=False).n_emoji >= 1300
