"""drclib.checkpoint: save/load round trips, fp16 shipping, and every way a checkpoint can be bad."""

from dataclasses import dataclass

import pytest
import torch

from drclib.checkpoint import (CONFIG_NAME, WEIGHTS_NAME, CheckpointError, Pretrained, load_checkpoint,
                               save_checkpoint)


@dataclass(frozen=True)
class TinyConfig:
    width: int = 4
    sizes: tuple = (2, 3)


class Tiny(Pretrained):
    config_class = TinyConfig

    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        self.lin = torch.nn.Linear(config.width, config.sizes[0])
        self.emb = torch.nn.Embedding(config.sizes[1], config.width)


class Other(Tiny):
    pass


def test_round_trip_and_fp16(tmp_path):
    torch.manual_seed(0)
    m = Tiny(TinyConfig())
    m.save_pretrained(tmp_path / "a", card="# card\n", extra={"psnr": 20.5})
    back = Tiny.from_pretrained(tmp_path / "a")
    assert back.config == m.config and back.config.sizes == (2, 3)
    assert torch.equal(back.lin.weight, m.lin.weight)
    assert back.training_info == {"psnr": 20.5} and (tmp_path / "a" / "README.md").read_text() == "# card\n"
    m.save_pretrained(tmp_path / "h", dtype=torch.float16)
    half = Tiny.from_pretrained(tmp_path / "h")
    assert half.lin.weight.dtype == torch.float32
    assert torch.allclose(half.lin.weight, m.lin.weight, atol=1e-3)
    assert not half.training


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint folder"):
        Tiny.from_pretrained(tmp_path / "nothing")
    Tiny(TinyConfig()).save_pretrained(tmp_path / "a")
    (tmp_path / "a" / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        Tiny.from_pretrained(tmp_path / "a")


def test_truncated_weights(tmp_path):
    Tiny(TinyConfig()).save_pretrained(tmp_path / "a")
    w = tmp_path / "a" / WEIGHTS_NAME
    w.write_bytes(w.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="truncated"):
        Tiny.from_pretrained(tmp_path / "a")


def test_corrupt_config_and_wrong_kind(tmp_path):
    Tiny(TinyConfig()).save_pretrained(tmp_path / "a")
    with pytest.raises(CheckpointError, match="holds a Tiny, not a Other"):
        Other.from_pretrained(tmp_path / "a")
    (tmp_path / "a" / CONFIG_NAME).write_text("{oops")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        Tiny.from_pretrained(tmp_path / "a")


def test_state_dict_of_the_wrong_shape(tmp_path):
    Tiny(TinyConfig(width=8)).save_pretrained(tmp_path / "a")
    with pytest.raises(CheckpointError, match="wrong shapes"):
        Tiny.from_pretrained(tmp_path / "a", width=4)
    with pytest.raises(CheckpointError, match="config this kit does not know"):
        Tiny.from_pretrained(tmp_path / "a", colour="red")


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    m = Tiny(TinyConfig())
    m.save_pretrained(tmp_path / "a")
    before = (tmp_path / "a" / WEIGHTS_NAME).read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt("killed during the write")

    import safetensors.torch
    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        Tiny(TinyConfig()).save_pretrained(tmp_path / "a")
    assert (tmp_path / "a" / WEIGHTS_NAME).read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    assert Tiny.from_pretrained(tmp_path / "a") is not None


def test_low_level_functions(tmp_path):
    save_checkpoint(tmp_path / "x", "Thing", {"a": 1}, {"w": torch.ones(2)})
    cfg, state, extra = load_checkpoint(tmp_path / "x")
    assert cfg == {"a": 1} and torch.equal(state["w"], torch.ones(2)) and extra == {}
