"""Re-time every evaluation command of the needle study's three original sweeps (strategies, controls, ablation) with
the current code, on the study's own checkpoints, and compare with the seconds and circular accuracy its status files
recorded when it ran (issue 25's "the study re-timed", benchmarks/RESULTS.md).

    python benchmarks/retime_study_tests.py --root STUDY_FOLDER     # the folder `make study` ran in; ~55 min, 2 cores

Each command is the one the sweep runner writes (:func:`lit_bvllm.sweeps.grid.steps`), with its results sent to
another folder (``--save-dir``) so that the study's are untouched; one line of JSON per command goes to ``--out`` (a
rerun skips the commands already there), and the totals are printed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import tempfile
import time
from pathlib import Path

from lit_bvllm.study.runner import FILES, load_sweeps
from lit_bvllm.sweeps.grid import expand, steps
from lit_bvllm.sweeps.run import read_status

SAVE_DIR = "--trainer.logger.init_args.save_dir="
VERSION = "--trainer.logger.init_args.version="


def retime(root: Path, out: Path, save_dir: Path) -> list[dict]:
    done = {json.loads(line)["key"] for line in out.read_text().splitlines()} if out.exists() else set()
    with contextlib.chdir(root):
        sweeps = load_sweeps({k: v for k, v in FILES.items() if k != "training_free"}, "runs/sweeps")
        for role, s in sweeps.items():
            for p in expand(s):
                recorded = (read_status(s, p) or {}).get("steps") or {}
                for st in steps(s, p):
                    key = f"{role}/{p.id}/{st.name}"
                    if st.command != "test" or key in done:
                        continue
                    argv = [a for a in st.argv if not a.startswith(SAVE_DIR)] + [f"{SAVE_DIR}{save_dir}",
                                                                                  "--overwrite", "true"]
                    t0 = time.perf_counter()
                    rc = subprocess.run(argv, capture_output=True, text=True).returncode
                    seconds = time.perf_counter() - t0
                    version = next(a for a in argv if a.startswith(VERSION)).split("=", 1)[1]
                    new = save_dir / s.name / version / "vnbench_results.json"
                    old = st.run_dir / "vnbench_results.json"
                    line = {"key": key, "rc": rc, "seconds": seconds,
                            "recorded_seconds": (recorded.get(st.name) or {}).get("seconds"),
                            "acc": json.loads(new.read_text())["circular_accuracy"] if new.is_file() else None,
                            "recorded_acc": json.loads(old.read_text())["circular_accuracy"] if old.is_file() else None}
                    with out.open("a") as f:
                        f.write(json.dumps(line) + "\n")
                    print(line, flush=True)
    return [json.loads(line) for line in out.read_text().splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="the folder `make study` ran in (runs/sweeps/ inside)")
    ap.add_argument("--out", default="artifacts/bench/retime_study_tests.jsonl")
    ap.add_argument("--save-dir", default=None, help="where the re-run tests write (default: a temporary folder)")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows = retime(Path(a.root), out, Path(a.save_dir or tmp).resolve())
    now, then = sum(r["seconds"] for r in rows), sum(r["recorded_seconds"] or 0 for r in rows)
    failed, differs = sum(r["rc"] != 0 for r in rows), sum(r["acc"] != r["recorded_acc"] for r in rows)
    print(f"{len(rows)} commands: {now / 60:.1f} min now, {then / 60:.1f} min recorded ({then / max(now, 1e-9):.2f}x); "
          f"failed {failed}, accuracy differs {differs}")


if __name__ == "__main__":
    main()
