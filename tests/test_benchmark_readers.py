"""Benchmark readers on make_synthetic's fixtures in each official format; malformed entries; subtitles; frame
folders."""

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.benchmarks import (
    MSRVTTQA,
    MSVDQA,
    ActivityNetQA,
    EgoSchema,
    MVBench,
    NExTQA,
    PerceptionTest,
    VideoMME,
    VNBench,
)
from datamodules.benchmarks.mvbench import MVBENCH_TASKS
from datamodules.benchmarks.subtitles import parse_srt, read_srt, subtitles_at
from datamodules.errors import SampleError
from datamodules.video import FrameSampling, natural_key, read_frame_folder, read_video
from lit_bvllm.world import make_synthetic
from lit_bvllm.world.describe import needle_name
from lit_bvllm.world.scenes import COLOURS

VIDEOMME_JSON = "videomme/test-00000-of-00001.json"


def load(path: Path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def evals(synthetic) -> dict[str, dict]:
    return {r["id"]: r for r in load(synthetic / "metadata.json")["videos"] if r["split"] == "eval"}


def check_videos(items) -> None:
    for item in items:
        assert Path(item.video).is_absolute() and Path(item.video).exists(), item.id
    assert len({item.id for item in items}) == len(items)


def test_every_benchmark_keeps_its_name():
    """The names output files are written under (``<name>_results.json``: `make demo` reads vnbench_results.json)."""
    classes = (MVBench, VideoMME, EgoSchema, PerceptionTest, NExTQA, VNBench, MSVDQA, MSRVTTQA, ActivityNetQA)
    assert [c.name for c in classes] == ["mvbench", "videomme", "egoschema", "perception_test", "nextqa", "vnbench",
                                         "msvd_qa", "msrvtt_qa", "activitynet_qa"]


def test_mvbench_task_table():
    assert len(MVBENCH_TASKS) == 20 and sum(t.bound for t in MVBENCH_TASKS.values()) == 5  # 4 video tasks + TVQA
    assert [n for n, t in MVBENCH_TASKS.items() if t.kind == "frame"] == ["Episodic Reasoning"]


def test_mvbench(synthetic, evals):
    root = synthetic / "eval/mvbench"
    items = MVBench(root).read()
    check_videos(items)
    by_task = {name: [i for i in items if i.category == name] for name in {i.category for i in items}}
    assert {k: len(v) for k, v in by_task.items()} == {"Action Sequence": 4, "Moving Count": 4, "Episodic Reasoning": 2}
    for name, task_items in by_task.items():
        task = MVBENCH_TASKS[name]
        for item, entry in zip(task_items, load(root / "json" / task.file)):
            assert item.options == entry["candidates"] and item.options[item.answer] == entry["answer"]
            assert item.video == str(root / "video" / task.prefix / entry["video"])
            assert (item.start, item.end) == ((entry["start"], entry["end"]) if task.bound else (None, None))
            assert (item.frame_fps == (3.0 if task.kind == "frame" else None)
                    and item.extra == {"task": Path(task.file).stem})
    for item in by_task["Action Sequence"]:  # the window skips the first needle: the answer is the second
        record = evals[Path(item.video).stem]
        assert (item.start == record["needles"][0]["end"]
                and item.options[item.answer].endswith(needle_name(record["needles"][1])))
    for item in by_task["Moving Count"]:
        assert item.options[item.answer] == str(len(evals[Path(item.video).stem]["distractors"]))
    for item in by_task["Episodic Reasoning"]:  # a 3 fps frame folder whose window shows the answer's needle
        record = evals[Path(item.video).name]
        assert len(list(Path(item.video).glob("*.jpg"))) == record["duration"] * 3
        frames, _, duration = read_video(item.video, start=item.start, end=item.end, frame_fps=item.frame_fps)
        assert duration == record["duration"] and len(frames) == item.end - item.start
        colour = item.options[item.answer].split()[1]
        assert all((np.abs(f.astype(int) - COLOURS[colour]).max(-1) < 60).sum() > 100 for f in frames)


def test_mvbench_task_selection_and_overrides(synthetic, tmp_path):
    root = synthetic / "eval/mvbench"
    items = MVBench(root, tasks=["Moving Count"], video_root=tmp_path, prefixes={"Moving Count": "mine/"}).read()
    assert {i.category for i in items} == {"Moving Count"} and len(items) == 4
    assert all(i.video.startswith(str(tmp_path / "mine")) and not Path(i.video).exists() for i in items)  # kept
    with pytest.raises(ValueError, match="unknown MVBench task"):
        MVBench(root, tasks=["Action Squence"]).read()
    with pytest.raises(FileNotFoundError, match="object_existence.json"):
        MVBench(root, tasks=["Object Existence"]).read()


def test_videomme(synthetic, evals):
    root = synthetic / "eval/videomme"
    rows = load(root / VIDEOMME_JSON)
    items = VideoMME(root, annotation=VIDEOMME_JSON).read()
    check_videos(items)
    assert len(items) == len(rows) == 3 * 4
    assert {i.category for i in items} == {"Counting Problem", "Attribute Perception", "Temporal Reasoning"}
    for item, row in zip(items, rows):
        assert item.id == row["question_id"] and item.video == str(root / "data" / f"{row['videoID']}.mp4")
        assert [f"{chr(65 + k)}. {o}" for k, o in enumerate(item.options)] == row["options"]
        assert "ABCD"[item.answer] == row["answer"]
        assert item.extra == {k: row[k] for k in ("duration", "domain", "sub_category", "video_id", "videoID")}
        has_srt = int(row["video_id"]) % 2 == 1  # every other video has subtitles
        assert item.subtitles == (str(root / "subtitle" / f"{row['videoID']}.srt") if has_srt else None)
        if item.category == "Counting Problem":
            assert item.options[item.answer] == str(len(evals[row["videoID"]]["needles"]))
    record = evals[items[0].extra["videoID"]]
    cues = read_srt(items[0].subtitles)
    assert [c.text for c in cues[1:]] == [f"A {needle_name(n)} appears." for n in record["needles"]]
    assert subtitles_at(cues, [n["start"] + 0.5 for n in record["needles"]]) == [c.text for c in cues[1:]]


def test_videomme_parquet_gives_the_json_items(synthetic):
    pytest.importorskip("pyarrow")
    root = synthetic / "eval/videomme"
    assert VideoMME(root).read() == VideoMME(root, annotation=VIDEOMME_JSON).read()


def test_videomme_parquet_without_pyarrow_says_what_to_do(tmp_path, monkeypatch):
    (tmp_path / "rows.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match="pip install pyarrow.*annotation='<file>.json'"):
        VideoMME(tmp_path, annotation="rows.parquet").read()


def test_egoschema(synthetic, evals):
    root = synthetic / "eval/egoschema"
    questions, answers = load(root / "questions.json"), load(root / "subset_answers.json")
    subset, everything = EgoSchema(root).read(), EgoSchema(root, subset=False).read()
    check_videos(everything)
    assert len(subset) == len(answers) == 3 and len(everything) == len(questions) == 4
    assert everything[-1].answer == -1 and everything[:3] == subset
    for item, q, record in zip(everything, questions, evals.values()):
        assert item.id == item.extra["q_uid"] == q["q_uid"] and item.options == [q[f"option {k}"] for k in range(5)]
        assert item.video == str(root / "good_clips_git" / f"{q['q_uid']}.mp4")
        if item.answer >= 0:
            assert item.answer == answers[q["q_uid"]]
            assert item.options[item.answer] == ", then ".join(needle_name(n) for n in record["needles"])


def test_perception_test(synthetic, evals):
    root = synthetic / "eval/perception_test"
    data = load(root / "mc_question_valid.json")
    items = PerceptionTest(root).read()
    check_videos(items)
    assert len(items) == 2 * 4 and {i.category for i in items} == {"Memory", "Semantics"}
    questions = [(vid, q) for vid, v in data.items() for q in v["mc_question"]]
    for item, (vid, q) in zip(items, questions):
        assert item.id == f"{vid}_{q['id']}" and len(item.options) == 3 and item.answer == q["answer_id"]
        assert item.extra == {"video_id": vid, "question_id": q["id"], "area": q["area"],
                              "reasoning": q["reasoning"], "tag": q["tag"]}
        if q["tag"] == ["counting"]:
            assert item.options[item.answer] == str(len(evals[vid]["needles"]))


def test_nextqa_csv_json_and_vidor_map(synthetic, evals, tmp_path):
    root = synthetic / "eval/nextqa"
    with (root / "MC/test.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    items = NExTQA(root).read()
    check_videos(items)
    assert len(items) == len(rows) == 2 * 4
    assert {(i.category, i.extra["type"]) for i in items} == {("Temporal", "TN"), ("Descriptive", "DC")}
    for item, row in zip(items, rows):
        assert item.id == f"{row['video']}_{row['qid']}" and item.answer == int(row["answer"])
        assert item.options == [row[f"a{k}"] for k in range(5)]
        if row["type"] == "TN":
            assert item.options[item.answer].endswith(needle_name(evals[row["video"]]["needles"][1]))
    # lmms-eval's JSON rows (ints stay ints) and the release's video map into NExTVideo/<folder>/
    (tmp_path / "NExTVideo/0000").mkdir(parents=True)
    (tmp_path / "NExTVideo/0000/eval_0000.mp4").write_bytes(b"")
    (tmp_path / "map_vid_vidorID.json").write_text(json.dumps({"eval_0000": "0000/eval_0000"}))
    typed = [{**r, "answer": int(r["answer"]), "qid": int(r["qid"])} for r in rows]
    (tmp_path / "test.json").write_text(json.dumps(typed))
    again = NExTQA(tmp_path, annotation="test.json").read()
    assert [(i.id, i.answer, i.options) for i in again] == [(i.id, i.answer, i.options) for i in items]
    assert again[0].video == str(tmp_path / "NExTVideo/0000/eval_0000.mp4")


def test_vnbench(synthetic, tmp_path):
    root = synthetic / "eval/vnbench"
    entries = load(root / "VNBench_qa.json")
    items = VNBench(root).read()
    check_videos(items)
    # 3 needle types, bg_every1
    assert len(items) == len(entries) == 4 * 4 * 4 and len({i.group for i in items}) == 4 * 4
    for item, e in zip(items, entries):
        assert item.options[item.answer] == e["gt"] and item.category == e["type"]
        every = {"every_frame": True} if e["type"] == "bg_every1" else {}
        assert item.group == f"{Path(e['video']).stem}_{e['type']}"
        assert item.extra == {"try": e["try"], "needle_times": e["needle_times"], **every}
    # B-VLLM's gt_option letter and a gt index give the same answers
    letters = [{k: v for k, v in e.items() if k != "gt"} | {"gt_option": "ABCD"[e["options"].index(e["gt"])]}
               for e in entries]
    indices = [e | {"gt": e["options"].index(e["gt"])} for e in entries]
    for name, variant in (("letters.json", letters), ("indices.json", indices)):
        (tmp_path / name).write_text(json.dumps(variant))
        assert [i.answer for i in VNBench(tmp_path, annotation=name).read()] == [i.answer for i in items]


def test_msvd_and_msrvtt(synthetic):
    msvd_root, msrvtt_root = synthetic / "eval/msvd", synthetic / "eval/msrvtt_qa"
    for benchmark, root, video in ((MSVDQA, msvd_root, "{}.mp4"), (MSRVTTQA, msrvtt_root, "video{}.mp4")):
        entries = load(root / "test_qa.json")
        items = benchmark(root).read()
        check_videos(items)
        assert len(items) == len(entries) == 7 * 4
        for item, e in zip(items, entries):
            assert ((item.id, item.answer, item.category, item.options)
                    == (str(e["id"]), e["answer"], e["answer_type"], []))
            assert item.video == str(root / "videos" / video.format(e["video_id"]))


def test_msrvtt_ids_made_unique_and_video_forms(tmp_path):
    (tmp_path / "videos").mkdir()
    for name in ("video1.mp4", "video2.avi", "3.mkv"):
        (tmp_path / "videos" / name).write_bytes(b"")
    entries = [{"video_id": v, "question": "q?", "id": i, "answer": "a"}
               for v, i in ((1, 5), ("video2", 5), ("3", 5), (1, "5_1"), (4, 6))]
    (tmp_path / "test_qa.json").write_text(json.dumps(entries))
    items = MSRVTTQA(tmp_path).read()
    assert [i.id for i in items] == ["5", "5_2", "5_3", "5_1", "6"]  # "5_1" exists, so repeats skip it
    assert [Path(i.video).name for i in items] == ["video1.mp4", "video2.avi", "3.mkv", "video1.mp4", "video4.mp4"]
    assert not Path(items[-1].video).exists() and items[0].category == ""


def test_activitynet_qa(synthetic, evals):
    root = synthetic / "eval/activitynet_qa"
    qs, ans = load(root / "test_q.json"), load(root / "test_a.json")
    items = ActivityNetQA(root).read()
    check_videos(items)
    assert len(items) == len(qs) == 8 * 4
    names = {3: "yes/no", 4: "color", 5: "object", 7: "number"}
    for item, q, a in zip(items, qs, ans):
        assert (item.id, item.question, item.answer) == (q["question_id"], q["question"], a["answer"])
        assert item.category == names[a["type"]] and item.extra == {"video_name": q["video_name"], "type": a["type"]}
        assert item.video == str(root / "all_test" / f"v_{q['video_name']}.mp4")
        if q["question"] == "how many times does a shape briefly appear?":
            assert item.answer == ["zero", "one", "two", "three", "four", "five"][
                len(evals[q["video_name"]]["needles"])]


def test_activitynet_pairs_must_align(tmp_path):
    (tmp_path / "all_test").mkdir()
    (tmp_path / "all_test/abc.webm").write_bytes(b"")  # no v_ prefix, another extension
    qs = [{"video_name": "abc", "question": "q?", "question_id": f"v_abc_{k}"} for k in range(3)]
    ans = [{"answer": "a", "type": "other", "question_id": f"v_abc_{k}"} for k in range(3)]
    (tmp_path / "test_q.json").write_text(json.dumps(qs))
    (tmp_path / "test_a.json").write_text(json.dumps(ans))
    items = ActivityNetQA(tmp_path).read()
    assert items[0].video == str(tmp_path / "all_test/abc.webm") and items[0].category == "other"
    (tmp_path / "test_a.json").write_text(json.dumps([ans[0], ans[2], ans[1]]))
    with pytest.raises(ValueError,
                       match=r"test_q.json and .*test_a.json disagree at position 1: question_id 'v_abc_1' vs"):
        ActivityNetQA(tmp_path).read()
    (tmp_path / "test_a.json").write_text(json.dumps(ans[:2]))
    with pytest.raises(ValueError, match="has 3 entries but .* has 2"):
        ActivityNetQA(tmp_path).read()


MVBENCH_ENTRY = {"video": "x.mp4", "question": "q?", "candidates": ["a", "b"], "answer": "a", "start": 1, "end": 3}
VIDEOMME_ROW = {"video_id": "001", "videoID": "yt", "duration": "short", "domain": "d", "sub_category": "s",
                "question_id": "001-1", "task_type": "Counting Problem", "question": "q?",
                "options": ["A. 1", "B. 2", "C. 3", "D. 4"], "answer": "B"}
PERCEPTION = {"metadata": {"video_id": "video_1"},
              "mc_question": [{"id": 0, "question": "q?", "options": ["a", "b", "c"], "answer_id": 1}]}


@pytest.mark.parametrize("benchmark, name, content, message", [
    (MVBench, "json/action_sequence.json", [MVBENCH_ENTRY | {"answer": "c"}], r"entry 0: field 'answer' 'c' is not"),
    (MVBench, "json/action_sequence.json", [MVBENCH_ENTRY, {k: v for k, v in MVBENCH_ENTRY.items() if k != "end"}],
     r"entry 1: field 'end' is missing"),
    (MVBench, "json/moving_count.json", [MVBENCH_ENTRY | {"candidates": "ab"}],
     r"entry 0: field 'candidates' must be list"),
    (VideoMME, "rows.json", [VIDEOMME_ROW | {"answer": "E"}],
     r"entry 0 \(question_id 001-1\): field 'answer' must be one of the letters A..D, got 'E'"),
    (VideoMME, "rows.json", [VIDEOMME_ROW | {"options": ["A. 1", "C. 2"]}], r"field 'options' item 1 is lettered 'C'"),
    (VideoMME, "rows.jsonl", [VIDEOMME_ROW, {k: v for k, v in VIDEOMME_ROW.items() if k != "videoID"}],
     r"rows.jsonl: entry 1 \(question_id 001-1\): field 'videoID' is missing"),
    (EgoSchema, "questions.json", [{"q_uid": "u1", "question": "q?", **{f"option {k}": "o" for k in range(4)}}],
     r"entry 0 \(q_uid u1\): field 'option 4' is missing"),
    (PerceptionTest, "mc_question_valid.json", {"video_1": PERCEPTION | {"mc_question": [{"id": 0, "question": "q?"}]}},
     r"entry 'video_1' mc_question 0: field 'options' is missing"),
    (PerceptionTest, "mc_question_valid.json",
     {"video_1": PERCEPTION | {"mc_question": [PERCEPTION["mc_question"][0] | {"answer_id": 3}]}},
     r"field 'answer_id' = 3 is not an index of its 3 options"),
    (NExTQA, "MC/test.csv", "video,question,answer,qid,type,a0,a1,a2,a3,a4\n7,why?,seven,0,CW,a,b,c,d,e\n",
     r"test.csv: entry 0 \(video 7, qid 0\): field 'answer' must be an option index, got 'seven'"),
    (VNBench, "VNBench_qa.json", [{"video": "v.mp4", "question": "q?", "options": ["a", "b"], "gt": "c", "type": "t",
                                        "try": 0, "question_id": "v_t_0"}],
     r"entry 0 \(v_t_0\): field 'gt' must be an option index"),
    (MSVDQA, "test_qa.json", [{"video_id": "v", "id": 3, "answer": "a"}],
     r"entry 0 \(id 3\): field 'question' is missing"),
    (ActivityNetQA, "test_q.json", {"not": "a list"}, r"test_q.json must hold a JSON list"),
])
def test_malformed_entries_name_file_entry_and_field(tmp_path, benchmark, name, content, message):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content)
    elif name.endswith(".jsonl"):
        path.write_text("\n".join(json.dumps(row) for row in content))
    else:
        path.write_text(json.dumps(content))
    (tmp_path / "subset_answers.json").write_text("{}")
    (tmp_path / "test_a.json").write_text("[]")
    kwargs = {"annotation": name} if benchmark is VideoMME else {}
    with pytest.raises(ValueError, match=message) as err:
        benchmark(tmp_path, **kwargs).read()
    assert str(path) in str(err.value)


def test_benchmark_fixtures_are_deterministic(synthetic, tmp_path):
    summary = make_synthetic(tmp_path, seed=0, num_videos=4, num_eval_videos=4, max_duration=12)
    assert summary["benchmark_entries"]["eval/egoschema/questions.json"] == 4
    for name in summary["benchmark_entries"]:
        assert (tmp_path / name).read_bytes() == (synthetic / name).read_bytes(), name
    srt = sorted((tmp_path / "eval/videomme/subtitle").iterdir())
    assert [p.read_bytes() for p in srt] == [(synthetic / "eval/videomme/subtitle" / p.name).read_bytes() for p in srt]
    # a smaller rerun leaves no stale media behind
    make_synthetic(tmp_path, seed=1, num_videos=1, num_eval_videos=2, max_duration=8)
    assert len(list((tmp_path / "eval/egoschema/good_clips_git").iterdir())) == 2
    assert len(EgoSchema(tmp_path / "eval/egoschema", subset=False).read()) == 2


# ------------------------------------------------------------------------------------------------ subtitles

AWKWARD_SRT = (
    "\ufeff1\r\n00:00:01,000 --> 00:00:02,500\r\n<i>Hello</i> there\r\n\r\n"  # BOM, CRLF, a tag
    "00:00:02.500 --> 00:00:04,000 X1:10 X2:20\r\n{\\an8}no index, dot ms\r\n"
    "second <b>line</b>\r\n"  # no blank line next
    "3\r\n00:00:05,000 --> 00:00:06,000\r\n\r\n"  # an empty cue
    "4\n0:00:07,5 --> 0:00:09,000\nLF only\\Nbroken\n\n\n"  # short hour and fraction, pysubs2 break
    "5\n00:01:00,000 --> 00:01:02,000\n42\n"  # a number as text, at the end
)


def test_parse_awkward_srt():
    cues = parse_srt(AWKWARD_SRT)
    assert [(c.start, c.end, c.text) for c in cues] == [
        (1.0, 2.5, "Hello there"), (2.5, 4.0, "no index, dot ms second line"), (5.0, 6.0, ""),
        (7.5, 9.0, "LF only broken"), (60.0, 62.0, "42")]
    assert parse_srt("") == [] and parse_srt("just text\n") == []


def test_subtitles_at_frame_times(tmp_path):
    (tmp_path / "a.srt").write_text(AWKWARD_SRT, encoding="utf-8")
    cues = read_srt(tmp_path / "a.srt")
    times = np.array([0.5, 1.0, 1.5, 2.5, 3.0, 5.5, 8.0, 8.5, 30.0, 61.0])
    # VideoLLaMA2's rule: one line per frame inside a cue (start < t < end, bounds excluded), repeats kept, empty
    # cues skipped
    assert subtitles_at(cues, times) == ["Hello there", "no index, dot ms second line", "LF only broken",
                                         "LF only broken", "42"]
    assert subtitles_at(cues, times, dedupe=True) == ["Hello there", "no index, dot ms second line", "LF only broken",
                                                      "42"]
    assert subtitles_at(cues, []) == [] and subtitles_at([], times) == []
    (tmp_path / "latin1.srt").write_bytes(b"1\n00:00:00,000 --> 00:00:01,000\ncaf\xe9\n")  # not UTF-8: no failure
    assert [c.text for c in read_srt(tmp_path / "latin1.srt")] == ["caf\ufffd"]


# ------------------------------------------------------------------------------------------- frame folders

def write_frames(folder: Path, count: int, name: str = "frame{}.png") -> None:
    """Frames 1..count; frame k is a solid grey of value 10 k (its position in time order)."""
    folder.mkdir(parents=True)
    for k in range(1, count + 1):
        Image.fromarray(np.full((8, 10, 3), 10 * k, np.uint8)).save(folder / name.format(k))
    (folder / "notes.txt").write_text("not a frame")


def test_read_frame_folder_samples_in_natural_order(tmp_path):
    write_frames(tmp_path / "clip", 12)  # frame1.png .. frame12.png: 4 s at 3 fps
    frames, times, duration = read_frame_folder(str(tmp_path / "clip"), frame_fps=3.0)
    assert duration == 4.0 and frames.shape == (4, 8, 10, 3) and frames.dtype == np.uint8
    np.testing.assert_allclose(times, [1 / 3, 4 / 3, 7 / 3, 10 / 3])  # the frames shown at 0.5, 1.5, 2.5, 3.5 s
    assert frames[:, 0, 0, 0].tolist() == [20, 50, 80, 110]  # frame2, frame5, frame8, frame11: natural order
    frames, times, _ = read_frame_folder(str(tmp_path / "clip"), FrameSampling("uniform", num_frames=12), frame_fps=3.0)
    assert frames[:, 0, 0, 0].tolist() == [10 * k for k in range(1, 13)]
    frames, times, _ = read_video(str(tmp_path / "clip"), start=1.0, end=3.0)  # a folder dispatches, 3 fps default
    np.testing.assert_allclose(times, [4 / 3, 7 / 3])
    frames, times, duration = read_video(str(tmp_path / "clip"), frame_fps=6.0)
    assert duration == 2.0 and len(frames) == 2
    assert (sorted(["frame10.jpg", "frame2.jpg", "Frame1.jpg"], key=natural_key)
            == ["Frame1.jpg", "frame2.jpg", "frame10.jpg"])


def test_read_frame_folder_errors(tmp_path):
    with pytest.raises(SampleError) as err:
        read_frame_folder(str(tmp_path / "absent"))
    assert err.value.reason == "missing_file"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/readme.txt").write_text("")
    with pytest.raises(SampleError) as err:
        read_video(str(tmp_path / "empty"))
    assert err.value.reason == "empty_video"
    write_frames(tmp_path / "broken", 3)
    (tmp_path / "broken/frame2.png").write_bytes(b"not a png")
    with pytest.raises(SampleError) as err:
        read_frame_folder(str(tmp_path / "broken"), FrameSampling("uniform", num_frames=3))
    assert err.value.reason == "decode_error"
    with pytest.raises(SampleError, match="window"):
        read_frame_folder(str(tmp_path / "broken"), start=5, end=6)
