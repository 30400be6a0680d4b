"""The baselines of the paper's Table 2 (drclib.baselines): prompt layout, the shared call
signature, Pigeon's masks and their gradient, training, saving and loading, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drclib.backbone import IMG, IMG_END, SEP, PocketLMM
from drclib.baselines import (InterleavedConfig, InterleavedPipeline, InterleavedPrompter, ReferencePipeline,
                              load_baseline)
from drclib.checkpoint import CheckpointError
from drclib.data import make_dataset
from drclib.train import Stage2Config, train_baseline
from tests.conftest import TINY_LMM, tiny_pipeline


@pytest.fixture(scope="module")
def parts(tiny_stickers):
    base = tiny_pipeline(tiny_stickers, lora=True)
    return base.lmm, base.tokenizer


def _pipe(parts, masks: bool, method="pigeon"):
    lmm, tok = parts
    torch.manual_seed(0)
    return InterleavedPipeline(InterleavedPrompter(InterleavedConfig(dim=lmm.config.hidden_size, mask_generator=masks)),
                               lmm, tok, method=method)


def _images(stickers, cells):
    return list(stickers.batch(np.asarray(cells), as_torch=True))


def test_prompt_layout_and_padding(parts):
    lmm, _ = parts
    pr = InterleavedPrompter(InterleavedConfig(dim=lmm.config.hidden_size))
    hist = torch.randint(0, 32, (2, 3, 64))
    mask = torch.tensor([[True, True, True], [True, False, False]])
    ref = torch.randint(0, 32, (2, 64))
    emb, attn = pr.prompt(lmm, hist, mask, ref, ["make it", None])
    # row 0: text + 3 * (64 + 2) + <sep> + 66; row 1 has two images fewer and no text: left-padded
    assert attn[0].sum() - attn[1].sum() == 2 * 66 + len(lmm.text_ids("make it"))
    assert attn[1, 0] == 0 and attn[:, -1].all()
    e = lmm.embed(torch.tensor([IMG, IMG_END, SEP]))
    assert torch.allclose(emb[1, -1], e[1], atol=1e-5) and torch.allclose(emb[1, -66], e[0], atol=1e-5)
    assert torch.allclose(emb[1, -67], e[2], atol=1e-5)
    assert torch.allclose(emb[1, -65:-1], lmm.visual_embeddings(ref[1:2])[0], atol=1e-5)


def test_pigeon_masks_follow_alpha_and_zero_tokens(parts):
    lmm, _ = parts
    pr = InterleavedPrompter(InterleavedConfig(dim=lmm.config.hidden_size, mask_generator=True)).eval()
    hist = torch.randint(0, 32, (1, 2, 64))
    ref = torch.randint(0, 32, (1, 64))
    emb, _ = pr.prompt(lmm, hist, torch.ones(1, 2, dtype=torch.bool), ref, None, alpha_s=0.0, alpha_m=0.75)
    ref_tokens = emb[0, -65:-1]
    zeroed = (ref_tokens.abs().sum(-1) == 0).sum().item()
    assert zeroed == 64 - max(1, int(64 * 0.25))          # 48 of 64 reference tokens masked
    emb0, _ = pr.prompt(lmm, hist, torch.ones(1, 2, dtype=torch.bool), ref, None, alpha_s=0.0, alpha_m=0.0)
    assert (emb0[0, -65:-1].abs().sum(-1) == 0).sum() == 0


def test_same_signature_as_drc_and_seeded(parts, tiny_stickers):
    pipe = _pipe(parts, True)
    hist = _images(tiny_stickers, [[0, 1], [0, 2], [0, 3]])
    ref = _images(tiny_stickers, [[1, 5]])[0]
    a = pipe(hist, ref, "a sticker", 0.3, 0.2, 2, 7)
    b = pipe(hist, ref, "a sticker", 0.3, 0.2, 2, 7)
    assert len(a) == 2 and a[0].size == (32, 32)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    out = pipe([hist, hist[:1]], [ref, ref], text=["one", "two"], greedy=True, output_type="pt")
    assert out.shape == (2, 3, 32, 32) and pipe.uses_alpha
    assert not _pipe(parts, False, "lmm_sft").uses_alpha


@pytest.mark.parametrize("kwargs, err, msg", [
    (dict(alpha_m=1.5), ValueError, r"alpha_m must lie in \[0, 1\]"),
    (dict(history=[]), ValueError, "history is empty"),
    (dict(text=3), TypeError, "text must be"),
    (dict(num_images=0), ValueError, "num_images must be >= 1"),
])
def test_bad_input(parts, tiny_stickers, kwargs, err, msg):
    pipe = _pipe(parts, True)
    args = dict(history=_images(tiny_stickers, [[0, 1]]), reference=_images(tiny_stickers, [[1, 2]])[0]) | kwargs
    with pytest.raises(err, match=msg):
        pipe(**args)


def test_reference_rows(parts, tiny_stickers):
    _, tok = parts
    ref = _images(tiny_stickers, [[2, 4]])[0]
    hist = _images(tiny_stickers, [[0, 1]])
    grd = ReferencePipeline("grd")(hist, ref, num_images=2, output_type="pt")
    assert grd.shape == (2, 3, 32, 32) and torch.allclose(grd[0], ref, atol=1 / 255)
    recon = ReferencePipeline("recon", tok)(hist, ref, output_type="pt")
    with torch.no_grad():
        want = tok.decode(tok.encode(ref[None])).clamp(0, 1)
    assert torch.allclose(recon, want, atol=1e-5)
    with pytest.raises(ValueError, match="needs the visual tokenizer"):
        ReferencePipeline("recon")
    with pytest.raises(ValueError, match="method must be"):
        ReferencePipeline("copy")


def test_pigeon_mask_generator_receives_gradient_and_trains(tiny_stickers, tmp_path):
    base = tiny_pipeline(tiny_stickers)
    lmm, tok = base.lmm, base.tokenizer
    data = make_dataset(tiny_stickers, "quick", seed=0)
    codes = tok.encode(tiny_stickers.batch(np.stack(np.meshgrid(range(6), range(tiny_stickers.n_emoji),
                                                                indexing="ij"), -1).reshape(-1, 2),
                                           as_torch=True)).view(6, tiny_stickers.n_emoji, 64)
    pr = InterleavedPrompter(InterleavedConfig(dim=lmm.config.hidden_size, mask_generator=True))
    before = {k: v.clone() for k, v in pr.state_dict().items()}
    cfg = Stage2Config(steps=3, batch_size=4, warmup=1, augment=False, lora_rank=2, lora_alpha=4, checkpoint_every=2)
    # one backward by hand: the generator's parameters get a gradient through the masks
    lmm.add_lora(2, 4)
    hist = codes[torch.from_numpy(data.samples.history[:2, :, 0]), torch.from_numpy(data.samples.history[:2, :, 1])]
    ref = codes[torch.from_numpy(data.samples.target[:2, 0]), torch.from_numpy(data.samples.target[:2, 1])]
    from drclib.drc import reconstruction_loss

    pr.train()
    prompt, mask = pr.prompt(lmm, hist, torch.ones(2, hist.shape[1], dtype=torch.bool), ref, None, 0.2, 0.5)
    reconstruction_loss(lmm, prompt, ref, mask).mean().backward()
    grads = [p.grad for p in pr.masks.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    pr.zero_grad()
    history = train_baseline(pr, lmm, codes, data.samples, data.splits["sample"].train, cfg, progress=False,
                             checkpoint_dir=tmp_path / "state")
    assert len(history["loss"]) == 3 and all(np.isfinite(history["loss"]))
    assert any(not torch.equal(before[k], v) for k, v in pr.state_dict().items())
    # saving and loading gives the same outputs
    pipe = InterleavedPipeline(pr, lmm, tok, method="pigeon")
    pipe.save_pretrained(tmp_path / "pigeon", copy_base=True, dtype=None)
    again = InterleavedPipeline.from_pretrained(tmp_path / "pigeon", device="cpu")
    hist_i = _images(tiny_stickers, [[0, 1], [0, 2]])
    ref_i = _images(tiny_stickers, [[1, 3]])[0]
    assert again.method == "pigeon" and again.uses_alpha
    assert torch.equal(pipe(hist_i, ref_i, greedy=True, output_type="pt"),
                       again(hist_i, ref_i, greedy=True, output_type="pt"))


def test_nothing_to_train_is_an_error(parts, tiny_stickers):
    lmm = PocketLMM.from_stickers(tiny_stickers, n_visual=32, **TINY_LMM)
    pr = InterleavedPrompter(InterleavedConfig(dim=lmm.config.hidden_size))
    data = make_dataset(tiny_stickers, "quick", seed=0)
    with pytest.raises(ValueError, match="nothing to train"):
        train_baseline(pr, lmm, torch.zeros(6, tiny_stickers.n_emoji, 64, dtype=torch.long), data.samples,
                       data.splits["sample"].train, Stage2Config(steps=1, lora_rank=0), progress=False)


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown baseline"):
        load_baseline("dalle")
    with pytest.raises(CheckpointError, match="train it with: python -m drclib.train baseline --method pigeon"):
        load_baseline("pigeon", folder=tmp_path / "none", device="cpu")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "pipeline.json").write_text('{"format": 1}')
    with pytest.raises(CheckpointError, match="names no baseline method"):
        InterleavedPipeline.from_pretrained(tmp_path / "bad", device="cpu")


@pytest.mark.parametrize("method", ["pigeon", "lmm_sft"])
def test_shipped_baselines_reproduce_their_card(method):
    """The shipped Pigeon and LMM-SFT load with the shipped LMM and tokenizer, know their
    concept set (core), and reproduce the probe stored in their card (24 test samples), within
    2 of 24 images."""
    from drclib import judges
    from drclib.data import StickerSet, concept_set
    from drclib.train import baseline_probe

    pipe = load_baseline(method, device="cpu")
    assert pipe.method == method and pipe.uses_alpha == (method == "pigeon")
    np.testing.assert_array_equal(pipe.concepts, concept_set("core"))
    stickers = StickerSet.for_profile("full")
    stored = pipe.prompter.training_info["probe"]
    data = make_dataset(stickers, "full", seed=0)
    got = baseline_probe(pipe, stickers, data.samples, data.splits["sample"].test, *judges.load_judges(stickers))
    for k, v in stored.items():
        assert abs(got[k] - v) <= 2 / 24 + 1e-9, (k, got[k], v)
    assert pipe.prompter.training_info["evaluation"]["heldout"][method]["n"] == len(data.splits["heldout"].test)


@pytest.mark.parametrize("flag, expected", [([], "auto"), (["--no-bf16"], False)])
def test_baseline_command_passes_no_bf16_to_its_recipe(flag, expected, monkeypatch):
    """--no-bf16 trains in float32 (as the shipped cards were, on a CPU without fast bf16)."""
    import drclib.train.baselines as baselines_mod
    from drclib.train.cli import main

    seen = {}

    def stop(prompter, lmm, codes, samples, train, cfg, **kwargs):
        seen["cfg"] = cfg
        raise KeyboardInterrupt

    monkeypatch.setattr(baselines_mod, "train_baseline", stop)
    with pytest.raises(KeyboardInterrupt):
        main(["baseline", "--method", "lmm_sft", "--profile", "quick", "--steps", "1", "--threads", "1", *flag])
    from drclib.runtime import bf16_fast

    expected = bf16_fast("cpu") if expected == "auto" else expected
    assert seen["cfg"].bf16 is expected and seen["cfg"].steps == 1
