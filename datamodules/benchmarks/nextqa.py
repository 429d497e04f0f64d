"""NExT-QA multiple choice (5-way): causal, temporal and descriptive questions about everyday videos."""

from __future__ import annotations

from pathlib import Path

from datamodules.benchmarks.base import MultipleChoiceBenchmark
from datamodules.benchmarks.items import EvalItem
from datamodules.benchmarks.parsing import ParseRule, parse_default
from datamodules.benchmarks.prompts import LETTER_ONLY, dot_options
from datamodules.benchmarks.reading import find_video, load_json, load_rows, option_index, require, require_text

NEXTQA_CLASSES = {"C": "Causal", "T": "Temporal", "D": "Descriptive"}  # by the first letter of CW, TN, DC, ...


class NExTQA(MultipleChoiceBenchmark):
    """NExT-QA multiple choice: rows ``video, question, a0..a4, answer (index), qid, type`` from the official CSV
    (``video,frame_count,width,height,question,answer,qid,type,a0,...,a4``) or lmms-eval's JSON/parquet.

    Videos are ``<video_root>/<video>.*``, through the release's ``map_vid_vidorID.json`` (video ->
    ``<folder>/<video>``) when it is in ``root``, else flat in ``video_root``. Item ids are
    ``<video>_<qid>``; category is the type's class (Causal / Temporal / Descriptive), ``extra["type"]`` the raw
    type.

    Args:
        root: NExT-QA folder.
        annotation: the rows file, relative to ``root`` (``MC/val.csv`` for the validation split).
        video_root: the videos' folder, relative to ``root`` or absolute (the release's ``NExTVideo``; lmms-eval
            keeps them flat in ``videos``).
        parse_rule: answer parser (an import path); None: this project's default rule, which covers lmms-eval's
            MMMU-style parser ((X) / "X " / "X." / option text).
        fallback_letter: letter an unparsed answer gets (the reference scripts use "C"); None: it counts wrong.
    """

    name = "nextqa"
    reference_rule = staticmethod(parse_default)

    def __init__(self, root: str, annotation: str = "MC/test.csv", video_root: str = "NExTVideo",
                 parse_rule: ParseRule | None = None, fallback_letter: str | None = None):
        super().__init__(root, parse_rule, fallback_letter)
        self.annotation, self.video_root = annotation, video_root

    def read(self) -> list[EvalItem]:
        root = Path(self.root)
        path = root / self.annotation
        vidor = root / "map_vid_vidorID.json"
        mapping = load_json(vidor) if vidor.is_file() else {}
        items = []
        for k, row in enumerate(load_rows(path)):
            video = require_text(row, "video", path, k)
            qid = str(row.get("qid", k))
            where = f"{k} (video {video}, qid {qid})"
            options = [require_text(row, f"a{i}", path, where) for i in range(5)]
            kind = str(row.get("type") or "")
            stems = [str(mapping[video])] if video in mapping else [video]
            answer = option_index(require(row, "answer", path, where, (int, str)), 5, path, where, "answer")
            items.append(EvalItem(id=f"{video}_{qid}", video=find_video([self.video_folder()], stems),
                                  question=require_text(row, "question", path, where), options=options,
                                  answer=answer, category=NEXTQA_CLASSES.get(kind[:1], kind),
                                  extra={"type": kind, "qid": qid, "video": video}))
        return items

    def template(self, question: str, options: list[str]) -> str:
        """Not in VideoLLaMA2, B-VLLM or LLaMA-VID: lmms-eval ``nextqa_mc`` (question, then ``A. ...`` lines) with
        lmms-eval's usual post-prompt, which ``nextqa_mc`` itself leaves empty."""
        return f"{question}\n{dot_options(options)}{LETTER_ONLY}."
