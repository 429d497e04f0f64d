"""The synthetic dataset generator: files, decodability, needle visibility, schemas, answers, determinism."""

import hashlib
import json
import math
from collections import defaultdict
from pathlib import Path

import decord
import numpy as np
import pytest
from PIL import Image

from lit_bvllm.world import make_synthetic
from lit_bvllm.world.describe import NUMBER_WORDS, caption, video_qa
from lit_bvllm.world.needles import needle_records
from lit_bvllm.world.render import shape_mask, write_mp4
from lit_bvllm.world.scenes import COLOURS, NEEDLE_SHAPES, sample_timeline

SMALL = {"num_videos": 4, "num_eval_videos": 4, "max_duration": 12}
JSON_FILES = ["metadata.json", "pretrain.json", "finetune.json", "finetune_llamavid.json",
              "eval/vnbench/VNBench_qa.json", "eval/msvd/test_qa.json", "eval/msvd/test_q.json",
              "eval/msvd/test_a.json"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    summary = make_synthetic(root, seed=0, **SMALL)
    files = {name: json.loads((root / name).read_text()) for name in JSON_FILES}
    return root, summary, files


def load(root: Path, name: str):
    return json.loads((root / name).read_text())


def frames(path: Path) -> np.ndarray:
    vr = decord.VideoReader(str(path), num_threads=1)
    return vr.get_batch(list(range(len(vr)))).asnumpy()


def near(frame: np.ndarray, colour: str, tol: int = 60) -> int:
    """Pixels whose every RGB channel is within `tol` of the named colour."""
    return int((np.abs(frame.astype(int) - np.array(COLOURS[colour])).max(-1) < tol).sum())


def test_files_and_summary(data):
    root, summary, files = data
    for name in JSON_FILES:
        assert (root / name).is_file()
    meta = files["metadata.json"]
    train = [r for r in meta["videos"] if r["split"] == "train"]
    evals = [r for r in meta["videos"] if r["split"] == "eval"]
    assert (len(train), len(evals), len(meta["images"])) == (4, 4, 2)
    assert summary["videos"] == 4 and summary["eval_videos"] == 4 and summary["images"] == 2
    assert summary["seconds"] == sum(r["duration"] for r in train)
    assert summary["entries"] == {name: len(files[name]) for name in JSON_FILES[1:]}
    assert sorted(p.name for p in (root / "videos").iterdir()) == [f"vid_{i:04d}.mp4" for i in range(4)]
    assert sorted(p.name for p in (root / "images").iterdir()) == ["img_0000.jpg", "img_0001.jpg"]


def test_metadata_records(data):
    meta = data[2]["metadata.json"]
    ids = [r["id"] for r in meta["videos"] + meta["images"]]
    assert len(ids) == len(set(ids))
    for r in meta["videos"]:
        assert 8 <= r["duration"] <= 12 and 4 <= r["fps"] <= 8 and r["num_frames"] == r["duration"] * r["fps"]
        assert len(r["distractors"]) in (1, 2, 3)
        assert len({(d["shape"], d["colour"]) for d in r["distractors"]}) == len(r["distractors"])
        ends = [0] + [n["end"] for n in r["needles"]]
        for prev_end, n in zip(ends, r["needles"]):
            assert n["start"] >= prev_end + 1 and n["end"] - n["start"] in (1, 2) and n["end"] <= r["duration"] - 1
            assert n["shape"] in NEEDLE_SHAPES
        if r["split"] == "eval":
            assert len(r["needles"]) >= 2 and len({n["shape"] for n in r["needles"]}) >= 2


def test_every_media_path_exists(data):
    root, _, files = data
    for name in ["pretrain.json", "finetune.json", "finetune_llamavid.json"]:
        for entry in files[name]:
            for key in ("video", "image"):
                if key in entry:
                    assert (root / entry[key]).is_file(), (name, entry["id"])
    for entry in files["eval/vnbench/VNBench_qa.json"]:
        assert (root / "eval/vnbench" / entry["video"]).is_file()
    for entry in files["eval/msvd/test_qa.json"]:
        assert (root / "eval/msvd/videos" / f"{entry['video_id']}.mp4").is_file()
    for r in files["metadata.json"]["videos"]:
        for copy in r.get("copies", []):  # eval videos: same bytes under vnbench/ and msvd/
            assert (root / copy).read_bytes() == (root / r["path"]).read_bytes()


def test_videos_decode_to_their_record(data):
    root, _, files = data
    for r in files["metadata.json"]["videos"]:
        vr = decord.VideoReader(str(root / r["path"]), num_threads=1)
        assert len(vr) == r["duration"] * r["fps"] == r["num_frames"]
        assert vr.get_avg_fps() == r["fps"]
        assert vr[0].shape == (r["height"], r["width"], 3)
        assert list(vr.get_key_indices()) == list(range(0, len(vr), 2 * r["fps"]))  # a 2 s GOP
        one_fps = [math.floor((k + 0.5) * r["fps"]) for k in range(r["duration"])]
        assert vr.get_batch(one_fps).shape[0] == r["duration"]


def test_needles_visible_only_during_their_event(data):
    root, _, files = data
    checked = 0
    for r in files["metadata.json"]["videos"]:
        video = frames(root / r["path"])
        for n in r["needles"]:
            area = int(shape_mask(n["shape"], *n["position"], n["size"], r["width"], r["height"]).sum())
            during = near(video[int((n["start"] + n["end"]) / 2 * r["fps"])], n["colour"])
            before = near(video[n["start"] * r["fps"] - 1], n["colour"])  # last frame of the preceding gap
            after = near(video[n["end"] * r["fps"]], n["colour"])  # first frame of the following gap
            assert during > 0.7 * area > 100, (r["id"], n)
            assert before < 0.05 * area and after < 0.05 * area, (r["id"], n)
            checked += 1
    assert checked >= 8


def test_images_show_their_needle(data):
    root, _, files = data
    for r in files["metadata.json"]["images"]:
        img = np.asarray(Image.open(root / r["path"]).convert("RGB"))
        assert img.shape == (r["height"], r["width"], 3)
        for n in r["needles"]:
            area = int(shape_mask(n["shape"], *n["position"], n["size"], r["width"], r["height"]).sum())
            assert near(img, n["colour"]) > 0.7 * area


def check_tags(entry: dict, video_tag: str) -> None:
    turns = entry["conversations"]
    assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2) and turns
    text = "".join(t["value"] for t in turns)
    tag = video_tag if "video" in entry else "<image>" if "image" in entry else None
    for other in {"<video>", "<image>"} - {tag}:
        assert other not in text, entry["id"]
    if tag:
        assert turns[0]["value"].startswith(tag + "\n") and text.count(tag) == 1, entry["id"]


