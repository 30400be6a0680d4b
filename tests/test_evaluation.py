"""The evaluation of the paper's Table 2 (drclib.evaluation) end to end on tiny models, its
tables' shape and invariants, resuming, and the one-command reproduction's plan."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from drclib import evaluation
from drclib.baselines import ReferencePipeline
from drclib.data import make_dataset
from drclib.evaluation import COLUMN_BACKENDS, EvalConfig, Judges, check_invariants, evaluate
from drclib.judges import StickerClassifier, StickerClassifierConfig
from drclib.reproduce import training_steps
from tests.conftest import tiny_pipeline


class _FixedClip:
    """A stand-in for the tiny CLIP whose image embedding is the mean colour, so scores are
    exact and Grd (an image against itself) scores 100."""

    device = torch.device("cpu")

    def encode_image(self, x):
        return torch.nn.functional.normalize(x.mean((2, 3)) - 0.5 + 1e-3, dim=-1)

    def image_score(self, a, b):
        return 100 * (self.encode_image(a) * self.encode_image(b)).sum(-1)

    def clip_score(self, images, texts):
        return torch.full((len(images),), float(len(texts[0]) % 7))


@pytest.fixture(scope="module")
def setup(tiny_stickers):
    torch.manual_seed(0)
    judges = Judges(StickerClassifier(StickerClassifierConfig(num_classes=6)).eval(),
                    StickerClassifier(StickerClassifierConfig(num_classes=tiny_stickers.n_emoji)).eval(),
                    _FixedClip())
    judges.paper = {"clip_vit_h14": None, "dinov2_large": None, "lpips_vgg": None, "inception_v3": None}
    judges.status = {k: "available (kit)" for k in ("style_classifier", "emoji_classifier", "tinyclip")} | \
        {k: "unavailable: no weights (test)" for k in judges.paper}
    pipe = tiny_pipeline(tiny_stickers)
    data = make_dataset(tiny_stickers, "quick", seed=0)
    methods = {"grd": ReferencePipeline("grd"), "recon": ReferencePipeline("recon", pipe.tokenizer), "drc": pipe,
               "target": evaluation._Oracle("target"), "history": ReferencePipeline("history")}
    splits = {s: data.splits[s].test for s in ("sample", "heldout")}
    return judges, methods, data, splits


def test_evaluation_end_to_end_tables_and_invariants(setup, tiny_stickers, tmp_path):
    judges, methods, data, splits = setup
    cfg = EvalConfig(n_samples=6, sweep=True, alphas=(0.0, 1.0), batch_size=4, keep_images=3, profile="quick")
    res = evaluate(methods, tiny_stickers, data.samples, splits, cfg, judges, out_dir=tmp_path, progress=False)
    assert set(res["splits"]) == {"sample", "heldout"}
    for split, entries in res["splits"].items():
        assert list(entries) == list(methods)
        for name, e in entries.items():
            assert e["n"] == 6
            assert set(e["style"]) == set(evaluation.STYLE_COLUMNS)
            assert set(e["semantic"]) == set(evaluation.SEMANTIC_COLUMNS)
            assert e["style"]["CIS"] is None and e["FID"] is None          # unavailable backends stay empty
            assert set(e["ground_truth"]) == set(evaluation.TRUTH_COLUMNS)
        assert entries["grd"]["semantic"]["CIS_kit"] == pytest.approx(100, abs=1e-3)
        assert entries["grd"]["alpha_m"] is None and 0 <= entries["drc"]["alpha_m"] <= 1
        assert entries["target"]["FID_kit"] == pytest.approx(0, abs=1e-3)
    # random tiny DRC weights need not lose to Recon; every other invariant must hold
    assert [p for p in check_invariants(res) if "Recon" not in p] == []
    assert all(res["columns"][c]["backend"] for c in COLUMN_BACKENDS)
    assert res["columns"]["CIS"]["status"].startswith("unavailable")
    # tables: one header, one separator, one line per method
    table = evaluation.paper_table(res, "sample").splitlines()
    assert len(table) == 2 + len(methods) and "n/a" in table[2]
    assert len(evaluation.truth_table(res, "heldout").splitlines()) == 2 + len(methods)
    assert "### Backends" in evaluation.report(res)
    images = evaluation.load_images(tmp_path, "sample")
    assert images["history"].shape[:2] == (3, data.samples.history.shape[1]) and images["drc"].shape == (3, 3, 32, 32)
    # the Copy history row's outputs are kept beside the inputs' history strip, not over it
    assert images["history_copy"].shape == (3, 3, 32, 32) and images["history"].ndim == 5


def test_resume_reuses_finished_entries(setup, tiny_stickers, tmp_path):
    judges, methods, data, splits = setup
    cfg = EvalConfig(n_samples=4, sweep=False, batch_size=4, keep_images=2, profile="quick")
    evaluate({"grd": methods["grd"]}, tiny_stickers, data.samples, splits, cfg, judges, out_dir=tmp_path,
             progress=False, fingerprints={"grd": "a"})
    calls = []

    def factory():
        calls.append(1)
        return methods["recon"]
    res = evaluate({"grd": lambda: pytest.fail("a finished entry was recomputed"), "recon": factory},
                   tiny_stickers, data.samples, splits, cfg, judges, out_dir=tmp_path, progress=False,
                   fingerprints={"grd": "a"})
    assert len(calls) == 1 and set(res["splits"]["sample"]) == {"grd", "recon"}    # loaded once for both splits
    # changed weights (fingerprint) or settings: recomputed
    calls.clear()
    evaluate({"recon": factory}, tiny_stickers, data.samples, splits, cfg, judges, out_dir=tmp_path,
             progress=False, fingerprints={"recon": "new"})
    assert len(calls) == 1


def test_invariants_catch_violations():
    def entry(sem, style_acc=0.5):
        return {"semantic": {"CIS_kit": sem}, "ground_truth": {c: style_acc for c in evaluation.TRUTH_COLUMNS}}
    good = {"columns": evaluation.column_info(), "splits": {"s": {"grd": entry(100.0), "recon": entry(80.0),
                                                                  "drc": entry(30.0)}}}
    assert check_invariants(good) == []
    bad = json.loads(json.dumps(good))
    bad["splits"]["s"]["drc"] = entry(90.0)
    bad["splits"]["s"]["grd"] = entry(95.0)
    bad["splits"]["s"]["recon"]["ground_truth"]["both"] = 1.5
    bad["columns"]["FID"]["backend"] = ""
    problems = "\n".join(check_invariants(bad))
    for text in ("not 100", "Recon's semantic CIS_kit", "outside [0, 1]", "column FID names no backend"):
        assert text in problems


def test_alignment_f1_and_bad_input():
    f1 = evaluation.alignment_f1(torch.tensor([50.0, 0.0, -3.0]), torch.tensor([50.0, 10.0, 10.0]))
    assert torch.allclose(f1, torch.tensor([50.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="no test samples"):
        evaluation.test_inputs(None, None, np.array([], dtype=int))
    with pytest.raises(ValueError, match="unknown row"):
        evaluation.load_method("dalle")
    with pytest.raises(FileNotFoundError, match="run the evaluation first"):
        evaluation.load_images("/nonexistent", "sample")


def test_every_row_has_a_label_group_and_shipped_checkpoint():
    grouped = [r for g in evaluation.GROUPS.values() for r in g]
    assert sorted(grouped) == sorted(evaluation.ROWS)
    for row in evaluation.ROWS:
        folder = evaluation.method_folder(row)
        assert folder is None or any(folder.glob("*.json")), f"{row}: nothing shipped in {folder}"


def test_reproduce_plan_covers_every_trained_part():
    steps = training_steps("runs/full/state")
    outputs = [s.output for s in steps]
    for part in ("tokenizer", "style_classifier", "emoji_classifier", "tinyclip", "lmm", "stage1/drc", "stage1/uniform",
                 "stage1/concat", "stage1/mlp", "drc", "drc_no_aug", "pigeon", "lmm_sft"):
        assert f"data/checkpoints/{part}" in outputs
    assert all("--state-dir" in s.args for s in steps if "drclib.train" in s.args)
    from drclib.data.stickers import repo_root

    assert [s.name for s in steps if not s.done(repo_root())] == []      # a fresh clone trains nothing


def test_reproduce_from_scratch_never_writes_the_shipped_weights():
    steps = training_steps("runs/full/state", "runs/full/checkpoints")
    for s in steps:
        # a chain's intermediate parts (the LMM's first two runs) live with the training state
        assert s.output.startswith("runs/full/state/" if s.part_of else "runs/full/checkpoints/"), s
        outs = [s.args[i + 1] for i, a in enumerate(s.args) if a == "--out"]
        assert outs == [s.output], f"{s.name} must write where the plan expects: {outs}"
        assert not any("data/checkpoints" in str(a) for a in s.args)


def test_checkpoints_env_moves_every_default_folder(monkeypatch, tmp_path):
    from drclib import judges
    from drclib.backbone import default_checkpoint_dir, tokenizer
    from drclib.checkpoint import CHECKPOINTS_ENV, CheckpointError, shipped_dir
    from drclib.pipeline import default_stage1_dir

    monkeypatch.setenv(CHECKPOINTS_ENV, str(tmp_path))
    assert shipped_dir("x") == tmp_path / "x"
    assert default_checkpoint_dir() == tmp_path / "lmm" and tokenizer.default_checkpoint_dir() == tmp_path / "tokenizer"
    assert default_stage1_dir("concat") == tmp_path / "stage1" / "concat"
    with pytest.raises(CheckpointError, match="train it"):      # an empty root says how to fill it
        judges.load_default("style_classifier")


def test_progress_line_and_time_table():
    from drclib.reproduce import EXPECTED_MINUTES, Progress, time_table

    pr = Progress(["data check", "pocket LMM", "evaluation"])
    first = pr.line("data check")
    assert first.startswith("[1/3]") and "0%" in first and "data check" in first
    left = sum(EXPECTED_MINUTES[p] for p in ("data check", "pocket LMM", "evaluation")) * 60
    assert _seconds(first.rsplit("about ", 1)[1].split(" left")[0]) == pytest.approx(left, abs=2)
    pr.finish("data check", 60.0)         # ten times its 6 s: too short a part to set the pace
    second = pr.line("pocket LMM")
    assert second.startswith("[2/3]") and "pocket LMM" in second
    rest = (EXPECTED_MINUTES["pocket LMM"] + EXPECTED_MINUTES["evaluation"]) * 60
    assert _seconds(second.rsplit("about ", 1)[1].split(" left")[0]) == pytest.approx(rest, abs=2)
    pr.finish("pocket LMM", EXPECTED_MINUTES["pocket LMM"] * 60 * 2)     # twice as slow: the estimate doubles
    assert pr.pace == pytest.approx(2.0)
    third = pr.line("evaluation")
    assert _seconds(third.rsplit("about ", 1)[1].split(" left")[0]) == pytest.approx(
        EXPECTED_MINUTES["evaluation"] * 60 * 2, abs=2)
    # a part that ran alone on both threads is held to its one-thread time over TWO_THREADS: the
    # AMD run's LMM took 9.3 min on two threads, 0.51 of the 18.2 one-thread minutes but 0.87 of 10.7
    from drclib.reproduce import TWO_THREADS

    two = Progress(["pocket LMM", "evaluation"])
    two.finish("pocket LMM", EXPECTED_MINUTES["pocket LMM"] * 60 / TWO_THREADS, threads=2)
    assert two.pace == pytest.approx(1.0)
    table = time_table({"seconds": {"pocket LMM": 600.0}, "status": {"pocket LMM": "trained"}, "total_seconds": 660.0})
    assert "| pocket LMM | trained | 10.0 | 4.1 |" in table and "**11.0**" in table
    lab = time_table({"recipe": "lab", "seconds": {"semantic encoder": 600.0}, "status": {}, "total_seconds": 600.0})
    assert "| semantic encoder | ran | 10.0 | 7.3 |" in lab       # 800 of the card's 3,000 steps


def test_progress_counts_reused_parts_as_no_work():
    """A pretrained or resumed part weighs nothing: the bar starts at 0% and the first estimate
    is the work this run does (the PRETRAINED run printed 2:21:53 for about 1:10 of work)."""
    from drclib.reproduce import EXPECTED_MINUTES, Progress

    parts = ["data check", "visual tokenizer", "pocket LMM", "evaluation"]
    pr = Progress(parts)
    pr.finish("visual tokenizer", 0.0, ran=False)
    first = pr.line("data check")
    assert first.startswith("[2/4]") and " 0%" in first
    work = sum(EXPECTED_MINUTES[p] for p in ("data check", "pocket LMM", "evaluation")) * 60
    assert _seconds(first.rsplit("about ", 1)[1].split(" left")[0]) == pytest.approx(work, abs=2)
    assert pr.pace == 1.0                                        # a reused part says nothing about the pace
    pr.finish("visual tokenizer", 0.0, ran=False)                # run_lanes reports it again: no change
    assert pr.line("data check").split("elapsed")[0] == first.split("elapsed")[0]


def test_measured_pace_sets_the_first_estimate(tmp_path):
    """Before any part finishes, the time left comes from the pace of earlier runs on a machine
    with the same description: on the AMX Xeon the two PRETRAINED=paper runs' pace predicts the
    from-nothing run (card_scratch.json, 74.3 min) within a few per cent, though the cards'
    minutes alone say 155."""
    import json
    import shutil

    from drclib.paths import repo_root
    from drclib.reproduce import PRIOR_WEIGHT, Progress, measured_pace

    results = repo_root() / "data" / "results"
    scratch = json.loads((results / "card_scratch.json").read_text())
    for name in ("card_pretrained.json", "card_pretrained_fp32lmm.json"):
        shutil.copy(results / name, tmp_path / name)
    pace, names = measured_pace(scratch["machine"], tmp_path)
    assert names == ["card_pretrained.json", "card_pretrained_fp32lmm.json"]
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "card_scratch.json").write_text(json.dumps(scratch))
    planned = scratch["total_minutes"] / measured_pace(scratch["machine"], alone)[0]   # its plan by the cards
    assert planned > 1.8 * scratch["total_minutes"]
    assert pace * planned == pytest.approx(scratch["total_minutes"], rel=0.05)         # predicted from the others
    (tmp_path / "card_scratch.json").write_text(json.dumps(scratch))
    assert measured_pace("a machine no run was measured on", tmp_path) is None
    (tmp_path / "card_broken.json").write_text("{not json")                # ignored, not fatal
    (tmp_path / "card_other.json").write_text(json.dumps({"machine": scratch["machine"], "note": "no minutes"}))
    assert measured_pace(scratch["machine"], tmp_path)[1] == names + ["card_scratch.json"]
    # the prior counts as PRIOR_WEIGHT expected minutes beside this run's own parts
    pr = Progress(["pocket LMM", "evaluation"], prior_pace=0.5)
    assert pr.pace == pytest.approx(0.5)
    pr.finish("pocket LMM", 60.0 * PRIOR_WEIGHT * 1.5, threads=1)
    lmm = pr.expected["pocket LMM"]
    assert pr.pace == pytest.approx((60 * PRIOR_WEIGHT * 1.5 + 0.5 * 60 * PRIOR_WEIGHT) / (60 * lmm + 60 * PRIOR_WEIGHT))


def test_lab_recipe_shortens_every_part_and_only_trains_from_scratch(tmp_path):
    from drclib.reproduce import (CARD_SIZE, LAB_RECIPE, expected_minutes, makespan, plan, reproduce,
                                  training_steps)

    card = {s.name: s for s in training_steps("st", "ck")}
    lab = {s.name: s for s in training_steps("st", "ck", "lab")}
    assert set(lab) == set(card) == set(LAB_RECIPE) == set(CARD_SIZE)
    for name, (flag, size) in CARD_SIZE.items():
        assert card[name].args[card[name].args.index(flag) + 1] == str(size) if flag in card[name].args else True
        assert float(lab[name].args[lab[name].args.index(flag) + 1]) <= size, name    # the LMM and stage 1 keep their cards'
        assert lab[name].needs == card[name].needs and lab[name].output == card[name].output
        assert len(lab[name].args) - len(card[name].args) in (0, 2, 4)    # flags replaced, or added once
    minutes = expected_minutes("lab")
    assert all(minutes[n] <= expected_minutes()[n] for n in LAB_RECIPE)
    kept = {n for n in LAB_RECIPE if minutes[n] == expected_minutes()[n]}   # the parts that fall short when cut
    assert kept == {"pocket LMM, augmented", "pocket LMM, augmented, continued", "pocket LMM", "stage 1, drc", "stage 1, uniform", "stage 1, concat", "stage 1, mlp",
                    "stage 2, DRC", "stage 2, w/o Aug"}
    assert makespan(plan(list(lab.values()), 2, minutes)) < 0.6 * makespan(plan(list(card.values()), 2))   # 69 vs 137 min
    # the LMM is the composing LMM's chain of three runs, each continuing the one before; only the last
    # writes the shipped folder, and the first two count as done once it exists
    a, b, lmm = (card[n] for n in ("pocket LMM, augmented", "pocket LMM, augmented, continued", "pocket LMM"))
    assert a.part_of == b.part_of == lmm.output and lmm.part_of is None
    assert b.args[b.args.index("--init-from") + 1] == a.output and lmm.args[lmm.args.index("--init-from") + 1] == b.output
    assert "--augment" in a.args and "--augment" in b.args and "--augment" not in lmm.args
    assert b.needs[-1] == a.name and lmm.needs[-1] == b.name and lab["pocket LMM"].args == lmm.args
    with pytest.raises(ValueError, match="recipe must be one of"):
        training_steps("st", "ck", "fast")
    with pytest.raises(ValueError, match="from scratch only"):
        reproduce("quick", recipe="lab", notebooks=False, evaluate=False, train=False)


def test_pretrained_parts_are_copied_from_the_shipped_kit(tmp_path):
    from drclib.reproduce import GIVEN, copy_pretrained, plan_table, pretrained_parts, reproduce, training_steps

    assert pretrained_parts("") == () and pretrained_parts(None) == ()
    assert pretrained_parts("paper") == GIVEN
    assert pretrained_parts("paper, pocket LMM,visual tokenizer") == GIVEN + ("pocket LMM",)
    with pytest.raises(ValueError, match="no trained part is called 'tokeniser'"):
        pretrained_parts("tokeniser")
    with pytest.raises(ValueError, match="only makes sense with --from-scratch"):
        reproduce("quick", pretrained="paper", notebooks=False, evaluate=False, train=False)
    steps = training_steps("st", "run/ck")
    (tmp_path / "ship" / "tokenizer").mkdir(parents=True)
    (tmp_path / "ship" / "tokenizer" / "config.json").write_text("{}")
    (tmp_path / "ship" / "tokenizer" / "model.safetensors").write_bytes(b"w")
    assert copy_pretrained(steps, ("visual tokenizer",), tmp_path, shipped="ship") == ["run/ck/tokenizer"]
    assert (tmp_path / "run/ck/tokenizer/model.safetensors").read_bytes() == b"w"
    assert not list((tmp_path / "run/ck").glob("*.copying"))
    assert copy_pretrained(steps, ("visual tokenizer",), tmp_path, shipped="ship") == []   # already there: kept
    with pytest.raises(FileNotFoundError, match="needs the shipped"):
        copy_pretrained(steps, ("pocket LMM",), tmp_path, shipped="ship")
    table = plan_table(steps, 2, done=GIVEN)
    assert "visual tokenizer" not in table and "semantic encoder" not in table and "pocket LMM" in table


def _seconds(clock: str) -> float:
    parts = [int(x) for x in clock.split(":")]
    return sum(v * 60 ** i for i, v in enumerate(reversed(parts)))


def test_cached_scoring_equals_direct_scoring(setup, tiny_stickers):
    """prepare() encodes the history, reference and targets once; the scores must not change."""
    judges, methods, data, splits = setup
    inputs = evaluation.test_inputs(tiny_stickers, data.samples, splits["sample"][:5])
    images = torch.rand(5, 3, 32, 32)
    direct = evaluation.score(images, dict(inputs), judges)
    cached = evaluation.score(images, evaluation.prepare(dict(inputs), judges), judges)
    assert cached["style"]["StyleSim"] == pytest.approx(direct["style"]["StyleSim"], rel=1e-4)
    assert cached["style"]["CIS_kit"] == pytest.approx(direct["style"]["CIS_kit"], abs=1e-3)
    assert cached["semantic"]["CIS_kit"] == pytest.approx(direct["semantic"]["CIS_kit"], abs=1e-3)
    assert cached["FID_kit"] == pytest.approx(direct["FID_kit"], rel=1e-4)


def test_paper_columns_use_their_backends_when_present(setup, tiny_stickers):
    """With the paper's backends on disk the CS / CIS / DIS / LPIPS / FID columns are filled by
    them (stand-ins with the scorers' interfaces here; the real weights are not on this machine)."""
    judges, methods, data, splits = setup

    class Clip(_FixedClip):
        def clip_image_score(self, a, b):
            return self.image_score(a, b)

    class Dino:
        def dino_image_score(self, a, b):
            return torch.full((len(a),), 42.0)

    class Inception:
        def fid(self, a, b):
            return 7.0

    paper = {"clip_vit_h14": Clip(), "dinov2_large": Dino(), "lpips_vgg": lambda a, b: torch.full((len(a),), 0.5),
             "inception_v3": Inception()}
    full = Judges(judges.style_clf, judges.emoji_clf, judges.tinyclip, paper, judges.status)
    inputs = evaluation.prepare(evaluation.test_inputs(tiny_stickers, data.samples, splits["sample"][:4]), full)
    ref = inputs["reference_images"]
    e = evaluation.score(ref, inputs, full)                         # Grd's outputs: the references
    assert e["semantic"]["CIS"] == pytest.approx(100, abs=1e-3) and e["semantic"]["DIS"] == 42.0
    assert e["style"]["LPIPS"] == 0.5 and e["FID"] == 7.0 and e["style"]["CS"] is not None


def _fake_plan(fail=""):
    """Four training commands (a, b; c after a; d after a and b) that each check that what they
    need was written, sleep, then write their own config.json (``fail``: one that exits 3)."""
    import sys

    from drclib.reproduce import Step

    needs = {"a": (), "b": (), "c": ("a",), "d": ("a", "b")}
    steps = []
    for n, ns in needs.items():
        code = (f"import pathlib, sys, time; missing = [m for m in {list(ns)!r} "
                f"if not pathlib.Path('ck', m, 'config.json').is_file()]; "
                f"sys.exit('needs missing: ' + str(missing)) if missing else None; time.sleep(0.3); "
                f"sys.exit(3) if {n == fail} else None; pathlib.Path('ck', {n!r}).mkdir(parents=True, exist_ok=True); "
                f"pathlib.Path('ck', {n!r}, 'config.json').write_text('{{}}')")
        steps.append(Step(n, f"ck/{n}", [sys.executable, "-c", code], needs=ns))
    return steps, needs


def test_reproduce_plan_respects_needs_and_uses_both_lanes():
    from drclib.reproduce import Step, check_needs, makespan, plan

    steps, needs = _fake_plan()
    minutes = {"a": 10.0, "b": 2.0, "c": 5.0, "d": 1.0}
    sched = plan(steps, 2, minutes, two_threads=1.0)
    at = {p["name"]: p for p in sched}
    for name, ns in needs.items():
        assert all(at[name]["start"] >= at[n]["end"] for n in ns), sched
    assert makespan(sched) == pytest.approx(15.0)
    assert makespan(plan(steps, 1, minutes, two_threads=1.0)) == pytest.approx(18.0)
    assert makespan(plan(steps, 1, minutes, two_threads=2.0)) == pytest.approx(9.0)     # one at a time, both threads
    # a runs alone with both threads (only b, 2 min, could run beside its 10); c and b, then d, share the lanes
    fast = {p["name"]: p for p in plan(steps, 2, minutes, two_threads=2.0)}
    assert fast["a"]["threads"] == 2 and fast["a"]["end"] == pytest.approx(5.0)
    assert fast["b"]["threads"] == fast["c"]["threads"] == 1 and fast["b"]["start"] == pytest.approx(5.0)
    assert makespan(plan(steps, 2, minutes, done={"a"}, two_threads=1.0)) == pytest.approx(5.0)
    assert makespan(plan(steps, 2, minutes, running={"a": 8.0}, two_threads=1.0)) == pytest.approx(7.0)
    with pytest.raises(ValueError, match="does not train"):
        check_needs(steps + [Step("e", "ck/e", [], needs=("zzz",))])
    with pytest.raises(ValueError, match="circle"):
        plan([Step("x", "x", [], needs=("y",)), Step("y", "y", [], needs=("x",))])
    real = training_steps("runs/full/state", "runs/full/checkpoints")
    check_needs(real)       # every part's needs are parts of the kit
    assert makespan(plan(real, 2)) < makespan(plan(real, 1))
    assert plan(real, 2)[0]["name"] == "visual tokenizer" and plan(real, 2)[0]["threads"] == 2


def test_run_lanes_trains_in_order_and_stops_on_a_failure(tmp_path):
    from drclib.reproduce import Progress, run_lanes

    steps, _ = _fake_plan()
    times, status = run_lanes(steps, tmp_path, tmp_path / "logs", 2, progress=Progress([s.name for s in steps]),
                              poll=0.05)
    assert status == {n: "trained" for n in "abcd"} and all(t > 0 for t in times.values())
    assert all((tmp_path / "ck" / n / "config.json").is_file() for n in "abcd")
    (tmp_path / "ck" / "c" / "config.json").unlink()
    times, status = run_lanes(steps, tmp_path, tmp_path / "logs", 2, poll=0.05)   # only what is missing runs
    assert status["c"] == "trained" and status["a"] == status["d"] == "reused"
    root = tmp_path / "fail"
    steps, _ = _fake_plan(fail="a")
    with pytest.raises(RuntimeError, match="a \\(exit 3"):
        run_lanes(steps, root, root / "logs", 2, poll=0.05)
    assert (root / "ck" / "b").exists() and not (root / "ck" / "c").exists() and not (root / "ck" / "d").exists()


def _fake_cards(root, scale):
    """Cards with every figure of CARD_METRICS (values ``scale`` times a base), as a retrain writes."""
    import json

    from drclib.yardstick import CARD_METRICS

    for part, folder, key, what, n_key in CARD_METRICS:
        path = root / folder / "config.json"
        card = json.loads(path.read_text()) if path.is_file() else {"extra": {}}
        for k, v in ((key, 0.5 * scale if not key.endswith("psnr") else 24.0 * scale), (n_key, 400),
                     (key + "_std" if key.endswith("psnr") else None, 4.0)):
            if k is None:
                continue
            d = card["extra"]
            *head, last = k.split(".")
            for h in head:
                d = d.setdefault(h, {})
            d[last] = v
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(card))


