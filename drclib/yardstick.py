"""How close a retrain comes to the shipped kit, measured with one yardstick.

A retrain from scratch (``make all PROFILE=full FROM_SCRATCH=1 [RECIPE=lab]``) trains its own
judges, so its cards' figures are scored by other judges than the shipped cards'. This module
compares the two on fair terms:

- :func:`compare_with_cards`: the figures that need no judge (tokenizer PSNR, the judges' own
  accuracy on real stickers, tiny CLIP, the semantic encoder's probes), card against card;
- :func:`yardstick_evaluation`: the retrain's LMM and every evaluated method scored by the
  **shipped** judges and tiny CLIP (:data:`YARDSTICK`), and :func:`compare_judged` beside the
  shipped kit's figures;

each figure with the difference and its standard error. ``benchmarks/lab_recipe.py`` writes the
comparison to ``data/results/lab_recipe.json``; RESULTS section 7 renders it
(:func:`comparison_table`, :func:`retrain_time_table`).
"""

from __future__ import annotations

import json
from pathlib import Path

from drclib.checkpoint import CHECKPOINTS_ENV
from drclib.paths import repo_root
from drclib.reproduce import SHIPPED

CARD_METRICS = [
    ("visual tokenizer", "tokenizer", "metrics.heldout.psnr", "PSNR on held-out cells (dB)", "metrics.heldout.n_images"),
    ("visual tokenizer", "tokenizer", "metrics.heldout.usage", "codebook usage, held-out cells", None),
    ("style classifier", "style_classifier", "heldout.acc", "style accuracy, held-out stickers", "heldout.n"),
    ("style classifier", "style_classifier", "heldout_reconstructed.acc",
     "style accuracy, their round trip (the style ceiling)", "heldout_reconstructed.n"),
    ("emoji classifier", "emoji_classifier", "heldout.acc", "emoji top-1, held-out stickers (1,370-way)", "heldout.n"),
    ("tiny CLIP", "tinyclip", "metrics.heldout.style_acc", "zero-shot style, held-out cells", "metrics.heldout.n_cells"),
    ("tiny CLIP", "tinyclip", "metrics.heldout.emoji_top1", "zero-shot emoji top-1, held-out cells",
     "metrics.heldout.n_cells"),
    ("semantic encoder", "encoder", "probes.core.real_tokens_emoji", "linear probe, emoji (core held-out)",
     "probes.core.n_heldout"),
    ("semantic encoder", "encoder", "probes.core.real_tokens_style", "linear probe, style (core held-out)",
     "probes.core.n_heldout"),
]
"""What :func:`compare_with_cards` reads of each part's card (``extra`` of its config.json):
``(part, folder, key, what it measures, key of its n or None)``. These figures need no judge.
The parts from the LMM on are scored by the judges, so they are compared under the shipped
judges by :func:`yardstick_evaluation` instead."""

YARDSTICK = ("style_classifier", "emoji_classifier", "tinyclip")
"""The scorers every retrained part is measured with: the shipped ones, so that a retrain's
figures and the cards' differ by what was trained, not by who judged it."""

COMPARED_ROWS = ("drc", "drc_no_aug", "pigeon", "lmm_sft", "stage1_drc", "stage1_uniform", "stage1_concat",
                 "stage1_mlp")
COMPARED_METRICS = ("both", "collapse_reference", "emoji_top1", "style_acc")


def _dig(d: dict, key: str):
    for k in key.split("."):
        d = d[k]
    return d


def _rate_se(p: float, n: float | None) -> float | None:
    """:func:`drclib.judges.rate_se`, or ``None`` where a figure has no sample count."""
    from drclib.judges import rate_se

    return None if not n else rate_se(p, n)


def _entry(what: str, shipped: float, retrained: float, se_a: float | None, se_b: float | None) -> dict:
    """One compared figure: the difference and whether it is within two standard errors."""
    se = None if se_a is None or se_b is None else (se_a ** 2 + se_b ** 2) ** 0.5
    diff = retrained - shipped
    return {"what": what, "shipped": shipped, "retrained": retrained, "diff": diff, "se_diff": se,
            "within_noise": None if se is None else bool(abs(diff) <= 2 * se)}


