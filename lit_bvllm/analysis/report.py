"""Print evaluation results side by side:
``python -m lit_bvllm.analysis.report NAME=results.json [NAME=results.json ...]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

# rows of the table, in order: per-category scores first, then the headline numbers, then the counts
SCORES = ("circular_per_category", "per_category", "per_duration", "circular_accuracy", "accuracy",
          "accuracy_answered", "mean_over_tasks", "exact_match", "token_f1", "contains", "judge_accuracy",
          "judge_score")
COUNTS = ("items", "unparsed", "errors", "unreadable_videos", "incomplete_groups")


SELECTION = ("hit_rate", "uniform_hit_rate", "event_recall", "uniform_event_recall", "frames_kept")
EVERY_FRAME_BAR = 0.5
"""How much a trained model must beat its blind baseline on a type every frame answers (``every_frame_types`` of
VNBench's results: the background colour, ``bg_every1``) to show that its frames reach the LLM (issue 22)."""


def _rows(result: dict) -> dict[str, float]:
    rows = {}
    for key, value in (result.get("official") or {}).items():  # an official scorer's convention (Video-MME) first
        if isinstance(value, dict):
            rows.update({f"official/{key.replace('per_', '')}/{k}": v for k, v in value.items()})
        elif isinstance(value, float):
            rows[f"official/{key}"] = value
    for key in SCORES:
        value = result.get(key)
        if isinstance(value, dict):
            rows.update({f"{key.replace('_per_category', '').replace('per_', '')}/{k}": v for k, v in value.items()})
        elif isinstance(value, (int, float)):
            rows[key] = value
    selection = result.get("selection") or {}  # which frames the reducer kept (datamodules.benchmarks.selection)
    for cat, values in selection.get("per_category", {}).items():
        rows[f"selection/{cat}/hit_rate"] = values["hit_rate"]
        rows[f"selection/{cat}/uniform_hit_rate"] = values["uniform_hit_rate"]
    rows.update({f"selection/{k}": selection[k] for k in SELECTION if k in selection})
    return rows


def every_frame_types(runs: dict[str, dict]) -> list[str]:
    """The task types every frame answers, of any run (VNBench's ``every_frame_types``), in order of appearance."""
    return list(dict.fromkeys(t for r in runs.values() for t in r.get("every_frame_types") or []))


def table(runs: dict[str, dict]) -> str:
    """A markdown table: one row per metric, one column per run, plus chance (the mean of 1 / options per item).
    ``selection/*`` rows: the share of needle questions whose needle a kept frame shows, and the same for a uniform
    pick of as many frames (``uniform_hit_rate``), its control. A type every frame answers (``circular/bg_every1``)
    comes right after ``circular_accuracy``, which leaves it out, and gets a line below the table: each run against
    the run named ``blind``, and whether it beats it by :data:`EVERY_FRAME_BAR`."""
    rows = {name: _rows(r) for name, r in runs.items()}
    keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    every = [f"circular/{t}" for t in every_frame_types(runs)]
    keys = [k for k in keys if k not in every]
    at = keys.index("circular_accuracy") + 1 if "circular_accuracy" in keys else len(keys)
    keys[at:at] = [k for k in every if any(k in r for r in rows.values())]
    chance = next((r["chance"] for r in runs.values() if "chance" in r), None)
    lines = ["| metric | " + " | ".join(runs) + " | chance |", "|" + "---|" * (len(runs) + 2)]
    for k in keys:
        cells = [f"{r[k]:.3f}" if r.get(k) is not None else "" for r in rows.values()]
        chance_cell = "" if chance is None or k.startswith("selection/") else f"{chance:.3f}"
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {chance_cell} |")
    for k in COUNTS:
        lines.append(f"| {k} | " + " | ".join(str(r.get(k, "")) for r in runs.values()) + " | |")
    for k in every:
        lines += ["", f"{k}: every frame shows the answer (a diagnostic of whether frames reach the LLM; left out of "
                  f"circular_accuracy and the hit rate). {_against_blind(rows, k)}"]
    return "\n".join(lines)


def _against_blind(rows: dict[str, dict[str, float]], key: str) -> str:
    """Each run's ``key`` minus the run named ``blind``'s, and whether it reaches :data:`EVERY_FRAME_BAR`."""
    blind = rows.get("blind", {}).get(key)
    if blind is None:
        return "No run named blind to compare with."
    verdicts = []
    for name, r in rows.items():
        if name != "blind" and r.get(key) is not None:
            d = r[key] - blind
            beats = "beats" if d >= EVERY_FRAME_BAR - 1e-9 else "does not beat"
            verdicts.append(f"{name} − blind = {d:+.3f}: {beats} blind by ≥ {EVERY_FRAME_BAR}")
    return "; ".join(verdicts) + "." if verdicts else ""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    runs = {}
    for arg in argv:
        name, _, path = arg.partition("=")
        runs[name] = json.loads(Path(path).read_text())
    print(table(runs))


if __name__ == "__main__":
    main()
