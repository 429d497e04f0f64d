"""probe-tower: linear probes of a vision tower on synthetic frames, labelled from the generator's metadata."""

import json

import numpy as np
import pytest
import torch

from lit_bvllm.analysis.probe import FEATURES, fit_probe, frame_labels, probe_tower


def test_frame_labels_follow_the_needle_timeline():
    record = {"needles": [{"shape": "star", "colour": "blue", "start": 2, "end": 4},
                          {"shape": "ring", "colour": "red", "start": 6, "end": 7}]}
    times = np.array([0.5, 1.99, 2.0, 3.5, 4.0, 6.5, 7.0])
    labels = frame_labels(record, times)
    assert labels["needle"].tolist() == [0, 0, 1, 1, 0, 1, 0]
    assert labels["shape"].tolist() == [-1, -1, 1, 1, -1, 4, -1]  # NEEDLE_SHAPES: triangle, star, cross, diamond, ring
    assert labels["colour"].tolist() == [-1, -1, 2, 2, -1, 0, -1]  # NEEDLE_COLOURS: red, green, blue, ...


def test_linear_probe_separates_separable_classes():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(3, (300,), generator=g)
    x = torch.randn(300, 8, generator=g) * 0.1 + torch.nn.functional.one_hot(y, 8).float() * 3
    w, b = fit_probe(x, y, 3)
    assert ((x @ w + b).argmax(1) == y).float().mean() == 1.0


def test_probe_runs_on_a_few_step_tower_and_writes_its_table(tiny, synthetic, tmp_path, capsys):
    out = tmp_path / "probe.json"
    result = probe_tower(tiny["vision"], str(synthetic), out=str(out), fps=1.0)
    written = json.loads(out.read_text())
    assert written["probes"] == result["probes"] and set(result["probes"]) == set(FEATURES)
    meta = json.loads((synthetic / "metadata.json").read_text())["videos"]
    # one frame per second of every video, mid-second: a D-second video gives D frames
    assert result["frames"]["train"] == sum(r["duration"] for r in meta if r["split"] == "train")
    assert result["frames"]["test"] == sum(r["duration"] for r in meta if r["split"] == "eval")
    needle_seconds = sum(n["end"] - n["start"] for r in meta if r["split"] == "eval" for n in r["needles"])
    assert result["needle_frames"]["test"] == needle_seconds
    for row in result["probes"].values():
        assert set(row) == {"needle_recall", "needle_precision", "needle_accuracy", "shape_accuracy", "colour_accuracy"}
        assert all(0.0 <= v <= 1.0 for v in row.values())
    printed = capsys.readouterr().out
    assert "| cls |" in printed and "| patches |" in printed and str(out) in printed


def test_probe_needs_a_synthetic_folder(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        probe_tower(tiny["vision"], str(tmp_path))
