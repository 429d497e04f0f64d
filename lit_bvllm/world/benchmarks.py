"""Small eval sets over the held-out eval videos in the official annotation format of each benchmark reader.

For every benchmark of ``datamodules/benchmarks/`` beyond VNBench and MSVD-QA (evalsets.py writes those),
the files and media layout its benchmark ships with, under ``<out>/eval/<benchmark>/``:

    mvbench/json/{action_sequence,moving_count,episodic_reasoning}.json, video/<task prefix>/...
        (episodic reasoning: TVQA-style folders of 3 fps JPEG frames, 00001.jpg, ...)
    videomme/videomme/test-00000-of-00001.json (+ .parquet when pyarrow is installed), data/, subtitle/*.srt
    egoschema/questions.json, subset_answers.json (the last question left unanswered), good_clips_git/
    perception_test/mc_question_valid.json, videos/
    nextqa/MC/test.csv, NExTVideo/
    msrvtt_qa/test_qa.json, videos/video<id>.mp4
    activitynet_qa/test_q.json, test_a.json, all_test/v_<name>.mp4

Every answer follows from the video records (scenes.py): needle shapes, colours, counts and order, distractor
counts. Videos are hard links to the eval mp4s (copies where the file system refuses links), never re-encoded.
"""

from __future__ import annotations

import csv
import os
import shutil
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from lit_bvllm.world.describe import NUMBER_WORDS, article, distinct_needles, needle_name
from lit_bvllm.world.evalsets import ALL_NEEDLES, _options, _ordering_wrong, msvd_questions
from lit_bvllm.world.render import render_frames
from lit_bvllm.world.scenes import BACKGROUNDS, NEEDLE_COLOURS

# Sub-streams of make_synthetic's BENCHMARKS stream: adding a benchmark leaves the others' files unchanged.
STREAMS = {"mvbench": 0, "videomme": 1, "egoschema": 2, "perception_test": 3, "nextqa": 4, "msrvtt_qa": 5,
           "activitynet_qa": 6}
FRAME_FPS = 3  # MVBench's TVQA frame folders
FRAME_FOLDERS = 2  # episodic-reasoning items: the shortest eval videos, as JPEG folders
NEXTQA_COLUMNS = ["video", "frame_count", "width", "height", "question", "answer", "qid", "type",
                  "a0", "a1", "a2", "a3", "a4"]
WriteJson = Callable[[Path, object], None]


def _choices(rng: np.random.Generator, gt: str, wrong: list[str], n: int) -> tuple[list[str], int]:
    """`gt` and n - 1 distinct wrong options drawn from `wrong`, shuffled (:func:`evalsets._options`); gt's index."""
    options = _options(rng, gt, wrong, n)
    return options, options.index(gt)


def _names(record: dict) -> tuple[list[str], list[str]]:
    """(needle names in time order, names of needles the video never shows)."""
    sequence = [needle_name(n) for n in record["needles"]]
    return sequence, [name for name in ALL_NEEDLES if name not in sequence]


def _fresh(folder: Path) -> Path:
    """An empty `folder`: media of an earlier run (other seed, more videos) never linger."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _place(src: Path, dst: Path) -> None:
    """Hard-link `src` at `dst`, or copy it where the file system refuses links."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _order_question(rng: np.random.Generator, record: dict, n: int) -> tuple[list[str], int]:
    sequence, absent = _names(record)
    gt = ", then ".join(sequence)
    return _choices(rng, gt, _ordering_wrong(rng, sequence, absent), n)


def _count_question(rng: np.random.Generator, count: int, n: int, words: bool = False) -> tuple[list[str], int]:
    say = (lambda c: NUMBER_WORDS[c]) if words else str
    return _choices(rng, say(count), [say(c) for c in range(1, 7)], n)


