"""How long make all's notebook step takes one at a time and in lanes, on the same weights
(prints figures and writes a JSON; not a test)

    python benchmarks/notebook_lanes.py [--profile full] [--lanes 1 2]
                                        [--out data/results/notebook_lanes.json]

Runs all eight notebooks with :func:`drclib.notebooks.run_all` once per ``--lanes`` value, in
that order, on whatever weights the notebooks load (the shipped ones, or ``DRC_CHECKPOINTS``),
into ``runs/notebook_lanes/lanes<N>/``: ``lanes 1`` is one notebook after another in this
process with torch's two threads (as make all ran them before), ``lanes 2`` two at a time,
each in its own process with one thread, longest first (:data:`drclib.notebooks.LONGEST_FIRST`).
As in make all, the evaluation runs first (once, timed apart, into ``runs/notebook_lanes/
evaluation``) and is copied into each setting's folder, where notebook 07 reuses it instead of
scoring every method again (``--cold`` skips that: 07 then evaluates inside the step).
Records each notebook's wall seconds and the step's total. Run it with nothing else on the
machine: the settings are compared only within one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="full", choices=["quick", "full"])
    p.add_argument("--lanes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--runs", default="runs/notebook_lanes", help="where the executed copies go")
    p.add_argument("--out", default="data/results/notebook_lanes.json")
    p.add_argument("--cold", action="store_true", help="no evaluation first: notebook 07 evaluates inside the step")
    args = p.parse_args(argv)

    import torch

    from drclib.io import write_json
    from drclib.notebooks import LONGEST_FIRST, run_all
    from drclib.runtime import describe_machine

    import shutil

    from drclib import evaluation

    torch.set_num_threads(2)
    evaluation_seconds = None
    seeded = f"{args.runs}/evaluation/07_evaluation"
    if not args.cold:                       # make all's evaluation step, which notebook 07 then reuses
        t0 = time.perf_counter()
        evaluation.run(args.profile, out_dir=seeded, device="cpu", seed=0)
        evaluation_seconds = round(time.perf_counter() - t0, 1)
        print(f"evaluation: {evaluation_seconds:.1f} s", flush=True)
    settings = []
    for lanes in args.lanes:
        folder = f"{args.runs}/lanes{lanes}"
        shutil.rmtree(folder, ignore_errors=True)
        if not args.cold:
            shutil.copytree(seeded, f"{folder}/07_evaluation")
        t0 = time.perf_counter()
        times = run_all(folder, profile=args.profile, lanes=lanes)
        total = time.perf_counter() - t0
        settings.append({"lanes": lanes, "threads_each": 2 if lanes == 1 else 1,
                         "seconds": {k: round(v, 1) for k, v in sorted(times.items())},
                         "total_seconds": round(total, 1), "total_minutes": round(total / 60, 2)})
        print(f"lanes {lanes}: {total:.1f} s ({total / 60:.2f} min)", flush=True)
    if len(settings) > 1:
        base = settings[0]["total_seconds"]
        for s in settings:
            s["speedup_vs_first"] = round(base / s["total_seconds"], 2)
    out = {"command": "python benchmarks/notebook_lanes.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine": describe_machine("cpu"), "profile": args.profile,
           "weights": os.environ.get("DRC_CHECKPOINTS") or "shipped (data/checkpoints)",
           "longest_first": list(LONGEST_FIRST), "evaluation_first": not args.cold,
           "evaluation_seconds": evaluation_seconds, "settings": settings}
    write_json(args.out, out)
    for s in settings:
        print(f"  {s['lanes']} lane(s): {s['total_minutes']:.2f} min  " +
              ", ".join(f"{k[:2]} {v:.0f} s" for k, v in s["seconds"].items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
