"""ActivityNet-QA: open-ended questions about long activity videos, as Video-ChatGPT ships them."""

from __future__ import annotations

from pathlib import Path

from datamodules.benchmarks.base import OpenEndedBenchmark
from datamodules.benchmarks.items import EvalItem
from datamodules.benchmarks.judge import Judge
from datamodules.benchmarks.reading import find_video, load_list, require_text

# The dataset's numeric types (its own README: question types 0-2, answer types 3-8).
ACTIVITYNET_TYPES = {0: "motion", 1: "spatial", 2: "temporal", 3: "yes/no", 4: "color", 5: "object",
                     6: "location", 7: "number", 8: "other"}


class ActivityNetQA(OpenEndedBenchmark):
    """ActivityNet-QA as Video-ChatGPT ships it: ``test_q.json`` ``[{video_name, question, question_id}]`` and
    ``test_a.json`` ``[{answer, type, question_id}]`` zipped by position (their question ids must agree), videos
    ``<video_root>/v_<video_name>.*`` (or without ``v_``). Category is the answer type, numeric types named by
    :data:`ACTIVITYNET_TYPES`, others kept as given.

    Args:
        root: ActivityNet-QA folder.
        questions: the questions file, relative to ``root``.
        answers: the answers file, relative to ``root``.
        video_root: the videos' folder, relative to ``root`` or absolute (VideoLLaMA2's ``all_test``).
        short_answer: append lmms-eval's "Answer the question using a single word or phrase.".
        judge: the Video-ChatGPT judge (``url``, ``model``, ...); None: offline metrics only.
    """

    name = "activitynet_qa"

    def __init__(self, root: str, questions: str = "test_q.json", answers: str = "test_a.json",
                 video_root: str = "all_test", short_answer: bool = False, judge: Judge | None = None):
        super().__init__(root, short_answer, judge)
        self.questions, self.answers, self.video_root = questions, answers, video_root

    def read(self) -> list[EvalItem]:
        root = Path(self.root)
        q_path, a_path = root / self.questions, root / self.answers
        qs, ans = load_list(q_path), load_list(a_path)
        if len(qs) != len(ans):
            raise ValueError(f"{q_path} has {len(qs)} entries but {a_path} has {len(ans)}: the two are zipped by "
                             "position")
        items = []
        for k, (q, a) in enumerate(zip(qs, ans)):
            qid, aid = require_text(q, "question_id", q_path, k), require_text(a, "question_id", a_path, k)
            if qid != aid:
                raise ValueError(f"{q_path} and {a_path} disagree at position {k}: question_id {qid!r} vs {aid!r} "
                                 "(the files are zipped by position)")
            name = require_text(q, "video_name", q_path, f"{k} ({qid})")
            kind = a.get("type")
            numeric = isinstance(kind, int) or (isinstance(kind, str) and kind.isdigit())
            items.append(EvalItem(id=qid, video=find_video([self.video_folder()], [f"v_{name}", name]),
                                  question=require_text(q, "question", q_path, f"{k} ({qid})"), options=[],
                                  answer=require_text(a, "answer", a_path, f"{k} ({qid})"),
                                  category=ACTIVITYNET_TYPES.get(int(kind), str(kind)) if numeric else str(kind or ""),
                                  extra={"video_name": name, "type": kind}))
        return items
