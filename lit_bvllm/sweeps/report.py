"""A sweep's numbers: the finished points' results gathered into a table (mean ± std over seeds), written as
``results.csv`` and ``results.md``, and to TensorBoard (``<sweep>/tensorboard``: the HPARAMS tab, and scalars
against the knob for a one-knob sweep). Figures: :mod:`lit_bvllm.sweeps.curves`.

A VNBench type every frame answers (``every_frame_types`` of its results: the background colour, ``bg_every1``)
gets its column right after the headlines, and ``results.md`` a line saying that ``circular_accuracy`` leaves it
out and that a trained model should beat blind on it by 0.5 (``lit_bvllm.analysis.report.EVERY_FRAME_BAR``).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from lit_bvllm.analysis.report import EVERY_FRAME_BAR
from lit_bvllm.sweeps.grid import Point, Sweep, expand, short_names, steps
from lit_bvllm.sweeps.run import finished

NOT_METRICS = ("benchmark", "protocol", "evaluated_weights")  # settings and bookkeeping in a results file
HEADLINE = {"vnbench": "circular_accuracy", "mvbench": "mean_over_tasks"}  # else accuracy, else exact_match
FALLBACK = ("accuracy", "exact_match")


@dataclass
class Row:
    """One knob setting: its knob values (labels, in the sweep's order), the seeds that finished, and per metric
    the values of those seeds."""

    setting: str
    knobs: dict[str, str]
    values: dict[str, object]  # dotted key -> the value itself (numbers stay numbers, for axes)
    seeds: list[int | None] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)

    def mean(self, metric: str) -> float:
        return seed_mean(self.metrics.get(metric, []))

    def std(self, metric: str) -> float:
        return seed_std(self.metrics.get(metric, []))


def seed_mean(values: list[float]) -> float:
    """The mean over seeds; NaN for none."""
    return statistics.fmean(values) if values else math.nan


def seed_std(values: list[float]) -> float:
    """The sample standard deviation over seeds (n - 1); NaN for fewer than two."""
    return statistics.stdev(values) if len(values) >= 2 else math.nan


@dataclass
class Table:
    """Every finished knob setting; ``metrics`` in column order (headline metrics first); ``headline`` maps each
    benchmark to its headline metric's column."""

    knobs: list[str]  # dotted keys
    names: dict[str, str]  # dotted key -> short name (the table's column)
    levels: dict[str, dict[str, object]]  # dotted key -> {label: value} of every value swept, finished or not
    rows: list[Row]
    metrics: list[str]
    headline: dict[str, str]
    every_frame: list[str] = field(default_factory=list)  # metrics of types every frame answers (in ``metrics``)
    titles: dict[str, str] = field(default_factory=dict)  # benchmark -> what the sweep's runs call it (figures)


def flatten(result: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of a (nested) results dict as ``{"a/b": float}``, as the evaluation logs them."""
    flat = {}
    for k, v in result.items():
        k = k or "_empty"
        if isinstance(v, dict):
            flat.update(flatten(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            flat[f"{prefix}{k}"] = float(v)
    return flat


def eval_config_name(configs: list[str]) -> str | None:
    """The benchmark config a test-mode sweep's runs read (``experiments/eval/needle.yaml`` -> ``needle``): the last
    config in an ``eval`` folder other than ``base.yaml``."""
    names = [Path(c).stem for c in configs if Path(c).parent.name == "eval" and Path(c).stem != "base"]
    return names[-1] if names else None


def point_results(sweep: Sweep, point: Point, every_frame: dict[str, None] | None = None,
                  titles: dict[str, str] | None = None) -> dict[str, dict[str, float]]:
    """``{benchmark: flat metrics}`` of a point's results files (``<benchmark>_results.json`` of each test). A
    benchmark that two evals of one point both test is named ``<benchmark>@<eval>``. ``every_frame``, when given,
    gets the ``<benchmark>/circular_per_category/<type>`` metrics of the types every frame answers; ``titles`` the
    name the sweep's runs give each benchmark (the eval's name, or the benchmark config's: ``needle`` for the
    synthetic needle set that VNBench's rules score), for figures."""
    found = []
    for step in steps(sweep, point, ["lit_bvllm"]):
        if step.command == "test":
            for path in sorted(step.run_dir.glob("*_results.json")):
                result = json.loads(path.read_text())
                metrics = flatten({k: v for k, v in result.items() if k not in NOT_METRICS})
                found.append((path.name.removesuffix("_results.json"), step.name, metrics,
                              result.get("every_frame_types") or []))
    names = [b for b, *_ in found]
    out = {}
    for b, e, m, types in found:
        name = b if names.count(b) == 1 else f"{b}@{e}"
        out[name] = m
        if titles is not None:
            source = e if e != "test" else eval_config_name(sweep.configs)
            titles[name] = f"{source} ({b})" if source and source != b else b
        if every_frame is not None:
            every_frame.update(dict.fromkeys(f"{name}/circular_per_category/{t}" for t in types))
    return out


def headline_metric(benchmark: str, metrics: set[str], choice: str | dict[str, str] | None = None) -> str | None:
    """A benchmark's headline metric: ``choice`` (one name, or one per benchmark) when given, else
    ``circular_accuracy`` for VNBench, ``mean_over_tasks`` for MVBench, else ``accuracy``, else ``exact_match``."""
    base = benchmark.split("@", 1)[0]
    if isinstance(choice, dict):
        choice = choice.get(benchmark, choice.get(base))
    for name in ([choice] if choice else []) + [HEADLINE.get(base)] + list(FALLBACK):
        if name and f"{benchmark}/{name}" in metrics:
            return f"{benchmark}/{name}"
    return None


def collect(sweep: Sweep, headline: str | dict[str, str] | None = None) -> Table:
    """The table of the finished points: one row per knob setting, in the grid's order."""
    knobs = [*sweep.grid, *sweep.zipped]
    names = short_names(knobs)
    rows: dict[str, Row] = {}
    benchmarks: dict[str, None] = {}
    seen: dict[str, None] = {}
    every: dict[str, None] = {}
    titles: dict[str, str] = {}
    levels: dict[str, dict[str, object]] = {k: {} for k in knobs}
    for point in expand(sweep):
        for k, v in point.knobs.items():
            levels[k].setdefault(point.labels[k], v)
        if not finished(sweep, point):
            continue
        row = rows.setdefault(point.setting, Row(point.setting, point.labels, dict(point.knobs)))
        row.seeds.append(point.seed)
        for bench, metrics in point_results(sweep, point, every, titles).items():
            benchmarks[bench] = None
            for m, v in metrics.items():
                row.metrics.setdefault(f"{bench}/{m}", []).append(v)
                seen[f"{bench}/{m}"] = None
    heads = {b: h for b in benchmarks if (h := headline_metric(b, set(seen), headline))}
    every_frame = [m for m in every if m in seen and m not in heads.values()]
    first = [*heads.values(), *every_frame]  # the headlines, then the types every frame answers
    ordered = first + [m for m in seen if m not in first]
    return Table(knobs, names, levels, list(rows.values()), ordered, heads, every_frame, titles)


def write_tables(table: Table, out: Path) -> tuple[Path, Path]:
    """``results.csv`` (``<metric>`` the mean, ``<metric>_std``) and ``results.md`` (``mean ± std``)."""
    out.mkdir(parents=True, exist_ok=True)
    cols = [table.names[k] for k in table.knobs]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setting", *cols, "seeds", "n", *(c for m in table.metrics for c in (m, f"{m}_std"))])
        for r in table.rows:
            w.writerow([r.setting, *(r.knobs[k] for k in table.knobs), " ".join(map(str, r.seeds)), len(r.seeds),
                        *(_num(x) for m in table.metrics for x in (r.mean(m), r.std(m)))])
    lines = ["| " + " | ".join([*cols, "n", *table.metrics]) + " |",
             "|" + "---|" * (len(cols) + 1 + len(table.metrics))]
    for r in table.rows:
        cells = [_pm(r.mean(m), r.std(m)) for m in table.metrics]
        lines.append("| " + " | ".join([*(r.knobs[k] for k in table.knobs), str(len(r.seeds)), *cells]) + " |")
    for m in table.every_frame:
        lines += ["", f"{m}: every frame shows the answer (a diagnostic of whether frames reach the LLM, left out of "
                  f"circular_accuracy); a trained model should beat blind on it by ≥ {EVERY_FRAME_BAR}."]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    return out / "results.csv", out / "results.md"


def write_tensorboard(sweep: Sweep, table: Table) -> Path:
    """``<sweep>/tensorboard``, rewritten: one run per finished point with its knobs and seed as hparams and every
    metric declared (the HPARAMS tab compares points), and for a one-knob sweep a ``curves`` run whose scalars are
    the seed means with the knob value as the step (its index when a value is not an integer; the value itself is
    then logged as ``knob/<name>``)."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    out = sweep.dir / "tensorboard"
    shutil.rmtree(out, ignore_errors=True)
    declared = {m: math.nan for m in table.metrics}
    rows = {r.setting: r for r in table.rows}
    for point in expand(sweep):
        row = rows.get(point.setting)
        if row is None or point.seed not in row.seeds:
            continue
        i = row.seeds.index(point.seed)
        params = {table.names[k]: _hparam(v, row.knobs[k]) for k, v in point.knobs.items()}
        params["seed"] = -1 if point.seed is None else point.seed
        with SummaryWriter(str(out / point.id)) as w:
            for summary in hparams(params, declared):
                w.file_writer.add_summary(summary)
            for m, vs in row.metrics.items():
                if len(vs) == len(row.seeds):
                    w.add_scalar(m, vs[i])
    if len(table.knobs) == 1 and table.rows:
        k = table.knobs[0]
        values = [r.values[k] for r in table.rows]
        integral = all(isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer()
                       for v in values)
        with SummaryWriter(str(out / "curves")) as w:
            for i, r in enumerate(table.rows):
                step = int(r.values[k]) if integral else i
                if not integral:
                    if isinstance(r.values[k], (int, float)) and not isinstance(r.values[k], bool):
                        w.add_scalar(f"knob/{table.names[k]}", r.values[k], step)
                    w.add_text(f"knob/{table.names[k]}", r.knobs[k], step)
                for m in table.metrics:
                    if m in r.metrics:
                        w.add_scalar(m, r.mean(m), step)
    return out


def _hparam(value, label: str):
    return value if isinstance(value, (int, float, str)) else label


def _num(x: float) -> str:
    return "" if math.isnan(x) else repr(x)


def _pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return ""
    return f"{mean:.4g}" if math.isnan(std) else f"{mean:.4g} ± {std:.2g}"
