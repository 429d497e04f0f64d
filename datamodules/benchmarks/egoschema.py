"""EgoSchema: 5,031 long egocentric questions; 500 have public answers, the rest are scored by the server from
the submission file."""

from __future__ import annotations

from pathlib import Path

from datamodules.benchmarks.base import MultipleChoiceBenchmark
from datamodules.benchmarks.items import EvalItem
from datamodules.benchmarks.parsing import ParseRule, parse_videollama2
from datamodules.benchmarks.prompts import BEST_ANSWER_IS, BEST_OPTION, SELECT_VIDEO, bracket_options
from datamodules.benchmarks.reading import find_video, load_json, load_list, option_index, require_text

UNANSWERED = 2  # C: what VideoLLaMA2 / B-VLLM's inference_video_mcqa_egoschema.py submits for an unparsed answer


class EgoSchema(MultipleChoiceBenchmark):
    """EgoSchema: ``questions.json`` ``[{q_uid, question, "option 0".."option 4"}]``, videos
    ``<video_root>/<q_uid>.*``, answers ``{q_uid: index}`` for the public 500-question subset.
    ``subset=True`` scores the answered questions locally; ``False`` answers all of them, scores the ones with a
    public answer and writes ``egoschema_submission.csv`` for the server: ``q_uid,answer`` with the option index.
    An item with no answer (unparsed without ``fallback_letter``, or its video unreadable) is submitted as 2 (C),
    what the reference script submits for an unparsed answer: the server takes no blank, and such items are
    counted in the results (``unparsed``, ``errors``), not hidden in the file.

    Args:
        root: EgoSchema folder.
        subset: keep only the answered questions (offline scoring); False keeps all 5,031, answer -1 where hidden,
            and writes the submission file.
        annotation: questions file, relative to ``root``.
        answers: answers file, relative to ``root`` (required with ``subset``, optional without).
        video_root: the clips' folder, relative to ``root`` or absolute (the release's ``good_clips_git``).
        parse_rule: answer parser (an import path); None: VideoLLaMA2's, the reference of the published numbers.
        fallback_letter: letter an unparsed answer gets (the reference scripts use "C"); None: it counts wrong.
    """

    name = "egoschema"
    reference_rule = staticmethod(parse_videollama2)

    def __init__(self, root: str, subset: bool = True, annotation: str = "questions.json",
                 answers: str = "subset_answers.json", video_root: str = "good_clips_git",
                 parse_rule: ParseRule | None = None, fallback_letter: str | None = None):
        super().__init__(root, parse_rule, fallback_letter)
        self.subset, self.annotation, self.answers, self.video_root = subset, annotation, answers, video_root

    @property
    def server_scored(self) -> bool:
        """The full set (``subset=False``) goes to the server: its submission file is written even when every
        evaluated item has a public answer."""
        return not self.subset

    def read(self) -> list[EvalItem]:
        root = Path(self.root)
        path, answers_path = root / self.annotation, root / self.answers
        known = load_json(answers_path) if self.subset or answers_path.is_file() else {}
        if not isinstance(known, dict):
            raise ValueError(f"{answers_path} must map q_uid to an option index, got a {type(known).__name__}")
        items = []
        for k, e in enumerate(load_list(path)):
            q_uid = require_text(e, "q_uid", path, k)
            where = f"{k} (q_uid {q_uid})"
            options = [require_text(e, f"option {i}", path, where) for i in range(5)]
            if self.subset and q_uid not in known:
                continue
            answer = option_index(known[q_uid], 5, answers_path, repr(q_uid), "answer") if q_uid in known else -1
            items.append(EvalItem(id=q_uid, video=find_video([self.video_folder()], [q_uid]),
                                  question=require_text(e, "question", path, where), options=options, answer=answer,
                                  extra={"q_uid": q_uid}))
        return items

    def template(self, question: str, options: list[str]) -> str:
        """VideoLLaMA2 / B-VLLM ``inference_video_mcqa_egoschema.py`` (the version with the "Select the best answer"
        line and the "The best answer is: " primer)."""
        return f"{SELECT_VIDEO}\n{question}\nOptions:\n{bracket_options(options)}{BEST_OPTION}{BEST_ANSWER_IS}"

    def submission(self, records: list[dict], items: list[EvalItem]) -> tuple[str, str] | None:
        """The EgoSchema server's CSV: ``q_uid,answer`` with the predicted option index (2, C, where none)."""
        rows = [f"{items[r['index']].extra.get('q_uid', r['id'])},{UNANSWERED if r['pred'] is None else r['pred']}"
                for r in records]
        return "egoschema_submission.csv", "q_uid,answer\n" + "\n".join(rows) + "\n"
