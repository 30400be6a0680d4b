"""Best of N: does keeping the best of several drawings lift the LMM's held-out cells?

    python benchmarks/best_of.py [--lmm FOLDER] [--n 32] [--seeds 0 1 2] [--train-seeds 0]
                                 [--threads 2] [--out data/results/best_of.json]

For every cell the LMM's card is measured on (:func:`drclib.train.eval_cell_subsets` of its set:
300 training cells and the held-out cells), draw ``--n`` candidates from its caption (the greedy
drawing first, then samples at temperature 1; :func:`drclib.backbone.best_of.draw_candidates`),
score each with the critics (:func:`drclib.backbone.best_of.critic_scores`: the LMM's own caption
likelihood, the semantic encoder's style and emoji heads), judge every candidate with the shipped
judges, and report, for each rule (which critics' log-probabilities are summed) and each N in
:data:`SIZES` up to ``--n``, the rates of the candidate the rule keeps among the first N. One draw
of candidates a seed (``--seeds`` for held-out cells, ``--train-seeds`` for training cells, which
are five times as many and cost five times the time); the JSON keeps each seed's rates and their
mean. Calibration rows from the same candidates: greedy (N = 1, the card's figure), one sample
alone (the mean over candidates 1..N-1: best of 1 without greedy), and the judges' own pick
(the share of cells where any candidate is judged right: an upper bound no critic can pass, not a
method). About 1 minute a held-out seed and 6 a training seed on 2 threads (N = 32).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # this folder, also when a test loads the script

from _kit import cpu, in_repo  # noqa: E402

RULES = {"caption": ("caption",), "encoder": ("style", "emoji"), "caption + encoder": ("caption", "style", "emoji")}
"""Rule name -> the critics whose log-probabilities are summed (:mod:`drclib.backbone.best_of`)."""
SIZES = (1, 2, 4, 8, 16, 32, 64)
SPLITS = {"heldout_cells": "seeds", "train_cells": "train_seeds"}


def measure(lmm, tokenizer, encoder, style_clf, emoji_clf, stickers, cells, n: int, seed: int) -> dict:
    """One draw of ``n`` candidates for each of ``cells``: every rule's kept candidate's rates at each N,
    greedy, one sample, and the judges' pick (module docstring)."""
    import torch

    from drclib.backbone import best_of

    t0 = time.perf_counter()
    candidates = best_of.draw_candidates(lmm, stickers, cells, n, seed=seed)
    scores = best_of.critic_scores(lmm, tokenizer, stickers, cells, candidates, encoder=encoder)
    seconds = time.perf_counter() - t0
    images = best_of.candidate_images(tokenizer, candidates).flatten(0, 1)
    style_ok = (style_clf.predict(images).view(len(cells), n) == torch.as_tensor(cells[:, 0])[:, None]).float()
    emoji_ok = (emoji_clf.predict(images).view(len(cells), n) == torch.as_tensor(cells[:, 1])[:, None]).float()
    both = style_ok * emoji_ok
    rows = torch.arange(len(cells))

    def rates(idx):
        return {"style_acc": float(style_ok[rows, idx].mean()), "emoji_top1": float(emoji_ok[rows, idx].mean()),
                "both": float(both[rows, idx].mean())}

    out = {"seconds": round(seconds, 1), "greedy": rates(torch.zeros(len(cells), dtype=torch.long)),
           "oracle_both": float(both.max(1).values.mean()), "rules": {}}
    if n > 1:
        out["one_sample"] = {"style_acc": float(style_ok[:, 1:].mean()), "emoji_top1": float(emoji_ok[:, 1:].mean()),
                             "both": float(both[:, 1:].mean())}
    for rule, critics in RULES.items():
        out["rules"][rule] = {str(k): rates(best_of.pick(scores, critics, k)) for k in SIZES if k <= n}
    out["n_cells"] = int(len(cells))
    out["chosen_greedy_share"] = {rule: float((best_of.pick(scores, critics) == 0).float().mean())
                                  for rule, critics in RULES.items()}
    return out | {"seed": seed, "candidates": n}


