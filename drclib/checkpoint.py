"""Saving and loading the kit's models, the Hugging Face way, safely.

A saved model is a folder holding ``config.json`` (the class name, the format version and the
model's config) and ``model.safetensors`` (the weights; safetensors never unpickles, so a
downloaded checkpoint cannot run code), plus an optional ``README.md`` model card. Writes are
atomic: each file goes to a temporary name and is renamed into place, the weights first and
the config last, so a write killed half-way leaves the previous checkpoint loadable.

Any ``torch.nn.Module`` whose ``config`` attribute is a dataclass, and whose constructor takes
that config, gets ``save_pretrained`` / ``from_pretrained`` by inheriting :class:`Pretrained`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, TypeVar

import torch

from drclib.io import atomic_path

CHECKPOINT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"

T = TypeVar("T", bound="Pretrained")


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing, incomplete, corrupt, or holds another model."""


def save_checkpoint(folder: str | os.PathLike, kind: str, config: dict, state_dict: dict[str, torch.Tensor],
                    *, dtype: torch.dtype | None = None, card: str | None = None,
                    extra: dict | None = None) -> Path:
    """Write ``state_dict`` and ``config`` to ``folder`` (created if needed), atomically.

    ``dtype`` (e.g. ``torch.float16`` for shipped weights) casts floating tensors on the way
    out; ``extra`` is stored beside the config (training metadata, metrics).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in state_dict.items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous().clone()  # clone: shared (tied) storage cannot be saved twice
    meta = {"kind": kind, "checkpoint_version": CHECKPOINT_VERSION, "config": config}
    if extra:
        meta["extra"] = extra
    with atomic_path(folder / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"kind": kind})
    if card is not None:
        with atomic_path(folder / CARD_NAME) as tmp:
            tmp.write_text(card, encoding="utf-8")
    with atomic_path(folder / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder


def load_checkpoint(folder: str | os.PathLike, kind: str | None = None) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """Read a checkpoint folder; returns ``(config, state_dict, extra)``.

    Raises :class:`CheckpointError` with what is wrong and what to do when the folder or a
    file is missing, a file is truncated or corrupt, or the folder holds another kind of model.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"no checkpoint folder at {folder}: train the model first or give the "
                              "path of a folder written by save_pretrained")
    cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise CheckpointError(f"checkpoint {folder} is incomplete: {p.name} is missing; "
                                  "save the model again (or restore the folder from git)")
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e}); the checkpoint is corrupt, save it again") from e
    if not isinstance(meta, dict) or "config" not in meta or "kind" not in meta:
        raise CheckpointError(f"{cfg_path} is not a drc-kit checkpoint config (no 'kind'/'config')")
    if kind is not None and meta["kind"] != kind:
        raise CheckpointError(f"checkpoint {folder} holds a {meta['kind']}, not a {kind}; "
                              "check the path")
    if meta.get("checkpoint_version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {folder} has format version {meta.get('checkpoint_version')}, "
                              f"this kit reads {CHECKPOINT_VERSION}; retrain or use a matching kit version")
    try:
        state = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{w_path} is unreadable ({e}); it may be truncated: save the model again "
                              "or restore it from git") from e
    return meta["config"], state, meta.get("extra", {})


def load_state_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``module.load_state_dict(state)`` with one clear error listing missing, unexpected and
    wrongly shaped tensors (a checkpoint that does not match the model's config)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append(f"wrong shapes {shapes[:3]}{'...' if len(shapes) > 3 else ''}")
        raise CheckpointError(f"checkpoint {source} does not match this model ({'; '.join(parts)}); "
                              "it was saved from another configuration")
    with torch.no_grad():
        module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


class Pretrained(torch.nn.Module):
    """Mixin: ``save_pretrained(folder)`` and ``cls.from_pretrained(folder)`` for a module
    built from a dataclass config (``self.config``, the constructor's first argument).

    Subclasses set ``config_class`` to their config dataclass.
    """

    config_class: type = None  # type: ignore[assignment]

    @classmethod
    def kind(cls) -> str:
        return cls.__name__

    def save_files(self, folder: Path) -> None:
        """Hook: write files that belong beside the weights (e.g. a text tokenizer)."""

    @classmethod
    def load_files(cls, folder: Path, config: Any) -> dict[str, Any]:
        """Hook: constructor keyword arguments read from the folder (e.g. a text tokenizer)."""
        return {}

    def save_pretrained(self, folder: str | os.PathLike, *, dtype: torch.dtype | None = None,
                        card: str | None = None, extra: dict | None = None) -> Path:
        """Save config and weights to ``folder`` (atomic; ``dtype=torch.float16`` halves the size)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.save_files(folder)
        return save_checkpoint(folder, self.kind(), dataclasses.asdict(self.config), self.state_dict(),
                               dtype=dtype, card=card, extra=extra)

    @classmethod
    def from_pretrained(cls: type[T], folder: str | os.PathLike, *, device: str | torch.device = "cpu",
                        **config_overrides: Any) -> T:
        """Build the model from ``folder``'s config and load its weights (as float32)."""
        config, state, extra = load_checkpoint(folder, cls.kind())
        config.update(config_overrides)
        try:
            cfg = cls.config_class(**_tuples(config))
        except TypeError as e:
            raise CheckpointError(f"checkpoint {folder} has a config this kit does not know ({e})") from e
        model = cls(cfg, **cls.load_files(Path(folder), cfg))
        load_state_checked(model, state, str(folder))
        model.training_info = extra
        return model.to(device).eval()


CHECKPOINTS_ENV = "DRC_CHECKPOINTS"
"""Environment variable that moves every default checkpoint folder (``make all FROM_SCRATCH=1``
sets it to ``runs/<profile>/checkpoints`` so a retrain never touches the shipped weights)."""


def checkpoints_root() -> Path:
    """Where the kit's trained models live: ``$DRC_CHECKPOINTS`` if set, else
    ``<repo>/data/checkpoints`` (the shipped ones)."""
    from drclib.paths import repo_root

    env = os.environ.get(CHECKPOINTS_ENV)
    return Path(env).resolve() if env else repo_root() / "data" / "checkpoints"


def shipped_dir(name: str) -> Path:
    """``<checkpoints root>/<name>`` (:func:`checkpoints_root`; ``data/checkpoints/<name>``
    unless ``$DRC_CHECKPOINTS`` moves it): where the kit ships, or a retrain writes, a model."""
    return checkpoints_root() / name


def load_shipped(cls: type[T], folder: str | os.PathLike, how_to_train: str,
                 device: str | torch.device = "cpu") -> T:
    """Load a shipped checkpoint folder as ``cls``; if it is absent, say how to get it."""
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise CheckpointError(f"no shipped checkpoint at {folder}; restore it from git or train it "
                              f"with: {how_to_train}")
    return cls.from_pretrained(folder, device=device)


def _tuples(config: dict) -> dict:
    """JSON turns tuples into lists; dataclass configs use tuples (hashable, immutable)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
