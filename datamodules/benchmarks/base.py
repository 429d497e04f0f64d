"""A benchmark: its items, its reference prompt, how one answer is scored and how the scores add up.

Each benchmark is one module holding one subclass of :class:`MultipleChoiceBenchmark` or
:class:`OpenEndedBenchmark` (``mvbench.py``, ``vnbench.py``, ...), the way lmms-eval keeps a task's reader,
prompt, processing and aggregation together: its typed options (the constructor), its reader (``read``: the
official annotation files -> :class:`~datamodules.benchmarks.items.EvalItem` s), its reference prompt
(``template``), its parse rule (``reference_rule``), the views its paper reports beyond accuracy (``accuracy``)
and its submission file (``submission``). :class:`~datamodules.benchmarks.datamodule.BenchmarkDataModule` takes
any of them by ``class_path``; :class:`~datamodules.benchmarks.evaluator.Evaluator` does what all share (metric
states, counts, errors, the selection hit rate). Adding a benchmark is one module and one short YAML
(``tests/test_new_benchmark.py`` writes one: a reader over a JSON file and a prompt template).
"""

from __future__ import annotations

import dataclasses
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from datamodules.benchmarks.items import EvalItem
from datamodules.benchmarks.judge import Judge
from datamodules.benchmarks.metrics import mean, mean_per
from datamodules.benchmarks.openended import contains, exact_match, token_f1
from datamodules.benchmarks.parsing import ParseRule, parse_choice, parse_default, rule_name
from datamodules.benchmarks.prompts import SHORT_ANSWER, letters


class Benchmark(ABC):
    """One benchmark: subclass :class:`MultipleChoiceBenchmark` or :class:`OpenEndedBenchmark`, not this.

    Args:
        root: the benchmark's folder (annotation files and media, laid out as the benchmark ships them).
    """

    name: ClassVar[str]
    """The benchmark's name in output files and metric keys (``<name>_results.json``, ``test/<name>/accuracy``)."""
    multiple_choice: ClassVar[bool]
    values: ClassVar[tuple[str, ...]] = ()
    """Per-item values summed in the metric states besides correct/parsed/error (the open-ended metrics)."""

    def __init__(self, root: str):
        self.root = root

    def media_roots(self) -> list[str]:
        """The folders an item's video, frame folder and subtitles must lie in, symlinks resolved: ``root``, and
        the benchmark's video folder (its ``video_root`` option, relative to ``root`` or absolute) where that lies
        outside ``root``. The data module refuses media elsewhere unless ``--data.allow_outside_root``."""
        video_root = getattr(self, "video_root", None)
        if video_root is None:
            return [self.root]
        videos = os.path.normpath(os.path.join(self.root, video_root))
        return [self.root] + ([videos] if os.path.relpath(videos, self.root).startswith("..") else [])

    def video_folder(self) -> Path:
        """``root / video_root``: where the benchmark's videos are looked for."""
        return Path(self.root) / self.video_root

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    @abstractmethod
    def read(self) -> list[EvalItem]:
        """The benchmark's items, from its annotation files under ``root``, in file order."""

    @abstractmethod
    def template(self, question: str, options: list[str]) -> str:
        """The reference prompt of one question: the user-turn text after the ``<video>\\n`` placeholder."""

    # ------------------------------------------------------------------ prompts

    def prompt(self, item: EvalItem, subtitles: list[str] | None = None) -> str:
        """The generation prompt of ``item``; ``subtitles`` (from :meth:`frame_subtitles`) only where the benchmark
        shows them (Video-MME)."""
        if self.multiple_choice != bool(item.options):
            kind = "multiple-choice" if self.multiple_choice else "open-ended"
            raise ValueError(f"item {item.id!r} has {len(item.options)} options but {self.name} is {kind}")
        if subtitles is not None:
            raise ValueError(f"subtitles are a Video-MME variant; {self.name} has none")
        return self.template(item.question, item.options)

    def frame_subtitles(self, item: EvalItem, times: Tensor) -> list[str] | None:
        """The subtitle lines shown at the sampled frames (seconds), for the prompt; None: none are shown."""
        return None

    def describe_prompt(self) -> str:
        """The template with placeholders, for the results file: ``Question: {question}\\nOptions:\\n(A) {option A}
        \\n(B) {option B}\\n...``."""
        return self.template("{question}", ["{option A}", "{option B}"] if self.multiple_choice else [])

    def protocol(self, mode: str) -> dict:
        """How the answers were obtained (prompt, parse rule, variants), written with the results."""
        return {"prompt": self.describe_prompt() if mode == "generate" else "{question}", "parse_rule": None,
                "fallback_letter": None, "subtitles": False, "short_answer": False}

    # ------------------------------------------------------------------ scoring

    @abstractmethod
    def score(self, item: EvalItem, output, mode: str, error: str | None) -> dict:
        """The record fields of one answer: ``output`` is the generated text, or the option scores ``(K,)`` in
        likelihood mode; ``error`` says why the item's video gave no frames (None when it did)."""

    @abstractmethod
    def aggregate(self, states: dict[str, Tensor], records: list[dict], items: list[EvalItem],
                  out_dir: str | Path | None = None) -> dict:
        """The benchmark's numbers from the synced metric states (and the gathered records where the states do
        not suffice, e.g. for a judge). ``out_dir``: the run's folder."""

    def submission(self, records: list[dict], items: list[EvalItem]) -> tuple[str, str] | None:
        """``(file name, text)`` of the benchmark's submission file for items whose answers are hidden; None when
        the benchmark has no server to submit to."""
        return None

    @property
    def server_scored(self) -> bool:
        """Whether this set is scored by the benchmark's server (EgoSchema's full set), so that its submission file
        is written even when every answer happens to be known locally."""
        return False


