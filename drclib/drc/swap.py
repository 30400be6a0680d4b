"""The swap test of stage 1: style of A with the emoji of B, judged.

For pairs of cells (A, B), stage 1's instruction z(A's style, B's semantics) should make the
LMM draw B's emoji in A's style. :func:`evaluate_stage1` scores that with the judges (style of
A, emoji of B, both, and collapse onto B's style); :func:`swap_reference_rows` gives the
calibration rows (the LMM asked in words, copies of A and of B) on the same pairs.
"""

from __future__ import annotations

import numpy as np
import torch

from drclib.backbone import PocketLMM
from drclib.drc.composition import generate_codes
from drclib.drc.model import COMBINATIONS, DRC, TowerInputs


def swap_pairs(stickers, n: int, seed: int = 0, kind: str = "heldout") -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs of cells (A, B) with different style and different emoji, ``[n, 2]`` each.
    The swap test asks for A's style with B's emoji; the right answer is the cell
    ``(style of A, emoji of B)``.

    ``kind="heldout"``: A and B are held-out cells (never trained on; their target is usually a
    training cell). ``kind="train"``: A, B and the target cell are all training cells, so the
    LMM has drawn the answer before and the test asks only whether the instruction carries A's
    style and B's emoji."""
    from drclib.data import heldout_cells

    if kind not in ("heldout", "train"):
        raise ValueError(f"kind must be 'heldout' or 'train', got {kind!r}")
    held = heldout_cells(stickers)
    cells = np.argwhere(held if kind == "heldout" else ~held)
    rng = np.random.default_rng([seed, 11] if kind == "heldout" else [seed, 13])
    a_out, b_out = [], []
    tries = 0
    while len(a_out) < n:
        tries += 1
        if tries > 1000 * max(n, 1):
            raise ValueError(f"cannot find {n} {kind} pairs with a usable target in this sticker set")
        i, j = rng.integers(len(cells), size=2)
        a, b = cells[i], cells[j]
        if a[0] != b[0] and a[1] != b[1] and (kind == "heldout" or not held[a[0], b[1]]):
            a_out.append(a)
            b_out.append(b)
    return np.array(a_out, np.int64), np.array(b_out, np.int64)


PAIR_KINDS = ("train", "heldout")
"""The two kinds of swap-test pairs (:func:`swap_pairs`)."""


