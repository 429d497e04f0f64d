"""lit_bvllm study (the needle study, issue 13): the report on planted results (fake sweep folders with results
JSONs and predictions JSONL), the paired bootstrap, missing points, figures, the wall-time estimate, and the study's
sweep files expanded to their points."""

import csv
import importlib
import inspect
import json
import pathlib

import numpy as np
import pytest
import yaml

from lit_bvllm.cli import main
from lit_bvllm.reducers import BVLLM
from lit_bvllm.study.records import method_name
from lit_bvllm.study.runner import FILES, estimate, load_sweeps, seconds_per_step, step_times, study
from lit_bvllm.sweeps import expand, steps
from lit_bvllm.sweeps.paired import circular_groups, paired_bootstrap
from lit_bvllm.sweeps.run import write_status

REPO = pathlib.Path(__file__).resolve().parents[1]
STRATEGIES = ["BVLLM", "Uniform", "LLaMAVID", "MeanPool", "TokenLearner", "GroupedTTM", "WeightedSampler", "Identity"]
CATEGORIES = ["ret_insert1", "ord_insert1", "cnt_insert1"]
VIDEOS = 12  # per length: 36 question groups, 144 items
P_RIGHT = {"BVLLM": 0.75, "Uniform": 0.35, "QFrame → Uniform": 0.6}  # planted: B-VLLM answers more groups; Q-Frame
# is the best training-free selector
_SPEC = yaml.safe_load((REPO / "experiments/sweeps/needle_strategies.yaml").read_text())
PAIRED = (*_SPEC["seeds"], *_SPEC["extra_seeds"]["reducer=BVLLM"])  # B-VLLM's and Uniform's seeds; the others 0-2
STRATEGY_POINTS = 8 * 3 + 2 * (len(PAIRED) - 3)  # the strategies sweep's points (fits)
TESTED = STRATEGY_POINTS + 9 + 12 + 24  # every sweep's points (+ controls 3 x 3, ablation 4 x 3, training-free 8 x 3)


def seeds_of(method: str) -> tuple[int, ...]:
    return PAIRED if method in ("BVLLM", "Uniform") else (0, 1, 2)


@pytest.fixture(autouse=True)
def repo_root(monkeypatch):
    monkeypatch.chdir(REPO)  # the sweep files name configs relative to the repository