def compare_with_cards(run_checkpoints: str | Path, shipped: str | Path = SHIPPED) -> list[dict]:
    """Each figure of :data:`CARD_METRICS` in a retrain's cards beside the shipped card's, with
    the difference and its standard error (binomial for rates; for PSNR the spread over images
    / sqrt(n)); ``within_noise`` when the difference is within two standard errors."""
    root = repo_root()
    out = []
    for part, folder, key, what, n_key in CARD_METRICS:
        cards = []
        for base in (Path(shipped), Path(run_checkpoints)):
            path = base if base.is_absolute() else root / base
            cards.append(json.loads((path / folder / "config.json").read_text())["extra"])
        vals = [float(_dig(c, key)) for c in cards]
        if key.endswith("psnr"):
            ses = [float(_dig(c, key + "_std")) / float(_dig(c, n_key)) ** 0.5 for c in cards]
        else:
            ses = [_rate_se(v, float(_dig(c, n_key)) if n_key else None) for v, c in zip(vals, cards)]
        out.append(dict(_entry(what, vals[0], vals[1], *ses), part=part, key=key))
    return out


def yardstick_root(run_checkpoints: str | Path, dest: str | Path, shipped: str | Path = SHIPPED) -> Path:
    """A checkpoints folder (symbolic links) with every part of a retrain except the scorers of
    :data:`YARDSTICK`, which come from the shipped kit: point ``$DRC_CHECKPOINTS`` at it to score
    the retrain with the judges the cards were scored with."""
    root = repo_root()
    run, ship, dest = (Path(x) if Path(x).is_absolute() else root / x for x in (run_checkpoints, shipped, dest))
    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(run.iterdir()):
        if entry.name in YARDSTICK:
            continue
        link = dest / entry.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    for name in YARDSTICK:
        link = dest / name
        if link.is_symlink() or link.exists():
            link.unlink()
        if not (ship / name / "config.json").is_file():
            raise FileNotFoundError(f"the yardstick needs the shipped {ship / name}; restore it from git")
        link.symlink_to((ship / name).resolve(), target_is_directory=True)
    return dest


def judged_by_the_yardstick(run_checkpoints: str | Path, shipped: str | Path = SHIPPED) -> bool:
    """True when every scorer of :data:`YARDSTICK` in a retrain holds the shipped weights byte for
    byte (``make all ... PRETRAINED=paper`` copies them): its own evaluation is then already scored
    with the yardstick."""
    from drclib.evaluation import weights_fingerprint

    root = repo_root()
    run, ship = (Path(x) if Path(x).is_absolute() else root / x for x in (run_checkpoints, shipped))
    return all((run / n).is_dir() and weights_fingerprint(run / n) == weights_fingerprint(ship / n)
               for n in YARDSTICK)


def reuse_own_evaluation(run_dir: Path, shipped: str | Path = SHIPPED) -> bool:
    """Seed ``run_dir/07_evaluation_yardstick/`` with the run's own finished evaluation when its
    scorers are the shipped ones (:func:`judged_by_the_yardstick`), so that scoring it again costs
    nothing (the evaluation keeps an entry only while its method's weights are unchanged)."""
    import shutil

    own, dest = run_dir / "07_evaluation", run_dir / "07_evaluation_yardstick"
    if (dest / "evaluation.json").is_file() or not (own / "evaluation.json").is_file() \
            or not judged_by_the_yardstick(run_dir / "checkpoints", shipped):
        return False
    dest.mkdir(parents=True, exist_ok=True)
    for f in own.iterdir():
        if f.is_file():
            shutil.copy2(f, dest / f.name)
    print(f"  the run's scorers are the shipped ones: its own evaluation ({own}) is reused", flush=True)
    return True


def yardstick_evaluation(run_dir: str | Path, profile: str = "full", device: str = "cpu") -> dict:
    """Score a retrain (``run_dir``: a ``runs/<name>/`` with ``checkpoints/``) with the shipped
    judges: the pocket LMM's text-to-image on the cells its card uses, and every row of the
    evaluation (section 5's protocol) into ``run_dir/07_evaluation_yardstick/``. Returns
    ``{"lmm": {cells: scores}, "evaluation": evaluation.run's result}``."""
    import os

    from drclib import evaluation
    from drclib.backbone import PocketLMM
    from drclib.backbone import tokenizer as tok_mod
    from drclib.judges import evaluate_text_to_image, load_judges
    from drclib.train import eval_cell_subsets, model_stickers

    run_dir = Path(run_dir) if Path(run_dir).is_absolute() else repo_root() / run_dir
    mixed = yardstick_root(run_dir / "checkpoints", run_dir / "yardstick_checkpoints")
    reuse_own_evaluation(run_dir)
    before = os.environ.get(CHECKPOINTS_ENV)
    os.environ[CHECKPOINTS_ENV] = str(mixed)
    try:
        lmm = PocketLMM.from_pretrained(mixed / "lmm", device=device)
        stickers = model_stickers(lmm)
        tokenizer = tok_mod.load_default(device=device)
        style_clf, emoji_clf = load_judges(stickers, device)
        lmm_scores = {k: evaluate_text_to_image(lmm, tokenizer, style_clf, emoji_clf, stickers, v)
                      for k, v in eval_cell_subsets(stickers, 300).items()}
        results = evaluation.run(profile, out_dir=run_dir / "07_evaluation_yardstick", device=device)
    finally:
        if before is None:
            os.environ.pop(CHECKPOINTS_ENV, None)
        else:
            os.environ[CHECKPOINTS_ENV] = before
    return {"lmm": lmm_scores, "evaluation": results}