def test_compare_with_cards_flags_what_moved_beyond_noise(tmp_path):
    from drclib.yardstick import CARD_METRICS, comparison_table, compare_with_cards

    _fake_cards(tmp_path / "shipped", 1.0)
    _fake_cards(tmp_path / "same", 1.0)
    _fake_cards(tmp_path / "worse", 0.8)
    same = compare_with_cards(tmp_path / "same", tmp_path / "shipped")
    assert len(same) == len(CARD_METRICS) and all(e["diff"] == 0 for e in same)
    assert all(e["within_noise"] for e in same if e["se_diff"] is not None)
    worse = compare_with_cards(tmp_path / "worse", tmp_path / "shipped")
    rate = next(e for e in worse if e["key"] == "heldout.acc")
    # 0.5 -> 0.4 on 400 each: SE of the difference sqrt(2 * 0.25 / 400) ~ 0.035 (the retrain's 0.4: ~0.0348)
    assert rate["diff"] == pytest.approx(-0.1) and rate["within_noise"] is False
    psnr = next(e for e in worse if e["key"].endswith("psnr"))
    assert psnr["se_diff"] == pytest.approx((2 * 16 / 400) ** 0.5) and psnr["within_noise"] is False
    table = comparison_table({"compared": worse}, ("visual tokenizer",))
    assert "| visual tokenizer | PSNR on held-out cells (dB) | 24.000 | 19.200 | -4.800 ± 0.283 | **no** |" in table
    assert "style classifier" not in table
    with pytest.raises(FileNotFoundError):
        compare_with_cards(tmp_path / "missing", tmp_path / "shipped")


