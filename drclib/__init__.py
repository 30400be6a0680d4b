"""drclib: the library behind drc-kit, a teaching kit for DRC.

DRC (Xu et al. 2025, "DRC: Enhancing Personalized Image Generation via Disentangled
Representation Composition", arXiv 2504.17349) generates an image with the semantics of a
reference image in the style of a user's history. The notebooks in ``notebooks/`` teach it
step by step; this package does the computing. One module a concept:

- :mod:`drclib.runtime`  device choice, CPU flags, seeds
- :mod:`drclib.config`   the ``quick`` and ``full`` profiles
- :mod:`drclib.io`       atomic writes and JSON results
- :mod:`drclib.data`     the multi-style sticker set, users, samples, splits, triplets
- :mod:`drclib.viz`      contact sheets and other pictures
- :mod:`drclib.notebooks` running the notebooks with papermill
- :mod:`drclib.cli`      the ``drc`` command line
"""

__version__ = "0.1.0"

from drclib.runtime import pick_device, seed_everything  # noqa: E402

__all__ = ["__version__", "pick_device", "seed_everything"]
