"""The user-turn instruction of each benchmark: the text after the ``<video>\\n`` placeholder.

The chat template (system prompt, role headers, generation prompt) is applied elsewhere. The templates follow
the reference inference scripts of VideoLLaMA2 / B-VLLM (``videollama2/eval/inference_video_*.py``,
``bvlm/eval/inference_video_*.py``; summarised in ``reference/bvllm_official.md`` §4.1 and
``reference/video_llm_anchors.md`` §4), down to their spacing and missing full stops, so that numbers stay
comparable with the papers. Only NExT-QA, which those codebases do not evaluate, follows lmms-eval.

Results should record :data:`PROMPT_VERSION` and :func:`describe` of the benchmark, since the prompt alone moves
multiple-choice accuracy by points between papers.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing datamodules pulls in torch and Lightning; the builders only read two fields
    from datamodules.benchmarks.items import EvalItem

PROMPT_VERSION = "bvllm-v1"

MAX_OPTIONS = 24  # "A".."X", the letter range of the reference MVBench parser

MVBENCH_PREAMBLE = (
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement of "
    "objects, and the action and pose of persons. Based on your observations, select the best option that "
    "accurately addresses the question.\n"
)
SELECT_VIDEO = "Select the best answer to the following multiple-choice question based on the video."
SELECT_LETTER = " Respond with only the letter (A, B, C, or D) of the correct option."
LETTER_ONLY = "Answer with the option's letter from the given choices directly"
BEST_OPTION = LETTER_ONLY + " and only give the best option."
BEST_ANSWER_IS = " The best answer is: "
SUBTITLES = "This video's subtitles are listed below:\n{subtitles}\n"
SHORT_ANSWER = " Answer the question using a single word or phrase."


def letters(n: int) -> list[str]:
    """The option letters of an ``n``-way question: ``letters(4) == ["A", "B", "C", "D"]``.

    Args:
        n: number of options, 0 to :data:`MAX_OPTIONS`.
    """
    if not 0 <= n <= MAX_OPTIONS:
        raise ValueError(f"{n} options: the letters A..X cover at most {MAX_OPTIONS}")
    return [chr(ord("A") + k) for k in range(n)]


def bracket_options(options: list[str]) -> str:
    """``(A) first\\n(B) second\\n``: the option block of VideoLLaMA2 / B-VLLM."""
    return "".join(f"({c}) {o}\n" for c, o in zip(letters(len(options)), options))


def dot_options(options: list[str]) -> str:
    """``A. first\\nB. second\\n``: the option block of Video-MME's own annotation and of lmms-eval."""
    return "".join(f"{c}. {o}\n" for c, o in zip(letters(len(options)), options))


def mvbench(question: str, options: list[str]) -> str:
    """MVBench. B-VLLM ``inference_video_mcqa_mvbench.py``: the VideoChat2 preamble in the user turn, then
    VideoLLaMA2's ``Question: / Options:`` block and instruction."""
    return f"{MVBENCH_PREAMBLE}Question: {question}\nOptions:\n{bracket_options(options)}{BEST_OPTION}"


def videomme(question: str, options: list[str]) -> str:
    """Video-MME without subtitles (the subtitled variant prepends :data:`SUBTITLES`, see :func:`build_prompt`).
    VideoLLaMA2 / B-VLLM ``inference_video_mcqa_videomme.py``; the options are the annotation's ``A. ...`` lines."""
    return f"{SELECT_VIDEO}{SELECT_LETTER}\n{question}\n{dot_options(options)}{BEST_OPTION}{BEST_ANSWER_IS}"


def egoschema(question: str, options: list[str]) -> str:
    """EgoSchema. VideoLLaMA2 / B-VLLM ``inference_video_mcqa_egoschema.py`` (the version with the "Select the best
    answer" line and the "The best answer is: " primer)."""
    return f"{SELECT_VIDEO}\n{question}\nOptions:\n{bracket_options(options)}{BEST_OPTION}{BEST_ANSWER_IS}"


def perception_test(question: str, options: list[str]) -> str:
    """Perception Test multiple choice. VideoLLaMA2 / B-VLLM ``inference_video_mcqa_perception_test_mcqa.py``."""
    return f"Question: {question}\nOptions:\n{bracket_options(options)}{BEST_OPTION}"


