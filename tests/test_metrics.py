"""Tests of drclib.judges: the ground-truth classifiers, StyleSim, FID and the backend checks.

Fast: tiny models on the synthetic sticker set; the shipped checkpoints (if present) are
loaded and re-scored on the held-out cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drclib import judges as M
from drclib.data import images as images_mod
from drclib.judges import classifier as classifier_mod
from drclib.judges import metrics as metrics_mod
from drclib.checkpoint import CheckpointError
from drclib.data.splits import heldout_cells

TINY = dict(widths=(8, 16), dropout=0.0)


def tiny_model(target="style", num_classes=6, seed=0, **kw) -> M.StickerClassifier:
    torch.manual_seed(seed)
    cfg = M.StickerClassifierConfig(num_classes=num_classes, target=target, **{**TINY, **kw})
    return M.StickerClassifier(cfg).eval()


def images(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g)


# ------------------------------------------------------------------ the classifier
def test_shapes():
    m = tiny_model(num_classes=7)
    x = images(3)
    assert m(x).shape == (3, 7)
    assert m.features(x).shape == (3, 16) and m.feature_dim == 16
    maps = m.feature_maps(x)
    assert [tuple(f.shape) for f in maps] == [(3, 8, 32, 32), (3, 16, 16, 16)]
    assert m(x[0]).shape == (1, 7)  # a single [3, H, W] image gets a batch axis


def test_predict_and_topk():
    m = tiny_model(num_classes=10)
    x = images(5)
    proba = m.predict_proba(x)
    assert proba.shape == (5, 10)
    torch.testing.assert_close(proba.sum(-1), torch.ones(5))
    pred = m.predict(x)
    assert pred.dtype == torch.long and pred.shape == (5,)
    p, c = m.topk(x, k=3)
    assert c.shape == (5, 3) and torch.equal(c[:, 0], pred)
    assert (p[:, :-1] >= p[:, 1:]).all()
    with pytest.raises(ValueError, match="k must be"):
        m.topk(x, k=11)


def test_config_validation():
    with pytest.raises(ValueError, match="target"):
        M.StickerClassifierConfig(target="colour")
    with pytest.raises(ValueError, match="norm"):
        M.StickerClassifierConfig(norm="layer")
    gm = M.StickerClassifier(M.StickerClassifierConfig(num_classes=6, widths=(8, 16), norm="group"))
    assert gm(images(2)).shape == (2, 6)


@pytest.mark.parametrize("bad, match", [
    (torch.rand(2, 32, 32, 3), r"\[B, 3, H, W\].*permute"),
    (torch.rand(2, 3, 16, 16), "32 x 32"),
    (torch.rand(2, 3, 32, 32) * 255, r"\[0, 1\].*255"),
    (torch.rand(2, 3, 32, 32) * 2 - 1, r"\[0, 1\].*\(x \+ 1\) / 2"),
    (torch.full((2, 3, 32, 32), float("nan")), "NaN"),
    ((torch.rand(2, 3, 32, 32) * 255).to(torch.uint8), "float"),
    (np.zeros((2, 32, 32, 3), np.uint8), "to_tensor"),
    (torch.rand(0, 3, 32, 32), "empty"),
])
def test_bad_inputs_raise_clear_errors(bad, match):
    m = tiny_model()
    with pytest.raises(ValueError, match=match):
        m.predict(bad)


def test_gradient_flows_to_every_parameter():
    m = tiny_model().train()
    loss = torch.nn.functional.cross_entropy(m(images(8)), torch.arange(8) % 6)
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_augment_keeps_range_and_white_border():
    g = torch.Generator().manual_seed(0)
    x = torch.ones(16, 3, 32, 32)
    x[:, :, 12:20, 12:20] = torch.rand(16, 3, 1, 1)
    for colour in (False, True):
        y = images_mod.augment(x, g, colour=colour)
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
        assert (y[:, :, :2, :2] > 0.85).all()  # the background stays (nearly) white


# ------------------------------------------------------------------ training
class SpyStickers:
    """Wraps a StickerSet and records the cells whose images are fetched."""

    def __init__(self, stickers):
        self.s, self.fetched = stickers, []
        self.shape = stickers.shape

    def batch(self, cells, as_torch=False):
        self.fetched.append(np.asarray(cells).reshape(-1, 2))
        return self.s.batch(cells, as_torch=as_torch)


def test_training_lowers_loss_and_excludes_heldout_cells(tiny_stickers):
    spy = SpyStickers(tiny_stickers)
    cfg = M.StickerClassifierConfig(num_classes=6, target="style", widths=(8, 16), dropout=0.0)
    model, hist = M.train_classifier(spy, "style", epochs=30, batch_size=64, lr=1e-2, seed=0, device="cpu",
                                     progress=False, config=cfg, max_steps=25, augment_strength=0.3)
    assert len(hist["loss"]) == 25 and not model.training
    assert np.mean(hist["loss"][-5:]) < np.mean(hist["loss"][:5]) - 0.1
    held = heldout_cells(tiny_stickers)
    used = np.concatenate(spy.fetched)
    assert len(used) == (~held).sum()
    assert not held[used[:, 0], used[:, 1]].any()  # no held-out cell was ever loaded
    # a custom exclusion mask is honoured too
    spy2 = SpyStickers(tiny_stickers)
    only_two = np.ones(tiny_stickers.shape, bool)
    only_two[:, :2] = False
    M.train_classifier(spy2, "emoji", epochs=1, batch_size=8, seed=0, device="cpu", progress=False,
                       config=M.StickerClassifierConfig(num_classes=120, target="emoji", widths=(8,)),
                       exclude=only_two, max_steps=1)
    assert set(np.concatenate(spy2.fetched)[:, 1]) == {0, 1}


def test_training_is_seeded(tiny_stickers):
    cfg = M.StickerClassifierConfig(num_classes=6, target="style", widths=(8,), dropout=0.0)
    runs = [M.train_classifier(tiny_stickers, "style", epochs=1, batch_size=32, seed=3, device="cpu",
                               progress=False, config=cfg, max_steps=3)[1]["loss"] for _ in range(2)]
    assert runs[0] == runs[1]


def test_training_argument_errors(tiny_stickers):
    with pytest.raises(ValueError, match="target"):
        M.train_classifier(tiny_stickers, "colour", epochs=1, progress=False)
    with pytest.raises(ValueError, match="exclude"):
        M.train_classifier(tiny_stickers, "style", epochs=1, progress=False, exclude=np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="no cell"):
        M.train_classifier(tiny_stickers, "style", epochs=1, progress=False,
                           exclude=np.ones(tiny_stickers.shape, bool))
    with pytest.raises(ValueError, match="config is for"):
        M.train_classifier(tiny_stickers, "emoji", epochs=1, progress=False,
                           config=M.StickerClassifierConfig(num_classes=6, target="style"))


def test_save_load_fp16_round_trip(tmp_path):
    m = tiny_model(num_classes=6, seed=1)
    with torch.no_grad():  # make every weight exactly representable in float16
        for t in m.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    x = images(16, seed=2)
    m.save_pretrained(tmp_path / "ck", dtype=torch.float16, extra={"heldout": {"acc": 0.5}})
    size = (tmp_path / "ck" / "model.safetensors").stat().st_size
    n_float = sum(t.numel() for t in m.state_dict().values() if t.is_floating_point())
    assert size < n_float * 2 + 4096  # stored as float16
    m2 = M.StickerClassifier.from_pretrained(tmp_path / "ck")
    assert m2.config == m.config and m2.training_info == {"heldout": {"acc": 0.5}}
    assert torch.equal(m2.predict(x), m.predict(x))
    torch.testing.assert_close(m2.predict_proba(x), m.predict_proba(x))


def test_load_default_missing_says_how_to_train(monkeypatch, tmp_path):
    monkeypatch.setattr(classifier_mod, "default_checkpoint_dir", lambda name: tmp_path / name)
    with pytest.raises(CheckpointError, match="python -m drclib.judges train --target emoji"):
        M.load_default("emoji_classifier")


def test_default_checkpoint_dir():
    d = M.default_checkpoint_dir("style_classifier")
    assert d.parts[-3:] == ("data", "checkpoints", "style_classifier")
    with pytest.raises(ValueError, match="ships"):
        M.default_checkpoint_dir("vgg")


# ------------------------------------------------------------------ rates
class FixedModel(M.StickerClassifier):
    """Predicts fixed logits (to test classify_rates exactly)."""

    def __init__(self, logits, target):
        super().__init__(M.StickerClassifierConfig(num_classes=logits.shape[1], target=target, widths=(8,)))
        self.fixed = logits

    def forward(self, x, *, checked=False):
        return self.fixed[: len(x)]


def test_classify_rates_exact():
    n = 4
    style_logits = torch.eye(6)[[0, 1, 2, 3]] * 5  # predicts 0, 1, 2, 3
    emoji_logits = torch.zeros(n, 10)
    emoji_logits[torch.arange(n), torch.tensor([5, 6, 7, 8])] = 5
    emoji_logits[:, 9] = 4  # second choice everywhere
    r = M.classify_rates(FixedModel(style_logits, "style"), FixedModel(emoji_logits, "emoji"), images(n),
                         style_labels=[0, 1, 0, 0], emoji_labels=[5, 0, 7, 9])
    assert r == {"style_acc": 0.5, "emoji_top1": 0.5, "emoji_top5": 0.75, "both": 0.25, "n": 4}
    only = M.classify_rates(FixedModel(style_logits, "style"), None, images(n), [0, 1, 2, 3], None)
    assert only == {"style_acc": 1.0, "n": 4}
    with pytest.raises(ValueError, match="entries"):
        M.classify_rates(FixedModel(style_logits, "style"), None, images(n), [0, 1], None)


# ------------------------------------------------------------------ StyleSim and FID
def test_style_sim_zero_for_identical_and_larger_across_styles(tiny_stickers):
    m = tiny_model()
    a = tiny_stickers.batch(np.array([[0, 3], [1, 4]]), as_torch=True)
    assert torch.equal(M.style_sim(m, a, a), torch.zeros(2))
    b = tiny_stickers.batch(np.array([[5, 50], [4, 60]]), as_torch=True)
    assert (M.style_sim(m, a, b) > 0).all()
    hist = tiny_stickers.batch(np.array([[0, 3], [0, 3], [0, 3]]), as_torch=True)
    d = M.style_sim_to_history(m, a, hist)
    assert d.shape == (2,) and d[0] == 0 and d[1] > 0
    per = M.style_sim_to_history(m, a, hist.unsqueeze(0).expand(2, 3, 3, 32, 32))
    torch.testing.assert_close(per, d)
    with pytest.raises(ValueError, match="batch size"):
        M.style_sim(m, a, images(3))
    g = M.gram_matrix(torch.ones(1, 2, 4, 4))
    torch.testing.assert_close(g, torch.full((1, 2, 2), 0.5))


def test_frechet_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 8))
    assert M.frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    shift = M.frechet_distance(a, a + 1.0)
    assert shift == pytest.approx(8.0, rel=1e-4)  # |mu difference|^2, same covariance
    b = rng.normal(size=(400, 8)) * 2
    d = M.frechet_distance(a, b)
    assert d > 1
    # the eigen-decomposition route agrees with scipy's sqrtm
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eig = a.mean(0) - b.mean(0)
    eig = eig @ eig + np.trace(s1) + np.trace(s2) - 2 * metrics_mod._sqrtm_trace_product(s1, s2)
    assert eig == pytest.approx(d, rel=1e-6)
    # torch tensors and rank-deficient sets (fewer samples than dimensions) are fine
    t = torch.randn(10, 32, generator=torch.Generator().manual_seed(0))
    assert M.frechet_distance(t, t) == pytest.approx(0, abs=1e-4)
    with pytest.raises(ValueError, match="same D"):
        M.frechet_distance(a, a[:, :3])
    with pytest.raises(ValueError, match="at least 2"):
        M.frechet_distance(a[:1], a)


def test_fid_on_kit_features(tiny_stickers):
    m = tiny_model()
    x = tiny_stickers.batch(np.stack([np.zeros(40, int), np.arange(40)], 1), as_torch=True)
    y = tiny_stickers.batch(np.stack([np.full(40, 5), np.arange(40, 80)], 1), as_torch=True)
    assert M.fid(m, x, x) == pytest.approx(0, abs=1e-6)
    assert M.fid(m, x, y) > 0


# ------------------------------------------------------------------ pretrained backends
@pytest.fixture
def empty_caches(monkeypatch, tmp_path):
    for k in ("HF_HUB_CACHE", "HF_HOME", "TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def test_backends_unavailable_with_reason_when_no_weights(empty_caches):
    report = M.available_backends()
    for name in ("clip_vit_h14", "dinov2_large", "lpips_vgg", "inception_v3"):
        assert report[name].startswith("unavailable: "), report[name]
    assert "laion--CLIP-ViT-H-14-laion2B-s32B-b79K" in report["clip_vit_h14"]
    assert "facebook--dinov2-large" in report["dinov2_large"]
    assert "vgg16-397923af.pth" in report["lpips_vgg"] and str(empty_caches / "torch") in report["lpips_vgg"]
    assert "inception_v3_google" in report["inception_v3"]
    for load in (M.load_clip, M.load_dino, M.load_lpips, M.load_inception):
        scorer, reason = load()
        assert scorer is None and isinstance(reason, str) and reason
    cols = M.metric_columns(["CIS", "DIS", "LPIPS", "FID"])
    assert cols["CIS"]["backend"] == "clip_vit_h14" and cols["CIS"]["status"].startswith("unavailable")
    with pytest.raises(KeyError, match="unknown metric"):
        M.metric_columns(["XYZ"])


def test_corrupt_cached_weights_are_reported_not_used(empty_caches):
    ck = empty_caches / "torch" / "hub" / "checkpoints"
    ck.mkdir(parents=True)
    (ck / M.INCEPTION_FILE).write_bytes(b"not a checkpoint")
    assert M.available_backends()["inception_v3"].startswith("available")
    scorer, reason = M.load_inception()
    assert scorer is None and "failed to load" in reason
    (ck / M.VGG16_FILE).write_bytes(b"")  # an empty (interrupted) download is not weights
    scorer, reason = M.load_lpips()
    assert scorer is None and "vgg16" in reason
    torch.save({"features.0.weight": torch.zeros(1)}, ck / M.VGG16_FILE)  # the wrong tensors
    scorer, reason = M.load_lpips()
    assert scorer is None and "failed to load" in reason


def test_dino_loads_from_faked_hf_cache(empty_caches):
    """A tiny random DINOv2 saved where the hub cache keeps facebook/dinov2-large: the real
    loading code finds it offline and scores images."""
    from transformers import Dinov2Config, Dinov2Model

    snap = empty_caches / "hf" / "hub" / "models--facebook--dinov2-large" / "snapshots" / "0123abc"
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             image_size=28, patch_size=14)).save_pretrained(snap)
    assert M.available_backends()["dinov2_large"] == f"available: {snap}"
    scorer, reason = M.load_dino()
    assert reason is None and scorer.info.name == "dinov2_large"
    x = images(2)
    s = scorer.dino_image_score(x, x)
    torch.testing.assert_close(s, torch.full((2,), 100.0), atol=1e-3, rtol=0)


def test_cli_backends(capsys, empty_caches):
    assert M.main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "clip_vit_h14" in out and "unavailable" in out


# ------------------------------------------------------------------ the shipped evaluators
@pytest.mark.parametrize("name", M.DEFAULT_NAMES)
def test_shipped_checkpoint_matches_its_card(name, shipped_stickers):
    """The shipped weights still load and score what their card says, on the 685 held-out
    cells (tolerance 0.01: a different CPU/BLAS may flip a few borderline predictions)."""
    folder = M.default_checkpoint_dir(name)
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"no shipped {name} (train it with: {M.train_command(name)})")
    model = M.load_default(name)
    stored = model.training_info["heldout"]
    held = np.argwhere(heldout_cells(shipped_stickers))
    got = M.evaluate_classifier(model, shipped_stickers, held)
    assert got["n"] == stored["n"] == len(held)
    assert got["acc"] == pytest.approx(stored["acc"], abs=0.01)
    if "top5" in stored:
        assert got["top5"] == pytest.approx(stored["top5"], abs=0.01)
    assert (folder / "model.safetensors").stat().st_size < 3_500_000  # about 3 MB (fp16)
    assert "python -m drclib.judges train" in (folder / "README.md").read_text()


def test_shipped_style_classifier_gives_meaningful_style_sim(shipped_stickers):
    folder = M.default_checkpoint_dir("style_classifier")
    if not (folder / "model.safetensors").is_file():
        pytest.skip("no shipped style classifier")
    model = M.load_default("style_classifier")
    rng = np.random.default_rng(0)
    e1, e2 = rng.choice(shipped_stickers.n_emoji, 40, replace=False), rng.choice(shipped_stickers.n_emoji, 40)
    s1 = rng.integers(0, 6, 40)
    s2 = (s1 + rng.integers(1, 6, 40)) % 6
    anchor = shipped_stickers.batch(np.stack([s1, e1], 1), as_torch=True)
    same_style = shipped_stickers.batch(np.stack([s1, e2], 1), as_torch=True)  # other emoji
    same_emoji = shipped_stickers.batch(np.stack([s2, e1], 1), as_torch=True)  # other style
    assert M.style_sim(model, anchor, same_style).mean() < M.style_sim(model, anchor, same_emoji).mean()


def test_cli_train_writes_checkpoint_with_card(monkeypatch, tmp_path, tiny_stickers, capsys):
    import json

    from drclib.data import stickers as stickers_mod

    monkeypatch.setattr(stickers_mod.StickerSet, "load", classmethod(lambda cls, *a, **k: tiny_stickers))
    out = tmp_path / "style"
    assert M.main(["train", "--target", "style", "--epochs", "1", "--widths", "8", "--threads", "1",
                   "--out", str(out), "--quiet", "--note", "a test"]) == 0
    card = (out / "README.md").read_text()
    assert "python -m drclib.judges train --target style" in card and "held-out" in card and "a test" in card
    meta = json.loads((out / "config.json").read_text())
    extra = meta["extra"]
    assert extra["heldout"]["n"] == heldout_cells(tiny_stickers).sum()
    assert extra["train_cells"]["n"] == (~heldout_cells(tiny_stickers)).sum()
    assert 0 <= extra["heldout"]["acc"] <= 1 and extra["train_time_s"] >= 0
    m = M.StickerClassifier.from_pretrained(out)
    assert m.config.widths == (8,) and m.training_info["epochs"] == 1
    assert "heldout" in capsys.readouterr().out


def test_cli_train_takes_the_share_of_reconstructions(monkeypatch, tmp_path, tiny_stickers):
    from drclib.data import stickers as stickers_mod
    from drclib.judges import cli

    monkeypatch.setattr(stickers_mod.StickerSet, "load", classmethod(lambda cls, *a, **k: tiny_stickers))
    seen = []
    monkeypatch.setattr(cli, "_tokenizer_reconstructor", lambda args: lambda x: seen.append(len(x)) or x.clamp(0.05, 0.95))
    out = tmp_path / "style_rt"
    assert M.main(["train", "--target", "style", "--epochs", "1", "--widths", "8", "--threads", "1", "--out", str(out),
                   "--quiet", "--with-reconstructions", "--reconstruct-prob", "1.0"]) == 0
    assert seen and "all of the training images replaced by their reconstruction" in (out / "README.md").read_text()
    assert "--reconstruct-prob 1.0" in M.StickerClassifier.from_pretrained(out).training_info["command"]
    with pytest.raises(ValueError, match="reconstruct_prob"):
        M.main(["train", "--target", "style", "--epochs", "1", "--widths", "8", "--threads", "1",
                "--out", str(tmp_path / "bad"), "--quiet", "--with-reconstructions", "--reconstruct-prob", "2"])
    assert not (tmp_path / "bad").exists()                # nothing half-written


def test_training_on_reconstructions_calls_the_reconstructor(tiny_stickers):
    cfg = M.StickerClassifierConfig(num_classes=6, target="style", widths=(8,), dropout=0.0)
    seen = []

    def fake_tokenizer_round_trip(x):
        seen.append(x.shape[0])
        return (x * 0.9 + 0.05).clamp(0, 1)  # a "blurry" decoder

    M.train_classifier(tiny_stickers, "style", epochs=1, batch_size=32, seed=0, device="cpu", progress=False,
                       config=cfg, max_steps=2, reconstructor=fake_tokenizer_round_trip)
    assert sum(seen) == (~heldout_cells(tiny_stickers)).sum()   # every training image, once, up front
    with pytest.raises(ValueError, match="reconstruct_prob"):
        M.train_classifier(tiny_stickers, "style", epochs=1, seed=0, device="cpu", progress=False, config=cfg,
                           max_steps=1, reconstructor=fake_tokenizer_round_trip, reconstruct_prob=1.5)
    with pytest.raises(ValueError, match="reconstructor returned"):
        M.train_classifier(tiny_stickers, "style", epochs=1, seed=0, device="cpu", progress=False, config=cfg,
                           max_steps=1, reconstructor=lambda x: x[:, :1])
