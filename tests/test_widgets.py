"""drclib.widgets, headless: set the controls, click, read the outputs; errors land in the
status line, not as exceptions."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from drclib.data import make_dataset
from drclib.widgets import DRCWidget, png_bytes
from tests.conftest import tiny_pipeline


@pytest.fixture(scope="module")
def ui(tiny_stickers):
    data = make_dataset(tiny_stickers, "quick", seed=0, n_users=8)
    return DRCWidget(tiny_pipeline(tiny_stickers), tiny_stickers, data, split="sample", part="train",
                     strip_alphas=(0.0, 0.5, 1.0))


def decode(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png))


def test_generate_shows_an_image(ui):
    ui.alpha_m.value = 0.3
    ui.seed.value = 4
    ui.generate_button.click()
    assert ui.status.value.startswith("generated with alpha_m 0.30")
    assert decode(ui.result.value).size == (128, 128)


def test_history_is_editable_and_an_empty_one_is_an_error_message(ui):
    assert len(ui.history_toggles) == 5 and len(ui.current_history()) == 5
    ui.history_toggles[0].value = False
    assert len(ui.current_history()) == 4
    for t in ui.history_toggles:
        t.value = False
    before = ui.result.value
    ui.generate_button.click()                                   # no exception escapes
    assert "history is empty" in ui.status.value and ui.result.value == before
    for t in ui.history_toggles:
        t.value = True


def test_switching_user_rebuilds_the_history(ui):
    ui.sample.value = ui.sample.options[1][1]
    hist = ui.data.samples.history[ui.sample.value]
    assert [t.description for t in ui.history_toggles] == [ui.stickers.names[e][:14] for _, e in hist]


def test_reference_search_and_upload(ui):
    ui.search.value = "number 1"
    assert ui.emoji.options and all("number 1" in name for name, _ in ui.emoji.options)
    ui.emoji.value = ui.emoji.options[0][1]
    ui.ref_style.value = 2
    np.testing.assert_array_equal(ui.current_reference(), ui.stickers.images[2, ui.emoji.value])
    ui.use_upload.value = True
    ui.uploaded = None
    ui.generate_button.click()
    assert "no image uploaded" in ui.status.value
    rgba = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 4), dtype=np.uint8), "RGBA")
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    ui._on_upload({"x.png": {"content": memoryview(buf.getvalue())}})
    assert ui.use_upload.value and ui.generate()
    ui.uploaded = b"not an image"
    assert not ui.generate() and "cannot identify" in ui.status.value.lower()
    ui.use_upload.value = False


def test_alpha_strip(ui):
    ui.strip_button.click()
    assert len(ui.strip_box.children) == 3 and "strip over 3" in ui.status.value


def test_png_bytes_accepts_tensor_and_array():
    assert decode(png_bytes(torch.rand(3, 32, 32))).size == (64, 64)
    assert decode(png_bytes(np.zeros((32, 32, 3), np.uint8), 32)).size == (32, 32)
