"""Video-MME, EgoSchema and Perception Test on files in their releases' own layouts: Video-MME's numbers as its
official scorer computes them (and over every item, named apart), its subtitled prompt as VideoLLaMA2 builds it,
submission files a challenge server can read, and the video folder option."""

import json
import os

import pytest
import torch

from datamodules.benchmarks import BenchmarkDataModule, EgoSchema, Evaluator, PerceptionTest, VideoMME
from datamodules.benchmarks.metrics import ItemScores

HEADER = "This video's subtitles are listed below:\n"


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def evaluate(benchmark, items, outputs, mode="generate"):
    """Records and results of ``outputs`` (texts, or option scores in likelihood mode); an item whose video file is
    absent gets the data module's error, as an unreadable video does."""
    meta = [{"prompt": "p", "error": None if os.path.isfile(it.video) else f"missing_file: {it.video}"}
            for it in items]
    ev = Evaluator(benchmark, items, mode)
    records, update = ev.score({"index": torch.arange(len(items)), "meta": meta}, outputs)
    metric = ItemScores(len(items))
    metric.update(**update)
    return ev, records, ev.aggregate(metric.compute(), records)


# ------------------------------------------------------------------------------------------------ Video-MME


def write_videomme(root, rows, videos=("vid0", "vid1", "vid2"), folder="data"):
    """The release: ``videomme/test-00000-of-00001.parquet``, ``data/<videoID>.mp4``, ``subtitle/<videoID>.srt``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "videomme").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "videomme" / "test-00000-of-00001.parquet")
    for v in videos:
        touch(root / folder / f"{v}.mp4")


def row(k, video, duration, domain, sub, task, answer):
    return {"video_id": f"{k // 3 + 1:03d}", "duration": duration, "domain": domain, "sub_category": sub,
            "url": f"https://www.youtube.com/watch?v={video}", "videoID": video, "question_id": f"{k // 3 + 1:03d}-{k}",
            "task_type": task, "question": f"Question {k}?", "options": ["A. one", "B. two", "C. three", "D. four"],
            "answer": answer}


ROWS = [row(0, "vid0", "short", "Knowledge", "Astronomy", "Counting Problem", "B"),
        row(1, "vid1", "medium", "Knowledge", "Geography", "OCR Problems", "C"),
        row(2, "vidX", "medium", "Life Record", "Travel", "OCR Problems", "A"),  # its video is missing
        row(3, "vid2", "long", "Life Record", "Travel", "Counting Problem", "A")]


def test_videomme_reports_the_official_scorer_and_every_item_apart(tmp_path):
    """The official scorer divides by the answered items: a fallback letter is an answer (VideoLLaMA2 writes it into
    the dump, the scorer reads it back); an unreadable video has none. ``all_items`` counts every item."""
    write_videomme(tmp_path, ROWS)
    videomme = VideoMME(str(tmp_path), fallback_letter="C")
    items = videomme.read()
    # right; unparsed -> C, right; (no video); parsed, wrong
    _, records, result = evaluate(videomme, items, ["B", "I cannot tell.", "B", "D"])
    assert [r["error"] is None for r in records] == [True, True, False, True]
    official = result["official"]
    assert official["answered"] == 3 and official["accuracy"] == pytest.approx(2 / 3)
    assert official["per_duration"] == {"long": 0.0, "medium": 1.0, "short": 1.0}
    assert official["per_domain"] == {"Knowledge": 1.0, "Life Record": 0.0}
    assert official["per_sub_category"] == {"Astronomy": 1.0, "Geography": 1.0, "Travel": 0.0}
    assert official["per_task_type"] == {"Counting Problem": 0.5, "OCR Problems": 1.0}
    every = result["all_items"]
    assert every["items"] == 4 and every["accuracy"] == 0.5
    assert every["per_duration"] == {"long": 0.0, "medium": 0.5, "short": 1.0}
    assert every["per_sub_category"] == {"Astronomy": 1.0, "Geography": 1.0, "Travel": 0.0}
    # the keys every benchmark has keep their meaning (every item); accuracy_answered is the official number
    assert result["accuracy"] == every["accuracy"] and result["per_category"] == every["per_task_type"]
    assert result["per_duration"] == every["per_duration"] and result["accuracy_answered"] == official["accuracy"]
    assert list(result).index("official") < list(result).index("all_items")


def test_videomme_without_fallback_and_in_likelihood_mode(tmp_path):
    """Without a fallback letter an unparsed answer is unanswered for the scorer; in likelihood mode every item
    with frames is answered."""
    write_videomme(tmp_path, ROWS)
    videomme = VideoMME(str(tmp_path))
    items = videomme.read()
    _, _, result = evaluate(videomme, items, ["B", "I cannot tell.", "B", "D"])
    assert result["official"]["answered"] == 2 and result["official"]["accuracy"] == 0.5
    assert result["official"]["per_duration"]["medium"] == 0.0  # none answered: 0.0, as the scorer prints it
    assert result["all_items"]["accuracy"] == 0.25 and result["unparsed"] == 1
    scores = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    _, _, result = evaluate(videomme, items, scores, mode="likelihood")
    assert result["official"]["answered"] == 3 and result["official"]["accuracy"] == pytest.approx(2 / 3)
    assert result["all_items"]["accuracy"] == 0.5


SRT = ("1\n00:00:01,000 --> 00:00:03,000\nHello there.\n\n"
       "2\n00:00:03,000 --> 00:00:05,000\n<i>Run!</i>\n\n"
       "3\n00:00:06,000 --> 00:00:07,000\n\n")  # an empty cue


def test_videomme_subtitles_follow_the_reference_prompt(tmp_path, tiny):
    """One line per sampled frame showing a subtitle (repeats kept; a frame on a cue boundary or an empty cue shows
    none, as pysubs2's ``start < t < end`` test in VideoLLaMA2); a video without an .srt still gets the header; the
    prompt in the predictions and the results' protocol carry the header."""
    write_videomme(tmp_path, ROWS)
    (tmp_path / "subtitle").mkdir()
    (tmp_path / "subtitle" / "vid0.srt").write_text(SRT, encoding="utf-8")
    videomme = VideoMME(str(tmp_path), subtitles=True)
    items = videomme.read()
    times = torch.tensor([0.5, 1.0, 1.5, 2.5, 3.0, 4.0, 6.5])
    lines = videomme.frame_subtitles(items[0], times)
    assert lines == ["Hello there.", "Hello there.", "Run!"]
    assert videomme.prompt(items[0], lines).startswith(HEADER + "Hello there.\nHello there.\nRun!\nSelect the best")
    assert videomme.frame_subtitles(items[1], times) == []  # vid1 has no .srt: header, no lines
    assert videomme.prompt(items[1], []).startswith(HEADER + "\nSelect the best answer")
    assert VideoMME(str(tmp_path)).frame_subtitles(items[0], times) is None  # the plain variant shows none

    dm = BenchmarkDataModule(videomme, tiny["llm"], vision_tower=tiny["vision"], num_workers=0, blind=True)
    dm.setup("test")
    recorded = dm.test_set[1]["meta"]["prompt"]  # what predictions.jsonl records as the item's prompt
    assert recorded.startswith(HEADER + "\nSelect the best answer") and "Question 1?" in recorded
    protocol = Evaluator(videomme, items).describe(16)
    assert protocol["subtitles"] is True and protocol["prompt"].startswith(HEADER + "{subtitles}\nSelect the best")
    assert Evaluator(VideoMME(str(tmp_path)), items).describe(16)["prompt"].startswith("Select the best")


def test_videomme_video_root(tmp_path):
    """``video_root``: the release's ``data/`` by default, VideoLLaMA2's ``videos/`` when there is no ``data/``, a
    folder of one's own (relative or absolute), which is then also a media root."""
    root = tmp_path / "Video-MME"
    write_videomme(root, ROWS[:1], videos=("vid0",), folder="videos")
    assert VideoMME(str(root)).read()[0].video == str(root / "videos" / "vid0.mp4")
    touch(root / "data" / "vid0.mp4")
    assert VideoMME(str(root)).read()[0].video == str(root / "data" / "vid0.mp4")  # the release's wins, always
    touch(tmp_path / "disk" / "vid0.mkv")
    elsewhere = VideoMME(str(root), video_root=str(tmp_path / "disk"))
    assert elsewhere.read()[0].video == str(tmp_path / "disk" / "vid0.mkv")
    assert elsewhere.media_roots() == [str(root), str(tmp_path / "disk")]
    assert VideoMME(str(root), video_root="videos").read()[0].video == str(root / "videos" / "vid0.mp4")
    assert VideoMME(str(root)).media_roots() == [str(root)]


# ------------------------------------------------------------------------------------------------ EgoSchema


def write_egoschema(root, answers):
    """The release: ``questions.json``, ``subset_answers.json``, ``good_clips_git/<q_uid>.mp4``."""
    questions = [{"q_uid": f"uid-{k}", "google_drive_id": f"g{k}", "question": f"What does c do {k}?",
                  **{f"option {i}": f"c does thing {i}" for i in range(5)}} for k in range(3)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "questions.json").write_text(json.dumps(questions))
    (root / "subset_answers.json").write_text(json.dumps(answers))
    for q in questions:
        touch(root / "good_clips_git" / f"{q['q_uid']}.mp4")


def test_egoschema_submission_answers_every_question(tmp_path):
    """No ``-1`` in the CSV: an unanswered question is submitted as C (2), as VideoLLaMA2 / B-VLLM submit it."""
    write_egoschema(tmp_path, {"uid-0": 1})
    egoschema = EgoSchema(str(tmp_path), subset=False)
    ev, records, result = evaluate(egoschema, egoschema.read(), ["(B)", "I am not sure.", "(E)"])
    assert result["unparsed"] == 1 and result["scored"] == 1 and result["accuracy"] == 1.0
    name, text = ev.submission(records)
    assert name == "egoschema_submission.csv"
    assert text.splitlines() == ["q_uid,answer", "uid-0,1", "uid-1,2", "uid-2,4"]


def test_egoschema_full_set_writes_the_csv_even_when_every_answer_is_known(tmp_path):
    write_egoschema(tmp_path, {"uid-0": 1, "uid-1": 0, "uid-2": 3})
    egoschema = EgoSchema(str(tmp_path), subset=False)
    assert egoschema.server_scored and not EgoSchema(str(tmp_path)).server_scored
    ev, records, _ = evaluate(egoschema, egoschema.read(), ["(B)", "(A)", "(D)"])
    assert ev.submission(records) is not None


def test_egoschema_video_root(tmp_path):
    write_egoschema(tmp_path / "EgoSchema", {"uid-0": 1})
    assert (EgoSchema(str(tmp_path / "EgoSchema")).read()[0].video
            == str(tmp_path / "EgoSchema/good_clips_git/uid-0.mp4"))
    touch(tmp_path / "clips" / "uid-0.mp4")
    moved = EgoSchema(str(tmp_path / "EgoSchema"), video_root=str(tmp_path / "clips"))
    assert moved.read()[0].video == str(tmp_path / "clips" / "uid-0.mp4")
    assert moved.media_roots() == [str(tmp_path / "EgoSchema"), str(tmp_path / "clips")]
    assert EgoSchema(str(tmp_path / "EgoSchema")).media_roots() == [str(tmp_path / "EgoSchema")]


# ------------------------------------------------------------------------------------------- Perception Test


def write_perception_test(root, name="mc_question_test.json", answers=False):
    """The release: ``{video_id: {metadata, mc_question: [{id (an int), question, options, ...}]}}``, videos in
    ``videos/``."""
    data = {}
    for v in range(2):
        video_id = f"video_{1000 + v}"
        questions = [{"id": q, "question": f"What is {q}?", "options": ["a cup", "a box", "a ball"],
                      "area": "physics", "reasoning": "counterfactual", "tag": ["motion"],
                      **({"answer_id": q % 3} if answers else {})} for q in range(2)]
        data[video_id] = {"metadata": {"video_id": video_id, "split": "test", "num_frames": 300},
                          "mc_question": questions}
        touch(root / "videos" / f"{video_id}.mp4")
    (root / name).write_text(json.dumps(data))


def test_perception_test_submission_keeps_the_id_type_and_answers_every_question(tmp_path):
    write_perception_test(tmp_path)
    perception_test = PerceptionTest(str(tmp_path), annotation="mc_question_test.json")
    ev, records, result = evaluate(perception_test, perception_test.read(), ["(A)", "Hmm.", "(B)", "(C)"])
    assert "accuracy" not in result and result["unparsed"] == 1
    name, text = ev.submission(records)
    assert name == "perception_test_submission.json"
    assert json.loads(text) == {
        "video_1000": [{"id": 0, "answer_id": 0, "answer": "a cup"}, {"id": 1, "answer_id": 2, "answer": "a ball"}],
        "video_1001": [{"id": 0, "answer_id": 1, "answer": "a box"}, {"id": 1, "answer_id": 2, "answer": "a ball"}]}


def test_perception_test_video_root(tmp_path):
    root = tmp_path / "perception_test"
    write_perception_test(root, "mc_question_valid.json", answers=True)
    items = PerceptionTest(str(root)).read()
    assert items[0].video == str(root / "videos" / "video_1000.mp4") and items[0].id == "video_1000_0"
    (root / "videos").rename(tmp_path / "valid_videos")
    moved = PerceptionTest(str(root), video_root="../valid_videos")
    assert moved.read()[0].video == str(tmp_path / "valid_videos" / "video_1000.mp4")
    assert moved.media_roots() == [str(root), str(tmp_path / "valid_videos")]
