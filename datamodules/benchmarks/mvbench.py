"""MVBench: 20 temporal tasks x 200 questions, read as VideoLLaMA2 reads them, prompted as B-VLLM prompts them,
reported per task and as the mean over tasks."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

from torch import Tensor

from datamodules.benchmarks.base import MultipleChoiceBenchmark
from datamodules.benchmarks.items import EvalItem
from datamodules.benchmarks.parsing import ParseRule, parse_videollama2
from datamodules.benchmarks.prompts import BEST_OPTION, bracket_options
from datamodules.benchmarks.reading import entry_name, load_list, require, require_seconds, require_text

log = logging.getLogger("lit_bvllm.data")


class MVBenchTask(NamedTuple):
    """One row of VideoLLaMA2's MVBench task table (``videollama2/eval/inference_video_mcqa_mvbench.py``)."""

    file: str  # annotation file in <root>/json/
    prefix: str  # video folder under the video root
    kind: str  # "video" (files) or "frame" (a folder of frames per entry)
    bound: bool  # entries carry start/end seconds that window the video


# VideoLLaMA2's table, verbatim: 20 tasks x 200 questions. Every prefix is the one that script joins to its
# --video-folder (eval/mvbench/video); pass `prefixes` to MVBench where a download is laid out otherwise.
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
    "Counterfactual Inference": MVBenchTask("counterfactual_inference.json", "clevrer/video_validation/", "video",
                                            False),
}
MVBENCH_FRAME_FPS = 3.0  # the TVQA frame folders of episodic reasoning

MVBENCH_PREAMBLE = (
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement of "
    "objects, and the action and pose of persons. Based on your observations, select the best option that "
    "accurately addresses the question.\n"
)


class MVBench(MultipleChoiceBenchmark):
    """MVBench as VideoLLaMA2 reads it: ``<root>/json/<task file>`` and videos under ``<video_root>/<prefix>``.

    Each task file is a list of ``{video, question, candidates, answer (a candidate's text), start?, end?}``; the
    bound tasks window the video with ``start``/``end`` seconds, episodic reasoning reads frame folders at 3 fps.
    Item ids are ``<task file stem>_<index>``; category is the task name. Reported per task and as the mean over
    tasks (``mean_over_tasks``, the papers' MVBench number).

    Args:
        root: MVBench folder holding ``json/``.
        tasks: task names (keys of :data:`MVBENCH_TASKS`) to read; None reads every task whose file exists.
        video_root: folder the task prefixes are relative to (default ``<root>/video``).
        prefixes: per-task prefix overrides, ``{"Action Sequence": "star/Charades_segment/"}``.
        parse_rule: answer parser (an import path); None: VideoLLaMA2's, the reference of the published numbers.
        fallback_letter: letter an unparsed answer gets (the reference scripts use "C"); None: it counts wrong.
    """

    name = "mvbench"
    reference_rule = staticmethod(parse_videollama2)

    def __init__(self, root: str, tasks: list[str] | None = None, video_root: str | None = None,
                 prefixes: dict[str, str] | None = None, parse_rule: ParseRule | None = None,
                 fallback_letter: str | None = None):
        super().__init__(root, parse_rule, fallback_letter)
        self.tasks, self.video_root, self.prefixes = tasks, video_root, prefixes

    def media_roots(self) -> list[str]:
        return [self.root] + ([self.video_root] if self.video_root is not None else [])

    def read(self) -> list[EvalItem]:
        root = Path(self.root)
        tasks, prefixes = self.tasks, self.prefixes or {}
        video_root = Path(self.video_root) if self.video_root is not None else root / "video"
        unknown = sorted(set(tasks or []) - set(MVBENCH_TASKS)) + sorted(set(prefixes) - set(MVBENCH_TASKS))
        if unknown:
            raise ValueError(f"unknown MVBench task(s) {unknown}; known: {sorted(MVBENCH_TASKS)}")
        if tasks is not None:
            names = list(tasks)
        else:
            names = [n for n, t in MVBENCH_TASKS.items() if (root / "json" / t.file).is_file()]
        if not names:
            raise FileNotFoundError(f"no MVBench task file in {root / 'json'} (expected e.g. action_sequence.json)")
        missing = [n for n in MVBENCH_TASKS if n not in names]
        if tasks is None and missing:
            log.warning("MVBench: %d of 20 tasks have no file in %s: %s", len(missing), root / "json",
                        ", ".join(missing))
        items = []
        for name in names:
            task = MVBENCH_TASKS[name]
            path = root / "json" / task.file
            folder = video_root / prefixes.get(name, task.prefix)
            stem = Path(task.file).stem
            for k, e in enumerate(load_list(path)):
                candidates = [str(c) for c in require(e, "candidates", path, k, (list,))]
                answer = require_text(e, "answer", path, k)
                if answer not in candidates:
                    raise ValueError(f"{entry_name(path, k)}: field 'answer' {answer!r} is not one of its candidates "
                                     f"{candidates}")
                if task.bound:
                    start, end = require_seconds(e, "start", path, k), require_seconds(e, "end", path, k)
                else:
                    start, end = None, None
                items.append(EvalItem(
                    id=f"{stem}_{k}", video=os.path.abspath(folder / require_text(e, "video", path, k)),
                    question=require_text(e, "question", path, k), options=candidates,
                    answer=candidates.index(answer), category=name, start=start, end=end,
                    frame_fps=MVBENCH_FRAME_FPS if task.kind == "frame" else None, extra={"task": stem}))
        return items

    def template(self, question: str, options: list[str]) -> str:
        """B-VLLM ``inference_video_mcqa_mvbench.py``: the VideoChat2 preamble in the user turn, then VideoLLaMA2's
        ``Question: / Options:`` block and instruction."""
        return f"{MVBENCH_PREAMBLE}Question: {question}\nOptions:\n{bracket_options(options)}{BEST_OPTION}"

    def accuracy(self, correct: Tensor, parsed: Tensor, known: Tensor, items: list[EvalItem]) -> dict:
        """Also the unweighted mean of the per-task accuracies, and which of the 20 tasks it is not over
        (``tasks_missing``: a partial run's mean is not the papers' MVBench number)."""
        out = super().accuracy(correct, parsed, known, items)
        tasks = out.get("per_category", {})
        out["mean_over_tasks"] = sum(tasks.values()) / len(tasks) if tasks else None
        out["tasks_evaluated"] = len(tasks)
        out["tasks_missing"] = [n for n in MVBENCH_TASKS if n not in tasks]
        if out["tasks_missing"]:
            log.warning("MVBench: mean_over_tasks is over %d of 20 tasks; missing: %s", out["tasks_evaluated"],
                        ", ".join(out["tasks_missing"]))
        return out
