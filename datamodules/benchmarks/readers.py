"""One reader per evaluation benchmark: its official annotation files -> a list of :class:`EvalItem`.

Every reader takes the benchmark's root folder, laid out as the reference code expects it
(``reference/video_llm_anchors.md`` §4, ``reference/bvllm_official.md`` §4), and returns items whose video paths
are absolute. Where the annotation gives a bare id, the video is looked up with the extensions the reference
scripts try (:data:`VIDEO_EXTENSIONS`); a video that is not there keeps its ``.mp4`` path, so the item is still
read and the loader reports the missing file. A malformed entry raises ``ValueError`` naming the file, the
entry and the field. No reader decodes media.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from datamodules.benchmarks.items import EvalItem

log = logging.getLogger("lit_bvllm.data")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


class MVBenchTask(NamedTuple):
    """One row of VideoLLaMA2's MVBench task table (``videollama2/eval/inference_video_mcqa_mvbench.py``)."""

    file: str  # annotation file in <root>/json/
    prefix: str  # video folder under the video root
    kind: str  # "video" (files) or "frame" (a folder of frames per entry)
    bound: bool  # entries carry start/end seconds that window the video


# VideoLLaMA2's table, verbatim: 20 tasks x 200 questions. Every prefix is the one that script joins to its
# --video-folder (eval/mvbench/video); pass `prefixes` to read_mvbench where a download is laid out otherwise.
MVBENCH_TASKS = {
    "Action Sequence": MVBenchTask("action_sequence.json", "star/Charades_v1_480/", "video", True),
    "Action Prediction": MVBenchTask("action_prediction.json", "star/Charades_v1_480/", "video", True),
    "Action Antonym": MVBenchTask("action_antonym.json", "ssv2_video/", "video", False),
    "Fine-grained Action": MVBenchTask("fine_grained_action.json", "Moments_in_Time_Raw/videos/", "video", False),
    "Unexpected Action": MVBenchTask("unexpected_action.json", "FunQA_test/test/", "video", False),
    "Object Existence": MVBenchTask("object_existence.json", "clevrer/video_validation/", "video", False),
    "Object Interaction": MVBenchTask("object_interaction.json", "star/Charades_v1_480/", "video", True),
    "Object Shuffle": MVBenchTask("object_shuffle.json", "perception/videos/", "video", False),
    "Moving Direction": MVBenchTask("moving_direction.json", "clevrer/video_validation/", "video", False),
    "Action Localization": MVBenchTask("action_localization.json", "sta/sta_video/", "video", True),
    "Scene Transition": MVBenchTask("scene_transition.json", "scene_qa/video/", "video", False),
    "Action Count": MVBenchTask("action_count.json", "perception/videos/", "video", False),
    "Moving Count": MVBenchTask("moving_count.json", "clevrer/video_validation/", "video", False),
    "Moving Attribute": MVBenchTask("moving_attribute.json", "clevrer/video_validation/", "video", False),
    "State Change": MVBenchTask("state_change.json", "perception/videos/", "video", False),
    "Fine-grained Pose": MVBenchTask("fine_grained_pose.json", "nturgbd/", "video", False),
    "Character Order": MVBenchTask("character_order.json", "perception/videos/", "video", False),
    "Egocentric Navigation": MVBenchTask("egocentric_navigation.json", "vlnqa/", "video", False),
    "Episodic Reasoning": MVBenchTask("episodic_reasoning.json", "tvqa/frames_fps3_hq/", "frame", True),
    "Counterfactual Inference": MVBenchTask("counterfactual_inference.json", "clevrer/video_validation/", "video", False),
}
MVBENCH_FRAME_FPS = 3.0  # the TVQA frame folders of episodic reasoning

# ActivityNet-QA's numeric types (the dataset's own README: question types 0-2, answer types 3-8).
ACTIVITYNET_TYPES = {0: "motion", 1: "spatial", 2: "temporal", 3: "yes/no", 4: "color", 5: "object",
                     6: "location", 7: "number", 8: "other"}
NEXTQA_CLASSES = {"C": "Causal", "T": "Temporal", "D": "Descriptive"}  # by the first letter of CW, TN, DC, ...


