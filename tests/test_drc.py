"""drclib.drc and stage-1 training: the four instructions, the hybrid prompt, eq. (3) and (4),
the importance sampler, training (learns, resumes exactly, leaves the LMM untouched), the
swap-test helpers, save/load, bad input."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from drclib.backbone import BOS, PocketLMM
from drclib.checkpoint import CheckpointError
from drclib.data.users import Triplets
from drclib.drc import (COMBINATIONS, DRC, HYBRID_PROMPT, DRCConfig, ImportanceSampler, caption_anchor_loss,
                        caption_words, generate_codes, heldout_triplets, hybrid_prompt, importance_probabilities, reconstruction_loss, swap_pairs,
                        swap_rates)
from drclib.train import Stage1Config, train_stage1

from tests.conftest import TINY_LMM as TINY


@pytest.fixture(scope="module")
def lmm(tiny_stickers):
    torch.manual_seed(0)
    return PocketLMM.from_stickers(tiny_stickers, n_visual=16, **TINY).eval()


@pytest.fixture(scope="module")
def codes(tiny_stickers):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 16, (6, tiny_stickers.n_emoji, 64), generator=g)


@pytest.fixture(scope="module")
def triplets():
    rng = np.random.default_rng(0)
    e = rng.integers(0, 20, 24)
    s = rng.integers(0, 6, 24)
    return Triplets(np.stack([s, e], 1), np.stack([s, (e + 1) % 20], 1), np.stack([(s + 1) % 6, e], 1))


def emb(lmm, codes, cells):
    return lmm.visual_embeddings(codes[cells[:, 0], cells[:, 1]])


@pytest.mark.parametrize("variant", [{}, {"tower": "mlp"}, {"fusion": "concat"}])
def test_four_instructions_shapes(lmm, codes, triplets, variant):
    drc = DRC.for_lmm(lmm, n_latent=4, **variant)
    e = [emb(lmm, codes, c[:3]) for c in (triplets.anchor, triplets.pos_style, triplets.pos_sem)]
    zs = drc.stage1_instructions(*e)
    assert set(zs) == set(COMBINATIONS)
    k = 128 if variant.get("fusion") == "concat" else 4
    assert all(z.shape == (3, k, 32) for z in zs.values())
    with pytest.raises(ValueError, match="one shape"):
        drc.stage1_instructions(e[0], e[1][:2], e[2])
    with pytest.raises(ValueError, match="unknown combination"):
        drc.stage1_instructions(*e, combinations=("xy",))


def test_instructions_differ_by_their_sources(lmm, codes, triplets):
    """z(a,a) and z(s,m) use different features, so they differ; z(a,m) shares style features
    with z(a,a) and semantic features with z(s,m)."""
    drc = DRC.for_lmm(lmm, n_latent=4).eval()
    e = [emb(lmm, codes, c[:2]) for c in (triplets.anchor, triplets.pos_style, triplets.pos_sem)]
    f = drc.stage1_features(*e)
    zs = drc.stage1_instructions(*e)
    torch.testing.assert_close(zs["am"], drc.fuse(f["sty_a"], f["sem_m"]))
    assert torch.allclose(zs["am"].norm(dim=-1), torch.ones(2, 4), atol=0.05)      # z_norm = 1 at init
    assert not torch.allclose(zs["aa"], zs["sm"])


def test_stage1_form_decides_whether_z_sm_sees_the_anchor(lmm, codes, triplets):
    """In the paper's cross form every tower output is built from the anchor's values, so even
    z(s,m) changes with the anchor; in the self form z(s,m) depends on x_s and x_m only, and
    equals the inference-time composition of the two."""
    e = [emb(lmm, codes, c[:3]) for c in (triplets.anchor, triplets.pos_style, triplets.pos_sem)]
    other_anchor = emb(lmm, codes, triplets.anchor[3:6])
    cross = DRC.for_lmm(lmm, n_latent=4).eval()
    self_form = DRC.for_lmm(lmm, n_latent=4, stage1_form="self").eval()
    self_form.load_state_dict(cross.state_dict())
    with torch.no_grad():
        assert not torch.allclose(cross.stage1_instructions(*e)["sm"],
                                  cross.stage1_instructions(other_anchor, e[1], e[2])["sm"])
        z = self_form.stage1_instructions(*e)
        torch.testing.assert_close(z["sm"], self_form.stage1_instructions(other_anchor, e[1], e[2])["sm"])
        torch.testing.assert_close(z["sm"], self_form.instruction(e[1], e[2]))
        torch.testing.assert_close(z["aa"], self_form.instruction(e[0], e[0]))
    with pytest.raises(ValueError, match="stage1_form"):
        DRCConfig(stage1_form="diagonal")


def test_words_space_z_is_a_soft_sentence(lmm, codes, triplets, tmp_path):
    """z_space="words": every latent token is a convex combination of the LMM's word
    embeddings (never a visual code or a special token), gradients reach the towers, and the
    copy of the word table survives save/load."""
    drc = DRC.for_lmm(lmm, n_latent=4, z_space="words")
    first_word = lmm.visual_offset + lmm.config.n_visual
    words = lmm.embed(torch.arange(first_word, lmm.config.vocab_size)).detach()
    assert drc.config.n_words == len(words)
    torch.testing.assert_close(drc.word_embeddings, words)
    e = [emb(lmm, codes, c[:3]).detach() for c in (triplets.anchor, triplets.pos_style, triplets.pos_sem)]
    z = drc.stage1_instructions(*e)["sm"]
    assert z.shape == (3, 4, 32)
    f_sty, f_sem = drc.style_tower(e[1], None), drc.sem_tower(e[2], None)
    weights = torch.softmax(drc.fusion(f_sty, f_sem), -1)          # one distribution over words per token
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4))
    torch.testing.assert_close(drc.fuse(f_sty, f_sem), weights @ words, atol=1e-5, rtol=1e-4)
    z.sum().backward()
    assert drc.sem_tower.attn.attn.in_proj_weight.grad.abs().sum() > 0
    drc.save_pretrained(tmp_path / "w")
    back = DRC.from_pretrained(tmp_path / "w")
    assert back.config.z_space == "words"
    torch.testing.assert_close(back.word_embeddings, words)
    with pytest.raises(ValueError, match="n_words"):
        DRCConfig(z_space="words")
    with pytest.raises(ValueError, match="z_space"):
        DRCConfig(z_space="pixels")


def test_slots_space_z_is_words_or_empty(lmm, codes, triplets, tiny_stickers, tmp_path):
    """z_space="slots": every latent token is exactly one word embedding of the LMM or exactly
    zero (an empty slot), gradients still reach the towers (straight-through), empty slots are
    masked out of the prompt and packed to its left, and a slots z that spells a caption gives
    the LMM the same loss as the caption written as text."""
    from drclib.drc import hybrid_prompts, prompt_mask

    drc = DRC.for_lmm(lmm, n_latent=6, z_space="slots")
    words = lmm.embed(torch.arange(lmm.first_word, lmm.config.vocab_size)).detach()
    assert drc.word_embeddings.shape == (len(words) + 1, 32) and drc.word_embeddings[-1].abs().sum() == 0
    e = [emb(lmm, codes, c[:3]).detach() for c in (triplets.anchor, triplets.pos_style, triplets.pos_sem)]
    z, logits = drc.stage1_instructions(*e, return_logits=True)["sm"]
    assert logits.shape == (3, 6, len(words) + 1)
    pick = logits.argmax(-1)
    for i in range(3):
        for k in range(6):
            want = torch.zeros(32) if pick[i, k] == len(words) else words[pick[i, k]]
            torch.testing.assert_close(z[i, k].detach(), want)
    z.pow(2).sum().backward()
    assert drc.sem_tower.attn.attn.in_proj_weight.grad.abs().sum() > 0
    # a caption in the last slots, the rest empty: the same loss as the caption as plain words
    cap = lmm.text_ids("a sticker of")
    zc = torch.zeros(1, 6, 32)
    zc[0, 6 - len(cap):] = lmm.embed(torch.tensor(cap)).detach()
    target = codes[0, 0][None]
    plain = torch.cat([hybrid_prompt(lmm, zc[:, :0]), lmm.embed(torch.tensor(cap))[None].detach()], 1)
    torch.testing.assert_close(reconstruction_loss(lmm, hybrid_prompt(lmm, zc), target),
                               reconstruction_loss(lmm, plain, target), atol=1e-4, rtol=1e-4)
    p, m = hybrid_prompts(lmm, zc, None)
    assert m[0, :6 - len(cap)].sum() == 0 and bool(m[0, 6 - len(cap):].all()), "empty slots packed to the left"
    assert prompt_mask(p).equal(m)
    # the anchor's empty target fills the slots before the caption
    caps = caption_words(lmm, tiny_stickers, 12, empty=len(words))
    assert (caps == len(words)).any() and not (caps == -100).any()
    drc.save_pretrained(tmp_path / "s")
    assert DRC.from_pretrained(tmp_path / "s").config.z_space == "slots"


def test_caption_words_and_the_anchor_loss(lmm, tiny_stickers):
    """caption_words spells every cell's caption in word-table indices (-100 after its end);
    caption_anchor_loss is the mean cross-entropy over the caption's words only, near 0 when
    the logits point at the caption, and it refuses captions longer than z."""
    from drclib.backbone import sticker_caption

    first_word = lmm.visual_offset + lmm.config.n_visual
    words = caption_words(lmm, tiny_stickers, 16)
    assert words.shape == (len(tiny_stickers.styles), tiny_stickers.n_emoji, 16)
    row = words[2, 5]
    spelled = lmm.decode_text((row[row != -100] + first_word).tolist())
    assert spelled == lmm.decode_text(lmm.text_ids(sticker_caption(tiny_stickers.names[5], tiny_stickers.styles[2])))
    n = int((row != -100).sum())
    assert (row[:16 - n] == -100).all() and (row[16 - n:] != -100).all()        # right-aligned
    with pytest.raises(ValueError, match="raise n_latent"):
        caption_words(lmm, tiny_stickers, 3)

    caption = words[0, :4]
    logits = torch.randn(4, 16, words.max().item() + 5, requires_grad=True)
    loss = caption_anchor_loss(logits, caption)
    n = (caption != -100).sum(1)
    manual = torch.stack([torch.nn.functional.cross_entropy(logits[i, 16 - n[i]:], caption[i, 16 - n[i]:])
                          for i in range(4)])
    torch.testing.assert_close(loss, manual)
    loss.sum().backward()
    free = caption == -100                      # the tokens before the caption get no gradient from the anchor
    assert free.any() and logits.grad[free].abs().sum() == 0 and logits.grad[~free].abs().sum() > 0
    sharp = torch.full_like(logits, -30.0)
    sharp.scatter_(2, caption.clamp(min=0)[..., None], 30.0)
    assert caption_anchor_loss(sharp, caption).max() < 1e-6
    with pytest.raises(ValueError, match="must be"):
        caption_anchor_loss(logits[0], caption)
    with pytest.raises(ValueError, match="run past"):
        caption_anchor_loss(logits[:, :3], caption)
    short = caption_words(lmm, tiny_stickers, 14)[0, :4]      # fewer slots than z has tokens: z's last 14
    torch.testing.assert_close(caption_anchor_loss(logits, short), caption_anchor_loss(logits[:, 2:], short))


def test_stage1_with_the_caption_anchor_learns_to_name_the_anchor(lmm, codes, triplets, tiny_stickers):
    """caption_weight > 0: the anchor loss is recorded and falls, z(s,m) learns to spell the
    anchor's caption (style from x_s, emoji from x_m), read_words shows it; the anchor needs a
    words-space model and the captions."""
    import copy

    words = caption_words(lmm, tiny_stickers, 16)
    torch.manual_seed(0)
    drc = DRC.for_lmm(lmm, n_latent=16, z_space="words", stage1_form="self")
    own = copy.deepcopy(lmm)
    cfg = Stage1Config(steps=40, batch_size=8, lr=3e-3, warmup=2, caption_weight=1.0, lora_rank=0, bf16=False)
    hist = train_stage1(drc, own, codes, triplets, cfg, progress=False, captions=words)
    assert len(hist["caption"]) == 40
    assert np.mean(hist["caption"][-5:]) < 0.7 * np.mean(hist["caption"][:5])
    e = [emb(own, codes, c[:2]) for c in (triplets.anchor, triplets.pos_style, triplets.pos_sem)]
    said = drc.read_words(own, e[1], e[2])
    assert len(said) == 2 and all(len(s) == 16 for s in said)
    with pytest.raises(ValueError, match="z_space='words'"):
        train_stage1(DRC.for_lmm(lmm, n_latent=16), copy.deepcopy(lmm), codes, triplets, cfg, progress=False,
                     captions=words)
    with pytest.raises(ValueError, match="needs the captions"):
        train_stage1(drc, own, codes, triplets, cfg, progress=False)
    with pytest.raises(ValueError, match="free"):
        DRC.for_lmm(lmm, n_latent=4).read_words(lmm, e[1], e[2])
    with pytest.raises(ValueError, match="caption_weight"):
        Stage1Config(caption_weight=-1)


def test_composition_self_and_cross_and_history(lmm, codes, triplets):
    drc = DRC.for_lmm(lmm, n_latent=4).eval()
    a, b = emb(lmm, codes, triplets.anchor[:2]), emb(lmm, codes, triplets.pos_sem[:2])
    z = drc.instruction(a, b)
    assert z.shape == (2, 4, 32)
    assert drc.instruction(a, b, form="cross").shape == (2, 4, 32)
    hist = torch.stack([a, a], 1)              # a history of two copies = the image itself (mean pooling)
    torch.testing.assert_close(drc.instruction(hist, b), z)
    with pytest.raises(ValueError, match="form"):
        drc.instruction(a, b, form="sideways")
    with pytest.raises(ValueError, match="N >= 1"):
        drc.instruction(a[:, None][:, :0], b)


def test_hybrid_prompt_layout(lmm):
    z = torch.randn(3, 4, 32)
    p = hybrid_prompt(lmm, z)
    words = [BOS, *lmm.text_ids(HYBRID_PROMPT)]
    assert p.shape == (3, len(words) + 4, 32)
    torch.testing.assert_close(p[0, :len(words)], lmm.embed(torch.tensor(words)))
    torch.testing.assert_close(p[:, len(words):], z)
    assert hybrid_prompt(lmm, z, text="a happy one").shape[1] > p.shape[1]
    with pytest.raises(ValueError, match="z must be"):
        hybrid_prompt(lmm, torch.randn(3, 4, 16))


def test_reconstruction_loss_is_per_sample_and_reaches_z(lmm, codes):
    z = torch.randn(2, 4, 32, requires_grad=True)
    target = codes[0, :2]
    loss = reconstruction_loss(lmm, hybrid_prompt(lmm, z), target)
    assert loss.shape == (2,) and (loss > 0).all()
    loss.sum().backward()
    assert z.grad.abs().sum() > 0
    # eq. (3) by hand for row 0: teacher forcing over the 64 codes
    with torch.no_grad():
        ids = lmm.codes_to_ids(target[:1])
        from drclib.backbone import IMG
        seq = torch.cat([hybrid_prompt(lmm, z[:1]), lmm.embed(torch.tensor([[IMG]])), lmm.embed(ids)], 1)
        logp = lmm(inputs_embeds=seq).logits.log_softmax(-1)[0, -65:-1]
        manual = -logp.gather(1, ids[0][:, None]).mean()
    torch.testing.assert_close(loss[0].detach(), manual, rtol=1e-5, atol=1e-5)


def test_importance_probabilities_eq4():
    p = importance_probabilities(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(p, torch.tensor([0.1, 0.2, 0.3, 0.4]))
    assert importance_probabilities(torch.rand(5, 4) + 0.1).sum(-1).allclose(torch.ones(5))
    for bad in ([1.0, 0.0, 1.0, 1.0], [1.0, float("nan"), 1.0, 1.0], []):
        with pytest.raises(ValueError):
            importance_probabilities(torch.tensor(bad))


def test_sampler_prefers_hard_instructions_and_uniform_does_not():
    g = torch.Generator().manual_seed(0)
    s = ImportanceSampler(momentum=0.0)
    torch.testing.assert_close(s.probabilities(), torch.full((4,), 0.25))   # nothing seen yet
    s.update(torch.arange(4), torch.tensor([1.0, 1.0, 1.0, 5.0]))
    torch.testing.assert_close(s.probabilities(), torch.tensor([0.125, 0.125, 0.125, 0.625]))
    draws = s.sample(4000, g)
    assert 0.58 < (draws == 3).float().mean() < 0.67
    u = ImportanceSampler(uniform=True)
    u.update(torch.arange(4), torch.tensor([1.0, 1.0, 1.0, 5.0]))
    torch.testing.assert_close(u.probabilities(), torch.full((4,), 0.25))
    with pytest.raises(ValueError, match="momentum"):
        ImportanceSampler(momentum=1.0)


@pytest.fixture(scope="module")
def steerable(tiny_stickers):
    """A tiny LMM pretrained for a few seconds on cells whose codes follow the cell, so that
    its output depends on its prompt (a random LMM ignores any prompt) + those codes."""
    from drclib.train import PretrainConfig, pretrain_backbone

    torch.manual_seed(0)
    m = PocketLMM.from_stickers(tiny_stickers, n_visual=16, **TINY)
    s, e = np.meshgrid(np.arange(6), np.arange(tiny_stickers.n_emoji), indexing="ij")
    c = torch.from_numpy((s + e) % 16)[..., None].repeat(1, 1, 64).long()
    cells = np.array([[0, 1], [1, 2], [0, 3], [1, 4], [2, 1], [3, 2]])
    pretrain_backbone(m, tiny_stickers, c, cells, PretrainConfig(steps=60, batch_size=6, lr=1e-2, warmup=5,
                                                                 bf16=False, i2t_fraction=0), progress=False)
    return m.eval(), c


def test_stage1_learns_and_leaves_the_lmm_frozen(steerable):
    lmm, codes = steerable
    triplets = Triplets(np.array([[0, 1], [1, 2]] * 4), np.array([[0, 3], [1, 4]] * 4),
                        np.array([[2, 1], [3, 2]] * 4))
    torch.manual_seed(0)
    drc = DRC.for_lmm(lmm, n_latent=4)
    before = {k: v.clone() for k, v in lmm.state_dict().items()}
    h = train_stage1(drc, lmm, codes, triplets, Stage1Config(steps=30, batch_size=8, lr=3e-3, warmup=2,
                                                             bf16=False, lora_rank=0), progress=False)
    assert np.mean(h["loss"][-5:]) < 0.5 * h["loss"][0]
    assert all(torch.equal(before[k], v) for k, v in lmm.state_dict().items())
    assert not any(p.requires_grad for p in lmm.parameters())


def test_stage1_probabilities_follow_eq4(lmm, codes, triplets):
    drc = DRC.for_lmm(lmm, n_latent=4)
    h = train_stage1(drc, lmm, codes, triplets, Stage1Config(steps=6, batch_size=8, bf16=False, lora_rank=0),
                     progress=False)
    p = np.array([h["p_" + c] for c in COMBINATIONS])
    np.testing.assert_allclose(p.sum(0), 1, atol=1e-5)
    lr = np.array([h["l_" + c][-1] for c in COMBINATIONS])
    np.testing.assert_allclose(p[:, -1], lr / lr.sum(), rtol=1e-5)       # eq. (4) on the running losses


def test_stage1_uniform_switch(lmm, codes, triplets):
    drc = DRC.for_lmm(lmm, n_latent=4)
    h = train_stage1(drc, lmm, codes, triplets, Stage1Config(steps=3, batch_size=8, importance="uniform",
                                                             bf16=False, lora_rank=0), progress=False)
    assert all(v == 0.25 for c in COMBINATIONS for v in h["p_" + c])
    with pytest.raises(ValueError, match="importance"):
        Stage1Config(importance="hard")
    with pytest.raises(ValueError, match="no triplets"):
        train_stage1(drc, lmm, codes, Triplets(*(np.empty((0, 2), np.int64),) * 3), progress=False)


def test_stage1_resume_matches_uninterrupted(tiny_stickers, codes, triplets, tmp_path):
    """With LoRA adapters: the resumed run restores the DRC, the adapters, the optimizer and
    the sampler, and ends where the uninterrupted run ends."""
    cfg = Stage1Config(steps=6, batch_size=8, warmup=2, bf16=False, checkpoint_every=2, lora_rank=2)

    def fresh():
        torch.manual_seed(3)
        m = PocketLMM.from_stickers(tiny_stickers, n_visual=16, **TINY)
        return DRC.for_lmm(m, n_latent=4), m

    a, la = fresh()
    ha = train_stage1(a, la, codes, triplets, cfg, progress=False)
    b, lb = fresh()
    train_stage1(b, lb, codes, triplets, cfg, checkpoint_dir=tmp_path, stop_after=3, progress=False)
    b, lb = fresh()
    hb = train_stage1(b, lb, codes, triplets, cfg, checkpoint_dir=tmp_path, progress=False)
    np.testing.assert_allclose(hb["loss"], ha["loss"], rtol=1e-4)
    np.testing.assert_allclose(hb["p_sm"], ha["p_sm"], rtol=1e-5)
    for pa, pb in zip(list(a.parameters()) + la.lora_parameters(), list(b.parameters()) + lb.lora_parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)


def test_generate_codes_from_instructions(lmm):
    z = torch.randn(2, 4, 32)
    c = generate_codes(lmm, z)
    assert c.shape == (2, 64) and c.min() >= 0 and c.max() < 16
    torch.testing.assert_close(c, generate_codes(lmm, z))           # greedy is deterministic


def test_save_load_roundtrip(lmm, codes, triplets, tmp_path):
    drc = DRC.for_lmm(lmm, n_latent=4, tower="mlp").eval()
    drc.save_pretrained(tmp_path / "m")
    back = DRC.from_pretrained(tmp_path / "m")
    assert back.config == drc.config
    e = emb(lmm, codes, triplets.anchor[:2])
    torch.testing.assert_close(back.instruction(e, e), drc.instruction(e, e))
    with pytest.raises(CheckpointError, match="does not match"):
        DRC.from_pretrained(tmp_path / "m", n_latent=5)
    with pytest.raises(ValueError, match="tower must be"):
        DRCConfig(tower="transformer")


def test_heldout_triplets_and_swap_pairs(shipped_stickers):
    from drclib.data import heldout_cells

    held = heldout_cells(shipped_stickers)
    t = heldout_triplets(shipped_stickers, 50)
    assert held[t.anchor[:, 0], t.anchor[:, 1]].all()
    assert not held[t.pos_style[:, 0], t.pos_style[:, 1]].any()
    assert not held[t.pos_sem[:, 0], t.pos_sem[:, 1]].any()
    assert (t.pos_style[:, 0] == t.anchor[:, 0]).all() and (t.pos_style[:, 1] != t.anchor[:, 1]).all()
    assert (t.pos_sem[:, 1] == t.anchor[:, 1]).all() and (t.pos_sem[:, 0] != t.anchor[:, 0]).all()
    a, b = swap_pairs(shipped_stickers, 40)
    assert (a[:, 0] != b[:, 0]).all() and (a[:, 1] != b[:, 1]).all()
    assert held[a[:, 0], a[:, 1]].all() and held[b[:, 0], b[:, 1]].all()
    a2, _ = swap_pairs(shipped_stickers, 40)
    np.testing.assert_array_equal(a, a2)                            # fixed, so results compare
    a, b = swap_pairs(shipped_stickers, 40, kind="train")           # training cells with a training-cell target
    assert (a[:, 0] != b[:, 0]).all() and (a[:, 1] != b[:, 1]).all()
    assert not held[a[:, 0], a[:, 1]].any() and not held[b[:, 0], b[:, 1]].any() and not held[a[:, 0], b[:, 1]].any()
    with pytest.raises(ValueError, match="kind"):
        swap_pairs(shipped_stickers, 4, kind="other")


def test_swap_rates_count_success_and_both_collapses():
    a = np.array([[0, 10], [1, 11], [2, 12], [3, 13]])
    b = np.array([[4, 20], [5, 21], [0, 22], [1, 23]])
    style_pred = torch.tensor([0, 5, 2, 3])                        # row 1 took B's style
    emoji_top = torch.tensor([[20, 1, 2, 3, 4], [21, 0, 1, 2, 3], [12, 22, 0, 1, 2], [5, 6, 7, 8, 9]])
    r = swap_rates(style_pred, emoji_top, a, b)
    assert r["style_of_A"] == 0.75 and r["emoji_of_B"] == 0.5 and r["both"] == 0.25
    assert r["emoji_of_B_top5"] == 0.75 and r["style_of_B"] == 0.25 and r["emoji_of_A"] == 0.25


def test_stage1_with_lora_trains_adapters_only(steerable, tiny_stickers):
    lmm0, codes = steerable
    lmm = PocketLMM.from_stickers(tiny_stickers, n_visual=16, **TINY)
    lmm.load_state_dict(lmm0.state_dict())
    triplets = Triplets(np.array([[0, 1], [1, 2]] * 4), np.array([[0, 3], [1, 4]] * 4),
                        np.array([[2, 1], [3, 2]] * 4))
    drc = DRC.for_lmm(lmm, n_latent=4)
    base = {k: v.clone() for k, v in lmm.state_dict().items()}
    h = train_stage1(drc, lmm, codes, triplets, Stage1Config(steps=5, batch_size=8, lr=3e-3, warmup=1, bf16=False,
                                                             lora_rank=2), progress=False)
    assert lmm.has_lora and len(h["loss"]) == 5
    assert any(p.abs().sum() > 0 for n, p in lmm.lm.named_parameters() if "lora_B" in n)     # adapters moved
    now = lmm.state_dict()
    for k, v in base.items():                                                               # base weights did not
        key = k if k in now else k.replace(".weight", ".base_layer.weight")
        torch.testing.assert_close(now[key], v)
    with pytest.raises(ValueError, match="lora_rank"):
        Stage1Config(lora_rank=-1)


def test_load_stage1_checks_the_lmm_and_restores_lora(steerable, tiny_stickers, tmp_path, monkeypatch):
    from drclib.drc import lmm_fingerprint, load_stage1

    lmm0, _ = steerable
    lmm_dir = tmp_path / "lmm"
    lmm0.save_pretrained(lmm_dir)
    lmm = PocketLMM.from_pretrained(lmm_dir)
    lmm.add_lora(2, 4)
    for p in lmm.lora_parameters():
        torch.nn.init.normal_(p, std=0.1)
    drc = DRC.for_lmm(lmm, n_latent=4)
    drc.save_pretrained(tmp_path / "s1", extra={"lmm": lmm_fingerprint(lmm_dir)})
    lmm.save_lora(tmp_path / "s1" / "lora")
    back, back_lmm = load_stage1(tmp_path / "s1", lmm_dir)
    x = torch.randint(0, 30, (1, 8))
    torch.testing.assert_close(back_lmm(input_ids=x).logits, lmm.eval()(input_ids=x).logits)
    other = tmp_path / "other"
    PocketLMM.from_stickers(tiny_stickers, n_visual=16, **TINY).save_pretrained(other)
    with pytest.raises(CheckpointError, match="another LMM"):
        load_stage1(tmp_path / "s1", other)


@pytest.mark.parametrize("variant", ["drc", "uniform", "concat", "mlp", "plain"])
def test_shipped_stage1_reproduces_its_card(variant, shipped_stickers):
    """The shipped stage-1 models (DRC and its three ablations, and DRC's stage 1 on the plain LMM
    the kit shipped before) load with their LMM and LoRA adapters and reproduce the small probe stored in their card,
    within 2 of 24 images."""
    from drclib import judges
    from drclib.backbone import tokenizer as vt
    from drclib.backbone import sticker_codes
    from drclib.drc import cell_images, load_stage1
    from drclib.pipeline import default_stage1_dir, plain_lmm_dir
    from drclib.train import model_stickers, stage1_probe

    if variant == "plain":
        model, lmm = load_stage1(plain_lmm_dir() / "stage1", plain_lmm_dir() / "lmm")
        with pytest.raises(CheckpointError, match="another LMM"):     # its card names its own LMM
            load_stage1(plain_lmm_dir() / "stage1")
    else:
        model, lmm = load_stage1(default_stage1_dir(variant))
    stickers = model_stickers(model)
    assert stickers.concept_name == "core"
    stored = model.training_info["probe"]
    tok = vt.load_default()
    got = stage1_probe(model, lmm, tok, *judges.load_judges(stickers), stickers, sticker_codes(tok, stickers),
                       cell_images(stickers))
    for key, rates in stored["combinations"].items():
        for name, value in rates.items():
            assert abs(got["combinations"][key][name] - value) <= 2 / 24 + 1e-9, (key, name)
    for kind, forms in stored["swap"].items():
        for name, value in forms["self"].items():
            assert abs(got["swap"][kind]["self"][name] - value) <= 2 / 24 + 1e-9, (kind, name)
    assert model.training_info["evaluation"]["swap"]["train"]["self"]["n"] == 300


# ---------------------------------------------------------------------------- stage 2
def test_user_instruction_eqs_5_to_8(lmm, codes):
    import dataclasses

    drc = DRC(dataclasses.replace(DRC.for_lmm(lmm, n_latent=4).config, mask_generator=True)).eval()
    hist = torch.stack([emb(lmm, codes, np.array([[0, i], [0, i + 1], [1, i + 2]])) for i in range(2)])
    ref = emb(lmm, codes, np.array([[3, 7], [4, 8]]))
    z, (m_h, m_r) = drc.user_instruction(hist, ref, 0.2, 0.5, return_masks=True)
    assert z.shape == (2, 4, 32) and m_h.shape == (2, 3, 64) and m_r.shape == (2, 64)
    # alpha_m = 0 keeps the whole reference: then the instruction only depends on the masked history
    z0 = drc.user_instruction(hist, ref, 0.0, 0.0)
    f_sty = drc.style_tower(hist.reshape(6, 64, 32)).view(2, 3, 64, 32).mean(1)
    torch.testing.assert_close(z0, drc.fuse(f_sty, drc.sem_tower(ref)), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="no mask generator"):
        DRC.for_lmm(lmm, n_latent=4).user_instruction(hist, ref)
    with pytest.raises(ValueError, match="alpha_m must lie"):
        drc.user_instruction(hist, ref, 0.2, 1.5)
    with pytest.raises(ValueError, match="N >= 1"):
        drc.user_instruction(hist[:, :0], ref)


def test_hybrid_prompts_left_pad_and_loss_matches_unpadded(lmm, codes):
    from drclib.drc import hybrid_prompts

    z = torch.randn(2, 4, 32)
    texts = ["Create a sticker for me.", "Draw this as a sticker I would like."]
    emb_, mask = hybrid_prompts(lmm, z, texts)
    assert mask[0, 0] == 0 and mask[1].all()
    target = codes[0, :2]
    padded = reconstruction_loss(lmm, emb_, target, mask)
    for i, t in enumerate(texts):
        alone = reconstruction_loss(lmm, hybrid_prompt(lmm, z[i:i + 1], t), target[i:i + 1])
        torch.testing.assert_close(padded[i], alone[0], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="texts for"):
        hybrid_prompts(lmm, z, texts[:1])
    assert generate_codes(lmm, z, text=texts).shape == (2, 64)


def test_stage2_trains_masks_towers_and_adapters(tiny_stickers, codes, tmp_path):
    """Stage 2 from a saved stage-1 model: the mask generator receives gradient through the
    SFT loss (the defect of Pigeon's release), the LoRA adapters move, the base LMM does not,
    and a resumed run ends where an uninterrupted one ends."""
    from drclib.data import make_dataset
    from drclib.train import Stage2Config, stage2_batch, train_stage2

    data = make_dataset(tiny_stickers, "quick", seed=0, n_users=6)
    train = data.splits["sample"].train
    torch.manual_seed(0)
    base = PocketLMM.from_stickers(tiny_stickers, n_visual=16, **TINY)
    DRC.for_lmm(base, n_latent=4).save_pretrained(tmp_path / "s1")

    def fresh():
        torch.manual_seed(1)
        m = PocketLMM.from_stickers(tiny_stickers, n_visual=16, **TINY)
        m.load_state_dict(base.state_dict())
        return DRC.from_stage1(tmp_path / "s1"), m

    cfg = Stage2Config(steps=4, batch_size=4, warmup=1, bf16=False, checkpoint_every=2, lora_rank=2, lr=1e-2)
    drc, lmm = fresh()
    gen_before = {k: v.clone() for k, v in drc.masks.state_dict().items()}
    ha = train_stage2(drc, lmm, codes, data.samples, train, cfg, progress=False)
    assert any(not torch.equal(v, drc.masks.state_dict()[k]) for k, v in gen_before.items())
    assert any(p.abs().sum() > 0 for n, p in lmm.lm.named_parameters() if "lora_B" in n)
    b = stage2_batch(data.samples, train[:4], 0, cfg)
    assert ((b["reference"][:, 1] == b["target"][:, 1]) & (b["reference"][:, 0] != b["target"][:, 0])).all()
    assert (0 <= b["alpha_m"]).all() and (b["alpha_m"] <= 1).all()
    no_aug = stage2_batch(data.samples, train[:4], 0, Stage2Config(augment=False))
    np.testing.assert_array_equal(no_aug["reference"], no_aug["target"])
    drc2, lmm2 = fresh()
    train_stage2(drc2, lmm2, codes, data.samples, train, cfg, checkpoint_dir=tmp_path / "st", stop_after=2,
                 progress=False)
    drc2, lmm2 = fresh()
    hb = train_stage2(drc2, lmm2, codes, data.samples, train, cfg, checkpoint_dir=tmp_path / "st", progress=False)
    np.testing.assert_allclose(hb["loss"], ha["loss"], rtol=1e-4)
    with pytest.raises(ValueError, match="mask generator"):
        train_stage2(DRC.for_lmm(base, n_latent=4), base, codes, data.samples, train, cfg, progress=False)


# ---------------------------------------------------------------------------- semantic features
def _tiny_encoder():
    from drclib.backbone.encoder import EncoderConfig, SemanticEncoder

    torch.manual_seed(1)
    return SemanticEncoder(EncoderConfig(n_words=4, widths=(8, 16, 16), dim=24)).eval()


@pytest.mark.parametrize("variant", ["drc", "concat", "mlp"])
def test_semantic_features_feed_the_towers(lmm, codes, tiny_stickers, triplets, variant):
    """With features="semantic" the towers read the frozen encoder's tokens of the images (24 wide
    here) through their own projection to the LMM's width; the encoder gets no gradient."""
    from drclib.drc import VARIANTS, cell_images, cell_tokens

    enc = _tiny_encoder()
    drc = DRC.for_lmm(lmm, encoder=enc, n_latent=4, features="semantic", **VARIANTS[variant])
    images = cell_images(tiny_stickers)
    e = [cell_tokens(drc, lmm, codes, c[:3], images) for c in (triplets.anchor, triplets.pos_style, triplets.pos_sem)]
    assert e[0].shape == (3, 64, 24)
    torch.testing.assert_close(e[0], enc(images[triplets.anchor[:3, 0], triplets.anchor[:3, 1]]))
    zs = drc.stage1_instructions(*e)
    assert zs["sm"].shape[-1] == 32
    sum(z.pow(2).sum() for z in zs.values()).backward()
    assert all(p.grad is None for p in drc.encoder.parameters())
    assert any(p.grad is not None for p in drc.style_tower.parameters())
    drc.train()
    assert not drc.encoder.training, "the frozen encoder stays in eval mode"
    with pytest.raises(ValueError, match="images"):
        drc.image_tokens(lmm, codes[0, :2])
    with pytest.raises(ValueError, match="semantic encoder"):
        DRC.for_lmm(lmm, n_latent=4, features="semantic")


