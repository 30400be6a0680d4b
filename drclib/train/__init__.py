"""Training every part of the kit that learns, one module a stage.

- :mod:`drclib.train.loop`       what the loops share: resumable state, the optimizer step, data order
- :mod:`drclib.train.cards`      model cards (the README.md beside each checkpoint)
- :mod:`drclib.train.backbone`   pretraining the pocket LMM
- :mod:`drclib.train.stage1`     DRC stage 1: disentanglement, importance sampling, the ablation table
- :mod:`drclib.train.stage2`     DRC stage 2: personalized SFT with the mask generator
- :mod:`drclib.train.baselines`  Pigeon and LMM-SFT
- :mod:`drclib.train.cli`         the command line, ``python -m drclib.train <part>``

The visual tokenizer, the semantic encoder, the tiny CLIP and the judges train in their own
modules (``python -m drclib.backbone.tokenizer``, ``drclib.backbone.encoder``,
``drclib.backbone.tinyclip``, ``drclib.judges train``). Everything public is re-exported here
(``from drclib.train import train_stage1``).
"""

from drclib.train.backbone import (
                                   LMM_RECIPE,
                                   PROBE_CELLS,
                                   PretrainConfig,
                                   SequenceBuilder,
                                   eval_cell_subsets,
                                   evaluate_backbone,
                                   pretrain_backbone,
                                   pretraining_sequences,
                                   train_backbone_command,
)
from drclib.train.baselines import (
                                   BASELINE_PROBE,
                                   BASELINE_RECIPE,
                                   baseline_probe,
                                   train_baseline,
                                   train_baseline_command,
)
from drclib.train.cards import PAIR_TITLES, SWAP_COLUMNS, concept_record, model_stickers, pm, swap_markdown
from drclib.train.cli import main
from drclib.train.loop import IGNORE, load_training_state, save_training_state
from drclib.train.stage1 import (
                                   ABLATION_NAMES,
                                   STAGE1_EVAL,
                                   STAGE1_PROBE,
                                   Stage1Config,
                                   evaluate_stage1_folder,
                                   stage1_probe,
                                   stage1_table,
                                   train_stage1,
                                   train_stage1_command,
)
from drclib.train.stage2 import Stage2Config, stage2_batch, train_stage2, train_stage2_command

__all__ = ["main", "IGNORE", "save_training_state", "load_training_state", "concept_record", "model_stickers", "pm", "SWAP_COLUMNS", "PAIR_TITLES", "swap_markdown", "PretrainConfig", "LMM_RECIPE", "SequenceBuilder", "pretraining_sequences", "pretrain_backbone", "PROBE_CELLS", "eval_cell_subsets", "evaluate_backbone", "train_backbone_command", "Stage1Config", "train_stage1", "STAGE1_EVAL", "STAGE1_PROBE", "stage1_probe", "evaluate_stage1_folder", "ABLATION_NAMES", "stage1_table", "train_stage1_command", "Stage2Config", "stage2_batch", "train_stage2", "train_stage2_command", "BASELINE_RECIPE", "train_baseline", "BASELINE_PROBE", "baseline_probe", "train_baseline_command"]
