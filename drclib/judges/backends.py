"""The paper's pretrained scoring backends, found on disk only.

open_clip ViT-H-14 laion2b_s32b_b79k for CLIP scores, DINOv2-large for the DINO score, LPIPS
with its VGG backbone, InceptionV3 for FID. The loaders only look at weights already on disk
and never download, returning ``(scorer, None)`` or ``(None, reason)``;
:func:`available_backends` reports them all (``python -m drclib.judges backends``). A metrics
table names the backend behind each column (:func:`metric_columns`), and a column whose
weights are absent is reported as unavailable, never computed from random weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from drclib.data.images import check_images
from drclib.judges.classifier import DEFAULT_NAMES, default_checkpoint_dir, train_command
from drclib.judges.metrics import frechet_distance


# =============================================================================== pretrained backends
def torch_hub_dir() -> Path:
    """torch's hub folder: ``$TORCH_HOME/hub``, else ``$XDG_CACHE_HOME/torch/hub``, else
    ``~/.cache/torch/hub`` (pretrained torchvision weights sit in its ``checkpoints/``)."""
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "torch" / "hub"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def _hf_snapshot_files(repo_id: str, names: Sequence[str]) -> list[Path]:
    """Files called one of ``names`` in any snapshot of ``repo_id`` in the HF cache (real files only)."""
    folder = hf_hub_cache() / ("models--" + repo_id.strip("/").replace("/", "--")) / "snapshots"
    found = []
    for name in names:
        for p in sorted(glob.glob(str(folder / "*" / name))):
            if Path(p).is_file() and Path(p).stat().st_size > 0:
                found.append(Path(p))
    return found


@contextlib.contextmanager
def _offline():
    """Make the Hugging Face libraries refuse network access for the duration."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _resize_norm(images: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    x = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


@dataclasses.dataclass
class BackendInfo:
    """Which pretrained weights a metric column uses, and where they were found."""

    name: str
    description: str
    path: str | None = None


