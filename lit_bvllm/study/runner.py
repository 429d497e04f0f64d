"""``lit_bvllm study``: the needle study (issue 13). At one visual-token budget θ, does text-conditioned frame selection
beat uniform sampling and the other strategies on long videos whose evidence is short?

Four sweep files make the study, run in order, each resuming where it stopped (finished points are skipped):

- ``experiments/sweeps/needle_strategies.yaml``: every strategy trained with one fixed recipe, three seeds (nine
  for B-VLLM and Uniform, the pair the bootstrap compares), each tested on the held-out needle sets of 16, 64 and 128 s;
- ``experiments/sweeps/needle_controls.yaml``: blind, random frames and oracle frames, on the Uniform checkpoints;
- ``experiments/sweeps/needle_ablation.yaml``: B-VLLM's Table 3 (one component off at a time; soft selection);
- ``experiments/sweeps/needle_training_free.yaml``: the training-free field at θ = 96 on the Uniform checkpoints
  (frame selectors before the tower, VisionZip and FastVID after it; issue 26).

Then the report, in ``<root>/study`` (``study_quick`` for ``--quick true``): ``study.md`` (every table, the
every-frame diagnostic against blind, the paired bootstrap of B-VLLM against Uniform, the points not finished, the
wall time), ``summary.csv`` (mean ± std over seeds
per method and length), ``points.csv`` (every method x length x seed, finished or not), ``bvllm_vs_uniform.csv`` and
the figures (:mod:`lit_bvllm.study.figures`). ``--quick true``: the same sweeps with one seed, the 64 s set only,
in their own folders (``<name>_quick``), with half the training steps (500 of the sweep files' 1,000).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import yaml

from lit_bvllm.study.figures import selection_example, write_figures
from lit_bvllm.study.records import (
    CANDIDATE,
    REFERENCE,
    ROLES,
    best_selector,
    bootstrap,
    collect,
    eval_length,
    every_frame_types,
    summarise,
)
from lit_bvllm.study.tables import write_report
from lit_bvllm.sweeps import make_report, print_plan
from lit_bvllm.sweeps.grid import Sweep, expand, steps
from lit_bvllm.sweeps.run import read_status, run_local, state

FILES = {role: f"experiments/sweeps/needle_{role}.yaml" for role in ROLES}
QUICK_EVAL = "needle_64s"
QUICK_STEPS = 500  # the quick variant's training steps: half the full recipe's 1,000 (finetune.yaml's)


# ------------------------------------------------------------------ the sweeps


def load_sweeps(files: dict[str, str], root: str, quick: bool = False,
                quick_steps: int | None = None) -> dict[str, Sweep]:
    """The study's sweeps, with ``root`` as their root; ``quick``: one seed, the 64 s set, ``<name>_quick`` folders
    (and ``quick_steps`` training steps when given). A ``ckpt_path`` into another study sweep's folder follows it."""
    full, moved = {}, {}
    for role, path in files.items():
        raw = {k: v for k, v in yaml.safe_load(Path(path).read_text()).items() if k not in ("launcher", "headline")}
        before = Path(raw.get("root", "runs/sweeps")) / raw["name"]
        full[role] = Sweep(**{**raw, "root": root})
        moved[before.as_posix()] = full[role]
    out = {}
    for role, s in full.items():
        if quick:
            fit_flags = {**s.fit_flags, **({"trainer.max_steps": quick_steps} if quick_steps else {})}
            s = replace(s, name=f"{s.name}_quick", seeds=(s.seeds or [0])[:1], extra_seeds={},
                        fit_flags=fit_flags,
                        evals={k: v for k, v in s.evals.items() if k == QUICK_EVAL} or s.evals)
        out[role] = s
    for s in out.values():
        for before, f in moved.items():
            if s.ckpt_path and s.ckpt_path.startswith(before + "/"):
                s.ckpt_path = (out_dir(out, f) / s.ckpt_path[len(before) + 1:]).as_posix()
    return out