def mean_over_seeds(runs: list[dict]) -> dict:
    """Each rate of ``runs`` (one :func:`measure` a seed) averaged over the seeds, with its min and max."""
    def walk(parts):
        first = parts[0]
        if isinstance(first, dict):
            return {k: walk([p[k] for p in parts]) for k in first if all(k in p for p in parts)}
        if isinstance(first, float):
            return {"mean": sum(parts) / len(parts), "min": min(parts), "max": max(parts)}
        return first
    keep = [{k: v for k, v in r.items() if k not in ("seed", "seconds")} for r in runs]
    return walk(keep)


def table(summary: dict, n: int) -> str:
    from drclib.judges.metrics import rate_se

    head = "| drawing | " + " | ".join(f"{split.replace('_', ' ')}: {k}" for split in summary
                                       for k in ("style", "emoji", "both")) + " |"
    lines = [head, "|---|" + "---|" * (3 * len(summary))]

    def cells(get):
        out = []
        for split, s in summary.items():
            r = get(s)
            for k in ("style_acc", "emoji_top1", "both"):
                v = r[k]["mean"] if r and k in r else None
                out.append("-" if v is None else f"{v:.3f} ± {rate_se(v, s['n_cells']):.3f}" if k == "both" else f"{v:.3f}")
        return out

    lines.append("| greedy (the card's figure) | " + " | ".join(cells(lambda s: s["greedy"])) + " |")
    lines.append("| one sample at temperature 1 | " + " | ".join(cells(lambda s: s.get("one_sample"))) + " |")
    for rule in RULES:
        for k in SIZES:
            if 1 < k <= n:
                lines.append(f"| best of {k} by {rule} | " + " | ".join(cells(lambda s: s["rules"][rule][str(k)])) + " |")
    lines.append("| the judges' own pick of " + str(n) + " (upper bound) | " + " | ".join(
        "-" if k != "both" else f"{s['oracle_both']['mean']:.3f}" for s in summary.values()
        for k in ("style_acc", "emoji_top1", "both")) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lmm", default=None, help="LMM folder (default: the shipped one)")
    p.add_argument("--n", type=int, default=32, help="candidates a cell (the largest N measured)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="candidate draws for held-out cells")
    p.add_argument("--train-seeds", type=int, nargs="*", default=[0], help="candidate draws for training cells")
    p.add_argument("--cells", type=int, default=300, help="training cells (and at most this many held-out ones)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="data/results/best_of.json")
    args = p.parse_args(argv)
    if args.n < 2:
        raise SystemExit(f"--n must be at least 2 (greedy and one sample), got {args.n}")
    if not args.seeds:
        raise SystemExit("--seeds needs at least one seed")
    from drclib import judges
    from drclib.backbone import PocketLMM, default_checkpoint_dir
    from drclib.backbone import encoder as enc_mod
    from drclib.backbone import tokenizer as tok_mod
    from drclib.io import write_json
    from drclib.runtime import describe_machine
    from drclib.train import eval_cell_subsets, model_stickers

    device = cpu(args.threads)
    folder = in_repo(args.lmm) if args.lmm else default_checkpoint_dir()
    lmm = PocketLMM.from_pretrained(folder).eval()
    stickers = model_stickers(lmm)
    tokenizer, encoder = tok_mod.load_default(), enc_mod.load_default()
    style_clf, emoji_clf = judges.load_judges(stickers, "cpu")
    subsets = eval_cell_subsets(stickers, args.cells)
    runs, summary = {}, {}
    for split, seeds_arg in SPLITS.items():
        runs[split] = []
        for seed in getattr(args, seeds_arg):
            r = measure(lmm, tokenizer, encoder, style_clf, emoji_clf, stickers, subsets[split], args.n, seed)
            runs[split].append(r)
            print(f"{split} seed {seed}: {r['seconds']:.0f} s; greedy both {r['greedy']['both']:.3f}, best of {args.n} "
                  f"by caption + encoder {r['rules']['caption + encoder'][str(max(k for k in SIZES if k <= args.n))]['both']:.3f}, "
                  f"judges' pick {r['oracle_both']:.3f}", flush=True)
        if runs[split]:
            summary[split] = mean_over_seeds(runs[split])
    text = table(summary, args.n)
    print(text)
    write_json(in_repo(args.out), {
        "command": "python benchmarks/best_of.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": describe_machine(device), "lmm": str(args.lmm or "data/checkpoints/lmm"),
        "concept_set": stickers.concept_name, "rules": {k: list(v) for k, v in RULES.items()},
        "summary": summary, "runs": runs, "table": text})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