class ClipScorer:
    """open_clip CLIP: ``image_embeddings``, ``text_embeddings``; ``clip_score`` (CS: 100 x cosine
    of image and text) and ``clip_image_score`` (CIS: 100 x cosine of two images)."""

    def __init__(self, model, tokenizer, mean, std, size: int, info: BackendInfo, device="cpu"):
        self.model, self.tokenizer = model.eval().to(device), tokenizer
        self.mean, self.std, self.size, self.info, self.device = mean, std, size, info, device

    @torch.no_grad()
    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        x = _resize_norm(check_images(images).to(self.device), self.size, self.mean, self.std)
        return F.normalize(self.model.encode_image(x).float(), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        return F.normalize(self.model.encode_text(self.tokenizer(list(texts)).to(self.device)).float(), dim=-1)

    def clip_score(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        return 100 * (self.image_embeddings(images) * self.text_embeddings(texts)).sum(-1).cpu()

    def clip_image_score(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        return 100 * (self.image_embeddings(images_a) * self.image_embeddings(images_b)).sum(-1).cpu()


class DinoScorer:
    """DINOv2 (transformers): DIS = 100 x cosine of the pooler outputs of two images."""

    def __init__(self, model, info: BackendInfo, size: int = 224, device="cpu"):
        self.model, self.info, self.size, self.device = model.eval().to(device), info, size, device

    @torch.no_grad()
    def embeddings(self, images: torch.Tensor) -> torch.Tensor:
        x = _resize_norm(check_images(images).to(self.device), self.size,
                         (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        return F.normalize(self.model(pixel_values=x).pooler_output.float(), dim=-1)

    def dino_image_score(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        return 100 * (self.embeddings(images_a) * self.embeddings(images_b)).sum(-1).cpu()


class LpipsScorer:
    """LPIPS (lower is better) with its VGG backbone; images are upsampled to ``size`` first."""

    def __init__(self, model, info: BackendInfo, size: int = 64, device="cpu"):
        self.model, self.info, self.size, self.device = model.eval().to(device), info, size, device

    @torch.no_grad()
    def __call__(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        def prep(x):
            x = check_images(x).to(self.device)
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
            return x * 2 - 1

        return self.model(prep(images_a), prep(images_b)).flatten().cpu()


class InceptionFeatures:
    """torchvision InceptionV3, pool3 (2048-d) features for FID; images are resized to 299 px.
    (torchvision's ImageNet weights, not the TF weights of the original FID code, so values
    are close to but not identical with pytorch-fid's.)"""

    def __init__(self, model, info: BackendInfo, device="cpu"):
        model.fc = nn.Identity()
        self.model, self.info, self.device = model.eval().to(device), info, device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        images = check_images(images)
        out = []
        for i in range(0, len(images), batch_size):
            x = _resize_norm(images[i:i + batch_size].to(self.device), 299,
                             (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
            out.append(self.model(x).float().cpu())
        return torch.cat(out)

    def fid(self, images_a: torch.Tensor, images_b: torch.Tensor) -> float:
        return frechet_distance(self(images_a), self(images_b))


CLIP_MODEL, CLIP_PRETRAINED = "ViT-H-14", "laion2b_s32b_b79k"
CLIP_HF_REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
DINO_REPO = "facebook/dinov2-large"
VGG16_FILE = "vgg16-397923af.pth"
INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"
_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def find_clip_weights(model_name: str = CLIP_MODEL, pretrained: str = CLIP_PRETRAINED,
                      hf_repo: str | None = None) -> tuple[Path | None, str]:
    """Look for open_clip weights on disk: the HF cache snapshot of ``hf_repo`` (open_clip
    downloads ViT-H-14 laion2b from the hub) or open_clip's URL cache ``~/.cache/clip``.
    Returns ``(path, "")`` or ``(None, reason)``."""
    explicit = hf_repo is not None
    hf_repo = hf_repo or CLIP_HF_REPO
    if not explicit and (model_name, pretrained) != (CLIP_MODEL, CLIP_PRETRAINED):
        try:  # open_clip's table of pretrained tags (importing it takes seconds, so only if needed)
            import open_clip

            cfg = open_clip.get_pretrained_cfg(model_name, pretrained) or {}
            hf_repo = (cfg.get("hf_hub") or hf_repo).strip("/")
        except Exception:  # noqa: BLE001 - open_clip missing or name unknown: keep the default
            pass
    found = _hf_snapshot_files(hf_repo, _CLIP_FILES)
    if found:
        return found[0], ""
    clip_cache = Path.home() / ".cache" / "clip"
    local = sorted(p for p in clip_cache.glob("*") if p.is_file() and pretrained in p.name) if clip_cache.is_dir() else []
    if local:
        return local[0], ""
    return None, (f"no weights for open_clip {model_name} {pretrained} in {hf_hub_cache()} "
                  f"(models--{hf_repo.replace('/', '--')}) or {clip_cache}")


def load_clip(device="cpu", model_name: str = CLIP_MODEL, pretrained: str = CLIP_PRETRAINED,
              hf_repo: str | None = None) -> tuple[ClipScorer | None, str | None]:
    """The paper's CLIP (open_clip ViT-H-14, laion2b_s32b_b79k) from disk, never downloading.
    Returns ``(scorer, None)`` or ``(None, reason)``."""
    path, reason = find_clip_weights(model_name, pretrained, hf_repo)
    if path is None:
        return None, reason
    try:
        import open_clip

        with _offline():
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(path))
            tokenizer = open_clip.get_tokenizer(model_name)
        size = model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else int(size)
        mean = getattr(model.visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
        std = getattr(model.visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
    except Exception as e:  # noqa: BLE001 - report, never fall back on random weights
        return None, f"open_clip {model_name} weights at {path} failed to load: {type(e).__name__}: {e}"
    info = BackendInfo("clip_vit_h14", f"open_clip {model_name} {pretrained}", str(path))
    return ClipScorer(model, tokenizer, mean, std, size, info, device), None


def find_dino_weights(repo_id: str = DINO_REPO) -> tuple[Path | None, str]:
    """A snapshot folder of ``repo_id`` in the HF cache holding config.json and weights."""
    for w in _hf_snapshot_files(repo_id, _HF_WEIGHTS):
        if (w.parent / "config.json").is_file():
            return w.parent, ""
    return None, f"no weights for {repo_id} in {hf_hub_cache()} (models--{repo_id.replace('/', '--')})"


def load_dino(device="cpu", repo_id: str = DINO_REPO) -> tuple[DinoScorer | None, str | None]:
    """The paper's DINO (DINOv2-large, pooler output) from the HF cache, offline."""
    folder, reason = find_dino_weights(repo_id)
    if folder is None:
        return None, reason
    try:
        from transformers import AutoModel

        with _offline():
            model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        size = int(getattr(model.config, "image_size", 224) or 224)
    except Exception as e:  # noqa: BLE001
        return None, f"{repo_id} at {folder} failed to load: {type(e).__name__}: {e}"
    return DinoScorer(model, BackendInfo("dinov2_large", f"transformers {repo_id}", str(folder)),
                      size=min(size, 224), device=device), None


def find_torchvision_weights(filename: str) -> tuple[Path | None, str]:
    p = torch_hub_dir() / "checkpoints" / filename
    if p.is_file() and p.stat().st_size > 0:
        return p, ""
    return None, f"no {filename} in {p.parent} (torchvision's download cache; set TORCH_HOME to another cache)"


def load_lpips(device="cpu") -> tuple[LpipsScorer | None, str | None]:
    """LPIPS with VGG: the package's own linear weights (shipped inside ``lpips``) on top of
    torchvision's VGG16 ImageNet weights, which must already be in torch's hub cache. The
    backbone is built without weights and loaded from that file, so nothing is downloaded."""
    import importlib.util

    spec = importlib.util.find_spec("lpips")  # found without importing it (slow: torchvision, scipy)
    if spec is None or not spec.origin:
        return None, "the lpips package is not installed (pip install lpips)"
    lin = Path(spec.origin).parent / "weights" / "v0.1" / "vgg.pth"
    if not lin.is_file():
        return None, f"lpips's linear-layer weights {lin} are missing (reinstall lpips)"
    path, reason = find_torchvision_weights(VGG16_FILE)
    if path is None:
        return None, "LPIPS VGG backbone: " + reason
    try:
        import io as _io
        import warnings

        state = torch.load(path, map_location="cpu", weights_only=True)
        feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        if len(feats) != 26:  # checked before building the (large) network
            raise ValueError(f"expected the 26 conv tensors of VGG16's features, found {len(feats)}")
        import lpips

        with contextlib.redirect_stdout(_io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torchvision's 'pretrained' deprecation
            model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
        net = model.net
        slices = [getattr(net, f"slice{i}") for i in range(1, 6)]
        loaded = 0
        for sl in slices:
            for name, mod in sl.named_children():
                for pname, param in mod.named_parameters(recurse=False):
                    key = f"{name}.{pname}"
                    if key not in feats:
                        raise KeyError(f"{key} missing from {path}")
                    with torch.no_grad():
                        param.copy_(feats[key])
                    loaded += 1
        if loaded != 26:
            raise ValueError(f"expected 26 VGG16 conv tensors, loaded {loaded}")
    except Exception as e:  # noqa: BLE001
        return None, f"LPIPS VGG from {path} failed to load: {type(e).__name__}: {e}"
    return LpipsScorer(model, BackendInfo("lpips_vgg", "lpips 0.1 VGG16 (torchvision ImageNet)", str(path)),
                       device=device), None


def load_inception(device="cpu") -> tuple[InceptionFeatures | None, str | None]:
    """torchvision InceptionV3 (pool3 features, for the paper-style FID) from torch's hub cache."""
    path, reason = find_torchvision_weights(INCEPTION_FILE)
    if path is None:
        return None, "InceptionV3: " + reason
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # before the slow import
        from torchvision.models import inception_v3

        model = inception_v3(weights=None, aux_logits=True, init_weights=False)
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001
        return None, f"InceptionV3 from {path} failed to load: {type(e).__name__}: {e}"
    return InceptionFeatures(model, BackendInfo("inception_v3", "torchvision InceptionV3 IMAGENET1K_V1", str(path)),
                             device=device), None


BACKENDS: dict[str, Callable[[], tuple[Path | None, str]]] = {
    "clip_vit_h14": find_clip_weights,
    "dinov2_large": find_dino_weights,
    "lpips_vgg": lambda: find_torchvision_weights(VGG16_FILE),
    "inception_v3": lambda: find_torchvision_weights(INCEPTION_FILE),
}
LOADERS = {"clip_vit_h14": load_clip, "dinov2_large": load_dino, "lpips_vgg": load_lpips,
           "inception_v3": load_inception}


def available_backends() -> dict[str, str]:
    """Which of the paper's pretrained backends have weights on disk (nothing is loaded or
    downloaded): ``{name: "available: <path>" | "unavailable: <reason>"}``, plus the kit's own
    evaluators (``style_classifier``, ``emoji_classifier``)."""
    out = {}
    for name, find in BACKENDS.items():
        path, reason = find()
        out[name] = f"available: {path}" if path is not None else f"unavailable: {reason}"
    for name in DEFAULT_NAMES:
        d = default_checkpoint_dir(name)
        out[name] = f"available: {d}" if (d / "model.safetensors").is_file() else \
            f"unavailable: no checkpoint in {d}; train it with: {train_command(name)}"
    from drclib.backbone.tinyclip import default_checkpoint_dir as clip_dir

    d = clip_dir()
    out["tinyclip"] = f"available: {d}" if (d / "model.safetensors").is_file() else \
        f"unavailable: no checkpoint in {d}; train it with: python -m drclib.backbone.tinyclip"
    return out


METRIC_BACKENDS = {
    "CS": "clip_vit_h14", "CIS": "clip_vit_h14", "DIS": "dinov2_large", "LPIPS": "lpips_vgg",
    "StyleSim": "style_classifier", "FID": "inception_v3", "FID_kit": "emoji_classifier",
    "style_acc": "style_classifier", "emoji_top1": "emoji_classifier", "emoji_top5": "emoji_classifier",
    "CS_kit": "tinyclip", "CIS_kit": "tinyclip",
}
"""The backend behind each metrics-table column (the paper's six, plus the kit's own)."""


def metric_columns(columns: Sequence[str] | None = None) -> dict[str, dict[str, str]]:
    """For each metric column: the backend that computes it and whether it can here, e.g.
    ``{"CIS": {"backend": "clip_vit_h14", "status": "unavailable: no weights ..."}}``. A table
    shows an unavailable column as such (never computes it from random weights)."""
    status = available_backends()
    columns = list(METRIC_BACKENDS) if columns is None else list(columns)
    unknown = [c for c in columns if c not in METRIC_BACKENDS]
    if unknown:
        raise KeyError(f"unknown metric columns {unknown}; known: {list(METRIC_BACKENDS)}")
    return {c: {"backend": METRIC_BACKENDS[c], "status": status[METRIC_BACKENDS[c]]} for c in columns}
