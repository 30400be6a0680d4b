"""The semantic encoder (drclib.backbone.encoder): shapes, the caption parts, training, the probe,
saving, bad input, and the shipped encoder's probe figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drclib.backbone.encoder import (EncoderConfig, EncoderTrainConfig, SemanticEncoder, caption_parts, linear_probe,
                            train_encoder)


def test_tokens_shape_and_grid():
    enc = SemanticEncoder(EncoderConfig(n_words=5, dim=24, widths=(8, 16, 16)))
    out = enc(torch.rand(3, 3, 32, 32))
    assert out.shape == (3, 64, 24)
    e, s = enc.image_embedding(out)
    assert e.shape == s.shape == (3, enc.config.embed_dim)
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_tokens_follow_the_grid():
    """A change in one corner of the image changes the tokens near that corner most."""
    enc = SemanticEncoder(EncoderConfig(n_words=5, widths=(8, 16, 16))).eval()
    x = torch.ones(1, 3, 32, 32)
    y = x.clone()
    y[..., :4, :4] = 0
    diff = (enc(x) - enc(y)).norm(dim=-1).view(8, 8)
    assert diff[0, 0] > diff[7, 7]


def test_bad_input():
    enc = SemanticEncoder(EncoderConfig(n_words=5, widths=(8, 16, 16)))
    with pytest.raises(ValueError):
        enc(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        enc(torch.rand(2, 3, 32, 32) * 255)
    with pytest.raises(ValueError, match="widths"):
        EncoderConfig(widths=(8, 16))


def test_caption_parts(tiny_stickers):
    vocab, parts = caption_parts(tiny_stickers)
    words, lengths = parts["emoji"]
    assert words.shape[0] == tiny_stickers.n_emoji and parts["style"][0].shape[0] == tiny_stickers.n_styles
    first = [vocab[i] for i in words[0, :lengths[0]]]
    assert first == f"a sticker of {tiny_stickers.names[0]}".split()
    assert [vocab[i] for i in parts["style"][0][2, :parts["style"][1][2]]] == ["in", tiny_stickers.styles[2], "style"]


def test_training_learns_and_gradients_reach_the_text_side(tiny_stickers):
    from drclib.data import heldout_cells

    cells = np.argwhere(~heldout_cells(tiny_stickers))[:96]
    enc, hist = train_encoder(tiny_stickers, cells, EncoderTrainConfig(steps=40, batch_size=32, lr=3e-3),
                              config=EncoderConfig(n_words=len(caption_parts(tiny_stickers)[0]), widths=(8, 16, 16),
                                                   dim=16, embed_dim=16), progress=False)
    assert np.mean(hist["loss"][-5:]) < np.mean(hist["loss"][:5])
    assert not enc.training
    assert enc.training_info["vocab"][0] == "<pad>"


def test_style_weight_scales_the_style_part(tiny_stickers):
    """style_weight 0 leaves the style part untrained: the style text side gets no gradient
    (weight decay aside), so its word embeddings of "in <style> style" stay where they started."""
    from drclib.data import heldout_cells

    cells = np.argwhere(~heldout_cells(tiny_stickers))[:64]
    small = EncoderConfig(n_words=len(caption_parts(tiny_stickers)[0]), widths=(8, 16, 16), dim=16, embed_dim=16)
    vocab, parts = caption_parts(tiny_stickers)
    only_style = sorted(set(parts["style"][0].flatten().tolist()) - set(parts["emoji"][0].flatten().tolist()) - {0})
    moved = {}
    for w in (0.0, 4.0):
        torch.manual_seed(0)
        start = SemanticEncoder(small).word_emb.weight[only_style].clone()
        enc, _ = train_encoder(tiny_stickers, cells, EncoderTrainConfig(steps=6, batch_size=32, weight_decay=0.0,
                                                                        style_weight=w), config=small, progress=False)
        moved[w] = float((enc.word_emb.weight[only_style] - start).abs().max())
    assert moved[0.0] == 0.0 and moved[4.0] > 1e-4
    with pytest.raises(ValueError, match="style_weight"):
        train_encoder(tiny_stickers, cells, EncoderTrainConfig(steps=1, style_weight=-1.0), config=small, progress=False)


def test_linear_probe_separates_separable_data():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 10, generator=g) * 3
    y = torch.arange(4).repeat(30)
    x = centers[y] + torch.randn(120, 10, generator=g) * 0.3
    r = linear_probe(x[:80], y[:80], x[80:], y[80:])
    assert r["test_acc"] > 0.95 and r["n_classes"] == 4
    noise = linear_probe(torch.randn(80, 10, generator=g), y[:80], torch.randn(40, 10, generator=g), y[80:])
    assert noise["test_acc"] < 0.6


def test_save_and_load_round_trip(tmp_path):
    enc = SemanticEncoder(EncoderConfig(n_words=7, widths=(8, 16, 16))).eval()
    enc.save_pretrained(tmp_path / "enc")
    back = SemanticEncoder.from_pretrained(tmp_path / "enc")
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(enc(x), back(x), atol=1e-6)


def test_shipped_encoder_reproduces_its_card():
    """The shipped encoder's probe on the mini set (real stickers) is what its card says."""
    from drclib.backbone import encoder as enc_mod
    from drclib.data import StickerSet

    enc = enc_mod.load_default()
    card = enc.training_info["probes"]["mini"]
    got = enc_mod.probe_features(enc, StickerSet.load(concepts="mini"))
    assert abs(got["real_emoji"] - card["real_emoji"]) < 1e-6 and abs(got["real_style"] - card["real_style"]) < 1e-6


def test_two_stacks_keep_the_parts_apart():
    """With ``style_widths`` the style stack fills the last ``style_dim`` channels of each token:
    the emoji part's loss reaches only the emoji stack, the style part's only the style stack."""
    torch.manual_seed(0)
    enc = SemanticEncoder(EncoderConfig(n_words=10, widths=(8, 16, 16), dim=24, embed_dim=8,
                                        style_widths=(8, 8, 16), style_dim=8))
    tokens = enc(torch.rand(3, 3, 32, 32))
    assert tokens.shape == (3, 64, 24)
    for part, (reached, untouched) in {0: (enc.net, enc.style_net), 1: (enc.style_net, enc.net)}.items():
        enc.zero_grad(set_to_none=True)
        enc.image_embedding(enc(torch.rand(3, 3, 32, 32)))[part].sum().backward()
        assert all(q.grad is None or q.grad.abs().sum() == 0 for q in untouched.parameters())
        assert any(q.grad is not None and q.grad.abs().sum() > 0 for q in reached.parameters())
    with pytest.raises(ValueError, match="style_dim"):
        EncoderConfig(dim=16, style_widths=(8, 8, 8), style_dim=12)
    with pytest.raises(ValueError, match="style_widths"):
        EncoderConfig(style_widths=(8, 8))