def planted_run(run_dir: pathlib.Path, rng: np.random.Generator, p_right: float, picks: bool,
                tokens: float | None = None) -> float:
    """Write a VNBench predictions JSONL and results JSON of planted answers (and ``tokens`` visual tokens per item,
    with a prefill of 1e6 FLOPs per token); the circular accuracy."""
    run_dir.mkdir(parents=True, exist_ok=True)
    per_cat, lines = {}, []
    for c in CATEGORIES:
        right = [bool(rng.random() < p_right) for _ in range(VIDEOS)]
        per_cat[c] = sum(right) / VIDEOS
        for v, ok in enumerate(right):
            for t in range(4):
                lines.append({"id": f"needle_{v:04d}_{c}_{t}", "index": len(lines), "correct": ok or t > 0,
                              "pred": 0, "answer": 0 if ok else 1})
    (run_dir / "vnbench_predictions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    acc = sum(per_cat.values()) / len(per_cat)
    result = {"benchmark": "vnbench", "items": len(lines), "circular_accuracy": acc, "circular_per_category": per_cat}
    if picks:
        result["selection"] = {"hit_rate": p_right, "uniform_hit_rate": 0.25, "frames_kept": 6.0}
    if tokens is not None:
        result["visual_tokens"] = {"mean": tokens, "min": int(tokens), "max": int(tokens)}
        flops = 1e6 * (tokens + 40)
        result["prefill_flops"] = {"mean": flops, "min": flops, "max": flops}
    (run_dir / "vnbench_results.json").write_text(json.dumps(result))
    return acc


def plant(root: pathlib.Path, skip: tuple[str, ...] = (), quick: bool = False) -> dict:
    """Every point of the study's sweeps under ``root`` finished, with planted results (but the points in ``skip``);
    returns ``{(role, method label, eval, seed): circular accuracy}``."""
    sweeps = load_sweeps(FILES, str(root), quick)
    planted = {}
    for role, s in sweeps.items():
        for i, p in enumerate(expand(s)):
            if p.id in skip:
                continue
            record = {}
            for step in steps(s, p, ["lit_bvllm"]):
                record[step.name] = {"status": "done", "seconds": 100.0 if step.command == "fit" else 40.0}
                if step.command == "fit":
                    (step.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
                    (step.run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
                    continue
                label = method_name(role, p) if role in ("strategies", "training_free") else p.setting
                length = int(step.name.split("_")[1][:-1])
                rng = np.random.default_rng([p.seed, i, length, len(role)])
                picks = label in ("BVLLM", "Uniform", "WeightedSampler") or role != "strategies"
                tokens = float(min(2 * length, 96)) if label == "LLaMAVID" else 96.0  # 2 per frame up to θ
                if p.knobs.get("data.blind") is True:
                    tokens = 0.0  # what the evaluator records for a blind run
                planted[(role, label, step.name, p.seed)] = planted_run(step.run_dir, rng, P_RIGHT.get(label, 0.5),
                                                                         picks, tokens)
            write_status(s, p, {"id": p.id, "status": "done", "steps": record})
    return planted


def read_csv(path: pathlib.Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ the report


def test_the_report_has_every_strategy_length_and_seed_with_mean_and_std(tmp_path, capsys):
    planted = plant(tmp_path)
    study(root=str(tmp_path), report_only=True, example=False, resamples=500)
    out = tmp_path / "study"
    points = read_csv(out / "points.csv")
    strategies = {(r["method"], r["eval"], r["seed"]) for r in points if r["role"] == "strategies"}
    assert strategies == {(m, f"needle_{n}s", str(s)) for m in STRATEGIES for n in (16, 64, 128) for s in seeds_of(m)}
    assert all(r["status"] == "done" for r in points) and len(points) == TESTED * 3
    summary = {(r["role"], r["method"], r["eval"]): r for r in read_csv(out / "summary.csv")}
    for method in STRATEGIES:
        for n in (16, 64, 128):
            row = summary[("strategies", method, f"needle_{n}s")]
            values = [planted[("strategies", method, f"needle_{n}s", s)] for s in seeds_of(method)]
            assert float(row["circular_accuracy"]) == pytest.approx(np.mean(values))
            assert float(row["circular_accuracy_std"]) == pytest.approx(np.std(values, ddof=1))
            assert row["seeds_done"] == row["seeds_expected"] == str(len(seeds_of(method)))
    assert float(summary[("strategies", "LLaMAVID", "needle_16s")]["visual_tokens"]) == 32.0  # its actual tokens
    assert float(summary[("strategies", "LLaMAVID", "needle_64s")]["visual_tokens"]) == 96.0
    assert float(summary[("controls", "blind (no frames)", "needle_64s")]["visual_tokens"]) == 0.0  # not its 96
    assert float(summary[("controls", "random frames", "needle_16s")]["visual_tokens"]) == 96.0
    md = (out / "study.md").read_text()
    for name in ["blind (no frames)", "random frames", "oracle frames", "BVLLM w/o frame selection",
                 "BVLLM w/o temporal merge", "BVLLM w/o spatial sampling", "BVLLM soft selection", *STRATEGIES]:
        assert f"| {name} |" in md, name
    assert f"{np.mean([planted[('strategies', 'BVLLM', 'needle_64s', s)] for s in PAIRED]):.3f} ± " in md
    extra = list(PAIRED[3:])
    assert f"seeds [0, 1, 2], reducer=BVLLM also {extra}, reducer=Uniform also {extra})" in md
    assert "## Not finished\n\nnone" in md
    assert "| method | kind | tokens | prefill GFLOPs | 16 s | 64 s | 128 s |" in md  # the lengths are columns
    assert "| LLaMAVID | strategy | 32 / 96 / 96 | 0.072 / 0.136 / 0.136 |" in md  # per length
    assert "| Uniform | strategy | 96 | 0.136 |" in md
    for name in ["BOLT → Uniform", "AKS → Uniform", "QFrame → Uniform", "TopK → Uniform", "VisionZip", "FastVID",
                 "BOLT → VisionZip", "FastV"]:
        assert f"| {name} | training-free (Uniform ckpt) | 96 |" in md, name
    # B-VLLM against the best training-free selector (the planted one), on the three seeds they share
    section = md.split("## BVLLM − QFrame → Uniform: paired bootstrap over question groups")[1].split("##")[0]
    assert section.count("| all |") == 3 and "| 3 |" in section
    assert "the full study, expected on this machine" in md
    assert "study.md" in capsys.readouterr().out


def test_the_bootstrap_interval_brackets_the_difference_and_is_deterministic(tmp_path):
    planted = plant(tmp_path)
    study(root=str(tmp_path), report_only=True, example=False, resamples=2000)
    table = [r for r in read_csv(tmp_path / "study" / "bvllm_vs_uniform.csv") if r["b"] == "Uniform"]
    rows = {r["eval"]: r for r in table if r["questions"] == "all"}
    assert set(rows) == {"needle_16s", "needle_64s", "needle_128s"}
    run = tmp_path / "needle_strategies"
    for ev, r in rows.items():
        observed = np.mean([planted[("strategies", "BVLLM", ev, s)] - planted[("strategies", "Uniform", ev, s)]
                            for s in PAIRED])  # balanced types: the mean over groups is the mean over types
        assert float(r["diff"]) == pytest.approx(observed)
        assert float(r["low"]) <= observed <= float(r["high"])
        assert (r["groups"], r["seeds"], r["dropped_groups"]) == (str(3 * VIDEOS), str(len(PAIRED)), "0")
        # each needle type alone: its own groups, its own difference (the per-type accuracies the runs wrote)
        per_type = {t["questions"]: t for t in table if t["eval"] == ev and t["questions"] != "all"}
        assert sorted(per_type) == sorted(CATEGORIES)
        for c, t in per_type.items():
            acc = {m: [json.loads((run / f"reducer={m}_seed={s}" / ev / "vnbench_results.json").read_text())[
                "circular_per_category"][c] for s in PAIRED] for m in ("BVLLM", "Uniform")}
            assert float(t["diff"]) == pytest.approx(np.mean(acc["BVLLM"]) - np.mean(acc["Uniform"]))
            assert float(t["low"]) <= float(t["diff"]) <= float(t["high"]) and t["groups"] == str(VIDEOS)
        assert np.mean([float(t["diff"]) for t in per_type.values()]) == pytest.approx(observed)
    first = (tmp_path / "study" / "bvllm_vs_uniform.csv").read_text()
    study(root=str(tmp_path), report_only=True, example=False, resamples=2000)
    assert (tmp_path / "study" / "bvllm_vs_uniform.csv").read_text() == first  # same inputs, same interval

    a = {s: circular_groups(run / f"reducer=BVLLM_seed={s}" / "needle_64s" / "vnbench_predictions.jsonl")
         for s in (0, 1, 2)}
    b = {s: circular_groups(run / f"reducer=Uniform_seed={s}" / "needle_64s" / "vnbench_predictions.jsonl")
         for s in (0, 1, 2)}
    one, two, other = (paired_bootstrap(a, b, 1000, seed=k) for k in (7, 7, 8))
    assert one == two and (one.low, one.high) != (other.low, other.high) and one.diff == other.diff
    assert one.low < one.diff < one.high and one.level == 0.95
    # a group missing from one run is left out of every run, and counted
    del a[1]["needle_0003_ret_insert1"]
    assert paired_bootstrap(a, b, 100).groups == 3 * VIDEOS - 1 and paired_bootstrap(a, b, 100).dropped == 1


def test_circular_groups_need_every_try(tmp_path):
    lines = [{"id": "v_ret_0", "correct": True}, {"id": "v_ret_1", "correct": True},
             {"id": "w_ret_0", "correct": True}, {"id": "w_ret_1", "correct": False},
             {"id": "x_ret_0", "correct": True}]  # x's second try is missing: left out
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    assert circular_groups(tmp_path / "p.jsonl") == {"v_ret": True, "w_ret": False}


def test_a_missing_point_is_reported_not_dropped(tmp_path, capsys):
    plant(tmp_path, skip=("reducer=TokenLearner_seed=1", "blind=false_pick=oracle_seed=2"))
    study(root=str(tmp_path), report_only=True, example=False, resamples=200)
    out = tmp_path / "study"
    points = read_csv(out / "points.csv")
    missing = [(r["method"], r["seed"], r["eval"], r["status"]) for r in points if r["status"] != "done"]
    assert sorted(missing) == sorted([("TokenLearner", "1", f"needle_{n}s", "pending") for n in (16, 64, 128)]
                                     + [("oracle frames", "2", f"needle_{n}s", "pending") for n in (16, 64, 128)])
    summary = {(r["method"], r["eval"]): r for r in read_csv(out / "summary.csv")}
    assert (summary[("TokenLearner", "needle_64s")]["seeds_done"], summary[("TokenLearner", "needle_64s")][
        "seeds_expected"]) == ("2", "3")
    md = (out / "study.md").read_text()
    assert "(2/3)" in md.split("## Per task type")[0]
    assert "- strategies TokenLearner seed 1 needle_128s: pending (point reducer=TokenLearner_seed=1)" in md
    assert "- controls oracle frames seed 2 needle_16s: pending" in md
    assert f"6 of {TESTED * 3} method x length x seed results missing" in capsys.readouterr().out


def test_a_method_with_no_finished_seed_reads_missing(tmp_path):
    plant(tmp_path, skip=tuple(f"reducer=GroupedTTM_seed={s}" for s in (0, 1, 2)))
    study(root=str(tmp_path), report_only=True, example=False, resamples=200)
    md = (tmp_path / "study" / "study.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| GroupedTTM | strategy"))
    assert row.count("missing") == 3


def test_the_figures_are_written(tmp_path):
    plant(tmp_path)
    study(root=str(tmp_path), report_only=True, example=False, resamples=200)
    for name in ("accuracy_vs_length.png", "hit_rate_vs_length.png"):
        path = tmp_path / "study" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000, name
    assert "Figures: accuracy_vs_length.png, hit_rate_vs_length.png" in (tmp_path / "study" / "study.md").read_text()


def test_the_quick_variant_reports_on_its_own_folders(tmp_path):
    plant(tmp_path, quick=True)
    study(root=str(tmp_path), quick=True, report_only=True, example=False, resamples=200)
    points = read_csv(tmp_path / "study_quick" / "points.csv")
    assert {(r["eval"], r["seed"]) for r in points} == {("needle_64s", "0")} and len(points) == 8 + 3 + 4 + 8
    assert all(r["status"] == "done" for r in points)
    assert not (tmp_path / "study").exists()


# ------------------------------------------------------------------ wall time


def test_the_full_wall_time_is_estimated_from_measured_quick_points(tmp_path):
    plant(tmp_path, quick=True)  # every fit 100 s at the full recipe's steps, every 64 s test 40 s
    full = load_sweeps(FILES, str(tmp_path))
    quick = load_sweeps(FILES, str(tmp_path), quick=True)
    t = estimate(full, step_times(full) + step_times(quick))
    fits, tests = STRATEGY_POINTS + 12, TESTED * 3
    assert (t["measured"], t["scaled"], t["unknown"]) == (fits + tests // 3, 2 * tests // 3, 0)
    assert t["seconds"] == pytest.approx(fits * 100 + TESTED * 40 * (16 + 64 + 128) / 64)
    # a test's length-independent part (a blind test's time) is kept, the rest scales with the length
    with_base = estimate(full, step_times(full) + step_times(quick), test_base=8.0)
    assert with_base["seconds"] == pytest.approx(fits * 100 + TESTED * (40 + 2 * 8 + 32 * (16 + 128)
                                                                                               / 64))
    fewer = load_sweeps(FILES, str(tmp_path), quick=True, quick_steps=150)
    assert fewer["strategies"].fit_flags["trainer.max_steps"] == 150
    half = [("strategies", "reducer=BVLLM", "fit", 50.0, 500, None)]  # half the full recipe's 1,000 steps
    n = len(PAIRED)  # B-VLLM's fits
    assert estimate(full, half)["scaled"] == n and estimate(full, half)["seconds"] == pytest.approx(n * 100)
    timed = [("strategies", "reducer=BVLLM", "fit", 50.0, 500, 0.2)]  # 500 more steps at 0.2 s
    assert estimate(full, timed)["seconds"] == pytest.approx(n * 150)


def test_seconds_per_step_from_the_fits_logged_losses(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path)) as w:
        for step in (9, 19, 29):
            w.add_scalar("train/loss", 1.0, step, walltime=100.0 + 0.5 * step)
    assert seconds_per_step(tmp_path) == pytest.approx(0.5)
    assert seconds_per_step(tmp_path / "none") is None


# ------------------------------------------------------------------ the sweep files


def test_the_study_sweeps_expand_to_the_expected_points(capsys):
    main(["study", "--dry-run", "true", "--root", "/nonexistent/sweeps"])
    out = capsys.readouterr().out
    assert (f"study: strategies {STRATEGY_POINTS} points, controls 9 points, ablation 12 points, training_free 24 "
            "points") in out
    assert not pathlib.Path("/nonexistent").exists()
    for s in (0, 1, 2):
        assert (f"--ckpt_path=/nonexistent/sweeps/needle_strategies/reducer=Uniform_seed={s}/checkpoints/last.ckpt"
                in out)
    assert out.count(" fit --config") == STRATEGY_POINTS + 12 == out.count("--trainer.max_steps=1000")
    assert out.count(" test --config") == TESTED * 3
    assert out.count("--trainer.logger.init_args.version=reducer=BVLLM_seed=5/needle_64s") == 1  # extra_seeds
    for n in (16, 64, 128):
        assert out.count(f"--config experiments/eval/needle_{n}s.yaml") == TESTED
    assert out.count("--data.blind=true") == 3 * 3 and out.count("--model.reducer.init_args.pick=oracle") == 3 * 3
    for switch in ("frame_selection", "temporal_merge", "spatial_sampling"):
        assert out.count(f"--model.reducer.init_args.{switch}=false") == 4 * 3  # its variant's fit + 3 tests x 3 seeds

    main(["study", "--quick", "true", "--dry-run", "true", "--root", "/nonexistent/sweeps"])
    out = capsys.readouterr().out
    assert "study (quick): strategies 8 points, controls 3 points, ablation 4 points, training_free 8 points" in out
    assert out.count("--trainer.max_steps=500") == 8 + 4 and "--trainer.max_steps=1000" not in out
    assert "needle_16s" not in out and "needle_128s" not in out
    assert "--ckpt_path=/nonexistent/sweeps/needle_strategies_quick/reducer=Uniform_seed=0/checkpoints/last.ckpt" in out


def test_every_strategy_of_the_study_has_the_same_budget_and_recipe(on_tiny):
    raw = {role: yaml.safe_load((REPO / path).read_text()) for role, path in FILES.items()}
    names = []
    for spec in raw["strategies"]["grid"]["model.reducer"]:
        module, name = spec["class_path"].rsplit(".", 1)
        if name in ("BVLLM", "LLaMAVID"):  # both start from make-tiny's pretrained Q-Former (here the fixture's)
            assert spec["init_args"]["qformer"] == "artifacts/tiny/qformer", name
        reducer = getattr(importlib.import_module(module), name)(in_dim=64, **on_tiny(spec["init_args"]))
        assert reducer.budget == 96, name
        names.append(name)
    assert names == STRATEGIES
    bvllm = raw["strategies"]["grid"]["model.reducer"][0]
    assert raw["ablation"]["flags"]["model.reducer"] == bvllm  # the ablation varies the very B-VLLM compared
    assert raw["controls"]["flags"]["model.reducer"] == raw["strategies"]["grid"]["model.reducer"][1]  # Uniform's
    assert raw["ablation"]["fit_flags"] == raw["strategies"]["fit_flags"]  # one recipe
    finetune = yaml.safe_load((REPO / "experiments" / "finetune.yaml").read_text())
    assert raw["strategies"]["fit_flags"]["trainer.max_steps"] == finetune["trainer"]["max_steps"]  # the demo's stage 2
    assert raw["ablation"]["seeds"] == raw["strategies"]["seeds"] == raw["controls"]["seeds"] == [0, 1, 2]
    assert raw["ablation"]["evals"] == raw["strategies"]["evals"] == raw["controls"]["evals"]
    for key in raw["ablation"]["zipped"]:
        assert key.rsplit(".", 1)[1] in inspect.signature(BVLLM).parameters, key


def test_the_selection_example_is_kept_or_skipped_without_a_trained_bvllm(tmp_path):
    from lit_bvllm.study.figures import selection_example

    sweeps = load_sweeps(FILES, str(tmp_path), quick=True)
    assert selection_example(sweeps, tmp_path / "ex.png") is None  # no B-VLLM point finished: nothing to draw
    (tmp_path / "ex.png").write_bytes(b"\x89PNG")
    # a figure without its description is not kept (it would be reported as a question with no text): drawn again
    assert selection_example(sweeps, tmp_path / "ex.png") is None
    about = {"point": "reducer=BVLLM_seed=0", "eval": "needle_64s", "question_id": "needle_0001_ret_insert1_0",
             "question": "Which of these shapes briefly appears in the video?", "gt": "a red star",
             "needle_times": [[12, 13]]}
    (tmp_path / "ex.json").write_text(json.dumps(about))
    assert selection_example(sweeps, tmp_path / "ex.png") == {**about, "figure": str(tmp_path / "ex.png"), "kept": True}


def test_a_kept_selection_example_is_described_in_the_report(tmp_path):
    plant(tmp_path, quick=True)
    folder = tmp_path / "study_quick"
    folder.mkdir()
    (folder / "selection_example.png").write_bytes(b"\x89PNG")
    (folder / "selection_example.json").write_text(json.dumps({
        "point": "reducer=BVLLM_seed=0", "eval": "needle_64s", "question_id": "needle_0001_ret_insert1_0",
        "question": "Which of these shapes briefly appears in the video?", "gt": "a red star",
        "needle_times": [[12, 13]]}))
    study(root=str(tmp_path), quick=True, report_only=True, example=True, resamples=100)
    text = (folder / "study.md").read_text()
    assert ("![selection](selection_example.png) needle_0001_ret_insert1_0: Which of these shapes briefly appears in "
            "the video? (answer: a red star; needle at [[12, 13]] s; reducer=BVLLM_seed=0)") in text