# ---------------------------------------------------------------------------------------------------- helpers

def find_video(folders: list[Path], stems: list[str]) -> str:
    """Absolute path of the first ``<folder>/<stem><ext>`` that exists (a stem that already ends in a video
    extension is tried as it is first); ``<folders[0]>/<stems[0]>.mp4`` when none does."""
    for folder in folders:
        for stem in stems:
            names = ([stem] if stem.lower().endswith(VIDEO_EXTENSIONS) else []) + [stem + e for e in VIDEO_EXTENSIONS]
            for name in names:
                if (folder / name).is_file():
                    return os.path.abspath(folder / name)
    return os.path.abspath(folders[0] / f"{stems[0]}{VIDEO_EXTENSIONS[0]}")


def _entry(path: Path, where) -> str:
    return f"{path}: entry {where}"


def _field(entry, key: str, path: Path, where, types: tuple = (str,)):
    """``entry[key]``, or a ValueError naming the file, the entry and the field."""
    if not isinstance(entry, dict):
        raise ValueError(f"{_entry(path, where)} is a {type(entry).__name__}, not an object")
    if entry.get(key) is None:
        raise ValueError(f"{_entry(path, where)}: field '{key}' is missing")
    value = entry[key]
    if not isinstance(value, types) or isinstance(value, bool):
        names = " or ".join(t.__name__ for t in types)
        raise ValueError(f"{_entry(path, where)}: field '{key}' must be {names}, got {type(value).__name__} {value!r}")
    return value


def _text(entry, key: str, path: Path, where) -> str:
    """A text field; numbers (CSV ids, numeric answers) are accepted and written as text."""
    return str(_field(entry, key, path, where, (str, int, float)))


def _index(value, count: int, path: Path, where, key: str) -> int:
    """An option index given as an int or a digit string, checked against ``count`` options."""
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())):
        raise ValueError(f"{_entry(path, where)}: field '{key}' must be an option index, got {value!r}")
    if not 0 <= int(value) < count:
        raise ValueError(f"{_entry(path, where)}: field '{key}' = {value!r} is not an index of its {count} options")
    return int(value)


def _letter(value, count: int, path: Path, where, key: str) -> int:
    """An option letter (``"B"``, ``"(B)"``, ``"B."``) as an index, checked against ``count`` options."""
    letter = str(value).strip().strip("()").rstrip(".").upper()
    if len(letter) != 1 or not 0 <= ord(letter) - ord("A") < count:
        raise ValueError(f"{_entry(path, where)}: field '{key}' must be one of the letters A..{chr(ord('A') + count - 1)}, "
                         f"got {value!r}")
    return ord(letter) - ord("A")


def _number(entry, key: str, path: Path, where) -> float:
    value = _field(entry, key, path, where, (int, float, str))
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{_entry(path, where)}: field '{key}' must be a number of seconds, got {value!r}") from None


def _load_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"annotation file '{path}' does not exist; check the benchmark root and file name")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def _load_list(path: Path) -> list:
    entries = _load_json(path)
    if not isinstance(entries, list):
        raise ValueError(f"{path} must hold a JSON list of entries, got a {type(entries).__name__}")
    return entries


def _load_rows(path: Path) -> list[dict]:
    """Table rows from ``.parquet`` (pyarrow), ``.csv``, ``.jsonl`` or ``.json`` (a list of objects)."""
    if not path.is_file():
        raise FileNotFoundError(f"annotation file '{path}' does not exist; check the benchmark root and file name")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise ImportError(f"reading {path} needs pyarrow: `pip install pyarrow`, or convert the file once to JSON "
                              "(the same rows as a list of objects) and pass annotation='<file>.json'") from e
        return pq.read_table(path).to_pylist()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:
            return list(csv.DictReader(f))
    if suffix == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: line {n} is not valid JSON: {e}") from None
        return rows
    return _load_list(path)


def _unique(ids: list[str]) -> list[str]:
    """Repeated ids get ``_1``, ``_2``, ... in order of appearance (the GPT-judge scripts' convention)."""
    taken, out = set(ids), []
    seen: set[str] = set()
    for i in ids:
        new, k = i, 0
        while new in seen or (k and new in taken):
            k += 1
            new = f"{i}_{k}"
        seen.add(new)
        out.append(new)
    return out