def swap_pair_sets(stickers, n: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": pairs, "heldout": pairs}``: both kinds of swap-test pairs, ``n`` each."""
    return {k: swap_pairs(stickers, n, seed, kind=k) for k in PAIR_KINDS}


def _predict(style_clf, emoji_clf, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return style_clf.predict(images), emoji_clf.topk(images, 5)[1]


def swap_rates(style_pred: torch.Tensor, emoji_top: torch.Tensor, a: np.ndarray, b: np.ndarray) -> dict:
    """Rates of a composed batch (style of A, emoji of B): ``style_of_A``, ``emoji_of_B``
    (top-1), ``emoji_of_B_top5``, ``both``; and the two collapses: ``style_of_B`` (the output
    took the semantic image's style) and ``emoji_of_A`` (it drew the style image's emoji)."""
    sa, sb = torch.from_numpy(a[:, 0]), torch.from_numpy(b[:, 0])
    ea, eb = torch.from_numpy(a[:, 1]), torch.from_numpy(b[:, 1])
    s_ok, e_ok = style_pred == sa, emoji_top[:, 0] == eb
    return {"style_of_A": float(s_ok.float().mean()), "emoji_of_B": float(e_ok.float().mean()),
            "emoji_of_B_top5": float((emoji_top == eb[:, None]).any(1).float().mean()),
            "both": float((s_ok & e_ok).float().mean()),
            "style_of_B": float((style_pred == sb).float().mean()),
            "emoji_of_A": float((emoji_top[:, 0] == ea).float().mean()), "n": int(len(a))}


@torch.no_grad()
def evaluate_stage1(drc: DRC, lmm: PocketLMM, tokenizer, style_clf, emoji_clf, codes: torch.Tensor, *,
                    triplets, pairs, forms=("self", "cross"),
                    batch_size: int = 100, keep_images: int = 0, images: torch.Tensor | None = None) -> dict:
    """Score a stage-1 model with the kit's classifiers (greedy generation).

    - ``combinations``: for each of the four z of eq. (2), the rate at which the image generated
      from it has the anchor's style, its emoji (top-1 / top-5) and both (``triplets``,
      usually :func:`heldout_triplets`).
    - ``swap``: for each kind of pairs (``pairs`` is ``{"train": (a, b), "heldout": (a, b)}``,
      :func:`swap_pair_sets`, or one ``(a, b)`` taken as held-out pairs) and each composition
      ``form`` (:meth:`DRC.instruction`), A's style with B's emoji: :func:`swap_rates`,
      under ``swap[kind][form]``.
    ``codes`` is ``[n_styles, n_emoji, 64]`` (and ``images`` :func:`cell_images`, for a model
    that reads semantic features). With ``keep_images > 0`` the first images of each
    test come back under ``"images"`` (uint8-ready float tensors in [0, 1]).
    """
    from drclib.judges import classify_rates

    drc.eval()
    lmm.eval()
    dev = lmm.device

    emb = TowerInputs(drc, lmm, codes, images)

    def run(make_z, n):
        imgs = []
        for i in range(0, n, batch_size):
            z = make_z(slice(i, min(n, i + batch_size)))
            imgs.append(tokenizer.decode(generate_codes(lmm, z.to(dev), greedy=True).to(tokenizer.device)).cpu())
        return torch.cat(imgs)

    out: dict = {"combinations": {}, "swap": {}, "images": {}}
    t = triplets
    for c in COMBINATIONS:
        images = run(lambda sl: drc.stage1_instructions(emb(t.anchor[sl]), emb(t.pos_style[sl]),
                                                        emb(t.pos_sem[sl]), (c,))[c], len(t))
        out["combinations"][c] = classify_rates(style_clf, emoji_clf, images, t.anchor[:, 0], t.anchor[:, 1])
        if keep_images:
            out["images"][c] = images[:keep_images]
    pair_sets = pairs if isinstance(pairs, dict) else {"heldout": pairs}
    for kind, (a, b) in pair_sets.items():
        out["swap"][kind] = {}
        for form in forms:
            images = run(lambda sl: drc.instruction(emb(a[sl]), emb(b[sl]), form=form), len(a))
            out["swap"][kind][form] = swap_rates(*_predict(style_clf, emoji_clf, images), a, b)
            if keep_images:
                out["images"][f"swap_{kind}_{form}"] = images[:keep_images]
    if not keep_images:
        out.pop("images")
    return out


@torch.no_grad()
def swap_reference_rows(lmm: PocketLMM, tokenizer, style_clf, emoji_clf, stickers, codes: torch.Tensor,
                        pairs: tuple[np.ndarray, np.ndarray], batch_size: int = 100) -> dict:
    """Reference rows for the swap table, scored like the composed images:

    - ``real target``: the true sticker of (style of A, emoji of B), the judges' ceiling;
    - ``tokenizer ceiling``: that sticker through the tokenizer (what any generated image can reach);
    - ``text prompt``: the LMM asked in words, "a sticker of <B's emoji> in <A's style> style";
    - ``copy B``: the semantic image itself (full collapse to the reference);
    - ``copy A``: the style image itself (the swap test's "copy the history": A's style, never B's emoji).
    """
    from drclib.backbone import sticker_caption

    a, b = pairs
    target = np.stack([a[:, 0], b[:, 1]], 1)
    real = stickers.batch(target, as_torch=True)
    rows = {}
    rows["real target"] = real
    rows["tokenizer ceiling"] = tokenizer.decode(codes[target[:, 0], target[:, 1]].to(tokenizer.device)).cpu()
    imgs = []
    for i in range(0, len(target), batch_size):
        prompts = [sticker_caption(stickers.names[e], stickers.styles[s]) for s, e in target[i:i + batch_size]]
        imgs.append(tokenizer.decode(lmm.generate_images(prompts, greedy=True).to(tokenizer.device)).cpu())
    rows["text prompt"] = torch.cat(imgs)
    rows["copy B"] = stickers.batch(b, as_torch=True)
    rows["copy A"] = stickers.batch(a, as_torch=True)
    return {k: swap_rates(*_predict(style_clf, emoji_clf, v), a, b) for k, v in rows.items()}




@torch.no_grad()
def swap_pipeline_rates(pipe, style_clf, emoji_clf, stickers, pairs: tuple[np.ndarray, np.ndarray], *,
                        batch_size: int = 50) -> dict:
    """The swap test for any personalization pipeline (:class:`drclib.pipeline.PersonalizationPipeline`,
    e.g. the bare LMM ``load_baseline("lmm_star")``): A alone as the history, B as the reference,
    greedy, one output per pair, alpha_m 0.5 if the pipeline has masks; :func:`swap_rates`."""
    a, b = pairs
    outs = []
    for i in range(0, len(a), batch_size):
        hist = [[x] for x in stickers.batch(a[i:i + batch_size], as_torch=True)]
        ref = list(stickers.batch(b[i:i + batch_size], as_torch=True))
        outs.append(pipe(hist, ref, alpha_m=0.5, greedy=True, seed=0, output_type="pt"))
    return swap_rates(*_predict(style_clf, emoji_clf, torch.cat(outs)), a, b)


@torch.no_grad()
def stage1_reference_rows(lmm: PocketLMM, tokenizer, style_clf, emoji_clf, stickers, triplets,
                          batch_size: int = 100) -> dict:
    """Calibration rows for redrawing the anchors of ``triplets`` (scored like
    :func:`evaluate_stage1`'s ``combinations``, against the anchor's style and emoji):

    - ``real anchor``: the anchor itself (the judges' own accuracy);
    - ``text prompt``: the bare LMM asked in words for the anchor's cell;
    - ``copy x_m``: the positive-semantic image (the anchor's emoji in another style: copying the content image);
    - ``copy x_s``: the positive-style image (the anchor's style, another emoji: copying the style image).
    """
    from drclib.backbone import sticker_caption
    from drclib.judges import classify_rates

    t = triplets
    rows = {"real anchor": stickers.batch(t.anchor, as_torch=True)}
    imgs = []
    for i in range(0, len(t.anchor), batch_size):
        prompts = [sticker_caption(stickers.names[e], stickers.styles[s]) for s, e in t.anchor[i:i + batch_size]]
        imgs.append(tokenizer.decode(lmm.generate_images(prompts, greedy=True).to(tokenizer.device)).cpu())
    rows["text prompt"] = torch.cat(imgs)
    rows["copy x_m"] = stickers.batch(t.pos_sem, as_torch=True)
    rows["copy x_s"] = stickers.batch(t.pos_style, as_torch=True)
    return {k: classify_rates(style_clf, emoji_clf, v, t.anchor[:, 0], t.anchor[:, 1]) for k, v in rows.items()}