def out_dir(sweeps: dict[str, Sweep], original: Sweep) -> Path:
    """The folder of the study sweep (quick or not) that was loaded as ``original``."""
    return next(s.dir for s in sweeps.values() if s.name.removesuffix("_quick") == original.name)


def run_sweeps(sweeps: dict[str, Sweep]) -> None:
    """Each sweep in order: its unfinished points (one after another), then its own table (``results.md``)."""
    for role in ROLES:
        s = sweeps[role]
        points = expand(s)
        pending = [p for p in points if state(s, p) != "done"]
        print(f"\n== study {role}: sweep {s.name}, {len(points)} points, {len(pending)} to run ({s.dir})", flush=True)
        t0 = time.time()
        run_local(s, pending)
        if pending:
            print(f"== study {role}: {time.time() - t0:.0f} s", flush=True)
        make_report(s)


# ------------------------------------------------------------------ wall time


def seconds_per_step(run_dir: Path) -> float | None:
    """Training seconds per step of a fit, from the wall times of its logged ``train/loss`` (TensorBoard events)."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return None
    rates = []
    for events in sorted(run_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        loss = acc.Scalars("train/loss") if "train/loss" in acc.Tags().get("scalars", []) else []
        if len(loss) >= 2 and loss[-1].step > loss[0].step:
            rates.append((loss[-1].wall_time - loss[0].wall_time) / (loss[-1].step - loss[0].step))
    return sum(rates) / len(rates) if rates else None


def step_times(sweeps: dict[str, Sweep]) -> list[tuple]:
    """``(role, setting, step, seconds, training steps, seconds per training step)`` of every finished step the
    sweeps' status files record (the last two for fits: None for tests)."""
    out = []
    for role, s in sweeps.items():
        for p in expand(s):
            for name, rec in ((read_status(s, p) or {}).get("steps") or {}).items():
                if rec.get("status") == "done" and rec.get("seconds") is not None:
                    fit = s.mode == "fit" and name == "fit"
                    out.append((role, p.setting, name, float(rec["seconds"]),
                                s.fit_flags.get("trainer.max_steps") if fit else None,
                                seconds_per_step(s.dir / p.id) if fit else None))
    return out


def estimate(full: dict[str, Sweep], measured: list[tuple], test_base: float | None = None) -> dict:
    """The full study's wall time from measured step times (:func:`step_times`). A command measured for the same
    method is its mean. A fit measured with another number of training steps adds or removes steps at its measured
    seconds per step (in proportion to the steps when that is unknown). A test of another length keeps
    ``test_base`` (the length-independent part: a blind test's time; 0 when unknown) and scales the rest by the
    length ratio (frames at 1 fps), from the same method's tests."""
    total, how = 0.0, {"measured": 0, "scaled": 0, "unknown": 0}
    for role, s in full.items():
        for p in expand(s):
            for st in steps(s, p, ["lit_bvllm"]):
                same = [m[3:] for m in measured if m[:3] == (role, p.setting, st.name)]
                if st.command == "fit":
                    want = s.fit_flags.get("trainer.max_steps")
                    exact = [t for t, n, _ in same if n == want]
                    guess = exact or [t + (want - n) * rate if rate else t * want / n for t, n, rate in same
                                      if n and want]
                else:
                    exact = [t for t, _, _ in same]
                    length = eval_length(st.name)
                    guess = exact or [_rescale(t, test_base, length / eval_length(m[2])) for m in measured
                                      if m[:2] == (role, p.setting) and m[2] != "fit" and length
                                      and eval_length(m[2]) for t in [m[3]]]
                if guess:
                    total += sum(guess) / len(guess)
                    how["measured" if exact else "scaled"] += 1
                else:
                    how["unknown"] += 1
    return {"seconds": total, **how}


def _rescale(seconds: float, base: float | None, ratio: float) -> float:
    base = min(base or 0.0, seconds)
    return base + (seconds - base) * ratio


# ------------------------------------------------------------------ the command


