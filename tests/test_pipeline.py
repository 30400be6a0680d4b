"""drclib.pipeline: images in any form, the call, batches, seeds, the alpha sweep, saving and
loading, and clear errors for bad input (empty history, alpha outside [0, 1], unreadable
images, NaN arrays, mismatched parts)."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from drclib.backbone import PocketLMM
from drclib.checkpoint import CheckpointError
from drclib.drc import DRC
from drclib.pipeline import ALPHAS, DRCPipeline, load_image
from tests.conftest import TINY_LMM, tiny_pipeline

LMM = TINY_LMM


@pytest.fixture(scope="module")
def parts(tiny_stickers):
    p = tiny_pipeline(tiny_stickers, lora=True)
    return p.drc, p.lmm, p.tokenizer


@pytest.fixture(scope="module")
def pipe(parts):
    return DRCPipeline(*parts)


def sticker(seed=0, size=48, mode="RGB"):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size, size, 4 if mode == "RGBA" else 3), dtype=np.uint8)
    return Image.fromarray(arr, mode)


def test_load_image_accepts_every_form(tmp_path):
    rgba = np.zeros((40, 20, 4), np.uint8)
    rgba[..., 0] = 255                                       # red, fully transparent: white after compositing
    x = load_image(rgba)
    assert x.shape == (3, 32, 32) and torch.allclose(x, torch.ones_like(x))
    gray = load_image(np.full((10, 10), 0.5))
    assert torch.allclose(gray[0], gray[1]) and abs(float(gray.mean()) - 0.5) < 0.01
    path = tmp_path / "a.png"
    sticker(1, 64, "RGBA").save(path)
    assert load_image(path).shape == (3, 32, 32)
    assert load_image(str(path)).shape == (3, 32, 32)
    assert load_image(sticker(2).convert("P")).shape == (3, 32, 32)
    assert load_image(torch.rand(3, 32, 32)).shape == (3, 32, 32)


@pytest.mark.parametrize("bad, err, msg", [
    (np.full((8, 8, 3), np.nan), ValueError, "NaN"),
    (np.full((8, 8, 3), 2.0), ValueError, r"lie in \[0, 1\]"),
    (np.zeros((8, 8, 5), np.uint8), ValueError, "H x W x 3"),
    (np.zeros((0, 8, 3), np.uint8), ValueError, "empty"),
    (42, TypeError, "PIL image, numpy array"),
    ("/no/such/file.png", FileNotFoundError, "does not exist"),
])
def test_load_image_bad_input(bad, err, msg):
    with pytest.raises(err, match=msg):
        load_image(bad)


def test_unreadable_file(tmp_path):
    p = tmp_path / "broken.png"
    p.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="cannot read"):
        load_image(p)


def test_call_returns_pil_images_seeded(pipe):
    hist = [sticker(i) for i in range(3)]
    out = pipe(hist, sticker(9), num_images=2, seed=0)
    assert len(out) == 2 and all(isinstance(im, Image.Image) and im.size == (32, 32) for im in out)
    again = pipe(hist, sticker(9), num_images=2, seed=0, output_type="pt")
    first = pipe(hist, sticker(9), num_images=2, seed=0, output_type="pt")
    torch.testing.assert_close(again, first)
    assert again.shape == (2, 3, 32, 32) and 0 <= float(again.min()) and float(again.max()) <= 1
    g = pipe(hist, sticker(9), text="Create a sticker for me.", greedy=True, output_type="pt")
    assert g.shape == (1, 3, 32, 32)


def test_batch_of_samples_with_different_history_lengths(pipe):
    out = pipe([[sticker(1), sticker(2)], [sticker(3)]], [sticker(4), sticker(5)], seed=0, output_type="pt")
    assert out.shape == (2, 3, 32, 32)
    one = pipe([sticker(3)], sticker(5), seed=0, output_type="pt", greedy=True)
    both = pipe([[sticker(1), sticker(2)], [sticker(3)]], [sticker(4), sticker(5)], output_type="pt", greedy=True)
    torch.testing.assert_close(both[1:], one, atol=1e-5, rtol=1e-4)   # padding does not leak into the other row


@pytest.mark.parametrize("kwargs, err, msg", [
    (dict(history=[]), ValueError, "history is empty"),
    (dict(alpha_m=1.5), ValueError, r"alpha_m must lie in \[0, 1\]"),
    (dict(alpha_s=-0.1), ValueError, r"alpha_s must lie in \[0, 1\]"),
    (dict(alpha_m=float("nan")), ValueError, "alpha_m"),
    (dict(alpha_m="much"), ValueError, "alpha_m must be a number"),
    (dict(num_images=0), ValueError, "num_images"),
    (dict(history=[sticker(0)] * 17), ValueError, "at most 16"),
    (dict(reference=np.full((4, 4, 3), np.inf)), ValueError, "reference: the image array contains NaN"),
    (dict(history=["/missing.png"]), FileNotFoundError, "history: image file"),
    (dict(text=3), TypeError, "text must be"),
    (dict(output_type="numpy"), ValueError, "output_type"),
])
def test_call_bad_input(pipe, kwargs, err, msg):
    args = dict(history=[sticker(0)], reference=sticker(1)) | kwargs
    with pytest.raises(err, match=msg):
        pipe(**args)


def test_sweep_picks_the_best_f1(pipe):
    class Scorer:          # style score falls with alpha_m's index, semantic score rises: F1 peaks in the middle
        calls = 0

        def image_score(self, a, b):
            Scorer.calls += 1
            k = (Scorer.calls - 1) // 2
            return torch.full((len(a),), float(k + 1) if Scorer.calls % 2 else float(len(ALPHAS) - k))

    r = pipe.sweep([sticker(0), sticker(1)], sticker(2), scorer=Scorer())
    assert len(r["images"]) == len(ALPHAS) == len(r["f1"])
    assert r["alpha_m"] == r["alphas"][int(np.argmax(r["f1"]))]
    assert 0.3 <= r["alpha_m"] <= 0.7
    with pytest.raises(ValueError, match="one sample"):
        pipe.sweep([[sticker(0)]], [sticker(1)], scorer=Scorer())


def test_save_and_load_roundtrip(parts, tmp_path):
    drc, lmm, tok = parts
    pipe = DRCPipeline(drc, lmm, tok)
    lmm_dir, tok_dir = tmp_path / "lmm", tmp_path / "tok"
    from drclib.pipeline import _base_lmm

    _base_lmm(lmm).save_pretrained(lmm_dir)
    tok.save_pretrained(tok_dir)
    pipe.save_pretrained(tmp_path / "p", copy_base=True)
    back = DRCPipeline.from_pretrained(tmp_path / "p", device="cpu")
    hist, ref = [sticker(0), sticker(1)], sticker(2)
    a = pipe(hist, ref, greedy=True, output_type="pt")
    b = back(hist, ref, greedy=True, output_type="pt")
    assert (a - b).abs().max() < 0.1          # fp16 round trip of the weights
    with pytest.raises(CheckpointError, match="pipeline.json is missing"):
        DRCPipeline.from_pretrained(tmp_path / "nothing")
    (tmp_path / "p" / "pipeline.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        DRCPipeline.from_pretrained(tmp_path / "p")


def test_saving_a_frozen_lmm_removes_stale_adapters(parts, tmp_path):
    """Saved over a folder that holds adapters from an earlier save, a pipeline whose LMM has
    none must not leave them there: loading would put them on the frozen LMM."""
    from drclib.pipeline import _base_lmm

    drc, lmm, tok = parts
    assert lmm.has_lora
    DRCPipeline(drc, lmm, tok).save_pretrained(tmp_path / "p", copy_base=True)
    assert (tmp_path / "p" / "lora").is_dir()
    DRCPipeline(drc, _base_lmm(lmm), tok).save_pretrained(tmp_path / "p", copy_base=True)
    assert not (tmp_path / "p" / "lora").exists()
    assert not DRCPipeline.from_pretrained(tmp_path / "p", device="cpu").lmm.has_lora


def test_parts_that_do_not_belong_together(parts, tiny_stickers):
    drc, lmm, tok = parts
    other = PocketLMM.from_stickers(tiny_stickers, n_visual=16, **LMM)
    with pytest.raises(CheckpointError, match="visual codes"):
        DRCPipeline(drc, other, tok)
    wide = DRC(dataclasses.replace(drc.config, dim=64, heads=4))
    with pytest.raises(CheckpointError, match="width"):
        DRCPipeline(wide, lmm, tok)


def test_stage1_model_works_without_masks(parts):
    drc, lmm, tok = parts
    s1 = DRC(dataclasses.replace(drc.config, mask_generator=False)).eval()
    out = DRCPipeline(s1, lmm, tok)([sticker(0), sticker(1)], sticker(2), greedy=True, output_type="pt")
    assert out.shape == (1, 3, 32, 32)


def test_evaluate_personalization_scores_each_sample(pipe, tiny_stickers):
    from drclib import judges
    from drclib.data import make_dataset
    from drclib.pipeline import evaluate_personalization

    data = make_dataset(tiny_stickers, "quick", seed=0, n_users=6)
    style = judges.StickerClassifier(judges.default_config("style", 6)).eval()
    emoji = judges.StickerClassifier(judges.default_config("emoji", tiny_stickers.n_emoji)).eval()
    test = data.splits["sample"].train[:5]
    r = evaluate_personalization(pipe, tiny_stickers, data.samples, test, style, emoji, keep_images=2)
    assert r["n"] == 5 and r["images"].shape == (2, 3, 32, 32)
    for k in ("style_acc", "emoji_top1", "emoji_top5", "both", "collapse_reference", "collapse_history"):
        assert 0 <= r[k] <= 1
    assert (r["references"][:, 1] == data.samples.target[test[:2], 1]).all()      # a reference shows the target emoji


def test_personalization_rates_by_hand():
    from drclib import judges

    class Fixed(torch.nn.Module):
        def __init__(self, out):
            super().__init__()
            self.out = out
            self.config = type("C", (), {"num_classes": 30})()

        def predict(self, images):
            return self.out

        def topk(self, images, k):
            return None, self.out[:, :k]

    style = Fixed(torch.tensor([0, 2]))
    emoji = Fixed(torch.tensor([[7, 1, 2, 3, 4], [5, 9, 8, 6, 0]]))
    r = judges.personalization_rates(style, emoji, torch.rand(2, 3, 32, 32), np.array([[0, 7], [1, 9]]),
                                      np.array([[3, 7], [2, 9]]), np.array([[[0, 1], [0, 2]], [[1, 5], [-1, -1]]]))
    assert r["style_acc"] == 0.5 and r["emoji_top1"] == 0.5 and r["emoji_top5"] == 1.0 and r["both"] == 0.5
    assert r["collapse_reference"] == 0.5            # row 1 took the reference's style
    assert r["collapse_history"] == 0.5              # row 1 drew emoji 5, a history emoji
