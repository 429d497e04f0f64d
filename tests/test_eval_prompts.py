"""Benchmark prompts: each template's exact text, the Video-MME subtitle and open-ended short-answer variants."""

from types import SimpleNamespace

import pytest

from datamodules.benchmarks.prompts import BUILDERS, PROMPT_VERSION, build_prompt, describe, letters


def item(question="What happens?", options=("a dog runs", "a cat sleeps", "a bird sings"), id="q1"):
    """Stands in for datamodules' EvalItem (whose package import pulls in torch): the builders read only these."""
    return SimpleNamespace(id=id, question=question, options=list(options))


OPTIONS = "(A) a dog runs\n(B) a cat sleeps\n(C) a bird sings\n"
DOTTED = "A. a dog runs\nB. a cat sleeps\nC. a bird sings\n"
BEST = "Answer with the option's letter from the given choices directly and only give the best option."


def test_letters():
    assert letters(4) == ["A", "B", "C", "D"]
    assert letters(24)[-1] == "X" and letters(0) == []
    with pytest.raises(ValueError, match="at most 24"):
        letters(25)


def test_mvbench():
    text = build_prompt("mvbench", item())
    assert text.startswith("Carefully watch the video and pay attention to the cause and sequence of events")
    assert text.endswith(f"select the best option that accurately addresses the question.\n"
                         f"Question: What happens?\nOptions:\n{OPTIONS}{BEST}")


def test_perception_test_and_egoschema():
    assert build_prompt("perception_test", item()) == f"Question: What happens?\nOptions:\n{OPTIONS}{BEST}"
    assert build_prompt("egoschema", item()) == (
        "Select the best answer to the following multiple-choice question based on the video.\n"
        f"What happens?\nOptions:\n{OPTIONS}{BEST} The best answer is: ")


def test_videomme_with_and_without_subtitles():
    plain = build_prompt("videomme", item())
    assert plain == (
        "Select the best answer to the following multiple-choice question based on the video. Respond with only the "
        f"letter (A, B, C, or D) of the correct option.\nWhat happens?\n{DOTTED}{BEST} The best answer is: ")
    subbed = build_prompt("videomme", item(), subtitles=["Hello there.", "Run!"])
    assert subbed == "This video's subtitles are listed below:\nHello there.\nRun!\n" + plain
    assert build_prompt("videomme", item(), subtitles=[]) == "This video's subtitles are listed below:\n\n" + plain


def test_nextqa_and_vnbench():
    assert build_prompt("nextqa", item()) == (
        f"What happens?\n{DOTTED}Answer with the option's letter from the given choices directly.")
    # B-VLLM's VNBench instruction has no full stop
    assert build_prompt("vnbench", item()) == (
        f"What happens?\n{OPTIONS}Answer with the option's letter from the given choices directly")


@pytest.mark.parametrize("benchmark", ["msvd_qa", "msrvtt_qa", "activitynet_qa"])
def test_open_ended(benchmark):
    q = item("what is the man holding", options=())
    assert build_prompt(benchmark, q) == "what is the man holding"
    assert build_prompt(benchmark, q, short_answer=True) == (
        "what is the man holding Answer the question using a single word or phrase.")


def test_misuse_names_the_problem():
    with pytest.raises(ValueError, match="unknown benchmark 'mvbench2'"):
        build_prompt("mvbench2", item())
    with pytest.raises(ValueError, match="item 'q1' has 0 options but mvbench is multiple-choice"):
        build_prompt("mvbench", item(options=()))
    with pytest.raises(ValueError, match="has 3 options but msvd_qa is open-ended"):
        build_prompt("msvd_qa", item())
    with pytest.raises(ValueError, match="Video-MME variant"):
        build_prompt("mvbench", item(), subtitles=["hi"])
    with pytest.raises(ValueError, match="short_answer"):
        build_prompt("mvbench", item(), short_answer=True)


def test_describe_shows_placeholders():
    assert PROMPT_VERSION
    template = "Question: {question}\nOptions:\n(A) {option A}\n(B) {option B}\n"
    assert describe("perception_test") == template + BEST
    assert describe("videomme", subtitles=True).startswith("This video's subtitles are listed below:\n{subtitles}\n")
    assert describe("activitynet_qa", short_answer=True) == (
        "{question} Answer the question using a single word or phrase.")
    assert set(BUILDERS) == {"mvbench", "videomme", "egoschema", "perception_test", "nextqa", "vnbench", "msvd_qa",
                             "msrvtt_qa", "activitynet_qa"}
