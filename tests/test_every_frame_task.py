"""Issue 22, item 5: a task type every frame answers (``bg_every1``, the background colour) in both VNBench-format
needle sets, worded as the training data words it, left out of VNBench's overall number and of the hit rate, and
printed beside blind by ``lit_bvllm.analysis.report``, the needle study and the sweeps' tables."""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.benchmarks import VNBench
from datamodules.benchmarks.items import EvalItem
from datamodules.benchmarks.selection import aggregate
from lit_bvllm.analysis.report import table
from lit_bvllm.study.records import BLIND, Cell, Record, bootstrap
from lit_bvllm.study.tables import every_frame_section
from lit_bvllm.sweeps import Sweep, expand, steps
from lit_bvllm.sweeps import run as sweep_run
from lit_bvllm.sweeps.report import collect, write_tables
from lit_bvllm.world import make_synthetic
from lit_bvllm.world.describe import video_qa
from lit_bvllm.world.evalsets import EVERY_FRAME, every_frame_question, vnbench_entries
from lit_bvllm.world.scenes import BACKGROUNDS

NEEDLE_TYPES = {"ret_insert1", "ord_insert1", "cnt_insert1"}
SETS = ("eval/vnbench", "eval/needle_8s")
# sha256 of each VNBench_qa.json as main wrote it before the every-frame type (make_synthetic with DRAW below, at
# 1b05417): the needle entries must stay byte for byte what they were
OLD_FILES = {"eval/vnbench": (36, "5f106e3c674d7c7a0f4c4910fef66a49108822fbef1f7000bac7dd80231fb803"),
             "eval/needle_8s": (36, "22e21e512cd52d3849cb2c558b4feb613b561aaca53ef59856d39804726e8b0f")}
DRAW = {"seed": 0, "num_videos": 1, "num_eval_videos": 3, "max_duration": 8, "eval_max_duration": 12, "min_fps": 2,
        "max_fps": 2, "width": 32, "height": 32, "needle_lengths": [8], "needle_videos": 3}
SOLID = re.compile(r"The video has an? (\w+) background\.")
GRADIENT = re.compile(r"The video has a background fading from (\w+) at (the \w+) to (\w+) at (the \w+)\.")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("every_frame")
    make_synthetic(root, **DRAW)
    return root


def load(path: Path):
    return json.loads(path.read_text())


def records_of(root: Path, folder: str) -> dict[str, dict]:
    meta = root / folder / "metadata.json" if (root / folder / "metadata.json").is_file() else root / "metadata.json"
    return {r["id"]: r for r in load(meta)["videos"] if r.get("split") == "eval"}


def colours(option: str) -> tuple[list[str], str]:
    """The background colours an option names and its direction ("solid" or the gradient's two ends)."""
    if m := SOLID.fullmatch(option):
        return [m.group(1)], "solid"
    m = GRADIENT.fullmatch(option)
    assert m, f"not in the training answer form: {option!r}"
    return [m.group(1), m.group(3)], f"{m.group(2)} to {m.group(4)}"


# ------------------------------------------------------------------ the sets


@pytest.mark.parametrize("folder", SETS)
def test_every_video_gets_the_every_frame_question_in_the_training_answer_form(data, folder):
    records = records_of(data, folder)
    entries = load(data / folder / "VNBench_qa.json")
    every = [e for e in entries if e["type"] == EVERY_FRAME]
    assert len(every) == 4 * len(records) == 4 * 3
    for stem, r in records.items():
        tries = [e for e in every if Path(e["video"]).stem == stem]
        assert [e["try"] for e in tries] == [0, 1, 2, 3]
        assert [e["question_id"] for e in tries] == [f"{stem}_{EVERY_FRAME}_{k}" for k in range(4)]
        base = tries[0]["options"]
        assert len(set(base)) == 4 and all(e["options"] == base[k:] + base[:k] for k, e in enumerate(tries))
        # the question and the answer training asks and gives (describe.video_qa's first pair, either wording)
        training_answer = video_qa(r, np.random.default_rng(0))[0][1]
        for e in tries:
            assert e["question"] == "What color is the background?" and e["gt"] == training_answer in e["options"]
            assert e["needle_times"] == [[0, r["duration"]]] and e["every_frame"] is True  # every frame answers it
        gt_colours, gt_direction = colours(tries[0]["gt"])
        assert gt_colours == r["background"]["colours"]
        for option in base:
            named, direction = colours(option)
            assert direction == gt_direction and set(named) <= set(BACKGROUNDS)  # wrong ones: other colours only
            assert option == tries[0]["gt"] or named != gt_colours
        assert not any("every_frame" in e for e in entries if e["type"] != EVERY_FRAME)


