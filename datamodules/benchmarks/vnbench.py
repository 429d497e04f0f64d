"""VNBench (VideoNIAH): needle questions about a video, each asked 4 times with the options rotated, scored by the
circular rule (VideoNIAH ``evaluation/eval.py``); the synthetic needle set (``make-synthetic``) uses its format."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path

import torch
from torch import Tensor

from datamodules.benchmarks.base import MultipleChoiceBenchmark
from datamodules.benchmarks.items import EvalItem
from datamodules.benchmarks.metrics import mean
from datamodules.benchmarks.parsing import ParseRule, first_letter
from datamodules.benchmarks.prompts import LETTER_ONLY, bracket_options
from datamodules.benchmarks.reading import load_list, option_index, option_letter, require, require_text

log = logging.getLogger("lit_bvllm.data")

TRIES = 4
"""Tries per VNBench question (the options rotated); a group is scored only with all of them (``eval.py``)."""


def parse_vnbench(text: str, options: list[str]) -> int | None:
    """The official VNBench scorer (VideoNIAH ``evaluation/eval.py``).

    Kept: only the text before the first ``.`` counts. Fixed: the reference then checks ``'A' in pred``, then B,
    C, D, so "(B) A man walks" reads as A and "Based" as B; here the first standalone letter decides, the article
    "A" excluded, and a letter past the options is unparsed.
    """
    return first_letter(text.split(".")[0], len(options))


def parse_vnbench_official(text: str, options: list[str]) -> int | None:
    """The official VNBench rule exactly as ``evaluation/eval.py`` applies it: the text before the first ``.``,
    then the first of ``A``, ``B``, ``C``, ``D`` (in that order) it contains anywhere, so "(B) A red square" reads as
    A and "Based" as B. Offered as ``--data.benchmark.parse_rule
    datamodules.benchmarks.vnbench.parse_vnbench_official`` to reproduce numbers scored by that script; the results
    record which rule was used (``protocol.parse_rule``)."""
    head = text.split(".")[0]
    return next((k for k, letter in enumerate("ABCD"[: len(options)]) if letter in head), None)


class VNBench(MultipleChoiceBenchmark):
    """VNBench (and the synthetic needle set): 4-way circular scoring.

    Reads ``<root>/<annotation>`` (VideoNIAH ``VNBench_qa.json``): ``video (a file name under video_root), question,
    options, gt, type, try, question_id``; ``gt`` is the answer text or its index, or B-VLLM's ``gt_option`` letter
    replaces it. The 4 circular tries of an item share ``group`` = ``question_id`` without its ``_<try>``; category
    is ``type``. A group counts in the circular accuracy only when all :data:`TRIES` of its tries were scored, as
    ``eval.py`` requires; incomplete groups are counted (``incomplete_groups``) and left out.

    The synthetic sets' entries may also carry ``needle_times`` (the evidence spans, for the selection hit rate)
    and ``every_frame: true`` (a type every frame answers, ``bg_every1``: whether frames reach the LLM at all).
    Such a type is no VNBench category: it has its circular accuracy in ``circular_per_category`` but stays out of
    ``circular_accuracy`` and ``accuracy`` (the needle types only, as the real VNBench's) and out of the selection
    hit rate; ``every_frame_types`` names it. An annotation without the field scores as VNBench's own.

    Args:
        root: VNBench folder.
        annotation: the question file, relative to ``root``.
        video_root: the folder the annotation's ``video`` names are joined to, relative to ``root`` or absolute
            (VideoNIAH's ``--video_dir``; default: ``root`` itself, where its example script keeps them).
        parse_rule: answer parser (an import path); None: VNBench's own, :func:`parse_vnbench`, which reads "(B) A
            red square" as B; ``datamodules.benchmarks.vnbench.parse_vnbench_official`` applies ``eval.py``'s rule
            as it is (A there).
        fallback_letter: letter an unparsed answer gets (the reference scripts use "C"); None: it counts wrong.
    """

    name = "vnbench"
    reference_rule = staticmethod(parse_vnbench)

    def __init__(self, root: str, annotation: str = "VNBench_qa.json", video_root: str = ".",
                 parse_rule: ParseRule | None = None, fallback_letter: str | None = None):
        super().__init__(root, parse_rule, fallback_letter)
        self.annotation, self.video_root = annotation, video_root

    def read(self) -> list[EvalItem]:
        root = Path(self.root)
        path = root / self.annotation
        videos = self.video_folder()
        items = []
        for k, e in enumerate(load_list(path)):
            qid = require_text(e, "question_id", path, k)
            where = f"{k} ({qid})"
            options = [str(o) for o in require(e, "options", path, where, (list,))]
            if e.get("gt") is not None:
                gt = e["gt"]
                in_options = isinstance(gt, str) and gt in options
                answer = options.index(gt) if in_options else option_index(gt, len(options), path, where, "gt")
            else:
                answer = option_letter(require_text(e, "gt_option", path, where), len(options), path, where,
                                       "gt_option")
            tries = e.get("try")
            group = qid.rsplit("_", 1)[0] if tries is not None and qid.endswith(f"_{tries}") else qid
            extra = {"try": tries}
            # the synthetic needle sets' evidence spans: the selection hit rate, and the batches' frame_evidence
            if e.get("needle_times") is not None:
                extra["needle_times"] = _spans(e["needle_times"], path, where)
            if e.get("every_frame") is not None:  # a diagnostic type every frame answers: not in the overall number
                extra["every_frame"] = _flag(e["every_frame"], path, where)
            items.append(EvalItem(id=qid, video=os.path.abspath(videos / require_text(e, "video", path, where)),
                                  question=require_text(e, "question", path, where), options=options, answer=answer,
                                  category=require_text(e, "type", path, where), group=group, extra=extra))
        _check_every_frame(items, path)
        return items

    def template(self, question: str, options: list[str]) -> str:
        """B-VLLM ``inference_video_mcqa_vnbench.py``: bracketed options, no "Select the best answer" line and no
        full stop after the instruction (the official VideoNIAH prompt uses ``A. ...`` lines instead)."""
        return f"{question}\n{bracket_options(options)}{LETTER_ONLY}"

    def accuracy(self, correct: Tensor, parsed: Tensor, known: Tensor, items: list[EvalItem]) -> dict:
        """Also the circular accuracy (VNBench ``eval.py``): an item counts only if all of its tries are right;
        per type, and overall as the unweighted mean over types (None when no group is complete). Types marked
        ``every_frame`` are listed per type (and in ``every_frame_types``) but left out of ``circular_accuracy``
        and ``accuracy``."""
        out = super().accuracy(correct, parsed, known, items)
        every = sorted({it.category for it in items if it.extra.get("every_frame")})
        if every:
            needle = torch.tensor([not it.extra.get("every_frame") for it in items])
            out["accuracy"] = mean(correct[known & needle])
            out["every_frame_types"] = every
        groups: dict[tuple[str, str], list[bool]] = defaultdict(list)
        for it, ok, k in zip(items, correct.tolist(), known.tolist()):
            if k:
                groups[(it.category, it.group)].append(ok)
        per: dict[str, list[bool]] = defaultdict(list)
        incomplete = []
        for (cat, group), oks in groups.items():
            if len(oks) == TRIES:
                per[cat].append(all(oks))
            else:  # eval.py scores a group only with all of its tries: 2 right tries of 4 are not a right item
                incomplete.append(group)
        out["complete_groups"] = sum(len(v) for v in per.values())
        out["incomplete_groups"] = len(incomplete)
        if incomplete:
            log.warning("vnbench: %d question group(s) lack some of their %d tries and are left out of the circular "
                        "accuracy (first: %s)", len(incomplete), TRIES, incomplete[0])
        out["circular_per_category"] = {c: sum(v) / len(v) for c, v in sorted(per.items())}
        overall = [v for c, v in out["circular_per_category"].items() if c not in every]
        out["circular_accuracy"] = sum(overall) / len(overall) if overall else None
        return out


def _flag(value, path: Path, where: str) -> bool:
    """A JSON boolean, or a ValueError naming the file and entry."""
    if not isinstance(value, bool):
        raise ValueError(f"{path}, entry {where}: 'every_frame' must be true or false, got {value!r}")
    return value


def _check_every_frame(items: list[EvalItem], path: Path) -> None:
    """A type is every-frame in all of its entries or in none: a ValueError naming the file and type otherwise."""
    marks: dict[str, set[bool]] = defaultdict(set)
    for it in items:
        marks[it.category].add(bool(it.extra.get("every_frame")))
    mixed = sorted(c for c, m in marks.items() if len(m) > 1)
    if mixed:
        raise ValueError(f"{path}: type {mixed[0]!r} has 'every_frame': true in some entries and not in others; "
                         "mark all of its entries or none")


def _spans(value, path: Path, where: str) -> list[list[float]]:
    """``[[start, end], ...]`` seconds with start < end, or a ValueError naming the file and entry."""
    ok = isinstance(value, list) and all(
        isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v) and v[0] < v[1]
        for v in value)
    if not ok:
        raise ValueError(f"{path}, entry {where}: 'needle_times' must be a list of [start, end] seconds with "
                         f"start < end, got {value!r}")
    return [[float(a), float(b)] for a, b in value]
