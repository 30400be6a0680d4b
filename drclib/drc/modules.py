"""DRC's building blocks: the cross-attention block, the two towers, the fusion network, and
the ablation variants of Table 3 (paper section 2.1).

Every block works on *token sequences* of width ``d`` (the LMM's hidden size): an image is
its visual-token embedding sequence ``E_x`` of shape ``[B, 64, d]`` (the LMM's own embedding
lookup of the tokenizer's 8 x 8 code grid, :meth:`drclib.backbone.PocketLMM.visual_embeddings`).

========================  ======================================================================
block                     what it computes
========================  ======================================================================
:class:`CrossAttention`   multi-head attention, queries from one sequence, keys/values from another
:class:`StyleTower`       StyleTower / SemTower (both a :class:`Tower`): one cross-attention layer,
                          then a feed-forward layer
:class:`FusionNetwork`    two cross-attention layers (the inputs take turns as query), then K
                          learned queries compress the result to the latent instruction z
:class:`MLPTower`         ablation "w/o attention": a token-level MLP that sees one image only
:class:`ConcatFusion`     ablation "w/o FusionNetwork": the two feature sequences concatenated
:class:`MaskGenerator`    stage 2: relevance of history style tokens and reference semantic tokens,
                          top-k masks at ratios alpha_s, alpha_m (straight-through)
========================  ======================================================================

Two choices the paper leaves open, made here:

- **No residual from the query in a tower.** ``F = A + FFN(A)`` with ``A = Attention(q, kv)``:
  the output is built from the key/value image's tokens, selected by the query image. With a
  residual ``q + A`` the semantic tower's output for z(s,a) would contain the anchor itself
  and the model could copy it instead of learning to disentangle.
- **Positions.** ``E_x`` is an embedding lookup and knows nothing of where a token sits on
  the 8 x 8 grid, so each tower and the fusion network (and its concatenation ablation) add
  a learned position embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GRID_TOKENS = 64
"""Visual tokens per image (8 x 8)."""


class CrossAttention(nn.Module):
    """Pre-norm multi-head attention: ``Attention(LN(query), LN(context))``.

    With ``context=None`` it is self-attention (``q = k = v``), the form stage 2 uses. Returns
    ``[B, Tq, d]``, and with ``need_weights=True`` also the head-averaged attention weights
    ``[B, Tq, Tk]`` (for the notebooks' attention maps).
    """

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def forward(self, query: torch.Tensor, context: torch.Tensor | None = None, *,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = False):
        q = self.norm_q(query)
        kv = q if context is None else self.norm_kv(context)
        out, w = self.attn(q, kv, kv, key_padding_mask=key_padding_mask, need_weights=need_weights,
                           average_attn_weights=True)
        return (out, w) if need_weights else out


class FeedForward(nn.Module):
    """Pre-norm two-layer MLP with GELU (``dim -> mult * dim -> dim``)."""

    def __init__(self, dim: int, mult: int = 2, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, mult * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mult * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _check_tokens(x: torch.Tensor, dim: int, name: str) -> None:
    if not torch.is_tensor(x) or x.ndim != 3 or x.shape[-1] != dim:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{name} must be a [batch, tokens, {dim}] tensor, got {shape}")


def _check_pair(f_style: torch.Tensor, f_sem: torch.Tensor, dim: int) -> None:
    """The inputs of a fusion: two token sequences of width ``dim`` with one batch size."""
    _check_tokens(f_style, dim, "style features")
    _check_tokens(f_sem, dim, "semantic features")
    if f_style.shape[0] != f_sem.shape[0]:
        raise ValueError(f"style and semantic batch sizes differ: {f_style.shape[0]} vs {f_sem.shape[0]}")


def _input_projection(in_dim: int, dim: int) -> nn.Module:
    """A tower's map from its input features to its width: a linear map when the widths
    differ (the semantic encoder's tokens), nothing when they agree (E_x)."""
    return nn.Identity() if in_dim == dim else nn.Linear(in_dim, dim)


class Tower(nn.Module):
    """StyleTower and SemTower (they share this architecture; the paper's section 2.1).

    ``forward(query, context)``: one cross-attention layer (queries from ``query``, keys and
    values from ``context``) then a feed-forward layer, ``F = A + FFN(A)``. Stage 1 calls it
    in the cross form, e.g. ``F_a^sty = StyleTower(q=E_a, k=v=E_s)``; stage 2 and inference in
    the self-attention form ``StyleTower(E_i, E_i)`` (``context=None``). Returns ``[B, 64, d]``.
    """

    def __init__(self, dim: int, heads: int = 4, ffn_mult: int = 2, dropout: float = 0.0,
                 tokens: int = GRID_TOKENS, in_dim: int | None = None):
        super().__init__()
        self.dim, self.in_dim = dim, in_dim or dim
        self.inp = _input_projection(self.in_dim, dim)
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.attn = CrossAttention(dim, heads, dropout)
        self.ffn = FeedForward(dim, ffn_mult, dropout)

    def forward(self, query: torch.Tensor, context: torch.Tensor | None = None, *,
                return_attention: bool = False):
        _check_tokens(query, self.in_dim, "query")
        if context is not None:
            _check_tokens(context, self.in_dim, "context")
            if context.shape[0] != query.shape[0]:
                raise ValueError(f"query and context batch sizes differ: {query.shape[0]} vs {context.shape[0]}")
        q = self.inp(query) + self.pos[:, :query.shape[1]]
        kv = q if context is None else self.inp(context) + self.pos[:, :context.shape[1]]
        a, w = self.attn(q, kv, need_weights=True) if return_attention else (self.attn(q, kv), None)
        out = a + self.ffn(a)
        return (out, w) if return_attention else out


class StyleTower(Tower):
    """The style tower: stage 1 pairs the anchor with its positive-style sample (same style,
    other emoji), ``F_a^sty = StyleTower(q=E_a, k=v=E_s)`` and ``F_s^sty = StyleTower(q=E_s,
    k=v=E_a)``, so attention can only profit from what the two share: the style."""


class SemTower(Tower):
    """The semantic tower: stage 1 pairs the anchor with its positive-semantic sample (same
    emoji, other style), ``F_a^sem = SemTower(q=E_a, k=v=E_m)`` and ``F_m^sem = SemTower(q=E_m,
    k=v=E_a)``."""


class MLPTower(nn.Module):
    """Ablation "w/o attention" (Table 3): a token-level MLP disentangler. Each output token is
    a function of the same token of the query image only; ``context`` is accepted and ignored,
    so the tower never sees the second image."""

    def __init__(self, dim: int, heads: int = 4, ffn_mult: int = 2, dropout: float = 0.0,
                 tokens: int = GRID_TOKENS, in_dim: int | None = None):
        super().__init__()
        self.dim, self.in_dim = dim, in_dim or dim
        self.pos = nn.Parameter(torch.randn(1, tokens, self.in_dim) * 0.02)
        self.inp = nn.Sequential(nn.LayerNorm(self.in_dim), nn.Linear(self.in_dim, dim))
        self.ffn = FeedForward(dim, ffn_mult, dropout)

    def forward(self, query: torch.Tensor, context: torch.Tensor | None = None, *,
                return_attention: bool = False):
        _check_tokens(query, self.in_dim, "query")
        a = self.inp(query + self.pos[:, :query.shape[1]])
        out = a + self.ffn(a)
        return (out, None) if return_attention else out


class FusionNetwork(nn.Module):
    """Fuse a (style, semantic) feature pair into a latent instruction z ``[B, K, d_out]``.

    Two cross-attention layers in which the inputs take turns as query and as key/value,
    each with a residual connection and layer normalisation::

        X = LN(F_sty + Attention(q=F_sty, kv=F_sem))      # style asks the semantics
        Y = LN(F_sem + Attention(q=F_sem, kv=X))          # semantics ask the fused style

    then K learned query tokens attend over ``[X; Y]`` (with a feed-forward layer) and a linear
    map brings them to the LMM's width: z, the compact latent instruction of eq. (2).
    """

    def __init__(self, dim: int, n_latent: int = 16, heads: int = 4, ffn_mult: int = 2, dropout: float = 0.0,
                 out_dim: int | None = None, tokens: int = GRID_TOKENS):
        super().__init__()
        self.dim, self.n_latent = dim, n_latent
        self.type_emb = nn.Parameter(torch.randn(2, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.style_asks = CrossAttention(dim, heads, dropout)
        self.sem_asks = CrossAttention(dim, heads, dropout)
        self.norm_x, self.norm_y = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.queries = nn.Parameter(torch.randn(1, n_latent, dim) * 0.02)
        self.compress = CrossAttention(dim, heads, dropout)
        self.ffn = FeedForward(dim, ffn_mult, dropout)
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, out_dim or dim))

    def forward(self, f_style: torch.Tensor, f_sem: torch.Tensor) -> torch.Tensor:
        _check_pair(f_style, f_sem, self.dim)
        s = f_style + self.type_emb[0] + self.pos[:, :f_style.shape[1]]
        m = f_sem + self.type_emb[1] + self.pos[:, :f_sem.shape[1]]
        x = self.norm_x(s + self.style_asks(s, m))
        y = self.norm_y(m + self.sem_asks(m, x))
        memory = torch.cat([x, y], 1)
        q = self.queries.expand(f_style.shape[0], -1, -1)
        z = q + self.compress(q, memory)
        z = z + self.ffn(z)
        return self.out(z)


class ConcatFusion(nn.Module):
    """Ablation "w/o FusionNetwork" (Table 3): plain concatenation of the two feature
    sequences along the token axis, normalised and linearly mapped to the LMM width. The
    instruction is then ``[B, 2 * 64, d_out]`` tokens long (no compression, no interaction)."""

    def __init__(self, dim: int, n_latent: int = 16, heads: int = 4, ffn_mult: int = 2, dropout: float = 0.0,
                 out_dim: int | None = None, tokens: int = GRID_TOKENS):
        super().__init__()
        self.dim = dim
        self.type_emb = nn.Parameter(torch.randn(2, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, out_dim or dim))

    def forward(self, f_style: torch.Tensor, f_sem: torch.Tensor) -> torch.Tensor:
        _check_pair(f_style, f_sem, self.dim)
        pos_s, pos_m = self.pos[:, :f_style.shape[1]], self.pos[:, :f_sem.shape[1]]
        return self.out(torch.cat([f_style + self.type_emb[0] + pos_s, f_sem + self.type_emb[1] + pos_m], 1))


class MaskGenerator(nn.Module):
    """Stage 2's learnable masks (paper section 2.2, eq. 5), after Pigeon's mask generator.

    One transformer-encoder layer reads the history's style tokens ``[B, N, 64, d]`` and the
    reference's semantic tokens ``[B, 64, d]`` as one sequence, with a type embedding
    (history / reference), an image-index embedding and a grid-position embedding. Each token's
    **relevance** is the cosine between its input and its encoder output, soft-maxed within its
    type (jointly over all history tokens; over the reference's tokens). A ratio ``alpha`` of
    each type is masked out: the ``max(1, int(n * (1 - alpha)))`` most relevant tokens are kept.

    The masks are **applied multiplicatively** with a straight-through estimator: the forward
    pass multiplies by exactly 0 or 1, the backward pass sends the gradient of the mask to the
    relevance scores, so the generator trains (Pigeon's released code turned the mask into
    indices, which cuts that gradient). Gumbel noise perturbs the scores in training only;
    at inference the masks are deterministic.
    """

    def __init__(self, dim: int, heads: int = 4, ffn_mult: int = 2, max_history: int = 16, tokens: int = GRID_TOKENS,
                 gumbel_scale: float = 1.0):
        super().__init__()
        self.dim, self.max_history, self.gumbel_scale = dim, max_history, gumbel_scale
        self.type_emb = nn.Parameter(torch.randn(2, dim) * 0.02)           # 0: history, 1: reference
        self.image_emb = nn.Parameter(torch.randn(max_history + 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(tokens, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.encoder = nn.TransformerEncoderLayer(dim, heads, ffn_mult * dim, dropout=0.0, batch_first=True,
                                                  norm_first=True)

    @staticmethod
    def keep_count(n: int, ratio: float) -> int:
        """Tokens kept when a ratio of ``n`` is masked: ``max(1, int(n * (1 - ratio)))``."""
        return max(1, int(n * (1.0 - ratio)))

    def relevance(self, f_style: torch.Tensor, f_sem: torch.Tensor,
                  history_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Relevance logits (cosine of input and encoder output) of every history token
        ``[B, N, T]`` and reference token ``[B, T]``."""
        b, n, t, d = f_style.shape
        if n > self.max_history:
            raise ValueError(f"history of {n} images is longer than this mask generator's max_history "
                             f"({self.max_history}); use fewer history images")
        idx = torch.arange(n, device=f_style.device)
        hist = f_style + self.type_emb[0] + self.image_emb[idx][None, :, None] + self.pos[:t]
        ref = f_sem + self.type_emb[1] + self.image_emb[self.max_history] + self.pos[:t]
        x = self.norm(torch.cat([hist.reshape(b, n * t, d), ref], 1))
        pad = None
        if history_mask is not None:
            pad = torch.cat([(~history_mask.bool())[:, :, None].expand(b, n, t).reshape(b, n * t),
                             torch.zeros(b, t, dtype=torch.bool, device=x.device)], 1)
        y = self.encoder(x, src_key_padding_mask=pad)
        cos = F.cosine_similarity(x, y, dim=-1)
        return cos[:, :n * t].view(b, n, t), cos[:, n * t:]

    def _mask(self, scores: torch.Tensor, valid: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        """Straight-through top-k mask over the last axis of ``scores`` ``[B, L]``."""
        if self.training and self.gumbel_scale > 0:
            u = torch.rand_like(scores).clamp_(1e-6, 1 - 1e-6)
            scores = scores - self.gumbel_scale * torch.log(-torch.log(u)) * 0.1
        scores = scores.masked_fill(~valid, float("-inf"))
        soft = torch.softmax(scores * 10.0, -1)
        n_valid = valid.sum(-1)
        keep = torch.clamp((n_valid.float() * (1.0 - ratio)).floor().long(), min=1)
        order = scores.argsort(-1, descending=True)
        rank = torch.empty_like(order)
        rank.scatter_(-1, order, torch.arange(scores.shape[-1], device=scores.device).expand_as(order))
        hard = ((rank < keep[:, None]) & valid).to(soft.dtype)
        return hard + soft - soft.detach()

    def forward(self, f_style: torch.Tensor, f_sem: torch.Tensor, alpha_s, alpha_m,
                history_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks for the history's style tokens ``[B, N, T]`` and the reference's semantic
        tokens ``[B, T]``: 1 = keep, 0 = masked, in the forward pass. ``alpha_s`` and ``alpha_m``
        (floats or ``[B]`` tensors in [0, 1]) are the masked ratios; ``history_mask`` ``[B, N]``
        marks real history images (False = padding, never kept)."""
        if f_style.ndim != 4 or f_style.shape[-1] != self.dim:
            raise ValueError(f"history style tokens must be [B, N, T, {self.dim}], got {tuple(f_style.shape)}")
        if f_sem.ndim != 3 or f_sem.shape[-1] != self.dim or f_sem.shape[0] != f_style.shape[0]:
            raise ValueError(f"reference semantic tokens must be [B, T, {self.dim}] with the history's batch, got "
                             f"{tuple(f_sem.shape)}")
        b, n, t, _ = f_style.shape
        if n == 0:
            raise ValueError("the history is empty: give at least one history image")
        ratios = []
        for name, a in (("alpha_s", alpha_s), ("alpha_m", alpha_m)):
            a = torch.as_tensor(a, dtype=torch.float32, device=f_style.device).expand(b)
            if not torch.isfinite(a).all() or (a < 0).any() or (a > 1).any():
                raise ValueError(f"{name} must lie in [0, 1], got {a.tolist()[:4]}")
            ratios.append(a)
        valid_h = (torch.ones(b, n, dtype=torch.bool, device=f_style.device) if history_mask is None
                   else history_mask.bool().to(f_style.device))
        if not valid_h.any(1).all():
            raise ValueError("every sample needs at least one real history image (history_mask all False)")
        rel_h, rel_r = self.relevance(f_style, f_sem, valid_h)
        m_h = self._mask(rel_h.reshape(b, n * t), valid_h[:, :, None].expand(b, n, t).reshape(b, n * t), ratios[0])
        m_r = self._mask(rel_r, torch.ones(b, t, dtype=torch.bool, device=f_sem.device), ratios[1])
        return m_h.view(b, n, t), m_r


TOWERS = {"attention": (StyleTower, SemTower), "mlp": (MLPTower, MLPTower)}
"""(style tower class, semantic tower class) for ``DRCConfig.tower``."""
FUSIONS = {"attention": FusionNetwork, "concat": ConcatFusion}
"""Fusion class for ``DRCConfig.fusion``."""

__all__ = ["CrossAttention", "FeedForward", "Tower", "StyleTower", "SemTower", "MLPTower", "MaskGenerator", "FusionNetwork", "ConcatFusion", "TOWERS",
           "FUSIONS", "GRID_TOKENS"]
