"""The training command line: ``python -m drclib.train <part> ...`` (``--help`` lists the parts).
"""

from __future__ import annotations

import torch

from drclib.pipeline import default_stage1_dir
from drclib.train.backbone import LMM_RECIPE, evaluate_backbone, train_backbone_command
from drclib.train.baselines import BASELINE_RECIPE, train_baseline_command
from drclib.train.stage1 import STAGE1_EVAL, evaluate_stage1_folder, stage1_table, train_stage1_command
from drclib.train.stage2 import Stage2Config, train_stage2_command


def main(argv: list[str] | None = None) -> int:
    import argparse

    from drclib.backbone import default_checkpoint_dir

    p = argparse.ArgumentParser(prog="python -m drclib.train", description="Training commands of drc-kit.")
    sub = p.add_subparsers(dest="what", required=True)
    b = sub.add_parser("backbone", help="pretrain the pocket LMM (needs the shipped tokenizer and classifiers)",
                       description="Pretrain the pocket LMM on text-to-image and image-to-text over every "
                       "(style, emoji) cell outside the held-out cells, evaluate text-to-image with the kit's "
                       "classifiers, and save fp16 weights with a model card. Resumable with --state-dir.")
    b.add_argument("--concepts", default="core", help="concept set to train on (mini, core, all)")
    b.add_argument("--steps", type=int, default=LMM_RECIPE["steps"])
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--lr", type=float, default=LMM_RECIPE["lr"])
    b.add_argument("--i2t-fraction", type=float, default=LMM_RECIPE["i2t_fraction"])
    for flag, key, kind, text in (
            ("--hybrid-fraction", "hybrid_fraction", float, "share of text-to-image sequences prefixed by DRC's hybrid-prompt sentence"),
            ("--unconditional-fraction", "unconditional_fraction", float, "share of caption-free image sequences in a batch"),
            ("--interleaved-fraction", "interleaved_fraction", float,
             "share of interleaved sequences (an image, then a caption and image of the same style or emoji)"),
            ("--factor-dropout", "factor_dropout", float, "share of text-to-image captions naming only the emoji or only the style"),
            ("--augment", "augment_prob", float, "chance that a sequence uses a shifted/scaled copy of the sticker"),
            ("--copies", "augment_copies", int, "augmented copies of every sticker (with --augment > 0)")):
        b.add_argument(flag, type=kind, default=LMM_RECIPE[key], help=text)
    b.add_argument("--hidden", type=int, default=256)
    b.add_argument("--layers", type=int, default=4)
    b.add_argument("--heads", type=int, default=4)
    b.add_argument("--intermediate", type=int, default=704)
    b.add_argument("--warmup", type=int, default=100, help="warm-up steps of the learning rate")
    b.add_argument("--init-from", default=None, help="continue from a saved LMM (its sizes and tokenizer; "
                   "a new learning-rate schedule); its training record is kept in the new card")
    b.add_argument("--no-bf16", action="store_true", help="train in float32 (slower on CPU)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--device", default="auto")
    b.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    b.add_argument("--eval-cells", type=int, default=300, help="cells scored after training, per split")
    b.add_argument("--state-dir", default=None, help="folder for resumable training state")
    b.add_argument("--out", default=str(default_checkpoint_dir()))
    e = sub.add_parser("evaluate-backbone", help="measure a saved LMM and rewrite its model card",
                       description="Reload a saved pocket LMM (fp16 weights as shipped), generate every fixed "
                       "evaluation cell's caption greedily, classify the decoded images, and rewrite the "
                       "checkpoint's card and metrics.")
    e.add_argument("--folder", default=str(default_checkpoint_dir()))
    e.add_argument("--eval-cells", type=int, default=300)
    e.add_argument("--threads", type=int, default=0)
    s1 = sub.add_parser("stage1", help="DRC stage 1: train towers + fusion (and LoRA adapters on the LMM)",
                        description="Train one stage-1 variant (drc, or an ablation: uniform = w/o importance "
                        "sampling, concat = w/o FusionNetwork, mlp = w/o attention) on the profile's ground-truth "
                        "triplets, save fp16 weights under data/checkpoints/stage1/<variant>, then run the swap "
                        "test and write the model card. Resumable with --state-dir.")
    s1.add_argument("--variant", choices=["drc", "uniform", "concat", "mlp"], default="drc")
    s1.add_argument("--steps", type=int, default=600)
    s1.add_argument("--batch-size", type=int, default=32)
    s1.add_argument("--lr", type=float, default=1e-3)
    s1.add_argument("--n-latent", type=int, default=16, help="K, tokens of a latent instruction")
    s1.add_argument("--features", choices=["semantic", "embeddings", "hidden"], default="semantic",
                    help="what the towers read: the semantic encoder's tokens (default), the LMM's embedding "
                         "lookup E_x, or its hidden states")
    s1.add_argument("--form", choices=["cross", "self"], default="self",
                    help="tower form in stage 1: the paper's cross form (q from one image, k/v from the other) "
                         "or the self form of inference")
    s1.add_argument("--z-space", choices=["free", "words", "slots"], default="slots",
                    help="z as free vectors, soft mixtures of the LMM's word embeddings, or slots that each hold "
                         "one word or nothing (default)")
    s1.add_argument("--lora-rank", type=int, default=0,
                    help="0: frozen LMM (default); > 0: LoRA adapters train too (they cost the LMM its own "
                         "text-to-image: 0.90 -> 0.15 'both' from exact captions after 300 steps)")
    s1.add_argument("--caption-weight", type=float, default=10.0,
                    help="> 0: the kit's caption anchor (not in the paper) with this weight (default 10, the shipped "
                         "card's; 0: eq. 3 alone); needs --z-space words or slots")
    s1.add_argument("--profile", default="full", help="whose triplets to train on")
    s1.add_argument("--lmm", default=None, help="LMM folder (default: the shipped one)")
    s1.add_argument("--seed", type=int, default=0)
    s1.add_argument("--device", default="auto")
    s1.add_argument("--threads", type=int, default=0)
    s1.add_argument("--eval-pairs", type=int, default=STAGE1_EVAL["pairs"])
    s1.add_argument("--eval-triplets", type=int, default=STAGE1_EVAL["triplets"])
    s1.add_argument("--state-dir", default=None, help="folder for resumable training state")
    s1.add_argument("--out", default=None, help="default: data/checkpoints/stage1/<variant>")
    e1 = sub.add_parser("evaluate-stage1", help="measure a saved stage-1 model and rewrite its card",
                        description="Reload a saved stage-1 model, reconstruct held-out anchors from each of "
                        "the four instructions, run the swap test (A's style with B's emoji), and rewrite the card.")
    e1.add_argument("--folder", default=None, help="default: data/checkpoints/stage1/drc")
    e1.add_argument("--lmm", default=None)
    e1.add_argument("--pairs", type=int, default=STAGE1_EVAL["pairs"])
    e1.add_argument("--triplets", type=int, default=STAGE1_EVAL["triplets"])
    e1.add_argument("--threads", type=int, default=0)
    s2 = sub.add_parser("stage2", help="DRC stage 2: personalized SFT, saves the DRC pipeline",
                        description="Start from the shipped stage-1 model, add the mask generator, fine-tune "
                        "towers, fusion, mask generator and the LMM's LoRA adapters on the sample split's training "
                        "samples (semantic-preserving augmentation unless --no-augment), save the pipeline to "
                        "data/checkpoints/drc (or drc_no_aug) and evaluate it beside the stage-1-only pipeline.")
    s2.add_argument("--steps", type=int, default=Stage2Config.steps)
    s2.add_argument("--batch-size", type=int, default=Stage2Config.batch_size)
    s2.add_argument("--lr", type=float, default=Stage2Config.lr)
    s2.add_argument("--no-augment", action="store_true", help="w/o Aug: the target is its own reference")
    s2.add_argument("--stage1", default=None, help="stage-1 folder (default data/checkpoints/stage1/drc)")
    s2.add_argument("--profile", default="full")
    s2.add_argument("--seed", type=int, default=0)
    s2.add_argument("--device", default="auto")
    s2.add_argument("--threads", type=int, default=0)
    s2.add_argument("--no-bf16", action="store_true", help="train in float32 even where bf16 autocast is fast")
    s2.add_argument("--eval-samples", type=int, default=300, help="test samples scored per split")
    s2.add_argument("--state-dir", default=None)
    s2.add_argument("--out", default=None)
    bl = sub.add_parser("baseline", help="fine-tune the LMM-SFT or Pigeon baseline",
                        description="Fine-tune an interleaved-token baseline of drclib.baselines from the shipped LMM "
                        "with the stage-2 recipe (the target as its own reference, as Pigeon trains), save it to "
                        "data/checkpoints/<method> and score it on both splits.")
    bl.add_argument("--method", choices=["pigeon", "lmm_sft"], required=True)
    bl.add_argument("--steps", type=int, default=BASELINE_RECIPE["steps"])
    bl.add_argument("--batch-size", type=int, default=16)
    bl.add_argument("--lr", type=float, default=BASELINE_RECIPE["lr"])
    bl.add_argument("--profile", default="full")
    bl.add_argument("--seed", type=int, default=0)
    bl.add_argument("--device", default="auto")
    bl.add_argument("--threads", type=int, default=0)
    bl.add_argument("--no-bf16", action="store_true", help="train in float32 even where bf16 autocast is fast")
    bl.add_argument("--eval-samples", type=int, default=300, help="test samples scored per split")
    bl.add_argument("--state-dir", default=None)
    bl.add_argument("--out", default=None)
    st = sub.add_parser("stage1-table", help="print the ablation table from the shipped stage-1 cards",
                        description="Read data/checkpoints/stage1/*/config.json and print the swap-test table "
                        "(DRC and its ablations) as markdown; --references adds the reference rows.")
    st.add_argument("--references", action="store_true",
                    help="also score the real target, the tokenizer ceiling, the LMM asked in words and copying B")
    st.add_argument("--root", default=None,
                    help="read <root>/<variant> instead of data/checkpoints/stage1/<variant>")
    st.add_argument("--threads", type=int, default=0)
    q = sub.add_parser("quick", help="the quick reproduction: DRC, w/o FusionNetwork and Pigeon from scratch on mini",
                       description="Train DRC (stage 1), its w/o-FusionNetwork ablation and Pigeon from scratch on the "
                       "quick profile's data with one seed, score them under the evaluation's protocol, check the "
                       "paper's direction, write runs/quick-reproduction/seed<S>/quick_reproduction.json.")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--device", default="cpu")
    q.add_argument("--threads", type=int, default=0)
    q.add_argument("--out", default=None)
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.add_argument("--lanes", type=int, choices=[1, 2], default=2,
                   help="2 (default): DRC and w/o FusionNetwork in one process, Pigeon in another, one thread each; "
                        "1: every row in this process")
    q.add_argument("--rows", nargs="+", choices=["drc", "concat", "pigeon"], default=None,
                   help="train and score only these rows (a lane, or a pilot; the direction needs all three)")
    args = p.parse_args(argv)
    if args.what == "quick":
        from drclib.train.quick import quick_command

        return quick_command(args)
    if args.what == "stage2":
        return train_stage2_command(args)
    if args.what == "baseline":
        return train_baseline_command(args)
    if args.what == "stage1-table":
        if args.threads:
            torch.set_num_threads(args.threads)
        print(stage1_table(references=args.references, root=args.root))
        return 0
    if args.what == "stage1":
        return train_stage1_command(args)
    if args.what == "evaluate-stage1":
        import sys

        if args.threads:
            torch.set_num_threads(args.threads)
        evaluate_stage1_folder(args.folder or default_stage1_dir(), lmm_folder=args.lmm, n_pairs=args.pairs,
                               n_triplets=args.triplets, command="python -m drclib.train " + " ".join(sys.argv[1:]))
        return 0
    if args.what == "backbone":
        return train_backbone_command(args)
    if args.what == "evaluate-backbone":
        if args.threads:
            torch.set_num_threads(args.threads)
        evaluate_backbone(args.folder, n_cells=args.eval_cells)
        return 0
    return 2
