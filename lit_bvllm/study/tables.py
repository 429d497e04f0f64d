"""The needle study's tables (:mod:`lit_bvllm.study`): ``study.md`` (every table, the every-frame diagnostic against
blind, the paired bootstrap, the missing points, the wall time), ``summary.csv`` (mean and std over seeds per method
and length), ``points.csv`` (every method x length x seed and its state) and ``bvllm_vs_uniform.csv``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from lit_bvllm.analysis.report import EVERY_FRAME_BAR
from lit_bvllm.study.records import BLIND, CANDIDATE, REFERENCE, Cell, Record, eval_length, every_frame_types
from lit_bvllm.sweeps.grid import Sweep

KINDS = {"strategies": "strategy", "controls": "control (Uniform ckpt)", "ablation": "ablation",
         "training_free": "training-free (Uniform ckpt)"}


def pm(cell: Cell, metric: str) -> str:
    """``mean ± std`` over the finished seeds, ``(n/N)`` when seeds are missing, ``missing`` when none finished, ``—``
    when the method does not report the metric."""
    v = cell.values.get(metric, [])
    if not cell.seeds:
        return "missing"
    if not v:
        return "—"
    s = f"{cell.mean(metric):.3f}" + ("" if len(v) < 2 else f" ± {cell.std(metric):.3f}")
    return s if len(v) == cell.expected else f"{s} ({len(v)}/{cell.expected})"


def per_length(means: list[float | None], fmt: str) -> str:
    """One number when every length shows the same, else one per length (``32 / 96 / 96``); ``?`` for a length
    without a measurement (``?`` alone when none has one)."""
    if all(m is None for m in means):
        return "?"
    shown = ["?" if m is None else fmt.format(m) for m in means]
    return shown[0] if len(set(shown)) == 1 else " / ".join(shown)


def tokens(cells: list[Cell]) -> str:
    """Visual tokens per item in the evaluations, mean over items and seeds, per length (:func:`per_length`)."""
    return per_length([sum(c.tokens) / len(c.tokens) if c.tokens else None for c in cells], "{:.0f}")


def gflops(cells: list[Cell]) -> str:
    """The LLM's prefill GFLOPs per item, mean over items and seeds, per length (:func:`per_length`)."""
    return per_length([sum(c.flops) / len(c.flops) / 1e9 if c.flops else None for c in cells], "{:.3g}")


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def write_report(sweeps: dict[str, Sweep], records: list[Record], cells: list[Cell], boot: list[dict], timing: dict,
                 example: dict | None, figures: list[Path], out: Path) -> list[Path]:
    """Write the tables; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    evals = list(dict.fromkeys(c.eval for c in cells))
    head = [f"{eval_length(e)} s" if eval_length(e) else e for e in evals]
    methods = {}  # (role, method) -> {eval: cell}
    for c in cells:
        methods.setdefault((c.role, c.method), {})[c.eval] = c
    metrics = list(dict.fromkeys(m for c in cells for m in c.values))
    every = [f"circular/{t}" for t in every_frame_types(records)]  # types every frame answers: not in the overall
    categories = [m for m in metrics if m.startswith("circular/") and m not in every]

    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["role", "method", "eval", "length", "seeds_done", "seeds_expected", "visual_tokens",
                    *(x for m in metrics for x in (m, f"{m}_std"))])
        for c in cells:
            t = sum(c.tokens) / len(c.tokens) if c.tokens else math.nan
            w.writerow([c.role, c.method, c.eval, c.length, len(c.seeds), c.expected, _num(t),
                        *(_num(x) for m in metrics for x in (c.mean(m), c.std(m)))])
    point_metrics = list(dict.fromkeys(m for r in records for m in r.metrics))
    with open(out / "points.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["role", "method", "point", "seed", "eval", "length", "status", "visual_tokens", *point_metrics])
        for r in records:
            w.writerow([r.role, r.method, r.point, r.seed, r.eval, r.length, "done" if r.metrics else r.status,
                        _num(r.tokens), *(_num(r.metrics.get(m)) for m in point_metrics)])
    boot_cols = ["eval", "length", "questions", "a", "b", "acc_a", "acc_b", "diff", "low", "high", "level", "groups",
                 "seeds", "dropped_groups", "resamples", "note"]
    with open(out / "bvllm_vs_uniform.csv", "w", newline="") as f:
        w = csv.DictWriter(f, boot_cols)
        w.writeheader()
        w.writerows(boot)

    s = sweeps["strategies"]
    recipe = ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in s.fit_flags.items())
    extra = "".join(f", {k} also {v}" for k, v in s.extra_seeds.items())
    lines = ["# The needle study", "",
             f"Every strategy at θ = 96 visual tokens, trained with one fixed recipe "
             f"({' + '.join(s.configs)}, {recipe};"
             f" seeds {s.seeds}{extra}); no strategy was tuned (search budget: none, the same recipe for each). "
             "Circular accuracy (VNBench's rule, option likelihood; 0.25: always the same option text, the option "
             "order being ignored), mean ± std over seeds; `(n/N)`: seeds finished; tokens: visual tokens handed to "
             "the LLM per item in the evaluation, mean over items and seeds "
             "(one per length when they differ).", "",
             "## Answer accuracy", ""]
    rows = [[m, KINDS[role], tokens(list(by.values())), gflops(list(by.values())),
             *(pm(by[e], "circular_accuracy") if e in by else "" for e in evals)]
            for (role, m), by in methods.items() if role in ("strategies", "controls", "training_free")]
    lines += md_table(["method", "kind", "tokens", "prefill GFLOPs", *head], rows)
    for k in every:
        lines += every_frame_section(methods, k)
    lines += ["", "## Per task type", ""]
    rows = [[m, f"{c.length} s" if c.length else e, *(pm(c, k) for k in categories), pm(c, "circular_accuracy"),
             *(pm(c, k) for k in every)] for (role, m), by in methods.items() for e, c in by.items()]
    lines += md_table(["method", "length", *(k.split("/", 1)[1] for k in categories), "overall",
                       *(f"{k.split('/', 1)[1]} (every frame)" for k in every)], rows)
    lines += ["", "## Selection: needle frame among the frames kept (no LLM involved)", "",
              "hit rate: share of needle questions for which a kept frame shows the needle; uniform: as many "
              "uniformly spaced frames. `= uniform`: the hit rate is the uniform pick's on every seed (the method "
              "keeps uniformly spaced frames, or reads every frame up to a cap; it does not choose by content).", ""]
    rows = [[m, f"{c.length} s" if c.length else e, pm(c, "selection/hit_rate"), pm(c, "selection/uniform_hit_rate"),
             pm(c, "selection/frames_kept"), "= uniform" if _uniform(c) else "differs"]
            for (role, m), by in methods.items() for e, c in by.items() if c.values.get("selection/hit_rate")]
    lines += md_table(["method", "length", "hit rate", "uniform, as many frames", "frames kept", "choice"], rows)
    lines += ["", "## B-VLLM's Table 3 on the needle sets", ""]
    rows = [[m, tokens(list(by.values())), *(pm(by[e], "circular_accuracy") if e in by else "" for e in evals),
             *(pm(by[e], "selection/hit_rate") if e in by else "" for e in evals)]
            for (role, m), by in methods.items() if role == "ablation" or (role, m) == ("strategies", CANDIDATE)]
    lines += md_table(["variant", "tokens", *(f"acc {h}" for h in head), *(f"hit {h}" for h in head)], rows)
    for a, b in dict.fromkeys((r["a"], r["b"]) for r in boot) or [(CANDIDATE, REFERENCE)]:
        pair = [r for r in boot if (r["a"], r["b"]) == (a, b)]
        lines += ["", f"## {a} − {b}: paired bootstrap over question groups", ""]
        rows = [[str(r["length"] or r["eval"]), r["questions"], *(f"{r[k]:.3f}" for k in ("acc_a", "acc_b", "diff")),
                 f"[{r['low']:.3f}, {r['high']:.3f}]", str(r["groups"]), str(r["seeds"])] if not r.get("note") else
                [str(r["length"] or r["eval"]), r["questions"], "", "", "", r["note"], "", ""] for r in pair]
        lines += md_table(["length (s)", "questions", a, b, "difference",
                           f"{int(100 * (pair[0].get('level') or 0.95)) if pair else 95}% interval",
                           "groups", "seeds"], rows)
    lines += ["", "Groups resampled with replacement, the same for both methods and every seed they share "
              "(`lit_bvllm.sweeps.paired`); the difference is the mean over groups and seeds. Questions: all the "
              "needle types together (the accuracy above), then each type alone. The training-free rows are "
              "evaluated on Uniform's checkpoints (seeds 0-2), so a pair with one of them pairs those seeds; the "
              "best training-free selector is the one with the highest accuracy averaged over the lengths.", ""]
    missing = [r for r in records if not r.metrics]
    lines += ["## Not finished", ""]
    lines += ([f"- {r.role} {r.method} seed {r.seed} {r.eval}: {r.status} (point {r.point})" for r in missing]
              or ["none"])
    lines += ["", "## Wall time", ""]
    if timing.get("ran_seconds") is not None:
        lines.append(f"- this invocation: {_hms(timing['ran_seconds'])} (running points and per-sweep reports)")
    lines.append(f"- the finished points' commands of this run's sweeps: {_hms(timing.get('points_seconds', 0))}")
    fixed = f"beyond a blind test's {timing['test_base']:.1f} s" if timing.get("test_base") else "in proportion"
    lines.append(f"- the full study, expected on this machine: {_hms(timing['seconds'])} "
                 f"({timing['measured']} commands measured, {timing['scaled']} scaled from measured ones: training "
                 f"by its measured seconds per step, tests by video length {fixed}; {timing['unknown']} without "
                 f"a measurement)")
    if example:
        lines += ["", "## One held-out example", "",
                  f"![selection]({Path(example['figure']).name}) {example.get('question_id', '')}: "
                  f"{example.get('question', '')} (answer: {example.get('gt', '')}; needle at "
                  f"{example.get('needle_times', '')} s; {example.get('point', '')})"]
    lines += ["", "Figures: " + ", ".join(p.name for p in figures)]
    (out / "study.md").write_text("\n".join(lines) + "\n")
    return [out / "study.md", out / "summary.csv", out / "points.csv", out / "bvllm_vs_uniform.csv"]


def every_frame_section(methods: dict[tuple[str, str], dict[str, Cell]], metric: str) -> list[str]:
    """``study.md``'s lines on a type every frame answers (``circular/bg_every1``): per trained method and length,
    its circular accuracy beside blind's, the difference of the seed means and whether it reaches
    :data:`~lit_bvllm.analysis.report.EVERY_FRAME_BAR`; then whether every strategy does at every length."""
    name = metric.split("/", 1)[1]
    blind = methods.get(("controls", BLIND), {})
    lines = ["", f"## Does anything reach the LLM? {name}: every frame shows the answer", "",
             f"The background colour, asked as the training data asks it; any frame answers it, so a method whose "
             f"frames reach the LLM should beat {BLIND} by ≥ {EVERY_FRAME_BAR} (circular accuracy, seed means). Left "
             "out of the accuracy above and of the hit rate.", ""]
    rows, verdicts = [], []
    for (role, m), by in methods.items():
        if (role, m) == ("controls", BLIND):
            continue
        for e, c in by.items():
            b = blind.get(e)
            diff = c.mean(metric) - b.mean(metric) if b is not None else math.nan
            verdict = "—" if math.isnan(diff) else "yes" if diff >= EVERY_FRAME_BAR - 1e-9 else "no"
            if role == "strategies":
                verdicts.append(verdict)
            rows.append([m, KINDS[role], f"{c.length} s" if c.length else e, pm(c, metric),
                         pm(b, metric) if b is not None else "missing", "" if math.isnan(diff) else f"{diff:+.3f}",
                         verdict])
    lines += md_table(["method", "kind", "length", name, BLIND, "difference", f"beats blind by ≥ {EVERY_FRAME_BAR}"],
                      rows)
    done = verdicts.count("yes")
    answer = "yes" if verdicts and done == len(verdicts) else "no" if "no" in verdicts else "not known yet"
    lines += ["", f"Every strategy beats {BLIND} by ≥ {EVERY_FRAME_BAR} on {name} at every length: {answer} ({done} "
              f"of {len(verdicts)} strategy × length cells do)."]
    return lines


def _uniform(cell: Cell) -> bool:
    hit, uni = cell.values.get("selection/hit_rate", []), cell.values.get("selection/uniform_hit_rate", [])
    return len(hit) == len(uni) and all(abs(a - b) < 1e-9 for a, b in zip(hit, uni))


def _num(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else repr(x)


def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"
