"""A sweep's points: the grid of dotted keys expanded, a readable stable id per point, and the commands it runs.

A point is one setting of the knobs (one value per swept key) and one seed. Its id names the knob values,
``num_frames=8_num_tokens=4_seed=0``, so the same point keeps its run directory whatever else the grid holds.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

RESERVED = {  # set by the sweep itself for every point; a grid or flag entry for them would be silently replaced
    "seed_everything": "seeds",
    "ckpt_path": "ckpt_path",
    "trainer.logger.init_args.save_dir": "root",
    "trainer.logger.init_args.name": "name",
    "trainer.logger.init_args.version": "the point id",
    "overwrite": "the sweep's rerun rule (a failed point is rerun with --overwrite true)",
    "config": "configs / evals",
}
_SAFE = re.compile(r"[^A-Za-z0-9._+-]+")
SEED = "{seed}"  # in a test-mode ckpt_path: each point's seed (the checkpoint a fit sweep trained with that seed)


@dataclass
class Sweep:
    """What a sweep file holds; the fields are documented on :func:`lit_bvllm.sweeps.sweep`."""

    name: str
    configs: list[str]
    mode: Literal["test", "fit"] = "test"
    grid: dict[str, list[Any]] = field(default_factory=dict)
    zipped: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] | None = None
    extra_seeds: dict[str, list[int]] = field(default_factory=dict)
    ckpt_path: str | None = None
    evals: dict[str, list[str]] = field(default_factory=dict)
    flags: dict[str, Any] = field(default_factory=dict)
    fit_flags: dict[str, Any] = field(default_factory=dict)
    test_flags: dict[str, Any] = field(default_factory=dict)
    root: str = "runs/sweeps"
    slurm: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def keys(d):
            return {k.removeprefix("--"): v for k, v in (d or {}).items()}

        self.grid, self.zipped = keys(self.grid), keys(self.zipped)
        self.flags, self.fit_flags, self.test_flags = keys(self.flags), keys(self.fit_flags), keys(self.test_flags)
        self.evals, self.slurm = dict(self.evals or {}), dict(self.slurm or {})
        self.extra_seeds = dict(self.extra_seeds or {})
        bad = []
        if not self.name or _SAFE.search(self.name):
            bad.append(f"name {self.name!r}: letters, digits and . _ + - only (it names the sweep's folder)")
        if not self.configs:
            bad.append("configs: name the base configs (the --config files every point starts from)")
        for section in ("grid", "zipped"):
            for k, v in getattr(self, section).items():
                if not isinstance(v, list) or not v:
                    bad.append(f"{section}.{k}: a non-empty list of values")
        lengths = {len(v) for v in self.zipped.values() if isinstance(v, list)}
        if len(lengths) > 1:
            bad.append(f"zipped: every list must have the same length (got {sorted(lengths)}); use grid for a product")
        if both := set(self.grid) & set(self.zipped):
            bad.append(f"{sorted(both)} both in grid and zipped")
        for section in ("grid", "zipped", "flags", "fit_flags", "test_flags"):
            for k in getattr(self, section):
                if k in RESERVED:
                    bad.append(f"{section}.{k}: set by the sweep; use the sweep file's '{RESERVED[k]}'")
        if self.mode == "fit" and not self.evals:
            bad.append("mode fit: name the evaluations (evals: {name: [config, ...]}) "
                       "each trained point is tested with")
        if self.mode == "fit" and self.ckpt_path:
            bad.append("mode fit: ckpt_path is for test mode (a fit point is tested on its own last.ckpt)")
        if self.ckpt_path and SEED in self.ckpt_path and not self.seeds:
            bad.append(f"ckpt_path {self.ckpt_path!r} names {SEED} but the sweep has no seeds (seeds: [0, 1, ...])")
        if self.extra_seeds and not self.seeds:
            bad.append("extra_seeds: more seeds for some settings need the sweep's seeds (seeds: [0, 1, ...])")
        for k, v in self.extra_seeds.items():
            if not isinstance(v, list) or not v or not all(isinstance(x, int) for x in v):
                bad.append(f"extra_seeds.{k}: a non-empty list of integer seeds")
        for e in self.evals:
            if _SAFE.search(e) or e in ("checkpoints", "fit"):
                bad.append(f"evals.{e}: letters, digits and . _ + - only, not 'checkpoints' or 'fit' (a folder name)")
        if bad:
            raise ValueError(f"sweep '{self.name}': " + "; ".join(bad))

    @property
    def dir(self) -> Path:
        """``<root>/<name>``: the points' run directories, their status, the table, figures and TensorBoard."""
        return Path(self.root) / self.name


@dataclass(frozen=True)
class Point:
    """One knob setting and seed: ``knobs`` maps dotted keys to values, in the sweep file's order."""

    knobs: dict[str, Any]
    seed: int | None
    id: str
    setting: str  # the id without the seed: the points of one table row
    labels: dict[str, str]  # dotted key -> the value as the id reads it


@dataclass(frozen=True)
class Step:
    """One command of a point: ``fit``, or a test whose results land in ``run_dir``."""

    name: str
    command: str  # fit | test
    argv: list[str]
    run_dir: Path


def short_names(keys: list[str]) -> dict[str, str]:
    """The shortest trailing part of each dotted key that tells it from the others (``init_args`` left out):
    ``model.reducer.init_args.budget`` -> ``budget``, unless another knob also ends in ``budget``."""
    parts = {k: [p for p in k.split(".") if p != "init_args"] for k in keys}
    out = {}
    for k in keys:
        for n in range(1, len(parts[k]) + 1):
            name = ".".join(parts[k][-n:])
            if sum(".".join(p[-n:]) == name for p in parts.values()) == 1 or n == len(parts[k]):
                out[k] = name
                break
    return out


