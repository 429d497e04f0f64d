"""lit_bvllm sweep: grid expansion and point ids, the commands a point runs, reruns, the table (mean ± std over
seeds), figures and TensorBoard; end to end with the local launcher and with submitit's local executor."""

import importlib
import inspect
import json
import math
import pathlib

import pytest
import yaml

from lit_bvllm.cli import main
from lit_bvllm.sweeps import Sweep, expand, steps
from lit_bvllm.sweeps import run as sweep_run
from lit_bvllm.sweeps.grid import short_names, value_label
from lit_bvllm.sweeps.report import collect, headline_metric, write_tables

REPO = pathlib.Path(__file__).resolve().parents[1]
SWEEPS = sorted((REPO / "experiments" / "sweeps").glob("*.yaml"))
BUDGET = "model.reducer.init_args.budget"
LSTAR, R = "model.reducer.init_args.num_frames", "model.reducer.init_args.num_tokens"


@pytest.fixture(autouse=True)
def repo_root(monkeypatch):
    monkeypatch.chdir(REPO)  # the sweep files name configs relative to the repository, as users run them


def spec(tmp_path, **kw) -> Sweep:
    return Sweep(**{"name": "s", "configs": ["experiments/pretrain.yaml"], "root": str(tmp_path), **kw})


# ------------------------------------------------------------------ points and their commands


def test_grid_is_a_product_crossed_with_zipped_rows_and_seeds(tmp_path):
    s = spec(tmp_path, grid={LSTAR: [8, 16], R: [4, 8]}, zipped={"model.reducer.init_args.tau": [0.1, 1.0],
             "model.reducer.init_args.gamma": [0.5, 0.9]}, seeds=[0, 1])
    points = expand(s)
    assert len(points) == 2 * 2 * 2 * 2 and len({p.id for p in points}) == 16
    assert points[0].id == "num_frames=8_num_tokens=4_tau=0.1_gamma=0.5_seed=0"
    assert points[-1].id == "num_frames=16_num_tokens=8_tau=1_gamma=0.9_seed=1"
    pairs = {(p.knobs["model.reducer.init_args.tau"], p.knobs["model.reducer.init_args.gamma"]) for p in points}
    assert pairs == {(0.1, 0.5), (1.0, 0.9)}  # zipped lists go together, row by row
    assert {p.setting for p in points if p.seed == 1} == {p.setting for p in points if p.seed == 0}  # 8 settings
    assert len(expand(spec(tmp_path, seeds=[3]))) == 1 and expand(spec(tmp_path, seeds=[3]))[0].id == "seed=3"
    assert [p.id for p in expand(spec(tmp_path, grid={BUDGET: [96]}))] == ["budget=96"]  # no seeds: config's seed


def test_extra_seeds_give_some_settings_more_seeds(tmp_path):
    s = spec(tmp_path, grid={BUDGET: [64, 96, 128]}, seeds=[0, 1], extra_seeds={"budget=96": [2, 3]})
    ids = [p.id for p in expand(s)]
    assert ids == ["budget=64_seed=0", "budget=64_seed=1", "budget=96_seed=0", "budget=96_seed=1", "budget=96_seed=2",
                   "budget=96_seed=3", "budget=128_seed=0", "budget=128_seed=1"]
    assert [p.seed for p in expand(s) if p.setting == "budget=96"] == [0, 1, 2, 3]


