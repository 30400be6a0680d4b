"""DRC: disentangled representation composition (Xu et al. 2025), built on the pocket LMM.

The method's parts, one module each:

- :mod:`drclib.drc.contrastive`  contrastive samples: positive-style mining and triplets (section 2.1)
- :mod:`drclib.drc.rerender`     the optional SDXL re-rendering of positive-semantic samples
- :mod:`drclib.drc.modules`      the towers, the fusion network and the mask generator
- :mod:`drclib.drc.model`        :class:`DRC`: eq. (1)-(2) and (5)-(8) on those parts
- :mod:`drclib.drc.composition`  z in the LMM's prompt, and images drawn from it
- :mod:`drclib.drc.stage1`       the stage-1 objective: eq. (3), importance sampling eq. (4)
- :mod:`drclib.drc.swap`         the stage-1 swap test, judged

The training loops are in :mod:`drclib.train` (``stage1``, ``stage2``).
"""

from drclib.drc.composition import HYBRID_PROMPT, generate_codes, hybrid_prompt, hybrid_prompts, prompt_mask
from drclib.drc.model import (
                              COMBINATIONS,
                              DRC,
                              LABELS,
                              VARIANTS,
                              DRCConfig,
                              TowerInputs,
                              cell_images,
                              cell_tokens,
                              history_keep_rates,
                              check_lmm_matches,
                              lmm_fingerprint,
                              load_stage1,
)
from drclib.drc.stage1 import (
                              ImportanceSampler,
                              caption_anchor_loss,
                              caption_words,
                              compare_runs,
                              heldout_triplets,
                              importance_probabilities,
                              reconstruction_loss,
)
from drclib.drc.swap import (PAIR_KINDS, evaluate_stage1, stage1_reference_rows, swap_pair_sets, swap_pairs,
                             swap_pipeline_rates, swap_rates, swap_reference_rows)

__all__ = ["DRC", "DRCConfig", "VARIANTS", "cell_images", "cell_tokens", "TowerInputs", "COMBINATIONS", "LABELS", "HYBRID_PROMPT", "hybrid_prompt", "hybrid_prompts", "reconstruction_loss", "caption_words", "caption_anchor_loss", "importance_probabilities", "ImportanceSampler", "generate_codes", "heldout_triplets", "swap_pairs", "swap_pair_sets", "PAIR_KINDS", "load_stage1", "lmm_fingerprint", "check_lmm_matches", "swap_rates", "evaluate_stage1", "swap_reference_rows", "prompt_mask", "swap_pipeline_rates",
           "stage1_reference_rows", "compare_runs", "history_keep_rates"]
