"""Held-out eval annotations: VNBench (4-option needle QA, circular tries) and MSVD-QA (one-word answers).

Both are derived from eval video records (scenes.py) that have >= 2 needle events and >= 2 distinct needles.

Beside VNBench's needle types (retrieval ``ret_insert1``, ordering ``ord_insert1``, counting ``cnt_insert1``) the
VNBench-format sets hold one diagnostic type that every frame answers, :data:`EVERY_FRAME` (``bg_every1``): "What
color is the background?", its options whole answers in the training data's words ("The video has a navy
background."). A model that beats its blind baseline there reads its frames at all; the needle types then ask
whether it finds the 1-2 s that matter. Its entries say ``"every_frame": true``: the scorer leaves the type out of
VNBench's overall number and the selection hit rate (``datamodules.benchmarks.vnbench``, ``selection``).
"""

import itertools

import numpy as np

from lit_bvllm.world.describe import (
    NUMBER_WORDS,
    article,
    background_phrase,
    count_of,
    distinct_needles,
    needle_name,
)
from lit_bvllm.world.scenes import BACKGROUNDS, NEEDLE_COLOURS, NEEDLE_SHAPES

ALL_NEEDLES = [f"{c} {s}" for s in NEEDLE_SHAPES for c in NEEDLE_COLOURS]  # "red triangle", ...
EVERY_FRAME = "bg_every1"
"""The task type every frame answers (the background colour): a diagnostic of whether frames reach the LLM."""


def _options(rng: np.random.Generator, gt: str, wrong: list[str], n: int = 4) -> list[str]:
    """gt plus n - 1 distinct wrong options drawn from `wrong` (duplicates and gt removed), shuffled."""
    wrong = list(dict.fromkeys(w for w in wrong if w != gt))
    picked = [wrong[i] for i in rng.choice(len(wrong), size=n - 1, replace=False)]
    return [([gt] + picked)[i] for i in rng.permutation(n)]


def _ordering_wrong(rng: np.random.Generator, sequence: list[str], absent: list[str]) -> list[str]:
    """Up to 2 other orders of `sequence`, then orders with one needle swapped for an absent one."""
    perms = list(dict.fromkeys(", then ".join(p) for p in itertools.permutations(sequence)))
    perms = [perms[i] for i in rng.permutation(len(perms)) if perms[i] != ", then ".join(sequence)][:2]
    subs = [", then ".join(sequence[:i] + [a] + sequence[i + 1:]) for i in range(len(sequence)) for a in absent]
    return perms + [subs[i] for i in rng.permutation(len(subs))]


def vnbench_questions(record: dict, rng: np.random.Generator) -> list[tuple[str, str, list[str], str, list[list[int]]]]:
    """(type, question, options, gt, needle_times) for retrieval, ordering and counting about one eval video.

    ``needle_times``: the ``[start, end)`` seconds of the needle events the question is about (retrieval: the answer's
    needle; counting: the counted needle; ordering: every event), for the selection hit rate."""
    present = [needle_name(n) for n in distinct_needles(record)]
    absent = [name for name in ALL_NEEDLES if name not in present]
    sequence = [needle_name(n) for n in record["needles"]]
    target = max(present, key=lambda name: (count_of(record, name), -present.index(name)))  # the repeated one
    count = count_of(record, target)
    ret = present[int(rng.integers(len(present)))]
    gt_ret = article(ret)

    def times(name: str | None = None) -> list[list[int]]:
        return [[n["start"], n["end"]] for n in record["needles"] if name is None or needle_name(n) == name]

    return [
        ("ret_insert1", "Which of these shapes briefly appears in the video?",
         _options(rng, gt_ret, [article(a) for a in absent]), gt_ret, times(ret)),
        ("ord_insert1", "In which order do the briefly shown shapes appear?",
         _options(rng, ", then ".join(sequence), _ordering_wrong(rng, sequence, absent)), ", then ".join(sequence),
         times()),
        ("cnt_insert1", f"How many times does {article(target)} appear?",
         _options(rng, str(count), [str(c) for c in range(1, 6)]), str(count), times(target)),
    ]


