"""``lit_bvllm sweep --config experiments/sweeps/<name>.yaml``: a grid of ``lit_bvllm test`` (or ``fit`` + ``test``)
runs, one run directory per point, then a table, figures and TensorBoard runs of the benchmark numbers.

- :mod:`~lit_bvllm.sweeps.grid`: the sweep file, its points, their ids and commands;
- :mod:`~lit_bvllm.sweeps.run`: running points (status, reruns, the local and slurm launchers);
- :mod:`~lit_bvllm.sweeps.report`: the table (mean ± std over seeds) and TensorBoard;
- :mod:`~lit_bvllm.sweeps.curves`: the figures.
"""

from __future__ import annotations

from typing import Literal

from lit_bvllm.sweeps.grid import Point, Sweep, expand, show, steps
from lit_bvllm.sweeps.report import collect, write_tables, write_tensorboard
from lit_bvllm.sweeps.run import plan, read_status, run_local, run_slurm, state

__all__ = ["Point", "Sweep", "expand", "make_report", "steps", "sweep"]


def sweep(
    name: str,
    configs: list[str],
    mode: Literal["test", "fit"] = "test",
    grid: dict[str, list] | None = None,
    zipped: dict[str, list] | None = None,
    seeds: list[int] | None = None,
    extra_seeds: dict[str, list[int]] | None = None,
    ckpt_path: str | None = None,
    evals: dict[str, list[str]] | None = None,
    flags: dict | None = None,
    fit_flags: dict | None = None,
    test_flags: dict | None = None,
    root: str = "runs/sweeps",
    launcher: Literal["local", "slurm"] = "local",
    slurm: dict | None = None,
    headline: str | dict[str, str] | None = None,
    dry_run: bool = False,
    report_only: bool = False,
) -> None:
    # plain dict and list types: jsonargparse would turn a reducer spec ({class_path: ...}) typed Any into a
    # resolved Namespace of every argument; a knob value is passed on as written
    """Run a sweep file's grid of test (or fit + test) runs, then tabulate and plot what finished.

    Args:
        name: the sweep's name: its folder ``<root>/<name>`` and the runs' TensorBoard name.
        configs: the base ``--config`` files of every point, in order (what ``lit_bvllm fit/test`` would take).
        mode: ``test``: each point evaluates ``ckpt_path`` with its knobs set at inference (B-VLLM Fig. 3);
            ``fit``: each point trains, then each of ``evals`` tests its ``checkpoints/last.ckpt``.
        grid: dotted keys and their values, crossed (``model.reducer.init_args.budget: [128, 256]``). A value may
            be a whole spec (``model.reducer: {class_path: ..., init_args: {...}}``: give every argument, since
            arguments of the base config's reducer with the same name carry over).
        zipped: dotted keys whose lists (of one length) go together, row by row, crossed with ``grid``.
        seeds: ``seed_everything`` of each point's runs: every knob setting runs once per seed (none: the configs'
            seed, and no seed in the point ids).
        extra_seeds: more seeds for some settings, by the setting's id (the point id without ``_seed=N``):
            ``{reducer=BVLLM: [3, 4, 5], reducer=Uniform: [3, 4, 5]}`` gives the comparison a study is about more seeds
            than the rest of its rows.
        ckpt_path: test mode: the trained checkpoint every point evaluates (none: the configs' weights); ``{seed}``
            in it is each point's seed (``runs/sweeps/needle_strategies/reducer=Uniform_seed={seed}/checkpoints/
            last.ckpt``: the checkpoint a fit sweep trained with that seed).
        evals: named evaluations, each a list of configs added after ``configs`` for a test
            (``needle: [experiments/eval/base.yaml, experiments/eval/needle.yaml]``); results go to
            ``<point>/<eval>``. Required in fit mode; in test mode, none: ``configs`` are the test's own.
        flags: fixed ``dotted.key: value`` flags of every command of every point.
        fit_flags: fixed flags of fit commands only (``trainer.max_steps``).
        test_flags: fixed flags of test commands only (``data.limit``).
        root: the folder that holds the sweep's folder.
        launcher: ``local``: one point after another in subprocesses; ``slurm``: a submitit job array.
        slurm: submitit ``AutoExecutor`` parameters (``timeout_min``, ``gpus_per_node``, ``slurm_partition``,
            ``slurm_array_parallelism``, ...; ``cluster: local`` runs the array as local processes).
        headline: the metric plotted: one name for every benchmark, or ``{benchmark: name}`` (default:
            ``circular_accuracy`` for VNBench, ``mean_over_tasks`` for MVBench, else ``accuracy``, else
            ``exact_match``).
        dry_run: print the points and their exact commands; run nothing.
        report_only: run nothing; remake the table, figures and TensorBoard runs from the finished points.
    """
    spec = Sweep(name, configs, mode, grid or {}, zipped or {}, seeds, extra_seeds or {}, ckpt_path, evals or {},
                 flags or {}, fit_flags or {}, test_flags or {}, root, slurm or {})
    points = expand(spec)
    if dry_run:
        print_plan(spec, points)
        return
    pending = [p for p in points if state(spec, p) != "done"]
    if not report_only:
        print(f"sweep {spec.name}: {len(points)} points, {len(points) - len(pending)} finished, {len(pending)} to "
              f"run ({launcher}); folder {spec.dir}", flush=True)
        if pending:
            (run_slurm if launcher == "slurm" else run_local)(spec, pending)
    make_report(spec, headline)
    failed = [p for p in points if state(spec, p) != "done"]
    for p in failed:
        err = (read_status(spec, p) or {}).get("error") or {}
        if err:
            text = (err.get("message") or err.get("stderr_tail") or "").strip().splitlines()[-6:]
            print(f"\nFAILED {p.id} (step {err.get('step')}, exit code {err.get('returncode')}; {err.get('log')}):\n  "
                  + "\n  ".join(text))
    if failed and not report_only:
        raise SystemExit(f"sweep {spec.name}: {len(failed)} of {len(points)} points failed "
                         f"({', '.join(p.id for p in failed[:5])}{', ...' if len(failed) > 5 else ''}); the table "
                         f"holds the {len(points) - len(failed)} that finished. Run the sweep again to rerun them.")
    if failed:
        print(f"\n{len(failed)} of {len(points)} points not finished")