def test_point_ids_are_readable_sanitised_and_stable(tmp_path):
    assert short_names([BUDGET, "data.budget", LSTAR]) == {BUDGET: "reducer.budget", "data.budget": "data.budget",
                                                          LSTAR: "num_frames"}
    assert [value_label(v) for v in (0.1, 1e-4, 768, True, None, "soft", "a/b c.yaml")] == \
        ["0.1", "0.0001", "768", "true", "null", "soft", "a-b-c.yaml"]
    bv = {"class_path": "lit_bvllm.reducers.BVLLM", "init_args": {"budget": 96}}
    bv2 = {"class_path": "lit_bvllm.reducers.BVLLM", "init_args": {"budget": 96, "frame_selection": False}}
    uni = {"class_path": "lit_bvllm.reducers.Uniform", "init_args": {"num_frames": 6}}
    ids = [p.id for p in expand(spec(tmp_path, grid={"model.reducer": [bv, uni, bv2]}))]
    assert ids[1] == "reducer=Uniform" and ids[0].startswith("reducer=BVLLM-") and ids[2].startswith("reducer=BVLLM-")
    assert len(set(ids)) == 3  # one class twice: a short hash of each spec tells them apart
    # the id of a point does not depend on the other values swept: a grown grid keeps the finished points' folders
    small = {p.id for p in expand(spec(tmp_path, grid={BUDGET: [64, 128]}, seeds=[0]))}
    assert small <= {p.id for p in expand(spec(tmp_path, grid={BUDGET: [32, 64, 128, 256]}, seeds=[0, 1]))}


