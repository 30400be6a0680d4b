"""The DRC model: the style and semantic towers, the fusion network and the mask generator.

:class:`DRC` holds the parts of :mod:`drclib.drc.modules` and computes the paper's equations on
them: eq. (1)-(2) (:meth:`DRC.stage1_features`, :meth:`DRC.stage1_instructions`) for stage 1 and
eq. (5)-(8) (:meth:`DRC.user_instruction`) for a user's history and a reference. Its
:class:`DRCConfig` names the variants of the ablation table (:data:`VARIANTS`) and the kind of
instruction z it writes (free vectors, or slots of LMM words). The towers read the pocket
LMM's image tokens (:func:`cell_tokens`) or the semantic encoder's features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from drclib.backbone import BOS, IMG, IMG_END, PocketLMM
from drclib.checkpoint import CheckpointError, Pretrained
from drclib.drc.modules import FUSIONS, TOWERS, MaskGenerator

COMBINATIONS = ("aa", "am", "sa", "sm")
"""The four stage-1 instructions z_(i,j): style features from i in {a, s}, semantic features
from j in {a, m} (a = anchor, s = positive-style, m = positive-semantic)."""

LABELS = {"aa": "z(a,a)", "am": "z(a,m)", "sa": "z(s,a)", "sm": "z(s,m)"}


@dataclass(frozen=True)
class DRCConfig:
    """Sizes and variant of a DRC model. ``tower`` is ``"attention"`` (the paper) or ``"mlp"``
    (ablation w/o attention); ``fusion`` is ``"attention"`` (the paper's FusionNetwork) or
    ``"concat"`` (ablation w/o FusionNetwork)."""

    dim: int = 256
    """Width of the towers and of z: the LMM's hidden size."""
    n_latent: int = 16
    """K, the tokens of a latent instruction z."""
    heads: int = 4
    ffn_mult: int = 2
    dropout: float = 0.0
    tower: str = "attention"
    fusion: str = "attention"
    features: str = "embeddings"
    """What a tower sees of an image (:meth:`DRC.image_tokens`): ``"semantic"``, the 64 tokens
    of the kit's semantic encoder (:mod:`drclib.backbone.encoder`, trained against captions like
    LaVIT's ViT, frozen and saved inside the DRC model); ``"embeddings"``, E_x as the paper
    writes it (the LMM's embedding lookup of the visual codes: LaVIT's codes carry meaning,
    the kit's 4 x 4-pixel codes hardly any); or ``"hidden"``, the frozen LMM's last hidden
    states over the image while it reads ``<bos> <img> codes </img>``."""
    encoder: dict | None = None
    """``features="semantic"``: the :class:`drclib.backbone.encoder.EncoderConfig` of the encoder, as a dict."""
    stage1_form: str = "cross"
    """How stage 1 builds the four instructions' tower features (eq. 1). ``"cross"`` is the
    paper's form, ``F_s^sty = StyleTower(q=E_s, kv=E_a)``: every tower output is made of the
    *anchor's* values (attention mixes the key/value image's tokens), so every one of the four
    instructions, z(s,m) included, can reach the image it is asked to reconstruct. ``"self"``
    uses the self-attention form of stage 2 and inference, ``F_s^sty = StyleTower(E_s, E_s)``,
    ``F_m^sem = SemTower(E_m, E_m)`` (and ``F_a = Tower(E_a, E_a)``): z(s,m) then sees only the
    positive-style and positive-semantic images, so reconstructing the anchor from it *is* the
    composition task, style from one image and semantics from another."""
    z_space: str = "free"
    """Where the latent instruction lives. ``"free"``: any vector (layer-normalised, see
    ``z_norm``); the LMM must learn to read it through its adapters. ``"words"``: each of the K
    tokens is a convex combination (softmax) of the LMM's own word embeddings, so z is always a
    "soft sentence" the frozen LMM already knows how to read, and the towers and fusion network
    learn *which words* (style, emoji name) describe the image. ``"slots"`` (the shipped
    recipe): each of the K tokens is one of the LMM's words *or empty*, chosen by argmax with a
    straight-through gradient (the softmax's); an empty slot is a zero vector that the prompt's
    attention mask leaves out (:func:`hybrid_prompts`), so a caption shorter than K reaches the
    frozen LMM exactly as in its pretraining. Why: the pocket LMM memorised its pretraining
    sequences, and four junk words before a correct caption cut its "both" from 0.90 to 0.18
    (RESULTS.md, section 3)."""
    n_words: int = 0
    """``z_space="words"``: the size of the LMM's word vocabulary (set by :meth:`DRC.for_lmm`)."""
    mask_generator: bool = False
    """Stage 2: the model carries a :class:`~drclib.drc.modules.MaskGenerator` (eqs. 5-7)."""
    max_history: int = 16
    """Longest history the mask generator's image-index embedding covers."""
    z_norm: float = 1.0
    """Initial length of each latent token. z is layer-normalised with a learnable gain that
    starts here, about the length of the LMM's word embeddings (set on the plain LMM and kept
    for the composing LMM shipped now); without it the fusion network's tokens
    start ten times longer than any word the LMM knows."""

    def __post_init__(self):
        if self.tower not in TOWERS:
            raise ValueError(f"tower must be one of {sorted(TOWERS)}, got {self.tower!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {sorted(FUSIONS)}, got {self.fusion!r}")
        if self.stage1_form not in ("cross", "self"):
            raise ValueError(f"stage1_form must be 'cross' or 'self', got {self.stage1_form!r}")
        if self.z_space not in ("free", "words", "slots"):
            raise ValueError(f"z_space must be 'free', 'words' or 'slots', got {self.z_space!r}")
        if self.z_space in ("words", "slots") and self.n_words < 1:
            raise ValueError(f"z_space={self.z_space!r} needs n_words >= 1 (build the model with DRC.for_lmm(lmm, ...))")
        if self.features not in ("embeddings", "hidden", "semantic"):
            raise ValueError(f"features must be 'semantic', 'embeddings' or 'hidden', got {self.features!r}")
        if (self.features == "semantic") != (self.encoder is not None):
            raise ValueError("features='semantic' needs the encoder's config (and only it does): build the model "
                             "with DRC.for_lmm(lmm, features='semantic', encoder=SemanticEncoder)")
        if self.dim < 1 or self.n_latent < 1 or self.heads < 1 or self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a positive multiple of heads ({self.heads}); "
                             f"n_latent ({self.n_latent}) must be >= 1")


