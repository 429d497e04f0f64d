"""Print evaluation results side by side: ``python -m lit_bvllm.report NAME=results.json [NAME=results.json ...]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def table(runs: dict[str, dict]) -> str:
    """A markdown table: one row per metric (categories, overall, item accuracy), one column per run, plus chance."""
    keys = sorted({k for r in runs.values() for k in r if isinstance(r[k], float) and k not in ("errors", "items")},
                  key=lambda k: (k in ("overall", "item_accuracy"), k))
    head = "| metric | " + " | ".join(runs) + " | chance |"
    lines = [head, "|" + "---|" * (len(runs) + 2)]
    for k in keys:
        cells = [f"{r[k]:.3f}" if k in r else "" for r in runs.values()]
        lines.append(f"| {k} | " + " | ".join(cells) + " | 0.250 |")
    n = [str(r.get("items", "")) for r in runs.values()]
    lines.append("| items | " + " | ".join(n) + " | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    runs = {}
    for arg in argv:
        name, _, path = arg.partition("=")
        runs[name] = json.loads(Path(path).read_text())
    print(table(runs))


if __name__ == "__main__":
    main()
