"""The kit's two profiles: ``quick`` (CI, a first look: every notebook in about a minute on a
laptop CPU) and ``full`` (the real results, sized in the order of the paper's Table 1).

Both profiles run the same code; only sizes change. A notebook reads its profile from the
``PROFILE`` parameter and asks ``get_profile(PROFILE)`` for every size it needs, so no size is
hard-coded in a notebook. Later parts of the kit add their own fields here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """Sizes for one run of the kit. See the module docstring."""

    name: str
    # --- users and personalization samples (drclib.data.users) ---------------------------
    n_users: int
    """How many simulated users (the paper's stickers data: 725)."""
    sequence_length: int
    """Interactions per user; samples are sliding windows of ``history_length + 1`` over them."""
    concepts: str = "core"
    """The concept set the profile works on (:mod:`drclib.data.concepts`): ``mini`` for the
    quick profile, ``core`` for the full one; ``StickerSet.for_profile(profile)`` loads it."""
    history_length: int = 5
    """N, the history images per sample (Pigeon's data: 5)."""
    noise_range: tuple[float, float] = (0.0, 0.4)
    """Each user's fraction of history items in other styles is drawn from this range."""
    lean_probability: float = 0.7
    """Chance that a user leans to one or two categories."""
    lean_strength: float = 6.0
    """How much more often a leaned-to category is picked than another."""
    # --- stage-1 triplets -----------------------------------------------------------------
    n_triplets: int = 0
    """How many <anchor, positive-style, positive-semantic> triplets (paper: 14,984)."""
    # --- splits ---------------------------------------------------------------------------
    n_heldout_test: int | None = None
    """Test samples of the held-out-cell split (None: one for every held-out cell). The cells
    themselves do not depend on the profile or the seed (see ``drclib.data.users``)."""

    # --- the pocket LMM and its tokenizer (notebook 01) -------------------------------------
    tokenizer_steps: int | None = None
    """Steps when a notebook trains the tokenizer itself (None: the full recipe of the card)."""
    lmm_steps: int = 3000
    """Steps when a notebook trains the LMM itself."""
    lmm_cells: int | None = None
    """Training cells for an LMM trained in a notebook (None: every non-held-out cell)."""
    eval_cells: int = 300
    """Cells scored when a notebook evaluates text-to-image generation."""

    # --- contrastive samples and stage 1 (notebooks 02-04) -----------------------------------
    mining_anchors: int = 300
    """Anchors whose positive-style sample is mined when measuring precision@k."""
    mining_pool: int = 1500
    """Candidate pool size for positive-style mining."""
    stage1_steps: int = 600
    """Steps when a notebook trains stage 1 itself (the cards' 600: at 300 the swap test's "both" was
    0.55 on training pairs against 0.86, RESULTS section 1, "Stage 1 is short of steps")."""
    stage1_batch: int = 32
    swap_pairs: int = 300
    """(A, B) pairs of held-out cells in the swap test (A's style with B's emoji)."""
    eval_triplets: int = 300
    """Held-out anchors reconstructed from each of the four stage-1 instructions."""

    def replace(self, **changes) -> "Profile":
        """A copy with some fields changed, e.g. ``get_profile('quick').replace(n_users=50)``."""
        return dataclasses.replace(self, **changes)


PROFILES: dict[str, Profile] = {
    "quick": Profile(name="quick", concepts="mini", n_users=40, sequence_length=12, n_triplets=400, n_heldout_test=24,
                     tokenizer_steps=30, lmm_steps=40, lmm_cells=48, eval_cells=36, mining_anchors=40,
                     mining_pool=300, stage1_steps=12, stage1_batch=8, swap_pairs=24, eval_triplets=24),
    "full": Profile(name="full", concepts="core", n_users=725, sequence_length=21, n_triplets=15000),
}


def get_profile(name: str | Profile) -> Profile:
    """Return the profile called ``name`` (``"quick"`` or ``"full"``); a Profile passes through."""
    if isinstance(name, Profile):
        return name
    key = str(name).strip().lower()
    if key not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: use one of {', '.join(sorted(PROFILES))}")
    return PROFILES[key]