def test_semantic_model_saves_its_encoder(lmm, codes, tiny_stickers, tmp_path):
    from drclib.drc import cell_images, cell_tokens

    drc = DRC.for_lmm(lmm, encoder=_tiny_encoder(), n_latent=4, features="semantic").eval()
    drc.save_pretrained(tmp_path / "m")
    back = DRC.from_pretrained(tmp_path / "m")
    cells = np.array([[0, 1], [2, 3]])
    images = cell_images(tiny_stickers)
    a, b = cell_tokens(drc, lmm, codes, cells, images), cell_tokens(back, lmm, codes, cells, images)
    torch.testing.assert_close(back.instruction(a, a), drc.instruction(b, b))


def test_stage1_trains_on_semantic_features(lmm, codes, tiny_stickers, triplets):
    from drclib.drc import cell_images

    model = PocketLMM.from_stickers(tiny_stickers, n_visual=16, **TINY)
    model.load_state_dict(lmm.state_dict())
    drc = DRC.for_lmm(model, encoder=_tiny_encoder(), n_latent=4, features="semantic", stage1_form="self")
    enc_before = {k: v.clone() for k, v in drc.encoder.state_dict().items()}
    h = train_stage1(drc, model, codes, triplets, Stage1Config(steps=6, batch_size=8, lr=3e-3, warmup=1, bf16=False,
                                                               lora_rank=0), progress=False,
                     images=cell_images(tiny_stickers))
    assert len(h["loss"]) == 6 and np.isfinite(h["loss"]).all()
    for k, v in drc.encoder.state_dict().items():
        torch.testing.assert_close(v, enc_before[k])
    with pytest.raises(ValueError, match="images"):
        train_stage1(drc, model, codes, triplets, Stage1Config(steps=1, batch_size=4, bf16=False, lora_rank=0),
                     progress=False)