class MultipleChoiceBenchmark(Benchmark):
    """A multiple-choice benchmark: answers are an option, parsed from the generation (``mode="generate"``) or the
    option of highest likelihood (``mode="likelihood"``).

    Accuracy overall and per category over the items with a known answer (none known: only the submission file);
    unparsed answers are counted and count as wrong unless ``fallback_letter`` is set.

    Args:
        root: the benchmark's folder.
        parse_rule: answer parser ``(text, options) -> index | None``, as an import path
            (``datamodules.benchmarks.parsing.parse_default``); None: the benchmark's ``reference_rule``.
        fallback_letter: letter an unparsed generated answer gets (the reference scripts use "C"; lower case is read
            as upper); None: it counts wrong. As in the reference scripts, an item with fewer options than the
            letter's position (a 2-option MVBench item and "C") gets an answer that names none of them: counted as
            answered, and wrong. Records say ``fallback: true``. A letter past every item's options is refused
            before the model loads.
    """

    multiple_choice = True
    reference_rule: ClassVar[ParseRule] = staticmethod(parse_default)
    """The rule of the official scorer behind the benchmark's published numbers."""

    def __init__(self, root: str, parse_rule: ParseRule | None = None, fallback_letter: str | None = None):
        super().__init__(root)
        self.parse_rule, self.fallback_letter = parse_rule, check_fallback_letter(fallback_letter)

    def check_items(self, items: list[EvalItem]) -> None:
        """Refuse options that cannot apply to ``items`` (before any model loads): a fallback letter that names no
        option of any item would silently score every unparsed answer wrong."""
        if self.fallback_letter is None or not items:
            return
        most = max(len(it.options) for it in items)
        if ord(self.fallback_letter) - ord("A") >= most:
            raise ValueError(f"--data.benchmark.fallback_letter {self.fallback_letter!r} names no option of any "
                             f"{self.name} item (they have at most {most}: {letters(most)[-1]} is the last letter)")

    def parse(self, text: str, options: list[str]) -> int | None:
        """The option a generated answer names (``parse_rule``, else the reference rule); None when unparsed."""
        return parse_choice(text, options, self.parse_rule or self.reference_rule)

    def protocol(self, mode: str) -> dict:
        rule = rule_name(self.parse_rule or self.reference_rule) if mode == "generate" else None
        return {**super().protocol(mode), "parse_rule": rule, "fallback_letter": self.fallback_letter}

    def score(self, item: EvalItem, output, mode: str, error: str | None) -> dict:
        record = {}
        if mode == "likelihood":
            scores = output[: len(item.options)].float()
            pred, parsed, text = int(scores.argmax()), True, None
            record["scores"] = [round(float(s), 5) for s in scores]
        else:
            text = output
            pred = self.parse(output, item.options)
            parsed = pred is not None
        fallback = mode == "generate" and not parsed and self.fallback_letter is not None and error is None
        if fallback:  # the reference scripts' fallback; past this item's options it names none and counts wrong
            k = ord(self.fallback_letter) - ord("A")
            pred = k if k < len(item.options) else None
        if error is not None:  # no frames were seen: the item counts as wrong whatever the text says
            pred, parsed = None, False
        letter = self.fallback_letter if fallback else None if pred is None else letters(len(item.options))[pred]
        record.update(output=text, parsed=parsed, fallback=fallback, pred=pred, letter=letter, answer=item.answer,
                      correct=pred is not None and item.answer >= 0 and pred == item.answer)
        return record

    def aggregate(self, states: dict[str, Tensor], records: list[dict], items: list[EvalItem],
                  out_dir: str | Path | None = None) -> dict:
        correct = states["correct"].cpu() > 0
        parsed = states["parsed"].cpu() > 0
        errors = states["error"].cpu() > 0
        seen = states["seen"].cpu() > 0
        known = torch.tensor([it.answer >= 0 for it in items]) & seen  # scored items with a public answer
        chance = sum(1 / len(it.options) for it in items) / len(items)  # a uniform guess per item
        out = {"scored": int(known.sum()), "chance": chance, "unparsed": int((~parsed & ~errors & seen).sum())}
        if not known.any():  # answers are hidden (EgoSchema full set, Perception Test test split): submission only
            return out
        return {**out, **self.accuracy(correct, parsed, known, items)}

    def accuracy(self, correct: Tensor, parsed: Tensor, known: Tensor, items: list[EvalItem]) -> dict:
        """Accuracy overall and per category over the ``known`` items (bool ``(N,)`` each); a benchmark adds the
        views its paper reports (per task mean, per duration, circular accuracy) by extending this."""
        out = {"accuracy": mean(correct[known])}
        categories = [it.category for it in items]
        if any(categories):  # a benchmark without categories reports none (no {"": ...}, no "per_category/" tag)
            out["per_category"] = mean_per(correct, known, categories)
        return out