# ---------------------------------------------------------------------------------------- multiple choice

def read_mvbench(root: str | Path, tasks: list[str] | None = None, video_root: str | Path | None = None,
                 prefixes: dict[str, str] | None = None) -> list[EvalItem]:
    """MVBench as VideoLLaMA2 reads it: ``<root>/json/<task file>`` and videos under ``<video_root>/<prefix>``.

    Each task file is a list of ``{video, question, candidates, answer (a candidate's text), start?, end?}``;
    the four bound tasks window the video with ``start``/``end`` seconds, episodic reasoning reads frame folders
    at 3 fps. Item ids are ``<task file stem>_<index>``; category is the task name.

    Args:
        root: MVBench folder holding ``json/``.
        tasks: task names (keys of :data:`MVBENCH_TASKS`) to read; None reads every task whose file exists.
        video_root: folder the task prefixes are relative to (default ``<root>/video``).
        prefixes: per-task prefix overrides, ``{"Action Sequence": "star/Charades_segment/"}``.
    """
    root = Path(root)
    video_root = Path(video_root) if video_root is not None else root / "video"
    unknown = sorted(set(tasks or []) - set(MVBENCH_TASKS)) + sorted(set(prefixes or {}) - set(MVBENCH_TASKS))
    if unknown:
        raise ValueError(f"unknown MVBench task(s) {unknown}; known: {sorted(MVBENCH_TASKS)}")
    names = list(tasks) if tasks is not None else [n for n, t in MVBENCH_TASKS.items() if (root / "json" / t.file).is_file()]
    if not names:
        raise FileNotFoundError(f"no MVBench task file in {root / 'json'} (expected e.g. action_sequence.json)")
    missing = [n for n in MVBENCH_TASKS if n not in names]
    if tasks is None and missing:
        log.warning("MVBench: %d of 20 tasks have no file in %s: %s", len(missing), root / "json", ", ".join(missing))
    items = []
    for name in names:
        task = MVBENCH_TASKS[name]
        path = root / "json" / task.file
        folder = video_root / (prefixes or {}).get(name, task.prefix)
        stem = Path(task.file).stem
        for k, e in enumerate(_load_list(path)):
            candidates = [str(c) for c in _field(e, "candidates", path, k, (list,))]
            answer = _text(e, "answer", path, k)
            if answer not in candidates:
                raise ValueError(f"{_entry(path, k)}: field 'answer' {answer!r} is not one of its candidates {candidates}")
            start, end = (_number(e, "start", path, k), _number(e, "end", path, k)) if task.bound else (None, None)
            items.append(EvalItem(
                id=f"{stem}_{k}", video=os.path.abspath(folder / _text(e, "video", path, k)),
                question=_text(e, "question", path, k), options=candidates, answer=candidates.index(answer),
                category=name, start=start, end=end, frame_fps=MVBENCH_FRAME_FPS if task.kind == "frame" else None,
                extra={"task": stem}))
    return items


def _strip_letter(option: str, k: int, path: Path, where) -> str:
    """``"B. a red star"`` -> ``"a red star"`` for the option at position k (its letter must be the k-th)."""
    m = re.match(r"\s*([A-Z])[.)]\s*(.*)$", option, re.DOTALL)
    if not m:
        return option.strip()
    if m.group(1) != chr(ord("A") + k):
        raise ValueError(f"{_entry(path, where)}: field 'options' item {k} is lettered {m.group(1)!r}: {option!r}")
    return m.group(2).strip()


