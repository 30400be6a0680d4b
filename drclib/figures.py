"""One place for each number: the figures README and RESULTS quote, read from their sources.

A measured figure lives in one file: the evaluation's JSON (``data/results/evaluation_full/``),
a benchmark's JSON (``data/results/``), or a shipped model's card (``config.json`` beside its
weights, key ``extra``). Documents never retype it: they carry it between markers that name
its source, and ``python -m drclib.figures --write`` fills them in::

    DRC's "both" is <!--fig eval:splits.sample.drc.ground_truth.both|rate-->0.350 ± 0.034<!--/fig-->.

    <!--table eval-truth:sample-->
    | method | ... |          (rewritten from the source on --write)
    <!--/table-->

A figure's key is ``source:path.in.the.json`` (``[...]`` around a key that holds dots, a
number for a list item) then ``|format``. Formats: ``rate`` (``0.350 ±
0.034``, the standard error from the nearest ``n`` above the value; ``rate2`` with two
decimals), ``pct`` (``35%``),
``pct1`` (``35.0%``), ``pctse`` (``35% ± 3``), ``f1``/``f2``/``f3`` (decimals), ``int``.
``python -m drclib.figures`` (without ``--write``; and ``tests/test_figures.py``) fails when a document's
figure no longer matches its source. Markers render as nothing on GitHub and in Jupyter.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

from drclib.paths import repo_root

SOURCES = {
    "eval": "data/results/evaluation_full/evaluation.json",
    "eval_sweep": "data/results/evaluation_full_sweep/evaluation.json",
    "eval_old_split": "data/results/evaluation_old_split/evaluation.json",
    "eval_before_fix": "data/results/evaluation_before_fix/evaluation.json",
    "heldout_fix": "data/results/heldout_fix.json",
    "composing": "data/results/composing_lmm.json",
    "eval_plain": "data/results/evaluation_plain_lmm/evaluation.json",
    "eval_run": "data/results/evaluation_full/reproduce.json",
    "scaling": "data/results/scaling_study/scaling_study.json",
    "recipes": "data/results/lmm_recipes.json",
    "mask_keep": "data/results/mask_keep.json",
    "quick_seeds": "data/results/quick_seeds.json",
    "quick_seeds_plain": "data/results/quick_seeds_plain_lmm.json",
    "quick_lanes": "data/results/quick_lanes_seed0.json",
    "speed": "data/results/speed.json",
    "lab": "data/results/lab_recipe.json",
    "lab_pretrained_lmm800": "data/results/lab_pretrained_lmm800.json",
    "lab_pretrained": "data/results/lab_pretrained.json",
    "lab_pretrained_s2_200": "data/results/lab_pretrained_s2_200.json",
    "card_pretrained": "data/results/card_pretrained.json",
    "card_pretrained_fp32lmm": "data/results/card_pretrained_fp32lmm.json",
    "card_scratch": "data/results/card_scratch.json",
    "card_pretrained_amd": "data/results/card_pretrained_amd.json",
    "card_pretrained_600": "data/results/card_pretrained_600.json",
    "lab_pretrained_600": "data/results/lab_pretrained_600.json",
    "replicates": "data/results/replicates.json",
    "lmm_seeds": "data/results/lmm_seeds.json",
    "stage1_lmm_seeds": "data/results/stage1_lmm_seeds.json",
    "pigeon_lmm": "data/results/pigeon_lmm.json",
    "style_probe": "data/results/style_probe.json",
    "style_judge_sets": "data/results/style_judge_sets.json",
    "encoder_style_weight": "data/results/encoder_style_weight.json",
    "notebook_lanes": "data/results/notebook_lanes.json",
    "stage2_steps": "data/results/stage2_steps.json",
    "stage2_steps_600": "data/results/stage2_steps_600.json",
    "stage2_seeds": "data/results/stage2_seeds.json",
    "stage2_seeds_retrained": "data/results/stage2_seeds_retrained.json",
    "stage2_seeds_400": "data/results/stage2_seeds_400.json",
    "stage1_steps": "data/results/stage1_steps.json",
    "stage1_encoders": "data/results/stage1_encoders.json",
    "style_guidance": "data/results/style_guidance.json",
    "heldout_styles": "data/results/heldout_styles.json",
    "alpha_m_curve": "data/results/alpha_m_curve.json",
    "best_of": "data/results/best_of.json",
    "best_of_seed1": "data/results/best_of_seed1.json",
    "best_of_plain": "data/results/best_of_plain.json",
    "lmm": "data/checkpoints/lmm/config.json",
    "encoder": "data/checkpoints/encoder/config.json",
    "tokenizer": "data/checkpoints/tokenizer/config.json",
    "style_judge": "data/checkpoints/style_classifier/config.json",
    "emoji_judge": "data/checkpoints/emoji_classifier/config.json",
    "plain_lmm": "data/checkpoints/plain/lmm/config.json",
    "plain_stage1": "data/checkpoints/plain/stage1/config.json",
    "stage1_drc": "data/checkpoints/stage1/drc/config.json",
    "stage1_uniform": "data/checkpoints/stage1/uniform/config.json",
    "stage1_concat": "data/checkpoints/stage1/concat/config.json",
    "stage1_mlp": "data/checkpoints/stage1/mlp/config.json",
    "stage2_drc": "data/checkpoints/drc/drc/config.json",
    "stage2_no_aug": "data/checkpoints/drc_no_aug/drc/config.json",
    "pigeon": "data/checkpoints/pigeon/prompter/config.json",
    "lmm_sft": "data/checkpoints/lmm_sft/prompter/config.json",
}
"""Every source a document may quote, by short name (paths relative to the repository)."""

DOCUMENTS = ("README.md", "RESULTS.md")
"""The documents whose figures are checked."""

_PART = re.compile(r"\[([^\]]*)\]|([^.\[\]]+)")   # a.b.c, and [a key with dots] for keys that hold them
FIG = re.compile(r"<!--fig ([^|>]+?)(?:\|(\w+))?-->(.*?)<!--/fig-->", re.DOTALL)
TABLE = re.compile(r"(<!--table ([\w-]+):?([\w-]*)-->\n)(.*?)(<!--/table-->)", re.DOTALL)


@cache
def _load(source: str, root: str) -> dict:
    if source not in SOURCES:
        raise KeyError(f"unknown figure source {source!r}; known: {', '.join(SOURCES)}")
    path = Path(root) / SOURCES[source]
    if not path.is_file():
        raise FileNotFoundError(f"the figure source {source!r} ({path}) is missing: run the command that makes it")
    data = json.loads(path.read_text())
    return data.get("extra", data) if path.name == "config.json" else data


def _count(node):
    """A sample count stored beside values: ``n`` (evaluations, cards) or ``n_cells`` (benchmarks)."""
    return (node.get("n") or node.get("n_cells")) if isinstance(node, dict) else None


def lookup(key: str, root: str | Path | None = None):
    """The value at ``source:a.b.c`` and the nearest ``n`` on the path to it (or None)."""
    source, _, path = key.partition(":")
    node = _load(source.strip(), str(root or repo_root()))
    n = _count(node)
    for part in (a or b for a, b in _PART.findall(path.strip())):
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(f"figure {key!r}: no {part!r} in its source ({SOURCES[source.strip()]})")
        n = _count(node) or n
    return node, n


def render(value, fmt: str | None, n=None) -> str:
    """One figure as a document shows it (see the module docstring for the formats)."""
    from drclib.judges.metrics import format_rate, rate_se

    if fmt in ("rate", "rate2", "pctse") and not n:
        raise ValueError(f"format {fmt!r} needs a sample count n beside the value")
    if fmt is None:
        return str(value)
    if fmt == "rate":
        return format_rate(float(value), int(n))
    if fmt == "rate2":
        return format_rate(float(value), int(n), digits=2)
    if fmt == "pct":
        return f"{100 * float(value):.0f}%"
    if fmt == "pct1":
        return f"{100 * float(value):.1f}%"
    if fmt == "pctse":
        return f"{100 * float(value):.0f}% ± {100 * rate_se(float(value), int(n)):.0f}"
    if fmt in ("f1", "f2", "f3"):
        return f"{float(value):.{fmt[1]}f}"
    if fmt == "int":
        return f"{int(round(float(value))):,}"
    raise ValueError(f"unknown figure format {fmt!r}")


def figure(key: str, fmt: str | None = None, root: str | Path | None = None) -> str:
    """``figure("eval:splits.sample.drc.ground_truth.both", "rate")`` -> ``"0.350 ± 0.034"``."""
    value, n = lookup(key, root)
    return render(value, fmt, n)


def table(name: str, arg: str = "", root: str | Path | None = None) -> str:
    """A generated table: ``eval-truth`` / ``eval-paper`` (argument: the split) of the shipped
    evaluation, ``eval_sweep-truth`` / ``eval_sweep-paper`` of the per-sample alpha_m run; ``plan``
    (argument: lanes, or ``lab-paper`` for ``RECIPE=lab PRETRAINED=paper``) the from-scratch
    schedule of :func:`drclib.reproduce.plan_table`; and any source that
    ``benchmarks/lab_recipe.py`` wrote (a retrain against the shipped cards: ``lab``,
    ``lab_pretrained``, ``card_pretrained``, ``card_scratch``, ...; RESULTS section 7 says which run
    each is), with the argument ``times``, ``parts`` or ``judged``; and, without an argument, the
    markdown ``table`` a benchmark wrote into its JSON (``lmm_seeds``, ``replicates``, ...)."""
    from drclib import evaluation

    if name == "plan":      # make all's from-scratch schedule (argument: lanes, or lab-paper), from the cards' minutes
        from drclib.reproduce import expected_minutes, plan_table, pretrained_parts, training_steps

        if arg == "lab-paper":      # RECIPE=lab PRETRAINED=paper
            return plan_table(training_steps("runs/full/state", "runs/full/checkpoints", "lab"), 2,
                              expected_minutes("lab"), done=pretrained_parts("paper"))
        return plan_table(training_steps("runs/full/state", "runs/full/checkpoints"), int(arg or 2))
    if name in SOURCES and "compared" in _load(name, str(root or repo_root())):
        # a retrain against the cards (benchmarks/lab_recipe.py's JSON; argument: times, parts or judged)
        from drclib.yardstick import CARD_METRICS, comparison_table, retrain_time_table

        record = _load(name, str(root or repo_root()))
        card_parts = tuple(dict.fromkeys(m[0] for m in CARD_METRICS))
        if arg == "times":
            return retrain_time_table(record)
        if arg in ("parts", "judged"):
            judged = tuple(dict.fromkeys(e["part"] for e in record["compared"] if e["part"] not in card_parts))
            return comparison_table(record, card_parts) if arg == "parts" else \
                comparison_table(record, judged, ("both", "collapse_reference"))
        raise KeyError(f"table {name!r}: argument must be times, parts or judged, got {arg!r}")
    if name in SOURCES and not arg and isinstance(_load(name, str(root or repo_root())).get("table"), str):
        return _load(name, str(root or repo_root()))["table"]      # a benchmark's own table, as it printed it
    source, _, kind = name.rpartition("-")
    if source not in ("eval", "eval_sweep") or kind not in ("truth", "paper"):
        raise KeyError(f"unknown table {name!r}: use eval-truth, eval-paper, eval_sweep-truth or eval_sweep-paper")
    results = _load(source, str(root or repo_root()))
    if arg not in results["splits"]:
        raise KeyError(f"table {name!r}: no split {arg!r} in {SOURCES[source]}")
    return (evaluation.truth_table if kind == "truth" else evaluation.paper_table)(results, arg)


def refresh(text: str, root: str | Path | None = None) -> str:
    """The document's text with every marked figure and table rewritten from its source."""
    text = FIG.sub(lambda m: f"<!--fig {m.group(1)}{'|' + m.group(2) if m.group(2) else ''}-->"
                   f"{figure(m.group(1), m.group(2), root)}<!--/fig-->", text)
    return TABLE.sub(lambda m: f"{m.group(1)}{table(m.group(2), m.group(3), root)}\n{m.group(5)}", text)