class OpenEndedBenchmark(Benchmark):
    """An open-ended benchmark (MSVD-QA, MSRVTT-QA, ActivityNet-QA): the raw question, as in VideoLLaMA2, B-VLLM
    and LLaMA-VID (``inference_video_oqa_*.py``; their "short answer" suffix is commented out).

    Offline: normalised exact match, token F1 and answer-contained (:mod:`~datamodules.benchmarks.openended`),
    overall and per answer type. With a ``judge``, the Video-ChatGPT judge's accuracy and score, the numbers the
    papers publish (:mod:`~datamodules.benchmarks.judge`).

    Args:
        root: the benchmark's folder.
        short_answer: append lmms-eval's "Answer the question using a single word or phrase." (lmms-eval also
            capitalises the question and adds "?"; this does not).
        judge: an OpenAI-compatible judge endpoint (``url``, ``model``, ...); its cache defaults to
            ``judge_cache.jsonl`` in the run's folder. None: offline metrics only.
    """

    multiple_choice = False
    values = ("exact_match", "token_f1", "contains")

    def __init__(self, root: str, short_answer: bool = False, judge: Judge | None = None):
        super().__init__(root)
        self.short_answer, self.judge = short_answer, judge

    def template(self, question: str, options: list[str]) -> str:
        return question

    def prompt(self, item: EvalItem, subtitles: list[str] | None = None) -> str:
        prompt = super().prompt(item, subtitles)
        return prompt + SHORT_ANSWER if self.short_answer else prompt

    def protocol(self, mode: str) -> dict:
        return {**super().protocol(mode), "short_answer": self.short_answer}

    def score(self, item: EvalItem, output, mode: str, error: str | None) -> dict:
        pred = output.strip()
        metrics = (exact_match, token_f1, contains)  # in the order of `values`
        return {"output": output, "prediction": pred, "answer": item.answer, **{
            name: float(fn(pred, item.answer)) if error is None else 0.0 for name, fn in zip(self.values, metrics)}}

    def aggregate(self, states: dict[str, Tensor], records: list[dict], items: list[EvalItem],
                  out_dir: str | Path | None = None) -> dict:
        values = states["values"].cpu()
        known = torch.tensor([it.answer != "" for it in items])
        out = {"scored": int(known.sum())}
        categories = [it.category for it in items]
        for j, name in enumerate(self.values):
            out[name] = mean(values[known, j])
            if any(categories):
                out[f"{name}_per_category"] = mean_per(values[:, j], known, categories)
        if self.judge is not None:
            out.update(self.judged(records, items, out_dir))
        return out

    def judged(self, records: list[dict], items: list[EvalItem], out_dir: str | Path | None) -> dict:
        """Ask the judge about every answer (in item order; a verdict cached for the same judge model, prompt,
        question, answer and prediction is not asked again) and add its verdict to each record. The results name the
        judge model and prompt version (``judge_model``, ``judge_prompt``)."""
        from datamodules.benchmarks.judge import PROMPT_VERSION, aggregate

        cache = self.judge.cache
        if cache is None and out_dir is not None:
            cache = Path(out_dir) / "judge_cache.jsonl"
        judge = dataclasses.replace(self.judge, cache=cache)  # fresh counters, and the run's cache
        verdicts = []
        for r in sorted(records, key=lambda r: r["index"]):
            item = items[r["index"]]
            verdict = judge.judge(item.id, item.question, item.answer, r["prediction"]) if r["error"] is None else None
            r["judge"] = verdict
            verdicts.append(verdict)
        return {**aggregate(verdicts), "judge_model": judge.model, "judge_prompt": PROMPT_VERSION,
                "judge_asked": judge.asked, "judge_cached": judge.cached}


def check_fallback_letter(letter: str | None) -> str | None:
    """``--data.benchmark.fallback_letter`` as an upper-case letter (``"c"`` -> ``"C"``), or a ValueError naming the
    flag; None stays None."""
    if letter is None:
        return None
    if not (isinstance(letter, str) and len(letter.strip()) == 1 and "A" <= letter.strip().upper() <= "Z"):
        raise ValueError(f"--data.benchmark.fallback_letter must be one letter A-Z (the reference scripts use C), "
                         f"got {letter!r}")
    return letter.strip().upper()