def value_label(value: Any) -> str:
    """A knob value as it reads in a point id: ``768``, ``0.1``, ``soft``, a reducer spec's class name."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, dict) and "class_path" in value:
        return str(value["class_path"]).rsplit(".", 1)[-1]
    if isinstance(value, (dict, list)):
        return _SAFE.sub("-", json.dumps(value, sort_keys=True, separators=(",", ":"))).strip("-")
    return _SAFE.sub("-", str(value)).strip("-") or "empty"


def labels(values: list[Any]) -> list[str]:
    """:func:`value_label` of each value; values that read alike but differ (two specs of one reducer class) get a
    short hash of the value appended, so every point keeps its own id."""
    plain = [value_label(v) for v in values]
    out = []
    for v, lab in zip(values, plain):
        twins = {json.dumps(w, sort_keys=True, default=str) for w, m in zip(values, plain) if m == lab}
        digest = hashlib.sha1(json.dumps(v, sort_keys=True, default=str).encode()).hexdigest()[:6]
        out.append(lab if len(twins) == 1 else f"{lab}-{digest}")
    return out


def expand(sweep: Sweep) -> list[Point]:
    """Every point: the product of the ``grid`` lists, times the rows of the ``zipped`` lists, times the seeds (and a
    setting's ``extra_seeds``)."""
    keys = [*sweep.grid, *sweep.zipped]
    names = short_names(keys)
    tags = {k: dict(zip(map(value_key, vs), labels(vs))) for k, vs in {**sweep.grid, **sweep.zipped}.items()}
    rows = list(zip(*sweep.zipped.values())) if sweep.zipped else [()]
    points, seen, settings = [], {}, []
    for combo in itertools.product(*sweep.grid.values()):
        for row in rows:
            knobs = dict(zip(keys, (*combo, *row)))
            setting = "_".join(f"{names[k]}={tags[k][value_key(v)]}" for k, v in knobs.items()) or "base"
            settings.append(setting)
            for seed in [*(sweep.seeds or [None]), *sweep.extra_seeds.get(setting, [])]:
                pid = setting if seed is None else f"{setting}_seed={seed}" if knobs else f"seed={seed}"
                if pid in seen:
                    raise ValueError(f"sweep '{sweep.name}': two points would share the id {pid!r} ({seen[pid]} and "
                                     f"{knobs}, seed {seed}); a value repeats in the grid, zipped lists or seeds")
                seen[pid] = knobs
                points.append(Point(knobs, seed, pid, setting, {k: tags[k][value_key(v)] for k, v in knobs.items()}))
    if unknown := sorted(set(sweep.extra_seeds) - set(settings)):
        raise ValueError(f"sweep '{sweep.name}': extra_seeds names {unknown}, not settings of this sweep; its "
                         f"settings: {settings}")
    return points


def console_script() -> list[str]:
    """``lit_bvllm`` as users launch it: the console script next to this Python (else ``python -m lit_bvllm.cli``)."""
    script = Path(sys.executable).parent / "lit_bvllm"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "lit_bvllm.cli"]


def steps(sweep: Sweep, point: Point, launcher: list[str] | None = None) -> list[Step]:
    """The commands of a point, in order. Test mode: one test (or one per eval), each in its own run directory;
    fit mode: a fit into the point's directory, then each eval as a test of its ``checkpoints/last.ckpt``."""
    launcher = launcher or console_script()
    pdir = sweep.dir / point.id
    common = [f"--{k}={_arg(v)}" for k, v in point.knobs.items()]
    common += [] if point.seed is None else [f"--seed_everything={point.seed}"]

    def command(cmd, configs, ckpt, stage_flags, version):
        argv = [*launcher, cmd, *(a for c in configs for a in ("--config", str(c)))]
        argv += [] if ckpt is None else [f"--ckpt_path={ckpt}"]
        argv += [f"--{k}={_arg(v)}" for k, v in {**sweep.flags, **stage_flags}.items()]
        return argv + common + [f"--trainer.logger.init_args.save_dir={sweep.root}",
                                f"--trainer.logger.init_args.name={sweep.name}",
                                f"--trainer.logger.init_args.version={version}"]

    out = []
    if sweep.mode == "fit":
        out.append(Step("fit", "fit", command("fit", sweep.configs, None, sweep.fit_flags, point.id), pdir))
        ckpt = pdir / "checkpoints" / "last.ckpt"
    else:
        ckpt = sweep.ckpt_path
        if ckpt and SEED in ckpt:
            ckpt = ckpt.replace(SEED, str(point.seed))
    if not sweep.evals:
        return [Step("test", "test", command("test", sweep.configs, ckpt, sweep.test_flags, point.id), pdir)]
    for name, configs in sweep.evals.items():
        argv = command("test", [*sweep.configs, *configs], ckpt, sweep.test_flags, f"{point.id}/{name}")
        out.append(Step(name, "test", argv, pdir / name))
    return out


def show(argv: list[str]) -> str:
    """A command as a shell line (what ``--dry-run`` prints)."""
    return shlex.join(argv)


def _arg(value: Any) -> str:
    """A value as jsonargparse reads it from the command line: JSON for mappings, lists, booleans and null."""
    return value if isinstance(value, str) else json.dumps(value)


def value_key(value: Any) -> str:
    """A value as a dict key (specs and lists are unhashable)."""
    return json.dumps(value, sort_keys=True, default=str)
