"""A sweep's figures (PNG, matplotlib's object API with the Agg canvas: no display, no pyplot state).

- ``curve_<knob>.png`` for each swept knob: the headline metric (mean over seeds, ± std as error bars) against the
  knob; one line per benchmark when it is the only knob, else one panel per benchmark and one line per setting of
  the other knobs (per strategy when the reducer is a knob). Lines that coincide (a knob that acts after the one on
  the axis: R for the hit rate against L*) are told apart by their markers and a small sideways offset. The
  selection hit rate gets its baseline, a uniform pick of as many frames (``selection/uniform_hit_rate``), dashed.
  Panels are titled as the sweep's runs name the benchmark (``needle (vnbench)``).
- ``heatmap_lstar_r.png`` when ``num_frames`` (L*) and ``num_tokens`` (R) are both swept, as in B-VLLM Fig. 3a, and
  ``heatmap_tau_gamma.png`` for ``tau`` and ``gamma`` (Fig. 3b): one panel per benchmark; a cell averages the
  settings of any other knob.
"""

from __future__ import annotations

import math
from pathlib import Path

from lit_bvllm.sweeps.report import Row, Table

SYMBOLS = {"num_frames": "L* (frames kept)", "num_tokens": "R (tokens per frame)", "budget": "θ (token budget)",
           "tau": "τ (Gumbel temperature)", "gamma": "γ (merge threshold)"}
"""The B-VLLM paper's symbol for each knob a figure puts on an axis (the knob's own name otherwise)."""
HEATMAPS = {"lstar_r": ("num_frames", "num_tokens", SYMBOLS["num_frames"], SYMBOLS["num_tokens"]),
            "tau_gamma": ("tau", "gamma", SYMBOLS["tau"], SYMBOLS["gamma"])}


def axis_label(name: str) -> str:
    """A knob's axis label: the paper's symbol for B-VLLM's knobs (``num_frames`` is L*), else the knob's name."""
    return SYMBOLS.get(name.rsplit(".", 1)[-1], name)


def write_figures(table: Table, out: Path) -> list[Path]:
    """Every figure the table supports; their paths."""
    if not table.rows or not table.headline:
        return []
    out.mkdir(parents=True, exist_ok=True)
    paths = [curve(table, k, out / f"curve_{table.names[k]}.png") for k in table.knobs]
    for name, (y_knob, x_knob, y_label, x_label) in HEATMAPS.items():
        y, x = _knob(table, y_knob), _knob(table, x_knob)
        if y and x:
            paths.append(heatmap(table, y, x, y_label, x_label, out / f"heatmap_{name}.png"))
    return paths


