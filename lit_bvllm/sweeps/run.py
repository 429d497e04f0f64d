"""Running a sweep's points: each as subprocesses of ``lit_bvllm``, its status in ``<sweep>/status/<point>.json``.

A point is finished when its status says ``done`` and every test of it left a ``*_results.json``; a rerun skips
it. A failed or interrupted point is run again, its earlier run directories replaced (``--overwrite true`` for
that point only); a fit point whose fit finished reruns only its tests. Launchers: ``local`` (one point after
another, here) and ``slurm`` (a submitit job array, one task per point).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from datamodules.io import write_json
from lit_bvllm.sweeps.grid import Point, Step, Sweep, steps

TAIL_LINES = 30


def status_path(sweep: Sweep, point: Point) -> Path:
    return sweep.dir / "status" / f"{point.id}.json"


def read_status(sweep: Sweep, point: Point) -> dict | None:
    path = status_path(sweep, point)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as e:  # a half-written file: the point counts as not finished
        return {"status": "unknown", "error": {"message": f"unreadable status {path}: {e}"}}


def write_status(sweep: Sweep, point: Point, status: dict) -> None:
    write_json(status_path(sweep, point), status, default=str)  # atomic: a reader never sees half a file


def step_done(step: Step, record: dict | None) -> bool:
    """Whether a step of an earlier attempt can be kept: it finished, and what it writes is there."""
    if not record or record.get("status") != "done":
        return False
    if step.command == "fit":
        return (step.run_dir / "checkpoints" / "last.ckpt").is_file()
    return any(step.run_dir.glob("*_results.json"))


def finished(sweep: Sweep, point: Point) -> bool:
    """Done by its status, and every test's results file exists."""
    status = read_status(sweep, point)
    if not status or status.get("status") != "done":
        return False
    records = status.get("steps", {})
    return all(step_done(s, records.get(s.name)) for s in steps(sweep, point, ["lit_bvllm"]))


def state(sweep: Sweep, point: Point) -> str:
    """``done``, ``failed``, ``running`` (or interrupted), or ``pending``."""
    if finished(sweep, point):
        return "done"
    status = read_status(sweep, point)
    return "pending" if status is None else "failed" if status.get("status") == "done" else status["status"]


def plan(sweep: Sweep, point: Point) -> list[tuple[Step, list[str] | None]]:
    """A point's steps, each with the command to run, or None for a step an earlier attempt finished (kept).

    Once a step runs again, every later one does too (a new fit means a new checkpoint). A run directory that an
    earlier attempt of this point wrote (its status is on record) is replaced: ``--overwrite=true``, for this
    point's rerun steps only. One that holds anyone else's run is refused by ``lit_bvllm`` itself, and the
    refusal is this point's error.
    """
    before = read_status(sweep, point)
    earlier = (before or {}).get("steps", {})
    out, rerun = [], False
    for step in steps(sweep, point):
        if not rerun and step_done(step, earlier.get(step.name)):
            out.append((step, None))
            continue
        rerun = True
        replace = before is not None and step.run_dir.is_dir() and any(step.run_dir.iterdir())
        out.append((step, [*step.argv, "--overwrite=true"] if replace else step.argv))
    return out


def run_point(sweep: Sweep, point: Point) -> dict:
    """Run a point's steps (:func:`plan`) and record its status; the status.

    Never raises for a failing command: the exit code and the tail of its stderr go into the status, and the
    point's later steps are not run. The logs are ``<sweep>/logs/<point>/<step>.out|.err``.
    """
    before = read_status(sweep, point) or {}
    todo = plan(sweep, point)
    status = {"id": point.id, "knobs": point.knobs, "seed": point.seed, "status": "running",
              "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "attempt": before.get("attempt", 0) + 1, "steps": {}}
    write_status(sweep, point, status)
    logs = sweep.dir / "logs" / point.id
    logs.mkdir(parents=True, exist_ok=True)
    for step, argv in todo:
        if argv is None:
            status["steps"][step.name] = {**before["steps"][step.name], "kept": True}
            continue
        t0 = time.time()
        with open(logs / f"{step.name}.out", "w") as out, open(logs / f"{step.name}.err", "w") as err:
            rc = launch(argv, out, err)
        record = {"status": "done" if rc == 0 else "failed", "returncode": rc,
                  "seconds": round(time.time() - t0, 1), "command": argv}
        status["steps"][step.name] = record
        if rc == 0 and step.command == "test" and not any(step.run_dir.glob("*_results.json")):
            record.update(status="failed", message=f"exited 0 but wrote no *_results.json in {step.run_dir}")
        if record["status"] == "failed":
            tail = (logs / f"{step.name}.err").read_text(errors="replace").splitlines()[-TAIL_LINES:]
            status["error"] = {"step": step.name, "returncode": rc, "message": record.get("message"),
                               "stderr_tail": "\n".join(tail), "log": str(logs / f"{step.name}.err")}
            break
    status["status"] = "failed" if "error" in status else "done"
    status["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_status(sweep, point, status)
    return status


def launch(argv: list[str], stdout, stderr) -> int:
    """One ``lit_bvllm`` command in a subprocess; its exit code."""
    return subprocess.run(argv, stdout=stdout, stderr=stderr, env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode


def run_local(sweep: Sweep, points: list[Point]) -> None:
    """One point after another, in this process's subprocesses."""
    for i, point in enumerate(points, 1):
        t0 = time.time()
        print(f"[{i}/{len(points)}] {point.id} ...", flush=True)
        status = run_point(sweep, point)
        err = status.get("error")
        print(f"[{i}/{len(points)}] {point.id}: {status['status']} in {time.time() - t0:.1f} s"
              + (f" (step {err['step']}, exit code {err['returncode']}; {err['log']})" if err else ""), flush=True)


def run_slurm(sweep: Sweep, points: list[Point]) -> None:
    """A submitit job array, one task per point (``AutoExecutor`` with the sweep file's ``slurm`` parameters;
    ``cluster: local`` runs the tasks as local processes, ``cluster: debug`` in this one). Waits for every task;
    a task that died before recording its end (timeout, preemption, out of memory) is recorded failed."""
    try:
        import submitit
    except ImportError as e:
        raise ImportError("lit_bvllm sweep --launcher slurm needs submitit: pip install 'lit_bvllm[sweep]'") from e
    params = dict(sweep.slurm)
    executor = submitit.AutoExecutor(folder=sweep.dir / "slurm", cluster=params.pop("cluster", None))
    executor.update_parameters(**{"name": f"sweep_{sweep.name}", **params})
    jobs = executor.map_array(run_point, [sweep] * len(points), points)
    print(f"submitted {len(jobs)} point(s) as job {jobs[0].job_id.split('_')[0] if jobs else '-'} "
          f"(logs: {sweep.dir / 'slurm'}); waiting for them", flush=True)
    for job, point in zip(jobs, points):
        try:
            status = job.result()
            print(f"{point.id}: {status['status']} (job {job.job_id})", flush=True)
        except Exception as e:  # the job itself died: its status still says running
            status = read_status(sweep, point) or {"id": point.id, "knobs": point.knobs, "seed": point.seed}
            status.update(status="failed", error={"step": "job", "returncode": None, "message": str(e)[-2000:],
                                                  "log": str(job.paths.stderr)})
            write_status(sweep, point, status)
            print(f"{point.id}: job {job.job_id} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                  flush=True)
