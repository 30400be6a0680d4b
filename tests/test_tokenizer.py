"""drclib.backbone.tokenizer: the diffusers VQModel visual tokenizer (shapes, training, save/load, errors,
held-out cells, and the shipped checkpoint's score)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from drclib.backbone import tokenizer as tkn
from drclib.checkpoint import CheckpointError
from drclib.data import heldout_cells
from drclib.backbone.tokenizer import (TokenizerConfig, VisualTokenizer, codebook_usage, evaluate_tokenizer, psnr,
                              train_tokenizer, training_cells)

TINY = TokenizerConfig(codebook_size=32, block_out_channels=(8, 16, 16), latent_channels=8, vq_embed_dim=8,
                       norm_num_groups=4)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from 2 threads, and lose a lot when another job shares the CPU."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny_tok() -> VisualTokenizer:
    torch.manual_seed(0)
    return VisualTokenizer(TINY).eval()


@pytest.fixture(scope="module")
def trained(tiny_stickers):
    """A tiny tokenizer trained a few steps on a handful of synthetic stickers."""
    exclude = np.ones(tiny_stickers.shape, bool)
    exclude[:, :4] = False  # 24 images
    tok, hist = train_tokenizer(tiny_stickers, config=TINY, epochs=60, batch_size=24, lr=3e-3, seed=0,
                                device="cpu", progress=False, exclude=exclude, log_every=5, threads=1)
    return tok, hist, exclude


def test_config_checks():
    assert TINY.tokens_per_image == 64
    with pytest.raises(ValueError, match="downsampling"):
        TokenizerConfig(block_out_channels=(16, 16))
    with pytest.raises(ValueError, match="norm_num_groups"):
        TokenizerConfig(block_out_channels=(8, 16, 24), norm_num_groups=16)
    with pytest.raises(ValueError, match="multiple of grid"):
        TokenizerConfig(image_size=30)


def test_shapes_dtypes_and_range(tiny_tok):
    x = torch.rand(5, 3, 32, 32)
    codes = tiny_tok.encode(x)
    assert codes.shape == (5, 64) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < tiny_tok.codebook_size == 32
    assert tiny_tok.tokens_per_image == 64
    y = tiny_tok.decode(codes)
    assert y.shape == (5, 3, 32, 32) and y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert not y.requires_grad and not codes.requires_grad
    assert tiny_tok.reconstruct(x).shape == x.shape
    assert torch.equal(tiny_tok.decode(codes.reshape(5, 8, 8)), y)  # an 8 x 8 grid is accepted too
    # batched = one by one
    assert torch.equal(torch.cat([tiny_tok.encode(x[i:i + 1]) for i in range(5)]), codes)
    u8 = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    assert tiny_tok.encode_uint8(u8).shape == (5, 64) and tiny_tok.encode_uint8(u8[0]).shape == (1, 64)
    assert tiny_tok.encode(torch.rand(0, 3, 32, 32)).shape == (0, 64)


@pytest.mark.parametrize("bad, match", [
    (torch.rand(3, 32, 32), "batch axis"),
    (torch.rand(2, 32, 32, 3), "channels last"),
    (torch.rand(2, 1, 32, 32), "1 channels"),
    (torch.rand(2, 3, 16, 16), "16 x 16 pixels"),
    (torch.rand(2, 3, 32, 32) * 2 - 1, r"\(x \+ 1\) / 2"),
    (torch.rand(2, 3, 32, 32) * 255, "divide by 255"),
    (torch.full((1, 3, 32, 32), float("nan")), "NaN"),
    (torch.full((1, 3, 32, 32), float("inf")), "NaN or infinite"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "dtype torch.uint8"),
])
def test_bad_images(tiny_tok, bad, match):
    with pytest.raises(ValueError, match=match):
        tiny_tok.encode(bad)
    with pytest.raises(TypeError, match="torch.Tensor"):
        tiny_tok.encode([[0.0]])


@pytest.mark.parametrize("bad, match", [
    (torch.full((1, 64), 32), r"0\.\.31"),
    (torch.full((1, 64), -1), "out of range"),
    (torch.zeros(1, 63, dtype=torch.long), r"\[B, 64\]"),
    (torch.zeros(64, dtype=torch.long), "batch axis"),
    (torch.zeros(1, 64), "dtype torch.float32"),
])
def test_bad_codes(tiny_tok, bad, match):
    with pytest.raises(ValueError, match=match):
        tiny_tok.decode(bad)


def test_bad_uint8(tiny_tok):
    with pytest.raises(ValueError, match="uint8"):
        tiny_tok.encode_uint8(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="use encode_uint8"):
        tiny_tok.encode(np.zeros((1, 32, 32, 3), np.uint8))


def test_psnr_and_usage():
    a = torch.zeros(2, 3, 4, 4)
    b = a.clone()
    b[1] += 0.1
    p = psnr(a, b)
    assert p.shape == (2,) and p[0] == 100.0 and abs(float(p[1]) - 20.0) < 1e-4
    with pytest.raises(ValueError, match="same shape"):
        psnr(a, b[:1])
    u = codebook_usage(torch.tensor([0, 1, 2, 3]), 8)
    assert u["usage"] == 0.5 and abs(u["perplexity"] - 4.0) < 1e-9
    assert codebook_usage(torch.zeros(10, dtype=torch.long), 8)["perplexity"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="0..7"):
        codebook_usage(torch.tensor([8]), 8)


def test_training_lowers_loss_and_reconstructs(trained, tiny_stickers):
    tok, hist, exclude = trained
    assert hist["n_train_images"] == 24
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    assert hist["psnr"][-1] > hist["psnr"][0] + 3
    assert set(hist) >= {"step", "loss", "recon", "usage", "perplexity", "lr"}
    assert len(hist["step"]) == len(hist["loss"]) == len(hist["usage"])
    cells = np.argwhere(~exclude)
    x = tiny_stickers.batch(cells, as_torch=True)
    got = psnr(tok.reconstruct(x), x).mean()
    assert got > 15.0 and got > hist["psnr"][0] + 3, (got, hist["psnr"][0])
    ev = evaluate_tokenizer(tok, tiny_stickers, cells)
    assert ev["psnr"] == pytest.approx(float(got), abs=1e-4) and 0 < ev["usage"] <= 1 and ev["n_images"] == 24


def test_training_is_seeded(tiny_stickers):
    exclude = np.ones(tiny_stickers.shape, bool)
    exclude[:2, :3] = False
    kw = dict(config=TINY, epochs=3, batch_size=6, seed=3, device="cpu", progress=False, exclude=exclude,
              threads=1, log_every=1)
    a, ha = train_tokenizer(tiny_stickers, **kw)
    b, hb = train_tokenizer(tiny_stickers, **kw)
    assert ha["loss"] == hb["loss"]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_gradients_reach_the_encoder(tiny_stickers):
    torch.manual_seed(0)
    tok = VisualTokenizer(TINY).train()
    x = tiny_stickers.batch(np.array([[0, 0], [1, 5], [2, 9]]), as_torch=True)
    out = tok(x)
    assert out["recon_loss"] == F.mse_loss(out["recon"], x)                       # the squared error by default
    assert tok(x, pixel_loss="l1")["recon_loss"] == F.l1_loss(out["recon"], x)
    out["loss"].backward()
    enc = tok.vq.encoder.conv_in.weight.grad
    assert enc is not None and float(enc.abs().sum()) > 0
    assert float(tok.codebook.grad.abs().sum()) > 0  # the codebook term updates the codes
    assert float(tok.vq.decoder.conv_out.weight.grad.abs().sum()) > 0


def test_style_objective_teaches_the_codes_the_artist(tiny_stickers):
    """``style_weight``: a linear head reads the style from the mean code vector; its loss is logged,
    falls as head and codes learn the artist, reaches the encoder, and is absent (0) at the shipped
    default."""
    exclude = np.ones(tiny_stickers.shape, bool)
    exclude[:, :4] = False  # 24 images, every style
    kw = dict(config=TINY, epochs=40, batch_size=24, lr=3e-3, seed=0, device="cpu", progress=False,
              exclude=exclude, log_every=5, threads=1)
    base, plain = train_tokenizer(tiny_stickers, **kw)
    tok, hist = train_tokenizer(tiny_stickers, style_weight=1.0, **kw)
    assert plain["style"] == [0.0] * len(plain["step"])
    assert hist["style"][0] > 1.7 and hist["style"][-1] < hist["style"][0] - 0.15, hist["style"]  # ln 6 = 1.79
    assert not torch.equal(base.vq.encoder.conv_in.weight, tok.vq.encoder.conv_in.weight)  # it shapes the encoder
    assert tok.training_info["style_weight"] == 1.0 and not any("head" in n for n, _ in tok.named_parameters())
    with pytest.raises(ValueError, match="style_weight"):
        train_tokenizer(tiny_stickers, style_weight=-1.0, **kw)


def test_decoder_of_redraws_the_same_codes(trained, tiny_stickers):
    """``decoder_of``: only ``post_quant_conv`` and the decoder learn (here under the absolute pixel
    error), so every image keeps its codes; the source tokenizer is left as it was."""
    src, _, exclude = trained
    before = {k: v.clone() for k, v in src.state_dict().items()}
    kw = dict(epochs=10, batch_size=24, lr=3e-3, seed=1, device="cpu", progress=False, exclude=exclude, log_every=5,
              threads=1)
    tok, hist = train_tokenizer(tiny_stickers, decoder_of=src, recon="l1", **kw)
    x = tiny_stickers.batch(np.argwhere(~exclude), as_torch=True)
    assert torch.equal(tok.encode(x), src.encode(x)) and hist["restarted"][-1] == 0
    new = tok.state_dict()
    for k, v in before.items():
        assert torch.equal(src.state_dict()[k], v)                                     # the source is untouched
        assert torch.equal(new[k], v) != k.startswith(("vq.post_quant_conv.", "vq.decoder.")), k
    assert tok.training_info["decoder_only"] and tok.training_info["recon"] == "l1"
    with pytest.raises(ValueError, match="config=None"):
        train_tokenizer(tiny_stickers, decoder_of=src, config=TINY, **kw)
    with pytest.raises(ValueError, match="recon"):
        train_tokenizer(tiny_stickers, recon="l2", **kw)


def test_training_excludes_heldout_cells(tiny_stickers, monkeypatch):
    held = heldout_cells(tiny_stickers)
    cells = training_cells(tiny_stickers)
    assert len(cells) == int((~held).sum()) and not held[cells[:, 0], cells[:, 1]].any()
    seen = []
    real = tkn.iterate_batches

    def spy(stickers, cells, batch_size, *, rng):
        for batch, x in real(stickers, cells, batch_size, rng=rng):
            seen.append(batch)
            yield batch, x

    monkeypatch.setattr(tkn, "iterate_batches", spy)
    _, hist = train_tokenizer(tiny_stickers, config=TINY, epochs=1, batch_size=64, max_steps=3, seed=0,
                              device="cpu", progress=False, threads=1)
    seen = np.concatenate(seen)
    assert len(seen) == 3 * 64 and hist["n_train_images"] == len(cells)
    assert not held[seen[:, 0], seen[:, 1]].any()
    # one epoch of the loader yields every training cell once
    epoch = np.concatenate([b for b, _ in real(tiny_stickers, cells, 100, rng=np.random.default_rng(0))])
    n, rest = len(cells), len(cells) % 100
    assert len(epoch) == (n - rest if 0 < rest < 50 else n)  # a last batch under half size is dropped
    assert len(set(map(tuple, epoch))) == len(epoch) and set(map(tuple, epoch)) <= set(map(tuple, cells))
    with pytest.raises(ValueError, match="every cell is excluded"):
        training_cells(tiny_stickers, np.ones(tiny_stickers.shape, bool))
    with pytest.raises(ValueError, match="bool mask"):
        training_cells(tiny_stickers, np.ones((2, 2), bool))


def test_save_load_round_trip_fp16(trained, tiny_stickers, tmp_path):
    tok = trained[0]
    tok.save_pretrained(tmp_path / "tok", dtype=torch.float16, card="# card\n", extra={"metrics": {"psnr": 1.0}})
    back = VisualTokenizer.from_pretrained(tmp_path / "tok")
    assert back.config == tok.config and back.config.block_out_channels == (8, 16, 16)
    assert back.training_info == {"metrics": {"psnr": 1.0}}
    meta = json.loads((tmp_path / "tok" / "config.json").read_text())
    assert meta["kind"] == "VisualTokenizer"
    x = tiny_stickers.batch(np.argwhere(~trained[2]), as_torch=True)
    a, b = tok.encode(x), back.encode(x)
    assert (a == b).float().mean() > 0.98  # fp16 rounding may flip a rare near-tie
    assert torch.allclose(tok.decode(a), back.decode(a), atol=2e-2)


def test_load_default_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(tkn, "default_checkpoint_dir", lambda: tmp_path / "none")
    with pytest.raises(CheckpointError, match="python -m drclib.backbone.tokenizer"):
        tkn.load_default()


def test_cli_tiny(tmp_path, monkeypatch, tiny_stickers):
    monkeypatch.setattr(tkn.StickerSet, "load", classmethod(lambda cls, *a, **k: tiny_stickers))
    real, asked = tkn.train_tokenizer, []

    def tiny(*a, config, **k):                     # the tiny shape, with the codebook the command asked for
        asked.append(config)
        return real(*a, config=dataclasses.replace(TINY, codebook_size=config.codebook_size), **k)

    monkeypatch.setattr(tkn, "train_tokenizer", tiny)
    assert tkn.main(["--max-steps", "2", "--batch-size", "16", "--threads", "1", "--no-progress",
                     "--out", str(tmp_path / "out")]) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert "python -m drclib.backbone.tokenizer --max-steps 2" in card and "held-out" in card
    back = VisualTokenizer.from_pretrained(tmp_path / "out")
    assert set(back.training_info["metrics"]) >= {"train", "heldout", "probe_psnr"}
    assert asked[0] == TokenizerConfig()                                    # the shipped shape by default
    assert tkn.main(["--max-steps", "1", "--batch-size", "16", "--threads", "1", "--no-progress",
                     "--codebook-size", "48", "--out", str(tmp_path / "cb48")]) == 0
    assert asked[1].codebook_size == 48 and VisualTokenizer.from_pretrained(tmp_path / "cb48").codebook_size == 48
    assert tkn.main(["--max-steps", "1", "--batch-size", "16", "--threads", "1", "--no-progress",
                     "--grid", "16", "--out", str(tmp_path / "g16")]) == 0
    assert asked[2].tokens_per_image == 256 and asked[2].block_out_channels == TokenizerConfig().block_out_channels[:2]
    assert tkn.main(["--max-steps", "1", "--batch-size", "16", "--threads", "1", "--no-progress",
                     "--style-weight", "0.5", "--out", str(tmp_path / "sw")]) == 0
    assert "style objective weight 0.5" in (tmp_path / "sw" / "README.md").read_text()
    assert "weight 0.0 (0:" in card                                        # none by default
    with pytest.raises(ValueError, match="codebook_size"):
        tkn.main(["--codebook-size", "1", "--out", str(tmp_path / "bad")])


SHIPPED = tkn.default_checkpoint_dir()


@pytest.mark.skipif(not (SHIPPED / "config.json").is_file(), reason="no shipped tokenizer checkpoint")
def test_shipped_checkpoint_scores_as_recorded(shipped_stickers):
    tok = tkn.load_default()
    recorded = tok.training_info["metrics"]["probe_psnr"]
    cells = tkn.heldout_probe_cells(shipped_stickers)
    assert len(cells) == 64 and heldout_cells(shipped_stickers)[cells[:, 0], cells[:, 1]].all()
    got = evaluate_tokenizer(tok, shipped_stickers, cells)
    assert abs(got["psnr"] - recorded) < 0.5, (got, recorded)
    assert (SHIPPED / "model.safetensors").stat().st_size < 6e6  # about 5 MB (5.3 MB shipped)
    assert "python -m drclib.backbone.tokenizer" in (SHIPPED / "README.md").read_text()


def test_shifted_and_scaled_moves_the_sticker_and_keeps_its_colours(tiny_tok, tiny_stickers):
    """The LMM's pretraining augmentation: same shape and range, white where the sticker moved out,
    seeded, the identity at zero shift and scale; augmented_codes' copy 0 is the plain sticker."""
    x = torch.from_numpy(tiny_stickers.images[0, :4]).permute(0, 3, 1, 2).float() / 255
    a = tkn.shifted_and_scaled(x, torch.Generator().manual_seed(3))
    b = tkn.shifted_and_scaled(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    assert (a - x).abs().max() > 0.05                                  # it moved
    torch.testing.assert_close(tkn.shifted_and_scaled(x, max_shift=0.0, scale=0.0), x, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        tkn.shifted_and_scaled(x[0])
    codes = tkn.augmented_codes(tiny_tok, tiny_stickers, 2, seed=0)
    assert codes.shape == (2, tiny_stickers.n_styles, tiny_stickers.n_emoji, 64)
    assert torch.equal(codes[0, 0, 0], tiny_tok.encode(x[:1].to(tiny_tok.device)).cpu()[0])
