"""The kit's judges: what a generated sticker shows, and the rates and distances built on that.

- :mod:`drclib.judges.classifier`  the style and emoji judges (small CNNs), their training, loading
- :mod:`drclib.judges.metrics`     rates (style, emoji, both, collapse), StyleSim, FID, the LMM judged
- :mod:`drclib.judges.backends`    the paper's pretrained backends (CLIP, DINO, LPIPS, Inception), from disk only

Everything is re-exported here (``from drclib import judges; judges.load_judges(stickers)``).
``python -m drclib.judges train --target style|emoji`` trains a judge; ``... backends`` lists
which pretrained backends have weights on disk.
"""

from drclib.judges.backends import (
                                      BACKENDS,
                                      CLIP_HF_REPO,
                                      CLIP_MODEL,
                                      CLIP_PRETRAINED,
                                      DINO_REPO,
                                      INCEPTION_FILE,
                                      LOADERS,
                                      METRIC_BACKENDS,
                                      VGG16_FILE,
                                      BackendInfo,
                                      ClipScorer,
                                      DinoScorer,
                                      InceptionFeatures,
                                      LpipsScorer,
                                      available_backends,
                                      find_clip_weights,
                                      find_dino_weights,
                                      find_torchvision_weights,
                                      hf_hub_cache,
                                      load_clip,
                                      load_dino,
                                      load_inception,
                                      load_lpips,
                                      metric_columns,
                                      torch_hub_dir,
)
from drclib.judges.classifier import (
                                      DEFAULT_EPOCHS,
                                      DEFAULT_LR,
                                      DEFAULT_NAMES,
                                      TARGETS,
                                      StickerClassifier,
                                      StickerClassifierConfig,
                                      default_checkpoint_dir,
                                      default_config,
                                      evaluate_classifier,
                                      load_default,
                                      load_judges,
                                      train_classifier,
                                      train_command,
)
from drclib.judges.cli import main
from drclib.judges.metrics import (
                                      STYLE_LAYERS,
                                      STYLE_SIM_SCALE,
                                      classify_rates,
                                      evaluate_text_to_image,
                                      diff_se,
                                      draw_cells,
                                      extract_features,
                                      fid,
                                      format_rate,
                                      frechet_distance,
                                      gram_matrix,
                                      personalization_rates,
                                      rate_se,
                                      rate_grid,
                                      rate_table,
                                      style_grams,
                                      style_sim,
                                      style_sim_from_grams,
                                      style_sim_to_history,
)

__all__ = ["main", "TARGETS", "DEFAULT_NAMES", "StickerClassifierConfig", "StickerClassifier", "default_config", "train_classifier", "evaluate_classifier", "default_checkpoint_dir", "train_command", "load_default", "load_judges", "DEFAULT_EPOCHS", "DEFAULT_LR", "classify_rates", "personalization_rates", "gram_matrix", "STYLE_LAYERS", "STYLE_SIM_SCALE", "style_grams", "style_sim_from_grams", "style_sim", "style_sim_to_history", "frechet_distance", "extract_features", "fid", "rate_se", "diff_se", "format_rate", "rate_grid", "rate_table", "evaluate_text_to_image", "draw_cells", "torch_hub_dir", "hf_hub_cache", "BackendInfo", "ClipScorer", "DinoScorer", "LpipsScorer", "InceptionFeatures", "CLIP_MODEL", "CLIP_PRETRAINED", "CLIP_HF_REPO", "DINO_REPO", "VGG16_FILE", "INCEPTION_FILE", "find_clip_weights", "load_clip", "find_dino_weights", "load_dino", "find_torchvision_weights", "load_lpips", "load_inception", "BACKENDS", "LOADERS", "available_backends", "METRIC_BACKENDS", "metric_columns"]
