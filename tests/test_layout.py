"""Package layout: the data side (``datamodules``) never imports the model side (``lit_bvllm``)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module a file of ``package`` imports, at any depth (inside functions, ``TYPE_CHECKING`` blocks),
    relative imports resolved."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            names.add(".".join(p for p in (base, node.module or "") if p))
    return names


def test_datamodules_never_import_lit_bvllm():
    files = sorted((ROOT / "datamodules").rglob("*.py"))
    assert len(files) > 20
    offending = {}
    for f in files:
        package = ".".join(f.relative_to(ROOT).parts[:-1])
        bad = sorted(m for m in imported_modules(f, package) if m.split(".")[0] == "lit_bvllm")
        if bad:
            offending[str(f.relative_to(ROOT))] = bad
    assert offending == {}, f"the direction is lit_bvllm -> datamodules, never back: {offending}"


def test_the_check_sees_nested_and_relative_imports(tmp_path):
    f = tmp_path / "mod.py"
    f.write_text("def g():\n    from lit_bvllm.evaluation.scorer import Evaluator\n    import lit_bvllm.cli\n"
                 "from . import items\nfrom ..video import read_video\n")
    assert imported_modules(f, "datamodules.benchmarks") == {
        "lit_bvllm.evaluation.scorer", "lit_bvllm.cli", "datamodules.benchmarks", "datamodules.video"}


def test_benchmarks_read_and_score_without_lightning():
    """A benchmark's reader, prompts and scoring import without Lightning (only the data module needs it)."""
    import subprocess
    import sys

    code = ("import sys; from datamodules.benchmarks import VNBench, Evaluator, MVBench, MSVDQA; "
            "from datamodules.benchmarks import parsing, prompts, selection, judge; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'lit_bvllm')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_the_conda_environment_lists_what_pyproject_declares():
    """environment.yml's pip list claims pyproject's ranges; it had fallen behind (pyarrow, matplotlib)."""
    import tomllib
    import yaml

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = set(project["dependencies"]) | set(project["optional-dependencies"]["sweep"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    missing = {d for d in declared if not d.startswith("torch") and d not in pip}
    assert not missing, f"environment.yml lacks {sorted(missing)}"
    assert "torch==2.13.0" in pip
