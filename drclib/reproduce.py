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
- **Pretrained parts** (``--pretrained paper``, ``make all ... FROM_SCRATCH=1 PRETRAINED=paper``):
  a from-scratch run that copies the parts the paper does not train (:data:`GIVEN`: the visual
  tokenizer and the semantic encoder, LaVIT's pretrained visual side, and the scorers) from the
  shipped kit and retrains the rest, into ``runs/<profile>[-<recipe>]-pretrained/``.
- **Two lanes** (the default, ``--lanes 2``): two parts at a time, each in its own process with
  one torch thread (never more threads than cores), each as soon as the parts it reads are trained
  (:attr:`Step.needs`), the longest chain first (:func:`plan`); logs in ``runs/<profile>/logs/``.
  The notebooks run in the same lanes (:func:`drclib.notebooks.run_all`). ``--plan`` prints the
  order and the cards' expected minutes without training; ``--lanes 1`` trains one part at a time.
- **Resume**: every training command keeps its state under ``runs/<profile>/state/`` and
  continues from there if interrupted; the evaluation keeps finished (split, method)
  entries; so running the command again picks up where it stopped.
- **Progress**: one line with the part (in two lanes: the parts running, each with the last
  progress line of its log: steps done, steps/s and its own time left, printed when a part
  starts or ends and every minute), a bar over the whole run and an estimate of the time left
  (:data:`EXPECTED_MINUTES`, the cards' times on the 2-core machine, scaled first by the pace of
  earlier runs on a machine like this one (:func:`measured_pace`), then more and more by how fast
  this run has been; in two lanes, the :func:`plan` of what remains); the training commands
  print their own bars with steps/s (and tokens/s for the LMM) and their time left. At the end, a table of the time
  of every part and the total (also in ``runs/<profile>/reproduce.json``).
"""

from __future__ import annotations

import json
import re
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
    needs: tuple = ()
    """The names of the steps whose output this one reads (it starts after them)."""

    def done(self, root: Path) -> bool:
        """Whether the step has nothing to do: its output, or its chain's final output, exists."""
        return any((root / out / "config.json").is_file() or (root / out / "pipeline.json").is_file()
                   for out in (self.output, self.part_of) if out)


def training_steps(state: str, checkpoints: str = SHIPPED, recipe: str = "card") -> list[Step]:
    """Every trained part of the kit with the recipe its card records (paths relative to the
    repository; ``state`` is the folder for resumable training state, ``checkpoints`` the one
    the parts are written to and read from). ``recipe="lab"`` shortens each command as
    :data:`LAB_RECIPE` says (an attempt at a retrain in one lab session; RESULTS section 7)."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    t = [sys.executable, "-m", "drclib.train"]
    c = checkpoints.rstrip("/")
    tok, judges = ("visual tokenizer",), ("style classifier", "emoji classifier")
    steps = [
        Step("visual tokenizer", f"{c}/tokenizer",
             [sys.executable, "-m", "drclib.backbone.tokenizer", "--epochs", "24", "--out", f"{c}/tokenizer"]),
        Step("style classifier", f"{c}/style_classifier",
             [sys.executable, "-m", "drclib.judges", "train", "--target", "style", "--epochs", "32",
              "--with-reconstructions", "--out", f"{c}/style_classifier", "--quiet"], needs=tok),
        Step("emoji classifier", f"{c}/emoji_classifier",
             [sys.executable, "-m", "drclib.judges", "train", "--target", "emoji", "--epochs", "28",
              "--out", f"{c}/emoji_classifier", "--quiet"], needs=tok),
        Step("tiny CLIP", f"{c}/tinyclip",
             [sys.executable, "-m", "drclib.backbone.tinyclip", "--epochs", "15", "--out", f"{c}/tinyclip"]),
        Step("semantic encoder", f"{c}/encoder",
             [sys.executable, "-m", "drclib.backbone.encoder", "--steps", "3000", "--out", f"{c}/encoder"], needs=tok),
    ]
    # the composing LMM (its card, RESULTS section 1): 6,000 augmented steps in two runs, then 600 plain ones
    aug = ["backbone", "--concepts", "core", "--augment", "0.9", "--copies", "16", "--steps", "3000", "--seed", "0"]
    chain = [("pocket LMM, augmented", aug, f"{state}/lmm_aug_3000", []),
             ("pocket LMM, augmented, continued", aug, f"{state}/lmm_aug_6000", ["--init-from", f"{state}/lmm_aug_3000"]),
             ("pocket LMM", ["backbone", "--concepts", "core", "--steps", "600", "--lr", "5e-4", "--warmup", "30",
                             "--seed", "0"], f"{c}/lmm", ["--init-from", f"{state}/lmm_aug_6000"])]
    for i, (name, args, out, more) in enumerate(chain):
        steps.append(Step(name, out, t + args + more + ["--state-dir", f"{state}/{Path(out).name}_state", "--out", out],
                          part_of=None if out == f"{c}/lmm" else f"{c}/lmm",
                          needs=tok + judges + ((chain[i - 1][0],) if i else ())))
    for v in ("drc", "uniform", "concat", "mlp"):
        steps.append(Step(f"stage 1, {v}", f"{c}/stage1/{v}",
                          t + ["stage1", "--variant", v, "--state-dir", f"{state}/stage1_{v}", "--out", f"{c}/stage1/{v}"],
                          needs=tok + judges + ("semantic encoder", "pocket LMM")))
    after_stage1 = tok + judges + ("semantic encoder", "pocket LMM", "stage 1, drc")
    after_lmm = tok + judges + ("pocket LMM",)
    steps += [
        Step("stage 2, DRC", f"{c}/drc", t + ["stage2", "--state-dir", f"{state}/stage2_drc", "--out", f"{c}/drc"],
             needs=after_stage1),
        Step("stage 2, w/o Aug", f"{c}/drc_no_aug",
             t + ["stage2", "--no-augment", "--state-dir", f"{state}/stage2_no_aug", "--out", f"{c}/drc_no_aug"],
             needs=after_stage1),
        Step("baseline, Pigeon", f"{c}/pigeon",
             t + ["baseline", "--method", "pigeon", "--state-dir", f"{state}/pigeon", "--out", f"{c}/pigeon"],
             needs=after_lmm),
        Step("baseline, LMM-SFT", f"{c}/lmm_sft",
             t + ["baseline", "--method", "lmm_sft", "--state-dir", f"{state}/lmm_sft", "--out", f"{c}/lmm_sft"],
             needs=after_lmm),
    ]
    if recipe == "lab":
        steps = [Step(s.name, s.output, _override(s.args, LAB_RECIPE.get(s.name, {})), s.part_of, s.needs)
                 for s in steps]
    return steps


RECIPES = ("card", "lab")

GIVEN = ("visual tokenizer", "semantic encoder", "style classifier", "emoji classifier", "tiny CLIP")
"""The parts the paper does not train: LaVIT's visual tokenizer and the ViT features its visual
tokens come from are pretrained (the kit's stand-ins: the VQ tokenizer and the semantic encoder),
and the scorers (the judges, tiny CLIP: stand-ins for the paper's CLIP, DINO and classifiers) only
measure. ``--pretrained paper`` (``make all ... PRETRAINED=paper``) copies them from the shipped kit
into a from-scratch run and retrains the rest (the pocket LMM, stage 1, stage 2, the trained
baselines): the paper's own division of labour (the encoder cut to 800 of its 3,000 steps left
stage 1 at a third of its card's swap-test "both", RESULTS section 7)."""


def pretrained_parts(spec: str | tuple | list | None) -> tuple:
    """The part names of ``--pretrained``: ``"paper"`` (:data:`GIVEN`), a comma-separated list of
    part names (as :func:`training_steps` names them), or nothing."""
    if not spec:
        return ()
    names = [x.strip() for x in spec.split(",")] if isinstance(spec, str) else list(spec)
    known = [s.name for s in training_steps("st")]
    out: list[str] = []
    for n in names:
        for part in (GIVEN if n == "paper" else (n,)):
            if part not in known:
                raise ValueError(f"--pretrained: no trained part is called {part!r}; use 'paper' or some of: "
                                 f"{', '.join(known)}")
            if part not in out:
                out.append(part)
    return tuple(out)


def copy_pretrained(steps: list[Step], parts: tuple, root: Path, shipped: str = SHIPPED) -> list[str]:
    """Copy the shipped checkpoint of each part in ``parts`` to the step's output folder (a
    from-scratch run's), so the run reuses it instead of training it; returns the folders copied.
    A folder already there is kept (a resumed run)."""
    import shutil

    copied = []
    by_name = {s.name: s for s in steps}
    for part in parts:
        step = by_name[part]
        dest = root / step.output
        src = root / shipped / Path(step.output).name
        if step.done(root):
            continue
        if not (src / "config.json").is_file():
            raise FileNotFoundError(f"--pretrained {part!r} needs the shipped {src}; restore it with "
                                    f"`git checkout -- {shipped}/{src.name}` or train it (drop it from --pretrained)")
        tmp = dest.with_name(dest.name + ".copying")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        tmp.rename(dest)
        copied.append(str(step.output))
    return copied

LAB_RECIPE = {
    "visual tokenizer": {"--epochs": "5"},
    "style classifier": {"--epochs": "12"},
    "emoji classifier": {"--epochs": "12"},
    "tiny CLIP": {"--epochs": "6"},
    "semantic encoder": {"--steps": "800"},
    "pocket LMM, augmented": {"--steps": "3000"},     # the cards': the plain recipe cut to 800 of its 1,200
    "pocket LMM, augmented, continued": {"--steps": "3000"},   # steps had not memorised its cells (t2i both
    "pocket LMM": {"--steps": "600"},     # 0.21 vs 0.87); the composing LMM's runs were not cut
    "stage 1, drc": {"--steps": "600"},      # the cards': at 300, 0.55 'both' on the swap test (0.86 at 600), at 150 0.04
    "stage 1, uniform": {"--steps": "600"}, "stage 1, concat": {"--steps": "600"}, "stage 1, mlp": {"--steps": "600"},
    "stage 2, DRC": {"--steps": "200"},     # the cards': at 100, 'both' 0.26 against 0.34 (stage 1 alone: 0.46)
    "stage 2, w/o Aug": {"--steps": "200"},
    "baseline, Pigeon": {"--steps": "120", "--lr": "3e-3"}, "baseline, LMM-SFT": {"--steps": "120", "--lr": "3e-3"},
}
"""The lab recipe (``make all PROFILE=full FROM_SCRATCH=1 RECIPE=lab``): every part's card
recipe with about a third of its epochs or steps (and, for the two LoRA baselines, the quick
profile's higher learning rate), sized by the cards' minutes to fit an hour on the 2-core CPU;
each command lays its learning-rate schedule over its own steps. The pocket LMM's runs, the four
stage-1 models and the two stage-2 pipelines keep their cards' steps: cut short they compose
little or nothing (the plain LMM at 800 of its 1,200 steps drew training cells "both" 0.21
against 0.87; stage 1's swap-test "both" was 0.04 at 150 steps, 0.55 at 300 and 0.86 at 600;
stage 2 at 100 steps fell below the stage 1 it starts from; RESULTS sections 1 and 7,
``benchmarks/stage2_steps.py``). Measured (RESULTS section 7, ``benchmarks/lab_recipe.py``, on the
plain LMM): every part retrained (the LMM then at 800 steps), 89 minutes with the evaluation and
notebooks, and a kit that does not reproduce the cards (DRC's "both" 0.33 -> 0.015); with
``--pretrained paper`` (the tokenizer, judges, tiny CLIP and encoder kept) see RESULTS section 7."""

CARD_SIZE = {"visual tokenizer": ("--epochs", 24), "style classifier": ("--epochs", 32),
             "emoji classifier": ("--epochs", 28), "tiny CLIP": ("--epochs", 15),
             "semantic encoder": ("--steps", 3000), "pocket LMM, augmented": ("--steps", 3000),
             "pocket LMM, augmented, continued": ("--steps", 3000), "pocket LMM": ("--steps", 600),
             "stage 1, drc": ("--steps", 600), "stage 1, uniform": ("--steps", 600),
             "stage 1, concat": ("--steps", 600), "stage 1, mlp": ("--steps", 600),
             "stage 2, DRC": ("--steps", 200), "stage 2, w/o Aug": ("--steps", 200),
             "baseline, Pigeon": ("--steps", 400), "baseline, LMM-SFT": ("--steps", 400)}
"""The size of each card's recipe (epochs or steps), which :func:`expected_minutes` scales the
cards' minutes by."""


def _override(args: list, flags: dict) -> list:
    """``args`` with each ``--flag value`` of ``flags`` replaced (or appended when absent)."""
    out = list(args)
    for flag, value in flags.items():
        if flag in out:
            out[out.index(flag) + 1] = str(value)
        else:
            out += [flag, str(value)]
    return out


def expected_minutes(recipe: str = "card") -> dict:
    """One-thread minutes each part is expected to take: :data:`EXPECTED_MINUTES` (the cards),
    scaled for the lab recipe by its epochs or steps against the card's."""
    out = dict(EXPECTED_MINUTES)
    if recipe == "lab":
        for name, (flag, size) in CARD_SIZE.items():
            if flag in LAB_RECIPE.get(name, {}):
                out[name] = EXPECTED_MINUTES[name] * float(LAB_RECIPE[name][flag]) / size
    return out


EXPECTED_MINUTES = {
    "data check": 0.1, "visual tokenizer": 59.4, "style classifier": 15.8, "emoji classifier": 13.6,
    "tiny CLIP": 12.7, "semantic encoder": 27.2, "pocket LMM, augmented": 19.5,
    "pocket LMM, augmented, continued": 21.2, "pocket LMM": 4.1, "stage 1, drc": 13.8,
    "stage 1, uniform": 14.3, "stage 1, concat": 14.7, "stage 1, mlp": 12.0, "stage 2, DRC": 3.4,
    "stage 2, w/o Aug": 3.3, "baseline, Pigeon": 30.7, "baseline, LMM-SFT": 25.2,
    "evaluation": 6.5, "notebooks": 12.0}
"""Minutes by the cards' "time" lines before the held-out fix, which section 7's runs are planned against (float32-only
machine; stage 1 and 2: the AVX-512-bf16 one, where the later baselines' cards ran faster; evaluation and notebooks:
README's timing table; the pocket LMM's three runs: the composing LMM's card, AVX-512-bf16): the progress line's
estimate of the time left, scaled by how this run compares so far."""


TWO_THREADS = 1.7
"""How much faster a part trains with the CPU's two threads than with one (``make all``'s plan
uses it; :data:`EXPECTED_MINUTES` are one-thread minutes): ``benchmarks/speed.py`` measures
it per part (``second_thread`` in data/results/speed.json: 1.4x to 1.7x for LMM pretraining,
stage 1 and stage 2)."""


def planned_minutes(recipe: str = "card", done: set | tuple = (), lanes: int = 2, expected: dict | None = None) -> float:
    """A from-scratch run's minutes by the cards (or ``expected``): its training's :func:`plan` (``done``:
    parts not trained), evaluation and notebooks."""
    expected = expected_minutes(recipe) if expected is None else expected
    return (makespan(plan(training_steps("state", "checkpoints", recipe), lanes, expected, done=set(done)))
            + expected["evaluation"] + expected["notebooks"])


def measured_pace(machine: str | None = None, results: Path | None = None) -> tuple[float, list[str]] | None:
    """How fast ``make all`` (two lanes) ran here: for each retrain ``benchmarks/lab_recipe.py`` recorded
    (``data/results/card_*.json``) on ``machine`` (:func:`drclib.runtime.describe_machine`), its minutes over
    its :func:`planned_minutes`; the mean and the files, or ``None``. The cards come from one slower,
    float32-only machine: this is the better first guess of the time left."""
    from drclib.runtime import describe_machine
    machine, paces, names = machine or describe_machine("cpu"), [], []
    for f in sorted((results or repo_root() / "data" / "results").glob("card_*.json")):
        try:
            d = json.loads(f.read_text())
            if (d.get("machine") != machine or "LANES=1" in d.get("run_command", "")
                    or not {"evaluation", "notebooks"} <= set(d["minutes"])):   # only make all's whole run
                continue
            r = d.get("recipe", "card")      # planned as it was: its own minutes, and no LMM chain before there was one
            done = set(d.get("pretrained", ())) | {s.name for s in training_steps("s", "c") if s.part_of} - set(d["minutes"])
            paces.append(float(d["total_minutes"]) / planned_minutes(r, done, expected={**expected_minutes(r),
                                                                                       **d.get("expected_minutes", {})}))
            names.append(f.name)
        except (OSError, ValueError, KeyError, TypeError):
            continue                        # not a retrain's record: nothing to learn from it
    return (sum(paces) / len(paces), names) if paces else None


PRIOR_WEIGHT = 20.0
"""The expected minutes (about one large part) :func:`measured_pace` counts as in :attr:`Progress.pace`."""


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """The overall progress of ``make all``: which part runs, a bar over the whole run (weighted
    by :data:`EXPECTED_MINUTES`) and an estimate of the time left."""

    def __init__(self, parts: list[str], width: int = 24, expected: dict | None = None, prior_pace: float | None = None):
        self.parts, self.width, self.prior_pace = parts, width, prior_pace
        self.expected = EXPECTED_MINUTES if expected is None else expected
        self.start = time.perf_counter()
        self.done: dict[str, float] = {}       # part -> seconds it took (0 when reused)
        self.reused: set[str] = set()          # parts that were already there: they weigh nothing
        self.expected_done = 0.0               # expected seconds of the parts that ran (and count for the pace)
        self.spent = 0.0                       # the seconds those parts took

    def _expected(self, part: str) -> float:
        return 60.0 * self.expected.get(part, 1.0)

    def _weight(self, part: str) -> float:
        """A part's share of the bar: its expected seconds, none when it was reused (copied,
        pretrained or left by an earlier run), so the bar and the time left count only work
        this run does."""
        return 0.0 if part in self.reused else self._expected(part)

    def line(self, part: str) -> str:
        """``[i/n] |####....| 37% part  elapsed 0:41:02, about 1:10:00 left``."""
        i = len(self.done) + 1
        total = sum(self._weight(p) for p in self.parts)
        remaining = sum(self._weight(p) for p in self.parts if p not in self.done)
        frac = 1.0 - remaining / total if total else 0.0
        bar = "#" * int(round(frac * self.width))
        return (f"[{i}/{len(self.parts)}] |{bar:<{self.width}}| {100 * frac:3.0f}% {part}  "
                f"elapsed {_clock(time.perf_counter() - self.start)}, about {_clock(remaining * self.pace)} left")

    def left_parallel(self, steps: list[Step], running: dict, lanes: int) -> float:
        """Seconds left when the steps not yet finished run on ``lanes`` processes: the
        :func:`plan` of what remains, scaled by how fast this run has been so far, plus the
        parts after the training (evaluation, notebooks)."""
        train = makespan(plan(steps, lanes, self.expected, done={s.name for s in steps if s.name in self.done},
                              running=running)) * 60
        after = sum(self._expected(p) for p in self.parts if p not in self.done and p not in {s.name for s in steps})
        return (train + after) * self.pace

    @property
    def pace(self) -> float:
        """How this run's parts compare with their expected time (seconds taken / expected), over
        the parts expected to take a minute or more (a few-second data check says nothing about
        the pace). With a ``prior_pace`` (:func:`measured_pace`) that counts as :data:`PRIOR_WEIGHT`
        expected minutes beside them; without one, 1 until one of those parts has finished."""
        if self.prior_pace is None:
            return self.spent / self.expected_done if self.expected_done > 0 else 1.0
        w = 60.0 * PRIOR_WEIGHT
        return (self.spent + self.prior_pace * w) / (self.expected_done + w)

    def lanes_line(self, event: str, running: list[str], left: float) -> str:
        """``[3/17 done] |#####...| 31% start pocket LMM; running: ...; elapsed 0:41:02, about 1:10:00 left``."""
        total = sum(self._weight(p) for p in self.parts)
        frac = sum(self._weight(p) for p in self.done) / total if total else 0.0
        bar = "#" * int(round(frac * self.width))
        what = "; ".join(x for x in (event, "running: " + ", ".join(running) if running else "") if x)
        return (f"[{len(self.done)}/{len(self.parts)} done] |{bar:<{self.width}}| {100 * frac:3.0f}% {what}  "
                f"elapsed {_clock(time.perf_counter() - self.start)}, about {_clock(left)} left")

    def finish(self, part: str, seconds: float, ran: bool = True, threads: int = 1) -> None:
        """Record that ``part`` took ``seconds`` (``ran=False``: it was reused). In two lanes a part
        that ran alone on two ``threads`` is held to its expected one-thread time over
        :data:`TWO_THREADS`, as :func:`plan` counts it, so the pace compares like with like; one at a
        time (``--lanes 1``) every part is held to its one-thread time, as :meth:`line` counts what is left."""
        self.done[part] = seconds if ran else 0.0
        if not ran:
            self.reused.add(part)
        if ran and self._expected(part) >= 60.0:
            self.expected_done += self._expected(part) / (TWO_THREADS if threads >= 2 else 1.0)
            self.spent += seconds


# ---------------------------------------------------------------------------------- two lanes
def _priorities(steps: list[Step], expected: dict) -> dict[str, float]:
    """Each step's critical path: its own expected minutes plus the longest chain of steps that
    wait for it (the planner starts the ready step with the longest one first)."""
    waiting = {s.name: [t.name for t in steps if s.name in t.needs] for s in steps}
    memo: dict[str, float] = {}

    def path(name: str) -> float:
        if name not in memo:
            memo[name] = expected.get(name, 1.0) + max((path(w) for w in waiting[name]), default=0.0)
        return memo[name]

    return {s.name: path(s.name) for s in steps}


def _waiting(steps: list[Step]) -> dict[str, set]:
    """Each step's dependants: the steps that need it, directly or through others."""
    direct = {s.name: {t.name for t in steps if s.name in t.needs} for s in steps}
    out: dict[str, set] = {}

    def close(name: str) -> set:
        if name not in out:
            out[name] = set(direct[name]).union(*(close(w) for w in direct[name])) if direct[name] else set()
        return out[name]

    for s in steps:
        close(s.name)
    return out


def runs_alone(step: Step, todo: list[Step], expected: dict, waiting: dict, two_threads: float = None) -> bool:
    """Whether ``step`` should take both threads and run alone: the work that could run beside
    it (the steps left that do not wait for it) is less than the minutes a second thread saves
    it, so a second lane would mostly idle (the tokenizer at the start: only the tiny CLIP
    could run beside it)."""
    two_threads = TWO_THREADS if two_threads is None else two_threads
    own = expected.get(step.name, 1.0)
    beside = sum(expected.get(t.name, 1.0) for t in todo if t is not step and t.name not in waiting[step.name])
    return beside < own - own / two_threads


def check_needs(steps: list[Step]) -> None:
    """Raise if a step needs one that is not in the plan, or the needs go round in a circle."""
    names = {s.name for s in steps}
    for s in steps:
        missing = [n for n in s.needs if n not in names]
        if missing:
            raise ValueError(f"{s.name!r} needs {missing}, which the plan does not train")
    done: set[str] = set()
    left = list(steps)
    while left:
        ready = [s for s in left if set(s.needs) <= done]
        if not ready:
            raise ValueError(f"the needs of {[s.name for s in left]} go round in a circle")
        done |= {s.name for s in ready}
        left = [s for s in left if s.name not in done]


def plan(steps: list[Step], lanes: int = 2, expected: dict | None = None, *, done: set | None = None,
         running: dict | None = None, two_threads: float = TWO_THREADS) -> list[dict]:
    """The order in which :func:`run_lanes` would train ``steps`` on ``lanes`` processes, with each
    step taking its ``expected`` minutes (default :data:`EXPECTED_MINUTES`): whenever a lane is
    free it starts, of the steps whose needs are done, the one with the longest critical path.
    ``done``: names already finished; ``running``: ``{name: minutes it has run}`` for steps
    already under way (they keep their lanes until their expected end). Returns
    ``[{"name", "lane", "start", "end", "threads"}]`` in minutes from now, in start order."""
    if lanes not in (1, 2):
        raise ValueError(f"lanes must be 1 or 2 (the CPU's cores), got {lanes}")
    expected = EXPECTED_MINUTES if expected is None else expected
    done, running = set(done or ()), dict(running or {})
    check_needs(steps)
    prio = _priorities(steps, expected)
    waiting = _waiting(steps)
    free_at = [0.0] * lanes
    finish: dict[str, float] = {n: 0.0 for n in done}
    out = []
    for i, (name, ran) in enumerate(running.items()):
        end = max(expected.get(name, 1.0) - ran, 0.0)
        free_at[i % lanes] = max(free_at[i % lanes], end)
        finish[name] = end
        out.append({"name": name, "lane": i % lanes, "start": 0.0, "end": end, "threads": 1})
    todo = [s for s in steps if s.name not in done and s.name not in running]
    while todo:
        lane = min(range(lanes), key=lambda i: free_at[i])
        now = free_at[lane]
        ready = [s for s in todo if all(n in finish and finish[n] <= now for n in s.needs)]
        if not ready:           # wait for the next finish that unblocks something
            later = [finish[n] for s in todo for n in s.needs if n in finish and finish[n] > now]
            if not later:
                raise ValueError(f"{[s.name for s in todo]} need steps that are not in the plan")
            free_at[lane] = min(later)
            continue
        step = max(ready, key=lambda s: prio[s.name])
        # alone (one lane, or nothing much could run beside it now): both threads
        solo = lanes == 1 or (all(f <= now for f in free_at) and runs_alone(step, todo, expected, waiting, two_threads))
        end = now + expected.get(step.name, 1.0) / (two_threads if solo else 1.0)
        finish[step.name] = end
        if solo:
            free_at = [end] * lanes
        else:
            free_at[lane] = end
        out.append({"name": step.name, "lane": lane, "start": now, "end": end, "threads": 2 if solo else 1})
        todo.remove(step)
    return out


def makespan(schedule: list[dict]) -> float:
    """Minutes until the last step of a :func:`plan` ends."""
    return max((p["end"] for p in schedule), default=0.0)


def _last_status(log: Path, width: int = 90) -> str:
    """The last progress line a training command wrote to its log (its tqdm bar without the
    bar itself: done/total, elapsed<left, steps/s), cut to ``width`` characters."""
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 2000))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [x.strip() for x in tail.replace("\r", "\n").split("\n") if x.strip() and not x.startswith("$ ")]
    if not lines:
        return ""
    line = re.sub(r"\|[^|]*\|", " ", lines[-1])      # a tqdm bar's glyphs: keep its numbers, rate and time left
    return " ".join(line.split())[:width]


def run_lanes(steps: list[Step], root: Path, logs: Path, lanes: int = 2, *, progress: "Progress | None" = None,
              every: float = 60.0, poll: float = 2.0, expected: dict | None = None) -> tuple[dict, dict]:
    """Train ``steps`` (those not already done) in ``lanes`` processes at once, one torch thread
    each, each step as soon as its needs are done (in :func:`plan`'s order of priority); a step
    that is the only one able to run gets both threads and runs alone. Each
    command's output goes to ``logs/<step>.log``; every ``every`` seconds, and when a step starts
    or ends, one line says what runs (with the last progress line of its log) and the time
    left. A failed step stops new starts; the ones running are let finish, then it raises.
    Returns ``({step: seconds}, {step: "trained" | "reused"})``."""
    from drclib.runtime import thread_env

    check_needs(steps)
    logs.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    status: dict[str, str] = {}
    for s in steps:
        if s.done(root):
            times[s.name], status[s.name] = 0.0, "reused"
            if progress:
                progress.finish(s.name, 0.0, ran=False)
                print(f"      reused {s.output}", flush=True)
    expected = EXPECTED_MINUTES if expected is None else expected
    prio = _priorities(steps, expected)
    waiting = _waiting(steps)
    todo = [s for s in steps if s.name not in status]
    running: dict[str, tuple] = {}          # name -> (process, log file, start)
    threads_of: dict[str, int] = {}         # name -> the torch threads it was given
    failed: list[str] = []
    last_line = 0.0

    def say(event: str = "") -> None:
        if progress is None:
            return
        now = time.perf_counter()
        parts = []
        for n, (_, _, t0) in running.items():
            last = _last_status(logs / _log_name(n))
            parts.append(f"{n} {_clock(now - t0)}" + (f" [{last}]" if last else ""))
        left = progress.left_parallel(steps, {n: (now - t0) / 60 for n, (_, _, t0) in running.items()}, lanes)
        print(progress.lanes_line(event, parts, left), flush=True)

    solo = False                            # a part running alone with both threads holds both lanes
    while todo or running:
        while not failed and not solo and len(running) < lanes:
            ready = [s for s in todo if all(n in status for n in s.needs)]
            if not ready:
                break
            step = max(ready, key=lambda s_: prio[s_.name])
            todo.remove(step)
            solo = not running and runs_alone(step, todo + [step], expected, waiting)
            threads = 2 if solo else 1
            log = open(logs / _log_name(step.name), "w")
            log.write("$ " + " ".join(step.args) + f"  (torch threads: {threads})\n")
            log.flush()
            proc = subprocess.Popen(step.args, cwd=root, env=thread_env(threads),
                                    stdout=log, stderr=subprocess.STDOUT)
            running[step.name] = (proc, log, time.perf_counter())
            threads_of[step.name] = threads
            say(f"start {step.name}" + (" (alone: two threads)" if solo else ""))
        if not running:
            if failed or todo:
                break
        time.sleep(poll)
        for name in list(running):
            proc, log, t0 = running[name]
            if proc.poll() is None:
                continue
            log.close()
            del running[name]
            solo = solo and bool(running)
            sec = time.perf_counter() - t0
            if proc.returncode == 0:
                times[name], status[name] = sec, "trained"
                if progress:
                    progress.finish(name, sec, threads=threads_of[name])
                say(f"done {name} in {_clock(sec)}")
            else:
                failed.append(f"{name} (exit {proc.returncode}; log {logs / _log_name(name)})")
                say(f"FAILED {name}")
        if running and time.perf_counter() - last_line >= every:
            last_line = time.perf_counter()
            say()
    if failed or todo:
        raise RuntimeError("training stopped: " + ("; ".join(failed) if failed else
                                                   f"{[s.name for s in todo]} could not start"))
    return times, status


def _log_name(step: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in step).strip("_") + ".log"


def plan_table(steps: list[Step], lanes: int = 2, expected: dict | None = None, done: tuple = ()) -> str:
    """A from-scratch run's :func:`plan` as a table (lane, start, end, part) with the total, and
    the total one part at a time beside it, from the cards' times (:data:`EXPECTED_MINUTES`);
    ``done``: parts not trained (``--pretrained``)."""
    expected = EXPECTED_MINUTES if expected is None else expected
    done = set(done)
    sched = plan(steps, lanes, expected, done=done)
    after = sum(expected.get(p, 0.0) for p in ("evaluation", "notebooks"))
    rows = ["| lane | threads | start (min) | end (min) | part |", "|---|---|---|---|---|"]
    rows += [f"| {'both' if p['threads'] == 2 and lanes > 1 else p['lane'] + 1} | {p['threads']} | {p['start']:.1f} | "
             f"{p['end']:.1f} | {p['name']} |" for p in sched]
    serial = makespan(plan(steps, 1, expected, done=done))
    one = sum(expected.get(s.name, 1.0) for s in steps if s.name not in done)
    rows.append(f"| | | | **{makespan(sched):.1f}** | training in {lanes} lane(s); one part at a time with two "
                f"threads: {serial:.1f}; with one thread (the cards' sum): {one:.1f} |")
    rows.append(f"| | | | **{makespan(sched) + after:.1f}** | with the evaluation and the notebooks ({after:.1f}) |")
    return "\n".join(rows)


def time_table(record: dict) -> str:
    """The per-part time table of a run (markdown), with the expected one-thread minutes beside."""
    expected = expected_minutes(record.get("recipe", "card"))
    rows = ["| part | status | minutes | expected (one thread) |", "|---|---|---|---|"]
    for part, sec in record["seconds"].items():
        rows.append(f"| {part} | {record['status'].get(part, 'ran')} | {sec / 60:.1f} | "
                    f"{expected.get(part, float('nan')):.1f} |")
    rows.append(f"| **total** | | **{record['total_seconds'] / 60:.1f}** | |")
    return "\n".join(rows)


def reproduce(profile: str = "full", *, notebooks: bool = True, evaluate: bool = True, train: bool = True,
              device: str = "auto", seed: int = 0, from_scratch: bool = False, lanes: int = 2,
              recipe: str = "card", pretrained: str | tuple = ()) -> dict:
    """Run the whole kit (see the module docstring); returns ``{step: seconds}`` and the total.
    ``recipe="lab"`` (only from scratch) trains with :data:`LAB_RECIPE` into ``runs/<profile>-lab/``;
    ``pretrained`` (only from scratch; :func:`pretrained_parts`) takes those parts from the shipped
    kit instead of training them (the run's folder gets ``-pretrained``)."""
    import os

    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    if recipe != "card" and not from_scratch:
        raise ValueError(f"the {recipe} recipe trains from scratch only (add --from-scratch): it would otherwise "
                         f"fill missing parts of {SHIPPED}/ with weights that differ from their cards")
    pretrained = pretrained_parts(pretrained)
    if pretrained and not from_scratch:
        raise ValueError("--pretrained only makes sense with --from-scratch: without it every shipped part is "
                         "already used as it is")
    root = repo_root()
    name = (profile if recipe == "card" else f"{profile}-{recipe}") + ("-pretrained" if pretrained else "")
    runs = root / "runs" / name
    runs.mkdir(parents=True, exist_ok=True)
    checkpoints = f"runs/{name}/checkpoints" if from_scratch else SHIPPED
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
    steps = training_steps(f"runs/{name}/state", checkpoints, recipe) if train else []
    if steps and pretrained:
        for folder in copy_pretrained(steps, pretrained, root):
            print(f"      pretrained: copied the shipped {Path(folder).name} to {folder}", flush=True)
    expected = expected_minutes(recipe)
    parts = ["data check"] + [s.name for s in steps] + ["evaluation"] * int(evaluate) + ["notebooks"] * int(notebooks)
    measured = measured_pace()
    progress = Progress(parts, expected=expected, prior_pace=measured[0] if measured else None)
    print("      time left: the cards' minutes x " + (f"{measured[0]:.2f}, the pace of {', '.join(measured[1])} (runs on "
          "this machine), then this run's" if measured else "this run's pace (no earlier run on this machine)"), flush=True)
    for step in steps:                          # pretrained, copied or resumed: nothing to wait for
        if step.done(root):
            progress.finish(step.name, 0.0, ran=False)

    print(progress.line("data check"), flush=True)
    t0 = time.perf_counter()
    stickers = StickerSet.load(verify=True)
    times["data check"] = time.perf_counter() - t0
    progress.finish("data check", times["data check"])
    print(f"      {stickers!r}: checksums verified", flush=True)
    if steps and lanes > 1:
        todo = [s for s in steps if not s.done(root)]
        if todo:
            done_names = {s.name for s in steps if s.done(root)}
            print(f"      training {len(todo)} parts in {lanes} lanes (one torch thread each; logs in "
                  f"runs/{name}/logs/): about {_clock(60 * progress.pace * makespan(plan(steps, lanes, expected, done=done_names)))}, "
                  f"against {_clock(60 * progress.pace * makespan(plan(steps, 1, expected, done=done_names)))} "
                  f"one at a time", flush=True)
        t, st = run_lanes(steps, root, runs / "logs", lanes, progress=progress, expected=expected)
        times.update(t)
        status.update(st)
        steps = []
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
        # one at a time (torch's threads): held to the one-thread minutes, as line() counts what is left
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
        print(progress.line("notebooks") + f" ({len(find_notebooks())}" + (f", {lanes} at a time" if lanes > 1 else "")
              + ")", flush=True)
        t0 = time.perf_counter()
        run_all(runs, profile=profile, seed=seed, device=device, lanes=lanes)
        times["notebooks"] = time.perf_counter() - t0
        progress.finish("notebooks", times["notebooks"])
    total = time.perf_counter() - start
    status.update({part: "pretrained" for part in pretrained if part in status})
    record = {"profile": profile, "recipe": recipe, "from_scratch": from_scratch, "pretrained": list(pretrained),
              "checkpoints": checkpoints,
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
    p.add_argument("--lanes", type=int, choices=[1, 2], default=2,
                   help="parts trained at once (2: two processes of one torch thread each, each part as soon as "
                        "what it reads is trained; 1: one at a time with torch's threads)")
    p.add_argument("--plan", action="store_true",
                   help="print the order and the expected time of a from-scratch run (the cards' times) and stop")
    p.add_argument("--recipe", choices=RECIPES, default="card",
                   help="card: every part as its card records; lab: the shortened recipes of LAB_RECIPE (one lab "
                        "session; only with --from-scratch, into runs/<profile>-lab/)")
    p.add_argument("--pretrained", default="",
                   help="with --from-scratch: parts taken from the shipped kit instead of trained: 'paper' (the "
                        "tokenizer, the semantic encoder, the judges and tiny CLIP, which the paper does not train) or a comma-separated "
                        "list of part names")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        pretrained_parts(args.pretrained)
    except ValueError as e:
        p.error(str(e))
    if args.plan:
        print(plan_table(training_steps(f"runs/{args.profile}/state", recipe=args.recipe), args.lanes,
                         expected_minutes(args.recipe), done=pretrained_parts(args.pretrained)))
        if (measured := measured_pace()) and args.lanes == 2:
            print(f"\nOn this machine: about {planned_minutes(args.recipe, pretrained_parts(args.pretrained)) * measured[0]:.0f}"
                  f" minutes (the cards' plan at the pace of {', '.join(measured[1])}, measured here)")
        return 0
    reproduce(args.profile, notebooks=not args.no_notebooks, evaluate=not args.no_evaluation,
              train=not args.no_training, device=args.device, seed=args.seed, from_scratch=args.from_scratch,
              lanes=args.lanes, recipe=args.recipe, pretrained=args.pretrained)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
