"""Option-letter parsing: the default rule's priorities, and the fixed reference rules."""

import pytest

from datamodules.benchmarks import EgoSchema, MVBench, NExTQA, PerceptionTest, VideoMME, VNBench
from datamodules.benchmarks.parsing import (
    letter_tokens,
    match_option_text,
    parse_choice,
    parse_default,
    parse_videollama2,
    rule_name,
)
from datamodules.benchmarks.videomme import parse_videomme
from datamodules.benchmarks.vnbench import parse_vnbench

SHAPES = ["a blue circle", "a green square", "the red triangle", "a yellow star"]


@pytest.mark.parametrize("text, expected", [
    ("(B)", 1),
    ("B", 1),
    ("b", 1),
    ("B.", 1),
    ("B)", 1),
    (" [d] ", 3),
    ("The answer is B.", 1),
    ("Answer: B", 1),
    ("answer is (b)", 1),
    ("Option B: a green square", 1),
    ("Best option:(C)", 2),
    ("Best option: (C) the red triangle", 2),
    ("C. the red triangle", 2),
    ("**D**", 3),
    ("Based on the video, the answer is D", 3),
    ("Correct! It is (C), the red triangle.", 2),
    ("I think B", 1),
    ("A is correct", 0),
    ("the red triangle", 2),
    ("It shows The Red Triangle.", 2),
    ("Let me look.\nThe shapes move left.\nThe answer is: (D)\n", 3),
    ("A\n\nExplanation: the star is yellow.", 0),
    ("", None),
    ("   \n", None),
    ("E", None),                             # past the 4 options: unparsed, not wrapped or clamped
    ("The answer is E.", None),
    ("A man is walking", None),              # the article, and no option says so
    ("Correct", None),                       # the reference regexes read this as C
    ("Based on the video, I cannot tell", None),
    ("a square or a circle", None),          # two options, neither contains the other
])
def test_default_rule(text, expected):
    assert parse_choice(text, SHAPES) == expected


def test_default_priorities():
    # an answer phrase beats an earlier stray letter, a bracketed letter beats a bare one
    assert parse_choice("Scene B is dark, so the answer is C", SHAPES) == 2
    assert parse_choice("D is unlikely; (A)", SHAPES) == 0
    # the article sentence counts when it is an option's text
    assert parse_choice("A man is walking", ["a dog runs", "a man is walking"]) == 1
    # nested option texts resolve to the longest
    assert parse_choice("the red triangle", ["red", "the red triangle"]) == 1


def test_letter_tokens_stand_alone():
    text = "Based on X-ray and I'm sure: (B), A man, A is"
    assert letter_tokens(text) == [(text.index("B)"), "B"), (text.index("A is"), "A")]


def test_match_option_text():
    assert match_option_text("it is a green square.", SHAPES) == 1
    assert match_option_text("squares", ["square"]) is None           # whole words only
    assert match_option_text("two", ["two", "two"]) is None           # duplicate options are ambiguous
    assert match_option_text("anything", ["", "x"]) is None


def test_videollama2_rule():
    rule = parse_videollama2
    assert parse_choice("(B) a green square", SHAPES, rule) == 1
    assert parse_choice("Answer: C", SHAPES, rule) == 2
    assert parse_choice("the red triangle", SHAPES, rule) == 2          # kept: option text when no letter
    assert parse_choice("E. none, so the star: D", SHAPES, rule) == 3   # kept: only the option range is searched
    assert parse_choice("Based on it, D", SHAPES, rule) == 3            # fixed: the reference reads "Based" as B
    assert parse_choice("A man walks", SHAPES, rule) is None            # fixed: article; no fallback to C
    assert parse_choice("b", SHAPES, rule) is None                      # kept: capitals only


def test_videomme_rule():
    rule = parse_videomme
    assert parse_choice("The best answer is C.", SHAPES, rule) == 2     # kept: the first letter
    assert parse_choice("Best option: D", SHAPES, rule) == 3            # fixed: the reference strips "Best option:"
    assert parse_choice("Correct, it is A", SHAPES, rule) == 0          # fixed: the reference reads "Correct" as C
    words = "the video shows a red triangle moving slowly across the screen to the left"
    assert parse_choice(words, SHAPES, rule) is None                    # kept: > 10 words, no letter
    assert parse_choice("the red triangle", SHAPES, rule) is None       # kept: no option-text matching
    assert parse_choice("E", SHAPES, rule) is None


def test_vnbench_rule():
    rule = parse_vnbench
    assert parse_choice("B. a green square", SHAPES, rule) == 1
    assert parse_choice("(B) A man walks.", SHAPES, rule) == 1          # fixed: the reference checks 'A' in pred first
    assert parse_choice("The answer. It is D", SHAPES, rule) is None    # kept: only the text before the first '.'
    assert parse_choice("Based on it, C.", SHAPES, rule) == 2           # fixed: "Based" is no B
    assert parse_choice("E.", SHAPES, rule) is None


def test_each_benchmark_parses_with_its_reference_rule():
    """The rule behind each benchmark's published numbers, recorded by name in the results' protocol."""
    rules = {b: b("root").protocol("generate")["parse_rule"]
             for b in (MVBench, EgoSchema, PerceptionTest, VideoMME, VNBench, NExTQA)}
    assert rules == {MVBench: "videollama2", EgoSchema: "videollama2", PerceptionTest: "videollama2",
                     VideoMME: "videomme", VNBench: "vnbench", NExTQA: "default"}
    text = "(B) A man walks."  # the reference rules disagree on this one
    assert VNBench("root").parse(text, SHAPES) == 1 and MVBench("root").parse(text, SHAPES) == 1
    assert VideoMME("root").parse("Correct, it is A", SHAPES) == 0
    # a parse rule chosen in the config replaces the reference rule, and the protocol says so
    custom = NExTQA("root", parse_rule=parse_vnbench)
    text = "The answer. It is D"
    assert custom.parse(text, SHAPES) is None and NExTQA("root").parse(text, SHAPES) == 3
    assert custom.protocol("generate")["parse_rule"] == "vnbench" and rule_name(parse_default) == "default"


def test_too_many_options():
    with pytest.raises(ValueError, match="at most 24"):
        parse_choice("A", ["x"] * 25)