VARIANTS = {
    "drc": {},
    "uniform": {},
    "concat": {"fusion": "concat"},
    "mlp": {"tower": "mlp"},
}
"""The stage-1 runs of the ablation table: DRC, w/o importance sampling (same model, uniform
p(z)), w/o FusionNetwork, w/o attention."""


class DRC(Pretrained):
    """StyleTower + SemTower + FusionNetwork (or an ablation variant).

    >>> drc = DRC(DRCConfig(dim=32, n_latent=4))
    >>> e = torch.randn(2, 64, 32)
    >>> drc.stage1_instructions(e, e, e)["sm"].shape
    torch.Size([2, 4, 32])
    """

    config_class = DRCConfig

    def __init__(self, config: DRCConfig | None = None):
        super().__init__()
        self.config = config = config or DRCConfig()
        sty_cls, sem_cls = TOWERS[config.tower]
        kw = dict(heads=config.heads, ffn_mult=config.ffn_mult, dropout=config.dropout)
        in_dim = None
        if config.features == "semantic":
            from drclib.backbone.encoder import EncoderConfig, SemanticEncoder

            enc_cfg = dict(config.encoder)
            enc_cfg["widths"] = tuple(enc_cfg.get("widths", EncoderConfig.widths))
            self.encoder = SemanticEncoder(EncoderConfig(**enc_cfg)).requires_grad_(False).eval()
            in_dim = self.encoder.config.dim
        self.style_tower = sty_cls(config.dim, in_dim=in_dim, **kw)
        self.sem_tower = sem_cls(config.dim, in_dim=in_dim, **kw)
        words = config.z_space in ("words", "slots")
        n_out = config.n_words + (config.z_space == "slots")        # slots: the last choice is "empty"
        self.fusion = FUSIONS[config.fusion](config.dim, config.n_latent,
                                             out_dim=n_out if words else config.dim, **kw)
        if words:
            # a copy of the LMM's word embeddings (filled by for_lmm, saved with the model);
            # slots: one more row, all zeros, for the empty slot
            self.register_buffer("word_embeddings", torch.zeros(n_out, config.dim))
        else:
            self.z_out = torch.nn.LayerNorm(config.dim)
            torch.nn.init.constant_(self.z_out.weight, config.z_norm / config.dim ** 0.5)
        if config.mask_generator:
            self.masks = MaskGenerator(config.dim, heads=config.heads, ffn_mult=config.ffn_mult,
                                       max_history=config.max_history)

    @classmethod
    def from_stage1(cls, folder: str | Path, *, device: str | torch.device = "cpu") -> "DRC":
        """A stage-2 model: the stage-1 model saved in ``folder`` plus a fresh mask generator."""
        import dataclasses

        from drclib.checkpoint import load_state_checked

        stage1 = cls.from_pretrained(folder)
        model = cls(dataclasses.replace(stage1.config, mask_generator=True))
        own = model.state_dict()
        state = stage1.state_dict() | {k: v for k, v in own.items() if k.startswith("masks.")}
        load_state_checked(model, state, str(folder))
        model.training_info = {"stage1": stage1.training_info}
        return model.to(device)

    def fuse(self, f_style: torch.Tensor, f_sem: torch.Tensor, *, return_logits: bool = False):
        """``z = FusionNetwork(F^sty, F^sem)``, scaled to the LMM's embedding length (``z_norm``),
        or, with ``z_space="words"``, softmax weights over the LMM's words times their embeddings.
        ``return_logits`` (words only) also returns those weights' logits ``[B, K, n_words]``:
        which word each latent token leans to (see :func:`caption_anchor_loss`, :meth:`read_words`)."""
        out = self.fusion(f_style, f_sem)
        if self.config.z_space == "slots":
            soft = torch.softmax(out.float(), -1)
            hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
            weights = hard + soft - soft.detach()          # forward: one word (or empty); backward: the softmax's
            z = (weights @ self.word_embeddings.float()).to(out.dtype)
            return (z, out) if return_logits else z
        if self.config.z_space == "words":
            weights = torch.softmax(out.float(), -1)
            z = (weights @ self.word_embeddings.float()).to(out.dtype)
            return (z, out) if return_logits else z
        if return_logits:
            raise ValueError("word logits exist only for z_space='words'; this model's z is free")
        return self.z_out(out)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.features == "semantic":
            self.encoder.eval()                  # frozen: its norms never switch to training
        return self

    @classmethod
    def for_lmm(cls, lmm: PocketLMM, encoder=None, **changes) -> "DRC":
        """A fresh DRC whose width matches ``lmm`` (with ``z_space="words"``, holding a copy of
        its word embeddings). ``features="semantic"`` (the kit's default recipe) needs the
        ``encoder`` (a :class:`drclib.backbone.encoder.SemanticEncoder`), copied in and frozen."""
        import dataclasses

        first_word = lmm.first_word
        if changes.get("z_space") in ("words", "slots"):
            changes.setdefault("n_words", lmm.config.vocab_size - first_word)
        if changes.get("features") == "semantic":
            if encoder is None:
                raise ValueError("features='semantic' needs the semantic encoder: DRC.for_lmm(lmm, encoder=..., ...); "
                                 "the shipped one is drclib.backbone.encoder.load_default()")
            changes["encoder"] = dataclasses.asdict(encoder.config)
        drc = cls(DRCConfig(dim=lmm.config.hidden_size, **changes))
        if encoder is not None and drc.config.features == "semantic":
            drc.encoder.load_state_dict(encoder.state_dict())
        if drc.config.z_space in ("words", "slots"):
            with torch.no_grad():
                ids = torch.arange(first_word, lmm.config.vocab_size, device=lmm.device)
                drc.word_embeddings[:len(ids)].copy_(lmm.embed(ids).float().cpu())
        return drc

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def needs_images(self) -> bool:
        """True when the towers read the images themselves (semantic features), not only their codes."""
        return self.config.features == "semantic"

    @torch.no_grad()
    def image_tokens(self, lmm: PocketLMM, codes: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """What the towers read of images given as visual codes ``[B, 64]`` (and, for semantic
        features, the images ``[B, 3, 32, 32]`` in [0, 1]): ``[B, 64, d_in]``.

        ``features="semantic"``: the frozen semantic encoder's 64 tokens of the images.
        ``features="embeddings"``: E_x, the LMM's embedding lookup (the paper's definition).
        ``features="hidden"``: the LMM's last hidden states at the 64 image positions of
        ``<bos> <img> codes </img>``. LaVIT's visual tokens are semantic (they come from a ViT);
        the kit's are pixel patches, so E_x alone leaves the towers to learn to recognise 1,370
        emoji from scratch, while the pocket LMM, trained to caption images, already does.
        No gradient flows into the LMM here either way.
        """
        if self.config.features == "semantic":
            if images is None:
                raise ValueError("this DRC model reads semantic features of the images: pass images=[B, 3, 32, 32] "
                                 "(drclib.drc.cell_images(stickers) for sticker cells)")
            return self.encoder(images.to(self.device)).float()
        codes = torch.as_tensor(codes, device=lmm.device)
        if self.config.features == "embeddings":
            return lmm.visual_embeddings(codes)
        ids = lmm.codes_to_ids(codes)
        b = ids.shape[0]
        seq = torch.cat([torch.full((b, 1), BOS, device=lmm.device), torch.full((b, 1), IMG, device=lmm.device), ids,
                         torch.full((b, 1), IMG_END, device=lmm.device)], 1)
        hidden = lmm.lm(input_ids=seq, output_hidden_states=True).hidden_states[-1]
        return hidden[:, 2:2 + ids.shape[1]].float()

    # ------------------------------------------------------------------ stage 1
    def stage1_features(self, e_a: torch.Tensor, e_s: torch.Tensor, e_m: torch.Tensor) -> dict[str, torch.Tensor]:
        """Eq. (1): the tower features of a triplet, each ``[B, 64, d]``. In the paper's cross
        form (``config.stage1_form == "cross"``)::

            F_a^sty = StyleTower(q=E_a, kv=E_s)    F_s^sty = StyleTower(q=E_s, kv=E_a)
            F_a^sem = SemTower(q=E_a, kv=E_m)      F_m^sem = SemTower(q=E_m, kv=E_a)

        and in the self form (``"self"``, the form of stage 2 and inference) each image asks
        itself: ``F_i^sty = StyleTower(E_i, E_i)``, ``F_j^sem = SemTower(E_j, E_j)``.
        """
        if not (e_a.shape == e_s.shape == e_m.shape):
            raise ValueError(f"anchor, positive-style and positive-semantic embeddings must have one shape, got "
                             f"{tuple(e_a.shape)}, {tuple(e_s.shape)}, {tuple(e_m.shape)}")
        if self.config.stage1_form == "self":
            return {"sty_a": self.style_tower(e_a, None), "sty_s": self.style_tower(e_s, None),
                    "sem_a": self.sem_tower(e_a, None), "sem_m": self.sem_tower(e_m, None)}
        return {"sty_a": self.style_tower(e_a, e_s), "sty_s": self.style_tower(e_s, e_a),
                "sem_a": self.sem_tower(e_a, e_m), "sem_m": self.sem_tower(e_m, e_a)}

    def stage1_instructions(self, e_a: torch.Tensor, e_s: torch.Tensor, e_m: torch.Tensor,
                            combinations=COMBINATIONS, *, return_logits: bool = False) -> dict:
        """Eq. (2): ``z_(i,j) = FusionNetwork(F_i^sty, F_j^sem)`` for i in {a, s}, j in {a, m}.
        Returns ``{"aa": z, "am": z, "sa": z, "sm": z}``, each ``[B, K, d]``; every one of them
        is trained to reconstruct the anchor. With ``return_logits`` (``z_space="words"``) each
        value is a pair ``(z, word_logits)``."""
        f = self.stage1_features(e_a, e_s, e_m)
        out = {}
        for c in combinations:
            if c not in COMBINATIONS:
                raise ValueError(f"unknown combination {c!r}: use some of {COMBINATIONS}")
            out[c] = self.fuse(f["sty_" + c[0]], f["sem_" + c[1]], return_logits=return_logits)
        return out

    def drawn_instructions(self, e_a: torch.Tensor, e_s: torch.Tensor, e_m: torch.Tensor,
                           which: torch.Tensor) -> torch.Tensor:
        """Eq. (2) for one drawn combination per sample: row b gets ``z = stage1_instructions(...)
        [COMBINATIONS[which[b]]][b]``, ``[B, K, d]``, but only the towers and the fusion that row
        needs are run (stage 1's training step draws one z per sample, eq. 4; computing all four
        and keeping one costs four fusions and four towers per sample instead of one and two)."""
        if not (e_a.shape == e_s.shape == e_m.shape):
            raise ValueError(f"anchor, positive-style and positive-semantic embeddings must have one shape, got "
                             f"{tuple(e_a.shape)}, {tuple(e_s.shape)}, {tuple(e_m.shape)}")
        which = torch.as_tensor(which, device=e_a.device).long()
        if which.shape != e_a.shape[:1] or (which < 0).any() or (which >= len(COMBINATIONS)).any():
            raise ValueError(f"which must hold one combination index in 0..3 per sample, got {tuple(which.shape)}")
        first = torch.tensor([c[0] == "s" for c in COMBINATIONS], device=e_a.device)[which][:, None, None]
        second = torch.tensor([c[1] == "m" for c in COMBINATIONS], device=e_a.device)[which][:, None, None]
        sty_img = torch.where(first, e_s, e_a)            # whose style tower output the row uses
        sem_img = torch.where(second, e_m, e_a)
        if self.config.stage1_form == "self":
            f_sty, f_sem = self.style_tower(sty_img, None), self.sem_tower(sem_img, None)
        else:   # cross form: F_a^sty = Sty(q=E_a, kv=E_s), F_s^sty = Sty(q=E_s, kv=E_a); likewise Sem with m
            f_sty = self.style_tower(sty_img, torch.where(first, e_a, e_s))
            f_sem = self.sem_tower(sem_img, torch.where(second, e_a, e_m))
        return self.fuse(f_sty, f_sem)

    @torch.no_grad()
    def read_words(self, lmm: PocketLMM, e_style: torch.Tensor, e_sem: torch.Tensor) -> list[list[str]]:
        """What a words-space instruction "says": for each of the K latent tokens of the composed
        instruction (self form, as :meth:`instruction`), the word it leans to most. A window
        into z for ``z_space="words"`` models, e.g. ``['a', 'sticker', 'of', 'cat', ...]``."""
        if self.config.z_space not in ("words", "slots"):
            raise ValueError("read_words needs a z_space='words' or 'slots' model; a free z is not made of words")
        _, logits = self.instruction(e_style, e_sem, return_logits=True)
        n = self.config.n_words
        return [["_" if i == n else lmm.describe_ids([i + lmm.first_word])[0] for i in row.tolist()]
                for row in logits.argmax(-1).cpu()]

    # ------------------------------------------------------------------ composition
    def style_features(self, e_style: torch.Tensor, query: torch.Tensor | None = None,
                       history_mask: torch.Tensor | None = None) -> torch.Tensor:
        """StyleTower features of style images ``[B, 64, d]`` or a history ``[B, N, 64, d]``,
        mean-pooled over the history (eq. 6 without masks; ``history_mask`` ``[B, N]`` marks the
        real images of padded histories). ``query=None`` is the self-attention form; a
        ``query`` ``[B, 64, d]`` asks every style image (cross form)."""
        hist = e_style if e_style.ndim == 4 else e_style[:, None]
        if hist.ndim != 4 or hist.shape[1] == 0:
            raise ValueError(f"style embeddings must be [B, 64, d] or [B, N, 64, d] with N >= 1, got "
                             f"{tuple(e_style.shape)}")
        b, n = hist.shape[:2]
        flat = hist.reshape(b * n, *hist.shape[2:])
        if query is None:
            feats = self.style_tower(flat, None)
        else:
            feats = self.style_tower(query.repeat_interleave(n, 0), flat)
        feats = feats.view(b, n, *feats.shape[1:])
        if history_mask is None:
            return feats.mean(1)
        w = history_mask.to(feats.device, feats.dtype)[:, :, None, None]
        return (feats * w).sum(1) / w.sum(1)

    def instruction(self, e_style: torch.Tensor, e_sem: torch.Tensor, form: str = "self",
                    history_mask: torch.Tensor | None = None, *, return_logits: bool = False):
        """Compose a new instruction: the style of ``e_style`` (one image ``[B, 64, d]`` or a
        history ``[B, N, 64, d]``) with the semantics of ``e_sem`` ``[B, 64, d]``.

        ``form="self"`` is the paper's inference form (stage 2 without masks):
        ``z = Fusion(mean_i StyleTower(E_i, E_i), SemTower(E_r, E_r))``. ``form="cross"`` lets
        the semantic image ask the style images, ``StyleTower(q=E_r, kv=E_i)``, the way the
        anchor asks its positive-style sample in stage 1. ``return_logits``: as :meth:`fuse`.
        """
        if form not in ("self", "cross"):
            raise ValueError(f"form must be 'self' or 'cross', got {form!r}")
        f_sty = self.style_features(e_style, e_sem if form == "cross" else None, history_mask)
        f_sem = self.sem_tower(e_sem, None)
        return self.fuse(f_sty, f_sem, return_logits=return_logits)

    # ------------------------------------------------------------------ stage 2
    def user_instruction(self, e_hist: torch.Tensor, e_ref: torch.Tensor, alpha_s=0.2, alpha_m=0.5,
                         history_mask: torch.Tensor | None = None, return_masks: bool = False,
                         return_logits: bool = False):
        """Stage 2's instruction z~ for a user's history ``[B, N, 64, d]`` and a reference
        ``[B, 64, d]`` (paper section 2.2):

        - towers in the self-attention form: ``F_i^sty = StyleTower(E_i, E_i)``, ``F^sem = SemTower(E_r, E_r)``;
        - eq. (5): masks ``m_i^sty, m^sem = MaskGenerator(F^sty, F^sem, alpha_s, alpha_m)``;
        - eq. (6): ``F~^sty = (1/N) sum_i F_i^sty * m_i^sty`` (over real history images);
        - eq. (7): ``F~^sem = F^sem * m^sem``;
        - eq. (8): ``z~ = FusionNetwork(F~^sty, F~^sem)``.

        ``alpha_s`` / ``alpha_m`` (floats or ``[B]``) are the masked ratios in [0, 1]: more
        ``alpha_m`` = less of the reference's semantics. ``history_mask`` ``[B, N]`` marks real
        history images. With ``return_masks`` also returns ``(m_hist, m_ref)``; with
        ``return_logits`` z is ``(z, word_logits)`` as in :meth:`fuse`.
        """
        if not self.config.mask_generator:
            raise ValueError("this DRC model has no mask generator (a stage-1 model): build a stage-2 model with "
                             "DRC.from_stage1(folder)")
        if e_hist.ndim != 4 or e_hist.shape[1] == 0:
            raise ValueError(f"history embeddings must be [B, N, 64, d] with N >= 1, got {tuple(e_hist.shape)}")
        b, n = e_hist.shape[:2]
        f_sty = self.style_tower(e_hist.reshape(b * n, *e_hist.shape[2:]), None)
        f_sty = f_sty.view(b, n, *f_sty.shape[1:])         # the towers' width d (inputs may be narrower)
        f_sem = self.sem_tower(e_ref, None)
        m_h, m_r = self.masks(f_sty, f_sem, alpha_s, alpha_m, history_mask)
        valid = (torch.ones(b, n, device=f_sty.device) if history_mask is None
                 else history_mask.to(f_sty.device, f_sty.dtype))
        f_sty_t = (f_sty * m_h[..., None].to(f_sty.dtype) * valid[:, :, None, None]).sum(1) / valid.sum(1)[:, None, None]
        f_sem_t = f_sem * m_r[..., None].to(f_sem.dtype)
        z = self.fuse(f_sty_t, f_sem_t, return_logits=return_logits)
        return (z, (m_h, m_r)) if return_masks else z


# ---------------------------------------------------------------------------- tower inputs of sticker cells
def cell_images(stickers) -> torch.Tensor:
    """Every sticker of a set as float ``[n_styles, n_emoji, 3, 32, 32]`` in [0, 1]: what
    semantic features read (index it with cells, as the codes ``[n_styles, n_emoji, 64]``)."""
    from drclib.data.stickers import to_tensor

    return to_tensor(stickers.images)


def cell_tokens(drc: "DRC", lmm: PocketLMM, codes: torch.Tensor, cells, images: torch.Tensor | None = None) -> torch.Tensor:
    """:meth:`DRC.image_tokens` of (style, emoji) cells ``[..., 2]`` -> ``[..., 64, d_in]`` (float32).
    ``codes`` ``[n_styles, n_emoji, 64]``; ``images`` from :func:`cell_images` (needed when the
    model reads semantic features)."""
    cells = np.asarray(cells)
    flat = cells.reshape(-1, 2)
    imgs = None
    if drc.needs_images:
        if images is None:
            raise ValueError("this DRC model reads semantic features of the images: pass images=cell_images(stickers)")
        imgs = images[flat[:, 0], flat[:, 1]]
    out = drc.image_tokens(lmm, codes[flat[:, 0], flat[:, 1]].to(lmm.device), imgs).float()
    return out.view(*cells.shape[:-1], *out.shape[1:])


class TowerInputs:
    """What the towers read of sticker cells, for a training or evaluation loop:
    ``inputs(cells)`` = :func:`cell_tokens` ``[..., 64, d_in]``. Semantic features come from
    a frozen encoder, so they are computed once for every cell of the set and looked up after
    (8% of a stage-1 step otherwise); the other kinds are computed on demand."""

    def __init__(self, drc: "DRC", lmm: PocketLMM, codes: torch.Tensor, images: torch.Tensor | None = None):
        self.drc, self.lmm, self.codes, self.images = drc, lmm, codes, images
        self.cache = None
        if drc.needs_images:
            if images is None:
                raise ValueError("this DRC model reads semantic features of the images: pass images=cell_images(stickers)")
            flat = images.flatten(0, 1)
            with torch.no_grad():
                feats = torch.cat([drc.image_tokens(lmm, None, flat[i:i + 256]).float().cpu()
                                   for i in range(0, len(flat), 256)])
            self.cache = feats.view(*images.shape[:2], *feats.shape[1:])

    def __call__(self, cells) -> torch.Tensor:
        if self.cache is None:
            return cell_tokens(self.drc, self.lmm, self.codes, cells, self.images)
        cells = np.asarray(cells)
        return self.cache[cells[..., 0], cells[..., 1]].to(self.lmm.device)


# ---------------------------------------------------------------------------- loading
def lmm_fingerprint(folder: str | Path) -> dict:
    """Which LMM a DRC model was trained against: its folder (relative to the repository when
    inside it) and the sha256 of its weights. A DRC model only works with that LMM."""
    from drclib.io import file_digest, repo_relative

    return {"folder": repo_relative(folder), "sha256": file_digest(Path(folder) / "model.safetensors")}


def check_lmm_matches(info: dict, lmm_folder: str | Path, source: str) -> None:
    """Raise :class:`CheckpointError` when ``lmm_folder`` is not the LMM recorded in ``info``."""
    want = info.get("lmm", {}).get("sha256")
    if want and lmm_fingerprint(lmm_folder)["sha256"] != want:
        raise CheckpointError(f"{source} was trained against another LMM than {lmm_folder} (weights differ); "
                              "retrain it against this LMM or pass the LMM it was trained with")


def load_stage1(folder: str | Path, lmm_folder: str | Path | None = None, *,
                device: str | torch.device = "cpu") -> tuple["DRC", PocketLMM]:
    """A saved stage-1 model and the LMM it works with: the LMM it was trained against
    (default: the shipped one; its weights must match the recorded fingerprint) plus the LoRA
    adapters saved beside the model in ``lora/``, if it trained any."""
    from drclib.backbone import default_checkpoint_dir

    folder = Path(folder)
    model = DRC.from_pretrained(folder, device=device)
    lmm_folder = Path(lmm_folder) if lmm_folder else default_checkpoint_dir()
    check_lmm_matches(model.training_info, lmm_folder, str(folder))
    lmm = PocketLMM.from_pretrained(lmm_folder, device=device)
    if (folder / "lora").is_dir():
        lmm.load_lora(folder / "lora")
        lmm.to(device).eval()
    return model, lmm


@torch.no_grad()
def history_keep_rates(drc: "DRC", lmm: PocketLMM, codes: torch.Tensor, samples, idx, *,
                       images: torch.Tensor | None = None, alpha_s: float = 0.4, alpha_m: float = 0.5,
                       seed: int = 0, batch_size: int = 50) -> dict:
    """What a stage-2 model's style mask (eq. 5) keeps of each history item, for the samples ``idx``
    of ``samples`` (:class:`drclib.data.users.Samples`): the share of each history image's 64 style
    tokens kept at ``alpha_s``, with each sample's reference drawn from its reference set as
    :func:`drclib.pipeline.evaluate_personalization` draws it (``seed``).

    Returns ``keep`` (``[len(idx), N]``, NaN for padding), ``off`` (``[len(idx), N]``, True where the
    item's style is not the user's: noise in the history), and the mean keep share of on-style and
    off-style items (``on_style`` / ``off_style``, ``None`` when there are none), their standard
    errors over items (``on_style_se`` / ``off_style_se``) and counts (``n_on`` / ``n_off``).
    The style mask is chosen jointly over all history tokens, so a trained generator can drop an
    off-style item almost whole while keeping the on-style ones."""
    if not drc.config.mask_generator:
        raise ValueError("this DRC model has no mask generator (a stage-1 model): use a stage-2 model")
    idx = np.asarray(idx)
    if len(idx) == 0:
        raise ValueError("no samples given")
    rng = np.random.default_rng([seed, 9])
    refs = np.stack([samples.draw_reference(int(i), rng) for i in idx])
    hist = np.asarray(samples.history[idx])
    valid = hist[..., 0] >= 0
    keep = np.full(valid.shape, np.nan)
    drc.eval()
    for i in range(0, len(idx), batch_size):
        sl = slice(i, min(len(idx), i + batch_size))
        h = np.where(valid[sl][..., None], hist[sl], 0)
        e_hist = cell_tokens(drc, lmm, codes, h, images)
        e_ref = cell_tokens(drc, lmm, codes, refs[sl], images)
        mask = torch.as_tensor(valid[sl], device=e_hist.device)
        _, (m_h, _) = drc.user_instruction(e_hist, e_ref, alpha_s, alpha_m, history_mask=mask, return_masks=True)
        keep[sl] = m_h.float().mean(-1).cpu().numpy()
    keep[~valid] = np.nan
    off = valid & (hist[..., 0] != np.asarray(samples.style[idx])[:, None])
    on = valid & ~off
    out = {"keep": keep, "off": off, "alpha_s": float(alpha_s), "n_on": int(on.sum()), "n_off": int(off.sum())}
    for name, sel in (("on_style", on), ("off_style", off)):
        vals = keep[sel]
        out[name] = float(vals.mean()) if len(vals) else None
        out[f"{name}_se"] = float(vals.std(ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else None
    return out