def test_a_gradient_keeps_its_direction_and_a_solid_colour_stays_solid():
    for bg in ({"colours": ["navy", "olive"], "direction": "vertical"}, {"colours": ["olive"], "direction": "solid"},
               {"colours": ["beige", "black"], "direction": "horizontal"}):
        record = {"background": bg, "duration": 64}
        for seed in range(20):
            kind, question, options, gt, times = every_frame_question(record, np.random.default_rng(seed))
            assert (kind, times) == (EVERY_FRAME, [[0, 64]]) and gt in options and len(set(options)) == 4
            assert gt == video_qa({**record, "distractors": [{"shape": "circle", "colour": "pink",
                                                              "motion": "vertically"}], "needles": []},
                                  np.random.default_rng(seed))[0][1]
            assert {colours(o)[1] for o in options} == {colours(gt)[1]}
            assert all(colours(o)[0] != bg["colours"] for o in options if o != gt)


@pytest.mark.parametrize("folder", SETS)
def test_the_needle_entries_are_byte_identical_and_come_first(data, folder):
    entries = load(data / folder / "VNBench_qa.json")
    count, digest = OLD_FILES[folder]
    old = json.dumps(entries[:count], indent=2, ensure_ascii=False) + "\n"
    assert hashlib.sha256(old.encode()).hexdigest() == digest  # the file main wrote before, byte for byte
    assert {e["type"] for e in entries[:count]} == NEEDLE_TYPES
    assert len(entries) == count + 4 * 3 and {e["type"] for e in entries[count:]} == {EVERY_FRAME}
    # and the same as the entries drawn without the new type
    records = list(records_of(data, folder).values())
    stream = [0, 5, 0] if folder == "eval/vnbench" else [0, 9, 8]  # generate.VNBENCH; needles.NEEDLE_QUESTIONS, L
    assert vnbench_entries(records, np.random.default_rng(stream)) == entries[:count]


# ------------------------------------------------------------------ scoring


def items_and_answers() -> tuple[list[EvalItem], torch.Tensor]:
    """2 videos x (3 needle types + bg_every1) x 4 tries; right: only the every-frame tries."""
    items = []
    for v in ("a", "b"):
        for kind in ("ret_insert1", "ord_insert1", "cnt_insert1", EVERY_FRAME):
            extra = {"every_frame": True} if kind == EVERY_FRAME else {}
            items += [EvalItem(f"{v}_{kind}_{k}", "v.mp4", "q", ["w", "x", "y", "z"], k, category=kind,
                               group=f"{v}_{kind}", extra={"try": k, **extra}) for k in range(4)]
    return items, torch.tensor([it.category == EVERY_FRAME for it in items])


def test_only_the_every_frame_type_right_gives_its_row_one_and_leaves_overall_alone():
    items, correct = items_and_answers()
    ones = torch.ones(len(items), dtype=torch.bool)
    out = VNBench("root").accuracy(correct, ones, ones, items)
    assert out["circular_per_category"] == {EVERY_FRAME: 1.0, "cnt_insert1": 0.0, "ord_insert1": 0.0,
                                            "ret_insert1": 0.0}
    assert out["circular_accuracy"] == 0.0 and out["accuracy"] == 0.0  # the needle types only
    assert out["every_frame_types"] == [EVERY_FRAME] and out["complete_groups"] == 8
    # the needle types' numbers are those of the same items without the every-frame type
    needle = [i for i, it in enumerate(items) if it.category != EVERY_FRAME]
    flip = correct.clone()
    flip[needle[:4]] = True  # one ret_insert1 group right
    alone = VNBench("root").accuracy(flip[needle], ones[needle], ones[needle], [items[i] for i in needle])
    both = VNBench("root").accuracy(flip, ones, ones, items)
    assert both["circular_accuracy"] == alone["circular_accuracy"] == pytest.approx(0.5 / 3)
    assert both["accuracy"] == alone["accuracy"] == pytest.approx(4 / 24)
    assert "every_frame_types" not in alone  # a real VNBench annotation: no new field, the same numbers


def test_the_reader_keeps_the_flag_and_refuses_a_type_marked_in_part(tmp_path):
    entries = [{"video": "v.mp4", "question": "q", "options": ["a", "b", "c", "d"], "gt": "a", "type": t, "try": k,
                "question_id": f"v_{t}_{k}", **({"every_frame": True} if t == EVERY_FRAME else {})}
               for t in ("ret_insert1", EVERY_FRAME) for k in range(4)]
    (tmp_path / "VNBench_qa.json").write_text(json.dumps(entries))
    items = VNBench(str(tmp_path)).read()
    assert [bool(it.extra.get("every_frame")) for it in items] == [False] * 4 + [True] * 4
    entries[5]["every_frame"] = False
    (tmp_path / "VNBench_qa.json").write_text(json.dumps(entries))
    with pytest.raises(ValueError, match="type 'bg_every1' has 'every_frame': true in some entries"):
        VNBench(str(tmp_path)).read()
    entries[5]["every_frame"] = "yes"
    (tmp_path / "VNBench_qa.json").write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=r"entry 5 \(v_bg_every1_1\): 'every_frame' must be true or false"):
        VNBench(str(tmp_path)).read()


