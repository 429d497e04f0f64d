"""Selection hit rate: did the kept frames show the needle the question is about (no LLM involved)?"""

import pytest

from datamodules.benchmarks.items import EvalItem
from datamodules.benchmarks.selection import aggregate, selection_record, shown, uniform_times


def test_a_frame_on_the_needle_counts_and_one_a_frame_away_does_not():
    spans = [[10, 12]]  # the needle is drawn for 10 <= t < 12
    assert shown([10.5], spans) == [True] and shown([11.5], spans) == [True]
    assert shown([9.5], spans) == [False]  # the 1-fps frame before the event
    assert shown([12.5], spans) == [False]  # the frame after it
    assert shown([10.0], spans) == [True] and shown([12.0], spans) == [False]  # [start, end): the renderer's rule
    assert shown([], spans) == [False] and shown([3.0], []) == []


def test_selection_record_hit_and_event_recall_against_uniform():
    given = [t + 0.5 for t in range(64)]  # 64 s at 1 fps
    spans = [[20, 21], [40, 42]]  # two events of the needle asked about
    on_both = selection_record([20.5, 41.5, 5.5], given, spans)
    assert on_both["hit"] and on_both["event_recall"] == 1.0 and on_both["frames_kept"] == 3
    # uniform 3 of 64 frames takes positions 10, 32 and 53: times 10.5, 32.5, 53.5, none on a needle
    assert uniform_times(given, 3) == [10.5, 32.5, 53.5]
    assert not on_both["uniform_hit"] and on_both["uniform_event_recall"] == 0.0
    one_away = selection_record([19.5, 21.5, 39.5, 42.5], given, spans)
    assert not one_away["hit"] and one_away["event_recall"] == 0.0
    half = selection_record([20.5, 20.5, 30.5], given, spans)  # a duplicate pick counts once
    assert half["hit"] and half["event_recall"] == 0.5 and half["frames_kept"] == 2
    assert uniform_times(given, 100) == given  # more picks than frames: every frame once


def test_uniform_control_follows_the_uniform_reducers_rule():
    """The data side keeps its own copy of the segment-midpoint rule (it does not import the model side): the same
    frames as ``sampling.uniform_indices`` for every length and count."""
    import torch

    from lit_bvllm.reducers.sampling import uniform_indices

    for n in range(1, 130):
        times = [t + 0.5 for t in range(n)]
        for k in range(1, n):
            idx, valid = uniform_indices(torch.tensor([n]), k)
            assert valid.all() and uniform_times(times, k) == [times[i] for i in idx[0].tolist()], (n, k)


def test_aggregate_counts_each_question_once_per_category():
    items = [EvalItem(id=f"v_{kind}_{k}", video="v.mp4", question="q", options=["a", "b"], answer=0, category=kind,
                      group=f"v_{kind}") for kind in ("ret", "cnt") for k in range(4)]
    given = [t + 0.5 for t in range(10)]
    ret = selection_record([3.5], given, [[3, 4]])
    cnt = selection_record([7.5], given, [[3, 4]])
    records = [{"id": it.id, "index": i, "selection": ret if it.category == "ret" else cnt}
               for i, it in enumerate(items)]
    records.append({"id": "no_needles", "index": 0})  # items without needle times carry no selection
    out = aggregate(records, items)
    assert out["questions"] == 2 and out["hit_rate"] == 0.5
    assert out["per_category"]["ret"]["hit_rate"] == 1.0 and out["per_category"]["cnt"]["hit_rate"] == 0.0
    assert out["per_category"]["ret"]["questions"] == 1
    assert aggregate([{"id": "x", "index": 0}], items) == {}


def test_needle_times_are_read_and_checked(tmp_path):
    import json

    from datamodules.benchmarks import VNBench

    entry = {"video": "v.mp4", "question": "q", "options": ["a", "b", "c", "d"], "gt": "a", "type": "ret_insert1",
             "try": 0, "question_id": "v_ret_insert1_0", "needle_times": [[3, 5], [9, 10]]}
    (tmp_path / "VNBench_qa.json").write_text(json.dumps([entry]))
    assert VNBench(str(tmp_path)).read()[0].extra["needle_times"] == [[3.0, 5.0], [9.0, 10.0]]
    (tmp_path / "VNBench_qa.json").write_text(json.dumps([dict(entry, needle_times=[[5, 3]])]))
    with pytest.raises(ValueError, match=r"VNBench_qa.json, entry 0 \(v_ret_insert1_0\): 'needle_times'"):
        VNBench(str(tmp_path)).read()
