"""One command for the whole kit: ``python -m drclib.reproduce --profile full`` (``make all``).

In order: check the data; make sure every trained part exists (tokenizer, evaluators, tiny
CLIP, pocket LMM, the four stage-1 variants, the two stage-2 pipelines, the two trained
baselines), training the ones that are missing; evaluate everything on both splits; write the
report (the full profile's is copied to ``data/results/evaluation_full/``, which notebook 07
and RESULTS.md show); run every notebook. Each step prints its progress and wall time, and the total is
printed at the end and written to ``runs/<profile>/reproduce.json``.

- **Reuse**: a part whose checkpoint folder is complete is not retrained (the shipped ones
  are, so a fresh clone only evaluates and runs the notebooks). Delete a folder under
  ``data/checkpoints/`` to retrain it with the recipe recorded here (the same commands as the
  cards). Parts trained on top of a retrained one (everything after the LMM, say) check the
  fingerprint of what they were trained with and refuse to load against new weights: delete
  them too, and they are retrained in order.
- **Resume**: every training command keeps its state under ``runs/<profile>/state/`` and
  continues from there if interrupted; the evaluation keeps finished (split, method)
  entries; so running the command again picks up where it stopped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from drclib.data.stickers import repo_root


@dataclass
class Step:
    """One training command: skipped when ``output`` already holds a checkpoint."""

    name: str
    output: str
    args: list
    part_of: str | None = None
    """For an intermediate part of a chain of runs: the chain's final output; the part is not
    needed once that exists."""

    def done(self, root: Path) -> bool:
        """Whether the step has nothing to do: its output, or its chain's final output, exists."""
        return any((root / out / "config.json").is_file() or (root / out / "pipeline.json").is_file()
                   for out in (self.output, self.part_of) if out)


