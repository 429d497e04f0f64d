"""Which option a generated answer names: ``parse_choice(text, options, rule) -> index | None``.

A rule is a function ``(text, options) -> index | None`` (:data:`ParseRule`). This module holds the rules several
benchmarks share, this project's :func:`parse_default` and VideoLLaMA2's :func:`parse_videollama2`; a benchmark
with its own official scorer keeps that rule in its module (``videomme.parse_videomme``,
``vnbench.parse_vnbench``), and every multiple-choice benchmark names its reference rule (``reference_rule``).

None means unparsed. The parsers never guess: the reference scripts fall back to option C (VideoLLaMA2, B-VLLM)
or a random letter (lmms-eval) inside the parser, which hides how often the model answered off-format; here the
caller decides (a configurable fallback, off by default) and counts the misses.

Three fixes apply to every rule, each a known sloppiness of the reference regexes:

1. Letters stand alone. ``[A-D]``-style patterns match capitals inside words, so "Based on ..." reads as B and
   "Correct" as C. Here a letter counts only when no letter, digit, ``_``, ``'`` or ``-`` touches it: "(B)",
   "B.", "B:", "answer is B" count; "Based", "X-ray", "I'm" do not.
2. "A" followed by a lower-case word is the article ("A man is walking"), and "I" so followed is the pronoun
   ("I think ..."), unless the word is a verb that makes the letter the subject ("A is correct").
3. A letter outside the item's options ("E" for a 4-way question) is unparsed, never wrapped or clamped, and the
   rule that found it does not go on to look for another letter. (:func:`parse_videollama2` keeps its reference's
   letter range instead: that regex only ever sees the item's letters.)
"""

from __future__ import annotations

import re
from collections.abc import Callable

from datamodules.benchmarks.prompts import MAX_OPTIONS

ParseRule = Callable[[str, list[str]], int | None]
"""``(generated text, option texts) -> option index``, None when the text names no option."""

_TOKEN = re.compile(r"(?<![\w'’-])([A-X])(?![\w'’-])")
_WORD_AFTER = re.compile(r"\s+([a-z]+)")
_SUBJECT_VERBS = {"is", "was", "seems", "appears", "matches", "fits"}  # "A is correct": the letter, not the article
_WHOLE = re.compile(r"\s*[(\[]?\s*([A-Xa-x])\s*[)\]]?\s*[.:,;!]?\s*")
_PHRASE = re.compile(r"(?i:answer|option|choice)\W{0,3}(?:(?i:is|would be|should be|was)\W{0,3})?")
_BRACKETED = re.compile(r"[(\[]\s*([A-Xa-x])\s*[)\]]")


def letter_tokens(text: str) -> list[tuple[int, str]]:
    """``(position, letter)`` of every capital A..X that stands alone and is not the article "A" or pronoun "I"."""
    found = []
    for m in _TOKEN.finditer(text):
        word = _WORD_AFTER.match(text, m.end())
        if m.group(1) in "AI" and word and word.group(1) not in _SUBJECT_VERBS:
            continue
        found.append((m.start(), m.group(1)))
    return found


def _index(letter: str, num_options: int) -> int | None:
    """Option index of ``letter`` (any case); None when it is not one of the item's options."""
    k = ord(letter.upper()) - ord("A")
    return k if k < num_options else None


def first_letter(text: str, num_options: int) -> int | None:
    """Option index of the first standalone letter of ``text``; None when there is none or it is past the options."""
    tokens = letter_tokens(text)
    return _index(tokens[0][1], num_options) if tokens else None


def match_option_text(text: str, options: list[str]) -> int | None:
    """The option whose text the answer contains (case-insensitive, as whole words, trailing full stop ignored).

    When several match, the longest wins only if it contains all the others ("the red triangle" names "red
    triangle", not "red"); otherwise ("red or blue") None. The reference scripts take the first match instead.
    """
    lowered = " ".join(text.lower().split())
    hits: dict[str, list[int]] = {}  # normalised option text -> indices of the options with that text
    for k, option in enumerate(options):
        needle = " ".join(option.lower().split()).rstrip(".")
        if needle and re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", lowered):
            hits.setdefault(needle, []).append(k)
    if not hits:
        return None
    longest = max(hits, key=len)
    if len(hits[longest]) > 1 or any(h not in longest for h in hits):
        return None  # two options with the same text, or matches that are not parts of one another
    return hits[longest][0]


def parse_default(text: str, options: list[str]) -> int | None:
    """This project's rule: the first of these that finds something decides.

    1. The whole answer is one letter, any case, optionally bracketed or punctuated: "b", "(B)", "B.", "B)".
    2. An answer phrase before a letter: "answer is B", "Answer: B", "Option B", "Best option:(C".
    3. A bracketed letter anywhere, any case: "... so (c)".
    4. The first standalone letter, at the start or anywhere: "C. the red triangle", "**B**", "I think B".
    5. The text of exactly one option (:func:`match_option_text`).
    """
    n = len(options)
    if whole := _WHOLE.fullmatch(text):
        return _index(whole.group(1), n)
    tokens = letter_tokens(text)
    at = dict(tokens)  # position -> letter
    for m in _PHRASE.finditer(text):
        if m.end() in at:
            return _index(at[m.end()], n)
    if bracketed := _BRACKETED.search(text):
        return _index(bracketed.group(1), n)
    if tokens:
        return _index(tokens[0][1], n)
    return match_option_text(text, options)


def parse_videollama2(text: str, options: list[str]) -> int | None:
    """VideoLLaMA2 / B-VLLM ``mvbench_dump`` (their EgoSchema, Perception Test and VNBench parsers are variants).

    Kept: the first letter of the option range (``[\\(,\\ ]*[A-D][\\),\\ ]*``), else the option text. Fixed: the
    letter must stand alone (the reference reads "Based" as B), the article "A" is no letter, a multiply-matching
    option text resolves as :func:`match_option_text` does rather than to the first, and there is no fallback to C.
    The reference's deletion of "answer"/"Answer" drops out: it only kept its regex off the capital of "Answer".
    """
    in_range = [c for _, c in letter_tokens(text) if _index(c, len(options)) is not None]
    return _index(in_range[0], len(options)) if in_range else match_option_text(text, options)


def parse_choice(text: str, options: list[str], rule: ParseRule = parse_default) -> int | None:
    """Index of the option a generated answer names, or None when unparsed.

    Args:
        text: the model's output (any length, any number of lines).
        options: the item's option texts, without letters.
        rule: :func:`parse_default` (this project's), or a fixed reference rule (:func:`parse_videollama2`,
            ``videomme.parse_videomme``, ``vnbench.parse_vnbench``).
    """
    if len(options) > MAX_OPTIONS:
        raise ValueError(f"{len(options)} options: the letters A..X cover at most {MAX_OPTIONS}")
    return rule(text, options)


def rule_name(rule: ParseRule) -> str:
    """The name a results file records for a rule: ``parse_videollama2`` -> ``"videollama2"``."""
    return getattr(rule, "__name__", type(rule).__name__).removeprefix("parse_")
