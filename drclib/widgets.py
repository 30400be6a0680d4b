"""Widget-driven inference (notebook 06): pick a user, pick a reference, slide alpha_m, generate.

Core ipywidgets controls only (they work in JupyterLab, classic Notebook and Colab). All the
logic lives here so it can be tested headlessly: set the controls' values, call
``button.click()``, read ``status.value`` and the output images' PNG bytes.

>>> ui = DRCWidget(pipe, stickers, data)          # doctest: +SKIP
>>> ui                                            # doctest: +SKIP  (displays the app)
"""

from __future__ import annotations

import io

import numpy as np
import torch

THUMB = 64
"""Pixel size at which the widget shows a 32 px sticker (nearest-neighbour upscale)."""


def png_bytes(image, size: int = THUMB) -> bytes:
    """PNG bytes of a PIL image, a float tensor ``[3, H, W]`` in [0, 1] or a uint8 ``[H, W, 3]`` array."""
    from PIL import Image

    if isinstance(image, torch.Tensor):
        from drclib.pipeline import to_pil

        image = to_pil(image[None])[0]
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB").resize((size, size), Image.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class DRCWidget:
    """The interactive app: a sample's history (each image can be switched off), a reference
    (search by emoji name and pick a style, or upload an image), alpha_m and alpha_s sliders, a
    seed, Generate, and an alpha_m strip from 0 to 1. Errors appear in ``status``, never as a
    traceback."""

    def __init__(self, pipe, stickers, data, *, split: str = "sample", part: str = "test", max_samples: int = 200,
                 strip_alphas=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0)):
        import ipywidgets as W

        self.pipe, self.stickers, self.data = pipe, stickers, data
        self.strip_alphas = tuple(strip_alphas)
        idx = data.splits[split][part][:max_samples]
        if len(idx) == 0:
            raise ValueError(f"split {split!r} has no {part} samples")
        self.sample_ids = [int(i) for i in idx]
        s = data.samples
        options = [(f"sample {i}: user {s.user[i]}, prefers {stickers.styles[s.style[i]]}", i) for i in self.sample_ids]
        self.sample = W.Dropdown(options=options, description="user", layout=W.Layout(width="420px"))
        self.history_box = W.HBox()
        self.history_toggles: list = []
        self.search = W.Text(placeholder="search an emoji name, e.g. cat", description="reference")
        self.emoji = W.Dropdown(options=[], description="emoji", layout=W.Layout(width="360px"))
        self.ref_style = W.Dropdown(options=[(name, i) for i, name in enumerate(stickers.styles)],
                                    description="drawn by")
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="upload")
        self.use_upload = W.Checkbox(value=False, description="use the uploaded image")
        self.ref_view = W.Image(format="png", width=THUMB, height=THUMB)
        self.alpha_m = W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="alpha_m",
                                     continuous_update=False)
        self.alpha_s = W.FloatSlider(value=0.2, min=0.0, max=1.0, step=0.05, description="alpha_s",
                                     continuous_update=False)
        self.seed = W.IntText(value=0, description="seed")
        self.generate_button = W.Button(description="Generate", button_style="primary")
        self.strip_button = W.Button(description="alpha_m strip")
        self.result = W.Image(format="png", width=2 * THUMB, height=2 * THUMB)
        self.strip_box = W.HBox()
        self.status = W.HTML(value="")
        self.uploaded: bytes | None = None

        self.sample.observe(lambda _: self._show_history(), names="value")
        self.search.observe(lambda _: self._search(), names="value")
        self.emoji.observe(lambda _: self._show_reference(), names="value")
        self.ref_style.observe(lambda _: self._show_reference(), names="value")
        self.upload.observe(lambda ch: self._on_upload(ch["new"]), names="value")
        self.use_upload.observe(lambda _: self._show_reference(), names="value")
        self.generate_button.on_click(lambda _: self.generate())
        self.strip_button.on_click(lambda _: self.strip())

        self._show_history()
        target = s.target[self.sample.value]
        self.search.value = stickers.names[int(target[1])]
        self.emoji.value = int(target[1])
        self.ref_style.value = int(s.references[self.sample.value][0][0])
        self._show_reference()
        self.app = W.VBox([
            self.sample, W.HTML("<b>history</b> (untick an image to leave it out)"), self.history_box,
            W.HBox([W.VBox([self.search, self.emoji, self.ref_style, W.HBox([self.upload, self.use_upload])]),
                    self.ref_view]),
            W.HBox([self.alpha_m, self.alpha_s, self.seed]),
            W.HBox([self.generate_button, self.strip_button]), self.status, self.result, self.strip_box])

    def _ipython_display_(self):
        from IPython.display import display

        display(self.app)

    # ------------------------------------------------------------------ state
    def _show_history(self) -> None:
        import ipywidgets as W

        hist = self.data.samples.history[self.sample.value]
        self.history_toggles = []
        items = []
        for s, e in hist:
            img = W.Image(value=png_bytes(self.stickers.images[s, e]), format="png", width=THUMB, height=THUMB)
            tog = W.Checkbox(value=True, description=self.stickers.names[e][:14], indent=False,
                             layout=W.Layout(width="110px"))
            self.history_toggles.append(tog)
            items.append(W.VBox([img, tog]))
        self.history_box.children = items

    def _search(self) -> None:
        q = self.search.value.strip().lower()
        names = self.stickers.names
        hits = [i for i, n in enumerate(names) if q and q in n.lower()][:50]
        self.emoji.options = [(names[i], i) for i in hits]
        if hits and self.emoji.value not in hits:
            self.emoji.value = hits[0]

    def _on_upload(self, value) -> None:
        try:
            files = list(value.values()) if isinstance(value, dict) else list(value)
            if files:
                content = files[0]["content"]
                self.uploaded = bytes(content.tobytes() if hasattr(content, "tobytes") else content)
                self.use_upload.value = True
                self._show_reference()
        except Exception as e:  # noqa: BLE001 - shown to the user, not raised
            self._error(f"could not read the upload: {e}")

    def current_history(self) -> list:
        hist = self.data.samples.history[self.sample.value]
        return [self.stickers.images[s, e] for (s, e), t in zip(hist, self.history_toggles) if t.value]

    def current_reference(self):
        from PIL import Image

        if self.use_upload.value:
            if self.uploaded is None:
                raise ValueError("no image uploaded yet: use the upload button, or untick 'use the uploaded image'")
            return Image.open(io.BytesIO(self.uploaded))
        if self.emoji.value is None:
            raise ValueError("no reference emoji: type part of a name in the search box and pick one")
        return self.stickers.images[int(self.ref_style.value), int(self.emoji.value)]

    def _show_reference(self) -> None:
        try:
            self.ref_view.value = png_bytes(self.current_reference())
        except Exception:  # noqa: BLE001 - nothing to show yet
            self.ref_view.value = b""

    @property
    def message(self) -> str:
        """The status line as plain text."""
        import html
        import re

        return html.unescape(re.sub(r"<[^>]+>", "", self.status.value)).strip()

    def _error(self, message: str) -> None:
        self.status.value = f"<span style='color:#b00'>&#9888; {message}</span>"

    # ------------------------------------------------------------------ actions
    def generate(self) -> bool:
        """Generate one image for the current controls; returns whether it worked."""
        try:
            img = self.pipe(self.current_history(), self.current_reference(), alpha_m=self.alpha_m.value,
                            alpha_s=self.alpha_s.value, seed=int(self.seed.value), num_images=1)[0]
        except Exception as e:  # noqa: BLE001 - every failure becomes a message in the app
            self._error(str(e))
            return False
        self.result.value = png_bytes(img, 2 * THUMB)
        self.status.value = (f"generated with alpha_m {self.alpha_m.value:.2f}, alpha_s {self.alpha_s.value:.2f}, "
                             f"seed {int(self.seed.value)}")
        return True

    def strip(self) -> bool:
        """Generate the same inputs at every alpha_m of ``strip_alphas``, left to right."""
        import ipywidgets as W

        try:
            hist, ref = self.current_history(), self.current_reference()
            images = [self.pipe(hist, ref, alpha_m=a, alpha_s=self.alpha_s.value, seed=int(self.seed.value))[0]
                      for a in self.strip_alphas]
        except Exception as e:  # noqa: BLE001
            self._error(str(e))
            return False
        self.strip_box.children = [W.VBox([W.Image(value=png_bytes(im), format="png", width=THUMB, height=THUMB),
                                           W.HTML(f"alpha_m {a:.1f}")]) for im, a in zip(images, self.strip_alphas)]
        self.status.value = f"alpha_m strip over {len(images)} values"
        return True


__all__ = ["DRCWidget", "png_bytes", "THUMB"]
