"""Benchmark prompts: each template's exact text, the Video-MME subtitle and open-ended short-answer variants."""

from types import SimpleNamespace

import pytest

from datamodules.benchmarks import (
    MSRVTTQA,
    MSVDQA,
    ActivityNetQA,
    EgoSchema,
    MVBench,
    NExTQA,
    PerceptionTest,
    VideoMME,
    VNBench,
)
from datamodules.benchmarks.prompts import PROMPT_VERSION, letters


def item(question="What happens?", options=("a dog runs", "a cat sleeps", "a bird sings"), id="q1"):
    """Stands in for an EvalItem: the prompts read only these."""
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
    text = MVBench("root").prompt(item())
    assert text.startswith("Carefully watch the video and pay attention to the cause and sequence of events")
    assert text.endswith(f"select the best option that accurately addresses the question.\n"
                         f"Question: What happens?\nOptions:\n{OPTIONS}{BEST}")


def test_perception_test_and_egoschema():
    assert PerceptionTest("root").prompt(item()) == f"Question: What happens?\nOptions:\n{OPTIONS}{BEST}"
    assert EgoSchema("root").prompt(item()) == (
        "Select the best answer to the following multiple-choice question based on the video.\n"
        f"What happens?\nOptions:\n{OPTIONS}{BEST} The best answer is: ")


def test_videomme_with_and_without_subtitles():
    videomme = VideoMME("root", subtitles=True)
    plain = videomme.prompt(item())
    assert plain == (
        "Select the best answer to the following multiple-choice question based on the video. Respond with only the "
        f"letter (A, B, C, or D) of the correct option.\nWhat happens?\n{DOTTED}{BEST} The best answer is: ")
    subbed = videomme.prompt(item(), subtitles=["Hello there.", "Run!"])
    assert subbed == "This video's subtitles are listed below:\nHello there.\nRun!\n" + plain
    assert videomme.prompt(item(), subtitles=[]) == "This video's subtitles are listed below:\n\n" + plain


def test_videomme_subtitles_at_the_sampled_frames(tmp_path):
    import torch

    (tmp_path / "v.srt").write_text("1\n00:00:00,000 --> 00:00:02,000\nHello.\n\n"
                                    "2\n00:00:05,000 --> 00:00:09,000\nRun!\n")
    subbed = SimpleNamespace(subtitles=str(tmp_path / "v.srt"))
    times = torch.tensor([0.5, 1.5, 3.5, 5.5, 6.5])
    # one line per frame, repeats kept (VideoLLaMA2); a video without an .srt still gets the header (no lines)
    assert VideoMME("root", subtitles=True).frame_subtitles(subbed, times) == ["Hello.", "Hello.", "Run!", "Run!"]
    assert VideoMME("root").frame_subtitles(subbed, times) is None  # the plain variant shows none
    assert VideoMME("root", subtitles=True).frame_subtitles(SimpleNamespace(subtitles=None), times) == []
    assert MVBench("root").frame_subtitles(subbed, times) is None  # only Video-MME has subtitles


def test_nextqa_and_vnbench():
    assert NExTQA("root").prompt(item()) == (
        f"What happens?\n{DOTTED}Answer with the option's letter from the given choices directly.")
    # B-VLLM's VNBench instruction has no full stop
    assert VNBench("root").prompt(item()) == (
        f"What happens?\n{OPTIONS}Answer with the option's letter from the given choices directly")


@pytest.mark.parametrize("benchmark", [MSVDQA, MSRVTTQA, ActivityNetQA])
def test_open_ended(benchmark):
    q = item("what is the man holding", options=())
    assert benchmark("root").prompt(q) == "what is the man holding"
    assert benchmark("root", short_answer=True).prompt(q) == (
        "what is the man holding Answer the question using a single word or phrase.")


def test_misuse_names_the_problem():
    with pytest.raises(ValueError, match="item 'q1' has 0 options but mvbench is multiple-choice"):
        MVBench("root").prompt(item(options=()))
    with pytest.raises(ValueError, match="has 3 options but msvd_qa is open-ended"):
        MSVDQA("root").prompt(item())
    with pytest.raises(ValueError, match="Video-MME variant"):
        MVBench("root").prompt(item(), subtitles=["hi"])
    with pytest.raises(TypeError, match="short_answer"):  # an option a benchmark does not have is not accepted
        MVBench("root", short_answer=True)
    with pytest.raises(TypeError, match="subtitles"):
        NExTQA("root", subtitles=True)


def test_describe_shows_placeholders():
    assert PROMPT_VERSION
    template = "Question: {question}\nOptions:\n(A) {option A}\n(B) {option B}\n"
    assert PerceptionTest("root").describe_prompt() == template + BEST
    assert ActivityNetQA("root").describe_prompt() == "{question}"
    # the results record the plain template and the variant apart (protocol "subtitles" / "short_answer")
    videomme = VideoMME("root", subtitles=True)
    assert videomme.describe_prompt() == ("This video's subtitles are listed below:\n{subtitles}\n"
                                          + VideoMME("root").describe_prompt())
    assert videomme.protocol("generate")["subtitles"] is True
    assert MSVDQA("root", short_answer=True).protocol("generate") == {
        "prompt": "{question}", "parse_rule": None, "fallback_letter": None, "subtitles": False,
        "short_answer": True}
    assert VNBench("root").protocol("likelihood") == {
        "prompt": "{question}", "parse_rule": None, "fallback_letter": None, "subtitles": False,
        "short_answer": False}