def test_yardstick_root_takes_the_shipped_judges(tmp_path):
    from drclib.yardstick import YARDSTICK, yardstick_root

    run, ship = tmp_path / "run", tmp_path / "ship"
    for base in (run, ship):
        for name in YARDSTICK + ("lmm", "tokenizer"):
            (base / name).mkdir(parents=True)
            (base / name / "config.json").write_text(str(base))
    mixed = yardstick_root(run, tmp_path / "mixed", ship)
    for name in YARDSTICK:
        assert (mixed / name / "config.json").read_text() == str(ship)
    for name in ("lmm", "tokenizer"):
        assert (mixed / name / "config.json").read_text() == str(run)
    assert yardstick_root(run, tmp_path / "mixed", ship) == mixed          # again: links replaced, no error
    (ship / "tinyclip" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="restore it from git"):
        yardstick_root(run, tmp_path / "mixed2", ship)


def test_a_run_judged_by_the_shipped_scorers_reuses_its_own_evaluation(tmp_path):
    from drclib.yardstick import YARDSTICK, judged_by_the_yardstick, reuse_own_evaluation

    run, ship = tmp_path / "run", tmp_path / "ship"
    for base in (run / "checkpoints", ship):
        for name in YARDSTICK:
            (base / name).mkdir(parents=True)
            (base / name / "model.safetensors").write_bytes(b"same weights")
    (run / "07_evaluation").mkdir()
    (run / "07_evaluation" / "evaluation.json").write_text('{"own": 1}')
    assert judged_by_the_yardstick(run / "checkpoints", ship)
    assert reuse_own_evaluation(run, ship)
    assert (run / "07_evaluation_yardstick" / "evaluation.json").read_text() == '{"own": 1}'
    assert not reuse_own_evaluation(run, ship)                  # an existing yardstick evaluation is kept
    (run / "checkpoints" / "tinyclip" / "model.safetensors").write_bytes(b"retrained")
    assert not judged_by_the_yardstick(run / "checkpoints", ship)
    (run / "07_evaluation_yardstick" / "evaluation.json").unlink()
    assert not reuse_own_evaluation(run, ship)                  # retrained scorers: score it again
    assert not (run / "07_evaluation_yardstick" / "evaluation.json").exists()