def study(quick: bool = False, root: str = "runs/sweeps", out: str | None = None, quick_steps: int = QUICK_STEPS,
          strategies: str = FILES["strategies"], controls: str = FILES["controls"],
          ablation: str = FILES["ablation"], training_free: str = FILES["training_free"], resamples: int = 10000,
          example: bool = True, dry_run: bool = False, report_only: bool = False) -> None:
    """The needle study: every strategy at θ = 96, the controls and B-VLLM's ablation on the 16, 64 and 128 s needle
    sets (three seeds; nine for B-VLLM and Uniform), then its tables and figures. Run again, it resumes: finished
    points are skipped.

    Args:
        quick: one seed and the 64 s set only, in ``<sweep>_quick`` folders and ``<root>/study_quick``.
        root: the folder of the study's sweeps.
        out: the report's folder (default ``<root>/study``, ``<root>/study_quick`` with ``--quick true``).
        quick_steps: training steps of the quick variant (the full study: the sweep files' 1,000).
        strategies: the sweep file of the strategies.
        controls: the sweep file of the controls (test mode on the strategies' Uniform checkpoints).
        ablation: the sweep file of B-VLLM's ablation.
        training_free: the sweep file of the training-free strategies (test mode on the Uniform checkpoints).
        resamples: bootstrap resamples of the B-VLLM - Uniform interval.
        example: draw the selection figure of one held-out example (``lit_bvllm show-selection``).
        dry_run: print every point and its commands; run nothing.
        report_only: run nothing; remake the tables and figures from what finished.
    """
    files = {"strategies": strategies, "controls": controls, "ablation": ablation, "training_free": training_free}
    sweeps = load_sweeps(files, root, quick, quick_steps)
    if dry_run:
        for role in ROLES:
            print_plan(sweeps[role], expand(sweeps[role]))
        print(f"\nstudy{' (quick)' if quick else ''}: " + ", ".join(f"{r} {len(expand(sweeps[r]))} points"
                                                             for r in ROLES))
        return
    t0 = time.time()
    if not report_only:
        run_sweeps(sweeps)
    ran = time.time() - t0 if not report_only else None
    folder = Path(out) if out else Path(root) / ("study_quick" if quick else "study")
    records = collect(sweeps)
    cells = summarise(records)
    pairs = [(("strategies", CANDIDATE), ("strategies", REFERENCE))]
    if best := best_selector(cells):  # B-VLLM against the best training-free selector, on the seeds they share
        pairs.append((("strategies", CANDIDATE), ("training_free", best)))
    boot = bootstrap(records, resamples, pairs=pairs)
    full = load_sweeps(files, root)
    quick_sweeps = load_sweeps(files, root, True, quick_steps)
    c = sweeps["controls"]  # a blind test decodes and encodes no frame: the part of a test that length leaves alone
    blind = [r["seconds"] for p in expand(c) if p.knobs.get("data.blind") is True
             for r in ((read_status(c, p) or {}).get("steps") or {}).values() if r.get("status") == "done"]
    base = sum(blind) / len(blind) if blind else None
    timing = {**estimate(full, step_times(full) + step_times(quick_sweeps), base), "test_base": base}
    timing["ran_seconds"] = ran
    timing["points_seconds"] = sum(m[3] for m in step_times(sweeps))
    figures = write_figures(cells, folder, every_frame_types(records))
    chosen = selection_example(sweeps, folder / "selection_example.png") if example else None
    paths = write_report(sweeps, records, cells, boot, timing, chosen, figures, folder)
    print((folder / "study.md").read_text())
    print("written: " + ", ".join(str(p) for p in [*paths, *figures] + ([chosen["figure"]] if chosen else [])))
    missing = [r for r in records if not r.metrics]
    if missing:
        print(f"\n{len(missing)} of {len(records)} method x length x seed results missing (listed in study.md); run "
              "the study again to resume")


def main(argv: list[str] | None = None) -> None:
    """``python -m lit_bvllm.study.runner [--quick true] ...``: the same as ``lit_bvllm study``."""
    from jsonargparse import CLI

    CLI(study, args=argv)


if __name__ == "__main__":
    main()
