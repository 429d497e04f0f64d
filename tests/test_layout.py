"""Package layout: the data side (``datamodules``) never imports the model side (``lit_bvllm``); the model path at the
top of ``lit_bvllm/`` runs without Lightning and imports none of the packages beside it; no import circles."""

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


MODEL_PATH = ("model", "vision", "projector", "splice", "backbones", "weights", "export", "reducers")
"""The Lightning-free path at the top of ``lit_bvllm/``: what a script needs to build, load and run a ``VideoLLM``."""
TOOLING = ("training", "study", "analysis", "world", "sweeps", "cli")


def module_files() -> dict[str, Path]:
    """Every module of the project's two packages, by dotted name (a package by its ``__init__``)."""
    files = {}
    for f in sorted([*(ROOT / "lit_bvllm").rglob("*.py"), *(ROOT / "datamodules").rglob("*.py")]):
        parts = f.relative_to(ROOT).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return files


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project's modules it imports (``from a import b`` names the module ``a.b`` when there is one)."""
    graph = {}
    for name, f in files.items():
        package = name if f.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if isinstance(node, ast.ImportFrom):
                base = package.rsplit(".", node.level - 1)[0] if node.level else ""
                mod = ".".join(p for p in (base, node.module or "") if p)
                subs = {f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in files}
                targets |= subs or {mod}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_itself_back():
    """No import circles in ``lit_bvllm`` and ``datamodules``, counting imports inside functions (the study's runner,
    tables and figures once imported each other in a circle, the runner's side hidden in a function)."""
    files = module_files()
    assert len(files) > 80
    assert circles(import_graph(files)) == []


def test_the_circle_check_finds_a_circle_through_a_function_level_import(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e2"}, "e2": set()}
    assert circles(graph) == [["a", "b", "c"]]
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "runner.py").write_text("from pkg.tables import write\n")
    (pkg / "tables.py").write_text("def write():\n    from pkg import runner\n")
    files = {"pkg": pkg / "__init__.py", "pkg.runner": pkg / "runner.py", "pkg.tables": pkg / "tables.py"}
    assert circles(import_graph(files)) == [["pkg.runner", "pkg.tables"]]


def test_the_model_path_imports_nothing_beside_it():
    """The modules at the top of ``lit_bvllm/`` (and ``reducers/``) import neither the training, study, analysis or
    world packages nor the CLI, at any depth: the flow runs from the tooling to the model, never back."""
    graph = import_graph(module_files())
    on_path = [m for m in graph if m.split(".")[1:2] and m.split(".")[1] in MODEL_PATH]
    assert len(on_path) > 15
    offending = {m: sorted(t for t in graph[m] if t.split(".")[1:2] and t.split(".")[1] in TOOLING) for m in on_path}
    assert {m: t for m, t in offending.items() if t} == {}


def test_the_model_path_runs_without_lightning():
    """Importing the model path loads no Lightning module (a subprocess, so that the test session's imports do not
    count)."""
    import subprocess
    import sys

    code = ("import sys; " + "; ".join(f"import lit_bvllm.{m}" for m in MODEL_PATH) + "; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', "
            "'lightning_fabric') or m.split('.')[:2] in (['lit_bvllm', t] for t in " + repr(list(TOOLING)) + ")))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


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


def test_the_readme_layout_names_every_module():
    """README's layout table names every module of ``lit_bvllm/`` in its folder's row (it had fallen behind the tree
    once: a redesign moved files and the table kept the old names)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Layout"):]
    section = section[:section.index("\n### ")]
    rows = {line.split("|")[1].strip().strip("`"): line for line in section.splitlines() if line.startswith("| `")}
    missing = []
    for folder in [ROOT / "lit_bvllm", *sorted(p.parent for p in (ROOT / "lit_bvllm").glob("*/__init__.py"))]:
        key = folder.relative_to(ROOT).as_posix() + "/"
        if key not in rows:
            if f"`{folder.name}/`" not in rows["lit_bvllm/"]:
                missing.append(key)
            continue
        if folder.name in ("reducers", "sweeps"):  # named as a whole: one file a strategy, one a sweep stage
            continue
        missing += [f"{key}{f.name}" for f in sorted(folder.glob("*.py"))
                    if f.name != "__init__.py" and f"`{f.name}`" not in rows[key]]
    assert missing == []
