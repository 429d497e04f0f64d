"""What the benchmarks' prompts share: option letters, option blocks, the reference instructions.

Each benchmark's own template (the user-turn text after the ``<video>\\n`` placeholder) is the ``template`` method
of its module (``mvbench.py``, ``videomme.py``, ...); the chat template (system prompt, role headers, generation
prompt) is applied by the data module. The templates follow the reference inference scripts of VideoLLaMA2 /
B-VLLM (``videollama2/eval/inference_video_*.py``, ``bvlm/eval/inference_video_*.py``), down to their spacing and
missing full stops, so that numbers stay comparable with the papers. Only NExT-QA, which those codebases do not
evaluate, follows lmms-eval.

Results should record :data:`PROMPT_VERSION` and each benchmark's ``describe_prompt()``, since the prompt alone
moves multiple-choice accuracy by points between papers.
"""

from __future__ import annotations

PROMPT_VERSION = "bvllm-v1"

MAX_OPTIONS = 24  # "A".."X", the letter range of the reference MVBench parser

SELECT_VIDEO = "Select the best answer to the following multiple-choice question based on the video."
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


def with_subtitles(prompt: str, subtitles: list[str]) -> str:
    """``prompt`` after :data:`SUBTITLES`' header and the lines, one per line (the Video-MME reference's: one per
    sampled frame showing a subtitle, repeats kept, :func:`~datamodules.benchmarks.subtitles.subtitles_at`); ``[]``
    still gives the header, as the reference does for a video without subtitles."""
    return SUBTITLES.format(subtitles="\n".join(subtitles)) + prompt
