"""Open-ended metrics on awkward inputs: numbers, articles, punctuation, empty strings."""

import pytest

from datamodules.benchmarks.openended import contains, exact_match, normalize, token_f1


@pytest.mark.parametrize("text, expected", [
    ("Two.", "2"),
    ("The  Dog!", "dog"),
    ("an apple, a pear", "apple pear"),
    ("don't", "dont"),
    ("x-ray", "x ray"),
    ("1,000 people", "1000 people"),
    ("2.5 meters.", "2.5 meters"),
    ("Twenty birds and forty cats", "20 birds and 40 cats"),
    ("", ""),
    ("?!", ""),
    ("The", ""),
])
def test_normalize(text, expected):
    assert normalize(text) == expected


def test_exact_match():
    assert exact_match("Two.", "2") == 1.0
    assert exact_match("a dog", "dog") == 1.0
    assert exact_match("Dog", "dogs") == 0.0
    assert exact_match("", "dog") == 0.0
    assert exact_match("", "") == 1.0
    assert exact_match("dog", "") == 0.0  # a hidden (empty) reference never scores


def test_token_f1():
    assert token_f1("a brown dog", "the dog") == pytest.approx(2 * (1 / 2) * 1 / (1 / 2 + 1))
    assert token_f1("dog dog", "dog") == pytest.approx(2 * 0.5 * 1.0 / 1.5)  # each word counts as often as in both
    assert token_f1("three cats", "3 cats") == 1.0
    assert token_f1("cat", "dog") == 0.0
    assert token_f1("", "dog") == 0.0
    assert token_f1("dog", "") == 0.0
    assert token_f1("", "the") == 1.0  # both normalise to nothing


def test_contains():
    assert contains("I think it is a black dog.", "dog") == 1.0
    assert contains("the dog is black", "black dog") == 1.0  # order does not matter
    assert contains("cats", "cat") == 0.0  # words, not substrings
    assert contains("there are two", "2") == 1.0
    assert contains("", "dog") == 0.0
    assert contains("dog", "") == 0.0
