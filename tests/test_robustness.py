"""Reproducibility and bad input at the places a user hands something to the kit.

Kinds of bad input tried here (23), each must give a clear error that says what was wrong,
and never lose what was saved before:

pipeline (DRCPipeline.__call__ / load_image):
 1. a grayscale image (accepted: converted)       2. an RGBA image (accepted: composited on white)
 3. a 1 x 1 image and a 500 x 300 image (accepted: resized)
 4. an empty history                               5. a history of 40 images (too long)
 6. a NaN array                                    7. an inf array
 8. alpha_m > 1                                    9. alpha_s < 0
10. a path that does not exist                    11. a file that is not an image
12. a 5-channel array
from_pretrained / checkpoints:
13. a pipeline folder without pipeline.json       14. a truncated DRC weights file
15. a DRC state dict of the wrong shape           16. a stage-1 model used with another LMM
17. a LoRA adapter file that is not safetensors   18. a save killed half-way (previous pipeline intact)
command line (drc generate):
19. a missing history file                        20. alpha_m outside [0, 1]
widgets:
21. every history image switched off (message in the app, no exception)
data:
22. a sticker file of the wrong format version    23. a missing sticker file

The data-file and checkpoint-format cases are also covered in depth by test_stickers.py and
test_checkpoint.py; the ones here go through the user-facing entry points.

Reproducibility: the same seed gives the same dataset, the same stage-1 and stage-2 training
losses and the same generated images twice; resumed training ends where uninterrupted
training ends (test_drc.py, test_backbone.py); checkpoint writes are atomic and loading never
unpickles (safetensors only; test_checkpoint.py).
"""


import numpy as np
import pytest
import torch
from PIL import Image

from drclib.backbone import PocketLMM
from drclib.checkpoint import CheckpointError
from drclib.drc import DRC
from drclib.pipeline import DRCPipeline
from tests.conftest import TINY_LMM, tiny_pipeline

LMM = TINY_LMM
build = tiny_pipeline


@pytest.fixture(scope="module")
def pipe(tiny_stickers):
    return build(tiny_stickers)


def img(seed, size=(32, 32), mode="RGB"):
    ch = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], ch), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if ch == 1 else arr, mode)


def test_accepted_odd_images(pipe):
    out = pipe([img(0, mode="L"), img(1, mode="RGBA"), img(2, (1, 1)), img(3, (500, 300))], img(4, (7, 90)),
               seed=0, output_type="pt")
    assert out.shape == (1, 3, 32, 32)


@pytest.mark.parametrize("history, reference, kw, err, msg", [
    ([], None, {}, ValueError, "history is empty"),
    ([None] * 40, None, {}, ValueError, "at most 16"),
    ([np.full((32, 32, 3), np.nan)], None, {}, ValueError, "NaN"),
    ([np.full((32, 32, 3), np.inf)], None, {}, ValueError, "NaN or infinite"),
    (None, None, {"alpha_m": 1.01}, ValueError, r"alpha_m must lie in \[0, 1\]"),
    (None, None, {"alpha_s": -0.5}, ValueError, r"alpha_s must lie in \[0, 1\]"),
    (["/nowhere/x.png"], None, {}, FileNotFoundError, "does not exist"),
    (None, np.zeros((8, 8, 5), np.uint8), {}, ValueError, "H x W x 3"),
])
def test_pipeline_bad_input(pipe, history, reference, kw, err, msg):
    history = [img(0)] if history is None else [img(0) if h is None else h for h in history]
    reference = img(1) if reference is None else reference
    with pytest.raises(err, match=msg):
        pipe(history, reference, **kw)