def training_steps(state: str) -> list[Step]:
    """Every trained part of the kit with the recipe its card records (paths relative to the
    repository; ``state`` is the folder for resumable training state)."""
    t = [sys.executable, "-m", "drclib.train"]
    steps = [
        Step("visual tokenizer", "data/checkpoints/tokenizer",
             [sys.executable, "-m", "drclib.backbone.tokenizer", "--epochs", "24", "--out", "data/checkpoints/tokenizer"]),
        Step("style classifier", "data/checkpoints/style_classifier",
             [sys.executable, "-m", "drclib.judges", "train", "--target", "style", "--epochs", "32",
              "--with-reconstructions", "--out", "data/checkpoints/style_classifier", "--quiet"]),
        Step("emoji classifier", "data/checkpoints/emoji_classifier",
             [sys.executable, "-m", "drclib.judges", "train", "--target", "emoji", "--epochs", "28",
              "--out", "data/checkpoints/emoji_classifier", "--quiet"]),
        Step("tiny CLIP", "data/checkpoints/tinyclip",
             [sys.executable, "-m", "drclib.backbone.tinyclip", "--epochs", "15", "--out", "data/checkpoints/tinyclip"]),
        Step("semantic encoder", "data/checkpoints/encoder",
             [sys.executable, "-m", "drclib.backbone.encoder", "--steps", "3000", "--out", "data/checkpoints/encoder"]),
        Step("pocket LMM", "data/checkpoints/lmm",
             t + ["backbone", "--concepts", "core", "--state-dir", f"{state}/lmm", "--out", "data/checkpoints/lmm"]),
    ]
    for v in ("drc", "uniform", "concat", "mlp"):
        steps.append(Step(f"stage 1, {v}", f"data/checkpoints/stage1/{v}",
                          t + ["stage1", "--variant", v, "--state-dir", f"{state}/stage1_{v}"]))
    steps += [
        Step("stage 2, DRC", "data/checkpoints/drc", t + ["stage2", "--state-dir", f"{state}/stage2_drc"]),
        Step("stage 2, w/o Aug", "data/checkpoints/drc_no_aug",
             t + ["stage2", "--no-augment", "--state-dir", f"{state}/stage2_no_aug"]),
        Step("baseline, Pigeon", "data/checkpoints/pigeon",
             t + ["baseline", "--method", "pigeon", "--state-dir", f"{state}/pigeon"]),
        Step("baseline, LMM-SFT", "data/checkpoints/lmm_sft",
             t + ["baseline", "--method", "lmm_sft", "--state-dir", f"{state}/lmm_sft"]),
    ]
    return steps


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def reproduce(profile: str = "full", *, notebooks: bool = True, evaluate: bool = True, train: bool = True,
              device: str = "auto", seed: int = 0) -> dict:
    """Run the whole kit (see the module docstring); returns ``{step: seconds}`` and the total."""
    from drclib import evaluation
    from drclib.data import StickerSet
    from drclib.notebooks import find_notebooks, run_all

    root = repo_root()
    runs = root / "runs" / profile
    runs.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    status: dict[str, str] = {}
    start = time.perf_counter()
    steps = training_steps(f"runs/{profile}/state") if train else []
    n_total = 1 + len(steps) + int(evaluate) + int(notebooks)
    i = 0

    def head(name: str) -> None:
        nonlocal i
        i += 1
        print(f"[{i}/{n_total}] {name} ({_clock(time.perf_counter() - start)} so far)", flush=True)

    head("data check")
    t0 = time.perf_counter()
    stickers = StickerSet.load(verify=True)
    times["data"] = time.perf_counter() - t0
    print(f"      {stickers!r}: checksums verified", flush=True)
    for step in steps:
        head(step.name)
        if step.done(root):
            status[step.name] = "reused"
            print(f"      reused {step.output}", flush=True)
            continue
        t0 = time.perf_counter()
        print("      $ " + " ".join(Path(a).name if a == sys.executable else a for a in step.args), flush=True)
        subprocess.run(step.args, cwd=root, check=True)
        times[step.name] = time.perf_counter() - t0
        status[step.name] = "trained"
        print(f"      trained in {_clock(times[step.name])}", flush=True)
    if evaluate:
        head("evaluation (every method, both splits)")
        t0 = time.perf_counter()
        out_dir = runs / "07_evaluation"
        results = evaluation.run(profile, out_dir=out_dir, device="cpu" if device == "auto" else device, seed=seed)
        times["evaluation"] = time.perf_counter() - t0
        problems = evaluation.check_invariants(results)
        print(f"      report: {out_dir / 'report.md'}; invariants: " + ("all hold" if not problems else
                                                                        "; ".join(problems)), flush=True)
        if profile == "full" and not problems and not results.get("missing"):
            print(f"      published to {evaluation.publish(out_dir)}", flush=True)
    if notebooks:
        head(f"notebooks ({len(find_notebooks())})")
        t0 = time.perf_counter()
        run_all(runs, profile=profile, seed=seed, device=device)
        times["notebooks"] = time.perf_counter() - t0
    total = time.perf_counter() - start
    record = {"profile": profile, "seconds": {k: round(v, 1) for k, v in times.items()}, "status": status,
              "total_seconds": round(total, 1)}
    (runs / "reproduce.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"done: the whole kit ran in {_clock(total)} (profile {profile}); times in {runs / 'reproduce.json'}",
          flush=True)
    return record


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m drclib.reproduce",
                                description="Regenerate every result of the kit: data check, training of any part "
                                "that is missing (resumable), evaluation of every method on both splits, report, "
                                "notebooks. Prints the total wall time.")
    p.add_argument("--profile", choices=["quick", "full"], default="full")
    p.add_argument("--no-notebooks", action="store_true", help="stop after the evaluation")
    p.add_argument("--no-evaluation", action="store_true", help="skip the evaluation step")
    p.add_argument("--no-training", action="store_true", help="never train (fail if a part is missing)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    reproduce(args.profile, notebooks=not args.no_notebooks, evaluate=not args.no_evaluation,
              train=not args.no_training, device=args.device, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