def read_videomme(root: str | Path, annotation: str = "videomme/test-00000-of-00001.parquet") -> list[EvalItem]:
    """Video-MME: one row per question (the official parquet, or the same rows as ``.json``/``.jsonl``).

    Rows: ``video_id, videoID, duration, domain, sub_category, question_id, task_type, question, options
    ("A. ..."), answer (a letter)``. Videos are ``<root>/data/<videoID>.*`` (the release's layout; VideoLLaMA2's
    ``videos/`` is also tried), subtitles ``<root>/subtitle/<videoID>.srt`` (or ``subtitles/``) where present.
    Category is ``task_type``; ``extra`` keeps duration, domain, sub_category, video_id and videoID.

    Args:
        root: Video-MME folder.
        annotation: the rows file, relative to ``root``; reading ``.parquet`` needs pyarrow.
    """
    root = Path(root)
    path = root / annotation
    items = []
    for k, row in enumerate(_load_rows(path)):
        qid = _text(row, "question_id", path, k)
        where = f"{k} (question_id {qid})"
        ytid = _text(row, "videoID", path, where)
        options = [_strip_letter(str(o), i, path, where) for i, o in enumerate(_field(row, "options", path, where, (list,)))]
        answer = _letter(row["answer"], len(options), path, where, "answer") if row.get("answer") else -1
        subtitles = [root / folder / f"{ytid}.srt" for folder in ("subtitle", "subtitles")]
        items.append(EvalItem(
            id=qid, video=find_video([root / "data", root / "videos"], [ytid]), question=_text(row, "question", path, where),
            options=options, answer=answer, category=_text(row, "task_type", path, where),
            subtitles=next((os.path.abspath(s) for s in subtitles if s.is_file()), None),
            extra={"duration": _text(row, "duration", path, where), "domain": str(row.get("domain") or ""),
                   "sub_category": str(row.get("sub_category") or ""), "video_id": _text(row, "video_id", path, where),
                   "videoID": ytid}))
    return items


def read_egoschema(root: str | Path, subset: bool = True, annotation: str = "questions.json",
                   answers: str = "subset_answers.json") -> list[EvalItem]:
    """EgoSchema: ``questions.json`` ``[{q_uid, question, "option 0".."option 4"}]``, videos
    ``<root>/good_clips_git/<q_uid>.*``, answers ``{q_uid: index}`` for the public 500-question subset.

    Args:
        root: EgoSchema folder.
        subset: keep only the answered questions (offline scoring); False keeps all 5,031, answer -1 where hidden.
        annotation: questions file, relative to ``root``.
        answers: answers file, relative to ``root`` (required with ``subset``, optional without).
    """
    root = Path(root)
    path, answers_path = root / annotation, root / answers
    known = _load_json(answers_path) if subset or answers_path.is_file() else {}
    if not isinstance(known, dict):
        raise ValueError(f"{answers_path} must map q_uid to an option index, got a {type(known).__name__}")
    items = []
    for k, e in enumerate(_load_list(path)):
        q_uid = _text(e, "q_uid", path, k)
        where = f"{k} (q_uid {q_uid})"
        options = [_text(e, f"option {i}", path, where) for i in range(5)]
        if subset and q_uid not in known:
            continue
        answer = _index(known[q_uid], 5, answers_path, repr(q_uid), "answer") if q_uid in known else -1
        items.append(EvalItem(id=q_uid, video=find_video([root / "good_clips_git"], [q_uid]),
                              question=_text(e, "question", path, where), options=options, answer=answer,
                              extra={"q_uid": q_uid}))
    return items


def read_perception_test(root: str | Path, annotation: str = "mc_question_valid.json") -> list[EvalItem]:
    """Perception Test multiple choice: ``{video_id: {metadata: {video_id, ...}, mc_question: [{id, question,
    options (3), answer_id (validation only), area, reasoning, tag}]}}``, videos ``<root>/videos/<video_id>.*``.

    Item ids are ``<video_id>_<question id>``; category is ``area``; answer -1 where ``answer_id`` is absent
    (the test split).
    """
    root = Path(root)
    path = root / annotation
    data = _load_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must map video ids to {{metadata, mc_question}}, got a {type(data).__name__}")
    items = []
    for key, value in data.items():
        video_id = _text(_field(value, "metadata", path, f"'{key}'", (dict,)), "video_id", path, f"'{key}' metadata")
        video = find_video([root / "videos"], [video_id])
        for j, q in enumerate(_field(value, "mc_question", path, f"'{key}'", (list,))):
            where = f"'{key}' mc_question {j}"
            qid = _text(q, "id", path, where)
            options = [str(o) for o in _field(q, "options", path, where, (list,))]
            answer = -1 if q.get("answer_id") is None else _index(q["answer_id"], len(options), path, where, "answer_id")
            area = str(q.get("area") or "")
            items.append(EvalItem(id=f"{video_id}_{qid}", video=video, question=_text(q, "question", path, where),
                                  options=options, answer=answer, category=area,
                                  extra={"video_id": video_id, "question_id": qid, "area": area,
                                         "reasoning": str(q.get("reasoning") or ""), "tag": q.get("tag") or []}))
    return items