def test_file_that_is_not_an_image(pipe, tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("hello")
    with pytest.raises(ValueError, match="cannot read .* as an image"):
        pipe([p], img(1))


def test_checkpoint_problems(pipe, tmp_path, tiny_stickers):
    with pytest.raises(CheckpointError, match="pipeline.json is missing"):
        DRCPipeline.from_pretrained(tmp_path)
    pipe.save_pretrained(tmp_path / "p", copy_base=True)
    w = tmp_path / "p" / "drc" / "model.safetensors"
    good = w.read_bytes()
    w.write_bytes(good[:len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        DRCPipeline.from_pretrained(tmp_path / "p")
    w.write_bytes(good)
    with pytest.raises(CheckpointError, match="does not match"):
        DRC.from_pretrained(tmp_path / "p" / "drc", n_latent=8)
    lora = tmp_path / "q" / "lora"
    lmm = PocketLMM.from_stickers(tiny_stickers, n_visual=32, **LMM)
    lmm.add_lora(2, 4)
    lmm.save_lora(lora)
    (lora / "adapter_model.safetensors").write_bytes(b"PK\x03\x04 a zip, not safetensors")
    with pytest.raises(CheckpointError, match="unreadable"):
        PocketLMM.from_stickers(tiny_stickers, n_visual=32, **LMM).load_lora(lora)


def test_stage1_model_with_another_lmm(tmp_path, tiny_stickers):
    from drclib.drc import lmm_fingerprint, load_stage1

    a, b = (PocketLMM.from_stickers(tiny_stickers, n_visual=32, **LMM) for _ in range(2))
    a.save_pretrained(tmp_path / "a")
    torch.manual_seed(5)
    PocketLMM.from_stickers(tiny_stickers, n_visual=32, **LMM).save_pretrained(tmp_path / "b")
    DRC.for_lmm(a, n_latent=4).save_pretrained(tmp_path / "s1", extra={"lmm": lmm_fingerprint(tmp_path / "a")})
    with pytest.raises(CheckpointError, match="trained against another LMM"):
        load_stage1(tmp_path / "s1", tmp_path / "b")


def test_save_killed_half_way_keeps_the_previous_pipeline(pipe, tmp_path, monkeypatch):
    pipe.save_pretrained(tmp_path / "p", copy_base=True)
    before = pipe([img(0)], img(1), greedy=True, output_type="pt")
    import safetensors.torch as st

    def boom(*a, **k):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(st, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        pipe.save_pretrained(tmp_path / "p", copy_base=True)
    monkeypatch.undo()
    back = DRCPipeline.from_pretrained(tmp_path / "p", device="cpu")
    after = back([img(0)], img(1), greedy=True, output_type="pt")
    assert (before - after).abs().max() < 0.1                  # still the old, complete pipeline
    assert not list((tmp_path / "p").rglob("*.tmp*"))


def test_cli_bad_input(pipe, tmp_path, capsys):
    from drclib.cli import main

    pipe.save_pretrained(tmp_path / "p", copy_base=True)
    img(0).save(tmp_path / "h.png")
    base = ["generate", "--pipeline", str(tmp_path / "p"), "--device", "cpu", "--out", str(tmp_path / "o.png")]
    assert main(base + ["--history", str(tmp_path / "missing.png"), "--reference", str(tmp_path / "h.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(base + ["--history", str(tmp_path / "h.png"), "--reference", str(tmp_path / "h.png"),
                        "--alpha-m", "-2"]) == 2
    assert "alpha_m must lie in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_widget_empty_history_is_a_message(pipe, tiny_stickers):
    from drclib.data import make_dataset
    from drclib.widgets import DRCWidget

    ui = DRCWidget(pipe, tiny_stickers, make_dataset(tiny_stickers, "quick", n_users=6), part="train")
    for t in ui.history_toggles:
        t.value = False
    assert ui.generate() is False and "history is empty" in ui.message


def test_data_file_problems(tmp_path, shipped_stickers):
    from drclib.data import StickerSet
    from drclib.data.stickers import DataFileError, default_path

    with pytest.raises(DataFileError, match="does not exist|missing|not found"):
        StickerSet.load(tmp_path / "none.npz")
    arrays = dict(np.load(default_path(), allow_pickle=False).items())
    arrays["format_version"] = np.array(999)
    np.savez(tmp_path / "v.npz", **arrays)
    with pytest.raises(DataFileError, match="version"):
        StickerSet.load(tmp_path / "v.npz", verify=False)


def test_same_seed_same_numbers(tiny_stickers):
    from drclib.data import make_dataset
    from drclib.data.users import Triplets
    from drclib.train import Stage1Config, train_stage1

    d1, d2 = make_dataset(tiny_stickers, "quick", seed=3), make_dataset(tiny_stickers, "quick", seed=3)
    np.testing.assert_array_equal(d1.samples.history, d2.samples.history)
    np.testing.assert_array_equal(d1.triplets.anchor, d2.triplets.anchor)
    codes = torch.randint(0, 32, (6, tiny_stickers.n_emoji, 64), generator=torch.Generator().manual_seed(0))
    t = Triplets(d1.triplets.anchor[:16], d1.triplets.pos_style[:16], d1.triplets.pos_sem[:16])
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        lmm = PocketLMM.from_stickers(tiny_stickers, n_visual=32, **LMM)
        drc = DRC.for_lmm(lmm, n_latent=4)
        runs.append(train_stage1(drc, lmm, codes, t, Stage1Config(steps=3, batch_size=4, bf16=False, lora_rank=2),
                                 progress=False)["loss"])
    assert runs[0] == runs[1]
    p1, p2 = build(tiny_stickers, seed=1), build(tiny_stickers, seed=1)
    torch.testing.assert_close(p1([img(0)], img(1), seed=7, output_type="pt"),
                               p2([img(0)], img(1), seed=7, output_type="pt"))
