"""Composing: the latent instruction z placed in the LMM's prompt, and images drawn from it.

A hybrid prompt is ``<bos> HYBRID_PROMPT [text] <z> z_1 .. z_K <img>``: the LMM reads z as
input embeddings where words would be, then writes 64 visual codes. With a slot-space z
(each of the K tokens one LMM word or empty), empty slots are zero vectors that are masked
out and packed to the left, so the LMM sees exactly the words the fusion network chose.
"""

from __future__ import annotations

import torch

from drclib.backbone import BOS, PocketLMM

HYBRID_PROMPT = "Create an image that meets the specified requirements"
"""The text before the latent instruction z in every DRC prompt (the paper's hybrid prompt)."""


# ---------------------------------------------------------------------------- the hybrid prompt
def hybrid_prompt(lmm: PocketLMM, z: torch.Tensor, text: str | None = None,
                  instruction: str = HYBRID_PROMPT) -> torch.Tensor:
    """Prompt embeddings ``[B, T, d]``: ``<bos> Create an image that meets the specified
    requirements [text] z`` (z's K tokens sit where the ``<z>`` placeholder would be). The
    ``<img>`` token that starts the image is added by generation and by the loss."""
    if not torch.is_tensor(z) or z.ndim != 3 or z.shape[-1] != lmm.config.hidden_size:
        raise ValueError(f"z must be [B, K, {lmm.config.hidden_size}], got "
                         f"{tuple(z.shape) if torch.is_tensor(z) else type(z).__name__}")
    words = [BOS, *lmm.text_ids(instruction)]
    if text:
        words += lmm.text_ids(text)
    prefix = lmm.embed(torch.tensor(words, device=lmm.device))
    prefix = prefix.to(z.dtype)[None].expand(z.shape[0], -1, -1)
    return torch.cat([prefix, z.to(lmm.device)], 1)


def hybrid_prompts(lmm: PocketLMM, z: torch.Tensor, texts, instruction: str = HYBRID_PROMPT):
    """:func:`hybrid_prompt` for one text per row (eq. 9 puts the user's text instruction in the
    prompt): left-padded embeddings ``[B, T, d]`` and their attention mask ``[B, T]``."""
    if isinstance(texts, str) or texts is None:
        p = hybrid_prompt(lmm, z, texts, instruction)
        return _left_pack(p, prompt_mask(p))
    texts = list(texts)
    if len(texts) != z.shape[0]:
        raise ValueError(f"{len(texts)} texts for {z.shape[0]} instructions")
    rows = [hybrid_prompt(lmm, z[i:i + 1], t, instruction) for i, t in enumerate(texts)]
    width = max(r.shape[1] for r in rows)
    emb = z.new_zeros(len(rows), width, z.shape[-1])
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=z.device)
    for i, r in enumerate(rows):
        emb[i, width - r.shape[1]:] = r[0]
        mask[i, width - r.shape[1]:] = prompt_mask(r)[0]
    return _left_pack(emb, mask)


def _left_pack(emb: torch.Tensor, mask: torch.Tensor):
    """Move each row's masked positions (empty slots) to its start, keeping the order of the
    rest: the same prompt for the LMM (positions follow the mask), in the left-padded form
    generation needs (the last position of every row real)."""
    if bool(mask.all()):
        return emb, mask
    order = torch.sort(mask, dim=1, stable=True).indices
    return emb.gather(1, order[..., None].expand_as(emb)), mask.gather(1, order)


def prompt_mask(prompt: torch.Tensor) -> torch.Tensor:
    """Attention mask ``[B, T]`` of prompt embeddings: 0 for an all-zero vector (an empty slot
    of a ``z_space="slots"`` instruction, or left padding), 1 elsewhere. No word embedding of
    the LMM is exactly zero, so nothing else is masked."""
    return (prompt.detach().abs().sum(-1) != 0).long()


# ---------------------------------------------------------------------------- generation
@torch.no_grad()
def generate_codes(lmm: PocketLMM, z: torch.Tensor, *, text: str | None = None, greedy: bool = True,
                   seed: int | None = 0, num_images: int = 1, temperature: float = 1.0,
                   top_k: int | None = None) -> torch.LongTensor:
    """Visual codes ``[B * num_images, 64]`` the LMM writes for instructions ``z`` ``[B, K, d]``
    (prompt from :func:`hybrid_prompts`: ``text`` is None, one str, or one str per row; KV
    cache, constrained to visual codes)."""
    prompt, mask = hybrid_prompts(lmm, z, text)
    return lmm.generate_images(inputs_embeds=prompt.float(), attention_mask=mask, num_images=num_images, seed=seed,
                               greedy=greedy, temperature=temperature, top_k=top_k)
