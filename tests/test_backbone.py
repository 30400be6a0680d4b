"""drclib.backbone and backbone pretraining (drclib.train): vocabulary layout, generation with
and without the KV cache, constraints, seeds, captions, save/load, resume, bad input."""

import numpy as np
import pytest
import torch

from drclib.backbone import BOS, EOS, IMG, IMG_END, PAD, SPECIALS, PocketLMM, build_text_tokenizer
from drclib.checkpoint import CheckpointError
from drclib.train import IGNORE, PretrainConfig, pretrain_backbone, pretraining_sequences

TINY = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_positions=96)


@pytest.fixture(scope="module")
def lmm(tiny_stickers):
    torch.manual_seed(0)
    return PocketLMM.from_stickers(tiny_stickers, n_visual=16, **TINY).eval()


@pytest.fixture(scope="module")
def codes(tiny_stickers):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 16, (6, tiny_stickers.n_emoji, 64), generator=g)


def test_vocabulary_layout(lmm):
    tok = lmm.text_tokenizer
    assert tok.convert_ids_to_tokens(list(range(len(SPECIALS)))) == list(SPECIALS)
    assert tok.convert_ids_to_tokens([lmm.visual_offset, lmm.visual_offset + 15]) == ["<v00>", "<v15>"]
    assert len(tok) == lmm.config.vocab_size
    ids = lmm.t2i_ids("a sticker of thing number 3 in noto style")
    assert ids[0] == BOS and ids[-1] == IMG and all(i >= lmm.visual_offset + 16 for i in ids[1:-1])
    assert lmm.describe_ids(ids)[1:4] == ["a", "sticker", "of"]
    assert lmm.text_ids("Ünknown wörd")[0] == tok.unk_token_id  # never-seen words become <unk>
    seq = lmm.i2t_ids(torch.arange(64) % 16, "a sticker")
    assert seq[:2] == [BOS, IMG] and seq[66] == IMG_END and seq[-1] == EOS


def test_text_tokenizer_lowercases_and_strips_accents():
    tok = build_text_tokenizer(["Piñata Face", "café"], n_visual=4)
    assert tok.convert_ids_to_tokens(tok("PINATA cafe", add_special_tokens=False)["input_ids"]) == ["pinata", "cafe"]


def test_generation_is_constrained_seeded_and_cache_exact(lmm):
    a = lmm.generate_images(["a sticker of thing number 1 in noto style"], num_images=3, seed=5)
    b = lmm.generate_images(["a sticker of thing number 1 in noto style"], num_images=3, seed=5)
    c = lmm.generate_images(["a sticker of thing number 1 in noto style"], num_images=3, seed=5, use_cache=False)
    assert a.shape == (3, 64) and a.dtype == torch.long and a.min() >= 0 and a.max() < 16
    assert torch.equal(a, b) and torch.equal(a, c)       # the KV cache changes speed, not results
    assert not torch.equal(a, lmm.generate_images(["a sticker of thing number 1 in noto style"],
                                                  num_images=3, seed=6))
    g = lmm.generate_images(["a sticker", "a sticker of thing number 1 in noto style"], greedy=True)
    one = lmm.generate_images(["a sticker of thing number 1 in noto style"], greedy=True)
    assert torch.equal(g[1], one[0])                      # left padding does not change a prompt's output
    assert lmm.generate_images("x", top_k=1, seed=0).shape == (1, 64)


def test_generation_from_inputs_embeds_matches_text(lmm):
    ids = torch.tensor([lmm.t2i_ids("a sticker of thing number 2 in noto style")[:-1]])
    from_text = lmm.generate_images("a sticker of thing number 2 in noto style", greedy=True)
    from_emb = lmm.generate_images(inputs_embeds=lmm.embed(ids), greedy=True)
    assert torch.equal(from_text, from_emb)


def test_factor_caption_names_one_factor():
    from drclib.backbone import factor_caption, sticker_caption

    assert factor_caption(name="cat face") == "a sticker of cat face"
    assert factor_caption(style="noto") == "a sticker in noto style"
    assert sticker_caption("cat face", "noto").startswith(factor_caption(name="cat face") + " ")
    for bad in (dict(), dict(name="cat face", style="noto")):
        with pytest.raises(ValueError, match="exactly one"):
            factor_caption(**bad)