def test_pretrain_and_finetune_schema(data):
    _, _, files = data
    meta = files["metadata.json"]
    pretrain, finetune = files["pretrain.json"], files["finetune.json"]
    assert [e["id"] for e in pretrain] == [f"pt_{i:04d}" for i in range(len(pretrain))]
    assert [e.get("video", e.get("image")) for e in pretrain] == [
        r["path"] for r in meta["videos"] if r["split"] == "train"] + [r["path"] for r in meta["images"]]
    assert [e["id"] for e in finetune] == [f"ft_{i:04d}" for i in range(len(finetune))]
    for entry in pretrain + finetune:
        check_tags(entry, "<video>")
    n_video = sum("video" in e for e in finetune)
    n_image = sum("image" in e for e in finetune)
    n_text = len(finetune) - n_video - n_image
    assert (2 + 2) * 4 <= n_video <= (3 + 2) * 4 and n_image == 2 and n_text == max(1, (n_video + n_image) // 9)
    assert any(len(e["conversations"]) == 2 for e in finetune) and any(len(e["conversations"]) >= 4 for e in finetune)
    assert all(not e["video"].startswith("eval") for e in finetune if "video" in e)


def test_llamavid_equals_finetune_except_tag(data):
    finetune, llamavid = data[2]["finetune.json"], data[2]["finetune_llamavid.json"]
    assert [e["id"] for e in llamavid] == [e["id"] for e in finetune]
    for ours, theirs in zip(finetune, llamavid):
        check_tags(theirs, "<image>")
        if "video" in ours:
            assert json.dumps(theirs).replace("<image>", "<video>") == json.dumps(ours)
        else:
            assert theirs == ours


def test_vnbench_tries_are_rotations(data):
    entries = data[2]["eval/vnbench/VNBench_qa.json"]
    groups = defaultdict(list)
    for e in entries:
        groups[(e["video"], e["type"])].append(e)
    assert len(groups) == 4 * 4 and {t for _, t in groups} == {"ret_insert1", "ord_insert1", "cnt_insert1", "bg_every1"}
    for (video, kind), tries in groups.items():
        assert [e["try"] for e in tries] == [0, 1, 2, 3]
        base = tries[0]["options"]
        assert len(base) == 4 == len(set(base))
        for k, e in enumerate(tries):
            stem = Path(video).stem
            assert e["question_id"] == f"{stem}_{kind}_{k}" and e["question"] == tries[0]["question"]
            assert e["options"] == base[k:] + base[:k] and e["gt"] == tries[0]["gt"] in e["options"]
            assert e["options"].index(e["gt"]) == (base.index(e["gt"]) - k) % 4  # the gt letter moves


def test_vnbench_answers_follow_metadata(data):
    meta = {r["id"]: r for r in data[2]["metadata.json"]["videos"]}
    for e in data[2]["eval/vnbench/VNBench_qa.json"]:
        r = meta[Path(e["video"]).stem]
        names = [f"{n['colour']} {n['shape']}" for n in sorted(r["needles"], key=lambda n: n["start"])]
        if e["type"] == "ret_insert1":
            present = [o for o in e["options"] if o.split(" ", 1)[1] in names]
            assert present == [e["gt"]]
        elif e["type"] == "ord_insert1":
            assert e["gt"] == ", then ".join(names)
        elif e["type"] == "cnt_insert1":
            target = e["question"].removeprefix("How many times does a ").removeprefix("How many times does an ")
            assert e["gt"] == str(names.count(target.removesuffix(" appear?")))


def test_msvd_files_agree(data):
    meta = {r["id"]: r for r in data[2]["metadata.json"]["videos"]}
    qa, q, a = (data[2][f"eval/msvd/test_{s}.json"] for s in ("qa", "q", "a"))
    assert len(qa) == len(q) == len(a) == 4 * 7 and [e["id"] for e in qa] == list(range(len(qa)))
    for full, question, answer in zip(qa, q, a):
        assert (question["video_name"], question["question"]) == (full["video_id"], full["question"])
        assert (answer["answer"], answer["type"]) == (full["answer"], full["answer_type"])
        assert question["question_id"] == answer["question_id"]
        assert full["answer"].isalpha() and full["answer"] == full["answer"].lower()
        needles = sorted(meta[full["video_id"]]["needles"], key=lambda n: n["start"])
        if full["question"] == "what shape appears first?":
            assert full["answer"] == needles[0]["shape"]
        if full["question"] == "how many times does a shape briefly appear?":
            assert full["answer"] == NUMBER_WORDS[len(needles)]
    assert len({e["question_id"] for e in q}) == len(q)


def test_captions_and_qa_follow_the_record():
    record = {"kind": "video", "background": {"colours": ["navy"], "direction": "solid"},
              "distractors": [{"shape": "circle", "colour": "orange", "motion": "vertically"}],
              "needles": [{"shape": "triangle", "colour": "red", "start": 3, "end": 5},
                          {"shape": "star", "colour": "blue", "start": 7, "end": 8},
                          {"shape": "triangle", "colour": "red", "start": 10, "end": 11}]}
    assert caption(record) == ("A video with a navy background. An orange circle bounces vertically. Briefly shown: "
                               "a red triangle at about 3 s, then a blue star at about 7 s, "
                               "then a red triangle at about 10 s.")
    expected = {"How many times does a shape briefly flash up in the video?": "Three times.",
                "Which shape appears first?": "A red triangle, at about second 3.",
                "How does the orange circle move?": "It bounces vertically.",
                "How many times does the red triangle appear?": "Two.",
                "How many times does the blue star appear?": "One.",
                "Which appears first, the triangle or the star?": "The triangle.",
                "Which appears first, the star or the triangle?": "The triangle.",
                "What color is the star that briefly appears?": "It is blue."}
    seen = 0
    for seed in range(6):
        for question, answer in video_qa(record, np.random.default_rng(seed)):
            if question in expected:
                assert answer == expected[question]
                seen += 1
    assert seen >= 6 * 4


def test_timeline_constraints():
    for seed in range(300):
        rng = np.random.default_rng(seed)
        duration = int(rng.integers(8, 40))
        spans = sample_timeline(rng, duration, int(rng.integers(1, 5)))
        assert spans and spans[0][0] >= 1 and spans[-1][1] <= duration - 1
        assert all(1 <= e - s <= 2 for s, e in spans)
        assert all(b[0] - a[1] >= 1 for a, b in zip(spans, spans[1:]))


def test_needle_shapes_are_distinct_masks():
    masks = {s: shape_mask(s, 64, 48, 20, 128, 96) for s in NEEDLE_SHAPES + ("circle", "square")}
    assert all(200 < m.sum() < 1700 for m in masks.values())
    assert masks["square"].sum() == 40 * 40  # half-size 20 about a pixel corner: pixels 44..83 each way
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert (masks[a] != masks[b]).sum() > 50, (a, b)


def test_same_seed_is_identical_and_other_seed_differs(data, tmp_path):
    root = data[0]
    make_synthetic(tmp_path / "again", seed=0, **SMALL)
    for name in JSON_FILES:
        assert (tmp_path / "again" / name).read_bytes() == (root / name).read_bytes(), name
    for name in ["videos/vid_0000.mp4", "eval/vnbench/videos/eval_0000.mp4"]:
        assert np.array_equal(frames(tmp_path / "again" / name), frames(root / name))
    make_synthetic(tmp_path / "other", seed=1, **SMALL)
    for name in ["metadata.json", "finetune.json", "eval/vnbench/VNBench_qa.json"]:
        assert (tmp_path / "other" / name).read_bytes() != (root / name).read_bytes()


def test_an_encode_gives_the_same_bytes_every_time(tmp_path):
    """libx264's macroblock-tree rate control gave one of two streams for the same 64x48 frames (about 1 encode in
    6, depending on the process's allocations): 40 encodes, with allocations churned between them, give one file."""
    record = needle_records(0, 16, 2, (2, 2), 64, 48)[1]
    rng, held, digests = np.random.default_rng(0), [], set()
    for i in range(40):
        held.append(bytearray(int(rng.integers(1, 5000))))
        if len(held) > 20:
            held.pop(int(rng.integers(len(held))))
        write_mp4(record, tmp_path / "v.mp4")
        digests.add(hashlib.md5((tmp_path / "v.mp4").read_bytes()).hexdigest())
    assert len(digests) == 1


def test_rerun_prunes_stale_files(tmp_path):
    make_synthetic(tmp_path, num_videos=3, num_eval_videos=2, max_duration=8)
    summary = make_synthetic(tmp_path, num_videos=1, num_eval_videos=1, max_duration=8)
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["vid_0000.mp4"]
    assert sorted(p.name for p in (tmp_path / "eval/msvd/videos").iterdir()) == ["eval_0000.mp4"]
    assert summary["seconds"] == 8 and len(load(tmp_path, "pretrain.json")) == 1 + 2  # one video, two images


def test_eval_videos_have_their_own_durations_and_needle_times(tmp_path):
    """Eval videos may be longer than training ones (the needle set: 64-128 s against <= 32 s of training), and
    every needle question says where its needles are."""
    make_synthetic(tmp_path, num_videos=2, num_eval_videos=3, max_duration=10, eval_min_duration=40,
                   eval_max_duration=44, min_fps=2, max_fps=2)
    meta = load(tmp_path, "metadata.json")
    assert all(8 <= r["duration"] <= 10 for r in meta["videos"] if r["split"] == "train")
    assert all(40 <= r["duration"] <= 44 for r in meta["videos"] if r["split"] == "eval")
    assert meta["config"]["eval_min_duration"] == 40 and meta["config"]["eval_max_duration"] == 44
    records = {r["id"]: r for r in meta["videos"]}
    for e in load(tmp_path, "eval/vnbench/VNBench_qa.json"):
        r = records[Path(e["video"]).stem]
        events = [[n["start"], n["end"]] for n in r["needles"]]
        if e["type"] == "ord_insert1":
            assert e["needle_times"] == events
        elif e["type"] == "bg_every1":  # every frame answers it (tests/test_every_frame_task.py)
            assert e["needle_times"] == [[0, r["duration"]]]
        else:
            name = (e["gt"] if e["type"] == "ret_insert1"
                    else e["question"].split(" does ", 1)[1].removesuffix(" appear?"))
            name = name.split(" ", 1)[1]  # drop the article
            assert e["needle_times"] == [[n["start"], n["end"]] for n in r["needles"]
                                         if f"{n['colour']} {n['shape']}" == name]
            assert e["needle_times"] and all(t in events for t in e["needle_times"])


@pytest.mark.parametrize("overrides, message", [
    ({"eval_min_duration": 30, "eval_max_duration": 20}, "--eval-min-duration"),
    ({"eval_min_duration": 4}, "--eval-min-duration must be >= 8"),
    ({"min_duration": 20, "max_duration": 10}, "--min-duration"),
    ({"min_duration": 4}, ">= 8"),
    ({"min_duration": 8.5, "max_duration": 8.9}, "whole number"),
    ({"min_fps": 1}, "above 1 fps"),
    ({"min_fps": 6, "max_fps": 5}, "--max-fps"),
    ({"num_videos": 0}, "--num-videos"),
    ({"width": 127}, "even"),
    ({"seed": -1}, "--seed"),
])
def test_argument_validation(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_synthetic(tmp_path, **overrides)
    assert not any(tmp_path.iterdir())  # nothing written before validation


def test_finetune_asks_every_form_of_the_needle_set(data):
    """Each training video with needles gets two conversations asking the held-out set's four forms (background,
    retrieval, counting, ordering), answered as the set's right options read: training asks what evaluation asks
    (the set's own videos and questions stay held out)."""
    _, _, files = data
    records = {r["path"]: r for r in files["metadata.json"]["videos"] if r["split"] == "train" and r["needles"]}
    assert records
    forms = {}
    for e in files["finetune.json"]:
        questions = [t["value"].removeprefix("<video>\n") for t in e["conversations"][::2]]
        if e.get("video") in records and len(questions) == 4:
            forms.setdefault(e["video"], []).append(
                dict(zip(questions, (t["value"] for t in e["conversations"][1::2]))))
    assert set(forms) == set(records) and all(len(v) == 2 for v in forms.values())
    for path, conversations in forms.items():
        record = records[path]
        names = [f"{n['colour']} {n['shape']}" for n in record["needles"]]
        for qa in conversations:
            assert qa["What color is the background?"].startswith("The video has ")
            assert qa["In which order do the briefly shown shapes appear?"] == ", then ".join(names)
            picked = qa["Which of these shapes briefly appears in the video?"].split(" ", 1)[1]
            assert picked in names
            counting = [q for q in qa if q.startswith("How many times does ")]
            assert len(counting) == 1 and qa[counting[0]] == str(
                names.count(counting[0][len("How many times does "):].split(" ", 1)[1][: -len(" appear?")]))
