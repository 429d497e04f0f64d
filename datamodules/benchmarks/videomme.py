"""Video-MME: short, medium and long videos, with or without their subtitles, scored as the official scorer does
(``eval_your_results.py``: accuracy over the answered items, per duration, domain, sub-category and task type) and
over every item."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import Tensor

from datamodules.benchmarks.base import MultipleChoiceBenchmark
from datamodules.benchmarks.items import EvalItem
from datamodules.benchmarks.metrics import mean
from datamodules.benchmarks.parsing import ParseRule, first_letter
from datamodules.benchmarks.prompts import BEST_ANSWER_IS, BEST_OPTION, SELECT_VIDEO, dot_options, with_subtitles
from datamodules.benchmarks.reading import entry_name, find_video, load_rows, option_letter, require, require_text
from datamodules.benchmarks.subtitles import read_srt, subtitles_at

SELECT_LETTER = " Respond with only the letter (A, B, C, or D) of the correct option."
VIDEO_ROOT = "data"  # the release's video folder
VIDEOLLAMA2_VIDEO_ROOT = "videos"  # VideoLLaMA2's, read when the release's is absent
VIEWS = {"duration": "per_duration", "domain": "per_domain", "sub_category": "per_sub_category"}


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
    ("A. ..."), answer (a letter)``. Videos are ``<video_root>/<videoID>.*``, subtitles
    ``<root>/subtitle/<videoID>.srt`` (or ``subtitles/``) where present. Category is ``task_type``; ``extra`` keeps
    duration, domain, sub_category, video_id and videoID.

    Results, in two named conventions:

    - ``official``: the official scorer's (``eval_your_results.py``): accuracy over the *answered* items, overall
      and per duration, domain, sub-category and task type (a group with none answered: 0.0, as there), and
      ``answered``. An item is answered when it has an answer letter: a parsed one, the ``fallback_letter`` (the
      reference dump writes it, and the scorer reads it back), or the likelihood mode's option; an item whose
      video could not be read has none (the scorer's ``--skip_missing``).
    - ``all_items``: the same views over every item, an unanswered one counting wrong.

    Top level, as for every benchmark: ``accuracy`` and ``per_category`` (task type) are ``all_items``'; so is
    ``per_duration``; ``accuracy_answered`` is ``official.accuracy``.

    Args:
        root: Video-MME folder.
        annotation: the rows file, relative to ``root``; reading ``.parquet`` needs pyarrow.
        video_root: the videos' folder, relative to ``root`` or absolute (the release's ``data``; with the default
            and no ``<root>/data``, VideoLLaMA2's ``<root>/videos`` is read).
        subtitles: the with-subtitles variant (VideoLLaMA2 ``inference_video_mcqa_videomme.py``): the prompt starts
            with "This video's subtitles are listed below:" and the subtitle line shown at each sampled frame (one
            line per frame, repeats kept, frames without one skipped); a video without an .srt gets the header
            and no lines, as there.
        parse_rule: answer parser (an import path); None: the official scorer's, :func:`parse_videomme`.
        fallback_letter: letter an unparsed answer gets (the reference scripts use "C"); None: it counts wrong
            (and, for ``official``, unanswered).
    """

    name = "videomme"
    reference_rule = staticmethod(parse_videomme)

    def __init__(self, root: str, annotation: str = "videomme/test-00000-of-00001.parquet",
                 video_root: str = VIDEO_ROOT, subtitles: bool = False, parse_rule: ParseRule | None = None,
                 fallback_letter: str | None = None):
        super().__init__(root, parse_rule, fallback_letter)
        self.annotation, self.video_root, self.subtitles = annotation, video_root, subtitles

    def video_folder(self) -> Path:
        """``<root>/<video_root>`` (``video_root`` itself when absolute); VideoLLaMA2's ``videos/`` in place of the
        default ``data/`` when only it exists."""
        root = Path(self.root)
        folder = root / self.video_root
        fallback = root / VIDEOLLAMA2_VIDEO_ROOT
        if self.video_root == VIDEO_ROOT and not folder.is_dir() and fallback.is_dir():
            return fallback
        return folder

    def read(self) -> list[EvalItem]:
        root = Path(self.root)
        path = root / self.annotation
        videos = self.video_folder()
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
                id=qid, video=find_video([videos], [ytid]),
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
        """With ``subtitles``: the lines shown at the sampled frames (``[]`` for a video without an .srt, whose
        prompt still gets the header); None without."""
        if not self.subtitles:
            return None
        return subtitles_at(read_srt(item.subtitles), times.tolist()) if item.subtitles else []

    def prompt(self, item: EvalItem, subtitles: list[str] | None = None) -> str:
        """The template, after the subtitle lines shown at the sampled frames when ``subtitles`` is given
        (:func:`~datamodules.benchmarks.prompts.with_subtitles`; ``[]`` still gives the header)."""
        prompt = super().prompt(item)
        return prompt if subtitles is None else with_subtitles(prompt, subtitles)

    def describe_prompt(self) -> str:
        """The template with placeholders, after the subtitle header and ``{subtitles}`` with ``subtitles``."""
        plain = super().describe_prompt()
        return with_subtitles(plain, ["{subtitles}"]) if self.subtitles else plain

    def protocol(self, mode: str) -> dict:
        out = {**super().protocol(mode), "subtitles": self.subtitles}
        if self.subtitles and mode == "likelihood":
            out["prompt"] = with_subtitles(out["prompt"], ["{subtitles}"])
        return out

    def aggregate(self, states: dict[str, Tensor], records: list[dict], items: list[EvalItem],
                  out_dir: str | Path | None = None) -> dict:
        """Accuracy in the official scorer's convention (over answered items) and over every item (class docstring);
        which items are answered comes from the records (their answer ``letter``), as the states do not say."""
        out = super().aggregate(states, records, items, out_dir)
        if "accuracy" not in out:  # no answer known
            return out
        correct = states["correct"].cpu() > 0
        known = torch.tensor([it.answer >= 0 for it in items])
        answered = torch.zeros(len(items), dtype=torch.bool)
        for r in records:
            if 0 <= r["index"] < len(items) and r.get("error") is None and r.get("letter") is not None:
                answered[r["index"]] = True
        official = {"accuracy": mean(correct[known & answered]), "answered": int((known & answered).sum()),
                    **self._views(correct, known & answered, known, items)}
        all_items = {"accuracy": mean(correct[known]), "items": int(known.sum()),
                     **self._views(correct, known, known, items)}
        for key in ("accuracy", "per_category"):
            out.pop(key, None)
        return {**out, "official": official, "all_items": all_items, "accuracy": all_items["accuracy"],
                "per_category": all_items["per_task_type"], "per_duration": all_items["per_duration"],
                "accuracy_answered": official["accuracy"]}

    @staticmethod
    def _views(correct: Tensor, counted: Tensor, known: Tensor, items: list[EvalItem]) -> dict[str, dict]:
        """Accuracy over the ``counted`` items per duration, domain, sub-category and task type; every group of the
        ``known`` items is listed, 0.0 where none is counted (the official scorer's convention)."""
        keys = {view: [it.extra.get(field, "") for it in items] for field, view in VIEWS.items()}
        keys["per_task_type"] = [it.category for it in items]
        out = {}
        for view, values in keys.items():
            groups = sorted({v for v, k in zip(values, known.tolist()) if k})
            out[view] = {g: mean(correct[counted & torch.tensor([v == g for v in values])]) for g in groups}
        return out


def _strip_letter(option: str, k: int, path: Path, where) -> str:
    """``"B. a red star"`` -> ``"a red star"`` for the option at position k (its letter must be the k-th)."""
    m = re.match(r"\s*([A-Z])[.)]\s*(.*)$", option, re.DOTALL)
    if not m:
        return option.strip()
    if m.group(1) != chr(ord("A") + k):
        raise ValueError(f"{entry_name(path, where)}: field 'options' item {k} is lettered {m.group(1)!r}: {option!r}")
    return m.group(2).strip()
