"""Offline metrics for open-ended answers (MSVD-QA, MSRVTT-QA, ActivityNet-QA): exact match, token F1, containment.

They complement the LLM judge (:mod:`datamodules.benchmarks.judge`) and never replace it in a results table: the
published numbers of these benchmarks are judge numbers (Video-ChatGPT's
``quantitative_evaluation/evaluate_activitynet_qa.py``, as VideoLLaMA2 and B-VLLM report them). All three compare
:func:`normalize`-d text. An empty reference is matched only by an empty prediction (the SQuAD convention), so a
hidden answer never scores as correct.
"""

from __future__ import annotations

import re
from collections import Counter

ARTICLES = {"a", "an", "the"}
_UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
          "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")
_TENS = ("thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
NUMBERS = {w: str(k) for k, w in enumerate(_UNITS)} | {w: str(10 * k) for k, w in enumerate(_TENS, 3)}
_TOKEN = re.compile(r"\d+\.\d+|[^\W_]+")  # a decimal number, or a run of letters and digits


def normalize(text: str) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, write number words up to twenty and the tens as
    digits ("Two." -> "2"), and join the words by single spaces.

    Apostrophes vanish ("don't" -> "dont"), other punctuation separates words ("x-ray" -> "x ray"); a thousands
    comma and a decimal point between digits are kept as part of the number ("1,000" -> "1000", "2.5").
    """
    text = re.sub(r"['’]", "", text.lower())
    text = re.sub(r"(?<=\d),(?=\d)", "", text)
    words = (NUMBERS.get(w, w) for w in _TOKEN.findall(text))
    return " ".join(w for w in words if w not in ARTICLES)


def exact_match(pred: str, ref: str) -> float:
    """1.0 when the normalised prediction equals the normalised reference, else 0.0."""
    return float(normalize(pred) == normalize(ref))


def token_f1(pred: str, ref: str) -> float:
    """SQuAD-style F1 of the bags of normalised words (each word counts as often as it occurs in both)."""
    p, r = normalize(pred).split(), normalize(ref).split()
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def contains(pred: str, ref: str) -> float:
    """1.0 when every normalised reference word is a word of the normalised prediction ("gold tokens in the
    prediction", the offline ActivityNet-QA style match); words, not substrings, so "cat" is not in "cats"."""
    p, r = normalize(pred).split(), normalize(ref).split()
    if not r:
        return float(not p)
    return float(set(r) <= set(p))