@pytest.mark.parametrize("kw, message", [
    ({"grid": {"seed_everything": [1, 2]}}, "use the sweep file's 'seeds'"),
    ({"flags": {"--trainer.logger.init_args.version": "x"}}, "the point id"),
    ({"zipped": {"a.b": [1, 2], "c.d": [1]}}, "same length"),
    ({"grid": {"a.b": []}}, "non-empty list"),
    ({"mode": "fit"}, "name the evaluations"),
    ({"name": "my sweep/1"}, "name 'my sweep/1'"),
    ({"grid": {BUDGET: [96, 96]}}, "share the id"),
    ({"ckpt_path": "runs/s/reducer=U_seed={seed}/last.ckpt"}, "names {seed} but the sweep has no seeds"),
    ({"grid": {BUDGET: [96]}, "seeds": [0], "extra_seeds": {"budget=69": [1]}}, r"names \['budget=69'\].*budget=96"),
    ({"grid": {BUDGET: [96]}, "seeds": [0], "extra_seeds": {"budget=96": [0]}}, "share the id"),
    ({"grid": {BUDGET: [96]}, "extra_seeds": {"budget=96": [1]}}, "need the sweep's seeds"),
    ({"grid": {BUDGET: [96]}, "seeds": [0], "extra_seeds": {"budget=96": 3}}, "non-empty list of integer seeds"),
])
def test_a_sweep_file_is_checked(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        expand(spec(tmp_path, **kw))


def test_test_and_fit_commands(tmp_path):
    s = spec(tmp_path, configs=["a.yaml", "b.yaml"], ckpt_path="ck.pt", grid={BUDGET: [96]}, seeds=[0],
             flags={"data.num_workers": 0, BUDGET: 1}, test_flags={"data.limit": 4}, fit_flags={"trainer.max_steps": 2})
    (step,) = steps(s, expand(s)[0], ["lit_bvllm"])
    assert step.argv == ["lit_bvllm", "test", "--config", "a.yaml", "--config", "b.yaml", "--ckpt_path=ck.pt",
                         "--data.num_workers=0", f"--{BUDGET}=1", "--data.limit=4", f"--{BUDGET}=96",  # knob last
                         "--seed_everything=0", f"--trainer.logger.init_args.save_dir={tmp_path}",
                         "--trainer.logger.init_args.name=s", "--trainer.logger.init_args.version=budget=96_seed=0"]
    assert step.run_dir == tmp_path / "s" / "budget=96_seed=0"
    f = spec(tmp_path, mode="fit", grid={"model.reducer": [{"class_path": "U", "init_args": {"budget": 8}}]},
             evals={"needle": ["e1.yaml", "e2.yaml"], "mv": ["e3.yaml"]}, fit_flags={"trainer.max_steps": 2},
             test_flags={"data.limit": 4})
    fit, needle, mv = steps(f, expand(f)[0], ["lit_bvllm"])
    run = tmp_path / "s" / "reducer=U"
    assert (fit.command, fit.run_dir, needle.run_dir, mv.run_dir) == ("fit", run, run / "needle", run / "mv")
    assert "--trainer.max_steps=2" in fit.argv and "--data.limit=4" not in fit.argv
    assert '--model.reducer={"class_path": "U", "init_args": {"budget": 8}}' in fit.argv + needle.argv
    assert needle.argv[:10] == ["lit_bvllm", "test", "--config", "experiments/pretrain.yaml", "--config", "e1.yaml",
                                "--config", "e2.yaml", f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
                                "--data.limit=4"]
    assert needle.argv[-1] == "--trainer.logger.init_args.version=reducer=U/needle"


def test_a_test_mode_checkpoint_per_seed(tmp_path):
    s = spec(tmp_path, ckpt_path="runs/fit/reducer=U_seed={seed}/last.ckpt", seeds=[0, 2],
             zipped={"data.blind": [True, False]}, evals={"e": ["e.yaml"]})
    argv = {p.id: steps(s, p, ["lit_bvllm"])[0].argv for p in expand(s)}
    assert len(argv) == 4
    assert "--ckpt_path=runs/fit/reducer=U_seed=2/last.ckpt" in argv["blind=false_seed=2"]
    assert "--ckpt_path=runs/fit/reducer=U_seed=0/last.ckpt" in argv["blind=true_seed=0"]


def test_a_rerun_overwrites_only_the_failed_steps_own_directories(tmp_path):
    s = spec(tmp_path, mode="fit", grid={BUDGET: [8, 16]}, evals={"a": ["e.yaml"], "b": ["e.yaml"]})
    done, failed = expand(s)
    for p in (done, failed):
        run = s.dir / p.id
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
        (run / "a").mkdir()
        (run / "a" / "x_results.json").write_text("{}")
    (s.dir / done.id / "b").mkdir()
    (s.dir / done.id / "b" / "x_results.json").write_text("{}")
    (s.dir / failed.id / "b").mkdir()
    (s.dir / failed.id / "b" / "config.yaml").write_text("")  # b failed after writing its config
    ok = {"status": "done"}
    sweep_run.write_status(s, done, {"status": "done", "steps": {"fit": ok, "a": ok, "b": ok}})
    sweep_run.write_status(s, failed, {"status": "failed", "steps": {"fit": ok, "a": ok, "b": {"status": "failed"}}})
    assert sweep_run.state(s, done) == "done" and sweep_run.state(s, failed) == "failed"
    fit, a, b = sweep_run.plan(s, failed)
    assert fit[1] is None and a[1] is None  # kept: their outputs are there
    assert b[1][-1] == "--overwrite=true" and b[0].name == "b"
    (s.dir / failed.id / "checkpoints" / "last.ckpt").unlink()  # no checkpoint: the fit and every test run again
    assert [argv[-1] == "--overwrite=true" for _, argv in sweep_run.plan(s, failed)] == [True, True, True]
    fresh = expand(spec(tmp_path, name="t", grid={BUDGET: [8]}))[0]
    (tmp_path / "t" / fresh.id).mkdir(parents=True)
    (tmp_path / "t" / fresh.id / "x_results.json").write_text("{}")  # someone else's run: refused, not deleted
    assert "--overwrite=true" not in sweep_run.plan(spec(tmp_path, name="t", grid={BUDGET: [8]}), fresh)[0][1]


# ------------------------------------------------------------------ the table, figures, TensorBoard


def fake_results(s: Sweep, values: dict[str, dict]) -> None:
    """Finished points with the given results: ``{point id: {benchmark: results}}``."""
    for p in expand(s):
        if p.id not in values:
            continue
        for step in steps(s, p, ["lit_bvllm"]):
            step.run_dir.mkdir(parents=True, exist_ok=True)
            for bench, result in values[p.id].items():
                (step.run_dir / f"{bench}_results.json").write_text(json.dumps(result))
        sweep_run.write_status(s, p, {"status": "done", "steps": {st.name: {"status": "done"}
                                                                  for st in steps(s, p, ["lit_bvllm"])}})


def test_the_table_gives_mean_and_std_over_seeds(tmp_path):
    s = spec(tmp_path, grid={LSTAR: [8, 16], R: [4]}, seeds=[0, 1, 2])
    res = {"num_frames=8_num_tokens=4_seed=0": 0.5, "num_frames=8_num_tokens=4_seed=1": 0.7,
           "num_frames=8_num_tokens=4_seed=2": 0.9, "num_frames=16_num_tokens=4_seed=1": 0.4}
    fake_results(s, {pid: {"vnbench": {"benchmark": "vnbench", "accuracy": v / 2, "circular_accuracy": v,
                                       "per_category": {"ord": v, "": 1}, "error_ids": [], "protocol": {"x": 3}},
                           "mvbench": {"mean_over_tasks": 0.25, "accuracy": 0.3, "selection": {"hit_rate": 1}}}
                     for pid, v in res.items()})
    table = collect(s)
    assert table.headline == {"vnbench": "vnbench/circular_accuracy", "mvbench": "mvbench/mean_over_tasks"}
    assert table.metrics[:2] == ["mvbench/mean_over_tasks", "vnbench/circular_accuracy"]  # benchmarks by name
    assert "vnbench/per_category/_empty" in table.metrics and "mvbench/selection/hit_rate" in table.metrics
    assert not any(m.startswith("vnbench/protocol") or "error_ids" in m for m in table.metrics)
    eight, sixteen = table.rows
    assert eight.seeds == [0, 1, 2] and sixteen.seeds == [1]
    assert eight.mean("vnbench/circular_accuracy") == pytest.approx(0.7)
    assert eight.std("vnbench/circular_accuracy") == pytest.approx(0.2)  # sample std (n - 1)
    assert math.isnan(sixteen.std("vnbench/circular_accuracy"))
    csv_path, md_path = write_tables(table, s.dir)
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("setting,num_frames,num_tokens,seeds,n,mvbench/mean_over_tasks,"
                               "mvbench/mean_over_tasks_std,vnbench/circular_accuracy,vnbench/circular_accuracy_std,")
    assert lines[1].startswith("num_frames=8_num_tokens=4,8,4,0 1 2,3,0.25,0.0,0.7")
    assert lines[2].startswith("num_frames=16_num_tokens=4,16,4,1,1,0.25,,0.4,,")
    md = md_path.read_text().splitlines()
    assert md[2].startswith("| 8 | 4 | 3 | 0.25 ± 0 | 0.7 ± 0.2 |") and md[3].startswith("| 16 | 4 | 1 | 0.25 | 0.4 |")
    assert collect(s, headline="accuracy").headline == {"vnbench": "vnbench/accuracy", "mvbench": "mvbench/accuracy"}
    assert collect(s, headline={"mvbench": "accuracy"}).headline["vnbench"] == "vnbench/circular_accuracy"


def test_headline_rule():
    assert headline_metric("vnbench", {"vnbench/accuracy", "vnbench/circular_accuracy"}) == "vnbench/circular_accuracy"
    assert headline_metric("mvbench", {"mvbench/accuracy", "mvbench/mean_over_tasks"}) == "mvbench/mean_over_tasks"
    assert headline_metric("videomme", {"videomme/accuracy", "videomme/official/accuracy"}) == "videomme/accuracy"
    assert headline_metric("msvd_qa", {"msvd_qa/exact_match", "msvd_qa/token_f1"}) == "msvd_qa/exact_match"
    assert headline_metric("msvd_qa", {"msvd_qa/exact_match", "msvd_qa/token_f1"}, "token_f1") == "msvd_qa/token_f1"
    assert headline_metric("vnbench@b", {"vnbench@b/circular_accuracy"}) == "vnbench@b/circular_accuracy"


def test_report_only_writes_figures_and_tensorboard(tmp_path, capsys, monkeypatch):
    from matplotlib.axes import Axes
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    labels, legends = [], []
    real_xlabel, real_legend = Axes.set_xlabel, Axes.legend
    monkeypatch.setattr(Axes, "set_xlabel", lambda ax, s, *a, **k: labels.append(s) or real_xlabel(ax, s, *a, **k))
    monkeypatch.setattr(Axes, "legend", lambda ax, *a, **k: legends.append(
        [t.get_text() for t in real_legend(ax, *a, **k).get_texts()]))

    s = spec(tmp_path, grid={"model.reducer.init_args.tau": [0.1, 1.0], "model.reducer.init_args.gamma": [0.5, 0.9]})
    fake_results(s, {p.id: {"vnbench": {"circular_accuracy": i / 4, "accuracy": 0.5}}
                     for i, p in enumerate(expand(s)) if i < 3})
    sweep_file = tmp_path / "tg.yaml"
    sweep_file.write_text(yaml.safe_dump({"name": "s", "configs": s.configs, "root": str(tmp_path),
                                          "grid": s.grid}, sort_keys=False))
    main(["sweep", "--config", str(sweep_file), "--report-only", "true"])
    out = capsys.readouterr().out
    assert "3 settings finished" in out and "1 of 4 points not finished" in out
    for png in ("curve_tau.png", "curve_gamma.png", "heatmap_tau_gamma.png"):
        assert (s.dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (s.dir / "heatmap_lstar_r.png").exists()
    # axes and lines in the paper's symbols (they read tau, gamma, num_frames)
    assert {"τ (Gumbel temperature)", "γ (merge threshold)"} <= set(labels)
    assert any(text.startswith("γ=") for group in legends for text in group)
    runs = sorted(p.name for p in (s.dir / "tensorboard").iterdir())
    assert runs == sorted(p.id for p in expand(s)[:3])  # one HPARAMS session per finished point, no curves (2 knobs)
    ev = EventAccumulator(str(s.dir / "tensorboard" / runs[0]), size_guidance={"tensors": 0}).Reload()
    assert ev.Scalars("vnbench/circular_accuracy")[0].value in (0.0, 0.25, 0.5)
    plugin = ev.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(plugin)
    from tensorboard.plugins.hparams import plugin_data_pb2

    exp = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in exp.metric_infos} == {"vnbench/circular_accuracy", "vnbench/accuracy"}
    assert {h.name for h in exp.hparam_infos} == {"tau", "gamma", "seed"}


def test_the_hit_rate_curve_draws_its_uniform_baseline_and_every_line(tmp_path, monkeypatch):
    """lstar_hit_rate.png drew three coinciding R lines of which one was visible, titled the synthetic needle set
    "vnbench" and left out the uniform baseline its results carry."""
    from matplotlib.axes import Axes

    from lit_bvllm.sweeps.curves import curve

    drawn = {"errorbar": [], "plot": [], "set_title": []}
    for name in drawn:
        real = getattr(Axes, name)
        monkeypatch.setattr(Axes, name, lambda ax, *a, _n=name, _r=real, **k: drawn[_n].append((a, k)) or _r(ax, *a,
                                                                                                              **k))
    configs = ["experiments/pretrain.yaml", "experiments/eval/base.yaml", "experiments/eval/needle.yaml"]
    s = spec(tmp_path, configs=configs, grid={LSTAR: [4, 8, 16], R: [4, 8]})
    hit, uniform = {4: 0.4, 8: 0.7, 16: 0.85}, {4: 0.1, 8: 0.25, 16: 0.3}  # R acts after selection: the same per R
    fake_results(s, {p.id: {"vnbench": {"circular_accuracy": 0.3, "selection": {
        "hit_rate": hit[p.knobs[LSTAR]], "uniform_hit_rate": uniform[p.knobs[LSTAR]]}}} for p in expand(s)})
    table = collect(s, headline="selection/hit_rate")
    assert table.titles == {"vnbench": "needle (vnbench)"}
    curve(table, LSTAR, tmp_path / "curve.png")
    assert [a[0] for a, _ in drawn["set_title"]] == ["needle (vnbench)"]
    lines = [(list(a[0]), list(a[1]), k["marker"]) for a, k in drawn["errorbar"]]
    assert len(lines) == 2 and [ys for _, ys, _ in lines] == [[0.4, 0.7, 0.85]] * 2
    assert lines[0][0] != lines[1][0] and lines[0][2] != lines[1][2]  # offset sideways, other markers: both visible
    assert all(abs(x - n) < 0.5 for xs, _, _ in lines for x, n in zip(xs, (4, 8, 16)))
    base = [(list(a[1]), k.get("label")) for a, k in drawn["plot"]]
    assert [ys for ys, _ in base] == [[0.1, 0.25, 0.3]] * 2
    assert [label for _, label in base] == ["uniform pick of as many frames", None]  # one legend entry


def test_a_one_knob_sweep_logs_curves_with_the_knob_as_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lit_bvllm.sweeps import make_report

    s = spec(tmp_path, grid={BUDGET: [32, 96]}, seeds=[0, 1])
    fake_results(s, {p.id: {"vnbench": {"circular_accuracy": p.knobs[BUDGET] / 100 + p.seed / 10}}
                     for p in expand(s)})
    make_report(s)
    ev = EventAccumulator(str(s.dir / "tensorboard" / "curves")).Reload()
    assert [(e.step, round(e.value, 4)) for e in ev.Scalars("vnbench/circular_accuracy")] == [(32, 0.37), (96, 1.01)]
    assert (s.dir / "curve_budget.png").stat().st_size > 1000


# ------------------------------------------------------------------ the shipped sweep files


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_the_shipped_sweeps_expand_to_commands(path, capsys):
    from lit_bvllm.reducers import BVLLM

    main(["sweep", "--config", str(path), "--dry-run", "true", "--root", "/nonexistent/sweeps"])
    out = capsys.readouterr().out
    raw = yaml.safe_load(path.read_text())
    s = Sweep(**{k: v for k, v in raw.items() if k not in ("launcher", "headline")})
    points = expand(s)
    assert f"{len(points)} points" in out and all(p.id in out for p in points)
    assert not pathlib.Path("/nonexistent").exists()  # a dry run writes nothing
    reducer = BVLLM  # the base configs' reducer, unless the sweep gives a whole spec in its flags
    if isinstance(s.flags.get("model.reducer"), dict):
        module, name = s.flags["model.reducer"]["class_path"].rsplit(".", 1)
        reducer = getattr(importlib.import_module(module), name)
    signature = inspect.signature(reducer)
    for key in [*s.grid, *s.zipped, *s.flags]:
        if key.startswith("model.reducer.init_args."):
            assert key.rsplit(".", 1)[1] in signature.parameters, (
                f"{path.name}: {key} is no {reducer.__name__} argument")
    if "model.reducer.init_args.selection" in s.flags:
        assert s.flags["model.reducer.init_args.selection"] in str(signature.parameters["selection"].annotation)
    for config in [*s.configs, *(c for cs in s.evals.values() for c in cs)]:
        assert (REPO / config).is_file()


def test_strategies_compares_every_reducer_at_one_budget(on_tiny):
    raw = yaml.safe_load((REPO / "experiments" / "sweeps" / "strategies.yaml").read_text())
    pretrain = yaml.safe_load((REPO / "experiments" / "pretrain.yaml").read_text())["model"]["reducer"]["init_args"]
    classes, qformers = set(), set()
    for spec_ in raw["grid"]["model.reducer"]:
        module, name = spec_["class_path"].rsplit(".", 1)
        if "qformer" in spec_["init_args"]:  # the Q-Former reducers start from make-tiny's pretrained Q-Former
            qformers.add(name)
        cls = getattr(importlib.import_module(module), name)
        reducer = cls(in_dim=64, **on_tiny(spec_["init_args"]))  # tiny width
        assert reducer.budget == cls.budget_from(spec_["init_args"]) == pretrain["budget"] == 96, name
        classes.add(name)
    exported = {n for n in importlib.import_module("lit_bvllm.reducers").__all__ if n[0].isupper()}
    assert classes >= {"BVLLM", "Uniform", "LLaMAVID", "MeanPool", "TokenLearner", "GroupedTTM", "WeightedSampler",
                       "Identity"}
    assert exported - classes <= {"Reducer", "ReducerOutput"}, exported - classes
    assert qformers == {"BVLLM", "LLaMAVID"}  # no Q-Former reducer starts random beside one that starts pretrained


# ------------------------------------------------------------------ end to end


def sweep_file(tmp_path, tiny, synthetic, name, grid, **extra) -> pathlib.Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "root": str(tmp_path / "runs"), "grid": grid,
        "configs": ["experiments/pretrain.yaml", "experiments/eval/base.yaml", "experiments/eval/needle.yaml"],
        "flags": {"model.llm": tiny["llm"], "model.vision_tower": tiny["vision"],
                  "model.reducer.init_args.qformer": tiny["qformer"], "data.num_workers": 0,
                  "data.benchmark.root": str(synthetic / "eval" / "vnbench"), "data.limit": 4,
                  "trainer.enable_progress_bar": False, "trainer.logger.init_args.default_hp_metric": False},
        **extra}, sort_keys=False))
    return path