def stale(path: str | Path, root: str | Path | None = None) -> list[str]:
    """Figures and tables in one document that no longer match their sources, in words."""
    text = Path(path).read_text(encoding="utf-8")
    bad = []
    for m in FIG.finditer(text):
        want = figure(m.group(1), m.group(2), root)
        if m.group(3) != want:
            bad.append(f"{Path(path).name}: {m.group(1)} reads {m.group(3)!r}, its source says {want!r}")
    for m in TABLE.finditer(text):
        want = table(m.group(2), m.group(3), root)
        if m.group(4).strip() != want.strip():
            bad.append(f"{Path(path).name}: table {m.group(2)}:{m.group(3)} differs from its source")
    return bad


def count(path: str | Path) -> tuple[int, int]:
    """How many marked figures and tables a document carries."""
    text = Path(path).read_text(encoding="utf-8")
    return len(FIG.findall(text)), len(TABLE.findall(text))


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m drclib.figures",
                                description="Check or rewrite the figures README and RESULTS quote from their sources.")
    p.add_argument("--write", action="store_true", help="rewrite every marked figure and table in place")
    p.add_argument("documents", nargs="*", default=list(DOCUMENTS))
    args = p.parse_args(argv)
    root = repo_root()
    problems = []
    for doc in args.documents:
        path = root / doc if not Path(doc).is_absolute() else Path(doc)
        if args.write:
            from drclib.io import atomic_path

            new = refresh(path.read_text(encoding="utf-8"))
            with atomic_path(path) as tmp:
                tmp.write_text(new, encoding="utf-8")
        problems += stale(path)
        figs, tables = count(path)
        print(f"{path.name}: {figs} figures, {tables} tables from their sources")
    for line in problems:
        print("STALE", line)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
