"""The needle study's figures (:mod:`lit_bvllm.study`), PNG with matplotlib's object API (Agg canvas, no pyplot):

- ``accuracy_vs_length.png``: circular accuracy (mean ± std over seeds) against video length; left, a line per
  strategy with the controls dashed; right, B-VLLM and its ablation variants, Uniform dashed for reference;
- ``hit_rate_vs_length.png``: the selection hit rate against length for every method that reports kept frames,
  with the uniform pick of as many frames as B-VLLM keeps dashed;
- ``every_frame_vs_length.png`` (when the sets have a type every frame answers, ``bg_every1``): its circular
  accuracy against length per method, blind in black and the bar a trained method must reach (blind + 0.5) dotted;
- ``selection_example.png``: ``lit_bvllm show-selection`` of a trained B-VLLM on one held-out needle question.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import yaml

from lit_bvllm.analysis.report import EVERY_FRAME_BAR
from lit_bvllm.study.records import BLIND, CANDIDATE, REFERENCE, Cell, eval_length
from lit_bvllm.sweeps.grid import Sweep, console_script, expand
from lit_bvllm.sweeps.run import state


def write_figures(cells: list[Cell], out: Path, every_frame: list[str] | tuple = ()) -> list[Path]:
    """The figures when any method finished at any length; their paths. ``every_frame``: the task types every
    frame answers (``bg_every1``), drawn in ``every_frame_vs_length.png`` (the first of them)."""
    if not any(c.seeds for c in cells):
        return []
    out.mkdir(parents=True, exist_ok=True)
    paths = [accuracy_figure(cells, out / "accuracy_vs_length.png"),
             hit_rate_figure(cells, out / "hit_rate_vs_length.png")]
    if every_frame:
        paths.append(every_frame_figure(cells, f"circular/{every_frame[0]}", out / "every_frame_vs_length.png"))
    return paths


STYLE = {"strategies": "-", "controls": "--", "ablation": ":", "training_free": "-."}  # line style of a role


def lines(cells: list[Cell], metric: str) -> dict[tuple[str, str], list[tuple[float, float, float]]]:
    """``{(role, method): [(length, mean, std), ...]}`` of the cells that report ``metric``."""
    out: dict[tuple[str, str], list] = {}
    for c in cells:
        if c.values.get(metric) and c.length is not None:
            std = c.std(metric)
            out.setdefault((c.role, c.method), []).append((c.length, c.mean(metric), 0.0 if math.isnan(std) else std))
    return {k: sorted(v) for k, v in out.items()}


def accuracy_figure(cells: list[Cell], path: Path) -> Path:
    """The strategies and controls; the training-free rows beside B-VLLM and Uniform (a panel when there are
    any); B-VLLM's ablation beside B-VLLM and Uniform."""
    data = lines(cells, "circular_accuracy")
    free = any(role == "training_free" for role, _ in data)
    fig = _figure(3 if free else 2)
    axes = fig.subplots(1, 3 if free else 2, sharey=True)
    left, right = axes[0], axes[-1]
    pair = lambda role, method: role == "strategies" and method in (CANDIDATE, REFERENCE)  # noqa: E731
    for i, ((role, method), pts) in enumerate(data.items()):
        if role in ("strategies", "controls"):
            _plot(left, pts, method, STYLE[role], _color(i))
        if free and (role == "training_free" or pair(role, method)):
            _plot(axes[1], pts, method, "--" if method == REFERENCE else STYLE[role], _color(i))
        if role == "ablation" or pair(role, method):
            _plot(right, pts, method, "--" if method == REFERENCE else "-", _color(i))
    left.set_title("strategies at θ = 96 (controls dashed)", fontsize="small")
    if free:
        axes[1].set_title("training-free on Uniform's checkpoint (dash-dot)", fontsize="small")
    right.set_title(f"{CANDIDATE} ablation (Table 3)", fontsize="small")
    for ax in axes:
        _axes(ax, [p[0] for pts in data.values() for p in pts])
        ax.axhline(0.25, color="grey", linewidth=0.8, linestyle=":", label="same option every try (0.25)")
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    left.set_ylabel("circular accuracy")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def hit_rate_figure(cells: list[Cell], path: Path) -> Path:
    data = lines(cells, "selection/hit_rate")
    fig = _figure(1)
    ax = fig.subplots()
    for i, ((role, method), pts) in enumerate(data.items()):
        _plot(ax, pts, method, STYLE[role], _color(i))
    uniform = lines([c for c in cells if (c.role, c.method) == ("strategies", CANDIDATE)], "selection/uniform_hit_rate")
    for pts in uniform.values():
        _plot(ax, pts, f"uniform, as many frames as {CANDIDATE}", "--", color="grey")
    _axes(ax, [p[0] for pts in data.values() for p in pts])
    ax.set_ylabel("needle frame kept (hit rate)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if not data:
        ax.text(0.5, 0.5, "no method reported kept frames", ha="center", va="center", transform=ax.transAxes)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def every_frame_figure(cells: list[Cell], metric: str, path: Path) -> Path:
    data = lines(cells, metric)
    fig = _figure(1)
    ax = fig.subplots()
    top = 1.02
    for i, ((role, method), pts) in enumerate(data.items()):
        if (role, method) == ("controls", BLIND):
            _plot(ax, pts, method, "--", color="black")
            bar = [p[1] + EVERY_FRAME_BAR for p in pts]  # above 1 where blind is above 0.5: no method can pass
            ax.plot([p[0] for p in pts], bar, color="black", linestyle=":",
                    label=f"{BLIND} + {EVERY_FRAME_BAR} (the bar)")
            top = max(top, max(bar) + 0.02)
        else:
            _plot(ax, pts, method, STYLE[role], _color(i))
    _axes(ax, [p[0] for pts in data.values() for p in pts])
    ax.set_title(f"{metric.split('/', 1)[1]}: every frame shows the answer", fontsize="small")
    ax.set_ylabel("circular accuracy")
    ax.set_ylim(-0.02, top)
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def selection_example(sweeps: dict[str, Sweep], path: Path) -> dict | None:
    """``lit_bvllm show-selection`` of the first B-VLLM checkpoint that finished on the first retrieval question of
    the longest needle set the strategies sweep tests. Its description (point, question, answer, needle times) is
    written beside it (``<path>.json``); both are kept when both exist (the study resumes), else drawn again."""
    about = path.with_suffix(".json")
    if path.is_file() and about.is_file():
        return {**json.loads(about.read_text()), "figure": str(path), "kept": True}
    s = sweeps["strategies"]
    done = [p for p in expand(s) if p.labels.get("model.reducer") == CANDIDATE and state(s, p) == "done"]
    if not done:
        return None
    ev = max(s.evals, key=lambda e: eval_length(e) or 0)
    cfg = yaml.safe_load(Path(s.evals[ev][-1]).read_text())
    root = Path(cfg["data"]["init_args"]["benchmark"]["init_args"]["root"])
    files = [root / "VNBench_qa.json"] if (root / "VNBench_qa.json").is_file() else sorted(root.glob("*.json"))
    items = [i for f in files for i in json.loads(f.read_text()) if isinstance(i, dict) and "question" in i]
    item = next((i for i in items if str(i.get("type", "")).startswith("ret")), items[0] if items else None)
    if item is None:
        return None
    spec = done[0].knobs["model.reducer"]
    model_flags = {k: v for k, v in {**s.flags, **s.fit_flags}.items() if k.startswith("model.")}
    argv = [*console_script(), "show-selection", *(a for c in s.configs for a in ("--config", c)),
            *(f"--{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in model_flags.items()),
            f"--model.reducer={json.dumps(spec)}", f"--ckpt_path={s.dir / done[0].id / 'checkpoints' / 'last.ckpt'}",
            f"--video={root / item['video']}", f"--question={item['question']}",
            f"--options={json.dumps(item['options'])}", f"--needle_times={json.dumps(item.get('needle_times') or [])}",
            f"--out={path}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(argv, capture_output=True, text=True)
    (path.parent / "selection_example.log").write_text(" ".join(argv) + "\n\n" + proc.stdout + proc.stderr)
    if proc.returncode != 0 or not path.is_file():
        print(f"selection example failed (exit code {proc.returncode}); see {path.parent / 'selection_example.log'}")
        return None
    example = {"point": done[0].id, "eval": ev, "question_id": item.get("question_id"), "question": item["question"],
               "gt": item.get("gt"), "needle_times": item.get("needle_times")}
    about.write_text(json.dumps(example, indent=2))
    return {**example, "figure": str(path)}


def _plot(ax, pts, label, style, color=None) -> None:
    xs, ys, es = zip(*pts)
    ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, linestyle=style, label=label, color=color)


def _color(i: int):
    from matplotlib import colormaps

    return colormaps["tab20"](i % 20)


def _axes(ax, lengths: list[float]) -> None:
    ticks = sorted(set(lengths))
    if len(ticks) > 1:
        ax.set_xscale("log", base=2)
    if ticks:
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel("video length (s, 1 fps)")
    ax.grid(alpha=0.3)


def _figure(panels: int):
    from matplotlib.figure import Figure

    return Figure(figsize=(5.2 * panels, 4.0), layout="constrained")