def test_stage2_caption_anchor_on_a_slots_model(tiny_stickers, codes, tmp_path):
    """Stage 2 with the caption anchor (a slots model, frozen LMM): the anchor's loss is part
    of the recorded loss, the LMM stays untouched, and the anchor without captions is an error."""
    from drclib.data import make_dataset
    from drclib.drc import caption_words
    from drclib.train import Stage2Config, train_stage2

    data = make_dataset(tiny_stickers, "quick", seed=0, n_users=6)
    train = data.splits["sample"].train
    torch.manual_seed(0)
    base = PocketLMM.from_stickers(tiny_stickers, n_visual=16, **TINY)
    DRC.for_lmm(base, n_latent=12, z_space="slots").save_pretrained(tmp_path / "s1")
    drc = DRC.from_stage1(tmp_path / "s1")
    caps = caption_words(base, tiny_stickers, 12, empty=drc.config.n_words)
    lmm_before = {k: v.clone() for k, v in base.state_dict().items()}
    cfg = Stage2Config(steps=3, batch_size=4, warmup=1, bf16=False, lora_rank=0, caption_weight=10.0)
    h = train_stage2(drc, base, codes, data.samples, train, cfg, progress=False, captions=caps)
    assert len(h["loss"]) == 3 and np.isfinite(h["loss"]).all()
    plain = train_stage2(DRC.from_stage1(tmp_path / "s1"), base, codes, data.samples, train,
                         replace(cfg, caption_weight=0.0), progress=False)
    assert h["loss"][0] > plain["loss"][0] + 1.0, "the anchor's loss (x10) is in the recorded loss"
    for k, v in base.state_dict().items():
        torch.testing.assert_close(v, lmm_before[k])
    with pytest.raises(ValueError, match="captions"):
        train_stage2(DRC.from_stage1(tmp_path / "s1"), base, codes, data.samples, train, cfg, progress=False)