def curve(table: Table, knob: str, path: Path) -> Path:
    """The headline metric against one knob (see the module docstring)."""
    values, ticks = _axis(table, knob)
    numeric = all(_is_number(v) for v in table.levels[knob].values())  # else categories: points, no lines
    others = [k for k in table.knobs if k != knob]
    panels = [None] if not others else list(table.headline)
    fig = _figure(len(panels), 1)
    span = (max(values.values()) - min(values.values())) or 1.0
    for ax, bench in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        if bench is None:  # the only knob: a line per benchmark
            lines = {table.titles.get(b, b): (table.rows, m) for b, m in table.headline.items()}
        else:
            lines = {g: (rows, table.headline[bench]) for g, rows in _groups(table.rows, others, table).items()}
        for i, (label, (rows, metric)) in enumerate(lines.items()):
            dodge = (i - (len(lines) - 1) / 2) * 0.015 * span  # coinciding lines stay visible
            pts = sorted((values[r.knobs[knob]], r.mean(metric), r.std(metric)) for r in rows
                         if not math.isnan(r.mean(metric)))
            if pts:
                xs, ys, es = zip(*pts)
                drawn = ax.errorbar([x + dodge for x in xs], ys, yerr=[0 if math.isnan(e) else e for e in es],
                                    marker=MARKERS[i % len(MARKERS)], capsize=3, linestyle="-" if numeric else "none",
                                    label=label)
                _baseline(ax, table, rows, knob, metric, values, dodge, drawn.lines[0].get_color(), numeric, i == 0)
        ax.set_xlabel(axis_label(table.names[knob]))
        ax.set_ylabel(_metric_label(table, bench))
        if bench is not None:
            ax.set_title(table.titles.get(bench, bench))
        ax.set_xticks(list(values.values()), ticks, rotation=30 if max(map(len, ticks)) > 6 else 0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


MARKERS = "osD^vP*X"
BASELINES = {"selection/hit_rate": ("selection/uniform_hit_rate", "uniform pick of as many frames"),
             "selection/event_recall": ("selection/uniform_event_recall", "uniform pick of as many frames")}
"""A metric and the baseline its results carry beside it (drawn dashed, in the metric's line colour)."""


def _metric_label(table: Table, bench: str | None) -> str:
    """The y axis: the headline metric's name without its benchmark (the same metric for every line)."""
    names = {m.split("/", 1)[1] for b, m in table.headline.items() if bench is None or b == bench}
    return names.pop() if len(names) == 1 else "headline metric"


def _baseline(ax, table: Table, rows: list[Row], knob: str, metric: str, values: dict, dodge: float, color,
              numeric: bool, first: bool) -> None:
    """The metric's baseline (:data:`BASELINES`) for the same rows, dashed, labelled once per panel."""
    bench, _, name = metric.partition("/")
    if name not in BASELINES:
        return
    base, label = BASELINES[name]
    pts = sorted((values[r.knobs[knob]], r.mean(f"{bench}/{base}")) for r in rows
                 if not math.isnan(r.mean(f"{bench}/{base}")))
    if pts:
        xs, ys = zip(*pts)
        ax.plot([x + dodge for x in xs], ys, linestyle="--" if numeric else "none", marker="x", color=color,
                alpha=0.7, label=label if first else None)


def heatmap(table: Table, y_knob: str, x_knob: str, y_label: str, x_label: str, path: Path) -> Path:
    """The headline metric over two knobs, one panel per benchmark; empty cells were not finished."""
    ys, xs = _distinct(table, y_knob), _distinct(table, x_knob)
    others = [table.names[k] for k in table.knobs if k not in (y_knob, x_knob)]
    fig = _figure(len(table.headline), 1.1)
    for ax, (bench, metric) in zip(fig.subplots(1, len(table.headline), squeeze=False)[0], table.headline.items()):
        grid = [[math.nan] * len(xs) for _ in ys]
        for i, yv in enumerate(ys):
            for j, xv in enumerate(xs):
                cell = [r.mean(metric) for r in table.rows if r.knobs[y_knob] == yv and r.knobs[x_knob] == xv]
                cell = [v for v in cell if not math.isnan(v)]
                grid[i][j] = sum(cell) / len(cell) if cell else math.nan
        im = ax.imshow(grid, cmap="viridis", origin="lower", aspect="auto")
        for i in range(len(ys)):
            for j in range(len(xs)):
                if not math.isnan(grid[i][j]):
                    light = im.norm(grid[i][j]) > 0.6  # viridis turns yellow: dark text there
                    ax.text(j, i, f"{grid[i][j]:.3g}", ha="center", va="center", color="k" if light else "w",
                            fontsize="small")
        ax.set_xticks(range(len(xs)), xs)
        ax.set_yticks(range(len(ys)), ys)
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.set_title(f"{metric}" + (f"\n(mean over {', '.join(others)})" if others else ""), fontsize="small")
        fig.colorbar(im, ax=ax)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _figure(panels: int, aspect: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(4.5 * aspect * panels, 3.6), layout="constrained")


def _knob(table: Table, name: str) -> str | None:
    """The swept key that ends in ``name`` (``model.reducer.init_args.num_frames`` for ``num_frames``)."""
    found = [k for k in table.knobs if k == name or k.endswith(f".{name}")]
    return found[0] if len(found) == 1 else None


def _distinct(table: Table, knob: str) -> list[str]:
    """The labels of every value the sweep gives a knob (finished or not): numbers in increasing order, others as
    the grid lists them."""
    levels = table.levels[knob]
    return sorted(levels, key=levels.get) if all(_is_number(v) for v in levels.values()) else list(levels)


def _axis(table: Table, knob: str) -> tuple[dict[str, float], list[str]]:
    """x position per value label (the number itself, or 0, 1, ... for other values), and the tick labels."""
    labels = _distinct(table, knob)
    if all(_is_number(table.levels[knob][lab]) for lab in labels):
        return {lab: float(table.levels[knob][lab]) for lab in labels}, labels
    return {lab: float(i) for i, lab in enumerate(labels)}, labels


def _groups(rows: list[Row], others: list[str], table: Table) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(", ".join(f"{axis_label(table.names[k]).split(' ')[0]}={r.knobs[k]}" for k in others),
                       []).append(r)
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