def make_report(spec: Sweep, headline: str | dict[str, str] | None = None) -> None:
    """Table, figures and TensorBoard runs of the finished points; prints the headline columns."""
    from lit_bvllm.sweeps.curves import write_figures

    table = collect(spec, headline)
    csv_path, md_path = write_tables(table, spec.dir)
    figures = write_figures(table, spec.dir)
    tb = write_tensorboard(spec, table)
    if isinstance(headline, str):
        for bench, metric in table.headline.items():
            if not metric.endswith(f"/{headline}"):
                print(f"note: {bench} reports no '{headline}'; its headline is {metric}")
    heads = list(table.headline.values())
    print(f"\n{len(table.rows)} settings finished ({sum(len(r.seeds) for r in table.rows)} points); headline: "
          + (", ".join(heads) or "none"))
    cols = [table.names[k] for k in table.knobs]
    print("| " + " | ".join([*cols, "n", *heads]) + " |\n|" + "---|" * (len(cols) + 1 + len(heads)))
    for r in table.rows:
        cells = [f"{r.mean(m):.4g}" + ("" if len(r.metrics.get(m, [])) < 2 else f" ± {r.std(m):.2g}") for m in heads]
        print("| " + " | ".join([*(r.knobs[k] for k in table.knobs), str(len(r.seeds)), *cells]) + " |")
    print(f"table: {csv_path}, {md_path}; figures: {', '.join(p.name for p in figures) or 'none'}; "
          f"tensorboard --logdir {tb}")


def print_plan(spec: Sweep, points: list[Point]) -> None:
    """What a run would do: every point, its state, and each command it would run (kept steps marked)."""
    print(f"sweep {spec.name} ({spec.mode} mode): {len(points)} points in {spec.dir}")
    for p in points:
        print(f"\n{p.id} [{state(spec, p)}]")
        if state(spec, p) == "done":
            continue
        for step, argv in plan(spec, p):
            print(f"  {step.name}: " + ("kept (finished earlier)" if argv is None else show(argv)))