def compare_judged(yardstick: dict, shipped_lmm: dict, shipped_eval: dict) -> list[dict]:
    """The judged figures of a retrain (:func:`yardstick_evaluation`) beside the shipped kit's
    (the LMM's card ``extra["evaluation"]`` and ``data/results/evaluation_full/evaluation.json``)."""
    out = []
    for cells, what in (("train_cells", "training cells"), ("heldout_cells", "held-out cells")):
        a, b = shipped_lmm[cells], yardstick["lmm"][cells]
        for m in ("emoji_top1", "both"):
            out.append(dict(_entry(f"text-to-image {m.replace('_top1', '')}, {what}", float(a[m]), float(b[m]),
                                   _rate_se(float(a[m]), a["n"]), _rate_se(float(b[m]), b["n"])),
                            part="pocket LMM", key=f"{cells}.{m}"))
    for split in ("sample", "heldout"):
        for row in COMPARED_ROWS:
            a = shipped_eval["splits"][split].get(row)
            b = yardstick["evaluation"]["splits"][split].get(row)
            if a is None or b is None:       # a row one side did not evaluate
                continue
            for m in COMPARED_METRICS:
                va, vb = float(a["ground_truth"][m]), float(b["ground_truth"][m])
                out.append(dict(_entry(f"{m}, split {split}", va, vb, _rate_se(va, a["n"]), _rate_se(vb, b["n"])),
                                part=row, key=f"{split}.{row}.{m}"))
    return out


def retrain_time_table(record: dict) -> str:
    """A retrain's time per part (``record``: ``benchmarks/lab_recipe.py``'s JSON) beside the
    card's one-thread minutes, with the training, evaluation, notebooks and total wall times."""
    rows = ["| part | minutes (this run) | the card's recipe, one thread (evaluation, notebooks: README's timing) |",
            "|---|---|---|"]
    for part, minutes in record["minutes"].items():
        card = record["card_minutes"].get(part)
        took = "pretrained (shipped)" if record.get("status", {}).get(part) == "pretrained" else f"{minutes:.1f}"
        rows.append(f"| {part} | {took} | {'' if card is None else f'{card:.1f}'} |")
    rows.append(f"| **training, two lanes (wall)** | **{record['training_minutes']:.1f}** | |")
    rows.append(f"| **training and evaluation** | **{record['training_minutes'] + record['evaluation_minutes']:.1f}** | |")
    if "notebooks" in record["minutes"]:
        rows.append(f"| **whole run, with the notebooks** | **{record['total_minutes']:.1f}** | |")
    return "\n".join(rows)


def comparison_table(record: dict, parts: tuple | None = None, metrics: tuple | None = None) -> str:
    """A markdown table of compared figures (``record["compared"]``, from :func:`compare_with_cards`
    and :func:`compare_judged`): shipped, retrained, difference ± its standard error. ``parts`` /
    ``metrics``: only those parts, only the figures whose key ends with one of those metrics."""
    rows = ["| part | figure | shipped | retrained | difference | within 2 SE |", "|---|---|---|---|---|---|"]
    for e in record["compared"]:
        if parts and e["part"] not in parts:
            continue
        if metrics and not e["key"].endswith(tuple("." + m for m in metrics)):
            continue
        se = "" if e["se_diff"] is None else f" ± {e['se_diff']:.3f}"
        ok = {True: "yes", False: "**no**", None: "n/a"}[e["within_noise"]]
        rows.append(f"| {e['part']} | {e['what']} | {e['shipped']:.3f} | {e['retrained']:.3f} | "
                    f"{e['diff']:+.3f}{se} | {ok} |")
    return "\n".join(rows)
