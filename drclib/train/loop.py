"""What every training loop of the kit shares: resumable state, the optimizer step, data order.

- training checkpoints (weights, optimizer, step, history) written atomically every
  ``checkpoint_every`` steps through :mod:`drclib.checkpoint`, never pickled
  (:func:`save_training_state`, :func:`load_training_state`);
- data order drawn from ``(seed, step)`` alone (:func:`batch_indices`), so a run resumed from
  its checkpoint sees the same batches as one that was never interrupted;
- one optimizer step with gradient clipping and a clear error on a non-finite loss
  (:func:`optimizer_step`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from drclib.backbone import PocketLMM
from drclib.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from drclib.io import atomic_path

IGNORE = -100
"""Label of positions that carry no loss (prompt and padding)."""


# ---------------------------------------------------------------------------- optimizer state
def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Flatten an optimizer's state into named tensors + JSON (safetensors cannot nest)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, v in tensors.items():
        _, pid, k = name.split(".", 2)
        state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_training_state(folder: str | Path, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int,
                        history: dict, config: dict) -> None:
    """Weights + optimizer + step + history, atomically, in ``folder`` (resumable)."""
    folder = Path(folder)
    opt_tensors, opt_meta = _optimizer_tensors(opt)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state.update(opt_tensors)
    save_checkpoint(folder, "TrainingState", config, state,
                    extra={"step": step, "optimizer": opt_meta})
    with atomic_path(folder / "history.json") as tmp:
        tmp.write_text(json.dumps(history))


def load_training_state(folder: str | Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
                        config: dict) -> tuple[int, dict]:
    """Restore what :func:`save_training_state` wrote; returns ``(step, history)``."""
    saved_config, state, extra = load_checkpoint(folder, "TrainingState")
    if saved_config != config:
        raise CheckpointError(f"training state in {folder} was made with another configuration "
                              f"({saved_config} vs {config}); delete the folder to start afresh")
    model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
    _load_optimizer(opt, {k: v for k, v in state.items() if k.startswith("opt.")}, extra["optimizer"])
    history = json.loads((Path(folder) / "history.json").read_text())
    return int(extra["step"]), history


def batch_indices(n: int, batch: int, step: int, seed: int, stream: int) -> np.ndarray:
    """Indices of batch ``step``: epochs are permutations drawn from (seed, stream, epoch)."""
    per_epoch = max(1, n // batch)
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, stream, epoch]).permutation(n)
    return perm[k * batch:(k + 1) * batch] if batch <= n else perm


# ---------------------------------------------------------------------------- shared by both DRC stages
def drc_trainables(drc, lmm: PocketLMM, cfg, device: torch.device):
    """Set-up shared by stage 1 and stage 2: LoRA adapters on the LMM when ``cfg.lora_rank > 0``
    (added if it has none; otherwise nothing of the LMM trains), the LMM's base weights frozen,
    AdamW over the DRC parameters (+ adapters). Returns ``(params, optimizer, holder)``, where
    ``holder`` is the module whose state a training checkpoint saves."""
    if cfg.lora_rank and not lmm.has_lora:
        lmm.add_lora(cfg.lora_rank, cfg.lora_alpha)
    lmm.to(device).eval()
    lmm.freeze_base()
    if not cfg.lora_rank:
        lmm.requires_grad_(False)
    drc.to(device).train()
    params = list(drc.parameters()) + (lmm.lora_parameters() if cfg.lora_rank else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    holder = torch.nn.ModuleDict({"drc": drc, "lmm": lmm}) if cfg.lora_rank else drc
    return params, opt, holder


def optimizer_step(loss: torch.Tensor, params, opt: torch.optim.Optimizer, step: int, stage: str) -> None:
    """Backward, clip to norm 1, step; a non-finite loss stops the run with a clear message."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{stage} loss became {loss.item()} at step {step}; lower the learning rate")
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def downsample(values: list, n: int = 300) -> list:
    if len(values) <= n:
        return list(values)
    idx = np.linspace(0, len(values) - 1, n).round().astype(int)
    return [values[i] for i in idx]


def lr_at(step: int, cfg) -> float:
    """Linear warm-up over ``cfg.warmup`` steps, then a cosine decay to 5% of ``cfg.lr`` at
    ``cfg.steps`` (every loop's schedule)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))
