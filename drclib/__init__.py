"""drclib: the library behind drc-kit, a teaching kit for DRC.

DRC (Xu et al. 2025, "DRC: Enhancing Personalized Image Generation via Disentangled
Representation Composition", arXiv 2504.17349) generates an image with the semantics of a
reference image in the style of a user's history. The notebooks in ``notebooks/`` teach it
step by step; this package does the computing. Its folders follow the method, one way down
(each imports only from those above it in this list):

- :mod:`drclib.paths`, :mod:`drclib.runtime`, :mod:`drclib.config`, :mod:`drclib.io`,
  :mod:`drclib.checkpoint`  where things live, devices and seeds, profiles, atomic files, checkpoints
- :mod:`drclib.data`       the multi-style sticker set, concept sets, held-out cells, users, samples, triplets
- :mod:`drclib.backbone`   the stand-ins for LaVIT and CLIP: visual tokenizer, pocket LMM, semantic encoder, tiny CLIP
- :mod:`drclib.judges`     what a generated sticker shows: style and emoji judges, rates, StyleSim, FID
- :mod:`drclib.drc`        the method: contrastive samples, towers, fusion, mask generator, the objectives
- :mod:`drclib.pipeline`, :mod:`drclib.baselines`  generation from a history and a reference, every method
- :mod:`drclib.evaluation` the paper's Table 2 on this data
- :mod:`drclib.train`      every training loop, one module a stage, and the quick reproduction
- :mod:`drclib.figures`, :mod:`drclib.exercises`  the figures documents quote, read from their sources;
  the notebooks' self-checks
- :mod:`drclib.reproduce`, :mod:`drclib.notebooks`, :mod:`drclib.cli`, :mod:`drclib.widgets`,
  :mod:`drclib.viz`  ``make all``, papermill, the ``drc`` command, the app, the pictures
"""

__version__ = "0.1.0"

from drclib.runtime import pick_device, seed_everything  # noqa: E402

__all__ = ["__version__", "pick_device", "seed_everything"]
