"""Perception Test, multiple-choice video QA: the validation split scores locally, the test split (no answers)
writes the challenge server's submission file."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from datamodules.benchmarks.base import MultipleChoiceBenchmark
from datamodules.benchmarks.items import EvalItem
from datamodules.benchmarks.parsing import ParseRule, parse_videollama2
from datamodules.benchmarks.prompts import BEST_OPTION, bracket_options
from datamodules.benchmarks.reading import find_video, load_json, option_index, require, require_text

UNANSWERED = 2  # C: what VideoLLaMA2 / B-VLLM's inference_video_mcqa_perception_test_mcqa.py submits when unparsed


class PerceptionTest(MultipleChoiceBenchmark):
    """Perception Test multiple choice: ``{video_id: {metadata: {video_id, ...}, mc_question: [{id, question,
    options (3), answer_id (validation only), area, reasoning, tag}]}}``, videos ``<video_root>/<video_id>.*``.

    Item ids are ``<video_id>_<question id>``; category is ``area``; answer -1 where ``answer_id`` is absent (the
    test split, which writes ``perception_test_submission.json``: ``{video_id: [{id, answer_id, answer}]}``, ``id``
    as the annotation writes it, an int in the release). An item with no answer (unparsed without
    ``fallback_letter``, or its video unreadable) is submitted as option 2 (C), what the reference script submits for
    an unparsed answer: the server takes no blank, and such items are counted in the results (``unparsed``,
    ``errors``), not hidden in the file.

    Args:
        root: Perception Test folder.
        annotation: the questions file, relative to ``root`` (``mc_question_test.json`` for the submission).
        video_root: the videos' folder, relative to ``root`` or absolute (``videos``, where the release's
            ``valid_videos.zip`` / ``test_videos.zip`` unpack).
        parse_rule: answer parser (an import path); None: VideoLLaMA2's, the reference of the published numbers.
        fallback_letter: letter an unparsed answer gets (the reference scripts use "C"); None: it counts wrong.
    """

    name = "perception_test"
    reference_rule = staticmethod(parse_videollama2)

    def __init__(self, root: str, annotation: str = "mc_question_valid.json", video_root: str = "videos",
                 parse_rule: ParseRule | None = None, fallback_letter: str | None = None):
        super().__init__(root, parse_rule, fallback_letter)
        self.annotation, self.video_root = annotation, video_root

    def read(self) -> list[EvalItem]:
        root = Path(self.root)
        path = root / self.annotation
        data = load_json(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path} must map video ids to {{metadata, mc_question}}, got a {type(data).__name__}")
        items = []
        for key, value in data.items():
            metadata = require(value, "metadata", path, f"'{key}'", (dict,))
            video_id = require_text(metadata, "video_id", path, f"'{key}' metadata")
            video = find_video([self.video_folder()], [video_id])
            for j, q in enumerate(require(value, "mc_question", path, f"'{key}'", (list,))):
                where = f"'{key}' mc_question {j}"
                qid = require(q, "id", path, where, (str, int))  # kept as written: the submission echoes it
                options = [str(o) for o in require(q, "options", path, where, (list,))]
                hidden = q.get("answer_id") is None
                answer = -1 if hidden else option_index(q["answer_id"], len(options), path, where, "answer_id")
                area = str(q.get("area") or "")
                items.append(EvalItem(id=f"{video_id}_{qid}", video=video,
                                      question=require_text(q, "question", path, where), options=options,
                                      answer=answer, category=area,
                                      extra={"video_id": video_id, "question_id": qid, "area": area,
                                             "reasoning": str(q.get("reasoning") or ""), "tag": q.get("tag") or []}))
        return items

    def template(self, question: str, options: list[str]) -> str:
        """VideoLLaMA2 / B-VLLM ``inference_video_mcqa_perception_test_mcqa.py``."""
        return f"Question: {question}\nOptions:\n{bracket_options(options)}{BEST_OPTION}"

    def submission(self, records: list[dict], items: list[EvalItem]) -> tuple[str, str] | None:
        """The challenge server's JSON: ``{video_id: [{id, answer_id, answer}]}`` (2, C, where no answer)."""
        out: dict[str, list] = defaultdict(list)
        for r in records:
            it = items[r["index"]]
            pred = min(UNANSWERED, len(it.options) - 1) if r["pred"] is None else r["pred"]
            out[it.extra.get("video_id", "")].append({"id": it.extra.get("question_id", it.id), "answer_id": pred,
                                                       "answer": it.options[pred]})
        return "perception_test_submission.json", json.dumps(out, indent=1)