def background_answer(bg: dict) -> str:
    """The training data's answer to "What color is the background?" (``describe.video_qa``): "The video has a
    navy background." or "The video has a background fading from navy at the top to olive at the bottom."."""
    return f"The video has {background_phrase(bg)}."


def every_frame_question(record: dict, rng: np.random.Generator) -> tuple[str, str, list[str], str, list[list[int]]]:
    """(type, question, options, gt, needle_times) of :data:`EVERY_FRAME` about one video, worded as the training
    data words it. Wrong options name other background colours of ``scenes.BACKGROUNDS``: another solid colour, or
    for a gradient the same direction with another ordered pair of colours (the reversed pair among them).
    ``needle_times``: the whole video, ``[[0, duration]]``: every frame shows the answer."""
    bg = record["background"]
    names = list(BACKGROUNDS)
    if bg["direction"] == "solid":
        others = [{"colours": [c], "direction": "solid"} for c in names]
    else:
        others = [{"colours": [a, b], "direction": bg["direction"]} for a in names for b in names if a != b]
    gt = background_answer(bg)
    return (EVERY_FRAME, "What color is the background?", _options(rng, gt, [background_answer(o) for o in others]),
            gt, [[0, record["duration"]]])


def vnbench_entries(records: list[dict], rng: np.random.Generator,
                    every_frame_rng: np.random.Generator | None = None) -> list[dict]:
    """VNBench_qa.json entries: per (video, type) 4 tries, try k rotates the options left by k. Beside VNBench's own
    fields, each entry carries ``needle_times`` (:func:`vnbench_questions`), which the reader keeps for the
    selection hit rate.

    With ``every_frame_rng``, the :data:`EVERY_FRAME` questions (:func:`every_frame_question`, drawn from that
    stream alone) follow every needle entry, video by video, each entry marked ``"every_frame": true``: the needle
    entries come out as they do without them, at the same positions."""
    entries = []
    asked = [(record, vnbench_questions(record, rng)) for record in records]
    if every_frame_rng is not None:
        asked += [(record, [every_frame_question(record, every_frame_rng)]) for record in records]
    for record, questions in asked:
        stem = record["id"]
        for kind, question, options, gt, spans in questions:
            for k in range(4):
                entries.append({"video": f"videos/{stem}.mp4", "question": question,
                                "options": options[k:] + options[:k],
                                "gt": gt, "type": kind, "try": k, "question_id": f"{stem}_{kind}_{k}",
                                "needle_times": spans, **({"every_frame": True} if kind == EVERY_FRAME else {})})
    return entries


def msvd_questions(record: dict, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """(question, one-word answer, answer_type) about one eval video, all lower case."""
    bg, needles = record["background"], record["needles"]
    where = {"solid": "the background", "vertical": "the top of the background",
             "horizontal": "the left side of the background"}
    distinct = distinct_needles(record)
    pick = distinct[int(rng.integers(len(distinct)))]
    return [
        (f"what color is {where[bg['direction']]}?", bg["colours"][0], "what"),
        ("how many circles and squares move around?", NUMBER_WORDS[len(record["distractors"])], "how many"),
        ("how many times does a shape briefly appear?", NUMBER_WORDS[len(needles)], "how many"),
        ("what shape appears first?", needles[0]["shape"], "what"),
        ("what shape appears last?", needles[-1]["shape"], "what"),
        (f"what color is the {pick['shape']} that appears?", pick["colour"], "what"),
        (f"how many times does the {needle_name(pick)} appear?", NUMBER_WORDS[count_of(record, needle_name(pick))],
         "how many"),
    ]


def msvd_files(records: list[dict], rng: np.random.Generator) -> tuple[list[dict], list[dict], list[dict]]:
    """(test_qa, test_q, test_a): MSVD-QA entries and the Video-ChatGPT question/answer pair files, same order."""
    qa, q, a = [], [], []
    for record in records:
        for k, (question, answer, kind) in enumerate(msvd_questions(record, rng)):
            qid = f"{record['id']}_{k}"
            qa.append({"video_id": record["id"], "question": question, "id": len(qa), "answer": answer,
                       "answer_type": kind})
            q.append({"video_name": record["id"], "question": question, "question_id": qid})
            a.append({"answer": answer, "type": kind, "question_id": qid})
    return qa, q, a