def test_compare_judged_and_time_table():
    from drclib.yardstick import COMPARED_METRICS, compare_judged, retrain_time_table

    lmm = {c: {"emoji_top1": 0.9, "both": 0.8, "n": 300} for c in ("train_cells", "heldout_cells")}
    gt = {m: 0.5 for m in COMPARED_METRICS}
    ev = {"splits": {s: {"drc": {"ground_truth": gt, "n": 100}, "pigeon": {"ground_truth": gt, "n": 100}}
                     for s in ("sample", "heldout")}}
    moved = {"splits": {s: {"drc": {"ground_truth": dict(gt, both=0.2), "n": 100}} for s in ("sample", "heldout")}}
    out = compare_judged({"lmm": lmm, "evaluation": moved}, lmm, ev)
    assert [e["part"] for e in out].count("pocket LMM") == 4 and all(e["within_noise"] for e in out[:4])
    assert not any(e["part"] == "pigeon" for e in out)                     # a row the retrain lacks is left out
    both = [e for e in out if e["part"] == "drc" and e["key"].endswith(".both")]
    assert len(both) == 2 and all(e["within_noise"] is False and e["diff"] == pytest.approx(-0.3) for e in both)
    from drclib.yardstick import comparison_table

    only = comparison_table({"compared": out}, ("drc",), ("both",))
    assert only.count("| drc |") == 2 and "collapse_reference" not in only and "pocket LMM" not in only
    table = retrain_time_table({"minutes": {"pocket LMM": 9.5, "evaluation": 7.0}, "card_minutes": {"pocket LMM": 18.2,
                                "evaluation": 6.5}, "training_minutes": 50.0, "evaluation_minutes": 7.0,
                                "total_minutes": 70.0})
    assert "| pocket LMM | 9.5 | 18.2 |" in table and "| **training and evaluation** | **57.0** | |" in table


