"""Video-MME: short, medium and long videos, with or without their subtitles, scored as the official scorer does
(``eval_your_results.py``: per duration, domain and task type, accuracy over answered items)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from torch import Tensor

from datamodules.benchmarks.base import MultipleChoiceBenchmark
from datamodules.benchmarks.items import EvalItem
from datamodules.benchmarks.metrics import mean, mean_per
from datamodules.benchmarks.parsing import ParseRule, first_letter
from datamodules.benchmarks.prompts import BEST_ANSWER_IS, BEST_OPTION, SELECT_VIDEO, dot_options, with_subtitles
from datamodules.benchmarks.reading import entry_name, find_video, load_rows, option_letter, require, require_text
from datamodules.benchmarks.subtitles import read_srt, subtitles_at

SELECT_LETTER = " Respond with only the letter (A, B, C, or D) of the correct option."


def parse_videomme(text: str, options: list[str]) -> int | None:
    """The official Video-MME scorer (``extract_characters_regex`` of ``eval_your_results.py``).

    Kept: the first letter decides; no letter, unparsed. Fixed: the letter must stand alone (the reference's
    ``[ABCD]`` reads "Based" as B and "Correct" as C), the article "A" is no letter, and a letter past the options
    is unparsed. The reference's other two steps drop out: stripping "Best answer:", "Answer:" ... only kept its
    regex off their capitals, and its "over 10 words and no A-D" case returns what "no A-D" returns anyway.
    """
    return first_letter(text, len(options))


class VideoMME(MultipleChoiceBenchmark):
    """Video-MME: one row per question (the official parquet, or the same rows as ``.json``/``.jsonl``).

    Rows: ``video_id, videoID, duration, domain, sub_category, question_id, task_type, question, options
    ("A. ..."), answer (a letter)``. Videos are ``<root>/data/<videoID>.*`` (the release's layout; VideoLLaMA2's
    ``videos/`` is also tried), subtitles ``<root>/subtitle/<videoID>.srt`` (or ``subtitles/``) where present.
    Category is ``task_type``; ``extra`` keeps duration, domain, sub_category, video_id and videoID.

    Args:
        root: Video-MME folder.
        annotation: the rows file, relative to ``root``; reading ``.parquet`` needs pyarrow.
        subtitles: the with-subtitles variant: the subtitle line shown at each sampled frame goes into the prompt
            (VideoLLaMA2 ``inference_video_mcqa_videomme.py``; videos without an .srt get the plain prompt).
        parse_rule: answer parser (an import path); None: the official scorer's, :func:`parse_videomme`.
        fallback_letter: letter an unparsed answer gets (the reference scripts use "C"); None: it counts wrong.
    """

    name = "videomme"
    reference_rule = staticmethod(parse_videomme)

    def __init__(self, root: str, annotation: str = "videomme/test-00000-of-00001.parquet", subtitles: bool = False,
                 parse_rule: ParseRule | None = None, fallback_letter: str | None = None):
        super().__init__(root, parse_rule, fallback_letter)
        self.annotation, self.subtitles = annotation, subtitles

    def read(self) -> list[EvalItem]:
        root = Path(self.root)
        path = root / self.annotation
        items = []
        for k, row in enumerate(load_rows(path)):
            qid = require_text(row, "question_id", path, k)
            where = f"{k} (question_id {qid})"
            ytid = require_text(row, "videoID", path, where)
            options = [_strip_letter(str(o), i, path, where)
                       for i, o in enumerate(require(row, "options", path, where, (list,)))]
            answer = option_letter(row["answer"], len(options), path, where, "answer") if row.get("answer") else -1
            subtitles = [root / folder / f"{ytid}.srt" for folder in ("subtitle", "subtitles")]
            items.append(EvalItem(
                id=qid, video=find_video([root / "data", root / "videos"], [ytid]),
                question=require_text(row, "question", path, where), options=options, answer=answer,
                category=require_text(row, "task_type", path, where),
                subtitles=next((os.path.abspath(s) for s in subtitles if s.is_file()), None),
                extra={"duration": require_text(row, "duration", path, where), "domain": str(row.get("domain") or ""),
                       "sub_category": str(row.get("sub_category") or ""),
                       "video_id": require_text(row, "video_id", path, where), "videoID": ytid}))
        return items

    def template(self, question: str, options: list[str]) -> str:
        """Without subtitles (the subtitled variant prepends them, :meth:`prompt`). VideoLLaMA2 / B-VLLM
        ``inference_video_mcqa_videomme.py``; the options are the annotation's ``A. ...`` lines."""
        return f"{SELECT_VIDEO}{SELECT_LETTER}\n{question}\n{dot_options(options)}{BEST_OPTION}{BEST_ANSWER_IS}"

    def frame_subtitles(self, item: EvalItem, times: Tensor) -> list[str] | None:
        if not self.subtitles or not item.subtitles:
            return None
        return subtitles_at(read_srt(item.subtitles), times.tolist())

    def prompt(self, item: EvalItem, subtitles: list[str] | None = None) -> str:
        """The template, after the subtitle lines shown at the sampled frames when ``subtitles`` is given
        (:func:`~datamodules.benchmarks.prompts.with_subtitles`; ``[]`` still gives the header)."""
        prompt = super().prompt(item)
        return prompt if subtitles is None else with_subtitles(prompt, subtitles)

    def protocol(self, mode: str) -> dict:
        return {**super().protocol(mode), "subtitles": self.subtitles}

    def accuracy(self, correct: Tensor, parsed: Tensor, known: Tensor, items: list[EvalItem]) -> dict:
        """Also the official scorer's views: per duration and domain, and accuracy over the answered items."""
        out = super().accuracy(correct, parsed, known, items)
        for key in ("duration", "domain"):
            out[f"per_{key}"] = mean_per(correct, known, [it.extra.get(key, "") for it in items])
        answered = known & parsed
        out["accuracy_answered"] = mean(correct[answered]) if answered.any() else 0.0
        return out


def _strip_letter(option: str, k: int, path: Path, where) -> str:
    """``"B. a red star"`` -> ``"a red star"`` for the option at position k (its letter must be the k-th)."""
    m = re.match(r"\s*([A-Z])[.)]\s*(.*)$", option, re.DOTALL)
    if not m:
        return option.strip()
    if m.group(1) != chr(ord("A") + k):
        raise ValueError(f"{entry_name(path, where)}: field 'options' item {k} is lettered {m.group(1)!r}: {option!r}")
    return m.group(2).strip()
