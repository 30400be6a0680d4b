"""Pictures for the notebooks: contact sheets, image rows, one sample laid out.

Every function returns a matplotlib ``Figure`` (the notebook shows it; tests save it) and
takes images in the kit's numpy convention, uint8 ``[H, W, 3]``.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from drclib.data.stickers import StickerSet
from drclib.judges.metrics import rate_grid, rate_table  # noqa: F401  (the notebooks' rate tables, with standard errors)


def caption(text: str) -> None:
    """Show one sentence under a figure or table, as markdown in Jupyter (printed elsewhere).

    Notebooks build the sentence with an f-string from the numbers the cell just computed, so
    the words cannot drift from the output. Returns nothing, so the sentence shows once."""
    text = " ".join(str(text).split())
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display

        if get_ipython() is not None:
            display(Markdown(text))
            return
    except ImportError:   # IPython comes with Jupyter; plain Python prints instead
        pass
    print(text)


def pct(p: float, n: int | None = None) -> str:
    """A rate in words for captions: ``35%``, or ``35% ± 3`` (standard error, in points) with ``n``."""
    if p is None:
        return "n/a"
    if n is None:
        return f"{100 * p:.0f}%"
    from drclib.judges.metrics import rate_se

    return f"{100 * p:.0f}% ± {100 * rate_se(p, n):.0f}"


def _hide_axes(ax):
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def contact_sheet(stickers: StickerSet, emoji: Sequence[int | str], styles: Sequence[int | str] | None = None,
                  *, cell: float = 0.9, label_emoji: bool = True, title: str | None = None):
    """A grid of stickers: rows = styles, columns = emoji, each labelled.

    ``emoji`` and ``styles`` take indices or names (see :meth:`StickerSet.emoji_index`).
    """
    emoji_idx = [stickers.emoji_index(e) for e in emoji]
    style_idx = [stickers.style_index(s) for s in (styles if styles is not None else range(stickers.n_styles))]
    if not emoji_idx or not style_idx:
        raise ValueError("contact_sheet needs at least one emoji and one style")
    rows, cols = len(style_idx), len(emoji_idx)
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 + cols * cell, 0.4 + rows * cell), squeeze=False)
    for r, s in enumerate(style_idx):
        for c, e in enumerate(emoji_idx):
            ax = axes[r, c]
            ax.imshow(stickers.images[s, e], interpolation="nearest")
            _hide_axes(ax)
            if c == 0:
                ax.set_ylabel(stickers.styles[s], rotation=0, ha="right", va="center", fontsize=8)
            if r == 0 and label_emoji:
                name = stickers.names[e]
                ax.set_title(name if len(name) <= 14 else name[:13] + "…", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(pad=0.3)
    return fig


def image_row(images: Sequence[np.ndarray] | np.ndarray, titles: Sequence[str] | None = None, *,
              cell: float = 1.1, title: str | None = None, frame_colors: Sequence[str | None] | None = None):
    """Images side by side with optional titles and coloured frames (e.g. to mark noise)."""
    images = list(images)
    if not images:
        raise ValueError("image_row needs at least one image")
    fig, axes = plt.subplots(1, len(images), figsize=(len(images) * cell, cell + 0.45), squeeze=False)
    for i, (ax, img) in enumerate(zip(axes[0], images)):
        ax.imshow(np.asarray(img), interpolation="nearest")
        _hide_axes(ax)
        if titles is not None and i < len(titles):
            ax.set_title(titles[i], fontsize=7)
        color = frame_colors[i] if frame_colors is not None and i < len(frame_colors) else None
        if color:
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_edgecolor(color)
                spine.set_linewidth(3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(pad=0.3)
    return fig


def show_sample(stickers: StickerSet, sample, *, cell: float = 1.0):
    """One personalization sample in three rows: the history (noise items framed red), the
    target, and the reference set R (the target emoji in the other styles)."""
    hist, target, refs = sample.history, sample.target, sample.references
    cols = max(len(hist), len(refs), 1)
    fig, axes = plt.subplots(3, cols, figsize=(1.4 + cols * cell, 3 * cell + 1.0), squeeze=False)
    for ax in axes.flat:
        _hide_axes(ax)
        ax.axis("off")

    def put(ax, cell_, label, color=None):
        ax.axis("on")
        _hide_axes(ax)
        ax.imshow(stickers.images[cell_[0], cell_[1]], interpolation="nearest")
        ax.set_title(label, fontsize=7)
        if color:
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_edgecolor(color)
                spine.set_linewidth(3)

    for i, c in enumerate(hist):
        noise = int(c[0]) != int(sample.style)
        put(axes[0, i], c, stickers.styles[c[0]] + (" (noise)" if noise else ""), "tab:red" if noise else None)
    put(axes[1, 0], target, f"target: {stickers.names[target[1]][:18]}\n({stickers.styles[target[0]]})",
        "tab:green")
    for i, c in enumerate(refs):
        put(axes[2, i], c, stickers.styles[c[0]])
    for r, label in enumerate(("history", "target", "references R")):
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
        axes[r, 0].yaxis.set_visible(True)
    fig.suptitle(f"user {sample.user} prefers {stickers.styles[sample.style]} - \"{sample.text}\"",
                 fontsize=9)
    fig.tight_layout(pad=0.3)
    return fig


def show_collapse(stickers: StickerSet, sample, reference=None, *, cell: float = 1.1):
    """Guidance collapse with real stickers: for one sample, the wanted output (the target)
    beside the two failures DRC targets: copying the reference (its style leaks in, the
    user's style is lost) and copying the history (a history emoji comes back, the requested
    semantics are lost)."""
    reference = sample.references[0] if reference is None else np.asarray(reference)
    in_style = [c for c in sample.history if int(c[0]) == int(sample.style)]
    copied = in_style[0] if in_style else sample.history[0]
    images = [stickers.images[reference[0], reference[1]], stickers.images[sample.target[0], sample.target[1]],
              stickers.images[reference[0], reference[1]], stickers.images[copied[0], copied[1]]]
    titles = [f"reference\n({stickers.styles[reference[0]]})", "wanted:\nref. emoji, user style",
              "collapse 1:\ncopies the reference", "collapse 2:\ncopies the history"]
    return image_row(images, titles, cell=cell, frame_colors=[None, "tab:green", "tab:red", "tab:red"])


def to_uint8(images) -> np.ndarray:
    """float ``[..., 3, H, W]`` in [0, 1] (torch or numpy) -> uint8 ``[..., H, W, 3]``."""
    arr = images.detach().cpu().float().numpy() if hasattr(images, "detach") else np.asarray(images)
    if arr.dtype == np.uint8:
        return arr
    arr = np.moveaxis(arr, -3, -1)
    return (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)


def image_grid(images, row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None, *,
               cell: float = 0.9, title: str | None = None):
    """A grid of images ``[rows, cols, H, W, 3]`` (uint8, or float ``[rows, cols, 3, H, W]``)."""
    grid = to_uint8(images)
    if grid.ndim != 5:
        raise ValueError(f"image_grid needs [rows, cols, H, W, 3] images, got shape {grid.shape}")
    rows, cols = grid.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 + cols * cell, 0.4 + rows * cell), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(grid[r, c], interpolation="nearest")
            _hide_axes(ax)
            if c == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=8)
            if r == 0 and col_labels is not None:
                label = col_labels[c]
                ax.set_title(label if len(label) <= 14 else label[:13] + "…", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(pad=0.3)
    return fig


def show_best_of(candidates, chosen, reals=None, row_labels: Sequence[str] | None = None, *, cell: float = 0.9,
                 title: str | None = None):
    """Best of N (:mod:`drclib.backbone.best_of`): each row one cell's candidates ``[C, n, ...]``
    (greedy first, then samples), the kept one (``chosen [C]``) framed in green; with ``reals``
    ``[C, ...]`` the real sticker comes first, for comparison."""
    grid = to_uint8(candidates)
    chosen = np.asarray(chosen).reshape(-1)
    if grid.ndim != 5 or len(chosen) != len(grid) or not ((0 <= chosen) & (chosen < grid.shape[1])).all():
        raise ValueError(f"show_best_of needs candidates [C, n, ...] and one index in 0..n-1 a row, got "
                         f"{grid.shape} and {chosen.tolist()}")
    off = 0 if reals is None else 1
    if reals is not None:
        grid = np.concatenate([to_uint8(reals)[:, None], grid], 1)
    labels = ["real"] * off + ["greedy"] + [f"sample {i}" for i in range(1, grid.shape[1] - off)]
    fig = image_grid(grid, row_labels, labels, cell=cell, title=title)
    for r, c in enumerate(chosen):
        for spine in fig.axes[r * grid.shape[1] + off + int(c)].spines.values():
            spine.set_visible(True)
            spine.set_edgecolor("tab:green")
            spine.set_linewidth(3)
    return fig


def show_tokenization(originals, codes, reconstructions, titles: Sequence[str] | None = None, *,
                      grid: int = 8, cell: float = 1.3):
    """Image -> grid of code ids -> reconstruction, one column an image (the tokenizer in pictures)."""
    originals, recons = to_uint8(originals), to_uint8(reconstructions)
    codes = np.asarray(codes.detach().cpu() if hasattr(codes, "detach") else codes)
    n = len(originals)
    fig, axes = plt.subplots(3, n, figsize=(1.0 + n * cell, 3 * cell + 0.6), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(originals[i], interpolation="nearest")
        axes[1, i].imshow(codes[i].reshape(grid, grid), cmap="tab20", interpolation="nearest")
        for (y, x), v in np.ndenumerate(codes[i].reshape(grid, grid)):
            axes[1, i].text(x, y, str(v), ha="center", va="center", fontsize=3.5)
        axes[2, i].imshow(recons[i], interpolation="nearest")
        if titles is not None:
            axes[0, i].set_title(titles[i], fontsize=7)
        for r in range(3):
            _hide_axes(axes[r, i])
    for r, label in enumerate(("image", "64 code ids", "decoded")):
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout(pad=0.3)
    return fig


def _curve(history: dict, key: str, x: str, smooth: int) -> tuple[np.ndarray, np.ndarray]:
    """One training curve, ``history[key]`` against ``history[x]`` (or the step number), as a
    moving average over ``smooth`` points."""
    y = np.asarray(history[key], dtype=float)
    xs = np.asarray(history.get(x, np.arange(1, len(y) + 1)), dtype=float)
    if smooth > 1 and len(y) >= smooth:
        y = np.convolve(y, np.ones(smooth) / smooth, mode="valid")
        xs = xs[smooth - 1:]
    return xs, y


def plot_curves(history: dict, keys: Sequence[str], *, x: str = "step", title: str | None = None,
                logy: bool = False, smooth: int = 1):
    """Training curves: ``history[key]`` against ``history[x]`` for each key (moving average
    over ``smooth`` points)."""
    if not keys:
        raise ValueError("plot_curves needs at least one key")
    fig, ax = plt.subplots(figsize=(5, 2.8))
    for k in keys:
        if k not in history:
            raise KeyError(f"history has no {k!r}; it has {sorted(history)}")
        xs, y = _curve(history, k, x, smooth)
        ax.plot(xs, y, label=k)
    ax.set_xlabel(x)
    if logy:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def show_attention(query_image, key_image, weights, positions: Sequence[int], *, grid: int = 8, cell: float = 1.3,
                   title: str | None = None):
    """Where attention looks: for each query token in ``positions`` (index into the 8 x 8
    grid), the query image with that cell boxed, and the key image under a red overlay whose
    opacity follows the weights ``[64 queries, 64 keys]`` of that token (scaled to its maximum)."""
    import matplotlib.patches as patches

    q, k = to_uint8(query_image), to_uint8(key_image)
    w = weights.detach().cpu().float().numpy() if hasattr(weights, "detach") else np.asarray(weights)
    size = q.shape[0]
    step = size / grid
    fig, axes = plt.subplots(2, len(positions), figsize=(cell * len(positions), cell * 2.1), squeeze=False)
    for j, pos in enumerate(positions):
        r, c = divmod(int(pos), grid)
        ax = axes[0, j]
        ax.imshow(q)
        ax.add_patch(patches.Rectangle((c * step - 0.5, r * step - 0.5), step, step, fill=False, color="red", lw=1.5))
        _hide_axes(ax)
        ax = axes[1, j]
        ax.imshow(k)
        heat = w[pos].reshape(grid, grid)
        overlay = np.zeros((grid, grid, 4))
        overlay[..., 0] = 1.0                                     # red, opaque where attention is strongest
        overlay[..., 3] = 0.8 * heat / max(float(heat.max()), 1e-12)
        ax.imshow(overlay, extent=(-0.5, size - 0.5, size - 0.5, -0.5))
        _hide_axes(ax)
    axes[0, 0].set_ylabel("query", fontsize=8)
    axes[1, 0].set_ylabel("keys", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def show_triplets(stickers: StickerSet, triplets, rows: Sequence[int], *, cell: float = 1.0):
    """Stage-1 triplets, one per row: anchor, positive-style, positive-semantic."""
    cells = np.stack([triplets.anchor[rows], triplets.pos_style[rows], triplets.pos_sem[rows]], 1)
    labels = [f"{stickers.styles[s]}\n{stickers.names[e][:18]}" for s, e in cells[:, 0]]
    fig = image_grid(stickers.batch(cells), labels, ["anchor", "positive-style", "positive-semantic"], cell=cell)
    return fig


def plot_bars(values: dict, *, title: str | None = None, ylabel: str | None = None, reference: float | None = None,
              reference_label: str = "chance"):
    """A bar per entry of ``values`` (name -> number; ``None`` bars are labelled n/a)."""
    names = list(values)
    nums = [0.0 if values[n] is None else float(values[n]) for n in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(names)), 2.8))
    bars = ax.bar(range(len(names)), nums, color="#4c72b0")
    for b, n in zip(bars, names):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height(), "n/a" if values[n] is None else f"{values[n]:.2f}",
                ha="center", va="bottom", fontsize=7)
    if reference is not None:
        ax.axhline(reference, color="grey", ls="--", lw=1, label=reference_label)
        ax.legend(fontsize=7)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def show_token_masks(image, masks, titles: Sequence[str] | None = None, *, grid: int = 8, title: str | None = None):
    """One image under several token masks (each ``[64]``, 1 = kept): masked cells of the
    8 x 8 grid are greyed out, so you see which parts of the image a mask lets through."""
    import torch

    img = torch.as_tensor(image).float()
    step = img.shape[-1] // grid
    shown = []
    for m in masks:
        cells = torch.as_tensor(m).float().round().view(grid, grid)
        keep = cells.repeat_interleave(step, 0).repeat_interleave(step, 1)
        shown.append(img * keep + 0.5 * (1 - keep))
    return image_row(to_uint8(torch.stack(shown)), titles, title=title)


def show_comparison(images: dict, methods: Sequence[str], labels: dict | None = None, *, rows: int | None = None,
                    cell: float = 0.8, title: str | None = None):
    """The paper's Figure 4 layout: one row per test sample with its history, its reference and
    each method's output. ``images`` is what :func:`drclib.evaluation.load_images` returns
    (``"history"`` ``[k, N, 3, H, W]``, ``"reference"`` ``[k, 3, H, W]``, one entry per method)."""
    missing = [m for m in ("history", "reference", *methods) if m not in images]
    if missing:
        raise KeyError(f"no kept images for {missing}; run the evaluation with these rows first")
    labels = labels or {}
    hist = images["history"]
    k = len(hist) if rows is None else min(rows, len(hist))
    n = hist.shape[1]
    cols = n + 1 + len(methods)
    fig, axes = plt.subplots(k, cols, figsize=(cols * cell + 0.4, k * cell + 0.6), squeeze=False)
    for r in range(k):
        shown = [*hist[r], images["reference"][r], *[images[m][r] for m in methods]]
        for c, img in enumerate(shown):
            ax = axes[r, c]
            ax.imshow(to_uint8(img[None])[0], interpolation="nearest")
            _hide_axes(ax)
            if r == 0:
                name = "history" if c == 0 else ("" if c < n else ("reference" if c == n else
                                                                     labels.get(methods[c - n - 1], methods[c - n - 1])))
                ax.set_title(name, fontsize=7)
            if c == n:
                for spine in ax.spines.values():
                    spine.set_visible(True)
                    spine.set_edgecolor("#dd8452")
                    spine.set_linewidth(2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(pad=0.2)
    return fig


def plot_tradeoff(points: dict, *, x: str = "style", y: str = "semantic", title: str | None = None,
                  calibration: Sequence[str] = ()):
    """A scatter of methods: ``points`` is ``{label: (style score, semantic score)}``; the paper's
    reading (DRC trades semantic alignment for style alignment) is a move up-left or down-right.
    Each point is numbered and named in a legend beside the axes, so labels never overlap;
    ``calibration`` labels (rows that are not methods) are drawn hollow."""
    if not points:
        raise ValueError("plot_tradeoff needs at least one point")
    fig, ax = plt.subplots(figsize=(7.2, 3.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, (px, py)) in enumerate(points.items(), 1):
        c = colors[(i - 1) % len(colors)]
        hollow = label in calibration
        ax.scatter([px], [py], s=60, facecolors="none" if hollow else c, edgecolors=c, linewidths=1.5,
                   label=f"{i}. {label}" + (" (calibration)" if hollow else ""))
        ax.annotate(str(i), (px, py), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel(x, fontsize=8)
    ax.set_ylabel(y, fontsize=8)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_best_of(summary: dict, *, references: dict | None = None, title: str | None = None):
    """Best of N on one set of cells (a split of ``benchmarks/best_of.py``'s ``summary``): "both"
    against N for each rule (the mean over the candidate draws; bars from the lowest draw to the
    highest), N = 1 being greedy; dashed, the judges' own pick of the largest N (an upper bound);
    dotted, ``references`` ``{label: rate}`` (e.g. the real sticker's round trip, an aim)."""
    rules = summary.get("rules") or {}
    if not rules:
        raise ValueError("no best-of rules to plot: run benchmarks/best_of.py first")
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for rule, by_n in rules.items():
        ns = sorted(int(k) for k in by_n)
        both = [by_n[str(k)]["both"] for k in ns]
        mean = np.array([b["mean"] for b in both])
        ax.errorbar(ns, mean, yerr=[mean - [b["min"] for b in both], [b["max"] for b in both] - mean],
                    fmt="o-", capsize=2, label=f"by {rule}")
    top = max(int(k) for by_n in rules.values() for k in by_n)
    ax.axhline(summary["oracle_both"]["mean"], color="grey", ls="--", lw=0.8)
    ax.text(1, summary["oracle_both"]["mean"] + 0.01, f"the judges' own pick of {top} (upper bound)", fontsize=7,
            color="grey")
    for label, value in (references or {}).items():
        ax.axhline(value, color="black", ls=":", lw=0.8)
        ax.text(1, value + 0.01, label, fontsize=7)
    ax.set_xscale("log", base=2)
    ticks = sorted({int(k) for by_n in rules.values() for k in by_n})
    ax.set_xticks(ticks, [str(k) for k in ticks])
    ax.minorticks_off()
    ax.set_xlabel("N: candidates a cell (the greedy drawing and N - 1 samples)", fontsize=8)
    ax.set_ylabel('"both": asked style and emoji', fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_scaling_study(rows: Sequence[dict]):
    """The scaling study's figure (``benchmarks/scaling_study.py``): for each concept-set size K,
    the LMM's text-to-image rates on training and held-out cells (error bars: one binomial
    standard error; dashed: the world issue's aims) and the linear probe of the towers' features
    on held-out cells. ``rows`` are the study's JSON rows, one per K."""
    rows = sorted(rows, key=lambda r: r["k"])
    if not rows:
        raise ValueError("no rows to plot: run benchmarks/scaling_study.py first")
    ks = [r["k"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, split, title, aims in ((axes[0], "train_cells", "LMM, training cells", {"emoji": 0.95, "both": 0.85}),
                                   (axes[1], "heldout_cells", "LMM, held-out cells", {"both": 0.40})):
        for key, label in (("emoji_top1", "emoji"), ("style_acc", "style"), ("both", "both")):
            rate = np.array([r[split][key] for r in rows])
            n = np.array([max(1, r[split].get("n_cells", 1)) for r in rows])
            ax.errorbar(ks, rate, yerr=np.sqrt(rate * (1 - rate) / n), fmt="o-", capsize=2, label=label)
        for name, aim in aims.items():
            ax.axhline(aim, color="grey", ls="--", lw=0.8)
            ax.text(ks[0], aim + 0.01, f"aim: {name} {aim:.0%}", fontsize=7, color="grey")
        ax.set_title(title)
    for key, label, style, colour in (("real_tokens_emoji", "emoji, 64 tokens", "o-", "C0"),
                                      ("real_tokens_style", "style, 64 tokens", "o-", "C1"),
                                      ("real_emoji", "emoji, mean token", "o--", "C0"),
                                      ("real_style", "style, mean token", "o--", "C1")):
        if all(key in r["probe"] for r in rows):
            axes[2].plot(ks, [r["probe"][key] for r in rows], style, color=colour, label=label,
                         alpha=1.0 if "tokens" in key else 0.5)
    axes[2].set_title("linear probe of the towers' features (held-out)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("concepts in the set (K)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"scaling study: {rows[0]['steps']} LMM steps at every K")
    fig.tight_layout()
    return fig


def plot_runs(runs: dict, keys: Sequence[str], *, labels: dict | None = None, title: str | None = None,
              smooth: int = 1, x: str = "step"):
    """Several training histories on ONE axes: one colour per key, one line style per run
    (``runs`` is ``{run label: history}``), so two runs of the same loop compare at a glance."""
    if not runs or not keys:
        raise ValueError("plot_runs needs at least one run and one key")
    styles = ["-", "--", ":", "-."]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for r, (run, history) in enumerate(runs.items()):
        for c, k in enumerate(keys):
            if k not in history:
                raise KeyError(f"run {run!r} has no {k!r}; it has {sorted(history)}")
            xs, y = _curve(history, k, x, smooth)
            name = (labels or {}).get(k, k)
            ax.plot(xs, y, styles[r % len(styles)], color=colours[c % len(colours)], lw=1.2, label=f"{run}: {name}")
    ax.set_xlabel(x)
    ax.legend(fontsize=6, ncol=len(runs))
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_method_rates(entries: dict, rows: Sequence[str], columns: Sequence[str], *, labels: dict | None = None,
                      calibration: Sequence[str] = (), title: str | None = None):
    """Grouped bars of ground-truth rates with one-standard-error bars: one group per column
    (``"both"``, ``"style_acc"``, ...), one bar per row. ``entries`` maps a row to an evaluation
    entry (``{"ground_truth": {...}, "n": ...}``, as in ``evaluation.json``); ``calibration``
    rows (not methods: a copy of the reference, a history image, the bare LMM) are hatched."""
    from drclib.judges.metrics import rate_se

    rows = [r for r in rows if r in entries]
    if not rows or not columns:
        raise ValueError("plot_method_rates needs at least one row present in entries and one column")
    labels = labels or {}
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * len(columns)), 3.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, r in enumerate(rows):
        e = entries[r]
        vals = [e["ground_truth"][c] for c in columns]
        errs = [rate_se(v, e["n"]) for v in vals]
        xs = np.arange(len(columns)) + (j - (len(rows) - 1) / 2) * width
        ax.bar(xs, vals, width, yerr=errs, capsize=2, color=colors[j % len(colors)],
               hatch="//" if r in calibration else None, alpha=0.6 if r in calibration else 1.0,
               label=labels.get(r, r) + (" (calibration)" if r in calibration else ""))
    ax.set_xticks(np.arange(len(columns)))
    ax.set_xticklabels(columns, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rate (± 1 s.e.)", fontsize=8)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def apply_token_masks(images, masks, *, grid: int = 8):
    """Images ``[B, 3, H, W]`` with the token cells their masks ``[B, grid * grid]`` drop (0)
    greyed out, as :func:`show_token_masks` draws one image; returns a float tensor."""
    import torch

    img = torch.as_tensor(images).float()
    m = torch.as_tensor(masks).float().round().view(len(img), 1, grid, grid)
    step = img.shape[-1] // grid
    keep = m.repeat_interleave(step, 2).repeat_interleave(step, 3)
    return img * keep + 0.5 * (1 - keep)
