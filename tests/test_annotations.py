"""Compact annotation indexes (JSON list, JSONL, cache) and YAML mixtures with weights."""

import json

import numpy as np
import pytest

from datamodules.annotations import AnnotationFile, load_sources, mixture_index
from datamodules.errors import SampleError

ENTRIES = [{"id": i, "text": "é東" * i, "nested": [1, {"s": "],[{"}]} for i in range(7)]


def test_json_list_offsets_with_unicode_and_odd_spacing(tmp_path, cache_dir):
    path = tmp_path / "a.json"
    path.write_text("  [\n" + " ,\n\t".join(json.dumps(e, ensure_ascii=False) for e in ENTRIES) + "\n ]\n")
    ann = AnnotationFile(path)
    assert len(ann) == len(ENTRIES) and [ann[i] for i in range(len(ann))] == ENTRIES
    assert ann.starts.dtype == np.int64 and ann.lengths.dtype == np.int64
    assert len(list(cache_dir.glob("index/*.npy"))) >= 1
    again = AnnotationFile(path)  # from the cache
    np.testing.assert_array_equal(again.starts, ann.starts)
    assert again[6] == ENTRIES[6]


def test_jsonl_skips_blank_lines_and_reports_bad_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    lines = [json.dumps(e, ensure_ascii=False) for e in ENTRIES[:3]]
    path.write_text(lines[0] + "\n\n   \n" + lines[1] + "\n{broken\n" + lines[2])
    ann = AnnotationFile(path, use_cache=False)
    assert len(ann) == 4
    assert ann[0] == ENTRIES[0] and ann[1] == ENTRIES[1] and ann[3] == ENTRIES[2]
    with pytest.raises(SampleError) as err:
        ann[2]
    assert err.value.reason == "bad_entry"


def test_index_survives_pickling_into_a_worker(tmp_path):
    import pickle

    path = tmp_path / "a.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in ENTRIES))
    ann = AnnotationFile(path, use_cache=False)
    ann[0]  # opens a descriptor in this process
    clone = pickle.loads(pickle.dumps(ann))
    assert clone._fd is None and clone[5] == ENTRIES[5]


def test_broken_json_list_names_the_element(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[{"id": 1}, {"id": 2,, }]')
    with pytest.raises(ValueError, match=r"bad.json: invalid JSON in element 1"):
        AnnotationFile(path, use_cache=False)
    with pytest.raises(FileNotFoundError, match="--data.train"):
        AnnotationFile(tmp_path / "nope.json")


def test_mixture_yaml_resolves_paths_roots_and_weights(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.json").write_text("[]")
    (tmp_path / "cfg").mkdir()
    mix = tmp_path / "cfg" / "mix.yaml"
    mix.write_text("datasets:\n  - path: ../data/a.json\n    weight: 0.5\n"
                   "  - path: ../data/a.json\n    root: ../media\n")
    a, b = load_sources(str(mix))
    assert a.path == str(tmp_path / "data" / "a.json") and a.root == str(tmp_path / "data") and a.weight == 0.5
    assert b.root == str(tmp_path / "media") and b.weight == 1.0
    mix.write_text("datasets:\n  - path: x.json\n    wieght: 2\n")
    with pytest.raises(ValueError, match="unknown keys"):
        load_sources(str(mix))


def test_mixture_index_counts_and_determinism():
    src, ent = mixture_index([10, 4, 6], [0.5, 2.0, 1.5], seed=3)
    assert np.bincount(src).tolist() == [5, 8, 9]
    assert sorted(ent[src == 1].tolist()) == sorted(list(range(4)) * 2)
    third = ent[src == 2]
    assert sorted(set(third.tolist())) == list(range(6)) and len(third) == 9  # one full copy + 3 distinct extras
    assert len(set(ent[src == 0].tolist())) == 5  # a half, without replacement
    src2, ent2 = mixture_index([10, 4, 6], [0.5, 2.0, 1.5], seed=3)
    np.testing.assert_array_equal(ent, ent2)
    _, ent3 = mixture_index([10, 4, 6], [0.5, 2.0, 1.5], seed=4)
    assert not np.array_equal(ent, ent3)