def test_guidance_scores_codes_by_the_prompts_difference(lmm):
    p, neg = "a sticker of thing number 1 in noto style", "a sticker of thing number 1"
    plain = lmm.generate_images(p, greedy=True)
    # guiding away from the prompt itself changes nothing: the difference of the two is zero
    assert torch.equal(plain, lmm.generate_images(p, greedy=True, negative_text=p, guidance_scale=3.0))
    w = 4.0
    g = lmm.generate_images([p, p], greedy=True, negative_text=neg, guidance_scale=w, num_images=2)
    assert g.shape == (4, 64) and torch.equal(g[0], g[3])
    assert torch.equal(g, lmm.generate_images([p, p], greedy=True, negative_text=[neg, neg], guidance_scale=w,
                                              num_images=2, use_cache=False))
    # the first code by hand: argmax of (1 + w) log p(c | prompt) - w log p(c | negative)
    lo, hi = lmm.visual_offset, lmm.visual_offset + 16
    with torch.no_grad():
        def first_logp(text):
            return torch.log_softmax(lmm(input_ids=torch.tensor([lmm.t2i_ids(text)])).logits[0, -1, lo:hi], -1)
        want = ((1 + w) * first_logp(p) - w * first_logp(neg)).argmax()
    assert g[0, 0] == want
    s = lmm.generate_images(p, negative_text=neg, guidance_scale=1.0, seed=3, num_images=2)
    assert torch.equal(s, lmm.generate_images(p, negative_text=neg, guidance_scale=1.0, seed=3, num_images=2))


