"""The optional SDXL re-rendering adapter: finding weights on disk only, and the code path
with a tiny random pipeline (no download, no real SDXL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from drclib.drc.rerender import (
    SDXL_REPO,
    SDXLRerenderer,
    find_sdxl_weights,
    rerender_prompt,
    tiny_random_pipeline,
)

NAMES = ["cat face", "rocket"]
HINTS = ["noto style", "twemoji style"]


@pytest.fixture
def no_weights(tmp_path, monkeypatch) -> Path:
    """Point DRC_SDXL_PATH and every hub cache variable at empty temporary folders."""
    for name in ("DRC_SDXL_PATH", "HF_HUB_CACHE", "HF_HOME"):
        folder = tmp_path / name.lower()
        folder.mkdir()
        monkeypatch.setenv(name, str(folder))
    return tmp_path


def _fake_snapshot(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    return folder


@pytest.fixture(scope="module")
def tiny_pipe():
    torch.set_num_threads(1)
    return tiny_random_pipeline(seed=0)


def test_find_sdxl_weights_absent(no_weights):
    path, reason = find_sdxl_weights()
    assert path is None
    assert "absent" in reason
    assert "DRC_SDXL_PATH" in reason and str(no_weights / "hf_hub_cache") in reason
    assert "ground-truth" in reason


def test_find_sdxl_weights_from_env(no_weights, monkeypatch):
    snapshot = _fake_snapshot(no_weights / "my_sdxl")
    monkeypatch.setenv("DRC_SDXL_PATH", str(snapshot))
    path, message = find_sdxl_weights()
    assert path == snapshot
    assert message.startswith("found at") and str(snapshot) in message


@pytest.mark.parametrize("via", ["HF_HUB_CACHE", "HF_HOME"])
def test_find_sdxl_weights_in_hub_cache(no_weights, monkeypatch, via):
    monkeypatch.delenv("DRC_SDXL_PATH")
    if via == "HF_HOME":
        monkeypatch.delenv("HF_HUB_CACHE")
        cache = no_weights / "hf_home" / "hub"
    else:
        cache = no_weights / "hf_hub_cache"
    repo_dir = cache / ("models--" + SDXL_REPO.replace("/", "--"))
    snapshot = _fake_snapshot(repo_dir / "snapshots" / "0123abcd")
    (repo_dir / "snapshots" / "deadbeef").mkdir()  # an incomplete snapshot, without model_index.json
    path, message = find_sdxl_weights()
    assert path == snapshot
    assert "found at" in message


def test_hub_cache_prefers_refs_main(no_weights, monkeypatch):
    monkeypatch.delenv("DRC_SDXL_PATH")
    repo_dir = no_weights / "hf_hub_cache" / ("models--" + SDXL_REPO.replace("/", "--"))
    first = _fake_snapshot(repo_dir / "snapshots" / "aaaa")
    _fake_snapshot(repo_dir / "snapshots" / "bbbb")
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("aaaa\n")
    assert find_sdxl_weights()[0] == first


def test_from_disk_absent_returns_reason(no_weights):
    rerenderer, reason = SDXLRerenderer.from_disk()
    assert rerenderer is None
    assert "absent" in reason


def test_from_disk_loads_a_saved_pipeline(tiny_pipe, tmp_path, monkeypatch):
    """from_disk works offline on any diffusers snapshot; the tiny pipeline stands in for SDXL."""
    folder = tmp_path / "snapshot"
    tiny_pipe.save_pretrained(folder)
    monkeypatch.setenv("DRC_SDXL_PATH", str(folder))
    rerenderer, message = SDXLRerenderer.from_disk(steps=1)
    assert rerenderer is not None, message
    assert rerenderer.render_size == 32
    out = rerenderer(NAMES[:1], HINTS[:1])
    assert out.shape == (1, 3, 32, 32)


def test_rerender_prompt():
    prompt = rerender_prompt("cat face", "noto style")
    assert prompt.startswith("a sticker of cat face, noto style")
    assert "white background" in prompt


def test_tiny_pipeline_renders(tiny_pipe):
    rerenderer = SDXLRerenderer(tiny_pipe, steps=2, size=32)
    out = rerenderer(NAMES, HINTS, seed=0)
    assert out.shape == (2, 3, 32, 32)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, rerenderer(NAMES, HINTS, seed=0))
    assert not torch.equal(out, rerenderer(NAMES, HINTS, seed=1))


def test_downsizes_to_size(tiny_pipe):
    rerenderer = SDXLRerenderer(tiny_pipe, steps=1, size=16, render_size=64)
    out = rerenderer(NAMES, HINTS, seed=3)
    assert out.shape == (2, 3, 16, 16)
    assert out.min() >= 0 and out.max() <= 1


def test_tiny_pipeline_is_deterministic_and_leaves_global_rng():
    state = torch.random.get_rng_state()
    a, b = tiny_random_pipeline(seed=0), tiny_random_pipeline(seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    for p, q in zip(a.unet.parameters(), b.unet.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("names, hints", [
    (["cat face", "rocket"], ["noto style"]),   # mismatched lengths
    ([], []),                                   # empty
    (["cat face", 3], ["noto style", "twemoji style"]),  # not str
    (["cat face"], [None]),
    ("cat face", "noto style"),                 # a bare str, not a list
])
def test_bad_input(tiny_pipe, names, hints):
    rerenderer = SDXLRerenderer(tiny_pipe, steps=1)
    with pytest.raises(ValueError):
        rerenderer(names, hints)