def test_the_hit_rate_leaves_the_every_frame_questions_out():
    items, _ = items_and_answers()
    hit = {"hit": True, "uniform_hit": True, "event_recall": 1.0, "uniform_event_recall": 1.0, "frames_kept": 4,
           "frames_given": 64}
    miss = {**hit, "hit": False, "uniform_hit": False, "event_recall": 0.0, "uniform_event_recall": 0.0}
    records = [{"index": i, "selection": hit if it.category == EVERY_FRAME else miss} for i, it in enumerate(items)]
    sel = aggregate(records, items)
    assert sel["questions"] == 6 and sel["hit_rate"] == 0.0 and sel["uniform_hit_rate"] == 0.0
    assert set(sel["per_category"]) == NEEDLE_TYPES and sel["every_frame_questions"] == 2


# ------------------------------------------------------------------ printing


def result(bg: float, needle: float) -> dict:
    per = {"cnt_insert1": needle, "ord_insert1": needle, "ret_insert1": needle, EVERY_FRAME: bg}
    return {"circular_per_category": dict(sorted(per.items())), "circular_accuracy": needle, "chance": 0.25,
            "items": 32, "every_frame_types": [EVERY_FRAME]}


def test_report_prints_the_every_frame_row_after_overall_and_against_blind():
    text = table({"model": result(1.0, 0.25), "blind": result(0.25, 0.25)})
    names = [line.split(" | ")[0].lstrip("| ") for line in text.splitlines()[2:] if line.startswith("| ")]
    assert names.index(f"circular/{EVERY_FRAME}") == names.index("circular_accuracy") + 1
    assert f"| circular/{EVERY_FRAME} | 1.000 | 0.250 | 0.250 |" in text
    assert "model − blind = +0.750: beats blind by ≥ 0.5" in text
    assert "does not beat blind by ≥ 0.5" in table({"model": result(0.5, 0.25), "blind": result(0.25, 0.25)})


def test_the_study_puts_each_method_beside_blind_and_says_whether_it_clears_the_bar():
    def cell(role, method, bg):
        return Cell(role, method, "needle_64s", 64, 1, [0], {f"circular/{EVERY_FRAME}": [bg]})

    methods = {("strategies", "BVLLM"): {"needle_64s": cell("strategies", "BVLLM", 0.9)},
               ("strategies", "Uniform"): {"needle_64s": cell("strategies", "Uniform", 0.5)},
               ("controls", BLIND): {"needle_64s": cell("controls", BLIND, 0.25)}}
    lines = every_frame_section(methods, f"circular/{EVERY_FRAME}")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("| ")}
    assert rows["BVLLM"] == "| BVLLM | strategy | 64 s | 0.900 | 0.250 | +0.650 | yes |"
    assert rows["Uniform"] == "| Uniform | strategy | 64 s | 0.500 | 0.250 | +0.250 | no |"
    assert BLIND not in rows  # the baseline is a column, not a row
    assert "at every length: no (1 of 2 strategy × length cells do)" in lines[-1]


def test_the_bootstrap_compares_the_needle_groups_only(tmp_path):
    def run(name, bg_right):
        lines = [{"id": f"v{v}_{t}_{k}", "correct": t == EVERY_FRAME and bg_right or (t == "ret_insert1" and v == 0)}
                 for v in range(4) for t in (*sorted(NEEDLE_TYPES), EVERY_FRAME) for k in range(4)]
        (tmp_path / name).write_text("\n".join(json.dumps(x) for x in lines))
        return Record("strategies", name, 0, "needle_64s", 64, "done", name, {"circular_accuracy": 1 / 12},
                      predictions=tmp_path / name, every_frame=[EVERY_FRAME])

    row = bootstrap([run("BVLLM", True), run("Uniform", False)], resamples=200)[0]
    assert (row["diff"], row["groups"]) == (0.0, 12)  # the every-frame groups would make it 4 / 16 with 16 groups


def test_the_sweep_table_puts_the_every_frame_column_after_the_headline(tmp_path):
    s = Sweep(name="s", configs=["experiments/pretrain.yaml"], root=str(tmp_path),
              grid={"model.reducer.init_args.num_frames": [8]})
    for p in expand(s):
        for step in steps(s, p, ["lit_bvllm"]):
            step.run_dir.mkdir(parents=True, exist_ok=True)
            (step.run_dir / "vnbench_results.json").write_text(json.dumps({"benchmark": "vnbench", **result(0.9, 0.3)}))
        sweep_run.write_status(s, p, {"status": "done", "steps": {st.name: {"status": "done"}
                                                                  for st in steps(s, p, ["lit_bvllm"])}})
    t = collect(s)
    assert t.metrics[:2] == ["vnbench/circular_accuracy", f"vnbench/circular_per_category/{EVERY_FRAME}"]
    assert t.every_frame == [f"vnbench/circular_per_category/{EVERY_FRAME}"]
    md = write_tables(t, s.dir)[1].read_text()
    assert f"vnbench/circular_per_category/{EVERY_FRAME}: every frame shows the answer" in md