def test_a_2x2_sweep_end_to_end_with_a_failing_point_and_a_rerun(tiny, synthetic, tmp_path, monkeypatch, capsys):
    # L* = 20 is more than the tiny B-VLLM's 16 learned queries: its points fail when the reducer is built
    path = sweep_file(tmp_path, tiny, synthetic, "lr", {LSTAR: [2, 20], R: [2, 4]})
    launched = []
    real = sweep_run.launch
    monkeypatch.setattr(sweep_run, "launch", lambda argv, out, err: launched.append(argv) or real(argv, out, err))
    with pytest.raises(SystemExit, match="2 of 4 points failed"):
        main(["sweep", "--config", str(path)])
    assert len(launched) == 4
    sweep_dir = tmp_path / "runs" / "lr"
    good, bad = ["num_frames=2_num_tokens=2", "num_frames=2_num_tokens=4"], "num_frames=20_num_tokens=2"
    for pid in good:
        result = json.loads((sweep_dir / pid / "vnbench_results.json").read_text())
        assert result["evaluated"] == 4
        assert (sweep_dir / pid / "config.yaml").is_file()  # each point is its own run (and TensorBoard version)
        assert json.loads((sweep_dir / "status" / f"{pid}.json").read_text())["status"] == "done"
    status = json.loads((sweep_dir / "status" / f"{bad}.json").read_text())
    assert status["status"] == "failed" and status["error"]["returncode"] != 0
    assert not (sweep_dir / bad).exists()  # it failed before its first step: nothing left that blocks its rerun
    assert "num_frames=20 (L*) exceeds num_queries=16" in status["error"]["stderr_tail"]
    out = capsys.readouterr().out
    assert f"FAILED {bad}" in out and "exceeds num_queries" in out
    rows = (sweep_dir / "results.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == good
    assert rows[0].split(",")[:6] == ["setting", "num_frames", "num_tokens", "seeds", "n",
                                      "vnbench/circular_accuracy"]
    for png in ("curve_num_frames.png", "curve_num_tokens.png", "heatmap_lstar_r.png"):
        assert (sweep_dir / png).stat().st_size > 1000
    assert (sweep_dir / "tensorboard" / good[0]).is_dir()

    # a rerun skips the finished points and reruns the failed ones, replacing what their failed attempt wrote
    # (--overwrite true, for them only); here one also failed after writing files (a crash before scoring)
    status = json.loads((sweep_dir / "status" / f"{good[1]}.json").read_text())
    status["status"] = status["steps"]["test"]["status"] = "failed"
    (sweep_dir / "status" / f"{good[1]}.json").write_text(json.dumps(status))
    (sweep_dir / good[1] / "vnbench_results.json").unlink()
    launched.clear()

    def launch(argv, out, err):  # the L* = 20 points fail again, without the 6 s of starting lit_bvllm
        launched.append(argv)
        if f"--{LSTAR}=20" in argv:
            err.write("ValueError: L* again\n")
            return 2
        return real(argv, out, err)

    monkeypatch.setattr(sweep_run, "launch", launch)
    with pytest.raises(SystemExit, match="2 of 4 points failed"):
        main(["sweep", "--config", str(path)])
    versions = [a.split("=", 1)[1] for argv in launched for a in argv if a.startswith("--trainer.logger.init_args.v")]
    assert sorted(versions) == sorted([good[1], bad, "num_frames=20_num_tokens=4"])
    overwritten = {a.split("=", 1)[1] for argv in launched if "--overwrite=true" in argv for a in argv
                   if a.startswith("--trainer.logger.init_args.v")}
    assert overwritten == {good[1]}  # the one with files of its failed attempt; a failed start left none
    assert json.loads((sweep_dir / "status" / f"{good[1]}.json").read_text())["attempt"] == 2
    assert (sweep_dir / good[1] / "vnbench_results.json").is_file()
    assert (json.loads((sweep_dir / "status" / f"{bad}.json").read_text())["error"]["stderr_tail"]
            == "ValueError: L* again")
    assert len((sweep_dir / "results.csv").read_text().splitlines()) == 3


def test_the_slurm_launcher_runs_a_job_array_with_submitits_local_executor(tiny, synthetic, tmp_path):
    pytest.importorskip("submitit")
    path = sweep_file(tmp_path, tiny, synthetic, "sl", {LSTAR: [2]}, seeds=[0], launcher="slurm",
                      slurm={"cluster": "local", "timeout_min": 10})
    main(["sweep", "--config", str(path)])
    sweep_dir = tmp_path / "runs" / "sl"
    assert json.loads((sweep_dir / "status" / "num_frames=2_seed=0.json").read_text())["status"] == "done"
    assert list((sweep_dir / "slurm").glob("*_0_log.out"))  # submitit's own logs of the array task
    assert (sweep_dir / "results.csv").read_text().splitlines()[1].startswith("num_frames=2,2,0,1,")


def test_fit_mode_trains_each_point_then_tests_its_own_checkpoint(tiny, synthetic, tmp_path):
    path = sweep_file(tmp_path, tiny, synthetic, "ft", {R: [2]}, mode="fit", seeds=[0],
                      evals={"needle": ["experiments/eval/base.yaml", "experiments/eval/needle.yaml"]},
                      fit_flags={"data.train": str(synthetic / "pretrain.json"), "data.batch_size": 2,
                                 "trainer.max_steps": 1})
    raw = yaml.safe_load(path.read_text())
    raw["configs"] = ["experiments/pretrain.yaml"]
    raw["test_flags"] = {k: raw["flags"].pop(k) for k in ("data.benchmark.root", "data.limit")}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    main(["sweep", "--config", str(path)])
    run = tmp_path / "runs" / "ft" / "num_tokens=2_seed=0"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    result = json.loads((run / "needle" / "vnbench_results.json").read_text())
    assert result["evaluated_weights"]["ckpt_path"] == str(run / "checkpoints" / "last.ckpt")


def test_sweep_is_a_subcommand_of_the_one_parser(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    out = capsys.readouterr().out
    assert "--dry_run" in out and "--report_only" in out and "--launcher {local,slurm}" in out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "    sweep " in capsys.readouterr().out