def read_nextqa(root: str | Path, annotation: str = "MC/test.csv") -> list[EvalItem]:
    """NExT-QA multiple choice: rows ``video, question, a0..a4, answer (index), qid, type`` from the official CSV
    (``video,frame_count,width,height,question,answer,qid,type,a0,...,a4``) or lmms-eval's JSON/parquet.

    Videos are ``<root>/NExTVideo/<video>.*``, through the release's ``map_vid_vidorID.json`` (video ->
    ``<folder>/<video>``) when it is in ``root``, else flat in ``NExTVideo/`` or ``videos/``. Item ids are
    ``<video>_<qid>``; category is the type's class (Causal / Temporal / Descriptive), ``extra["type"]`` the raw type.
    """
    root = Path(root)
    path = root / annotation
    vidor = root / "map_vid_vidorID.json"
    mapping = _load_json(vidor) if vidor.is_file() else {}
    items = []
    for k, row in enumerate(_load_rows(path)):
        video = _text(row, "video", path, k)
        qid = str(row.get("qid", k))
        where = f"{k} (video {video}, qid {qid})"
        options = [_text(row, f"a{i}", path, where) for i in range(5)]
        kind = str(row.get("type") or "")
        stems = [str(mapping[video])] if video in mapping else [video]
        items.append(EvalItem(id=f"{video}_{qid}", video=find_video([root / "NExTVideo", root / "videos"], stems),
                              question=_text(row, "question", path, where), options=options,
                              answer=_index(_field(row, "answer", path, where, (int, str)), 5, path, where, "answer"),
                              category=NEXTQA_CLASSES.get(kind[:1], kind), extra={"type": kind, "qid": qid, "video": video}))
    return items


def _spans(value, path: Path, where: str) -> list[list[float]]:
    """``[[start, end], ...]`` seconds with start < end, or a ValueError naming the file and entry."""
    ok = isinstance(value, list) and all(
        isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v) and v[0] < v[1]
        for v in value)
    if not ok:
        raise ValueError(f"{path}, entry {where}: 'needle_times' must be a list of [start, end] seconds with start < end, "
                         f"got {value!r}")
    return [[float(a), float(b)] for a, b in value]


def read_vnbench(root: str | Path, annotation: str = "VNBench_qa.json") -> list[EvalItem]:
    """VNBench (VideoNIAH ``VNBench_qa.json``): ``video (relative to root), question, options, gt, type, try,
    question_id``; ``gt`` is the answer text or its index, or B-VLLM's ``gt_option`` letter replaces it.

    The 4 circular tries of an item share ``group`` = ``question_id`` without its ``_<try>``; category is ``type``.
    """
    root = Path(root)
    path = root / annotation
    items = []
    for k, e in enumerate(_load_list(path)):
        qid = _text(e, "question_id", path, k)
        where = f"{k} ({qid})"
        options = [str(o) for o in _field(e, "options", path, where, (list,))]
        if e.get("gt") is not None:
            gt = e["gt"]
            answer = options.index(gt) if isinstance(gt, str) and gt in options else _index(gt, len(options), path, where, "gt")
        else:
            answer = _letter(_text(e, "gt_option", path, where), len(options), path, where, "gt_option")
        tries = e.get("try")
        group = qid.rsplit("_", 1)[0] if tries is not None and qid.endswith(f"_{tries}") else qid
        extra = {"try": tries}
        if e.get("needle_times") is not None:  # the synthetic needle set's evidence spans (selection hit rate)
            extra["needle_times"] = _spans(e["needle_times"], path, where)
        items.append(EvalItem(id=qid, video=os.path.abspath(root / _text(e, "video", path, where)),
                              question=_text(e, "question", path, where), options=options, answer=answer,
                              category=_text(e, "type", path, where), group=group, extra=extra))
    return items


