"""The needle study's records (:mod:`lit_bvllm.study`): one method at one length and seed (:class:`Record`), gathered
from the sweeps' results; their mean and spread over seeds (:class:`Cell`); the paired bootstrap of B-VLLM against
Uniform. The runner (:mod:`lit_bvllm.study.runner`), the tables and the figures read these; this module imports none
of them.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from lit_bvllm.sweeps.grid import Sweep, expand, steps
from lit_bvllm.sweeps.paired import circular_groups, paired_bootstrap
from lit_bvllm.sweeps.report import seed_mean, seed_std
from lit_bvllm.sweeps.run import state

ROLES = ("strategies", "controls", "ablation", "training_free")
REFERENCE, CANDIDATE = "Uniform", "BVLLM"  # the bootstrap's pair: CANDIDATE - REFERENCE
BLIND = "blind (no frames)"  # the control every trained method must beat on a type every frame answers
NAMES = {  # how the table names a control or an ablation row: (dotted key, value) -> name
    ("data.blind", True): BLIND,
    ("model.reducer.init_args.pick", "random"): "random frames",
    ("model.reducer.init_args.pick", "oracle"): "oracle frames",
    ("model.reducer.init_args.frame_selection", False): "BVLLM w/o frame selection",
    ("model.reducer.init_args.temporal_merge", False): "BVLLM w/o temporal merge",
    ("model.reducer.init_args.spatial_sampling", False): "BVLLM w/o spatial sampling",
    ("model.reducer.init_args.selection", "soft"): "BVLLM soft selection",
}


@dataclass
class Record:
    """One method at one length and seed: its metrics when the point finished, else its state."""

    role: str
    method: str
    seed: int | None
    eval: str
    length: int | None
    status: str
    point: str
    metrics: dict[str, float] = field(default_factory=dict)
    tokens: float | None = None  # visual tokens per item handed to the LLM in the evaluation (0 when blind)
    flops: float | None = None  # the LLM's prefill FLOPs per item (lit_bvllm.flops), mean over the evaluation's items
    predictions: Path | None = None
    every_frame: list[str] = field(default_factory=list)  # task types every frame answers (results' every_frame_types)



# ------------------------------------------------------------------ gathering the results


def method_name(role: str, point) -> str:
    if role == "strategies":
        return point.labels.get("model.reducer", point.setting)
    if role == "training_free":  # a frame selector (or none) before a reducer
        parts = [point.labels[k] for k in ("model.frame_selector", "model.reducer")
                 if point.knobs.get(k) is not None and k in point.labels]
        return " → ".join(parts) or point.setting
    names = [n for (k, v), n in NAMES.items() if k in point.knobs and point.knobs[k] == v]
    return " + ".join(names) or point.setting


def eval_length(name: str) -> int | None:
    m = re.search(r"(\d+)s$", name)
    return int(m.group(1)) if m else None


def visual_tokens(result: dict, blind: bool) -> float | None:
    """Visual tokens handed to the LLM per item of the evaluation, mean over its items (``visual_tokens`` of
    the results; a blind evaluation that recorded none gave none: 0; None for results written before they were
    recorded)."""
    tokens = result.get("visual_tokens")
    if tokens:
        return float(tokens["mean"])
    return 0.0 if blind else None


def result_metrics(result: dict) -> dict[str, float]:
    """The study's numbers of a ``vnbench_results.json``: ``circular/<type>`` for every type, the every-frame one
    (``circular/bg_every1``) included; ``circular_accuracy`` is over the needle types only."""
    m = {"circular_accuracy": result.get("circular_accuracy"), "items": result.get("items", math.nan)}
    m.update({f"circular/{c}": v for c, v in (result.get("circular_per_category") or {}).items()})
    sel = result.get("selection") or {}
    m.update({f"selection/{k}": sel[k] for k in ("hit_rate", "uniform_hit_rate", "frames_kept") if k in sel})
    return {k: v for k, v in m.items() if v is not None}  # VNBench: None when no question group is complete


def collect(sweeps: dict[str, Sweep]) -> list[Record]:
    """One record per method x evaluation x seed of every study sweep, finished or not."""
    records = []
    for role in ROLES:
        s = sweeps[role]
        for p in expand(s):
            st = state(s, p)
            for step in steps(s, p, ["lit_bvllm"]):
                if step.command != "test":
                    continue
                rec = Record(role, method_name(role, p), p.seed, step.name, eval_length(step.name), st, p.id)
                results = step.run_dir / "vnbench_results.json"
                if st == "done" and results.is_file():
                    result = json.loads(results.read_text())
                    rec.metrics = result_metrics(result)
                    rec.tokens = visual_tokens(result, p.knobs.get("data.blind") is True)
                    rec.flops = (result.get("prefill_flops") or {}).get("mean")
                    rec.every_frame = list(result.get("every_frame_types") or [])
                    preds = step.run_dir / "vnbench_predictions.jsonl"
                    rec.predictions = preds if preds.is_file() else None
                elif st == "done":
                    rec.status = "no vnbench_results.json"
                records.append(rec)
    return records


@dataclass
class Cell:
    """One method at one length: the finished seeds' values per metric."""

    role: str
    method: str
    eval: str
    length: int | None
    expected: int
    seeds: list = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)
    tokens: list[float] = field(default_factory=list)
    flops: list[float] = field(default_factory=list)

    def mean(self, metric: str) -> float:
        return seed_mean(self.values.get(metric, []))

    def std(self, metric: str) -> float:
        return seed_std(self.values.get(metric, []))