def nextqa(question: str, options: list[str]) -> str:
    """NExT-QA multiple choice. Not in VideoLLaMA2, B-VLLM or LLaMA-VID: lmms-eval ``nextqa_mc`` (question, then
    ``A. ...`` lines) with lmms-eval's usual post-prompt, which ``nextqa_mc`` itself leaves empty."""
    # lmms-eval's `{q}\nA. ..` form plus the post-prompt it uses for its other multiple-choice video tasks.
    return f"{question}\n{dot_options(options)}{LETTER_ONLY}."


def vnbench(question: str, options: list[str]) -> str:
    """VNBench. B-VLLM ``inference_video_mcqa_vnbench.py``: bracketed options, no "Select the best answer" line and
    no full stop after the instruction (the official VideoNIAH prompt uses ``A. ...`` lines instead)."""
    return f"{question}\n{bracket_options(options)}{LETTER_ONLY}"


def open_ended(question: str, options: list[str]) -> str:
    """MSVD-QA, MSRVTT-QA, ActivityNet-QA: the raw question, as in VideoLLaMA2, B-VLLM and LLaMA-VID
    (``inference_video_oqa_*.py``; their "short answer" suffix is commented out)."""
    return question


BUILDERS: dict[str, Callable[[str, list[str]], str]] = {
    "mvbench": mvbench,
    "videomme": videomme,
    "egoschema": egoschema,
    "perception_test": perception_test,
    "nextqa": nextqa,
    "vnbench": vnbench,
    "msvd_qa": open_ended,
    "msrvtt_qa": open_ended,
    "activitynet_qa": open_ended,
}
OPEN_ENDED = ("msvd_qa", "msrvtt_qa", "activitynet_qa")


def build_prompt(benchmark: str, item: EvalItem, subtitles: list[str] | None = None,
                 short_answer: bool = False) -> str:
    """The user-turn text for one item (without the ``<video>\\n`` placeholder).

    Args:
        benchmark: a key of :data:`BUILDERS`.
        item: the question; only ``question``, ``options`` and ``id`` (for errors) are read.
        subtitles: Video-MME only: the subtitle lines to show (one per sampled frame, empty ones dropped, as the
            reference selects them), joined by newlines after :data:`SUBTITLES`' header. ``[]`` still gives the
            header, as the reference does for a video without subtitles; None gives the plain variant.
        short_answer: open-ended only: append lmms-eval's :data:`SHORT_ANSWER` (lmms-eval also capitalises the
            question and adds "?"; this does not).
    """
    if benchmark not in BUILDERS:
        raise ValueError(f"unknown benchmark {benchmark!r}; known: {', '.join(BUILDERS)}")
    open_ended_ = benchmark in OPEN_ENDED
    if open_ended_ == bool(item.options):
        kind = "open-ended" if open_ended_ else "multiple-choice"
        raise ValueError(f"item {item.id!r} has {len(item.options)} options but {benchmark} is {kind}")
    if subtitles is not None and benchmark != "videomme":
        raise ValueError(f"subtitles are a Video-MME variant; {benchmark} has none")
    if short_answer and not open_ended_:
        raise ValueError(f"short_answer is for open-ended benchmarks ({', '.join(OPEN_ENDED)}), not {benchmark}")
    prompt = BUILDERS[benchmark](item.question, item.options)
    if subtitles is not None:
        prompt = SUBTITLES.format(subtitles="\n".join(subtitles)) + prompt
    return prompt + SHORT_ANSWER if short_answer else prompt


def describe(benchmark: str, subtitles: bool = False, short_answer: bool = False) -> str:
    """The template of ``benchmark`` with placeholders, for the results file:
    ``describe("perception_test")`` gives ``Question: {question}\\nOptions:\\n(A) {option A}\\n(B) {option B}\\n...``.

    Args:
        benchmark: a key of :data:`BUILDERS`.
        subtitles: describe the Video-MME subtitle variant.
        short_answer: describe the open-ended short-answer variant.
    """
    options = [] if benchmark in OPEN_ENDED else ["{option A}", "{option B}"]
    item = SimpleNamespace(id="template", question="{question}", options=options)
    return build_prompt(benchmark, item, ["{subtitles}"] if subtitles else None, short_answer)