@pytest.mark.parametrize("kwargs, msg", [
    (dict(text="x", negative_text="y"), "only used with guidance_scale"),
    (dict(text="x", guidance_scale=1.0), "needs text prompts and negative_text"),
    (dict(inputs_embeds=torch.zeros(1, 2, 32), negative_text="y", guidance_scale=1.0), "needs text prompts"),
    (dict(text=["x", "z"], negative_text=["y"] * 3, guidance_scale=1.0), "3 prompts for 2"),
    (dict(text="x", negative_text="y", guidance_scale=-1.0), "guidance_scale must be"),
    (dict(text="x", negative_text="y", guidance_scale=float("nan")), "guidance_scale must be"),
])
def test_guidance_bad_input(lmm, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        lmm.generate_images(**kwargs)


@pytest.mark.parametrize("kwargs, msg", [
    (dict(), "exactly one"),
    (dict(text="x", inputs_embeds=torch.zeros(1, 2, 32)), "exactly one"),
    (dict(text=[]), "non-empty"),
    (dict(text="x", num_images=0), "num_images"),
    (dict(text="x", temperature=0.0), "temperature"),
    (dict(text="x", top_k=99), "top_k"),
    (dict(inputs_embeds=torch.zeros(2, 3)), "inputs_embeds must be"),
    (dict(inputs_embeds=torch.full((1, 2, 32), float("nan"))), "NaN"),
    (dict(inputs_embeds=torch.zeros(1, 2, 32), attention_mask=torch.tensor([[1, 0]])), "left-padded"),
])
def test_generation_bad_input(lmm, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        lmm.generate_images(**kwargs)


def test_codes_validation_and_visual_embeddings(lmm):
    e = lmm.visual_embeddings(torch.zeros(2, 64, dtype=torch.long))
    assert e.shape == (2, 64, 32)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        lmm.codes_to_ids(torch.tensor([16]))
    with pytest.raises(ValueError, match="integer"):
        lmm.codes_to_ids(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="codes must be"):
        lmm.caption(torch.zeros(2, 10, dtype=torch.long))


def test_pretraining_sequences_label_only_the_output(lmm, tiny_stickers, codes):
    cells = np.array([[0, 1], [3, 7]])
    ids, labels = pretraining_sequences(lmm, tiny_stickers, codes, cells, "t2i")
    img_at = (ids[0] == IMG).nonzero()[0, 0]
    assert (labels[0, :img_at + 1] == IGNORE).all()
    assert torch.equal(labels[0, img_at + 1:img_at + 65], codes[0, 1] + lmm.visual_offset)
    ids, labels = pretraining_sequences(lmm, tiny_stickers, codes, cells, "i2t")
    assert (labels[1, :67] == IGNORE).all() and EOS in labels[1].tolist()
    with pytest.raises(ValueError, match="direction"):
        pretraining_sequences(lmm, tiny_stickers, codes, cells, "both")


def test_pretraining_learns_and_captions(tiny_stickers, codes):
    torch.manual_seed(0)
    m = PocketLMM.from_stickers(tiny_stickers, n_visual=16, **(TINY | dict(hidden_size=64)))
    cells = np.array([[0, 0], [1, 1]])
    h = pretrain_backbone(m, tiny_stickers, codes, cells, PretrainConfig(steps=120, batch_size=4, lr=1e-2,
                                                                        warmup=5, bf16=False), progress=False)
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    out = m.generate_images("a sticker of thing number 0 in twemoji style", greedy=True)
    assert (out[0] == codes[0, 0]).float().mean() > 0.5   # it memorised the two stickers
    assert m.caption(codes[1, 1][None])[0] == "a sticker of thing number 1 in noto style"


def test_pretraining_resume_matches_uninterrupted(tiny_stickers, codes, tmp_path):
    cells = np.array([[0, 0], [1, 1], [2, 5]])
    cfg = PretrainConfig(steps=8, batch_size=4, warmup=2, bf16=False, checkpoint_every=3)

    def fresh():
        torch.manual_seed(1)
        return PocketLMM.from_stickers(tiny_stickers, n_visual=16, **TINY)

    a = fresh()
    ha = pretrain_backbone(a, tiny_stickers, codes, cells, cfg, progress=False)
    b = fresh()
    pretrain_backbone(b, tiny_stickers, codes, cells, cfg, checkpoint_dir=tmp_path, stop_after=5, progress=False)
    b = fresh()  # a new process would start from fresh weights, then resume
    hb = pretrain_backbone(b, tiny_stickers, codes, cells, cfg, checkpoint_dir=tmp_path, progress=False)
    assert hb["step"] == ha["step"]
    np.testing.assert_allclose(hb["loss"], ha["loss"], rtol=1e-4)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)


def test_save_and_load(lmm, tmp_path):
    lmm.save_pretrained(tmp_path / "m", dtype=torch.float16)
    back = PocketLMM.from_pretrained(tmp_path / "m")
    assert back.config == lmm.config and len(back.text_tokenizer) == len(lmm.text_tokenizer)
    assert back.text_ids("a sticker") == lmm.text_ids("a sticker")
    (tmp_path / "m" / "tokenizer.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="unreadable tokenizer"):
        PocketLMM.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.json is missing"):
        PocketLMM.from_pretrained(tmp_path / "m")


def test_bad_cells(lmm, tiny_stickers, codes):
    with pytest.raises(ValueError, match="cells"):
        pretrain_backbone(lmm, tiny_stickers, codes, np.zeros((0, 2), int), progress=False)
    assert PAD == 0


def test_eval_cell_subsets_are_fixed_and_respect_the_split(shipped_stickers):
    from drclib.data import heldout_cells
    from drclib.train import eval_cell_subsets

    a, b = eval_cell_subsets(shipped_stickers, 50), eval_cell_subsets(shipped_stickers, 50)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    held = heldout_cells(shipped_stickers)
    assert not held[a["train_cells"][:, 0], a["train_cells"][:, 1]].any()
    assert held[a["heldout_cells"][:, 0], a["heldout_cells"][:, 1]].all()


def _shipped_lmm_ready():
    from drclib.backbone import default_checkpoint_dir

    d = default_checkpoint_dir()
    return (d / "config.json").is_file() and '"probe"' in (d / "config.json").read_text()


@pytest.mark.skipif(not _shipped_lmm_ready(), reason="no evaluated shipped LMM yet")
@pytest.mark.parametrize("which", ["shipped", "plain"])
def test_shipped_lmm_reproduces_its_card(which):
    """The shipped LMM, and the plain one it replaced (data/checkpoints/plain/lmm), redraw the probe
    cells of their card as the card says."""
    from drclib import judges
    from drclib.backbone import PocketLMM, load_default
    from drclib.backbone import tokenizer as vt
    from drclib.judges import evaluate_text_to_image
    from drclib.pipeline import plain_lmm_dir
    from drclib.train import PROBE_CELLS, eval_cell_subsets, model_stickers

    lmm = load_default() if which == "shipped" else PocketLMM.from_pretrained(plain_lmm_dir() / "lmm")
    probe = lmm.training_info["probe"]
    stickers = model_stickers(lmm)                      # the concept set it was trained on
    assert lmm.training_info["concept_set"] == "core" and stickers.n_emoji == 128
    cells = eval_cell_subsets(stickers, lmm.training_info["probe_subset_n"])["train_cells"][:PROBE_CELLS]
    got = evaluate_text_to_image(lmm, vt.load_default(), *judges.load_judges(stickers), stickers, cells)
    for k in ("style_acc", "emoji_top1", "both"):      # greedy decoding: equal up to float noise
        assert abs(got[k] - probe[k]) <= 0.05, (k, got[k], probe[k])
    if which == "shipped":                              # the drawings the rates come from, one per cell
        tok, (style_clf, emoji_clf) = vt.load_default(), judges.load_judges(stickers)
        drawn = judges.draw_cells(lmm, tok, stickers, cells[:3])
        assert drawn.shape == (3, 3, 32, 32) and 0 <= drawn.min() and drawn.max() <= 1
        rates = judges.classify_rates(style_clf, emoji_clf, drawn, cells[:3, 0], cells[:3, 1])
        scored = evaluate_text_to_image(lmm, tok, style_clf, emoji_clf, stickers, cells[:3])
        assert all(scored[k] == pytest.approx(float(rates[k])) for k in ("style_acc", "emoji_top1", "both"))


def test_lora_starts_as_identity_saves_and_loads(tiny_stickers, tmp_path):
    torch.manual_seed(0)
    m = PocketLMM.from_stickers(tiny_stickers, n_visual=16, **TINY).eval()
    x = torch.randint(0, 40, (2, 9))
    before = m(input_ids=x).logits
    m.add_lora(4, 8)
    torch.testing.assert_close(m(input_ids=x).logits, before)         # LoRA B starts at zero
    with pytest.raises(ValueError, match="already has LoRA"):
        m.add_lora()
    m.freeze_base()
    trainable = [n for n, p in m.lm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    for p in m.lora_parameters():
        torch.nn.init.normal_(p, std=0.1)
    after = m(input_ids=x).logits
    m.save_lora(tmp_path / "lora")
    assert sorted(p.name for p in (tmp_path / "lora").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    torch.manual_seed(0)
    fresh = PocketLMM.from_stickers(tiny_stickers, n_visual=16, **TINY).eval()
    fresh.load_lora(tmp_path / "lora")
    torch.testing.assert_close(fresh.eval()(input_ids=x).logits, after)
    assert fresh.generate_images("thing number 1", greedy=True).shape == (1, 64)


def test_lora_bad_files(tiny_stickers, tmp_path):
    m = PocketLMM.from_stickers(tiny_stickers, n_visual=16, **TINY)
    with pytest.raises(CheckpointError, match="adapter_config.json is missing"):
        m.load_lora(tmp_path)
    m.add_lora(2, 4)
    m.save_lora(tmp_path / "a")
    (tmp_path / "a" / "adapter_model.safetensors").write_bytes(b"\0" * 10)
    with pytest.raises(CheckpointError, match="unreadable"):
        PocketLMM.from_stickers(tiny_stickers, n_visual=16, **TINY).load_lora(tmp_path / "a")
    with pytest.raises(ValueError, match="no LoRA"):
        PocketLMM.from_stickers(tiny_stickers, n_visual=16, **TINY).lora_state_dict()
