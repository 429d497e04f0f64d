"""MSVD-QA: open-ended questions about short clips, in the ``test_qa.json`` of LLaMA-VID / B-VLLM."""

from __future__ import annotations

from pathlib import Path

from datamodules.benchmarks.base import OpenEndedBenchmark
from datamodules.benchmarks.items import EvalItem
from datamodules.benchmarks.judge import Judge
from datamodules.benchmarks.reading import find_video, load_list, require_text, unique_ids


class MSVDQA(OpenEndedBenchmark):
    """MSVD-QA (open-ended): ``<root>/<annotation>`` ``[{video_id, question, id, answer, answer_type?}]``, videos
    ``<video_root>/<video_id>.*``; repeated ids get ``_k``. Category is ``answer_type`` where given.

    Args:
        root: MSVD-QA folder.
        annotation: the question file, relative to ``root``.
        video_root: the videos' folder, relative to ``root`` or absolute (LLaMA-VID's and B-VLLM's ``videos``).
        short_answer: append lmms-eval's "Answer the question using a single word or phrase.".
        judge: the Video-ChatGPT judge (``url``, ``model``, ...); None: offline metrics only.
    """

    name = "msvd_qa"

    def __init__(self, root: str, annotation: str = "test_qa.json", video_root: str = "videos",
                 short_answer: bool = False, judge: Judge | None = None):
        super().__init__(root, short_answer, judge)
        self.annotation, self.video_root = annotation, video_root

    def video_stems(self, video_id: str) -> list[str]:
        """File names (without extension) tried for a ``video_id``, in order."""
        return [video_id]

    def read(self) -> list[EvalItem]:
        root = Path(self.root)
        path = root / self.annotation
        entries = load_list(path)
        raw = [require_text(e, "id", path, k) for k, e in enumerate(entries)]
        items = []
        for k, (e, uid) in enumerate(zip(entries, unique_ids(raw))):
            where = f"{k} (id {raw[k]})"
            video_id = require_text(e, "video_id", path, where)
            items.append(EvalItem(id=uid, video=find_video([self.video_folder()], self.video_stems(video_id)),
                                  question=require_text(e, "question", path, where), options=[],
                                  answer=require_text(e, "answer", path, where),
                                  category=str(e.get("answer_type") or ""),
                                  extra={"video_id": video_id, "raw_id": raw[k]}))
        return items
