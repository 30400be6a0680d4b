"""drclib.backbone.tinyclip: the kit's tiny CLIP (open_clip classes): shapes, scores, training, save/load."""

import numpy as np
import pytest
import torch

from drclib.checkpoint import CheckpointError
from drclib.backbone.tinyclip import TinyCLIP, caption_variants, default_checkpoint_dir, evaluate_tinyclip, train_tinyclip

SMALL = dict(vision_layers=1, text_layers=1, vision_width=64, text_width=64, embed_dim=32)


@pytest.fixture(scope="module")
def clip(tiny_stickers):
    torch.manual_seed(0)
    return TinyCLIP.from_stickers(tiny_stickers, **SMALL).eval()


def test_tokenize_layout(clip):
    ids = clip.tokenize(["a sticker of thing number 2", "a sticker in noto style"])
    assert ids.shape == (2, 24) and (ids[:, 0] == clip.text_tokenizer.bos_token_id).all()
    assert (ids == 3).sum(1).tolist() == [1, 1]  # one <eos> each, padding after it
    long = clip.tokenize(" ".join(["sticker"] * 100))
    assert long.shape == (1, 24) and long[0, -1] == 3
    with pytest.raises(ValueError, match="non-empty"):
        clip.tokenize([])


def test_scores_shapes_and_ranges(clip, tiny_stickers):
    img = tiny_stickers.batch(np.array([[0, 1], [2, 3], [4, 5]]), as_torch=True)
    cs = clip.clip_score(img, ["a sticker of thing number 1"] * 3)
    assert cs.shape == (3,) and (cs.abs() <= 100 + 1e-3).all()
    cis = clip.image_score(img, img)
    torch.testing.assert_close(cis, torch.full((3,), 100.0), atol=1e-3, rtol=0)
    assert clip.encode_image(img).norm(dim=-1).allclose(torch.ones(3), atol=1e-5)


@pytest.mark.parametrize("bad, msg", [
    (torch.zeros(2, 3, 16, 16), "images must be float"),
    (torch.zeros(2, 32, 32, 3), "images must be float"),
    (torch.full((1, 3, 32, 32), 2.0), r"\[0, 1\]"),
    (torch.full((1, 3, 32, 32), float("nan")), "finite"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "images must be float"),
])
def test_bad_images(clip, bad, msg):
    with pytest.raises(ValueError, match=msg):
        clip.encode_image(bad)


def test_mismatched_pairs(clip, tiny_stickers):
    img = tiny_stickers.batch(np.array([[0, 1], [2, 3]]), as_torch=True)
    with pytest.raises(ValueError, match="2 images but 1 texts"):
        clip.clip_score(img, ["x"])
    with pytest.raises(ValueError, match="pairs must match"):
        clip.image_score(img, img[:1])


def test_training_lowers_loss_and_gradients_reach_both_towers(tiny_stickers):
    cells = np.argwhere(np.ones((6, 12), bool))
    model, h = train_tinyclip(tiny_stickers, cells, epochs=8, batch_size=24, lr=3e-3, progress=False,
                              bf16=False, **SMALL)
    assert np.mean(h["loss"][-3:]) < np.mean(h["loss"][:3])
    model.train()
    img = tiny_stickers.batch(cells[:8], as_torch=True)
    txt = model.tokenize([caption_variants(tiny_stickers.names[e], tiny_stickers.styles[s])[0] for s, e in cells[:8]])
    model(img, txt).backward()
    assert model.model.visual.conv1.weight.grad.abs().sum() > 0
    assert model.model.token_embedding.weight.grad.abs().sum() > 0
    r = evaluate_tinyclip(model.eval(), tiny_stickers, cells)
    assert set(r) >= {"style_acc", "emoji_top1", "emoji_top5", "cs_matching"} and 0 <= r["emoji_top1"] <= 1
    with pytest.raises(ValueError, match="cells"):
        train_tinyclip(tiny_stickers, cells[:1], epochs=1, progress=False)


def test_save_load_round_trip(clip, tiny_stickers, tmp_path):
    clip.save_pretrained(tmp_path / "c", dtype=torch.float16)
    back = TinyCLIP.from_pretrained(tmp_path / "c")
    img = tiny_stickers.batch(np.array([[0, 1]]), as_torch=True)
    torch.testing.assert_close(back.encode_image(img), clip.encode_image(img), atol=2e-2, rtol=0)
    assert torch.equal(back.tokenize("a sticker"), clip.tokenize("a sticker"))
    with pytest.raises(CheckpointError, match="no checkpoint folder"):
        TinyCLIP.from_pretrained(tmp_path / "none")


@pytest.mark.skipif(not (default_checkpoint_dir() / "config.json").is_file(), reason="no shipped tiny CLIP yet")
def test_shipped_tinyclip_reproduces_its_card(shipped_stickers):
    from drclib.data import heldout_cells
    from drclib.backbone.tinyclip import load_default

    model = load_default()
    card = model.training_info["metrics"]["heldout"]
    cells = np.argwhere(heldout_cells(shipped_stickers))
    r = evaluate_tinyclip(model, shipped_stickers, cells)
    assert abs(r["style_acc"] - card["style_acc"]) < 0.02       # fp16 storage may move a few decisions
    assert abs(r["emoji_top1"] - card["emoji_top1"]) < 0.02
