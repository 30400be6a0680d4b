"""Best of N (drclib.backbone.best_of) and the two readers it is built on: the LMM's caption
log-likelihood and the semantic encoder's zero-shot heads; shapes, invariants, bad input, and
the benchmark's bookkeeping."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from drclib.backbone import PocketLMM, best_of
from drclib.backbone.encoder import EncoderConfig, SemanticEncoder, caption_parts
from drclib.backbone.tokenizer import TokenizerConfig, VisualTokenizer
from drclib.paths import repo_root
from tests.conftest import TINY_LMM

CELLS = np.array([[0, 1], [2, 3], [5, 0]])


@pytest.fixture(scope="module")
def parts(tiny_stickers):
    """A tiny random LMM over 16 codes, a tokenizer for them, and an encoder with a vocabulary."""
    torch.manual_seed(0)
    lmm = PocketLMM.from_stickers(tiny_stickers, n_visual=16, **TINY_LMM).eval()
    tok = VisualTokenizer(TokenizerConfig(codebook_size=16, block_out_channels=(8, 16, 16), latent_channels=8,
                                          vq_embed_dim=8, norm_num_groups=8)).eval()
    vocab, _ = caption_parts(tiny_stickers)
    enc = SemanticEncoder(EncoderConfig(n_words=len(vocab), widths=(8, 16, 16), dim=16, embed_dim=16)).eval()
    enc.training_info = {"vocab": vocab}
    return lmm, tok, enc


def test_caption_logprob_is_the_lms_own_caption_loss(parts):
    lmm, _, _ = parts
    codes = torch.randint(0, 16, (3, 64), generator=torch.Generator().manual_seed(1))
    texts = ["a sticker of thing number 1 in noto style", "a sticker", "a sticker of thing number 22 in twemoji style"]
    got = lmm.caption_logprob(codes, texts)
    assert got.shape == (3,) and got.dtype == torch.float32 and (got < 0).all()
    for i, (c, t) in enumerate(zip(codes, texts)):       # one at a time, by the LM's own loss over the caption
        ids = torch.tensor([lmm.i2t_ids(c, t)])
        labels = ids.clone()
        labels[:, :67] = -100                            # <bos> <img> 64 codes </img> are given
        with torch.no_grad():
            loss = lmm.lm(input_ids=ids, labels=labels).loss
        assert got[i].item() == pytest.approx(-loss.item() * (ids.shape[1] - 67), rel=1e-4)
    assert torch.allclose(lmm.caption_logprob(codes, texts[0]), lmm.caption_logprob(codes, [texts[0]] * 3))
    assert torch.allclose(lmm.caption_logprob(codes, texts, batch_size=1), got, atol=1e-4)   # padding changes nothing
    with pytest.raises(ValueError, match="one text per image"):
        lmm.caption_logprob(codes, texts[:2])
    with pytest.raises(ValueError, match="codes must be"):
        lmm.caption_logprob(codes[:, :10], texts)


def test_zero_shot_is_the_training_softmax(parts, tiny_stickers):
    _, _, enc = parts
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    names, styles = list(tiny_stickers.names[:5]), list(tiny_stickers.styles)
    emoji_lp, style_lp = enc.zero_shot(images, names, styles)
    assert emoji_lp.shape == (4, 5) and style_lp.shape == (4, 6)
    assert torch.allclose(emoji_lp.exp().sum(1), torch.ones(4)) and torch.allclose(style_lp.exp().sum(1), torch.ones(4))
    _, tables = caption_parts(tiny_stickers)             # the same logits as the contrastive loss's
    with torch.no_grad():
        img_e, img_s = enc.image_embedding(enc(images))
        txt_s = enc.text_embedding(*tables["style"])
        want = torch.log_softmax(enc.logit_scale.exp() * img_s @ txt_s.T, -1)
    assert torch.allclose(style_lp, want, atol=1e-5)
    with pytest.raises(ValueError, match="not trained on: \\['zebra'\\]"):
        enc.zero_shot(images, ["zebra"], styles)
    with pytest.raises(ValueError, match="no training vocabulary"):
        SemanticEncoder(EncoderConfig(n_words=3)).zero_shot(images, names, styles)


def test_candidates_start_with_the_greedy_drawing(parts, tiny_stickers):
    lmm, _, _ = parts
    cand = best_of.draw_candidates(lmm, tiny_stickers, CELLS, 4, seed=3, batch_size=2)
    assert cand.shape == (3, 4, 64) and cand.dtype == torch.long and 0 <= cand.min() and cand.max() < 16
    prompts = [best_of.sticker_caption(tiny_stickers.names[e], tiny_stickers.styles[s]) for s, e in CELLS]
    assert torch.equal(cand[:, 0], lmm.generate_images(prompts, greedy=True))
    assert torch.equal(cand, best_of.draw_candidates(lmm, tiny_stickers, CELLS, 4, seed=3, batch_size=2))
    assert not torch.equal(cand[:, 1:], best_of.draw_candidates(lmm, tiny_stickers, CELLS, 4, seed=4)[:, 1:])
    for bad, msg in ((0, "n \\(candidates"), (2.5, "n \\(candidates")):
        with pytest.raises(ValueError, match=msg):
            best_of.draw_candidates(lmm, tiny_stickers, CELLS, bad)
    with pytest.raises(ValueError, match="out of range"):
        best_of.draw_candidates(lmm, tiny_stickers, np.array([[6, 0]]), 2)
    with pytest.raises(ValueError, match="non-empty"):
        best_of.draw_candidates(lmm, tiny_stickers, np.zeros((0, 2), int), 2)


def test_critics_and_the_pick(parts, tiny_stickers):
    lmm, tok, enc = parts
    cand = best_of.draw_candidates(lmm, tiny_stickers, CELLS, 3, seed=0)
    scores = best_of.critic_scores(lmm, tok, tiny_stickers, CELLS, cand, encoder=enc)
    assert set(scores) == set(best_of.CRITICS) and all(v.shape == (3, 3) for v in scores.values())
    assert all((v <= 0).all() for v in scores.values())             # log-probabilities
    s, e = CELLS[1]
    caption = best_of.sticker_caption(tiny_stickers.names[e], tiny_stickers.styles[s])
    assert torch.allclose(scores["caption"][1], lmm.caption_logprob(cand[1], caption), atol=1e-4)
    emoji_lp, style_lp = enc.zero_shot(tok.decode(cand[1]), list(tiny_stickers.names), list(tiny_stickers.styles))
    assert torch.allclose(scores["style"][1], style_lp[:, s], atol=1e-5)
    assert torch.allclose(scores["emoji"][1], emoji_lp[:, e], atol=1e-5)
    total = scores["caption"] + scores["style"] + scores["emoji"]
    assert torch.equal(best_of.pick(scores), total.argmax(1))
    assert torch.equal(best_of.pick(scores, ["style"]), scores["style"].argmax(1))
    assert torch.equal(best_of.pick(scores, n=1), torch.zeros(3, dtype=torch.long))   # best of 1 is greedy
    assert set(best_of.critic_scores(lmm, tok, tiny_stickers, CELLS, cand, critics=["caption"])) == {"caption"}
    with pytest.raises(ValueError, match="pass encoder="):
        best_of.critic_scores(lmm, tok, tiny_stickers, CELLS, cand)
    with pytest.raises(ValueError, match="subset of"):
        best_of.critic_scores(lmm, tok, tiny_stickers, CELLS, cand, critics=["judge"])
    with pytest.raises(ValueError, match="C = 3 cells"):
        best_of.critic_scores(lmm, tok, tiny_stickers, CELLS, cand[:2], encoder=enc)
    with pytest.raises(ValueError, match="no scores"):
        best_of.pick({"caption": scores["caption"]}, ["style"])
    with pytest.raises(ValueError, match="n must be"):
        best_of.pick(scores, n=4)


def test_draw_best_of_keeps_the_chosen_candidate(parts, tiny_stickers):
    lmm, tok, enc = parts
    got = best_of.draw_best_of(lmm, tok, tiny_stickers, CELLS, 3, encoder=enc, seed=1)
    assert torch.equal(got["codes"], got["candidates"][torch.arange(3), got["chosen"]])
    assert torch.equal(got["chosen"], best_of.pick(got["scores"]))
    one = best_of.draw_best_of(lmm, tok, tiny_stickers, CELLS, 1)
    assert torch.equal(one["codes"], got["candidates"][:, 0]) and one["scores"] == {}


def test_draw_cells_best_of_refuses_guidance(parts, tiny_stickers):
    from drclib.judges import draw_cells

    lmm, tok, enc = parts
    drawn = draw_cells(lmm, tok, tiny_stickers, CELLS, best_of=2, encoder=enc)
    assert drawn.shape == (3, 3, 32, 32)
    with pytest.raises(ValueError, match="without guidance_scale"):
        draw_cells(lmm, tok, tiny_stickers, CELLS, best_of=2, encoder=enc, guidance_scale=1.0)


def _bench():
    spec = importlib.util.spec_from_file_location("best_of_bench", repo_root() / "benchmarks" / "best_of.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_averages_seeds_and_tables(tmp_path):
    mod = _bench()
    rate = lambda b: {"style_acc": 0.5, "emoji_top1": 1.0, "both": b}      # noqa: E731
    runs = [{"seed": s, "seconds": 1.0, "greedy": rate(0.25), "one_sample": rate(0.125), "oracle_both": 0.5 + s / 4,
             "rules": {r: {"1": rate(0.25), "2": rate(0.25 + s / 4)} for r in mod.RULES}, "n_cells": 64,
             "candidates": 2} for s in (0, 1)]
    summary = mod.mean_over_seeds(runs)
    assert summary["rules"]["caption"]["2"]["both"] == {"mean": 0.375, "min": 0.25, "max": 0.5}
    assert summary["n_cells"] == 64 and "seed" not in summary
    text = mod.table({"heldout_cells": summary}, 2)
    assert "| greedy (the card's figure) | 0.500 | 1.000 | 0.250 ± 0.054 |" in text
    assert "| best of 2 by caption + encoder | 0.500 | 1.000 | 0.375 ± 0.061 |" in text
    assert "| the judges' own pick of 2 (upper bound) | - | - | 0.625 |" in text
    with pytest.raises(SystemExit, match="at least 2"):
        mod.main(["--n", "1", "--out", str(tmp_path / "x.json")])


def test_shipped_parts_draw_best_of_repeatably(shipped_stickers):
    """On the shipped LMM, tokenizer and encoder: the encoder's vocabulary covers the set's
    captions, the draw is repeatable, and best of 1 is the card's greedy drawing."""
    from drclib.backbone import encoder as enc_mod
    from drclib.backbone import load_default
    from drclib.backbone import tokenizer as vt
    from drclib.train import eval_cell_subsets, model_stickers

    lmm, tok, enc = load_default(), vt.load_default(), enc_mod.load_default()
    stickers = model_stickers(lmm)
    cells = eval_cell_subsets(stickers, 300)["heldout_cells"][:6]
    a = best_of.draw_best_of(lmm, tok, stickers, cells, 4, encoder=enc, seed=0)
    b = best_of.draw_best_of(lmm, tok, stickers, cells, 4, encoder=enc, seed=0)
    assert torch.equal(a["codes"], b["codes"]) and all(torch.equal(a["scores"][k], b["scores"][k]) for k in a["scores"])
    prompts = [best_of.sticker_caption(stickers.names[e], stickers.styles[s]) for s, e in cells]
    assert torch.equal(a["candidates"][:, 0], lmm.generate_images(prompts, greedy=True))


def test_candidate_images_keep_the_cells_and_candidates_apart(parts):
    _, tok, _ = parts
    codes = torch.randint(0, 16, (2, 3, 64), generator=torch.Generator().manual_seed(4))
    images = best_of.candidate_images(tok, codes, batch_size=4)
    assert images.shape == (2, 3, 3, 32, 32)
    assert torch.allclose(images[1, 2], tok.decode(codes[1, 2:3])[0], atol=1e-5)
    with pytest.raises(ValueError, match="\\[C, n, 64\\]"):
        best_of.candidate_images(tok, codes[0])