def _mvbench(root: Path, evals: list[dict], rng: np.random.Generator, write_json: WriteJson) -> dict[str, int]:
    """Action sequence (a start/end window), moving count, and episodic reasoning over frame folders."""
    base = root / "eval/mvbench"
    charades, clevrer = _fresh(base / "video/star/Charades_v1_480"), _fresh(base / "video/clevrer/video_validation")
    tvqa = _fresh(base / "video/tvqa/frames_fps3_hq")
    sequence, count, episodic = [], [], []
    for r in evals:
        _place(root / r["path"], charades / f"{r['id']}.mp4")
        _place(root / r["path"], clevrer / f"{r['id']}.mp4")
        first, second = r["needles"][:2]  # the window starts after the first needle: its answer is the second
        options, k = _choices(rng, article(needle_name(second)), [article(a) for a in ALL_NEEDLES], 4)
        sequence.append({"video": f"{r['id']}.mp4", "question": "Which shape appears first in this clip?",
                         "candidates": options, "answer": options[k], "start": first["end"], "end": r["duration"]})
        options, k = _count_question(rng, len(r["distractors"]), 3)
        count.append({"video": f"{r['id']}.mp4", "question": "How many circles and squares are moving?",
                      "candidates": options, "answer": options[k]})
    for r in sorted(evals, key=lambda r: (r["duration"], r["id"]))[:FRAME_FOLDERS]:
        folder = _fresh(tvqa / r["id"])
        steps = defaultdict(list)  # video frame i -> the 3 fps steps k it is shown at (time k / 3 s)
        for k in range(r["duration"] * FRAME_FPS):
            steps[k * r["fps"] // FRAME_FPS].append(k)
        for i, frame in enumerate(render_frames(r)):
            for k in steps.get(i, []):
                Image.fromarray(frame).save(folder / f"{k + 1:05d}.jpg", quality=90)
        needle = r["needles"][int(rng.integers(len(r["needles"])))]
        options, k = _choices(rng, article(needle_name(needle)), [article(a) for a in ALL_NEEDLES], 5)
        episodic.append({"video": r["id"], "question": "Which shape is shown in this clip?", "candidates": options,
                         "answer": options[k], "start": needle["start"], "end": needle["end"]})
    files = {"json/action_sequence.json": sequence, "json/moving_count.json": count,
             "json/episodic_reasoning.json": episodic}
    for name, entries in files.items():
        write_json(base / name, entries)
    return {f"eval/mvbench/{name}": len(entries) for name, entries in files.items()}


def _srt_time(t: float) -> str:
    ms = round(t * 1000)
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def _subtitles(record: dict) -> str:
    """An .srt whose cues say what is on screen: the moving shapes until the first needle, then each needle."""
    cues = [(0, record["needles"][0]["start"], "<i>Circles and squares move around.</i>")]
    cues += [(n["start"], n["end"], f"{article(needle_name(n)).capitalize()} appears.") for n in record["needles"]]
    return "".join(f"{i}\n{_srt_time(a)} --> {_srt_time(b)}\n{text}\n\n" for i, (a, b, text) in enumerate(cues, 1))


def _videomme(root: Path, evals: list[dict], rng: np.random.Generator, write_json: WriteJson) -> dict[str, int]:
    """3 four-way questions per video, options lettered "A. ...", a letter answer; subtitles for every other video."""
    base = root / "eval/videomme"
    data, subtitle = _fresh(base / "data"), _fresh(base / "subtitle")
    rows = []
    for i, r in enumerate(evals):
        _place(root / r["path"], data / f"{r['id']}.mp4")
        if i % 2 == 0:
            (subtitle / f"{r['id']}.srt").write_text(_subtitles(r), encoding="utf-8")
        pick = distinct_needles(r)[int(rng.integers(len(distinct_needles(r))))]
        questions = [
            ("Counting Problem", "How many times does a shape briefly appear in the video?",
             _count_question(rng, len(r["needles"]), 4)),
            ("Attribute Perception", f"What color is the {pick['shape']} that briefly appears?",
             _choices(rng, pick["colour"], list(NEEDLE_COLOURS), 4)),
            ("Temporal Reasoning", "In which order do the briefly shown shapes appear?", _order_question(rng, r, 4)),
        ]
        duration = "short" if r["duration"] < 30 else "medium" if r["duration"] < 90 else "long"
        for q, (task, question, (options, k)) in enumerate(questions, 1):
            rows.append({"video_id": f"{i + 1:03d}", "duration": duration, "domain": "Synthetic",
                         "sub_category": "Moving shapes", "url": f"https://www.youtube.com/watch?v={r['id']}",
                         "videoID": r["id"], "question_id": f"{i + 1:03d}-{q}", "task_type": task, "question": question,
                         "options": [f"{chr(65 + j)}. {o}" for j, o in enumerate(options)], "answer": chr(65 + k)})
    write_json(base / "videomme/test-00000-of-00001.json", rows)
    files = {"eval/videomme/videomme/test-00000-of-00001.json": len(rows)}
    parquet = base / "videomme/test-00000-of-00001.parquet"
    parquet.unlink(missing_ok=True)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # optional: the reader takes the same rows as JSON
        return files
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    return {**files, "eval/videomme/videomme/test-00000-of-00001.parquet": len(rows)}


def _egoschema(root: Path, evals: list[dict], rng: np.random.Generator, write_json: WriteJson) -> dict[str, int]:
    """One five-way ordering question per video; the last question's answer is withheld (outside the subset)."""
    base = root / "eval/egoschema"
    clips = _fresh(base / "good_clips_git")
    questions, answers = [], {}
    for r in evals:
        q_uid = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        _place(root / r["path"], clips / f"{q_uid}.mp4")
        options, k = _order_question(rng, r, 5)
        questions.append({"q_uid": q_uid, "question": "Taking the whole video into account, in which order do the "
                          "briefly shown shapes appear?", **{f"option {j}": o for j, o in enumerate(options)}})
        answers[q_uid] = k
    answers.pop(questions[-1]["q_uid"])
    write_json(base / "questions.json", questions)
    write_json(base / "subset_answers.json", answers)
    return {"eval/egoschema/questions.json": len(questions), "eval/egoschema/subset_answers.json": len(answers)}


def _perception_test(root: Path, evals: list[dict], rng: np.random.Generator, write_json: WriteJson) -> dict[str, int]:
    """Two three-way questions per video (a count, a colour), keyed by video id, with validation answers."""
    base = root / "eval/perception_test"
    videos = _fresh(base / "videos")
    data = {}
    for r in evals:
        _place(root / r["path"], videos / f"{r['id']}.mp4")
        pick = distinct_needles(r)[int(rng.integers(len(distinct_needles(r))))]
        asked = [("How many times does a shape briefly appear?", _count_question(rng, len(r["needles"]), 3),
                  "Memory", ["counting"]),
                 (f"What is the color of the {pick['shape']}?", _choices(rng, pick["colour"], list(NEEDLE_COLOURS), 3),
                  "Semantics", ["colour"])]
        data[r["id"]] = {
            "metadata": {"video_id": r["id"], "split": "valid", "num_frames": r["num_frames"], "frame_rate": r["fps"],
                         "resolution": [r["height"], r["width"]]},
            "mc_question": [{"id": j, "question": question, "options": options, "answer_id": k, "area": area,
                             "reasoning": "Descriptive", "tag": tag}
                            for j, (question, (options, k), area, tag) in enumerate(asked)]}
    write_json(base / "mc_question_valid.json", data)
    return {"eval/perception_test/mc_question_valid.json": sum(len(v["mc_question"]) for v in data.values())}


def _nextqa(root: Path, evals: list[dict], rng: np.random.Generator, write_json: WriteJson) -> dict[str, int]:
    """Two five-way questions per video in the release's CSV: temporal-next (TN) and descriptive count (DC)."""
    base = root / "eval/nextqa"
    videos = _fresh(base / "NExTVideo")
    rows = []
    for r in evals:
        _place(root / r["path"], videos / f"{r['id']}.mp4")
        first, second = r["needles"][:2]
        asked = [("TN", f"what appears right after the first {needle_name(first)}",
                  _choices(rng, article(needle_name(second)), [article(a) for a in ALL_NEEDLES], 5)),
                 ("DC", "how many circles and squares move around",
                  _count_question(rng, len(r["distractors"]), 5, True))]
        for qid, (kind, question, (options, k)) in enumerate(asked):
            rows.append({"video": r["id"], "frame_count": r["num_frames"], "width": r["width"], "height": r["height"],
                         "question": question, "answer": k, "qid": qid, "type": kind,
                         **{f"a{j}": o for j, o in enumerate(options)}})
    (base / "MC").mkdir(parents=True, exist_ok=True)
    with (base / "MC/test.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, NEXTQA_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return {"eval/nextqa/MC/test.csv": len(rows)}


def _msrvtt_qa(root: Path, evals: list[dict], rng: np.random.Generator, write_json: WriteJson) -> dict[str, int]:
    """MSVD-style one-word questions; MSR-VTT test videos are numbered video7010 ... and named video<id>.mp4."""
    base = root / "eval/msrvtt_qa"
    videos = _fresh(base / "videos")
    entries = []
    for i, r in enumerate(evals):
        _place(root / r["path"], videos / f"video{7010 + i}.mp4")
        for question, answer, kind in msvd_questions(r, rng):
            entries.append({"video_id": 7010 + i, "question": question, "id": len(entries), "answer": answer,
                            "answer_type": kind})
    write_json(base / "test_qa.json", entries)
    return {"eval/msrvtt_qa/test_qa.json": len(entries)}


def _activitynet_type(answer: str, kind: str) -> int:
    """ActivityNet-QA's numeric answer type of an MSVD-style pair: 3 yes/no, 4 color, 5 object, 7 number."""
    if kind == "how many":
        return 7
    return 3 if answer in ("yes", "no") else 4 if answer in {*NEEDLE_COLOURS, *BACKGROUNDS} else 5


def _activitynet_qa(root: Path, evals: list[dict], rng: np.random.Generator, write_json: WriteJson) -> dict[str, int]:
    """Video-ChatGPT's pair files (same order, ids ``v_<name>_<k>``): MSVD-style questions plus a yes/no one."""
    base = root / "eval/activitynet_qa"
    videos = _fresh(base / "all_test")
    questions, answers = [], []
    for r in evals:
        _place(root / r["path"], videos / f"v_{r['id']}.mp4")
        sequence, absent = _names(r)
        shown = rng.random() < 0.5
        name = sequence[int(rng.integers(len(sequence)))] if shown else absent[int(rng.integers(len(absent)))]
        pairs = msvd_questions(r, rng) + [(f"is there {article(name)} in the video?", "yes" if shown else "no",
                                           "yes/no")]
        for k, (question, answer, kind) in enumerate(pairs):
            qid = f"v_{r['id']}_{k}"
            questions.append({"video_name": r["id"], "question": question, "question_id": qid})
            answers.append({"answer": answer, "type": _activitynet_type(answer, kind), "question_id": qid})
    write_json(base / "test_q.json", questions)
    write_json(base / "test_a.json", answers)
    return {"eval/activitynet_qa/test_q.json": len(questions), "eval/activitynet_qa/test_a.json": len(answers)}


WRITERS = {"mvbench": _mvbench, "videomme": _videomme, "egoschema": _egoschema, "perception_test": _perception_test,
           "nextqa": _nextqa, "msrvtt_qa": _msrvtt_qa, "activitynet_qa": _activitynet_qa}


def write_benchmark_fixtures(root: Path, evals: list[dict], rng: Callable[[int], np.random.Generator],
                             write_json: WriteJson) -> dict[str, int]:
    """Write the eval sets of :data:`WRITERS` under ``root/eval/``.

    Args:
        root: dataset root; ``root / record["path"]`` must already hold each eval video.
        evals: eval video records (>= 2 needle events, >= 2 distinct needles each); they are not modified.
        rng: the random stream of a benchmark, by its :data:`STREAMS` index.
        write_json: writes an object as a JSON file (make_synthetic's writer, so that every JSON file reads alike).

    Returns:
        ``{annotation file relative to root: number of questions (answers for the answer files)}``.
    """
    written = {}
    for name, writer in WRITERS.items():
        written.update(writer(Path(root), evals, rng(STREAMS[name]), write_json))
    return written