def test_stage2_user_instruction_on_semantic_features(lmm, codes, tiny_stickers, tmp_path):
    """Stage 2 reads a history of semantic tokens narrower (24) than the towers' width (32):
    the masks and z keep the towers' width (regression: the history's features were reshaped
    to the input width and stage 2 crashed on the core-set retrain)."""
    from drclib.drc import cell_images, cell_tokens

    drc = DRC.for_lmm(lmm, encoder=_tiny_encoder(), n_latent=4, features="semantic")
    drc.save_pretrained(tmp_path / "s1")
    model = DRC.from_stage1(tmp_path / "s1")
    images = cell_images(tiny_stickers)
    hist = cell_tokens(model, lmm, codes, np.array([[[0, 1], [1, 2], [2, 3]]] * 2), images)
    ref = cell_tokens(model, lmm, codes, np.array([[3, 4], [4, 5]]), images)
    assert hist.shape == (2, 3, 64, 24)
    z, (m_h, m_r) = model.user_instruction(hist, ref, 0.2, 0.5, return_masks=True)
    assert z.shape == (2, 4, 32) and m_h.shape == (2, 3, 64) and m_r.shape == (2, 64)
    z.pow(2).sum().backward()
    assert any(p.grad is not None for p in model.masks.parameters())


@pytest.mark.parametrize("form", ["cross", "self"])
@pytest.mark.parametrize("variant", [{}, {"tower": "mlp"}, {"fusion": "concat"}])
def test_drawn_instructions_equal_the_picked_ones(lmm, codes, triplets, form, variant):
    drc = DRC.for_lmm(lmm, n_latent=4, stage1_form=form, **variant).eval()
    e = [emb(lmm, codes, c[:8]) for c in (triplets.anchor, triplets.pos_style, triplets.pos_sem)]
    which = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    zs = drc.stage1_instructions(*e)
    want = torch.stack([zs[c] for c in COMBINATIONS])[which, torch.arange(8)]
    torch.testing.assert_close(drc.drawn_instructions(*e, which), want, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="which"):
        drc.drawn_instructions(*e, torch.tensor([4] * 8))


