"""The stand-ins for the pretrained models DRC builds on (LaVIT, its visual encoder, CLIP).

- :mod:`drclib.backbone.tokenizer`  the visual tokenizer: a 32x32 sticker <-> 64 codebook ids
- :mod:`drclib.backbone.lmm`        the pocket LMM (a small Llama over words and visual codes) and its text tokenizer
- :mod:`drclib.backbone.encoder`    the semantic encoder: features that carry the emoji across styles (the towers' input)
- :mod:`drclib.backbone.tinyclip`   a tiny CLIP trained on the stickers (alignment scores, alpha_m choice)
- :mod:`drclib.backbone.best_of`    best of N: draw several images, keep the one the LMM's caption and the encoder read best

The LMM's names are re-exported here (``from drclib.backbone import PocketLMM``); the other
modules are imported as modules (``from drclib.backbone import tokenizer``).
"""

from drclib.backbone.lmm import (
                                 BOS,
                                 EOS,
                                 IMG,
                                 IMG_END,
                                 LORA_TARGETS,
                                 PAD,
                                 SEP,
                                 SPECIALS,
                                 TOKENIZER_FILE,
                                 UNK,
                                 LMMConfig,
                                 PocketLMM,
                                 WithTextTokenizer,
                                 Z,
                                 build_text_tokenizer,
                                 default_checkpoint_dir,
                                 default_corpus,
                                 encode_sticker_set,
                                 factor_caption,
                                 load_default,
                                 load_text_tokenizer,
                                 save_text_tokenizer,
                                 sticker_caption,
                                 sticker_codes,
)

__all__ = ["SPECIALS", "PAD", "UNK", "BOS", "EOS", "IMG", "IMG_END", "Z", "SEP", "TOKENIZER_FILE", "LORA_TARGETS", "sticker_caption", "factor_caption", "build_text_tokenizer", "save_text_tokenizer", "load_text_tokenizer", "default_corpus", "LMMConfig", "WithTextTokenizer", "PocketLMM", "default_checkpoint_dir", "load_default", "encode_sticker_set", "sticker_codes"]
