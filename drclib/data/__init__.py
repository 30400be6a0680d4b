"""The data: the multi-style sticker set and the users, samples, splits and triplets built on it.

- :mod:`drclib.data.splits`    the held-out (style, emoji) cells no training stage may see
- :mod:`drclib.data.concepts`  the concept sets (``mini`` ⊂ ``core`` ⊂ ``all``) and the rule that picks them
- :mod:`drclib.data.stickers`  :class:`StickerSet`, the loader of ``data/stickers_32px.npz``
- :mod:`drclib.data.users`     simulated users, personalization samples, splits, triplets
- :mod:`drclib.data.images`    checking and augmenting image batches
- :mod:`drclib.data.build`     rebuilds the npz from pinned npm tarballs
  (``python -m drclib.data.build``)
"""

from drclib.data.concepts import CONCEPT_SETS, concept_set
from drclib.data.stickers import STYLES, DataFileError, StickerSet, to_tensor
from drclib.data.splits import heldout_cells
from drclib.data.users import PersonalizationData, Sample, Samples, Split, Triplets, User, make_dataset

__all__ = ["CONCEPT_SETS", "concept_set", "STYLES", "DataFileError", "StickerSet", "to_tensor", "PersonalizationData", "Sample",
           "Samples", "Split", "Triplets", "User", "heldout_cells", "make_dataset"]