# ---------------------------------------------------------------------------- notebook helpers (04, 05)
def test_compare_runs_states_the_gap_and_its_spread():
    from drclib.drc import compare_runs

    steps = np.arange(100)
    a = {"l_x": 2.0 + 0.1 * np.sin(steps), "l_y": np.full(100, 3.0)}
    b = {"l_x": 2.5 + 0.1 * np.cos(steps), "l_y": np.full(100, 3.0)}
    r = compare_runs(a, b, ["l_x", "l_y"], tail=50)
    assert r["tail"] == 50 and r["diff"] == pytest.approx(r["a"] - r["b"]) and r["diff"] < -0.2
    assert r["within_noise"] is False and r["per_key"]["l_y"] == (3.0, 3.0)
    same = compare_runs(a, a, ["l_x"])
    assert same["diff"] == 0 and same["spread"] == 0 and same["within_noise"] is True
    with pytest.raises(ValueError, match="at least one key"):
        compare_runs(a, b, [])


def test_history_keep_rates_split_on_and_off_style_items(lmm, codes):
    import dataclasses
    from types import SimpleNamespace

    from drclib.drc import history_keep_rates

    drc = DRC(dataclasses.replace(DRC.for_lmm(lmm, n_latent=4).config, mask_generator=True)).eval()
    history = np.array([[[0, 1], [0, 2], [3, 4]], [[1, 5], [1, 6], [-1, -1]]])   # one off-style item, one padded
    samples = SimpleNamespace(history=history, style=np.array([0, 1]),
                              draw_reference=lambda i, rng: np.array([2, 7 + i]))
    r = history_keep_rates(drc, lmm, codes, samples, [0, 1], alpha_s=0.5)
    assert r["keep"].shape == (2, 3) and np.isnan(r["keep"][1, 2])
    assert r["off"].tolist() == [[False, False, True], [False, False, False]] and (r["n_on"], r["n_off"]) == (4, 1)
    # the mask keeps 1 - alpha_s of the real history tokens of each sample
    assert np.nanmean(r["keep"][0]) == pytest.approx(0.5, abs=0.02) and np.nanmean(r["keep"][1]) == pytest.approx(0.5, abs=0.02)
    assert r["off_style"] == pytest.approx(r["keep"][0, 2]) and r["off_style_se"] is None
    with pytest.raises(ValueError, match="no mask generator"):
        history_keep_rates(DRC.for_lmm(lmm, n_latent=4), lmm, codes, samples, [0])


def test_swap_pipeline_rates_give_a_pipeline_a_as_history_and_b_as_reference(tiny_stickers):
    from drclib.drc import swap_pipeline_rates

    calls = []

    def pipe(hist, ref, **kw):
        calls.append((len(hist), [len(h) for h in hist], len(ref), kw))
        return torch.zeros(len(ref), 3, 32, 32)

    class Judge:
        def __init__(self, cls):
            self.cls = cls

        def predict(self, images):
            return torch.full((len(images),), self.cls)

        def topk(self, images, k):
            return None, torch.full((len(images), k), self.cls)

    a, b = np.array([[0, 1], [1, 2], [2, 3]]), np.array([[3, 4], [4, 5], [5, 6]])
    r = swap_pipeline_rates(pipe, Judge(0), Judge(4), tiny_stickers, (a, b), batch_size=2)
    assert [c[:3] for c in calls] == [(2, [1, 1], 2), (1, [1], 1)] and calls[0][3]["greedy"] is True
    assert r["n"] == 3 and r["style_of_A"] == pytest.approx(1 / 3) and r["emoji_of_B"] == pytest.approx(1 / 3)