def test_stage1_steps_reads_cards_side_by_side(tmp_path):
    import importlib.util

    from drclib.paths import repo_root

    spec = importlib.util.spec_from_file_location("stage1_steps", repo_root() / "benchmarks" / "stage1_steps.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    hist = {"step": [1, 50, 100, 150], "loss": [8.0, 6.0, 4.0, 2.0]}
    assert mod.loss_at(hist, "loss", (100, 300), window=0) == {"100": 4.0, "300": None}    # past the end: None
    out = tmp_path / "s.json"
    assert mod.main(["shipped=data/checkpoints/stage1/drc", "--lmm", "shipped=data/checkpoints/lmm",
                     "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    card = json.loads((repo_root() / "data/checkpoints/stage1/drc/config.json").read_text())["extra"]
    assert got["stage1"]["shipped"]["steps"] == card["stage1"]["steps"]
    assert got["stage1"]["shipped"]["swap"]["train"]["both"] == round(card["evaluation"]["swap"]["train"]["self"]["both"], 3)
    lmm_card = json.loads((repo_root() / "data/checkpoints/lmm/config.json").read_text())["extra"]
    assert got["lmm"]["shipped"]["steps"] == lmm_card["pretrain"]["steps"] == 600     # the composing LMM's last run
    assert got["stage1"]["shipped"]["encoder"]["dim"] == 128                 # the towers' input features, recorded
    with pytest.raises(SystemExit, match="no card at"):
        mod.main([f"missing={tmp_path / 'nothing'}", "--out", str(out)])


def test_lmm_seeds_spread_and_placement(tmp_path):
    import importlib.util
    import math

    from drclib.paths import repo_root

    spec = importlib.util.spec_from_file_location("lmm_seeds", repo_root() / "benchmarks" / "lmm_seeds.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def fake(both: float) -> dict:
        cells = {"emoji_top1": 1.0, "both": both, "style_acc": both, "n_cells": 300}
        return {"train_minutes": 1.0, "train_cells": dict(cells), "heldout_cells": dict(cells, n_cells=64)}

    s = mod.spread({"a": fake(0.8), "b": fake(0.9)})["train_cells.both"]
    assert s["values"] == [0.8, 0.9] and math.isclose(s["mean"], 0.85)
    assert (s["min"], s["min_run"], s["max"], s["max_run"]) == (0.8, "a", 0.9, "b")
    assert math.isclose(s["sd"], math.sqrt(0.005))                      # n - 1 in the denominator
    assert math.isclose(s["binomial_se"], math.sqrt(0.85 * 0.15 / 300))
    assert mod.spread({"a": fake(0.8), "b": fake(0.8)})["train_cells.emoji_top1"]["sd"] == 0.0
    (tmp_path / "card_x.json").write_text(json.dumps(
        {"by_part": {"pocket LMM": {"train_cells.both": {"shipped": 0.9, "retrained": 0.85 - 2 * math.sqrt(0.005)}}}}))
    (tmp_path / "card_y.json").write_text(json.dumps({"by_part": {"semantic encoder": {}}}))   # no LMM: skipped
    placed = mod.retrains(tmp_path, mod.spread({"a": fake(0.8), "b": fake(0.9)}))
    assert list(placed) == ["card_x"] and math.isclose(placed["card_x"]["train_cells.both"]["z"], -2.0)
    with pytest.raises(SystemExit, match="no trained LMM"):
        mod.main(["--seeds", "7", "--root", str(tmp_path), "--with", f"x={tmp_path / 'none'}"])


def test_replicates_compares_runs_of_one_command(tmp_path):
    import importlib.util
    import math

    from drclib.paths import repo_root

    spec = importlib.util.spec_from_file_location("replicates", repo_root() / "benchmarks" / "replicates.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def entry(part, shipped, retrained, n=100, se=True):
        var = shipped * (1 - shipped) + retrained * (1 - retrained)
        return {"part": part, "key": f"{part}.both", "what": "both", "shipped": shipped, "retrained": retrained,
                "diff": retrained - shipped, "se_diff": math.sqrt(var / n) if se else None}

    assert math.isclose(mod.n_cells(entry("a", 0.5, 0.4, n=64)), 64)
    psnr = dict(entry("a", 0.5, 0.5), shipped=24.3, retrained=24.1, se_diff=0.23)
    assert mod.n_cells(psnr) is None                                  # not a rate (PSNR): no binomial SE
    a = {"run_command": "make all", "compared": [entry("lmm", 0.8, 0.8), entry("drc", 0.5, 0.5), entry("x", 0.5, 0.5, se=False)]}
    b = {"run_command": "make all", "compared": [entry("lmm", 0.8, 0.7), entry("drc", 0.5, 0.5)]}
    got = mod.compare({"a": a, "b": b})
    assert [r["part"] for r in got["rows"]] == ["lmm", "drc"]        # "x" has no SE, and b lacks it
    z = got["rows"][0]["pairs"]["a - b"]["z"]
    assert math.isclose(z, 0.1 / math.sqrt((0.16 + 0.21) / 100))
    assert got["summary"]["between_runs"] == {"n": 2, "within_2se": 1 + (abs(z) <= 2), "rms_z": math.sqrt(z * z / 2)}
    for name, run in (("a", a), ("b", dict(b, run_command="make all RECIPE=lab"))):
        (tmp_path / f"{name}.json").write_text(json.dumps(run))
    with pytest.raises(SystemExit, match="not replicates"):
        mod.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(tmp_path / "o.json")])
    with pytest.raises(SystemExit, match="no such file"):
        mod.main([str(tmp_path / "a.json"), str(tmp_path / "nothing.json")])


def test_encoder_style_weight_reads_cards_and_style_probes(tmp_path, monkeypatch):
    """benchmarks/encoder_style_weight.py: each encoder's card probes and its style probe on all
    held-out cells, with binomial SEs, in one row; bad arguments and missing encoders say so."""
    import importlib.util
    import math

    from drclib.paths import repo_root

    spec = importlib.util.spec_from_file_location("esw", repo_root() / "benchmarks" / "encoder_style_weight.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "caption_match", lambda folder: {"caption_emoji_all": 0.2, "caption_emoji_all_se": 0.015})
    folder = tmp_path / "enc"
    folder.mkdir()
    core = {"n_heldout": 64, "real_tokens_emoji": 0.75, "real_tokens_style": 0.5,
            "reconstructed_tokens_emoji": 0.7, "reconstructed_tokens_style": 0.4}
    (folder / "config.json").write_text(json.dumps({"extra": {
        "command": "python -m drclib.backbone.encoder --style-weight 3", "config": {"dim": 128},
        "train": {"style_weight": 3.0, "steps": 3000}, "train_minutes": 20.0, "probes": {"core": core}}}))

    def probe_row(features, trained_on, acc):
        return {"features": features, "probe trained on": trained_on, "view": "real", "heldout_all": acc,
                "heldout_all_se": math.sqrt(acc * (1 - acc) / 685), "n_heldout_all": 685}

    probe = {"rows": [probe_row(mod.ROW, "all", 0.9), probe_row(mod.ROW, "set", 0.8), probe_row(mod.MEAN, "set", 0.85),
                      probe_row(mod.EMB, "set", 0.7), dict(probe_row(mod.ROW, "set", 0.1), view="round trip")]}
    (tmp_path / "probe.json").write_text(json.dumps(probe))
    out = tmp_path / "o.json"
    assert mod.main(["sw 3=" + str(folder), "--style-probe", f"sw 3={tmp_path / 'probe.json'}", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    r = got["rows"][0]
    assert (r["name"], r["style_weight"], r["emoji"], r["style"], r["style_all"], r["style_all_mean_token"]) == \
        ("sw 3", 3.0, 0.75, 0.5, 0.8, 0.85)                            # the probe fitted on the set, real stickers
    assert math.isclose(r["style_se"], math.sqrt(0.25 / 64)) and "| sw 3 | 0.750 ± 0.054 | 0.500 ± 0.062 |" in got["table"]
    assert "| 0.800 ± 0.015 | 0.850 ± 0.014 | 0.700 ± 0.018 | 0.900 ± 0.011 | 0.200 ± 0.015 | 0.700 / 0.400 |" \
        in got["table"]
    # --keep: an earlier run's rows stay (their folders may be gone), a row given again is replaced in place;
    # a row kept from before a column existed shows it as not measured
    older = dict(got, rows=[{k: v for k, v in got["rows"][0].items() if not k.startswith("style_all_embedding")}])
    out.write_text(json.dumps(older))
    (tmp_path / "probe2.json").write_text(json.dumps(probe))
    assert mod.main(["--keep", "other=" + str(folder), "--style-probe", f"other={tmp_path / 'probe2.json'}",
                     "--out", str(out)]) == 0
    kept = json.loads(out.read_text())
    assert [r["name"] for r in kept["rows"]] == ["sw 3", "other"] and kept["earlier_commands"] == [got["command"]]
    assert "| 0.800 ± 0.015 | 0.850 ± 0.014 | not measured | 0.900 ± 0.011 |" in kept["table"]
    assert mod.main(["--keep", "sw 3=" + str(folder), "--style-probe", f"sw 3={tmp_path / 'probe.json'}",
                     "--out", str(out)]) == 0
    again = json.loads(out.read_text())
    assert [r["name"] for r in again["rows"]] == ["sw 3", "other"] and len(again["earlier_commands"]) == 2
    with pytest.raises(SystemExit, match="NAME=PATH"):
        mod.main(["no-equals-sign"])
    with pytest.raises(SystemExit, match="holds no encoder"):
        mod.main([f"x={tmp_path / 'nothing'}", "--out", str(out)])


def test_encoder_caption_match_on_the_shipped_encoder():
    """The caption-head emoji figure of benchmarks/encoder_style_weight.py, on the shipped encoder:
    a 1,370-way rate over the 685 held-out cells, far above chance (1/1,370)."""
    import importlib.util

    from drclib.paths import repo_root

    spec = importlib.util.spec_from_file_location("esw", repo_root() / "benchmarks" / "encoder_style_weight.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    got = mod.caption_match(repo_root() / "data" / "checkpoints" / "encoder")
    assert 0.05 < got["caption_emoji_all"] <= 1.0 and 0 < got["caption_emoji_all_se"] < 0.02


def test_lmm_recipes_keeps_rows_whose_folders_are_gone(tmp_path):
    """benchmarks/lmm_recipes.py: the plain LMM (the kit's before the composing one) is the first row, read from its card; with
    --keep a recipe whose folder is gone keeps its earlier row, without it the row is left out."""
    import importlib.util

    from drclib.paths import repo_root

    spec = importlib.util.spec_from_file_location("lmm_recipes", repo_root() / "benchmarks" / "lmm_recipes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cells = {"style_acc": 0.5, "emoji_top1": 0.75, "both": 0.25, "n_cells": 64}
    earlier = {"folder": "gone", "command": "python -m drclib.train backbone --factor-dropout 0.3", "train_minutes": 21.8,
               "final_t2i_loss": 0.24, "machine": "m", "train_cells": cells, "heldout_cells": cells}
    out = tmp_path / "r.json"
    out.write_text(json.dumps({"command": "x", "rows": {"+ --factor-dropout 0.3": earlier}}))
    assert mod.main(["--root", str(tmp_path / "none"), "--keep", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert set(got["rows"]) == {"plain recipe", "+ --factor-dropout 0.3"}           # (the JSON sorts its keys)
    assert got["table"].index("| plain recipe |") < got["table"].index("| + --factor-dropout 0.3 |")
    assert got["rows"]["plain recipe"]["command"].startswith("python -m drclib.train backbone")
    # calibration: the asked sticker itself beats its emoji drawn in another style on style and "both";
    # the other-style row always shows the asked emoji, so its emoji rate is the emoji judge's own
    copy, other = (got["calibration"][k] for k in mod.CALIBRATION)
    for split in ("train_cells", "heldout_cells"):
        assert copy[split]["both"] > other[split]["both"] + 0.3 and copy[split]["style_acc"] > other[split]["style_acc"]
        assert other[split]["emoji_top1"] > 0.8 and other[split]["style_acc"] < 0.25
    assert "| calibration: the asked sticker itself" in got["table"].split("| plain recipe |")[0]
    assert "| + --factor-dropout 0.3 | 21.8 | 0.24 | 0.750 ± 0.054 | 0.250 ± 0.054 | 0.500 ± 0.062 |" in got["table"]
    assert mod.main(["--root", str(tmp_path / "none"), "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())["rows"]) == {"plain recipe"}


def test_lmm_recipes_seed_groups_average_a_recipes_seeds():
    """benchmarks/lmm_recipes.py: a recipe trained with several seeds is summarised by the mean
    and spread over its seeds; a group with fewer than two trained seeds is left out."""
    import importlib.util

    from drclib.paths import repo_root

    spec = importlib.util.spec_from_file_location("lmm_recipes", repo_root() / "benchmarks" / "lmm_recipes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    group, members = next((g, m) for g, m in mod.SEED_GROUPS.items() if len(m) == 3)

    def fake(both):
        cells = {"style_acc": 0.5, "emoji_top1": 0.75, "both": both, "n_cells": 64}
        return {"train_cells": cells, "heldout_cells": cells}

    rows = {f"row {m}": fake(b) for m, b in zip(members, (0.25, 0.5, 0.75))}
    names = {m: f"row {m}" for m in members}
    got = mod.seed_groups(rows, names)[group]["heldout_cells.both"]
    assert got["n_runs"] == 3 and got["mean"] == pytest.approx(0.5) and got["sd"] == pytest.approx(0.25)
    assert (got["min"], got["max"]) == (0.25, 0.75) and got["max_run"] == f"row {members[2]}"
    assert group not in mod.seed_groups(rows, {members[0]: f"row {members[0]}"})


def test_style_guidance_keeps_rows_of_lmms_whose_folders_are_gone(tmp_path):
    """benchmarks/style_guidance.py: an LMM whose folder is gone keeps its earlier rows with
    --keep (and is left out without it); the table gives every rate with its standard error."""
    import importlib.util

    from drclib.paths import repo_root

    spec = importlib.util.spec_from_file_location("style_guidance", repo_root() / "benchmarks" / "style_guidance.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cells = {"style_acc": 0.5, "emoji_top1": 0.75, "both": 0.25, "n_cells": 64}
    earlier = {"lmm": "gone", "folder": "nowhere", "guidance_scale": 1.0, "train_cells": cells, "heldout_cells": cells}
    out = tmp_path / "g.json"
    out.write_text(json.dumps({"command": "x", "rows": {"gone, w=1": earlier}}))
    args = ["--lmm", f"gone={tmp_path / 'none'}", "--out", str(out), "--threads", str(torch.get_num_threads())]
    assert mod.main(args + ["--keep"]) == 0
    got = json.loads(out.read_text())
    assert set(got["rows"]) == {"gone, w=1"}
    assert "| gone | 1 | 0.500 ± 0.062 | 0.750 ± 0.054 | 0.250 ± 0.054 |" in got["table"]
    assert mod.main(args) == 0 and json.loads(out.read_text())["rows"] == {}
    with pytest.raises(SystemExit, match="scales"):
        mod.main(args + ["--scales", "-1"])


def test_heldout_styles_counts_confusions_and_copied_codes():
    """benchmarks/heldout_styles.py: the confusion matrix counts (asked, judged) pairs; a drawing
    equal to the emoji's sticker in another style is a full copy of it and shares with the asked
    sticker only the codes the two styles have in common."""
    import importlib.util

    from drclib.paths import repo_root

    spec = importlib.util.spec_from_file_location("heldout_styles", repo_root() / "benchmarks" / "heldout_styles.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.confusion(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3) == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    codes = torch.zeros(3, 2, 4, dtype=torch.long)        # [style, emoji, code position]
    codes[1] = 1
    codes[2, :, :2] = 1                                    # style 2 shares half its codes with style 1
    cells = np.array([[1, 0], [1, 1]])                     # asked: style 1, emoji 0 and 1
    drawn = codes[2, [0, 1]]                               # drawn in style 2 instead
    got = mod.copy_shares(drawn, codes, cells)
    assert got == {"asked_sticker": 0.5, "closest_other_style": 1.0}


def test_alpha_m_curve_table_and_bad_alphas():
    """benchmarks/alpha_m_curve.py: the table puts `sample` first, names stage 1's row as having
    no mask, shows each rate with its standard error; alpha_m outside [0, 1] exits clearly."""
    import importlib.util

    from drclib.paths import repo_root

    spec = importlib.util.spec_from_file_location("alpha_m_curve", repo_root() / "benchmarks" / "alpha_m_curve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rate = {"style_acc": 0.5, "emoji_top1": 0.75, "both": 0.25, "collapse_reference": 0.0, "collapse_history": 0.0}
    rows = [{"pipeline": "drc", "split": "heldout", "alpha_m": 0.5, "n": 64, **rate},
            {"pipeline": "stage1_drc", "split": "sample", "alpha_m": None, "n": 300, **rate}]
    lines = mod.table(rows).splitlines()
    assert lines[2] == ("| sample | stage 1 only | n/a (no mask) | 0.500 ± 0.029 | 0.750 ± 0.025 | "
                        "0.250 ± 0.025 | 0.000 ± 0.000 |")
    assert lines[3].startswith("| heldout | DRC (stage 2) | 0.50 | 0.500 ± 0.062 |")
    with pytest.raises(SystemExit, match=r"\[0, 1\]"):
        mod.main(["--alphas", "1.5", "--out", "unused.json"])


def test_stage2_seeds_pairs_seeds_and_refuses_mixed_stage1(tmp_path):
    """benchmarks/stage2_seeds.py: cards grouped by recipe (augment) and seed, the mean ± SD over
    seeds, DRC - w/o Aug paired by seed with its standard error; cards from two stage-1 models or of
    two lengths, or two cards of one recipe and seed, exit with a message that says so."""
    import importlib.util
    import json

    from drclib.paths import repo_root

    spec = importlib.util.spec_from_file_location("stage2_seeds", repo_root() / "benchmarks" / "stage2_seeds.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def card(name, augment, seed, both, stage1="s1", steps=200):
        r = {"style_acc": 0.8, "emoji_top1": 0.9, "both": both, "collapse_reference": 0.05, "n": 100}
        ev = {split: {"drc": dict(r), "stage1_only": dict(r, both=0.7)} for split in ("heldout", "sample")}
        extra = {"stage2": {"augment": augment, "seed": seed, "steps": steps}, "stage1": stage1,
                 "train_minutes": 3.0, "evaluation": ev}
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"extra": extra}))
        return str(tmp_path / name)

    folders = [card("d0", True, 0, 0.6), card("w0", False, 0, 0.5), card("d1", True, 1, 0.7), card("w1", False, 1, 0.5)]
    out = tmp_path / "out.json"
    assert mod.main(folders + ["--out", str(out)]) == 0
    got = json.loads(out.read_text())
    s = got["splits"]["sample"]
    assert got["table"].splitlines()[2].startswith("| sample | DRC (stage 2) | 0 |")   # sample first
    assert abs(s["methods"]["DRC (stage 2)"]["mean"]["both"]["mean"] - 0.65) < 1e-9
    assert abs(s["methods"]["DRC (stage 2)"]["mean"]["both"]["sd"] - 0.0707107) < 1e-6
    assert s["methods"]["w/o Aug"]["mean"]["both"]["sd"] == 0
    d = s["difference"]
    assert [round(v["value"], 3) for v in d["seeds"].values()] == [0.1, 0.2] and d["positive"] == 2
    assert abs(d["mean"] - 0.15) < 1e-9 and abs(d["se_over_seeds"] - 0.05) < 1e-9
    assert "| sample | DRC - w/o Aug, \"both\" | 0, 1 | | | +0.100 ± 0.070, +0.200 ± 0.068; mean +0.150 ± 0.050 | |" \
        in got["table"].splitlines()
    with pytest.raises(SystemExit, match="different stage-1"):
        mod.main([card("d2", True, 2, 0.6, stage1="other"), folders[0], "--out", str(out)])
    with pytest.raises(SystemExit, match="different numbers of steps"):
        mod.main([card("d3", True, 3, 0.6, steps=400), folders[0], "--out", str(out)])
    with pytest.raises(SystemExit, match="two cards of DRC"):
        mod.main([folders[0], card("d0_again", True, 0, 0.6), "--out", str(out)])


def test_heldout_fix_counts_the_old_rules_leak(tmp_path):
    """benchmarks/heldout_fix.py: the dataset rebuilt with the old rule (the set's own grid) holds
    out few of the world's cells and trains on the rest, the fixed one holds out exactly the
    world's; make_dataset is left with the fixed rule; a malformed --pilot exits with a message."""
    import importlib.util

    import drclib.data.users as users
    from drclib.data.splits import heldout_cells
    from drclib.paths import repo_root

    spec = importlib.util.spec_from_file_location("heldout_fix", repo_root() / "benchmarks" / "heldout_fix.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = mod.leak("quick")
    assert r["concepts"] == "mini" and r["world_cells"] == r["old_split_cells"] == 16
    assert r["old_split_cells_held_out"] < r["world_cells"] and r["old_train_targets_on_world_cells"] > 0
    assert r["fixed_split_equals_world"] and users.heldout_cells is heldout_cells
    with pytest.raises(SystemExit, match="NAME=LMM_FOLDER:STAGE1_FOLDER"):
        mod.main(["--pilot", "no-colon=folder", "--out", str(tmp_path / "x.json")])


def test_composing_lmm_reads_the_cards_it_compares(tmp_path):
    """benchmarks/composing_lmm.py: the plain row carries the plain LMM's card figures, its stage 1's
    swap test and the plain kit's section-5 stage1_drc and Pigeon entries; the shipped JSON's seed-0
    candidate is the shipped LMM (its card's figures); a missing card and a malformed --candidate exit
    with a message that says what to do."""
    import importlib.util

    from drclib.backbone import default_checkpoint_dir
    from drclib.io import read_json
    from drclib.paths import repo_root
    from drclib.pipeline import plain_lmm_dir

    spec = importlib.util.spec_from_file_location("composing_lmm", repo_root() / "benchmarks" / "composing_lmm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = mod.plain_row()
    card = read_json(plain_lmm_dir() / "lmm" / "config.json")["extra"]["evaluation"]
    for cells in ("train_cells", "heldout_cells"):
        assert r["lmm"][cells]["both"] == pytest.approx(card[cells]["both"])
        assert r["lmm"][cells]["n"] == card[cells]["n_cells"]
    assert r["lmm"]["commands"][-1].startswith("python -m drclib.train backbone")
    assert set(r["splits"]) == set(r["pigeon"]) == {"sample", "heldout"}
    assert 0 <= r["stage1"]["swap"]["heldout"]["both"] <= 1 and r["splits"]["heldout"]["n"] > 0
    shipped = read_json(repo_root() / "data" / "results" / "composing_lmm.json")
    assert shipped["plain"] == r                                        # the JSON's row is this code's
    seed0 = shipped["candidates"][shipped["shown"]]["lmm"]
    shipped_card = read_json(default_checkpoint_dir() / "config.json")["extra"]["evaluation"]
    assert seed0["folder"] == "data/checkpoints/lmm"
    assert seed0["heldout_cells"]["both"] == pytest.approx(shipped_card["heldout_cells"]["both"])
    with pytest.raises(SystemExit, match="no LMM card"):
        mod.lmm_row(tmp_path / "nothing")
    with pytest.raises(SystemExit, match="NAME=LMM_FOLDER:STAGE1_FOLDER"):
        mod.main(["--candidate", "no-colon=folder", "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()


def test_plain_lmm_pipeline_generates_and_says_when_absent(tmp_path, monkeypatch):
    """drclib.pipeline.load_plain_lmm: DRC's stage 1 on the plain LMM runs like the shipped
    pipeline (one 32 x 32 image per reference); without the folder it says how to get it."""
    from drclib.checkpoint import CHECKPOINTS_ENV, CheckpointError
    from drclib.data import StickerSet
    from drclib.pipeline import load_plain_lmm

    pipe = load_plain_lmm()
    stickers = StickerSet.for_profile("quick")
    hist = [stickers.image(2, e) for e in range(4)]
    out = pipe(hist, stickers.image(4, 5), seed=0)
    assert len(out) == 1 and out[0].size == (32, 32)
    monkeypatch.setenv(CHECKPOINTS_ENV, str(tmp_path))
    with pytest.raises(CheckpointError, match="no plain LMM"):
        load_plain_lmm()


def test_style_judge_sets_reads_other_judges_and_tokenizers(tmp_path):
    """benchmarks/style_judge_sets.py: the shipped judge on `mini`'s held-out cells reproduces the
    recorded figures; another judge and another tokenizer are scored on the same cells, each
    tokenizer's round trips by every judge, and each tokenizer's codes by the linear style probes
    (the shipped one's as recorded); a malformed NAME=FOLDER is refused."""
    import importlib.util

    from drclib.backbone.tokenizer import TokenizerConfig, VisualTokenizer
    from drclib.judges import StickerClassifier, StickerClassifierConfig
    from drclib.paths import repo_root

    spec = importlib.util.spec_from_file_location("style_judge_sets", repo_root() / "benchmarks" / "style_judge_sets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    StickerClassifier(StickerClassifierConfig(num_classes=6, target="style", widths=(8,))).save_pretrained(tmp_path / "j")
    VisualTokenizer(TokenizerConfig(codebook_size=32, block_out_channels=(8, 16, 16), latent_channels=8, vq_embed_dim=8,
                                    norm_num_groups=8)).save_pretrained(tmp_path / "t")
    out = tmp_path / "s.json"
    assert mod.main(["--concepts", "mini", "--threads", str(torch.get_num_threads()), "--out", str(out),
                     "--judge", f"untrained={tmp_path / 'j'}", "--tokenizer", f"untrained={tmp_path / 't'}"]) == 0
    got, recorded = json.loads(out.read_text()), json.loads((repo_root() / "data/results/style_judge_sets.json").read_text())
    for view in ("real", "round trip"):
        assert got["sets"]["mini"][view]["style_acc"] == pytest.approx(recorded["sets"]["mini"][view]["style_acc"])
    assert got["alternatives"]["untrained"]["sets"]["mini"]["real"]["n"] == got["sets"]["mini"]["n"]
    assert set(got["tokenizers"]) == {"shipped", "untrained"} and got["tokenizers"]["untrained"]["codebook_size"] == 32
    assert set(got["tokenizers"]["untrained"]["judges"]) == {"shipped judge", "untrained"}
    for view, e in recorded["tokenizers"]["shipped"]["codes_probe"].items():   # the shipped codes, probed again
        assert got["tokenizers"]["shipped"]["codes_probe"][view]["style_acc"] == pytest.approx(e["style_acc"], abs=0.01)
    probe = got["tokenizers"]["untrained"]["codes_probe"]
    assert set(probe) == {"bag of codes", "mean code vector"} and probe["bag of codes"]["n"] == 685
    with pytest.raises(SystemExit, match="NAME=PATH"):
        mod.main(["--judge", "no-folder", "--out", str(out)])
