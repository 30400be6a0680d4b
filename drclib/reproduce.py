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
- **From scratch** (``--from-scratch``, ``make all PROFILE=full FROM_SCRATCH=1``): every part is
  retrained in order into ``runs/<profile>/checkpoints/`` (``$DRC_CHECKPOINTS`` points every
  default folder there, for the training commands, the evaluation and the notebooks alike), so
  the shipped weights in ``data/checkpoints/`` are never overwritten and the shipped results in
  ``data/results/`` are not replaced.
- **Resume**: every training command keeps its state under ``runs/<profile>/state/`` and
  continues from there if interrupted; the evaluation keeps finished (split, method)
  entries; so running the command again picks up where it stopped.
- **Progress**: before each part, one line with the part, a bar over the whole run and an
  estimate of the time left (:data:`EXPECTED_MINUTES`, the cards' times on the 2-core machine,
  scaled by how fast this run has been so far); the training commands print their own bars
  with steps/s (and tokens/s for the LMM) and their time left. At the end, a table of the time
  of every part and the total (also in ``runs/<profile>/reproduce.json``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from drclib.checkpoint import CHECKPOINTS_ENV
from drclib.paths import repo_root

SHIPPED = "data/checkpoints"


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


def training_steps(state: str, checkpoints: str = SHIPPED) -> list[Step]:
    """Every trained part of the kit with the recipe its card records (paths relative to the
    repository; ``state`` is the folder for resumable training state, ``checkpoints`` the one
    the parts are written to and read from)."""
    t = [sys.executable, "-m", "drclib.train"]
    c = checkpoints.rstrip("/")
    steps = [
        Step("visual tokenizer", f"{c}/tokenizer",
             [sys.executable, "-m", "drclib.backbone.tokenizer", "--epochs", "24", "--out", f"{c}/tokenizer"]),
        Step("style classifier", f"{c}/style_classifier",
             [sys.executable, "-m", "drclib.judges", "train", "--target", "style", "--epochs", "32",
              "--with-reconstructions", "--out", f"{c}/style_classifier", "--quiet"]),
        Step("emoji classifier", f"{c}/emoji_classifier",
             [sys.executable, "-m", "drclib.judges", "train", "--target", "emoji", "--epochs", "28",
              "--out", f"{c}/emoji_classifier", "--quiet"]),
        Step("tiny CLIP", f"{c}/tinyclip",
             [sys.executable, "-m", "drclib.backbone.tinyclip", "--epochs", "15", "--out", f"{c}/tinyclip"]),
        Step("semantic encoder", f"{c}/encoder",
             [sys.executable, "-m", "drclib.backbone.encoder", "--steps", "3000", "--out", f"{c}/encoder"]),
        Step("pocket LMM", f"{c}/lmm",
             t + ["backbone", "--concepts", "core", "--state-dir", f"{state}/lmm", "--out", f"{c}/lmm"]),
    ]
    for v in ("drc", "uniform", "concat", "mlp"):
        steps.append(Step(f"stage 1, {v}", f"{c}/stage1/{v}",
                          t + ["stage1", "--variant", v, "--state-dir", f"{state}/stage1_{v}", "--out", f"{c}/stage1/{v}"]))
    steps += [
        Step("stage 2, DRC", f"{c}/drc", t + ["stage2", "--state-dir", f"{state}/stage2_drc", "--out", f"{c}/drc"]),
        Step("stage 2, w/o Aug", f"{c}/drc_no_aug",
             t + ["stage2", "--no-augment", "--state-dir", f"{state}/stage2_no_aug", "--out", f"{c}/drc_no_aug"]),
        Step("baseline, Pigeon", f"{c}/pigeon",
             t + ["baseline", "--method", "pigeon", "--state-dir", f"{state}/pigeon", "--out", f"{c}/pigeon"]),
        Step("baseline, LMM-SFT", f"{c}/lmm_sft",
             t + ["baseline", "--method", "lmm_sft", "--state-dir", f"{state}/lmm_sft", "--out", f"{c}/lmm_sft"]),
    ]
    return steps


EXPECTED_MINUTES = {
    "data check": 0.1, "visual tokenizer": 59.4, "style classifier": 15.8, "emoji classifier": 13.6,
    "tiny CLIP": 12.7, "semantic encoder": 27.2, "pocket LMM": 18.2, "stage 1, drc": 10.9,
    "stage 1, uniform": 12.8, "stage 1, concat": 13.8, "stage 1, mlp": 9.8, "stage 2, DRC": 4.6,
    "stage 2, w/o Aug": 4.5, "baseline, Pigeon": 30.7, "baseline, LMM-SFT": 25.2,
    "evaluation": 6.5, "notebooks": 12.0}
"""Minutes each part took on the 2-core, float32-only machine of the shipped cards (their
"time" lines; the evaluation and notebooks from README's timing table): the progress line's
estimate of the time left, scaled by how this run compares so far."""


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """The overall progress of ``make all``: which part runs, a bar over the whole run (weighted
    by :data:`EXPECTED_MINUTES`) and an estimate of the time left."""

    def __init__(self, parts: list[str], width: int = 24):
        self.parts, self.width = parts, width
        self.start = time.perf_counter()
        self.done: dict[str, float] = {}       # part -> seconds it took (0 when reused)
        self.expected_done = 0.0               # expected seconds of the parts that ran

    def _expected(self, part: str) -> float:
        return 60.0 * EXPECTED_MINUTES.get(part, 1.0)

    def line(self, part: str) -> str:
        """``[i/n] |####....| 37% part  elapsed 0:41:02, about 1:10:00 left``."""
        i = len(self.done) + 1
        total = sum(self._expected(p) for p in self.parts)
        remaining = sum(self._expected(p) for p in self.parts if p not in self.done)
        spent = sum(self.done.values())
        pace = spent / self.expected_done if self.expected_done > 0 else 1.0
        frac = 1.0 - remaining / total if total else 0.0
        bar = "#" * int(round(frac * self.width))
        return (f"[{i}/{len(self.parts)}] |{bar:<{self.width}}| {100 * frac:3.0f}% {part}  "
                f"elapsed {_clock(time.perf_counter() - self.start)}, about {_clock(remaining * pace)} left")

    def finish(self, part: str, seconds: float, ran: bool = True) -> None:
        self.done[part] = seconds if ran else 0.0
        if ran:
            self.expected_done += self._expected(part)


def time_table(record: dict) -> str:
    """The per-part time table of a run (markdown), with the expected minutes beside."""
    rows = ["| part | status | minutes | expected (cards) |", "|---|---|---|---|"]
    for part, sec in record["seconds"].items():
        rows.append(f"| {part} | {record['status'].get(part, 'ran')} | {sec / 60:.1f} | "
                    f"{EXPECTED_MINUTES.get(part, float('nan')):.1f} |")
    rows.append(f"| **total** | | **{record['total_seconds'] / 60:.1f}** | |")
    return "\n".join(rows)


def reproduce(profile: str = "full", *, notebooks: bool = True, evaluate: bool = True, train: bool = True,
              device: str = "auto", seed: int = 0, from_scratch: bool = False) -> dict:
    """Run the whole kit (see the module docstring); returns ``{step: seconds}`` and the total."""
    import os

    root = repo_root()
    runs = root / "runs" / profile
    runs.mkdir(parents=True, exist_ok=True)
    checkpoints = f"runs/{profile}/checkpoints" if from_scratch else SHIPPED
    if from_scratch:
        os.environ[CHECKPOINTS_ENV] = str(root / checkpoints)   # read by every default folder, here and in children
        print(f"from scratch: every part is trained into {checkpoints}/ (the shipped {SHIPPED}/ is not touched)",
              flush=True)
    from drclib import evaluation
    from drclib.data import StickerSet
    from drclib.notebooks import find_notebooks, run_all

    times: dict[str, float] = {}
    status: dict[str, str] = {}
    start = time.perf_counter()
    steps = training_steps(f"runs/{profile}/state", checkpoints) if train else []
    parts = ["data check"] + [s.name for s in steps] + ["evaluation"] * int(evaluate) + ["notebooks"] * int(notebooks)
    progress = Progress(parts)

    print(progress.line("data check"), flush=True)
    t0 = time.perf_counter()
    stickers = StickerSet.load(verify=True)
    times["data check"] = time.perf_counter() - t0
    progress.finish("data check", times["data check"])
    print(f"      {stickers!r}: checksums verified", flush=True)
    for step in steps:
        print(progress.line(step.name), flush=True)
        if step.done(root):
            status[step.name] = "reused"
            times[step.name] = 0.0
            progress.finish(step.name, 0.0, ran=False)
            print(f"      reused {step.output}", flush=True)
            continue
        t0 = time.perf_counter()
        print("      $ " + " ".join(Path(a).name if a == sys.executable else a for a in step.args), flush=True)
        subprocess.run(step.args, cwd=root, check=True)
        times[step.name] = time.perf_counter() - t0
        status[step.name] = "trained"
        progress.finish(step.name, times[step.name])
        print(f"      trained in {_clock(times[step.name])}", flush=True)
    if evaluate:
        print(progress.line("evaluation"), flush=True)
        t0 = time.perf_counter()
        out_dir = runs / "07_evaluation"
        results = evaluation.run(profile, out_dir=out_dir, device="cpu" if device == "auto" else device, seed=seed)
        times["evaluation"] = time.perf_counter() - t0
        progress.finish("evaluation", times["evaluation"])
        problems = evaluation.check_invariants(results)
        print(f"      report: {out_dir / 'report.md'}; invariants: " + ("all hold" if not problems else
                                                                        "; ".join(problems)), flush=True)
        if profile == "full" and not problems and not results.get("missing") and not from_scratch:
            print(f"      published to {evaluation.publish(out_dir)}", flush=True)
    if notebooks:
        print(progress.line("notebooks") + f" ({len(find_notebooks())})", flush=True)
        t0 = time.perf_counter()
        run_all(runs, profile=profile, seed=seed, device=device)
        times["notebooks"] = time.perf_counter() - t0
        progress.finish("notebooks", times["notebooks"])
    total = time.perf_counter() - start
    record = {"profile": profile, "from_scratch": from_scratch, "checkpoints": checkpoints,
              "seconds": {k: round(v, 1) for k, v in times.items()}, "status": status,
              "total_seconds": round(total, 1)}
    (runs / "reproduce.json").write_text(json.dumps(record, indent=1) + "\n")
    print(time_table(record), flush=True)
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
    p.add_argument("--from-scratch", action="store_true",
                   help="retrain every part into runs/<profile>/checkpoints/ (the shipped data/checkpoints/ and "
                        "data/results/ are never overwritten)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    reproduce(args.profile, notebooks=not args.no_notebooks, evaluate=not args.no_evaluation,
              train=not args.no_training, device=args.device, seed=args.seed, from_scratch=args.from_scratch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