# ------------------------------------------------------------------------------------------------ open-ended

def _read_test_qa(root: Path, annotation: str, stems: Callable[[str], list[str]]) -> list[EvalItem]:
    """``test_qa.json`` ``[{video_id, question, id, answer, answer_type?}]`` with videos in ``<root>/videos``."""
    path = root / annotation
    entries = _load_list(path)
    raw = [_text(e, "id", path, k) for k, e in enumerate(entries)]
    items = []
    for k, (e, uid) in enumerate(zip(entries, _unique(raw))):
        where = f"{k} (id {raw[k]})"
        video_id = _text(e, "video_id", path, where)
        items.append(EvalItem(id=uid, video=find_video([root / "videos"], stems(video_id)),
                              question=_text(e, "question", path, where), options=[],
                              answer=_text(e, "answer", path, where), category=str(e.get("answer_type") or ""),
                              extra={"video_id": video_id, "raw_id": raw[k]}))
    return items


def read_msvd_qa(root: str | Path, annotation: str = "test_qa.json") -> list[EvalItem]:
    """MSVD-QA (LLaMA-VID / B-VLLM ``test_qa.json``), videos ``<root>/videos/<video_id>.*``; repeated ids get ``_k``."""
    return _read_test_qa(Path(root), annotation, lambda video_id: [video_id])


def read_msrvtt_qa(root: str | Path, annotation: str = "test_qa.json") -> list[EvalItem]:
    """MSRVTT-QA (``test_qa.json`` as MSVD-QA), videos ``<root>/videos/video<id>.*`` (or ``<id>.*``); ``video_id``
    may be ``7010`` or ``"video7010"``."""
    def stems(video_id: str) -> list[str]:
        number = video_id.removeprefix("video")
        return [f"video{number}", number]

    return _read_test_qa(Path(root), annotation, stems)


def read_activitynet_qa(root: str | Path, questions: str = "test_q.json", answers: str = "test_a.json") -> list[EvalItem]:
    """ActivityNet-QA as Video-ChatGPT ships it: ``test_q.json`` ``[{video_name, question, question_id}]`` and
    ``test_a.json`` ``[{answer, type, question_id}]`` zipped by position (their question ids must agree), videos
    ``<root>/all_test/v_<video_name>.*`` (or without ``v_``). Category is the answer type, numeric types named
    by :data:`ACTIVITYNET_TYPES`, others kept as given.
    """
    root = Path(root)
    q_path, a_path = root / questions, root / answers
    qs, ans = _load_list(q_path), _load_list(a_path)
    if len(qs) != len(ans):
        raise ValueError(f"{q_path} has {len(qs)} entries but {a_path} has {len(ans)}: the two are zipped by position")
    items = []
    for k, (q, a) in enumerate(zip(qs, ans)):
        qid, aid = _text(q, "question_id", q_path, k), _text(a, "question_id", a_path, k)
        if qid != aid:
            raise ValueError(f"{q_path} and {a_path} disagree at position {k}: question_id {qid!r} vs {aid!r} "
                             "(the files are zipped by position)")
        name = _text(q, "video_name", q_path, f"{k} ({qid})")
        kind = a.get("type")
        numeric = isinstance(kind, int) or (isinstance(kind, str) and kind.isdigit())
        items.append(EvalItem(id=qid, video=find_video([root / "all_test"], [f"v_{name}", name]),
                              question=_text(q, "question", q_path, f"{k} ({qid})"), options=[],
                              answer=_text(a, "answer", a_path, f"{k} ({qid})"),
                              category=ACTIVITYNET_TYPES.get(int(kind), str(kind)) if numeric else str(kind or ""),
                              extra={"video_name": name, "type": kind}))
    return items


READERS: dict[str, Callable[..., list[EvalItem]]] = {
    "mvbench": read_mvbench,
    "videomme": read_videomme,
    "egoschema": read_egoschema,
    "perception_test": read_perception_test,
    "nextqa": read_nextqa,
    "vnbench": read_vnbench,
    "msvd_qa": read_msvd_qa,
    "msrvtt_qa": read_msrvtt_qa,
    "activitynet_qa": read_activitynet_qa,
}