def summarise(records: list[Record]) -> list[Cell]:
    """Mean ± std over seeds per method and length, in the sweeps' order."""
    cells: dict[tuple, Cell] = {}
    for r in records:
        c = cells.setdefault((r.role, r.method, r.eval), Cell(r.role, r.method, r.eval, r.length, 0))
        c.expected += 1
        if r.metrics:
            c.seeds.append(r.seed)
            for k, v in r.metrics.items():
                c.values.setdefault(k, []).append(v)
            if r.tokens is not None:
                c.tokens.append(r.tokens)
            if r.flops is not None:
                c.flops.append(r.flops)
    return list(cells.values())


def every_frame_types(records: list[Record]) -> list[str]:
    """The task types every frame answers, of any finished record, in order of appearance."""
    return list(dict.fromkeys(t for r in records for t in r.every_frame))


def best_selector(cells: list[Cell]) -> str | None:
    """The training-free row with a frame selector (``"<selector> → <reducer>"``) whose circular accuracy, averaged
    over its lengths' seed means, is highest; None when none finished."""
    means: dict[str, list[float]] = {}
    for c in cells:
        if c.role == "training_free" and " → " in c.method and c.values.get("circular_accuracy"):
            means.setdefault(c.method, []).append(c.mean("circular_accuracy"))
    return max(means, key=lambda m: sum(means[m]) / len(means[m])) if means else None


def bootstrap(records: list[Record], resamples: int = 10000, seed: int = 0,
              pairs: list[tuple[tuple[str, str], tuple[str, str]]] | None = None) -> list[dict]:
    """Each pair's ``(role, method)`` a against b at each length (default: BVLLM against Uniform): the paired bootstrap
    over question groups (:mod:`lit_bvllm.sweeps.paired`) of the needle types together (``questions`` "all", as
    ``circular_accuracy``: the groups of a type every frame answers left out), then of each needle type alone
    (retrieval, ordering, counting: where a strategy's frames matter differs by type). Seeds pair by number."""
    pairs = pairs or [(("strategies", CANDIDATE), ("strategies", REFERENCE))]
    out = []
    evals = dict.fromkeys(r.eval for r in records if r.role == "strategies")
    every = every_frame_types(records)
    needle_types = [m.split("/", 1)[1] for m in dict.fromkeys(m for r in records for m in r.metrics)
                    if m.startswith("circular/") and m.split("/", 1)[1] not in every]

    def groups_of(path: Path, questions: str) -> dict[str, bool]:  # a group id is <video>_<type>
        groups = circular_groups(path)
        if questions == "all":  # every group but the every-frame types'
            return {g: ok for g, ok in groups.items() if not g.endswith(tuple(f"_{t}" for t in every))}
        return {g: ok for g, ok in groups.items() if g.endswith(f"_{questions}")}

    for (a, b), ev in ((pair, ev) for pair in pairs for ev in evals):
        for questions in ["all", *needle_types]:
            runs = {key: {r.seed: groups_of(r.predictions, questions) for r in records
                          if (r.role, r.method) == key and r.eval == ev and r.predictions} for key in (a, b)}
            row = {"eval": ev, "length": eval_length(ev), "questions": questions, "a": a[1], "b": b[1]}
            try:
                iv = paired_bootstrap(runs[a], runs[b], resamples, seed=seed)
            except ValueError as e:
                out.append({**row, "note": str(e)})
                continue
            out.append({**row, "acc_a": iv.a, "acc_b": iv.b, "diff": iv.diff, "low": iv.low, "high": iv.high,
                        "level": iv.level, "groups": iv.groups, "seeds": iv.seeds, "dropped_groups": iv.dropped,
                        "resamples": iv.resamples, "note": ""})
    return out
